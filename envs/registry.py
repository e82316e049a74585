"""The environment registry: the one hand-written place where each environment's versions live.

Everything else derives from these declarations: the lock files (``nox -s lock``), the venvs
(``envs.venvs``), the pytest markers (``tests/conftest.py``), the version checks of the integration
tests, the table of ``nox -s envs`` and the Docker images.

This module is standard library only and Python 3.7 compatible: it is imported on the host (nox,
Python 3.11) and inside the TF 1.x environments (by the test configuration).
"""

import collections
import re

# One declaration per environment. ``requirements`` are what we ask for; the lock pins the rest.
# Adding an environment (say TF 2.15, the last with Keras 2 as tf.keras) is one more entry here,
# then ``nox -s lock -- <name>``.
Environment = collections.namedtuple(
    "Environment", ["name", "python", "requirements", "role", "platform"]
)

# What the host needs to drive everything (.ci/run installs exactly these from envs/locks/host-tools.txt).
HOST_TOOLS = (
    "nox==2026.10.20",  # the user interface; its virtualenv backend cannot make 3.7 venvs, ours can
    "uv==0.13.9",  # creates the environments several times faster than pip (optional: pip fallback)
    "docker==7.2.0",  # Docker SDK: `nox -s docker_build` and `--backend docker` (needs a Docker engine)
)

# Packages the project's own code and tests need in every TF environment.
_COMMON_TF1 = (
    "pytest",
    "pillow",
    "scikit-image",   # real sample images (skimage.data.lfw_subset) for the demo and the tests
    "pyyaml",         # --arch given as a YAML model config
    "tqdm",           # progress bars on long steps
    "keras-vggface==0.6",  # rcmalli's own package: the real VGGFace architectures (code only)
)

ENVIRONMENTS = collections.OrderedDict(
    (env.name, env)
    for env in (
        Environment(
            name="host",
            python="3.11",
            # HOST_TOOLS: tests drive `nox -s ...` itself and check the docker backend's error;
            # dockerfile-parse: the Dockerfiles are checked statically (no Docker engine here).
            requirements=("pytest", "numpy", "dockerfile-parse") + HOST_TOOLS,
            role="host-side unit tests and cross-environment tests (no TensorFlow)",
            platform="x86_64-manylinux_2_28",
        ),
        Environment(
            name="tf1.13",
            python="3.7",
            requirements=(
                "tensorflow==1.13.2",
                "keras==2.2.4",
                "h5py<3",  # h5py 3 reads strings as str, which keras 2.2.4 cannot load
                "numpy<1.17",  # TF 1.13 fails to import with numpy >= 1.17 (np.object deprecation, ABI)
                "protobuf<3.21",  # protobuf 4 (3.21+) breaks TF 1.x generated code
                "scikit-learn",  # load_digits(): 1,797 real handwritten digits for legacy_tf1/digits.py
            )
            + _COMMON_TF1,
            role="origin of legacy models: keras 2.2.4 era (rcmalli keras-vggface)",
            platform="x86_64-manylinux_2_17",
        ),
        Environment(
            name="tf1.15",
            python="3.7",
            requirements=(
                "tensorflow==1.15.5",
                "keras==2.3.1",
                "h5py<3",
                "numpy<1.19",  # TF 1.15.5 pins numpy < 1.19
                "protobuf<3.21",
            )
            + _COMMON_TF1,
            role="origin of later legacy models; first upgrade step",
            platform="x86_64-manylinux_2_17",
        ),
        Environment(
            name="tf2",
            python="3.11",
            requirements=(
                "tensorflow-cpu==2.21.0",
                "tf-keras==2.21.0",  # legacy Keras 2 (TF_USE_LEGACY_KERAS=1) loads TF 1.x .h5 files
                "keras>=3,<4",  # Keras 3, tried as well: it loads some legacy files, not all
                "ai-edge-litert==2.3.0",  # LiteRT runs the .tflite (tf.lite.Interpreter is deprecated)
                "h5py",
                "pytest",
                "pillow",
                "scikit-image",
                "pyyaml",
                "matplotlib",  # plots in report.html
                "jinja2",  # report.html template
                "tqdm",  # progress bars on long steps
                # Arm's NPU compiler for Ethos-U55/U65/U85 (--npu-target): it needs only numpy and
                # flatbuffers, which TF pins compatibly, so it shares tf2 (resolving it adds this one package)
                "ethos-u-vela==5.2.0",
            ),
            role="the newest converter (MLIR), the TFLite runtime and Arm's Vela NPU compiler",
            platform="x86_64-manylinux_2_28",
        ),
    )
)

TF_ENVIRONMENTS = tuple(name for name in ENVIRONMENTS if name != "host")

_PIN = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*==\s*([^\s;,]+)\s*$")


def get(name):
    """Return the declaration of environment ``name``; raise ``KeyError`` with the known names."""
    try:
        return ENVIRONMENTS[name]
    except KeyError:
        raise KeyError(
            "unknown environment %r; known: %s" % (name, ", ".join(ENVIRONMENTS))
        ) from None


def pinned_version(env, package):
    """The exact version ``env`` declares for ``package`` (``==`` pin), or None if not pinned."""
    wanted = _normalize(package)
    for requirement in env.requirements:
        match = _PIN.match(requirement)
        if match and _normalize(match.group(1)) == wanted:
            return match.group(2)
    return None


def marker_name(env_name):
    """The pytest marker of the tests that run inside ``env_name`` ("tf1.13" -> "tf1_13")."""
    return re.sub(r"[^0-9A-Za-z_]", "_", env_name)


def _normalize(name):
    return re.sub(r"[-_.]+", "-", name).lower()


if __name__ == "__main__":  # `docker run IMAGE` with no arguments: say which environment this is
    import json
    import os

    current = os.environ.get("TFBRIDGE_ENV")
    print(json.dumps({"environment": current, "declaration": get(current)._asdict() if current else None,
                      "known": list(ENVIRONMENTS)}, indent=2))
