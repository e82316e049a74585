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
its features), and a bias buffer shared by several tensors (``graph.unshare`` gives each its own first).
"""

import numpy as np

from converters.tf2.recovery.graph import LINEAR_OPS

INT32 = np.iinfo(np.int32)


def expected_errors(quantized, float_graph, stats, factors=None):
    """{quantized bias tensor index: expected output error per channel (float)} for every linear op of
    ``quantized`` (a Graph of the int8 model), matched by position with ``float_graph`` (the float or
    calibrated model it was quantized from, after equalization when it ran) whose input has statistics
    (``stats`` by the float model's tensor names). ``factors``: {tensor name: per-channel factor} of
    equalization (those inputs were rescaled)."""
    from converters.tf2.recovery.graph import linear_pairs

    factors = factors or {}
    errors = {}
    for float_op, op in linear_pairs(float_graph, quantized) or []:
        w_index, b_index, _, _ = LINEAR_OPS[op.name]
        if len(op.inputs) <= b_index or op.inputs[b_index] < 0:
            continue
        w, b = op.inputs[w_index], op.inputs[b_index]
        x_name = float_graph.tensor_names[float_op.inputs[0]]
        quant = quantized.quantization(w)
        if quant is None or quantized.dtypes[w] != 9 or x_name not in stats or \
                not float_graph.is_constant(float_op.inputs[w_index]):
            continue
        if quantized.shared_buffer(b) or quantized.dtypes[b] != 2:
            continue  # the caller gives shared biases their own buffers first (graph.unshare)
        scales, zeros, axis = quant
        q = quantized.values(w).astype(np.float64)
        shape = [1] * q.ndim
        if scales.size > 1:
            shape[axis] = -1
        dequantized = (q - zeros.reshape(shape)) * scales.reshape(shape)
        weights = float_graph.values(float_op.inputs[w_index]).astype(np.float64)
        if weights.shape != dequantized.shape:
            continue
        delta = dequantized - weights
        mean = stats[x_name].mean * factors.get(x_name, 1.0)
        if op.name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            # each kernel tap sees the input's mean only where it falls inside the input: with SAME
            # padding the border outputs read zeros (on small feature maps, a large share of them)
            taps = tap_coverage(quantized.shapes[op.inputs[0]], quantized.shapes[op.outputs[0]],
                                delta.shape[1:3], op.window)
            if taps is None:
                continue
            delta = delta * taps.reshape(1, taps.shape[0], taps.shape[1], 1)
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
        float_bias = float_op.inputs[b_index] if len(float_op.inputs) > b_index else -1
        errors[b] = (error, float_graph.tensor_names[float_bias] if float_bias >= 0 else None)
    return errors


def tap_coverage(input_shape, output_shape, kernel, window):
    """(kh, kw) array: for each kernel tap, the share of output positions where it reads a real input
    (not padding), for an NHWC convolution's ``window`` (``graph.Op.window``); None when unknown."""
    if window is None or len(input_shape) != 4 or len(output_shape) != 4:
        return None
    shares = []
    for axis in (0, 1):
        size_in, size_out, k = input_shape[1 + axis], output_shape[1 + axis], kernel[axis]
        stride, dilation = window["stride"][axis], window["dilation"][axis]
        if size_in <= 0 or size_out <= 0:
            return None
        before = 0
        if window["padding"] == "SAME":
            before = max((size_out - 1) * stride + (k - 1) * dilation + 1 - size_in, 0) // 2
        positions = np.arange(size_out)[:, None] * stride + np.arange(k)[None, :] * dilation - before
        shares.append(((positions >= 0) & (positions < size_in)).mean(axis=0))
    return np.outer(shares[0], shares[1])


def bias_tensors(quantized):
    """The int32 bias tensors of the linear ops of ``quantized`` (to ``graph.unshare`` before correcting)."""
    found = []
    for op in quantized.ops:
        if op.name in LINEAR_OPS:
            b_index = LINEAR_OPS[op.name][1]
            if len(op.inputs) > b_index and op.inputs[b_index] >= 0 and quantized.dtypes[op.inputs[b_index]] == 2:
                found.append(op.inputs[b_index])
    return found


def correct(quantized, errors):
    """Subtract ``errors`` (``expected_errors``) from the int32 biases of ``quantized`` (in place); returns
    how many biases changed and the largest change in bias steps."""
    changed = 0
    largest = 0
    for b, (error, _) in errors.items():
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
    """The float model the correction amounts to: ``errors`` subtracted from its float biases (in place).
    ``float_graph``: the float model (or its equalized copy) whose bias tensors have the names
    ``expected_errors`` recorded."""
    index = float_graph.index_by_name()
    for _, (error, name) in errors.items():
        b = index.get(name, -1)
        if b >= 0 and float_graph.dtypes[b] == 0 and float_graph.is_constant(b):
            view = float_graph.values(b)
            view[...] = (view.astype(np.float64) - error).astype(np.float32)
