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

Sampling (``split``, ``choose``): the files of a folder are sorted first, so the same seed gives the same
samples on every machine and in every environment (tf1.13's numpy 1.16 and tf2's numpy 2.x draw the same
``RandomState`` permutation). When the probe and the calibration come from ONE source (``--calib`` without
``--probe``), they are split by ONE seeded permutation of the source: calibration takes its first
positions, the probe its last ``probe_samples`` positions, so the two never share a sample. The probe
sits at the end (not right after the calibration samples) so that it does not depend on
``--calib-samples``: ``verify_upgrade`` (which does not calibrate), the legacy re-save step and a later
conversion with any ``--calib-samples`` all draw the same probe. A separate probe source (``--probe``)
is sampled on its own (``choose``). A source too small for both is refused (``split``) with what to do;
calibration may take fewer than ``--calib-samples`` (what the probe leaves) only down to
``MIN_SPLIT_CALIB`` samples (or the requested number when that is smaller), and the run says so.

Disjointness is also checked by content, not assumed: every sample has two content hashes
(``SampleKeys``): of its source item (the image file's bytes, the array row's bytes) and of the
preprocessed float32 sample. The calibration stream skips a sample whose hash equals a probe sample's
(``exclude``: duplicates in the data, or a ``--probe`` folder that shares files with ``--calib``) and
records the hashes of what it yielded (``yielded_keys``), from which the conversion step counts the
``overlap`` it reports (``count_overlap``). Samples are streamed one at a time by ``iter_samples()``:
memory does not grow with N.

Default number of calibration samples: ``DEFAULT_CALIB_SAMPLES = 200``. The TFLite converter's
calibration takes min/max of every activation over the data set; below ~100 samples the ranges miss
rarer activations (more clipping at run time), above ~500 the ranges barely change while conversion time
grows linearly (ResNet50: ~0.4 s per sample on 2 cores). 200 sits in that flat part.

