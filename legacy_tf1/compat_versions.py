"""Version-string parsing shared by the TF-free parts of ``legacy_tf1`` (no TensorFlow import)."""


def version_tuple(text):
    """(major, minor, patch) of a version string such as "1.15.5" or "2.2.4-tf"; missing parts are 0."""
    parts = []
    for piece in str(text).split("-")[0].split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    while len(parts) < 3:
        parts.append(0)
    return tuple(parts)
