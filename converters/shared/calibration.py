"""Calibration and probe data: model-ready float32 samples from an image folder or saved arrays.

For whom: the int8 converter (``converters.tf2.quantize``: the representative data set), and the
probe batch of every environment (``load_probe``, also called by ``legacy_tf1`` in TF 1.x). Python 3.7
compatible; needs numpy and Pillow only (scikit-image only for the built-in ``skimage`` source).

Sources (``path``):

- a folder of images, searched recursively for ``.jpg .jpeg .png .bmp`` (case-insensitive). Each image
  is decoded with Pillow, converted to RGB (3-channel models) or luminance (1-channel models), resized to
  the model's H x W with bilinear filtering (no crop: the whole picture, aspect ratio not kept), then
  preprocessed (``converters.shared.preprocess``). Unreadable files are skipped and listed in ``skipped``.
- a single image file (same treatment).
- an ``.npy`` file, or an ``.npz`` file (the array named like the model input, else the only/first
  array): shape ``(N, H, W, C)`` (or one sample ``(H, W, C)``) in the model's input layout, numeric.
  Arrays go through the same preprocessing as images, so give ``--preprocess raw`` for arrays that are
  already model inputs (the default). ``.npy`` is memory-mapped, so N can exceed RAM.
- ``skimage``: real photographs shipped inside scikit-image (faces from ``lfw_subset`` and the colour
  sample images); for demos and tests, where nothing may be downloaded.

Sampling: with more files than ``samples``, a seeded random choice of ``samples`` of them (the same
seed gives the same files on every machine: the list is sorted before choosing). With fewer, all of
them. Samples are streamed one at a time by ``iter_samples()``: memory does not grow with N.

Default number of calibration samples: ``DEFAULT_CALIB_SAMPLES = 200``. The TFLite converter's
calibration takes min/max of every activation over the data set; below ~100 samples the ranges miss
rarer activations (more clipping at run time), above ~500 the ranges barely change while conversion time
grows linearly (ResNet50: ~0.4 s per sample on 2 cores). 200 sits in that flat part.

What can go wrong (all ``CalibrationDataError``, step "calibrate"): missing path, empty folder, no
readable image, an array of the wrong shape or a non-numeric dtype, NaN/Inf after preprocessing, a
single-channel source for a preset that needs colour.
"""

import os
import sys

import numpy as np

from converters.shared import preprocess as preprocessing
from converters import options
from converters.errors import CalibrationDataError

DEFAULT_CALIB_SAMPLES = options.DEFAULT_CALIB_SAMPLES
DEFAULT_PROBE_SAMPLES = options.DEFAULT_PROBE_SAMPLES
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
BUILTIN_SKIMAGE = "skimage"


def _error(message, hint=None):
    return CalibrationDataError(message, step="calibrate", hint=hint)


def sample_shape(input_shape):
    """(H, W, C) of one sample from a model input shape ``(None|N, H, W, C)`` or ``(H, W, C)``.

    A 4-D shape is batch first; a 3-D shape is one image sample (even ``(None, None, 3)``); a 2-D shape
    with an unknown first dimension is ``(batch, features)``.
    """
    shape = tuple(input_shape)
    if len(shape) == 4 or (len(shape) == 2 and (shape[0] is None or shape[0] == -1)):
        shape = shape[1:]
    return tuple(None if (d is None or d == -1) else int(d) for d in shape)


