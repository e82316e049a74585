"""Full-int8 TFLite conversion with the newest (MLIR) converter: one interface, four kinds of source.

For whom: ``converters.convert`` (TF 2.x models) and the legacy pipeline (a filled run folder); runs in
the ``tf2`` environment only (Python 3.11, TF 2.21, tf-keras, Keras 3).

Sources (``load_source``), each with its *route* (recorded in tflite.json, with its time):

==================== ========================= ==================================================
source               route                     how
==================== ========================= ==================================================
in-memory Keras      ``keras``                 concrete function with batch 1 -> from_concrete_functions
``.h5``              ``keras_h5``              tf_keras.models.load_model (legacy Keras 2), then as above
``.keras``           ``keras3``                keras.saving.load_model (Keras 3), export() to a SavedModel,
                                               then as a SavedModel
SavedModel folder    ``saved_model``           tf.saved_model.load, serving signature with batch 1
run folder           ``frozen_graph``          tf.compat.v1 from_frozen_graph(RUN/model.pb) with the names in
                                               manifest ``model.frozen_graph``; if that route fails:
                     ``keras_h5`` (fallback)   RUN/model.h5 as above. Every attempt is recorded.
==================== ========================= ==================================================

The batch dimension is fixed to 1: an NPU delegate (VX / Ethos-U) needs static shapes, and a
shape_signature of -1 would make ``converters.tf2.npu`` call the model not ready.

Options (``ConversionOptions``): ``io`` (input type: int8 | uint8 | float32), ``output_io`` (output type,
default: the same as ``io``; e.g. ``io=int8, output_io=float32`` keeps an int8 input for the camera
pipeline and gives float scores), ``per_tensor`` (one weight scale per tensor instead of per output
channel, for NPUs whose compiler wants it; checked in the written file), ``allow_float_ops`` (lets the
converter keep ops that have no int8 kernel in float; never silent: without it such an op is a
``ConversionError`` naming the op).

What can go wrong: ``ModelLoadError`` (the source does not load), ``ConversionError`` (the converter
fails, an op cannot be int8, or the written file is not what was asked for), ``CalibrationDataError``
(from the calibration data).
"""

import contextlib
import dataclasses
import os
import re
import shutil
import tempfile
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # tf.keras = Keras 2 (tf_keras): legacy .h5 need it
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from converters import runfolder  # noqa: E402
from converters.errors import (  # noqa: E402
    ConversionError, InputFileError, ModelLoadError, UntrustedModelError, UsageError)

IO_TYPES = {"int8": tf.int8, "uint8": tf.uint8, "float32": tf.float32}
ROUTES = ("keras", "keras_h5", "keras3", "saved_model", "frozen_graph")


@dataclasses.dataclass
class ConversionOptions:
    """What the user asked for (see the module docstring)."""

    io: str = "int8"
    output_io: str | None = None
    per_tensor: bool = False
    allow_float_ops: bool = False

    def __post_init__(self):
        if self.output_io is None:
            self.output_io = self.io
        for name in (self.io, self.output_io):
            if name not in IO_TYPES:
                raise UsageError("unknown I/O type %r." % name, step="convert",
                                 hint="Use one of int8, uint8, float32.")


@dataclasses.dataclass
class Source:
    """A loaded source: what the converter is built from, and the model's input/output description."""

    kind: str  # keras | keras_h5 | keras3 | saved_model | frozen_graph
    path: str | None
    inputs: list  # [{name, shape, dtype}]
    outputs: list
    build: object  # () -> a configured-but-unquantized converter
    fallback: object = None  # ("keras_h5", path) for a run folder: loaded only if needed
    keras_model: object = None

    @property
    def input_shape(self):
        return self.inputs[0]["shape"]


# ---------------------------------------------------------------------------------------------- sources

def _batch1(shape):
    shape = list(shape)
    if shape and (shape[0] is None or shape[0] == -1):
        shape[0] = 1
    return [None if d is None else int(d) for d in shape]


