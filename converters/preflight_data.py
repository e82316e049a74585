"""The data options, checked on the host before any step: ``--calib`` and ``--probe`` (an image folder, an
image, an ``.npy`` / ``.npz`` read from its headers, or ``skimage``: at least one sample), one array per input
for a model of several inputs, a ``--calib`` large enough for a probe and a disjoint calibration set, and
``--eval`` / ``--eval-classes`` (class subfolders, or an ``.npz`` whose ``x`` and integer ``y`` agree).

For whom: ``converters.preflight.check`` and ``converters.verify`` (``check_inputs_data``, once the model's
inputs are named). Not a full read: that happens in the environment, with the model's shape; this only
knows that samples will come out. Host side: standard library only, Python 3.7 compatible. What can go
wrong: ``CalibrationDataError`` (``InputFileError`` for an unreadable ``--eval-classes``).
"""

import ast
import os
import struct
import zipfile

from converters import options as declared
from converters.errors import CalibrationDataError, InputFileError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
IMAGE_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"BM")
NPY_MAGIC = b"\x93NUMPY"
BUILTIN_SKIMAGE = "skimage"
# How many candidate image files are opened to find a readable one before giving up.
IMAGE_PROBES = 64


def npy_header(read):
    """(shape, dtype descr) of an ``.npy`` stream, read with the standard library (format 1.0 - 3.0)."""
    magic = read(6)
    if magic != NPY_MAGIC:
        raise ValueError("not an .npy array (no NUMPY magic)")
    major = bytearray(read(2))[0]
    if major == 1:
        (length,) = struct.unpack("<H", read(2))
    elif major in (2, 3):
        (length,) = struct.unpack("<I", read(4))
    else:
        raise ValueError("unknown .npy format version %d" % major)
    header = ast.literal_eval(read(length).decode("latin1"))
    if not isinstance(header, dict) or "shape" not in header or "descr" not in header:
        raise ValueError("the .npy header has no shape")
    return tuple(header["shape"]), header["descr"]


def _numeric(descr):
    return isinstance(descr, str) and len(descr) >= 2 and descr[1] in "biuf"


def data_samples(path, what="--calib"):
    """A description of the samples ``path`` offers ({"kind", "samples"}), or the paragraph why none.

    Not a full read (that happens in the environment, with the model's shape): enough to know that at
    least one sample will come out of it.
    """
    hint = ("Point %s at representative images (a folder, searched recursively: jpg, png, bmp), an .npy "
            "array with samples along its first axis, an .npz of such arrays, or 'skimage'." % what)
    if path == BUILTIN_SKIMAGE:
        return {"kind": "skimage", "samples": None}
    if not os.path.exists(path):
        raise CalibrationDataError("%s %s does not exist." % (what, path), step="preflight", hint=hint)
    if os.path.isdir(path):
        candidates = []
        for root, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            candidates.extend(os.path.join(root, name) for name in sorted(files)
                              if name.lower().endswith(IMAGE_EXTENSIONS))
        if not candidates:
            raise CalibrationDataError("no image files (jpg, png, bmp) under %s." % path, step="preflight", hint=hint)
        if not any(_is_image(candidate) for candidate in candidates[:IMAGE_PROBES]):
            raise CalibrationDataError(
                "no image under %s could be read: the first %d of %d image files are not JPEG, PNG or BMP."
                % (path, min(IMAGE_PROBES, len(candidates)), len(candidates)), step="preflight", hint=hint)
        return {"kind": "images", "samples": len(candidates)}
    lower = path.lower()
    if lower.endswith(IMAGE_EXTENSIONS):
        if not _is_image(path):
            raise CalibrationDataError("no image in %s could be read (not JPEG, PNG or BMP)." % path,
                                       step="preflight", hint=hint)
        return {"kind": "image", "samples": 1}
    if lower.endswith(".npy"):
        try:
            with open(path, "rb") as handle:
                shape, descr = npy_header(handle.read)
        except (OSError, ValueError, SyntaxError, struct.error, IndexError) as exc:
            raise CalibrationDataError("%s %s is not a readable .npy array (%s)." % (what, path, exc),
                                       step="preflight", hint=hint)
        return {"kind": "npy", "samples": _count(path, shape, descr, what, hint)}
    if lower.endswith(".npz"):
        try:
            with zipfile.ZipFile(path) as archive:
                members = [name for name in archive.namelist() if name.endswith(".npy")]
                if not members:
                    raise CalibrationDataError("%s holds no samples (no arrays in the .npz)." % path,
                                               step="preflight", hint=hint)
                counts = {}
                for name in members:
                    with archive.open(name) as handle:
                        shape, descr = npy_header(handle.read)
                    counts[name[:-4]] = _count(path, shape, descr, what, hint, member=name[:-4])
        except (OSError, ValueError, SyntaxError, struct.error, IndexError, zipfile.BadZipFile) as exc:
            raise CalibrationDataError("%s %s is not a readable .npz archive (%s)." % (what, path, exc),
                                       step="preflight", hint=hint)
        return {"kind": "npz", "samples": min(counts.values()), "arrays": counts}
    raise CalibrationDataError("%s %s is neither an image folder, an image, an .npy nor an .npz." % (what, path),
                               step="preflight", hint=hint)