What can go wrong (all ``CalibrationDataError``, step "calibrate"): missing path, empty folder, no
readable image, an array of the wrong shape or a non-numeric dtype, NaN/Inf after preprocessing, a
single-channel source for a preset that needs colour.
"""

import hashlib
import os
import sys
import zipfile
import zlib

import numpy as np

from converters.shared import preprocess as preprocessing
from converters import options
from converters.errors import CalibrationDataError

DEFAULT_CALIB_SAMPLES = options.DEFAULT_CALIB_SAMPLES
DEFAULT_PROBE_SAMPLES = options.DEFAULT_PROBE_SAMPLES
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
BUILTIN_SKIMAGE = "skimage"
MIN_SPLIT_CALIB = options.MIN_SPLIT_CALIB  # declared once, with its reason, in converters/options.py
KEY_CHARS = 16  # hex characters of a sample's content hash (64 bits: no accidental collision in practice)


def _error(message, hint=None):
    return CalibrationDataError(message, step="calibrate", hint=hint)


def sample_shape(input_shape, batch_first=None):
    """The shape of one sample from a model input shape, e.g. (H, W, C) from ``(None|N, H, W, C)``.

    ``batch_first`` True: the first dimension is the batch, whatever the rank (a sequence input
    ``(1, 20, 8)`` is a sample of ``(20, 8)``); False: ``input_shape`` is one sample already. None (callers
    that do not know): a 4-D shape is batch first; a 3-D shape is one image sample (even
    ``(None, None, 3)``); a 2-D shape with an unknown first dimension is ``(batch, features)``.
    """
    shape = tuple(input_shape)
    if batch_first:
        shape = shape[1:]
    elif batch_first is None and (len(shape) == 4 or (len(shape) == 2 and (shape[0] is None or shape[0] == -1))):
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
    return sorted(int(i) for i in permutation(count, seed)[:int(samples)])


def permutation(count, seed):
    """THE seeded permutation of a source's ``count`` samples (the same in every environment).

    ``RandomState(seed).choice(count, k, replace=False)`` is its first ``k`` entries, so calibration
    choices made before the split existed are unchanged.
    """
    return np.random.RandomState(seed).permutation(int(count))


def too_small(path, count, calib_samples, probe_samples, needed_calib):
    """The paragraph for a shared source that cannot give both a probe and calibration data."""
    return _error(
        "%s has %d samples: too few for a probe of %d samples and at least %d calibration samples that are "
        "not in the probe (calibration and probe never share a sample)." % (path, count, probe_samples, needed_calib),
        hint="Give more data, a separate probe source with --probe PATH, or fewer samples: e.g. "
             "--probe-samples %d or --calib-samples %d (--calib-samples %s was asked for)."
             % (max(1, count - needed_calib), max(1, count - probe_samples), calib_samples))


def split(count, calib_samples, probe_samples, seed, path="the data", min_calib=MIN_SPLIT_CALIB):
    """(calibration indices, probe indices) of one source that feeds both (see the module docstring).

    One seeded permutation: calibration takes its first ``min(calib_samples, count - probe_samples)``
    positions, the probe its last ``probe_samples``. Raises ``CalibrationDataError`` (with what to do)
    when fewer than ``min(calib_samples, min_calib)`` calibration samples would be left; ``calib_samples``
    None means "all that the probe leaves" (at least one).
    """
    count = int(count)
    probe_samples = options.probe_size(probe_samples, count)
    needed = 1 if calib_samples is None else max(1, min(int(calib_samples), int(min_calib)))
    if probe_samples < 1 or count - probe_samples < needed:
        raise too_small(path, count, calib_samples, probe_samples, needed)
    order = permutation(count, seed)
    room = count - probe_samples
    calib_count = room if calib_samples is None else min(int(calib_samples), room)
    return sorted(int(i) for i in order[:calib_count]), sorted(int(i) for i in order[room:])


def probe_indices(count, probe_samples, seed, path="the data"):
    """The probe's indices in a source shared with calibration: the last ``probe_samples`` positions of
    the seeded permutation (``split``), independent of ``--calib-samples``. At least one sample must be
    left for calibration."""
    return split(count, None, probe_samples, seed, path)[1]


def sample_key(sample):
    """Content hash (hex, ``KEY_CHARS``) of a preprocessed sample: its float32 bytes and shape."""
    array = np.ascontiguousarray(np.asarray(sample, dtype=np.float32).reshape(-1))
    return hashlib.sha256(array.tobytes()).hexdigest()[:KEY_CHARS]


def _bytes_key(data):
    return hashlib.sha256(data).hexdigest()[:KEY_CHARS]


def file_key(path):
    """Content hash of a file (an image's source key)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:KEY_CHARS]


def array_row_key(row):
    """Content hash of one array sample as stored (dtype, shape and bytes): an array row's source key."""
    row = np.ascontiguousarray(row)
    return _bytes_key(str((row.dtype.str, row.shape)).encode("ascii") + row.tobytes())


def count_overlap(keys, others):
    """How many of ``keys`` (pairs (source key, sample key)) equal one of ``others`` by either hash."""
    source_keys = set(k[0] for k in others if k[0])
    sample_keys = set(k[1] for k in others if k[1])
    return sum(1 for source, sample in keys if (source and source in source_keys) or sample in sample_keys)


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


def _decompression_bomb():
    """PIL's error for an image whose header claims more pixels than it will decode (an Exception)."""
    from PIL import Image

    return getattr(Image, "DecompressionBombError", OSError)


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
    pick from an ``.npz``. ``reserve_probe``: this source also feeds a probe of that many samples (the
    tail of its permutation, ``split``), which calibration leaves out; ``exclude``: (source key, sample
    key) pairs of samples never to yield (the probe's). Construction checks that the source exists and
    is not empty (and large enough for ``reserve_probe``); reading a sample checks its shape and values.
    """

    def __init__(self, path, input_shape, preprocess="raw", samples=DEFAULT_CALIB_SAMPLES, seed=0,
                 progress=True, input_name=None, description="calibration", reserve_probe=0, exclude=None,
                 min_calib=MIN_SPLIT_CALIB, batch_first=None):
        self.path = path
        self.shape = sample_shape(input_shape, batch_first)
        self._image_ok = len(self.shape) == 3
        self._settings(preprocess, samples, seed, progress, description, reserve_probe, exclude)
        self._array = None
        self._files = None
        self._pictures = None
        self._open(path, input_name)
        self._select(samples, seed, min_calib)

    def _settings(self, preprocess, samples, seed, progress, description, reserve_probe, exclude):
        """What every source keeps of its arguments, and the bookkeeping of its last pass."""
        self.preprocess = preprocess
        self.seed = seed
        self.progress = progress
        self.description = description
        self.skipped = []
        self.requested = samples
        self.reserve_probe = int(reserve_probe or 0)
        self._exclude = list(exclude or [])
        self._exclude_sources = set(k[0] for k in self._exclude if k[0])
        self._exclude_samples = set(k[1] for k in self._exclude if k[1])
        self.excluded = []  # indices skipped because they equal a probe sample (last pass)
        self.yielded_keys = []  # (source key, sample key) of every sample yielded (last pass)

    def _select(self, samples, seed, min_calib):
        total = self.available
        if total == 0:
            raise _error("%s holds no samples." % self.path)
        if self.reserve_probe:
            self.indices = split(total, samples, self.reserve_probe, seed, self.path, min_calib)[0]
        else:
            self.indices = choose(total, samples, seed)

    def _open(self, path, input_name):
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
        self.available = total

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
        except (OSError, ValueError, OverflowError, zipfile.BadZipFile, EOFError, NotImplementedError,
                zlib.error) as exc:
            # a damaged file: a truncated or lying .npy header (OverflowError from its memory map), an .npz
            # whose zip is corrupt (BadZipFile, "Bad CRC-32"; a compression method byte flipped:
            # NotImplementedError or zlib.error) or cut short (EOFError)
            raise _error("cannot read %s (%s: %s)." % (path, type(exc).__name__, exc),
                         hint="The file is damaged or not written by numpy.save / numpy.savez; write it again.")
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

    def source_key(self, index):
        """Content hash of sample ``index``'s source item: the image file's bytes, the array row's bytes
        (with its dtype and shape), the built-in picture's pixels."""
        if self._array is not None:
            return array_row_key(self._array[index])
        if self._pictures is not None:
            return _bytes_key(np.ascontiguousarray(np.clip(self._pictures[index][1], 0, 255).astype(np.uint8)).tobytes())
        return file_key(self._files[index])

    def iter_samples(self):
        """Yield one float32 sample ``(1, H, W, C)`` at a time, preprocessed; skip unreadable images and
        samples equal to an excluded (probe) sample; record the hashes of what was yielded."""
        produced = 0
        self.skipped = []  # each pass (conversion, fallback route, debugger) starts afresh
        self.excluded = []
        self.yielded_keys = []
        for index in _progress(self.indices, len(self.indices), self.description, self.progress):
            try:
                raw = self._raw(index)
                source = self.source_key(index)
            except (OSError, ValueError, SyntaxError, _decompression_bomb()) as exc:  # PIL's on corrupt files
                # (a header claiming billions of pixels is DecompressionBombError, not an OSError)
                self.skipped.append((self._item_name(index), str(exc)))
                continue
            if source in self._exclude_sources:
                self.excluded.append(index)
                continue
            if not _finite(raw):  # the data itself, before preprocessing could be blamed
                raise _error("sample %s of %s is not finite (NaN or Inf)." % (index, self.path),
                             hint="Remove or repair the non-finite samples; calibration data must be finite.")
            sample = self._preprocess(raw)
            if not _finite(sample):
                raise _error("sample %s is not finite (NaN or Inf)." % index)
            key = self._sample_key(sample)
            if key in self._exclude_samples:
                self.excluded.append(index)
                continue
            produced += 1
            self.yielded_keys.append((source, key))
            yield sample
        if produced == 0 and self.excluded and len(self.excluded) + len(self.skipped) == len(self.indices):
            raise _error("every selected sample of %s equals a probe sample (%d of them)."
                         % (self.path, len(self.excluded)),
                         hint="Give calibration data that is not the probe's (--calib), or a separate --probe PATH.")
        if produced == 0:
            raise _error("none of the %d selected files of %s could be read as an image (first: %s)."
                         % (len(self.indices), self.path, self.skipped[0][1] if self.skipped else "?"),
                         hint="Check that the files are real JPEG/PNG/BMP images.")

    def _item_name(self, index):
        return self._files[index] if self._files else str(index)

    def _preprocess(self, raw):
        return preprocessing.apply(self.preprocess, raw[None])

    def _sample_key(self, sample):
        return sample_key(sample)

    def representative_dataset(self):
        """A generator function for ``TFLiteConverter.representative_dataset``: one list per sample, an
        array per model input (``MultiSource`` yields several)."""
        def generator():
            for sample in self.iter_samples():
                yield list(sample) if isinstance(sample, list) else [sample]
        return generator

    def describe(self):
        return {"source": str(self.path), "kind": self.kind, "available": self.available,
                "used": len(self.indices) - len(self.skipped) - len(self.excluded), "seed": self.seed,
                "requested": self.requested, "reserved_for_probe": self.reserve_probe,
                "excluded_as_probe": len(self.excluded),
                "preprocess": self.preprocess if isinstance(self.preprocess, str) else repr(self.preprocess),
                "skipped": [name for name, _ in self.skipped]}

    def shortfall(self):
        """A sentence when calibration takes fewer samples than asked for (None otherwise)."""
        if self.requested is None or len(self.indices) >= int(self.requested):
            return None
        reason = ("%d are the probe's" % self.reserve_probe) if self.reserve_probe else "that is all of them"
        return ("calibration uses %d of the %d samples asked for: %s has %d (%s). Give more data or a "
                "separate --probe PATH for more." % (len(self.indices), int(self.requested), self.path,
                                                    self.available, reason))


def _finite(value):
    parts = value if isinstance(value, list) else [value]
    return all(np.all(np.isfinite(part)) for part in parts)


def combined_key(keys):
    """One content hash for a sample of several inputs, from the per-input hashes (in input order)."""
    return _bytes_key("|".join(str(key) for key in keys).encode("ascii"))


def is_image_shape(shape):
    """True for a sample shape (H, W, C) with 1 or 3 channels: an input that images (and image
    preprocessing presets) can feed."""
    return len(shape) == 3 and shape[-1] in (1, 3)


class MultiSource(CalibrationSource):
    """Samples for a model of several inputs (``inputs``: [(name, shape)], batch first): each sample is a
    list of float32 arrays ``(1, ...)`` in the model's input order.

    ``path``: an ``.npz`` holding one array per input name, the same number of samples in each (row
    ``i`` of every array is sample ``i``), or a dict ``{input name: path}`` of per-input sources (an image
    folder or image for an image input, ``.npy`` / ``.npz`` for any input), sampled with the same indices.
    ``preprocess`` applies to image-like inputs ``(H, W, 1|3)``; other inputs are taken as they are
    (``raw``). Content keys combine the inputs' keys (``combined_key``), so the probe and calibration stay
    disjoint by content as for one input. Selection, probe split and exclusion: as ``CalibrationSource``.
    """

    def __init__(self, path, inputs, preprocess="raw", samples=DEFAULT_CALIB_SAMPLES, seed=0, progress=True,
                 description="calibration", reserve_probe=0, exclude=None, min_calib=MIN_SPLIT_CALIB,
                 batch_first=True):
        self.names = [name for name, _ in inputs]
        paths = self._paths(path, self.names)
        self.parts = []
        for name, shape in inputs:
            sample = sample_shape(shape, batch_first)
            part_preprocess = preprocess if is_image_shape(sample) else "raw"
            self.parts.append(CalibrationSource(paths[name], sample, part_preprocess, samples=None, seed=seed,
                                                progress=False, input_name=name, batch_first=False))
        counts = dict((name, part.available) for name, part in zip(self.names, self.parts))
        if len(set(counts.values())) != 1:
            raise _error("the inputs' data have different numbers of samples (%s); sample i of every input "
                         "must belong together." % ", ".join("%s: %d" % item for item in sorted(counts.items())),
                         hint="Give the same number of samples for every input, in the same order.")
        self.path = path if not isinstance(path, dict) else ",".join("%s=%s" % (n, paths[n]) for n in self.names)
        self.shape = None
        self._settings(preprocess, samples, seed, progress, description, reserve_probe, exclude)
        self._array = self._files = self._pictures = None
        self.kind = "multi"
        self.available = self.parts[0].available
        self._select(samples, seed, min_calib)

    @staticmethod
    def _paths(path, names):
        if isinstance(path, dict):
            missing = [name for name in names if name not in path]
            if missing:
                raise _error("no calibration data for input(s) %s (given: %s)." % (", ".join(missing), ", ".join(
                    sorted(path))), hint="Give one source per model input: --calib NAME=PATH for each of %s."
                    % ", ".join(names))
            return dict((name, str(path[name])) for name in names)
        path = str(path)
        if not path.lower().endswith(".npz"):
            raise _error("%s gives data for one input; the model has %d (%s)." % (path, len(names), ", ".join(names)),
                         hint="Give an .npz holding one array per input name (%s), e.g. "
                              "numpy.savez(PATH, %s)." % (", ".join(names), ", ".join("%s=..." % n for n in names)))
        if not os.path.exists(path):
            raise _error("%s does not exist." % path, hint="Check the --calib path.")
        try:
            with np.load(path, allow_pickle=False) as archive:
                keys = list(archive.files)
        except (OSError, ValueError) as exc:
            raise _error("cannot read %s (%s)." % (path, exc))
        missing = [name for name in names if name not in keys]
        if missing:
            raise _error("%s has no array for model input(s) %s (it holds: %s)." % (
                path, ", ".join(missing), ", ".join(keys) or "nothing"),
                hint="Save one array per model input, named like the input: numpy.savez(PATH, %s)."
                     % ", ".join("%s=..." % n for n in names))
        return dict((name, path) for name in names)

    def _item_name(self, index):
        return str(index)

    def _raw(self, index):
        return [part._raw(index) for part in self.parts]

    def source_key(self, index):
        return combined_key([part.source_key(index) for part in self.parts])

    def _preprocess(self, raw):
        return [part._preprocess(value) for part, value in zip(self.parts, raw)]

    def _sample_key(self, sample):
        return combined_key([sample_key(value) for value in sample])


def make_source(path, inputs, preprocess="raw", samples=DEFAULT_CALIB_SAMPLES, seed=0, batch_first=True, **kwargs):
    """A ``CalibrationSource`` for a model of one input, a ``MultiSource`` for several (``inputs``:
    [(name, shape)])."""
    if len(inputs) == 1 and not isinstance(path, dict):
        return CalibrationSource(path, inputs[0][1], preprocess, samples, seed, input_name=inputs[0][0],
                                 batch_first=batch_first, **kwargs)
    return MultiSource(path, inputs, preprocess, samples, seed, batch_first=batch_first, **kwargs)


def _shape_fits(actual, expected):
    if len(actual) != len(expected):
        return False
    return all(e is None or int(a) == int(e) for a, e in zip(actual, expected))


class Probe(object):
    """A probe batch drawn from data: ``array`` (N, ...) float32 (the first input's), ``arrays`` (one per
    input name), the source ``indices`` it took, each sample's ``keys`` (source key, sample key) and
    ``describe()`` for manifest.json."""

    def __init__(self, array, source, indices, keys, shared, arrays=None):
        self.array = array
        self.arrays = arrays or {}
        self.source = source
        self.indices = indices
        self.keys = keys
        self.shared = shared

    def describe(self):
        return {"path": self.source.path if self.source.kind == "skimage" else os.path.abspath(str(self.source.path)),
                "kind": self.source.kind, "available": self.source.available, "samples": int(self.array.shape[0]),
                "seed": self.source.seed, "indices": list(self.indices),
                "split": ("last %d positions of the seeded permutation of the calibration source"
                          % len(self.indices)) if self.shared else "seeded choice from a separate probe source",
                "source_sha256": [k[0] for k in self.keys], "sample_sha256": [k[1] for k in self.keys],
                "skipped": [name for name, _ in self.source.skipped]}


def draw_probe(path, input_shape, preprocess="raw", n=None, seed=0, shared=True, input_name=None, batch_first=None,
               inputs=None):
    """The probe batch from ``path``: with ``shared`` (the source also feeds calibration) the last ``n``
    positions of its seeded permutation (``probe_indices``), else a seeded choice of ``n`` (all if fewer);
    ``n`` None: ``converters.options.probe_size`` (the default, or half of a small shared source).

    The ONE function the legacy re-save step (TF 1.x, Python 3.7) and the tf2 conversion step draw a
    probe with, so both take the same samples. Raises ``CalibrationDataError`` as ``CalibrationSource``
    does, and when a shared source leaves no calibration sample. Unreadable images are left out (the
    probe is then smaller; ``describe()`` names them).
    """
    if inputs is not None and (len(inputs) > 1 or isinstance(path, dict)):
        source = MultiSource(path, inputs, preprocess=preprocess, samples=None, seed=seed, progress=False,
                             description="probe", batch_first=True if batch_first is None else batch_first)
    else:
        source = CalibrationSource(path, input_shape, preprocess=preprocess, samples=None, seed=seed, progress=False,
                                   input_name=input_name, description="probe", batch_first=batch_first)
    source.indices = (probe_indices(source.available, n, seed, source.path) if shared
                      else choose(source.available, options.probe_size(n), seed))
    samples = list(source.iter_samples())  # unreadable images are skipped (named in describe()["skipped"])
    if isinstance(source, MultiSource):
        arrays = dict((name, np.concatenate([sample[k] for sample in samples], axis=0).astype(np.float32))
                      for k, name in enumerate(source.names))
        return Probe(arrays[source.names[0]], source, list(source.indices), list(source.yielded_keys), shared,
                     arrays=arrays)
    array = np.concatenate(samples, axis=0).astype(np.float32)
    return Probe(array, source, list(source.indices), list(source.yielded_keys), shared,
                 arrays={input_name: array} if input_name else None)


def load_probe(path, input_shape, preprocess="raw", n=None, seed=0, shared=True):
    """The probe batch as one float32 array (N, H, W, C) (``draw_probe``'s ``array``)."""
    return draw_probe(path, input_shape, preprocess, n, seed, shared).array


def probe_keys(probe_arrays, source_keys=None):
    """(source key, sample key) pairs of a probe batch (N, ...) read back from probe.npz, or of a list of
    batches, one per input (the sample key then combines the inputs', as ``MultiSource``'s);
    ``source_keys``: the manifest's ``source_sha256`` when the probe came from data."""
    if isinstance(probe_arrays, (list, tuple)) and len(probe_arrays) == 1:
        probe_arrays = probe_arrays[0]
    several = isinstance(probe_arrays, (list, tuple))
    arrays = [np.asarray(a, dtype=np.float32) for a in probe_arrays] if several else \
        [np.asarray(probe_arrays, dtype=np.float32)]
    keys = []
    for index in range(arrays[0].shape[0]):
        source = source_keys[index] if source_keys and index < len(source_keys) else None
        key = combined_key([sample_key(a[index]) for a in arrays]) if several else sample_key(arrays[0][index])
        keys.append((source, key))
    return keys
