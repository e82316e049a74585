"""Labelled held-out data (``--eval``), read in batches: images in class folders, or an ``.npz`` of x and y.

For whom: the eval steps in every environment (``legacy_tf1.evaluate`` in TF 1.x, ``converters.tf2.evaluate``
in tf2). Python 3.7 compatible; numpy and Pillow. The same code in both, so that the origin's float
model and the tf2 models see the same samples, in the same order, preprocessed the same way.

Sources:

- a folder with one subfolder per class (Keras's ``image_dataset_from_directory`` layout): the classes
  are the subfolders in sorted order (hidden ones ignored), or the names listed in ``classes_file`` (one
  per line, in the model's output order; every listed class must be a subfolder and every subfolder
  must be listed). Each subfolder's images (``.jpg .jpeg .png .bmp``, searched recursively, sorted) are
  decoded and resized like calibration images (``converters.shared.calibration``).
- an ``.npz`` with ``x`` (or one array per model input, named like the inputs) and ``y``: integer labels
  ``(N,)``. The arrays are read row by row from the archive (compressed or not), never whole.

Every sample is preprocessed with ``--preprocess`` as calibration data is. Batches are ``(inputs, labels,
keys)``: a list of arrays (one per model input), int64 labels, and each sample's content hashes (source
item, preprocessed sample) so that a step can count eval samples that are also calibration or probe
samples. Memory is one batch.

What can go wrong: ``CalibrationDataError`` (step ``eval``): a missing path, an empty class folder, a
classes file that does not match the subfolders, arrays of the wrong shape or dtype, labels out of range.
"""

import ast
import os
import struct
import zipfile

import numpy as np

from converters.errors import CalibrationDataError
from converters.shared import calibration
from converters.shared import preprocess as preprocessing

BATCH = 32


def _error(message, hint=None):
    return CalibrationDataError(message, step="eval", hint=hint or
                                "Give --eval a folder with one subfolder of images per class (sorted names = the "
                                "model's output order, or --eval-classes FILE), or an .npz with x and integer y.")


def read_classes_file(path):
    """The class names of ``--eval-classes``: one per line, blank lines and ``#`` comments ignored."""
    try:
        with open(path) as handle:
            names = [line.strip() for line in handle if line.strip() and not line.strip().startswith("#")]
    except (OSError, UnicodeDecodeError) as exc:
        raise _error("cannot read --eval-classes %s (%s)." % (path, exc))
    if not names:
        raise _error("--eval-classes %s names no class." % path)
    if len(set(names)) != len(names):
        raise _error("--eval-classes %s names a class twice." % path)
    return names


def folder_classes(folder, classes_file=None):
    """The class names of an eval folder in output order (see the module docstring)."""
    found = sorted(name for name in os.listdir(folder)
                   if os.path.isdir(os.path.join(folder, name)) and not name.startswith("."))
    if not classes_file:
        if not found:
            raise _error("--eval %s has no class subfolders." % folder)
        return found
    names = read_classes_file(classes_file)
    missing = [name for name in names if name not in found]
    unlisted = [name for name in found if name not in names]
    if missing or unlisted:
        raise _error("--eval-classes %s does not match the subfolders of %s (%s)." % (
            classes_file, folder, "; ".join(part for part in (
                "not a subfolder: %s" % ", ".join(missing) if missing else "",
                "not listed: %s" % ", ".join(unlisted) if unlisted else "") if part)))
    return names


