"""Learned rounding of int8 weights, GPTQ-style (the ``gptq`` candidate).

For whom: ``converters.tf2.recovery.search``; ``tf2`` environment only.

What it does: TFLite rounds each weight to the nearest step of its scale. That minimises each weight's own
error, not the layer's output error on real inputs: errors of weights that read correlated inputs add up.
For each CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED, the rounding of every int8 weight (down or up, the
scale unchanged) is chosen to minimise E||(W - s Q) x||^2 over the layer's inputs x, by GPTQ's closed form
(Frantar et al. 2022; OBQ's column-by-column rounding with the error fed forward through the inverse of
the Hessian H = E[x x^T]): each column is rounded in turn (largest diag(H) first), and the error it leaves
is compensated by the columns not yet rounded. Here a weight may only go to the floor or the ceiling of
W/s (and stays in [-127, 127]), so every int8 weight is within one step of TFLite's own rounding.

Which inputs: the float model's (one float pass for every layer; the layer is fitted to what it should
compute on real inputs). The quantized model's own inputs (GPTQ's sequential form, AdaRound's
"asymmetric" one) would also absorb the activations' error, but need one int8 pass per layer; that share
is left to the empirical bias correction (``empirical``), which runs after this rewrite in ``gptq+ebias``.
Why GPTQ rather than AdaRound: one Cholesky factorisation and K column steps per layer (K = kh kw Cin),
against a few hundred optimiser steps per layer, with the same objective (the layer's output error).

The invariant: only int8 weight values of linear ops change, each within one step of the nearest
rounding, and only where the layer's output error on the calibration inputs goes down; ops, tensors,
scales, biases and the int8 I/O stay. A layer with more than ``MAX_COLUMNS`` inputs per output (its
Hessian would not fit in a few hundred MB) or whose input TFLite overwrites in place is left alone.
"""

import time

import numpy as np

from converters.tf2 import tflite_model
from converters.tf2.recovery import statistics
from converters.tf2.recovery.graph import LINEAR_OPS, Graph, linear_pairs

ROWS = 8192  # input rows (output positions) per layer, over all samples, that estimate its Hessian
MAX_COLUMNS = 2304  # inputs per output (3x3x256): a float64 Hessian of 42 MB
DAMP = 0.01  # of the mean diagonal, added to H (GPTQ's default): keeps H invertible for dead inputs


def correct(int8_content, float_model, samples, log=None, seed=0):
    """``int8_content`` (a full-integer TFLite model, bytes) with its linear layers' int8 weights re-rounded
    to minimise each layer's output error on the float model's inputs to that layer over ``samples``
    (``float_model``: the float TFLite model it was quantized from, the equalized one for ``cle``).
    Returns (bytes, details): details is JSON-able (layers changed, weights changed, the output error
    before/after per layer, seconds).

    What can go wrong: a model whose linear ops differ from the float model's raises ValueError (the
    search then skips the candidate)."""
    log = log or (lambda message: None)
    started = time.perf_counter()
    content = bytearray(int8_content)
    graph = Graph(content)
    float_graph = Graph(bytearray(float_model))
    pairs = linear_pairs(float_graph, graph)
    if pairs is None:
        raise ValueError("the int8 model's linear ops differ from the float model's")
    layers = [(f, q) for f, q in pairs if _eligible(float_graph, graph, f, q)]
    hessians = _hessians(float_model, float_graph, [f for f, _ in layers], samples, seed)
    rows = []
    for float_op, op in layers:
        h = hessians.get(float_op.index)
        if h is None:
            continue
        w_index = LINEAR_OPS[op.name][0]
        weights = float_graph.values(float_op.inputs[w_index]).astype(np.float64)
        view = graph.values(op.inputs[w_index])
        scales, zeros, axis = graph.quantization(op.inputs[w_index])
        if np.any(zeros != 0):
            continue
        w, q, s = _as_rows(op.name, weights, view.astype(np.float64), scales, axis, op.depth_multiplier)
        if w is None:
            continue
        before = _error(w, q, s, h, op.name, op.depth_multiplier)
        new = _gptq(w, s, h, op.name, op.depth_multiplier)
        after = _error(w, new, s, h, op.name, op.depth_multiplier)
        row = {"op": op.index, "name": op.name, "weights": int(q.size),
               "error_before": float("%.4g" % before), "error_after": float("%.4g" % after)}
        if after < before:
            changed = int(np.count_nonzero(new != q))
            view[...] = _from_rows(op.name, new, view.shape).astype(np.int8)
            row["changed"] = changed
        else:
            row["changed"] = 0
        rows.append(row)
    details = {"layers": sum(1 for r in rows if r["changed"]), "weights_changed": sum(r["changed"] for r in rows),
               "samples": len(samples), "seconds": round(time.perf_counter() - started, 2), "per_layer": rows}
    log("gptq: %d layers re-rounded (%d weights) in %.1f s" % (details["layers"], details["weights_changed"],
                                                                details["seconds"]))
    return bytes(content), details