def _count(path, shape, descr, what, hint, member=None):
    where = "%s[%s]" % (path, member) if member else path
    if not _numeric(descr):
        raise CalibrationDataError("%s %s has dtype %s, not numbers." % (what, where, descr), step="preflight",
                                   hint=hint)
    if not shape or shape[0] < 1:
        raise CalibrationDataError("%s holds no samples (shape %s)." % (where, tuple(shape)), step="preflight",
                                   hint=hint)
    return int(shape[0])


def _is_image(path):
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
    except OSError:
        return False
    return any(head.startswith(signature) for signature in IMAGE_SIGNATURES)


def check_inputs_data(values, input_names):
    """A model of several inputs (``input_names``, from the preflight read of the file) needs one array
    per input in ``--calib`` / ``--probe``: an ``.npz`` whose arrays are named like the inputs and hold
    the same number of samples. Checked from the archive's headers (standard library), before any step."""
    if not input_names or len(input_names) < 2:
        return
    example = "numpy.savez(PATH, %s)" % ", ".join("%s=..." % name for name in input_names)
    for option in ("calib", "probe"):
        path = values.get(option)
        if not path:
            continue
        what = "--%s %s" % (option, path)
        if not str(path).lower().endswith(".npz"):
            raise CalibrationDataError(
                "%s gives data for one input; the model has %d (%s)." % (what, len(input_names),
                                                                       ", ".join(input_names)),
                step="preflight", hint="Give an .npz holding one array per model input, named like the input: %s."
                                       % example)
        arrays = data_samples(path, "--" + option).get("arrays") or {}
        missing = [name for name in input_names if name not in arrays]
        if missing:
            raise CalibrationDataError(
                "%s has no array for model input(s) %s (it holds: %s)." % (what, ", ".join(missing),
                                                                         ", ".join(sorted(arrays)) or "nothing"),
                step="preflight", hint="Save one array per model input, named like the input: %s." % example)
        counts = dict((name, arrays[name]) for name in input_names)
        if len(set(counts.values())) != 1:
            raise CalibrationDataError(
                "%s: the inputs' arrays hold different numbers of samples (%s); row i of every array is one "
                "sample." % (what, ", ".join("%s: %d" % (name, counts[name]) for name in input_names)),
                step="preflight", hint="Give the same number of samples for every input, in the same order.")


MIN_SPLIT_CALIB = declared.MIN_SPLIT_CALIB


def split_fits(found, calib, calib_samples, probe_samples):
    """Refuse a ``--calib`` source (its ``data_samples`` description) too small for the probe and a
    calibration set disjoint from it (``converters.shared.calibration.split`` decides the same in the
    environment, where it also sees counts unknown here: ``skimage``)."""
    count = found.get("samples")
    if count is None:
        return
    probe_samples = declared.probe_size(probe_samples, count)
    needed = max(1, min(int(calib_samples or declared.DEFAULT_CALIB_SAMPLES), MIN_SPLIT_CALIB))
    if count - probe_samples < needed:
        raise CalibrationDataError(
            "--calib %s has %d samples: too few for a probe of %d samples and at least %d calibration samples "
            "that are not in the probe (calibration and probe never share a sample)."
            % (calib, count, probe_samples, needed), step="preflight",
            hint="Give more data, a separate probe source with --probe PATH, or fewer samples: e.g. "
                 "--probe-samples %d or --calib-samples %d." % (max(1, count - needed), max(1, count - probe_samples)))


