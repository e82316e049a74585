"""Mutation smoke test of reading calibration data (issue 26): damaged ``.npy``, ``.npz`` and image files.

Valid files are made here: 16 samples of shape (8, 8, 3) as ``.npy`` and as ``.npz`` (key ``x``), and an
8x8 RGB PNG and JPEG (Pillow). Each is mutated with a fixed seed: byte flips, truncation, and edits of
their structure: ``.npy`` headers that lie (shape, dtype, order), ``.npz`` members replaced (another
shape, an object array, no rows, NaN, another name), PNG headers that lie (size, bit depth, colour type,
with a correct checksum so the lie is read), a text file named like an image. Each mutant goes through
``converters.shared.calibration.CalibrationSource`` for a model input (8, 8, 3) and every sample is read
(what the conversion step does with ``--calib``), in a forked child with a time limit: it must return
or raise a ``TfbridgeError`` (one paragraph, its exit code), never another exception, a signal or a hang.
"""

import io
import os
import struct
import sys
import zipfile
import zlib

import numpy as np
import pytest

from tests.integration import _mutation

pytestmark = pytest.mark.tf2

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KINDS = {
    ".npy": ("flip", "truncate", "header"),
    ".npz": ("flip", "truncate", "member"),
    ".png": ("flip", "truncate", "header", "not_image"),
    ".jpg": ("flip", "truncate"),
}
PER_KIND = _mutation.per_kind(4, 25)  # CI: 4 x 12 = 48; nox -s faults: 25 x 12 = 300
TIME_LIMIT = 60.0


@pytest.fixture(scope="module")
def valid_files(tmp_path_factory):
    from PIL import Image

    folder = tmp_path_factory.mktemp("valid")
    samples = np.random.RandomState(0).uniform(0, 255, (16, 8, 8, 3)).astype(np.float32)
    np.save(str(folder / "calib.npy"), samples)
    np.savez(str(folder / "calib.npz"), x=samples)
    picture = Image.fromarray(samples[0].astype(np.uint8))
    picture.save(str(folder / "calib.png"))
    picture.save(str(folder / "calib.jpg"), quality=90)
    return dict((suffix, str(folder / ("calib" + suffix))) for suffix in KINDS)


def mutate(data, kind, rng):
    """One seeded mutant of ``data`` of the given kind (the file type is ``mutate.path``'s suffix)."""
    suffix = os.path.splitext(mutate.path)[1]
    if kind == "flip":
        data = bytearray(data)
        start = 0 if suffix == ".npz" else min(len(data) - 1, 128 if suffix == ".npy" else 8)
        for _ in range(rng.randint(1, 32)):
            data[rng.randrange(start, len(data))] = rng.randrange(256)
        return bytes(data)
    if kind == "truncate":
        return data[:rng.randrange(len(data))]
    if kind == "not_image":
        return rng.choice((b"", b"not an image\n", b"\x89PNG\r\n\x1a\n", bytes(rng.randrange(256) for _ in range(64))))
    if suffix == ".npy":
        return _npy_header(data, rng)
    if suffix == ".npz":
        return _npz_member(rng)
    return _png_header(data, rng)


def _npy_header(data, rng):
    """An .npy whose header lies: another shape (more or fewer rows than the data, another rank), dtype or
    order; the data bytes stay as they were."""
    end = data.index(b"\n") + 1
    header = data[10:end].decode("latin1")
    choice = rng.choice(("shape", "dtype", "order"))
    if choice == "shape":
        header = header.replace("(16, 8, 8, 3)", rng.choice(("(1000, 8, 8, 3)", "(2, 8, 8, 3)", "(16, 3, 8, 8)",
                                                             "(16, 192)", "(0, 8, 8, 3)", "()", "(16, 8, 8, 3, 1)",
                                                             "(-1, 8, 8, 3)", "(99999999999, 8, 8, 3)")))
    elif choice == "dtype":
        header = header.replace("'<f4'", rng.choice(("'|O'", "'<f8'", "'>i2'", "'<c8'", "'|V4'", "'<U1'", "'x'")))
    else:
        header = header.replace("False", rng.choice(("True", "None", "1")))
    header = header.rstrip("\n").ljust(len(data[10:end]) - 1) + "\n"
    return data[:8] + struct.pack("<H", len(header)) + header.encode("latin1") + data[end:]


def _npz_member(rng):
    """An .npz whose member is not what calibration needs, or is named otherwise."""
    samples = np.random.RandomState(rng.randrange(1000)).uniform(0, 1, (16, 8, 8, 3)).astype(np.float32)
    choice = rng.choice(("shape", "object", "empty", "nan", "name", "strings", "no_members"))
    buffer = io.BytesIO()
    if choice == "object":  # saved with pickle: refused by allow_pickle=False
        np.savez(buffer, x=np.array([{"a": 1}] * 4, dtype=object))
    elif choice == "no_members":
        zipfile.ZipFile(buffer, "w").close()
    else:
        array = {"shape": samples[:, :4], "empty": samples[:0], "nan": samples * np.nan, "name": samples,
                 "strings": np.array(["x"] * 16)}[choice]
        np.savez(buffer, **{("y" if choice == "name" else "x"): array})
    return buffer.getvalue()


def _png_header(data, rng):
    """A PNG whose IHDR lies about its size, bit depth or colour type, its CRC recomputed so that the
    reader believes it (a huge size is what a decompression bomb claims)."""
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    choice = rng.choice(("size", "huge", "depth", "colour"))
    if choice == "size":
        width, height = rng.choice(((1, 1), (64, 8), (8, 4096), (0, 8)))
    elif choice == "huge":
        width, height = rng.choice(((60000, 60000), (2 ** 31 - 1, 1), (100000, 100000)))
    elif choice == "depth":
        depth = rng.choice((1, 2, 4, 16, 7, 0))
    else:
        colour = rng.choice((0, 3, 4, 6, 5, 9))
    chunk = b"IHDR" + struct.pack(">IIBB", width, height, depth, colour) + data[26:29]
    return data[:12] + chunk + struct.pack(">I", zlib.crc32(chunk) & 0xFFFFFFFF) + data[33:]


def _read_all(path):
    from converters.shared.calibration import CalibrationSource

    source = CalibrationSource(path, (None, 8, 8, 3), samples=None, progress=False)
    for _ in source.iter_samples():  # every sample, as the conversion's representative dataset reads them
        pass


def campaign(valid_path, workdir):
    """Every mutant of ``valid_path``, in a fresh interpreter (see tests/integration/_mutation.py)."""
    from PIL import Image  # noqa: F401 - imported once here; every forked child inherits it

    from converters.shared import calibration  # noqa: F401

    suffix = os.path.splitext(valid_path)[1]
    _mutation.campaign(valid_path, workdir, _read_all, mutate, KINDS[suffix], seed=13, per_kind=PER_KIND,
                       time_limit=TIME_LIMIT, label=suffix.lstrip("."))


@pytest.mark.parametrize("suffix", sorted(KINDS))
def test_mutated_calibration_data_is_handled_or_refused_never_crash(valid_files, tmp_path, suffix):
    found = _mutation.run_fresh("tests.integration.test_mutations_data_tf2", valid_files[suffix], tmp_path, REPO,
                                timeout=len(KINDS[suffix]) * PER_KIND * TIME_LIMIT)
    outcomes = found["outcomes"]
    sys.stderr.write("%s mutations: %s\n" % (suffix, found["by_kind"]))
    assert sum(outcomes.values()) == len(KINDS[suffix]) * PER_KIND
    assert not found["bad"], found["bad"]
    assert _mutation.refused(outcomes) > 0, "the mutations did damage files"