def find_images(folder):
    """Sorted list of image files under ``folder`` (recursive)."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in files:
            if name.lower().endswith(IMAGE_EXTENSIONS):
                found.append(os.path.join(root, name))
    found.sort()
    return found


def choose(count, samples, seed):
    """Indices of a seeded random choice of ``samples`` out of ``count`` (all of them if fewer)."""
    if samples is None or samples >= count:
        return list(range(count))
    rng = np.random.RandomState(seed)
    return sorted(int(i) for i in rng.choice(count, size=int(samples), replace=False))


def _progress(iterable, total, description, enabled):
    if not enabled:
        return iterable
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is optional; no bar then
        return iterable
    # disable=None: no bar when stderr is not a terminal (logs, CI), so logs do not fill with redraws
    return tqdm(iterable, total=total, desc=description, file=sys.stderr, unit="sample", leave=False,
                disable=None)


def _decode_image(path_or_image, height, width, channels):
    from PIL import Image

    image = path_or_image if hasattr(path_or_image, "convert") else Image.open(path_or_image)
    image = image.convert("L" if channels == 1 else "RGB")
    if height is not None and width is not None and image.size != (width, height):
        image = image.resize((width, height), Image.BILINEAR)
    pixels = np.asarray(image, dtype=np.float32)
    if channels == 1:
        pixels = pixels[..., None]
    return pixels


def _skimage_pictures():
    """Real photographs from scikit-image (no download): faces first, then the colour samples."""
    from skimage import data

    pictures = []
    lfw = data.lfw_subset()  # 200 grayscale 25x25 faces (first 100) and non-faces, float in [0, 1]
    for face in lfw[:100]:
        pictures.append(("lfw_subset", np.stack([face * 255.0] * 3, axis=-1)))
    for name in ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field"):
        loader = getattr(data, name, None)
        if loader is None:
            continue
        try:
            pictures.append((name, np.asarray(loader(), dtype=np.float32)))
        except Exception:  # noqa: BLE001 - a missing sample file in a slim scikit-image install
            continue
    return pictures


class CalibrationSource(object):
    """A streamed, seeded selection of model-ready samples from ``path`` (see the module docstring).

    ``input_shape``: the model input shape, batch first or not; ``preprocess``: preset name,
    ``module:function`` or a callable; ``samples``: how many (None: all); ``input_name``: the key to
    pick from an ``.npz``. Construction checks that the source exists and is not empty; reading a
    sample checks its shape and values.
    """

    def __init__(self, path, input_shape, preprocess="raw", samples=DEFAULT_CALIB_SAMPLES, seed=0,
                 progress=True, input_name=None, description="calibration"):
        self.path = path
        self.shape = sample_shape(input_shape)
        if len(self.shape) != 3:
            self._image_ok = False
        else:
            self._image_ok = True
        self.preprocess = preprocess
        self.seed = seed
        self.progress = progress
        self.description = description
        self.skipped = []
        self._array = None
        self._files = None
        self._pictures = None
        if path is None:
            raise _error("no calibration data given.",
                         hint="Give --calib with an image folder or an .npy/.npz file.")
        path = str(path)
        if path == BUILTIN_SKIMAGE or (os.path.basename(path) == BUILTIN_SKIMAGE and not os.path.exists(path)):
            # the second form: a caller that made every --calib absolute (no such folder exists)
            self._need_images()
            self._pictures = _skimage_pictures()
            total = len(self._pictures)
            self.kind = "skimage"
        elif not os.path.exists(path):
            raise _error("%s does not exist." % path, hint="Check the --calib path.")
        elif os.path.isdir(path):
            self._need_images()
            self._files = find_images(path)
            if not self._files:
                raise _error("no image files (%s) under %s." % (" ".join(IMAGE_EXTENSIONS), path),
                             hint="Point --calib at a folder of representative images, or an .npy file.")
            total = len(self._files)
            self.kind = "images"
        elif path.lower().endswith(IMAGE_EXTENSIONS):
            self._need_images()
            self._files = [path]
            total = 1
            self.kind = "images"
        elif path.lower().endswith((".npy", ".npz")):
            self._array = self._open_array(path, input_name)
            total = self._array.shape[0]
            self.kind = "array"
        else:
            raise _error("%s is neither a folder, an image (%s), nor an .npy/.npz file."
                         % (path, " ".join(IMAGE_EXTENSIONS)))
        if total == 0:
            raise _error("%s holds no samples." % path)
        self.available = total
        self.indices = choose(total, samples, seed)

    def _need_images(self):
        if not self._image_ok or self.shape[-1] not in (1, 3):
            raise _error(
                "images cannot feed a model input of shape %s (images need (H, W, 1) or (H, W, 3))."
                % (self.shape,), hint="Give the data as an .npy file in the model's input shape.")
        if self.shape[0] is None or self.shape[1] is None:
            raise _error("the model input %s has no fixed height and width to resize the images to."
                         % (self.shape,), hint="Build/re-save the model with a fixed input shape "
                         "(e.g. 224,224,3): an NPU needs static shapes anyway.")

    def _open_array(self, path, input_name):
        try:
            if path.lower().endswith(".npy"):
                array = np.load(path, mmap_mode="r", allow_pickle=False)
            else:
                with np.load(path, allow_pickle=False) as archive:
                    keys = list(archive.files)
                    if not keys:
                        raise _error("%s holds no arrays." % path)
                    key = input_name if input_name in keys else keys[0]
                    array = archive[key]
        except CalibrationDataError:
            raise
        except (OSError, ValueError) as exc:
            raise _error("cannot read %s (%s)." % (path, exc))
        if array.dtype.kind not in "uif":
            raise _error("%s has dtype %s; calibration data must be numeric (float or int)."
                         % (path, array.dtype))
        if array.ndim == len(self.shape):
            array = array[None]
        if array.ndim != len(self.shape) + 1 or not _shape_fits(array.shape[1:], self.shape):
            raise _error("%s has shape %s; the model needs (N,) + %s." % (path, array.shape, self.shape),
                         hint="Save the samples batch first, in the model's input layout (channels last).")
        return array

    def __len__(self):
        return len(self.indices)

    def _raw(self, index):
        height, width, channels = (self.shape + (None, None, None))[:3]
        if self._array is not None:
            return np.asarray(self._array[index], dtype=np.float32)
        if self._pictures is not None:
            from PIL import Image

            pixels = np.clip(self._pictures[index][1], 0, 255).astype(np.uint8)
            return _decode_image(Image.fromarray(pixels), height, width, channels)
        return _decode_image(self._files[index], height, width, channels)

    def iter_samples(self):
        """Yield one float32 sample ``(1, H, W, C)`` at a time, preprocessed; skip unreadable images."""
        produced = 0
        self.skipped = []  # each pass (conversion, fallback route, debugger) starts afresh
        for index in _progress(self.indices, len(self.indices), self.description, self.progress):
            try:
                raw = self._raw(index)
            except (OSError, ValueError, SyntaxError) as exc:  # PIL raises these on corrupt files
                self.skipped.append((self._files[index] if self._files else str(index), str(exc)))
                continue
            if not np.all(np.isfinite(raw)):  # the data itself, before preprocessing could be blamed
                raise _error("sample %s of %s is not finite (NaN or Inf)." % (index, self.path),
                             hint="Remove or repair the non-finite samples; calibration data must be finite.")
            sample = preprocessing.apply(self.preprocess, raw[None])
            if not np.all(np.isfinite(sample)):
                raise _error("sample %s is not finite (NaN or Inf)." % index)
            produced += 1
            yield sample
        if produced == 0:
            raise _error("none of the %d selected files of %s could be read as an image (first: %s)."
                         % (len(self.indices), self.path, self.skipped[0][1] if self.skipped else "?"),
                         hint="Check that the files are real JPEG/PNG/BMP images.")

    def representative_dataset(self):
        """A generator function for ``TFLiteConverter.representative_dataset`` (one input)."""
        def generator():
            for sample in self.iter_samples():
                yield [sample]
        return generator

    def describe(self):
        return {"source": str(self.path), "kind": self.kind, "available": self.available,
                "used": len(self.indices) - len(self.skipped), "seed": self.seed,
                "preprocess": self.preprocess if isinstance(self.preprocess, str) else repr(self.preprocess),
                "skipped": [name for name, _ in self.skipped]}


def _shape_fits(actual, expected):
    if len(actual) != len(expected):
        return False
    return all(e is None or int(a) == int(e) for a, e in zip(actual, expected))


def load_probe(path, input_shape, preprocess="raw", n=DEFAULT_PROBE_SAMPLES, seed=0):
    """The probe batch: ``n`` seeded samples from ``path`` stacked into one float32 array (N, H, W, C).

    For the reference and parity steps in every environment (Python 3.7 too). Raises
    ``CalibrationDataError`` as ``CalibrationSource`` does.
    """
    source = CalibrationSource(path, input_shape, preprocess=preprocess, samples=n, seed=seed,
                               progress=False, description="probe")
    samples = list(source.iter_samples())
    return np.concatenate(samples, axis=0).astype(np.float32)