def _eligible(float_graph, graph, float_op, op):
    w_index = LINEAR_OPS[op.name][0]
    w = op.inputs[w_index]
    if graph.dtypes[w] != 9 or graph.quantization(w) is None or graph.shared_buffer(w):
        return False
    if not float_graph.is_constant(float_op.inputs[w_index]):
        return False
    if float_graph.shapes[float_op.inputs[w_index]] != graph.shapes[w]:
        return False
    shape = graph.shapes[w]
    columns = shape[1] if op.name == "FULLY_CONNECTED" else (
        shape[1] * shape[2] if op.name == "DEPTHWISE_CONV_2D" else shape[1] * shape[2] * shape[3])
    return columns <= MAX_COLUMNS and (op.window is not None or op.name == "FULLY_CONNECTED")


def _hessians(float_model, float_graph, ops, samples, seed):
    """{float op index: H} for ``ops``: E[x x^T] of each op's input rows (conv: the patch under the kernel at
    an output position, zero padded as TFLite pads; depthwise: one 9-wide patch per input channel, H of shape
    (channels, k, k)), from ``ROWS`` randomly chosen output positions over the samples."""
    shapes = [list(np.shape(x)) for x in samples[0]]
    overwritten = statistics.overwritten_inputs(float_model, shapes)
    ops = [op for op in ops if op.inputs[0] not in overwritten]
    interpreter = tflite_model.interpreter(bytes(float_model), shapes, threads=2, preserve=True)
    inputs = interpreter.get_input_details()
    rng = np.random.RandomState(seed)
    per_sample = max(16, -(-ROWS // len(samples)))
    sums = {}
    counts = {}
    for sample in samples:
        for detail, array in zip(inputs, sample):
            interpreter.set_tensor(detail["index"], np.asarray(array, detail["dtype"]))
        interpreter.invoke()
        for op in ops:
            view = interpreter.tensor(op.inputs[0])()
            x = np.array(view, np.float32)
            del view
            patches = _patches(op, float_graph, x, per_sample, rng)
            if patches is None:
                continue
            if op.name == "DEPTHWISE_CONV_2D":  # (n, k, C) -> per channel k x k
                product = np.einsum("nkc,nlc->ckl", patches, patches, optimize=True)
            else:
                product = patches.T @ patches
            sums[op.index] = sums.get(op.index, 0.0) + product.astype(np.float64)
            counts[op.index] = counts.get(op.index, 0) + patches.shape[0]
    del interpreter
    return dict((k, sums[k] / counts[k]) for k in sums)


def _patches(op, graph, x, count, rng):
    """Rows of ``op``'s input as its weights read them: FC (n, Cin); conv (n, kh*kw*Cin); depthwise
    (n, kh*kw, Cin); ``count`` output positions drawn at random (all when fewer)."""
    w_shape = graph.shapes[op.inputs[LINEAR_OPS[op.name][0]]]
    if op.name == "FULLY_CONNECTED":
        if x.size % w_shape[1]:
            return None
        rows = x.reshape(-1, w_shape[1])
        if rows.shape[0] > count:
            rows = rows[rng.choice(rows.shape[0], count, replace=False)]
        return rows
    if x.ndim != 4:
        return None
    out_shape = graph.shapes[op.outputs[0]]
    kh, kw = w_shape[1], w_shape[2]
    window = op.window
    pads = []
    for axis, k in ((0, kh), (1, kw)):
        size_in, size_out = x.shape[1 + axis], out_shape[1 + axis]
        stride, dilation = window["stride"][axis], window["dilation"][axis]
        before = 0
        if window["padding"] == "SAME":
            before = max((size_out - 1) * stride + (k - 1) * dilation + 1 - size_in, 0) // 2
        pads.append((before, stride, dilation, size_out))
    (bh, sh, dh, oh), (bw, sw, dw, ow) = pads
    padded = np.zeros((x.shape[0], x.shape[1] + 2 * (kh * dh) + 2, x.shape[2] + 2 * (kw * dw) + 2, x.shape[3]),
                      np.float32)
    offset_h, offset_w = kh * dh + 1, kw * dw + 1
    padded[:, offset_h:offset_h + x.shape[1], offset_w:offset_w + x.shape[2]] = x
    positions = oh * ow * x.shape[0]
    chosen = rng.choice(positions, count, replace=False) if positions > count else np.arange(positions)
    batch, rest = np.divmod(chosen, oh * ow)
    oy, ox = np.divmod(rest, ow)
    iy = oy[:, None] * sh + np.arange(kh)[None, :] * dh - bh + offset_h
    ix = ox[:, None] * sw + np.arange(kw)[None, :] * dw - bw + offset_w
    patches = padded[batch[:, None, None], iy[:, :, None], ix[:, None, :], :]  # (n, kh, kw, Cin)
    if op.name == "DEPTHWISE_CONV_2D":
        return patches.reshape(len(chosen), kh * kw, x.shape[3])
    return patches.reshape(len(chosen), kh * kw * x.shape[3])


def _as_rows(name, weights, q, scales, axis, multiplier):
    """(float rows W, int rows Q, per-row scale s): one row per output channel, columns as ``_patches``."""
    if name == "DEPTHWISE_CONV_2D":  # [1, kh, kw, C*M] -> (C*M, kh*kw)
        channels = weights.shape[3]
        w = weights.reshape(-1, channels).T
        qs = q.reshape(-1, channels).T
    else:  # conv [Cout, kh, kw, Cin], FC [Cout, Cin]
        channels = weights.shape[0]
        w = weights.reshape(channels, -1)
        qs = q.reshape(channels, -1)
    if scales.size == 1:
        s = np.full(channels, scales[0])
    elif scales.size == channels and axis == (3 if name == "DEPTHWISE_CONV_2D" else 0):
        s = scales.copy()
    else:
        return None, None, None
    return w, qs, s


def _from_rows(name, rows, shape):
    if name == "DEPTHWISE_CONV_2D":
        return rows.T.reshape(shape)
    return rows.reshape(shape)


def _hessian_for_rows(h, name, multiplier):
    """Per row Hessian for depthwise (input channel k // M), the shared one otherwise."""
    if name == "DEPTHWISE_CONV_2D":
        return np.repeat(h, multiplier, axis=0)
    return h


def _error(w, q, s, h, name, multiplier):
    """sum over rows of (w - s q) H (w - s q)^T: the layer's mean squared output error (before bias)."""
    d = w - s[:, None] * q
    if name == "DEPTHWISE_CONV_2D":
        return float(np.einsum("ck,ckl,cl->", d, _hessian_for_rows(h, name, multiplier), d))
    return float(np.einsum("ck,kl,cl->", d, h, d))


def _gptq(w, s, h, name, multiplier):
    """GPTQ with each weight kept at floor or ceil of w / s, in [-127, 127]: the new int rows."""
    low = np.clip(np.floor(w / s[:, None]), -127, 127)
    high = np.clip(np.ceil(w / s[:, None]), -127, 127)
    if name == "DEPTHWISE_CONV_2D":
        hs = _hessian_for_rows(h, name, multiplier).copy()
        k = hs.shape[1]
        diag = np.einsum("ckk->ck", hs)
        damp = DAMP * np.maximum(diag.mean(axis=1), 1e-12)
        hs[:, np.arange(k), np.arange(k)] += damp[:, None]
        hs[:, np.arange(k), np.arange(k)] = np.where(diag > 0, hs[:, np.arange(k), np.arange(k)], 1.0)
        order = np.argsort(-diag, axis=1)  # per channel: the largest input first
        rows = np.arange(w.shape[0])
        perm_w = w[rows[:, None], order].copy()
        perm_h = hs[rows[:, None, None], order[:, :, None], order[:, None, :]]
        upper = np.transpose(np.linalg.cholesky(np.linalg.inv(perm_h)), (0, 2, 1))
        lo, hi = low[rows[:, None], order], high[rows[:, None], order]
        q = np.zeros_like(perm_w)
        for j in range(k):
            q[:, j] = np.clip(np.round(perm_w[:, j] / s), lo[:, j], hi[:, j])
            err = (perm_w[:, j] - s * q[:, j]) / upper[:, j, j]
            perm_w[:, j + 1:] -= err[:, None] * upper[:, j, j + 1:]
        out = np.zeros_like(q)
        out[rows[:, None], order] = q
        return out
    h = h.copy()
    k = h.shape[0]
    diag = np.diag(h).copy()
    h[np.arange(k), np.arange(k)] += DAMP * max(float(diag.mean()), 1e-12)
    h[np.arange(k), np.arange(k)] = np.where(diag > 0, np.diag(h), 1.0)
    order = np.argsort(-diag)
    perm_w = w[:, order].copy()
    upper = np.linalg.cholesky(np.linalg.inv(h[np.ix_(order, order)])).T
    lo, hi = low[:, order], high[:, order]
    q = np.zeros_like(perm_w)
    for j in range(k):
        q[:, j] = np.clip(np.round(perm_w[:, j] / s), lo[:, j], hi[:, j])
        err = (perm_w[:, j] - s * q[:, j]) / upper[j, j]
        perm_w[:, j + 1:] -= np.outer(err, upper[j, j + 1:])
    out = np.zeros_like(q)
    out[:, order] = q
    return out