def _from_keras_model(model, kind, path):
    """Converter from a Keras 2 (tf_keras) or Keras 3 model, traced with batch 1."""
    specs = [tf.TensorSpec(_batch1(t.shape), t.dtype, name=_clean(t.name)) for t in model.inputs]

    def build():
        function = tf.function(lambda *xs: model(list(xs) if len(xs) > 1 else xs[0], training=False))
        concrete = function.get_concrete_function(*specs)
        return tf.lite.TFLiteConverter.from_concrete_functions([concrete], model)

    inputs = [{"name": _clean(t.name), "shape": _batch1(t.shape), "dtype": str(t.dtype.name)}
              for t in model.inputs]
    outputs = [{"name": _clean(t.name), "shape": _batch1(t.shape), "dtype": str(t.dtype.name)}
               for t in model.outputs]
    return Source(kind, path, inputs, outputs, build, keras_model=model)


def _clean(name):
    return name.split(":")[0]


def lambda_layers_in_h5(path):
    """Names of the Lambda layers in an .h5's stored architecture (read with h5py, nothing executed)."""
    import json

    import h5py

    try:
        with h5py.File(path, "r") as handle:
            config = handle.attrs.get("model_config")
    except OSError:
        return []  # not HDF5: tf_keras will say so with its own error
    if config is None:
        return []
    if isinstance(config, bytes):
        config = config.decode("utf-8")
    found = []

    def walk(node):
        if isinstance(node, dict):
            if node.get("class_name") == "Lambda":
                found.append((node.get("config") or {}).get("name", "?"))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
    walk(json.loads(config))
    return found


def _refuse_untrusted(path, names):
    raise UntrustedModelError(
        "%s has Lambda layer(s) %s; loading them runs Python code stored in the file." % (path, ", ".join(names)),
        step="load", hint="Give --trust-model only if you trust where the file comes from.")


def _load_h5(path, trust_model=False):
    import tf_keras

    names = lambda_layers_in_h5(path)
    if names and not trust_model:
        _refuse_untrusted(path, names)
    try:
        return tf_keras.models.load_model(path, compile=False)
    except Exception as exc:  # noqa: BLE001 - any load failure becomes one paragraph
        raise ModelLoadError(
            "tf_keras could not load %s (%s: %s)." % (path, type(exc).__name__, str(exc).splitlines()[0][:300]),
            step="load",
            hint="A legacy file (TF 1.x, Lambda layers, custom layers) should go through "
                 "`nox -s convert_legacy`, which re-saves it in its own TF version first.") from exc


def _saved_model_source(path, kind="saved_model"):
    try:
        loaded = tf.saved_model.load(path)
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError("cannot load the SavedModel %s (%s)." % (path, str(exc).splitlines()[0][:300]),
                             step="load") from exc
    signatures = getattr(loaded, "signatures", {})
    if not signatures:
        raise ModelLoadError("the SavedModel %s has no serving signature." % path, step="load",
                             hint="Save it with a signature (model.export(path) or tf.saved_model.save).")
    key = "serving_default" if "serving_default" in signatures else sorted(signatures)[0]
    signature = signatures[key]
    _, kwargs = signature.structured_input_signature
    names = sorted(kwargs)
    specs = [tf.TensorSpec(_batch1(kwargs[n].shape), kwargs[n].dtype, name=n) for n in names]
    outputs_spec = signature.structured_outputs

    def build():
        def call(*xs):
            result = signature(**dict(zip(names, xs)))
            return [result[k] for k in sorted(result)]

        concrete = tf.function(call).get_concrete_function(*specs)
        return tf.lite.TFLiteConverter.from_concrete_functions([concrete], loaded)

    inputs = [{"name": n, "shape": _batch1(kwargs[n].shape), "dtype": kwargs[n].dtype.name} for n in names]
    outputs = [{"name": k, "shape": _batch1(outputs_spec[k].shape), "dtype": outputs_spec[k].dtype.name}
               for k in sorted(outputs_spec)]
    return Source(kind, path, inputs, outputs, build)