def read_classes(path):
    """The names of an ``--eval-classes`` file (one per line; blank lines and ``#`` comments ignored)."""
    hint = "Give a text file naming the --eval class subfolders in the model's output order, one per line."
    try:
        with open(path) as handle:
            names = [line.strip() for line in handle if line.strip() and not line.strip().startswith("#")]
    except (OSError, UnicodeDecodeError) as exc:
        raise InputFileError("--eval-classes %s cannot be read (%s)." % (path, exc), step="preflight", hint=hint)
    if not names:
        raise CalibrationDataError("--eval-classes %s names no class." % path, step="preflight", hint=hint)
    if len(set(names)) != len(names):
        raise CalibrationDataError("--eval-classes %s names a class twice." % path, step="preflight", hint=hint)
    return names


def eval_samples(path, classes_file=None):
    """A description of ``--eval`` ({"kind", "samples", "classes"}), or the paragraph why it cannot serve."""
    hint = ("Give --eval a folder with one subfolder of images per class (Keras's image_dataset_from_directory "
            "layout), or an .npz with x (or one array per model input) and integer labels y.")
    if not os.path.exists(path):
        raise CalibrationDataError("--eval %s does not exist." % path, step="preflight", hint=hint)
    if os.path.isdir(path):
        found = sorted(name for name in os.listdir(path)
                       if os.path.isdir(os.path.join(path, name)) and not name.startswith("."))
        names = read_classes(classes_file) if classes_file else found
        if not found:
            raise CalibrationDataError("--eval %s has no class subfolders." % path, step="preflight", hint=hint)
        missing = [name for name in names if name not in found]
        unlisted = [name for name in found if name not in names]
        if missing or unlisted:
            raise CalibrationDataError(
                "--eval-classes %s does not match the subfolders of %s (%s)." % (classes_file, path, "; ".join(
                    part for part in ("not a subfolder: %s" % ", ".join(missing) if missing else "",
                                      "not listed: %s" % ", ".join(unlisted) if unlisted else "") if part)),
                step="preflight", hint="List every class subfolder once, in the model's output order.")
        total = 0
        for name in names:
            try:
                total += data_samples(os.path.join(path, name), what="--eval class")["samples"]
            except CalibrationDataError as error:
                error.hint = hint
                raise
        return {"kind": "folder", "samples": total, "classes": len(names)}
    if classes_file:
        read_classes(classes_file)
    if not path.lower().endswith(".npz"):
        raise CalibrationDataError("--eval %s is neither a folder of class subfolders nor an .npz." % path,
                                   step="preflight", hint=hint)
    try:
        with zipfile.ZipFile(path) as archive:
            headers = {}
            for name in archive.namelist():
                if name.endswith(".npy"):
                    with archive.open(name) as handle:
                        headers[name[:-4]] = npy_header(handle.read)
    except (OSError, ValueError, SyntaxError, struct.error, IndexError, zipfile.BadZipFile) as exc:
        raise CalibrationDataError("--eval %s is not a readable .npz archive (%s)." % (path, exc), step="preflight",
                                   hint=hint)
    if "y" not in headers:
        raise CalibrationDataError("--eval %s has no y (integer labels); it has %s." % (
            path, ", ".join(sorted(headers)) or "no arrays"), step="preflight", hint=hint)
    shape, descr = headers["y"]
    if len(shape) != 1 or not (isinstance(descr, str) and len(descr) >= 2 and descr[1] in "iu"):
        raise CalibrationDataError("--eval %s: y has shape %s and dtype %s; it must be integer labels of shape (N,)."
                                   % (path, tuple(shape), descr), step="preflight", hint=hint)
    inputs = dict((k, v) for k, v in headers.items() if k != "y")
    if not inputs:
        raise CalibrationDataError("--eval %s has y but no x." % path, step="preflight", hint=hint)
    for key, (x_shape, x_descr) in sorted(inputs.items()):
        if not _numeric(x_descr) or not x_shape or x_shape[0] != shape[0]:
            raise CalibrationDataError("--eval %s: %s has shape %s and dtype %s; it needs %d numeric samples like y."
                                       % (path, key, tuple(x_shape), x_descr, shape[0]), step="preflight", hint=hint)
    if shape[0] < 1:
        raise CalibrationDataError("--eval %s holds no samples." % path, step="preflight", hint=hint)
    return {"kind": "npz", "samples": int(shape[0]), "classes": None}
