"""Full-int8 TFLite conversion with the newest (MLIR) converter, and the check of the written file.

For whom: the conversion step (``converters.tf2.tflite_convert``) and the tests; ``tf2`` environment only.
``convert`` configures the converter of a ``converters.tf2.sources.Source``, falls back to the source's
deferred route when the first one fails (a run folder: frozen graph, then model.h5; every attempt is
recorded), refuses a file with ops left in float, writes the file atomically and checks it against the
request (``verify_written``).

Options (``ConversionOptions``): ``io`` (input type: int8 | uint8 | float32), ``output_io`` (output type,
default: the same as ``io``; e.g. ``io=int8, output_io=float32`` keeps an int8 input for the camera
pipeline and gives float scores), ``per_tensor`` (one weight scale per tensor instead of per output
channel, for NPUs whose compiler wants it; checked in the written file), ``allow_float_ops`` (lets the
converter keep ops that have no int8 kernel in float; never silent: without it such an op is a
``ConversionError`` naming the op), ``jobs`` (calibration processes, default the number of cores:
``converters.tf2.calibrate`` calibrates the samples in shards and merges them exactly, so the file is
byte-identical to TensorFlow's one-process calibration).

What can go wrong: ``ConversionError`` (the converter fails, an op cannot be int8, or the written file is
not what was asked for), ``UsageError`` (an unknown I/O type), ``CalibrationDataError`` (raised by the
representative data set while the converter calibrates).
"""

import dataclasses
import os
import re
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # tf.keras = Keras 2 (tf_keras): legacy .h5 need it
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

from converters import runfolder  # noqa: E402
from converters.errors import ConversionError, ModelLoadError, UntrustedModelError, UsageError  # noqa: E402
from converters.tf2 import sources  # noqa: E402

IO_TYPES = {"int8": tf.int8, "uint8": tf.uint8, "float32": tf.float32}


@dataclasses.dataclass
class ConversionOptions:
    """What the user asked for (see the module docstring)."""

    io: str = "int8"
    output_io: str | None = None
    per_tensor: bool = False
    allow_float_ops: bool = False
    jobs: int | None = None  # calibration processes (converters.tf2.calibrate); None: the number of cores
    quantize: str = "auto"  # issue 22: the candidates (converters.tf2.recovery.search.parse); "plain": TFLite's own

    def __post_init__(self):
        if self.output_io is None:
            self.output_io = self.io
        for name in (self.io, self.output_io):
            if name not in IO_TYPES:
                raise UsageError("unknown I/O type %r." % name, step="convert",
                                 hint="Use one of int8, uint8, float32.")
        from converters.tf2.recovery import search

        try:
            self.candidates = search.parse(self.quantize)
        except ValueError as exc:
            raise UsageError(str(exc), step="convert", hint="See docs/recovery.md.")


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


def debug_converter(source, representative_dataset, options):
    """A converter configured as for ``convert`` but with float I/O, for the quantization debugger.

    The debugger (``converters.tf2.quant_debug``) needs float I/O on the model it instruments.
    """
    converter = configure(source.build(), representative_dataset, options)
    converter.inference_input_type = converter.inference_output_type = tf.float32
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


def _convert_once(source, representative_dataset, options, keep_samples=0, every_candidate=False):
    """One conversion; returns (content, calibration hook or None). Calibration runs on every core
    (``converters.tf2.calibrate``): the int8 file is byte-identical to TensorFlow's one-core calibration.
    ``keep_samples``: how many of the first calibration samples the hook keeps (for the layer debugger);
    ``every_candidate``: every judged candidate is fitted on all samples (``--eval`` evaluates each), not
    only the chosen one and plain."""
    from converters.tf2 import calibrate

    converter = configure(source.build(), representative_dataset, options)
    hook = calibrate.install(converter, options.jobs, keep_samples=keep_samples, recovery=options.candidates,
                             every_candidate=every_candidate)
    return converter.convert(), hook