def _keras3_source(path, workdir, trust_model=False):
    import keras

    try:
        # safe_mode refuses Lambda layers whose code is stored as bytecode; --trust-model lifts it
        model = keras.saving.load_model(path, compile=False, safe_mode=not trust_model)
    except ValueError as exc:
        if "safe_mode" in str(exc) or "Lambda" in str(exc):
            raise UntrustedModelError(
                "%s has Lambda layer(s); loading them runs Python code stored in the file." % path,
                step="load", hint="Give --trust-model only if you trust where the file comes from.") from exc
        raise ModelLoadError("Keras %s could not load %s (%s)." % (keras.__version__, path,
                             str(exc).splitlines()[0][:300]), step="load") from exc
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError("Keras %s could not load %s (%s)." % (keras.__version__, path,
                             str(exc).splitlines()[0][:300]), step="load") from exc
    # Keras 3 models are not tf.keras models: the converter reads them through an exported SavedModel.
    exported = os.path.join(workdir, "keras3_saved_model")
    model.export(exported, format="tf_saved_model", verbose=False)
    source = _saved_model_source(exported, kind="keras3")
    source.path = path
    source.keras_model = model
    return source


def _frozen_graph_source(run_dir, manifest):
    graph = manifest.get("model", {}).get("frozen_graph") or {}
    pb = os.path.join(run_dir, graph.get("path") or runfolder.MODEL_PB)
    if not os.path.exists(pb):
        raise InputFileError("no frozen graph at %s." % pb, step="convert")
    input_arrays = list(graph.get("input_arrays") or [])
    output_arrays = list(graph.get("output_arrays") or [])
    if not input_arrays or not output_arrays:
        raise InputFileError("manifest model.frozen_graph lacks input_arrays/output_arrays.", step="convert")
    model_inputs = manifest.get("model", {}).get("inputs") or []
    input_shapes = {}
    for array_name, described in zip(input_arrays, model_inputs):
        input_shapes[array_name] = _batch1(described["shape"])
    for array_name, shape in (graph.get("input_shapes") or {}).items():
        input_shapes[array_name] = _batch1(shape)

    def build():
        return tf.compat.v1.lite.TFLiteConverter.from_frozen_graph(
            pb, input_arrays, output_arrays, input_shapes=input_shapes or None)

    inputs = [{"name": n, "shape": input_shapes.get(n), "dtype": "float32"} for n in input_arrays]
    outputs = [{"name": n, "shape": None, "dtype": "float32"} for n in output_arrays]
    for described, out in zip(manifest.get("model", {}).get("outputs") or [], outputs):
        out["shape"] = _batch1(described.get("shape") or [])
    return Source("frozen_graph", pb, inputs, outputs, build)


def load_source(source, workdir, trust_model=False):
    """Make a ``Source`` from a Keras model object, an .h5/.keras file, a SavedModel or a run folder.

    ``workdir``: a scratch folder (Keras 3 models are exported there). A run folder's source is its
    frozen graph when the manifest names one, with its ``model.h5`` as the fallback (trusted as the
    re-save step recorded it). Raises ``UntrustedModelError`` for Lambda layers in an .h5/.keras file
    without ``trust_model`` (a SavedModel or frozen graph holds no Python code).
    """
    if hasattr(source, "inputs") and hasattr(source, "layers"):
        return _from_keras_model(source, "keras", None)
    path = str(source)
    if not os.path.exists(path):
        raise InputFileError("%s does not exist." % path, step="load")
    if os.path.isdir(path):
        manifest_path = os.path.join(path, runfolder.MANIFEST)
        if os.path.exists(manifest_path):
            manifest = runfolder.read_json(manifest_path)
            h5 = os.path.join(path, runfolder.MODEL_H5)
            fallback = None
            trusted = bool(trust_model or (manifest.get("model") or {}).get("trusted"))
            if os.path.exists(h5):
                fallback = ("keras_h5", h5, trusted)  # loaded only if the graph route fails
            if (manifest.get("model") or {}).get("frozen_graph") or os.path.exists(
                    os.path.join(path, runfolder.MODEL_PB)):
                try:
                    primary = _frozen_graph_source(path, manifest)
                except InputFileError:
                    if fallback is None:
                        raise
                    primary = None
                if primary is not None:
                    primary.fallback = fallback
                    return primary
            if fallback is not None:
                return _from_keras_model(_load_h5(h5, trusted), "keras_h5", h5)
            raise InputFileError("the run folder %s holds neither model.pb nor model.h5." % path,
                                 step="convert", hint="Run the re-save step (convert_legacy) first.")
        if os.path.exists(os.path.join(path, "saved_model.pb")):
            return _saved_model_source(path)
        raise InputFileError("%s is a folder but neither a SavedModel nor a run folder." % path, step="load")
    lower = path.lower()
    if lower.endswith((".h5", ".hdf5")):
        return _from_keras_model(_load_h5(path, trust_model), "keras_h5", path)
    if lower.endswith(".keras"):
        return _keras3_source(path, workdir, trust_model)
    raise InputFileError("%s: unknown model format (expected .h5, .keras, a SavedModel folder or a run "
                         "folder)." % path, step="load")


