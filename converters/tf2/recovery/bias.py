"""Bias correction (Nagel et al. 2019, section 4.2, the empirical form), written into the int8 model.

For whom: ``converters.tf2.recovery.search``; ``tf2`` environment only.

What it does: int8 weights W_q differ from the float weights W; on an input x a layer then computes
W x + (W_q - W) x, and the second term has a mean that does not vanish: E[(W_q - W) x] = (W_q - W) E[x],
per output channel. Measured on the calibration samples (E[x] per input channel of the layer's input,
from ``converters.tf2.recovery.statistics``; rescaled by equalization when it ran), that expected error
is subtracted from the layer's int32 bias in the quantized model (in units of the bias scale, rounded),
so the int8 layer's output mean matches the float layer's. Only values change: the same ops, the same
tensors, the same scales, the same int8 I/O. The data-free form (E[x] from batch-norm statistics) is
not needed here: tfbridge always has calibration data, and measured means include what batch norm
statistics cannot (the actual input distribution).

The invariant: nothing but int32 bias values of CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED change.
The float model that the corrected biases amount to moves by the correction (``float_shift``), which the
search reports ("how far the float model moved").

Left alone: a FULLY_CONNECTED whose input is flattened from a feature map (its input's last axis is not
its features), and a bias buffer shared by several tensors.
"""

import numpy as np

from converters.tf2.recovery.graph import LINEAR_OPS

INT32 = np.iinfo(np.int32)


def expected_errors(quantized, float_graph, stats, factors=None):
    """{bias tensor name: expected output error per channel (float)} for every linear op of ``quantized``
    (a Graph of the int8 model) whose float weights are in ``float_graph`` (by name) and whose input has
    statistics. ``factors``: {tensor name: per-channel factor} of equalization (inputs were rescaled)."""
    float_index = float_graph.index_by_name()
    factors = factors or {}
    errors = {}
    for op in quantized.ops:
        if op.name not in LINEAR_OPS:
            continue
        w_index, b_index, _, _ = LINEAR_OPS[op.name]
        if len(op.inputs) <= b_index or op.inputs[b_index] < 0:
            continue
        w, b, x = op.inputs[w_index], op.inputs[b_index], op.inputs[0]
        names = quantized.tensor_names
        quant = quantized.quantization(w)
        if quant is None or quantized.dtypes[w] != 9 or names[w] not in float_index or names[x] not in stats:
            continue
        if quantized.shared_buffer(b) or quantized.dtypes[b] != 2:
            continue
        scales, zeros, axis = quant
        q = quantized.values(w).astype(np.float64)
        shape = [1] * q.ndim
        if scales.size > 1:
            shape[axis] = -1
        dequantized = (q - zeros.reshape(shape)) * scales.reshape(shape)
        delta = dequantized - float_graph.values(float_index[names[w]]).astype(np.float64)
        mean = stats[names[x]].mean * factors.get(names[x], 1.0)
        if op.name == "CONV_2D":
            if delta.shape[3] != mean.size:
                continue
            error = delta.sum(axis=(1, 2)) @ mean
        elif op.name == "DEPTHWISE_CONV_2D":
            channels = delta.shape[3]
            if channels != mean.size * op.depth_multiplier:
                continue
            error = delta.sum(axis=(0, 1, 2)) * np.repeat(mean, op.depth_multiplier)
        else:
            if delta.ndim != 2 or delta.shape[1] != mean.size:
                continue
            error = delta @ mean
        errors[names[b]] = error
    return errors


def correct(quantized, errors):
    """Subtract ``errors`` from the int32 biases of ``quantized`` (in place); returns how many biases
    changed and the largest change in bias steps."""
    index = quantized.index_by_name()
    changed = 0
    largest = 0
    for name, error in errors.items():
        b = index[name]
        quant = quantized.quantization(b)
        if quant is None:
            continue
        scales = quant[0]
        view = quantized.values(b)
        steps = np.round(error / scales)
        new = np.clip(view.astype(np.int64) - steps.astype(np.int64), INT32.min, INT32.max)
        if np.any(new != view):
            changed += 1
            largest = max(largest, int(np.max(np.abs(new - view))))
        view[...] = new.astype(np.int32)
    return {"biases": changed, "largest_steps": largest}


def shift_float(float_graph, errors):
    """The float model the correction amounts to: ``errors`` subtracted from its float biases (in place)."""
    index = float_graph.index_by_name()
    for name, error in errors.items():
        if name in index and float_graph.dtypes[index[name]] == 0:
            view = float_graph.values(index[name])
            view[...] = (view.astype(np.float64) - error).astype(np.float32)