class _NpyRows(object):
    """Rows of one ``.npy`` member of an ``.npz``, read sequentially from the (possibly compressed) archive."""

    def __init__(self, archive, member):
        self.handle = archive.open(member)
        magic = self.handle.read(6)
        if magic != b"\x93NUMPY":
            raise ValueError("%s is not an .npy array" % member)
        major = bytearray(self.handle.read(2))[0]
        length = struct.unpack("<H" if major == 1 else "<I", self.handle.read(2 if major == 1 else 4))[0]
        header = ast.literal_eval(self.handle.read(length).decode("latin1"))
        if header.get("fortran_order"):
            raise ValueError("%s is stored in Fortran order; save it with np.savez (C order)" % member)
        self.dtype = np.dtype(header["descr"])
        self.shape = tuple(header["shape"])
        if self.dtype.hasobject:
            raise ValueError("%s holds Python objects, not numbers" % member)
        self.row_bytes = int(self.dtype.itemsize * int(np.prod(self.shape[1:], dtype=np.int64)))

    def read(self, rows):
        data = self.handle.read(rows * self.row_bytes)
        count = len(data) // self.row_bytes if self.row_bytes else 0
        return np.frombuffer(data[:count * self.row_bytes], dtype=self.dtype).reshape((count,) + self.shape[1:])

    def close(self):
        self.handle.close()