# ------------------------------------------------------------------------------------------- conversion

def configure(converter, representative_dataset, options):
    """Set the int8 options on a converter (v1 or v2). Without ``allow_float_ops`` only int8 builtins."""
    converter.experimental_new_converter = True  # MLIR
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative_dataset
    ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if options.allow_float_ops:
        ops.append(tf.lite.OpsSet.TFLITE_BUILTINS)
    converter.target_spec.supported_ops = ops
    converter.inference_input_type = IO_TYPES[options.io]
    converter.inference_output_type = IO_TYPES[options.output_io]
    if options.per_tensor:
        converter._experimental_disable_per_channel = True  # private, but the only switch (TF 2.5+)
    return converter


_OP_PATTERNS = (
    re.compile(r"'(tfl?\.[A-Za-z0-9_]+)' op"),
    re.compile(r"failed to legalize operation '(tf\.[A-Za-z0-9_]+)'"),
    re.compile(r"\b(tf\.[A-Z][A-Za-z0-9_]+)\b"),
    re.compile(r"Quantization not yet supported for op: '?([A-Z_0-9]+)'?"),
    re.compile(r"\b([A-Z][A-Z0-9_]{2,})\b(?= op| is not supported)"),
)


def ops_named_in(message):
    """The op names a converter error message mentions (for a one-line error), in order of appearance."""
    found = []
    for pattern in _OP_PATTERNS:
        for match in pattern.finditer(message):
            name = match.group(1)
            if name not in found:
                found.append(name)
    return found


def _convert_once(source, representative_dataset, options):
    converter = configure(source.build(), representative_dataset, options)
    return converter.convert()


