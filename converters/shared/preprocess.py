"""Input preprocessing presets: the same arithmetic the model saw in training, for calibration and probes.

For whom: calibration (``converters.shared.calibration``) and the probe batch in every environment. Python 3.7
compatible, numpy only. A wrong preset is the most common cause of a bad int8 model: the converter
calibrates its input scale on whatever range the images come in, so calibrating on ``x/255`` a model
trained on ``x - mean`` gives an input quantization that clips most of the real inputs.

Presets (input: float32 RGB pixels in [0, 255], channels last, any leading shape):

========== ==================================================================================
raw        unchanged
unit       x / 255                                  -> [0, 1]
tf         x / 127.5 - 1                            -> [-1, 1] (keras.applications "tf" mode)
caffe      RGB -> BGR, minus ImageNet BGR mean (103.939, 116.779, 123.68)  (keras "caffe" mode)
vggface1   RGB -> BGR, minus (93.5940, 104.7624, 129.1863)  = keras_vggface.utils.preprocess_input(version=1)
vggface2   RGB -> BGR, minus (91.4953, 103.8827, 131.0912)  = keras_vggface.utils.preprocess_input(version=2)
torch      x / 255, minus ImageNet mean (0.485, 0.456, 0.406), divided by std (0.229, 0.224, 0.225)
========== ==================================================================================

Note for the vggface presets: keras_vggface reverses the channels and then subtracts the three
constants in the *new* (BGR) order, so 93.5940 is subtracted from blue. We copy that exactly (checked
against the package's own function by ``tests/unit/test_preprocess.py``), even though the constants
look like an RGB mean: a model trained with that function expects exactly that input.

The colour presets (caffe, vggface*, torch) need three channels; on other channel counts they raise
``CalibrationDataError``. A user function is given as ``module:function`` (``package.mod:fn``); it
receives a float32 array ``(N, H, W, C)`` and must return an array of the same shape.
"""

import importlib

import numpy as np

from converters.errors import CalibrationDataError, UsageError

IMAGENET_BGR_MEAN = (103.939, 116.779, 123.68)
VGGFACE1_MEAN = (93.5940, 104.7624, 129.1863)
VGGFACE2_MEAN = (91.4953, 103.8827, 131.0912)
TORCH_MEAN = (0.485, 0.456, 0.406)
TORCH_STD = (0.229, 0.224, 0.225)


def _raw(x):
    return x


def _unit(x):
    return x / np.float32(255.0)


def _tf(x):
    return x / np.float32(127.5) - np.float32(1.0)


def _need_rgb(x, name):
    if x.shape[-1] != 3:
        raise CalibrationDataError(
            "preset %r needs 3 colour channels, the data has %d." % (name, x.shape[-1]),
            step="preprocess",
            hint="Use --preprocess raw, unit or tf for single-channel models, or give module:function.")


def _bgr_minus(mean, name):
    def preset(x):
        _need_rgb(x, name)
        # reverse the channels first, then subtract in BGR order: keras_vggface / keras "caffe" order
        return x[..., ::-1] - np.asarray(mean, dtype=np.float32)
    return preset


def _torch(x):
    _need_rgb(x, "torch")
    return (x / np.float32(255.0) - np.asarray(TORCH_MEAN, np.float32)) / np.asarray(TORCH_STD, np.float32)


PRESETS = {
    "raw": _raw,
    "unit": _unit,
    "tf": _tf,
    "caffe": _bgr_minus(IMAGENET_BGR_MEAN, "caffe"),
    "vggface1": _bgr_minus(VGGFACE1_MEAN, "vggface1"),
    "vggface2": _bgr_minus(VGGFACE2_MEAN, "vggface2"),
    "torch": _torch,
}


def get(name):
    """Return the preprocessing function for a preset name or ``module:function``.

    Raises ``UsageError`` for an unknown preset or a ``module:function`` that cannot be imported
    (importing it runs that module's code: it is the user's own code, given on the command line).
    """
    if callable(name):
        return name
    if name is None:
        name = "raw"
    if name in PRESETS:
        return PRESETS[name]
    if ":" in name:
        module_name, _, function_name = name.partition(":")
        try:
            module = importlib.import_module(module_name)
            function = getattr(module, function_name)
        except (ImportError, AttributeError) as exc:
            raise UsageError(
                "cannot import the preprocessing function %r (%s: %s)." % (name, type(exc).__name__, exc),
                step="preprocess",
                hint="Give module:function with the module importable (on PYTHONPATH) in every environment.")
        if not callable(function):
            raise UsageError("%r is not callable." % name, step="preprocess")
        return function
    raise UsageError(
        "unknown preprocessing %r." % name, step="preprocess",
        hint="Use one of %s, or module:function." % ", ".join(sorted(PRESETS)))


def apply(name, pixels):
    """Preprocess ``pixels`` (RGB, [0, 255], channels last) with preset/function ``name``; float32 out.

    Raises ``CalibrationDataError`` when the result changes shape or is not finite.
    """
    x = np.asarray(pixels, dtype=np.float32)
    function = get(name)
    out = np.asarray(function(np.array(x, copy=True)), dtype=np.float32)
    if out.shape != x.shape:
        raise CalibrationDataError(
            "preprocessing %r changed the shape from %s to %s." % (name, x.shape, out.shape),
            step="preprocess")
    if not np.all(np.isfinite(out)):
        raise CalibrationDataError("preprocessing %r produced NaN or Inf." % (name,), step="preprocess")
    return out