class LabelledData(object):
    """``--eval`` data for a model with ``input_shapes`` (one per input, batch first or not) and
    ``input_names``; ``preprocess`` as for calibration; ``classes_file``: ``--eval-classes``."""

    def __init__(self, path, input_shapes, input_names, preprocess="raw", classes_file=None, batch=BATCH):
        self.path = str(path)
        self.shapes = [calibration.sample_shape(shape) for shape in input_shapes]
        self.names = list(input_names)
        self.preprocess = preprocess or "raw"
        self.batch = int(batch)
        self.class_names = None
        if not os.path.exists(self.path):
            raise _error("--eval %s does not exist." % self.path)
        if os.path.isdir(self.path):
            self.kind = "folder"
            if len(self.shapes) != 1 or len(self.shapes[0]) != 3 or self.shapes[0][-1] not in (1, 3):
                raise _error("an image folder can feed one image input (H, W, 1|3); the model takes %s."
                             % (self.shapes,), hint="Give --eval an .npz with one array per model input and y.")
            self.class_names = folder_classes(self.path, classes_file)
            self.items = []
            for label, name in enumerate(self.class_names):
                files = calibration.find_images(os.path.join(self.path, name))
                if not files:
                    raise _error("the class folder %s holds no image (jpg, png, bmp)."
                                 % os.path.join(self.path, name))
                self.items.extend((path, label) for path in files)
            self.samples = len(self.items)
            self.classes = len(self.class_names)
        elif self.path.lower().endswith(".npz"):
            self.kind = "npz"
            if classes_file:
                self.class_names = read_classes_file(classes_file)
            self._check_npz()
        else:
            raise _error("--eval %s is neither a folder of class subfolders nor an .npz." % self.path)

    # ------------------------------------------------------------------------------------------ npz
    def _members(self, archive):
        return dict((name[:-4], name) for name in archive.namelist() if name.endswith(".npy"))

    def _x_keys(self, members):
        if len(self.names) == 1 and "x" in members:
            return ["x"]
        if all(name in members for name in self.names):
            return list(self.names)
        raise _error("--eval %s has arrays %s; it needs x (one input) or one array per input named %s, and y."
                     % (self.path, ", ".join(sorted(members)), ", ".join(self.names)))

    def _check_npz(self):
        try:
            with zipfile.ZipFile(self.path) as archive:
                members = self._members(archive)
                if "y" not in members:
                    raise _error("--eval %s has no y (integer labels)." % self.path)
                keys = self._x_keys(members)
                labels = _NpyRows(archive, members["y"])
                if labels.dtype.kind not in "iu" or len(labels.shape) != 1:
                    raise _error("--eval %s: y is %s %s; it must be integer labels of shape (N,)."
                                 % (self.path, labels.dtype, labels.shape))
                y = labels.read(labels.shape[0])  # N integers: small next to the images
                labels.close()
                for key, shape in zip(keys, self.shapes):
                    rows = _NpyRows(archive, members[key])
                    rows.close()
                    if rows.dtype.kind not in "uif" or rows.shape[0] != y.shape[0] or \
                            not calibration._shape_fits(rows.shape[1:], shape):
                        raise _error("--eval %s: %s is %s %s; the model needs (%d,) + %s numbers (as many as y)."
                                     % (self.path, key, rows.dtype, rows.shape, y.shape[0], shape))
        except CalibrationDataError:
            raise
        except (OSError, ValueError, SyntaxError, KeyError, struct.error, zipfile.BadZipFile) as exc:
            raise _error("--eval %s is not a readable .npz (%s)." % (self.path, exc))
        if y.shape[0] == 0:
            raise _error("--eval %s holds no samples." % self.path)
        if int(y.min()) < 0:
            raise _error("--eval %s: y has negative labels." % self.path)
        self.x_keys = keys
        self.samples = int(y.shape[0])
        self.classes = len(self.class_names) if self.class_names else None  # else: the model's outputs
        self.max_label = int(y.max())

    def check_classes(self, outputs):
        """Fix the number of classes from the model's output width ``outputs``; refuse a mismatch."""
        if self.kind == "folder" or self.class_names:
            if self.classes != outputs:
                raise _error("--eval %s has %d classes, but the model's first output has %d scores."
                             % (self.path, self.classes, outputs),
                             hint="Give one class subfolder per model output (or --eval-classes listing them in "
                                  "output order).")
        else:
            if self.max_label >= outputs:
                raise _error("--eval %s has label %d, but the model's first output has only %d scores."
                             % (self.path, self.max_label, outputs))
            self.classes = outputs
        return self.classes

    # -------------------------------------------------------------------------------------- batches
    def batches(self):
        """Yield ``(inputs, labels, keys)`` per batch (module docstring)."""
        if self.kind == "folder":
            for start in range(0, self.samples, self.batch):
                chunk = self.items[start:start + self.batch]
                height, width, channels = self.shapes[0]
                samples, keys = [], []
                for path, _ in chunk:
                    try:
                        raw = calibration._decode_image(path, height, width, channels)
                        source = calibration.file_key(path)
                    except (OSError, ValueError, SyntaxError) as exc:
                        raise _error("the eval image %s cannot be read (%s)." % (path, exc),
                                     hint="Remove or repair it: accuracy is measured on every labelled sample.")
                    sample = preprocessing.apply(self.preprocess, raw[None])
                    samples.append(sample)
                    keys.append((source, calibration.sample_key(sample)))
                yield [np.concatenate(samples)], np.array([label for _, label in chunk], np.int64), keys
            return
        with zipfile.ZipFile(self.path) as archive:
            members = self._members(archive)
            labels = _NpyRows(archive, members["y"])
            streams = [_NpyRows(archive, members[key]) for key in self.x_keys]
            try:
                while True:
                    y = labels.read(self.batch)
                    if len(y) == 0:
                        break
                    raw = [stream.read(len(y)) for stream in streams]
                    # the same source hash as a calibration array row (CalibrationSource.source_key)
                    sources = [calibration.array_row_key(raw[0][index]) for index in range(len(y))]
                    inputs = [np.asarray(x, np.float32) for x in raw]
                    if not all(np.all(np.isfinite(x)) for x in inputs):
                        raise _error("--eval %s has non-finite values (NaN or Inf)." % self.path)
                    inputs = [preprocessing.apply(self.preprocess, x) for x in inputs]
                    keys = [(source, calibration.sample_key(inputs[0][index])) for index, source in enumerate(sources)]
                    yield inputs, np.asarray(y, np.int64), keys
            finally:
                labels.close()
                for stream in streams:
                    stream.close()

    def describe(self):
        return {"source": self.path, "kind": self.kind, "samples": self.samples, "classes": self.classes,
                "class_names": self.class_names, "preprocess": self.preprocess if isinstance(self.preprocess, str)
                else repr(self.preprocess)}
