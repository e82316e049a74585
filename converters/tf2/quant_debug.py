"""Per-layer quantization error: which layers lose the most precision in int8.

For whom: the conversion step (layers.json) and the report's bar plot; ``tf2`` environment.
``tf.lite.experimental.QuantizationDebugger`` runs the quantized model with every quantized tensor also
dequantized, on a few samples, and compares each layer's int8 output with the float output of the same
layer fed the same (quantized) input. We report ``rmse_over_scale`` = RMSE / the tensor's scale, i.e.
the error in LSBs: an ideal rounding gives ~0.29 (the RMS of a uniform error over one step, 1/sqrt(12)).
A layer above ``FLAG_ABOVE = 0.7`` LSB (the threshold TensorFlow's own debugger guide uses) loses more
than rounding would explain: clipped ranges, outliers in the activation, or an op with a poor int8
kernel. Those are flagged; they are the candidates for keeping in float (``--allow-float-ops``
plus denylisting) or for fixing in the model.

Reuse: given the conversion's calibrated model (``calibrated_model``: the float model with the min/max the
calibration recorded over every calibration sample, kept by ``converters.tf2.calibrate``), the debugger
instruments exactly the model that was written, and neither converts the graph again nor calibrates
again: it makes the instrumented model with the same ``mlir_quantize`` call TensorFlow's debugger makes
from a converter (``enable_numeric_verify=True``, float I/O) and runs the debug samples through it. The
debug samples are the conversion's first calibration samples, kept by the calibration hook as they
passed (``converters.tf2.calibrate``, ``keep_samples``), not read and preprocessed a second time.
Without it (a converter whose calibration stage could not be replaced) it falls back to TensorFlow's own
route: the converter converts and calibrates once more, on the debug samples only.

What can go wrong: the debugger fails on some graphs (e.g. frozen-graph converters of old TF versions).
Failures do not stop the conversion: ``debug_layers`` returns an ``error`` instead.
"""

import csv
import io
import math
import time
import warnings

FLAG_ABOVE = 0.7
DEFAULT_DEBUG_SAMPLES = 8


def debug_layers(converter, dataset, calibrated_model=None, per_tensor=False, written_model=None):
    """Run the debugger on the conversion's ``calibrated_model`` (bytes; see "Reuse" above) or, when it is
    None, on ``converter`` (configured for int8, as in ``converters.tf2.quantize.debug_converter``).

    ``dataset``: a generator function yielding [sample]; ``per_tensor``: the conversion's weight
    granularity (``_experimental_disable_per_channel``); ``written_model``: the int8 file when the chosen
    candidate edited its values (bias, ebias, gptq): its weights and biases are put into the instrumented
    model (``recovery.graph.transplant``), so the layers are those of the file written. Returns {layers:
    [{name, op, tensor_index, scale, rmse_over_scale, flagged}], flagged: [...names], seconds,
    reused_calibration, values_from_written_file? (copied, changed, skipped)} or {error, seconds} on failure.
    """
    import tensorflow as tf

    started = time.perf_counter()
    try:
        # the debugger runs tf.lite.Interpreter internally, which warns that it is deprecated
        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated.*")
        transplanted = None
        if calibrated_model is not None:
            content = instrumented_model(calibrated_model, per_tensor)
            if written_model is not None:
                from converters.tf2.recovery import graph

                try:
                    content, transplanted = graph.transplant(content, written_model)
                except Exception as exc:  # noqa: BLE001 - the layers of the calibrated model's own quantization
                    transplanted = {"copied": 0, "changed": 0, "skipped": [],
                                    "error": "%s: %s" % (type(exc).__name__, str(exc)[:200])}
            debugger = tf.lite.experimental.QuantizationDebugger(
                quant_debug_model_content=content, debug_dataset=dataset)
        else:
            debugger = tf.lite.experimental.QuantizationDebugger(converter=converter, debug_dataset=dataset)
        debugger.run()
        buffer = io.StringIO()
        debugger.layer_statistics_dump(buffer)
    except Exception as exc:  # noqa: BLE001 - optional diagnostics; report the failure instead
        return {"error": "%s: %s" % (type(exc).__name__, str(exc).splitlines()[0][:300] if str(exc) else ""),
                "seconds": round(time.perf_counter() - started, 2), "layers": []}
    layers = parse_statistics(buffer.getvalue())
    found = {"layers": layers, "flagged": [layer["name"] for layer in layers if layer["flagged"]],
             "seconds": round(time.perf_counter() - started, 2), "flag_above": FLAG_ABOVE,
             "reused_calibration": calibrated_model is not None}
    if transplanted is not None:
        found["values_from_written_file"] = dict(transplanted, skipped=transplanted["skipped"][:10])
    return found


def instrumented_model(calibrated_model, per_tensor=False):
    """The debugger's instrumented model from a calibrated one: the call TensorFlow's
    ``QuantizationDebugger._init_from_converter`` makes (TF 2.21), with its default options."""
    from tensorflow.lite.python import convert

    return convert.mlir_quantize(calibrated_model, disable_per_channel=per_tensor, fully_quantize=False,
                                 enable_numeric_verify=True, denylisted_ops=None, denylisted_nodes=None)


def parse_statistics(text):
    """Rows of the debugger's CSV dump -> [{name, op, tensor_index, scale, rmse_over_scale, flagged}]."""
    layers = []
    for row in csv.DictReader(io.StringIO(text)):
        try:
            scale = float(row.get("scale") or "nan")
            mse = float(row.get("mean_squared_error") or "nan")
        except ValueError:
            continue
        value = math.sqrt(mse) / scale if scale and scale > 0 and mse == mse else None
        layers.append({
            "name": row.get("tensor_name", ""),
            "op": row.get("op_name", ""),
            "tensor_index": int(float(row.get("tensor_idx") or -1)),
            "scale": scale,
            "rmse_over_scale": None if value is None else round(value, 4),
            "flagged": bool(value is not None and value > FLAG_ABOVE),
        })
    return layers