def convert(source, output_path, representative_dataset, options, float_output_path=None):
    """Convert ``source`` (a ``Source``) to a full-int8 .tflite at ``output_path`` (written atomically).

    Returns a dict: route, attempts [{route, seconds, status, error?}], seconds, size_bytes, float size
    (when ``float_output_path`` is given, a float32 conversion is written there for the size comparison
    and the quantization debugger), input/output dtypes, weight granularity. Raises ``ConversionError``
    when every route fails; the message names ops that could not be int8.
    """
    attempts = []
    candidates = [source]
    if source.fallback is not None:
        candidates.append(source.fallback)
    content = None
    used = None
    last_error = None
    for candidate in candidates:
        if isinstance(candidate, tuple):  # lazily loaded fallback: ("keras_h5", path, trusted)
            try:
                candidate = _from_keras_model(_load_h5(candidate[1], candidate[2]), candidate[0], candidate[1])
            except (ModelLoadError, UntrustedModelError) as exc:
                attempts.append({"route": "keras_h5", "seconds": 0.0, "status": "failed", "error": exc.message})
                last_error = exc
                continue
        started = time.perf_counter()
        try:
            content = _convert_once(candidate, representative_dataset, options)
        except Exception as exc:  # noqa: BLE001 - converter errors come as many types
            seconds = time.perf_counter() - started
            message = str(exc)
            attempts.append({"route": candidate.kind, "seconds": round(seconds, 2), "status": "failed",
                             "error": _first_lines(message), "ops": ops_named_in(message)})
            last_error = exc
            continue
        attempts.append({"route": candidate.kind, "seconds": round(time.perf_counter() - started, 2),
                         "status": "ok"})
        used = candidate
        break
    if content is None:
        failure = attempts[-1] if attempts else {}
        ops = failure.get("ops") or []
        if ops and not options.allow_float_ops:
            raise ConversionError(
                "the TFLite converter could not convert op(s) %s (%s)." % (", ".join(ops[:5]), failure.get("error", "")),
                step="convert",
                hint="These ops have no TFLite builtin kernel (int8 or float). Replace them in the model; "
                     "--allow-float-ops helps only for ops that have a float kernel.") from last_error
        raise ConversionError(
            "every conversion route failed: %s." % "; ".join(
                "%s: %s" % (a["route"], a.get("error", "")) for a in attempts),
            step="convert", hint="Rerun with --debug for the converter's full log.") from last_error
    with runfolder.atomic_path(output_path) as temporary:
        with open(temporary, "wb") as handle:
            handle.write(content)
        # The MLIR converter does not refuse ops without an int8 kernel even when only
        # TFLITE_BUILTINS_INT8 is allowed (TF 2.21: SIN, CUMSUM, FLOOR_MOD, ATAN2 stay float between a
        # DEQUANTIZE and a QUANTIZE, measured). So "never silently" is enforced here, on the file, before
        # it replaces anything: a rejected model never lands at output_path.
        from converters.tf2 import npu

        readiness = npu.check(temporary)
        if readiness["float_ops"] and not options.allow_float_ops:
            error = ConversionError(
                "the int8 converter left op(s) %s in float (%s)." % (
                    ", ".join(readiness["float_ops"]), "; ".join(readiness["problems"][:3])),
                step="convert",
                hint="These ops have no int8 kernel in TFLite. Replace them in the model, or give "
                     "--allow-float-ops to accept a partly-float model (it will not run fully on an NPU).")
            error.npu = readiness
            error.attempts = attempts
            raise error
    result = {
        "path": os.path.abspath(output_path),
        "route": used.kind,
        # a run folder's own model.pb / model.h5 by name: the folder is renamed into place afterwards
        "source": os.path.basename(used.path) if os.path.basename(str(used.path)) in ("model.pb", "model.h5")
        else used.path,
        "attempts": attempts,
        "seconds": attempts[-1]["seconds"],
        "size_bytes": len(content),
        "input_dtype": options.io,
        "output_dtype": options.output_io,
        "per_tensor": options.per_tensor,
        "allow_float_ops": options.allow_float_ops,
    }
    if float_output_path:
        started = time.perf_counter()
        try:
            converter = used.build()
            converter.experimental_new_converter = True
            float_content = converter.convert()
            runfolder.write_bytes(float_output_path, float_content)
            result["float_path"] = os.path.basename(float_output_path)
            result["float_size_bytes"] = len(float_content)
            result["float_seconds"] = round(time.perf_counter() - started, 2)
        except Exception as exc:  # noqa: BLE001 - the float model is only for comparison
            result["float_error"] = _first_lines(str(exc))
    verify_written(output_path, options, result)
    result["npu"] = readiness
    return result, used


def _first_lines(message, limit=400):
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    # the MLIR error's useful line is the one with "error:", not the Python frame header
    errors = [line for line in lines if "error:" in line]
    text = " | ".join((errors or lines)[:3])
    return text[:limit]


def verify_written(path, options, result):
    """Check the written file against the request: I/O dtypes and weight scale granularity.

    Fills ``result`` with ``io`` (actual dtypes) and ``weights`` {per_channel, per_tensor} counts; raises
    ``ConversionError`` when the input/output dtype is not the requested one or a per-tensor request
    left per-channel weights (the file is kept: it is complete, only not what was asked for).
    """
    from converters.tf2 import npu

    summary = npu.read_model(path)
    inputs = [summary["tensors"][i] for i in summary["inputs"]]
    outputs = [summary["tensors"][i] for i in summary["outputs"]]
    result["io"] = {"inputs": [_io_entry(t) for t in inputs], "outputs": [_io_entry(t) for t in outputs]}
    granularity = npu.weight_granularity(summary)
    result["weights"] = granularity
    problems = []
    for tensor in inputs:
        if tensor["dtype"] != options.io:
            problems.append("input %s is %s, not %s" % (tensor["name"], tensor["dtype"], options.io))
    for tensor in outputs:
        if tensor["dtype"] != options.output_io:
            problems.append("output %s is %s, not %s" % (tensor["name"], tensor["dtype"], options.output_io))
    if options.per_tensor and granularity["per_channel"]:
        problems.append("%d weight tensors are still per-channel" % granularity["per_channel"])
    if problems:
        raise ConversionError("the written model is not what was asked: %s." % "; ".join(problems),
                              step="convert")
    return result