def convert(source, output_path, representative_dataset, options, float_output_path=None, artifacts=None):
    """Convert ``source`` (a ``Source``) to a full-int8 .tflite at ``output_path`` (written atomically).

    Returns (result, used source). result: route, attempts [{route, seconds, status, error?}], seconds,
    size_bytes, float size (when ``float_output_path`` is given, a float32 conversion is written there for
    the size comparison; it is the float model the int8 conversion made, not a second conversion),
    input/output dtypes, weight granularity, ``npu`` readiness, ``calibration_run`` (shards and the
    seconds of graph conversion, calibration and quantization). ``artifacts``: a dict that receives
    ``calibrated_model`` (the float model with the calibration's min/max, for the per-layer debugger,
    ``converters.tf2.quant_debug``) and ``calibration_samples`` (the first ``artifacts["keep_samples"]``
    calibration samples, each a list of arrays, one per input), ``int8_model`` (the written file's bytes)
    and ``phases`` (the conversion's phases on
    the monotonic clock, for the run's timeline: ``converters.timeline``), when given. Raises
    ``ConversionError`` when every route fails (the message names ops that could not be int8) or when the
    written file has float ops without ``allow_float_ops``; a refused file never replaces ``output_path``.
    """
    attempts = []
    candidates = [source]
    if source.fallback is not None:
        candidates.append(source.fallback)
    content = None
    hook = None
    used = None
    last_error = None
    for candidate in candidates:
        if isinstance(candidate, sources.Deferred):  # the run folder's model.h5, loaded only now
            try:
                candidate = candidate.load()
            except (ModelLoadError, UntrustedModelError) as exc:
                attempts.append({"route": "keras_h5", "seconds": 0.0, "status": "failed", "error": exc.message})
                last_error = exc
                continue
        started = time.perf_counter()
        try:
            content, hook = _convert_once(candidate, representative_dataset, options,
                                          keep_samples=(artifacts or {}).get("keep_samples", 0),
                                          every_candidate=bool((artifacts or {}).get("candidates_dir")))
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
        if artifacts is not None:  # the file's bytes, for the layer debugger (converters.tf2.tflite_convert)
            artifacts["int8_model"] = content
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
    if hook is not None and hook.info is not None:
        # where the int8 conversion's time went: graph -> float TFLite, calibration, quantization
        calibration = dict(hook.info)
        calibration["quantize_seconds"] = hook.quantize_seconds
        calibration["graph_seconds"] = round(max(0.0, attempts[-1]["seconds"] - calibration.get(
            "spool_seconds", 0) - calibration.get("calibrate_seconds", 0) - (hook.quantize_seconds or 0)), 2)
        result["calibration_run"] = calibration
        if artifacts is not None:
            artifacts["calibrated_model"] = hook.calibrated_model
            artifacts["calibration_samples"] = hook.samples
    if hook is not None and artifacts is not None:  # the run's timeline (issue 31; converters.timeline)
        artifacts["phases"] = ([{"phase": "graph -> float TFLite", "start": None, "end": round(hook.entered, 3)}]
                               if hook.entered is not None else []) + list(hook.phases)
    if hook is not None and hook.quantization is not None:
        result["quantization"] = _write_candidates(hook, output_path, artifacts)
    float_content = hook.float_tflite() if (float_output_path and hook is not None) else None
    if float_content is not None:
        # the float model the int8 conversion made before calibrating: the same graph as a separate
        # float conversion (same ops, tensors and outputs), so the graph is not converted twice
        started = time.perf_counter()
        runfolder.write_bytes(float_output_path, float_content)
        result["float_path"] = os.path.basename(float_output_path)
        result["float_size_bytes"] = len(float_content)
        result["float_seconds"] = round(time.perf_counter() - started, 2)
        result["float_reused"] = True
    elif float_output_path:
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


PLAIN_TFLITE = "model_int8_plain.tflite"
CLE_FLOAT_TFLITE = "model_float_cle.tflite"


def _write_candidates(hook, output_path, artifacts):
    """Issue 22: beside the chosen model, the plain converter's (``model_int8_plain.tflite``) and the
    float model after cross-layer equalization (``model_float_cle.tflite``, when the chosen candidate equalized: its probe check in the quantization section); every
    candidate's int8 file into ``artifacts["candidates_dir"]`` when given (for ``--eval``). Returns the
    ``quantization`` section with the files named; the search's report-only figures are in it, or, when
    ``artifacts["defer_report"]``, still being computed (``artifacts["report_work"].result()``)."""
    from tensorflow.lite.python import lite

    section = dict(hook.quantization)
    folder = os.path.dirname(os.path.abspath(output_path))
    if hook.plain_model is not None:
        runfolder.write_bytes(os.path.join(folder, PLAIN_TFLITE), lite._deduplicate_readonly_buffers(hook.plain_model))
        section["plain_path"] = PLAIN_TFLITE
    cle_float = hook.extras.get("cle_float_model")
    if cle_float is not None:
        runfolder.write_bytes(os.path.join(folder, CLE_FLOAT_TFLITE), lite._deduplicate_readonly_buffers(cle_float))
        section["cle_float_path"] = CLE_FLOAT_TFLITE
    work = hook.extras.get("report_work")  # the figures only the report reads, computed in a thread since the
    if work is not None and (artifacts or {}).get("defer_report"):  # choice (beside.Background)
        artifacts["report_work"] = work  # the caller waits for it after its checks of the written file
    elif work is not None:
        from converters.tf2.recovery import search

        search.merge_report_work(section, work.result())
    candidates_dir = (artifacts or {}).get("candidates_dir")
    if candidates_dir:
        files = {}
        for name, content in (hook.extras.get("candidates") or {}).items():
            path = os.path.join(candidates_dir, "model_int8_%s.tflite" % name.replace("+", "_"))
            runfolder.write_bytes(path, content)
            files[name] = path
        artifacts["candidate_files"] = files
    return section


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
