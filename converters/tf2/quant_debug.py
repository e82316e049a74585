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

What can go wrong: the debugger needs the converter (not the .tflite) and calibrates once more, so it
costs about one more conversion; it fails on some graphs (e.g. frozen-graph converters of old TF
versions). Failures do not stop the conversion: ``debug_layers`` returns an ``error`` instead.
"""

import csv
import io
import math
import time
import warnings

FLAG_ABOVE = 0.7
DEFAULT_DEBUG_SAMPLES = 8


def debug_layers(converter, dataset):
    """Run the debugger on ``converter`` (configured for int8, as in ``converters.tf2.quantize.configure``).

    ``dataset``: a generator function yielding [sample]. Returns {layers: [{name, op, tensor_index,
    scale, rmse_over_scale, flagged}], flagged: [...names], seconds} or {error, seconds} on failure.
    """
    import tensorflow as tf

    started = time.perf_counter()
    try:
        # the debugger runs tf.lite.Interpreter internally, which warns that it is deprecated
        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated.*")
        debugger = tf.lite.experimental.QuantizationDebugger(converter=converter, debug_dataset=dataset)
        debugger.run()
        buffer = io.StringIO()
        debugger.layer_statistics_dump(buffer)
    except Exception as exc:  # noqa: BLE001 - optional diagnostics; report the failure instead
        return {"error": "%s: %s" % (type(exc).__name__, str(exc).splitlines()[0][:300] if str(exc) else ""),
                "seconds": round(time.perf_counter() - started, 2), "layers": []}
    layers = parse_statistics(buffer.getvalue())
    return {"layers": layers, "flagged": [layer["name"] for layer in layers if layer["flagged"]],
            "seconds": round(time.perf_counter() - started, 2), "flag_above": FLAG_ABOVE}


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