def _io_entry(tensor):
    entry = {"name": tensor["name"], "dtype": tensor["dtype"], "shape": tensor["shape"]}
    if tensor.get("scales"):
        entry["scale"] = tensor["scales"][0]
        entry["zero_point"] = tensor["zero_points"][0]
    return entry


@contextlib.contextmanager
def scratch_dir():
    """A temporary folder removed afterwards (Keras 3 SavedModel exports)."""
    path = tempfile.mkdtemp(prefix="tfbridge-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def float_reference(source, samples):
    """Float outputs of the source on ``samples`` (N, ...) as {output_name: array}, batch 1 at a time.

    The TF 2.x route's reference (the model's own TF, float32). Uses the Keras model when there is one,
    else the SavedModel's serving signature.
    """
    if source.keras_model is not None and source.kind != "keras3":
        model = source.keras_model
        outputs = [model(samples[i:i + 1], training=False) for i in range(len(samples))]
        if isinstance(outputs[0], (list, tuple)):
            return {o["name"]: np.concatenate([np.asarray(out[k]) for out in outputs])
                    for k, o in enumerate(source.outputs)}
        return {source.outputs[0]["name"]: np.concatenate([np.asarray(o) for o in outputs])}
    if source.keras_model is not None:  # keras 3
        model = source.keras_model
        out = np.concatenate([np.asarray(model(samples[i:i + 1], training=False)) for i in range(len(samples))])
        return {source.outputs[0]["name"]: out}
    loaded = tf.saved_model.load(source.path)
    signature = loaded.signatures["serving_default"]
    name = source.inputs[0]["name"]
    results = [signature(**{name: tf.constant(samples[i:i + 1])}) for i in range(len(samples))]
    return {o["name"]: np.concatenate([np.asarray(r[o["name"]]) for r in results]) for o in source.outputs}


# ------------------------------------------------------------------------------------------- the step

STEP_HELP = """Convert a model to full-int8 TFLite inside the tf2 environment and measure it (one run folder).

  python -m converters.tf2.tflite_convert RUN_DIR --model MODEL [options]   a TF 2.x model: writes
        manifest.json, probe.npz and reference_tf2.npz (float outputs in TF 2.x) first
  python -m converters.tf2.tflite_convert RUN_DIR [options]                 a run folder already filled by
        the legacy re-save step (manifest.json with model.frozen_graph, probe.npz, reference_<origin>.npz)

Writes model_int8.tflite, model_float.tflite, tflite.json, npu.json, layers.json (atomically).
Usually called by `python -m converters.convert` (host), not by hand.
"""


def build_parser():
    import argparse

    from converters.shared import calibration

    parser = argparse.ArgumentParser(prog="python -m converters.tf2.tflite_convert", description=STEP_HELP,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir")
    parser.add_argument("--model", help="a TF 2.x model (.h5, .keras, SavedModel folder)")
    parser.add_argument("--out", help="write the results here instead of RUN_DIR (the host stages them)")
    add_conversion_arguments(parser, calibration)
    parser.add_argument("--debug", action="store_true")
    return parser


def add_conversion_arguments(parser, calibration):
    parser.add_argument("--calib", help="image folder, image, .npy/.npz, or 'skimage' (built-in photos)")
    parser.add_argument("--preprocess", default=None,
                        help="raw|unit|tf|caffe|vggface1|vggface2|torch|module:function (default: the run "
                             "folder's probe preprocessing, else raw)")
    parser.add_argument("--calib-samples", type=int, default=calibration.DEFAULT_CALIB_SAMPLES)
    parser.add_argument("--probe-samples", type=int, default=calibration.DEFAULT_PROBE_SAMPLES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--io", choices=sorted(IO_TYPES), default="int8", help="input type (default int8)")
    parser.add_argument("--output-io", choices=sorted(IO_TYPES), default=None,
                        help="output type (default: the same as --io)")
    parser.add_argument("--per-tensor", action="store_true")
    parser.add_argument("--allow-float-ops", action="store_true")
    parser.add_argument("--strict-npu", action="store_true")
    parser.add_argument("--no-layer-debug", action="store_true", help="skip the per-layer error analysis")
    parser.add_argument("--trust-model", action="store_true", help="allow Lambda layers (runs stored code)")


def _environment_fingerprint():
    import platform

    import h5py

    versions = {"env": os.environ.get("TFBRIDGE_ENV", "tf2"), "python": platform.python_version(),
                "tensorflow": tf.__version__, "numpy": np.__version__, "h5py": h5py.__version__}
    try:
        import tf_keras
        versions["keras"] = tf_keras.__version__
        versions["keras_flavour"] = "tf_keras"
    except ImportError:
        versions["keras"] = None
    return versions


def run_step(argv):
    """The in-environment conversion step (see STEP_HELP); returns the exit code."""
    from converters.shared import calibration
    from converters.tf2 import npu, quant_debug, tflite_run

    args = build_parser().parse_args(argv)
    run_dir = os.path.abspath(args.run_dir)
    out_dir = os.path.abspath(args.out or args.run_dir)
    os.makedirs(out_dir, exist_ok=True)
    options = ConversionOptions(io=args.io, output_io=args.output_io, per_tensor=args.per_tensor,
                                allow_float_ops=args.allow_float_ops)
    timings = {}
    manifest_path = os.path.join(run_dir, runfolder.MANIFEST)
    with scratch_dir() as workdir:
        started = time.perf_counter()
        source = load_source(args.model if args.model else run_dir, workdir, trust_model=args.trust_model)
        timings["load"] = round(time.perf_counter() - started, 2)
        input_name = source.inputs[0]["name"]
        if args.model:
            if not args.calib:
                raise UsageError("no calibration data (--calib).", step="calibrate",
                                 hint="Give --calib with a folder of representative images (preprocessed with "
                                      "--preprocess as in training), an .npy file, or 'skimage' for the "
                                      "built-in sample photos (a demo, not your data).")
            preprocess = args.preprocess or "raw"
            started = time.perf_counter()
            probe = calibration.load_probe(args.calib, source.input_shape, preprocess, args.probe_samples,
                                           args.seed)
            references = float_reference(source, probe)
            timings["reference"] = round(time.perf_counter() - started, 2)
            runfolder.write_arrays(os.path.join(out_dir, runfolder.PROBE), {input_name: probe})
            runfolder.write_arrays(os.path.join(out_dir, runfolder.reference_name("tf2")), references)
            manifest = {
                "schema_version": runfolder.SCHEMA_VERSION,
                "model": {"path": os.path.abspath(args.model), "sha256": _sha256_any(args.model),
                          "inputs": source.inputs, "outputs": source.outputs, "route": source.kind},
                "origin": _environment_fingerprint(),
                "probe": {"source": args.calib, "preprocess": preprocess, "samples": int(len(probe)),
                          "seed": args.seed},
            }
            runfolder.write_json(os.path.join(out_dir, runfolder.MANIFEST), manifest)
            origin = "tf2"
            reference_list = [references[o["name"]] for o in source.outputs]
        else:
            manifest = runfolder.read_json(manifest_path)
            probe_cfg = manifest.get("probe") or {}
            preprocess = args.preprocess or probe_cfg.get("preprocess") or "raw"
            if not args.calib and probe_cfg.get("source") == "calibration":
                args.calib = probe_cfg.get("path")  # the probe's own images (legacy_tf1 resave --calib)
            origin = (manifest.get("origin") or {}).get("env")
            probe_arrays = runfolder.read_arrays(os.path.join(run_dir, runfolder.PROBE))
            probe = _pick(probe_arrays, [i["name"] for i in (manifest["model"].get("inputs") or [])])[0]
            reference_path = os.path.join(run_dir, runfolder.reference_name(origin))
            if not os.path.exists(reference_path):
                raise InputFileError("no reference outputs %s in the run folder." % reference_path,
                                     step="convert", hint="Run the reference step in %s first." % origin)
            reference_arrays = runfolder.read_arrays(reference_path)
            reference_list = _pick(reference_arrays, [o["name"] for o in (manifest["model"].get("outputs") or [])])
            if not args.calib:
                raise UsageError("no calibration data (--calib), and the run folder's probe was not made from "
                                 "images (%s)." % probe_cfg.get("source"), step="calibrate",
                                 hint="Give --calib with representative images and --preprocess as in training.")
        calib = calibration.CalibrationSource(args.calib, source.input_shape, preprocess, args.calib_samples,
                                              args.seed, progress=True, input_name=input_name)
        started = time.perf_counter()
        tflite_path = os.path.join(out_dir, runfolder.TFLITE)
        float_path = os.path.join(out_dir, "model_float.tflite")
        try:
            result, used = convert(source, tflite_path, calib.representative_dataset(), options,
                                   float_output_path=float_path)
        except ConversionError as error:
            readiness = getattr(error, "npu", None)
            if readiness is not None:
                readiness = dict(readiness, rejected=True, strict=args.strict_npu)
                runfolder.write_json(os.path.join(out_dir, "npu.json"), readiness)
            runfolder.write_json(os.path.join(out_dir, "tflite.json"), {
                "status": "conversion_error", "error": error.message, "hint": error.hint,
                "attempts": getattr(error, "attempts", None), "input_dtype": options.io,
                "output_dtype": options.output_io, "timings": timings,
                "calibration": calib.describe(), "path": None})
            raise
        timings["convert"] = round(time.perf_counter() - started, 2)
        timings["convert_int8"] = result["seconds"]
        if "float_seconds" in result:
            timings["convert_float"] = result["float_seconds"]
        started = time.perf_counter()
        measured = tflite_run.evaluate(tflite_path, probe, reference_list)
        timings["evaluate"] = round(time.perf_counter() - started, 2)
        result.update(measured)
        result["reference_env"] = origin
        result["calibration"] = calib.describe()
        readiness = result.pop("npu")
        readiness["strict"] = args.strict_npu
        runfolder.write_json(os.path.join(out_dir, "npu.json"), readiness)
        if args.no_layer_debug:
            layers = {"layers": [], "skipped": True}
        else:
            debug_data = calibration.CalibrationSource(args.calib, source.input_shape, preprocess,
                                                       quant_debug.DEFAULT_DEBUG_SAMPLES, args.seed,
                                                       progress=False, input_name=input_name)
            converter = configure(used.build(), debug_data.representative_dataset(), options)
            # the debugger needs float I/O on the model it instruments
            converter.inference_input_type = converter.inference_output_type = tf.float32
            layers = quant_debug.debug_layers(converter, debug_data.representative_dataset())
            timings["layer_debug"] = layers.get("seconds")
        runfolder.write_json(os.path.join(out_dir, "layers.json"), layers)
        result["timings"] = timings
        runfolder.write_json(os.path.join(out_dir, "tflite.json"), result)
        if args.strict_npu:
            npu.check(tflite_path, strict=True)
    return 0


def _pick(arrays, names):
    """Arrays in the order of ``names`` (falling back to file order when the names differ, e.g. the
    frozen graph's tensor names vs Keras output names)."""
    if names and all(n in arrays for n in names):
        return [arrays[n] for n in names]
    return [arrays[k] for k in arrays]


def _sha256_any(path):
    if os.path.isdir(path):
        import hashlib

        digest = hashlib.sha256()
        for root, dirs, files in os.walk(path):
            dirs.sort()
            for name in sorted(files):
                full = os.path.join(root, name)
                digest.update(os.path.relpath(full, path).encode())
                digest.update(runfolder.sha256_file(full).encode())
        return digest.hexdigest()
    return runfolder.sha256_file(path)


if __name__ == "__main__":
    import sys

    from converters.cli import main

    sys.exit(main(run_step, step="convert"))
