"""Cross-layer equalization (Nagel et al., "Data-Free Quantization Through Weight Equalization and
Bias Correction", ICCV 2019, section 4.1), on the float TFLite model the converter made.

For whom: ``converters.tf2.recovery.search``; ``tf2`` environment only.

What it does: for each pair first op -> [activation / zero padding / pooling] -> second op, where the
first is a CONV_2D, DEPTHWISE_CONV_2D or FULLY_CONNECTED (batch norm already folded by the converter)
whose output feeds only the second (a CONV_2D, a DEPTHWISE_CONV_2D or a FULLY_CONNECTED), it divides
output channel c of the first op (weights and bias) by s_c and multiplies input channel c of the second
op's weights by s_c, with s_c = sqrt(r1_c / r2_c) (r1, r2: the channel's weight ranges), so that both
channels end with the same range sqrt(r1_c r2_c). Sweeps repeat until the scales settle (chains such as
conv -> depthwise -> conv share an op between two pairs). Per-tensor int8 weights then lose far less
to a few wide channels.

The invariant it keeps: **the float function is unchanged**. ReLU, zero padding, max and average pooling
are positively homogeneous per channel (f(x / s) = f(x) / s for s > 0), so the second op sees exactly the
values it saw before, times s_c, which its weights undo. **ReLU6 is not** (it clips at 6, not at 6 / s):
a channel that reaches 6 on the calibration data keeps s_c = 1, and a channel that stays below 6 (max m_c)
is scaled only as far as its values stay below the clip (its values times its total scale stay < 6).
So the function is unchanged on every input whose ReLU6 channels that never clipped in calibration stay
below 6 / total scale; the transformed float model is checked against the origin like any environment
(``quantization.cle``: its float check, and its probe check when chosen), so a change would show. Calibrated ranges of the rescaled tensors are
derived from their per-channel statistics (``converters.tf2.recovery.statistics``), not recalibrated.
"""

import numpy as np

from converters.tf2.recovery.graph import LINEAR_OPS

THROUGH = ("PAD", "MAX_POOL_2D", "AVERAGE_POOL_2D", "MEAN", "RELU", "RELU6")  # positively homogeneous per channel
RELU6_CLIP = 6.0
MAX_SWEEPS = 64
SETTLED = 1e-4  # |log s| below which a sweep changed nothing worth another


def _positive_activation(name):
    return name in (None, "NONE", "RELU", "RELU6")


def find_pairs(graph):
    """[{first, second, chain, relu6: [tensor names whose ReLU6 output must stay unclipped], channels}]."""
    pairs = []
    for op in graph.ops:
        if op.name not in LINEAR_OPS or not _positive_activation(op.activation):
            continue
        w_index, b_index, out_axis, _ = LINEAR_OPS[op.name]
        if len(op.inputs) <= w_index or not graph.is_constant(op.inputs[w_index]) or \
                graph.shared_buffer(op.inputs[w_index]):
            continue
        bias = op.inputs[b_index] if len(op.inputs) > b_index and op.inputs[b_index] >= 0 else None
        if bias is not None and (not graph.is_constant(bias) or graph.shared_buffer(bias)):
            continue
        if graph.dtypes[op.inputs[w_index]] != 0:
            continue
        channels = graph.shapes[op.inputs[w_index]][out_axis]
        relu6 = [op.outputs[0]] if op.activation == "RELU6" else []
        chain = []
        tensor = op.outputs[0]
        second = None
        while True:
            users = graph.consumers.get(tensor, [])
            if tensor in graph.outputs or len(users) != 1 or users[0].inputs[0] != tensor:
                break
            user = users[0]
            if not graph.shapes[tensor] or graph.shapes[tensor][-1] != channels:
                break
            if user.name in LINEAR_OPS:
                second = user
                break
            if user.name not in THROUGH or not _positive_activation(user.activation):
                break
            if user.name == "PAD" and len(user.inputs) > 2:
                break
            if user.name == "MEAN" and (not graph.shapes[user.outputs[0]] or
                                        graph.shapes[user.outputs[0]][-1] != channels or
                                        not _spatial_axes(graph, user)):
                break
            chain.append(user)
            if user.name == "RELU6" or user.activation == "RELU6":
                relu6.append(user.outputs[0])
            tensor = user.outputs[0]
        if second is None:
            continue
        w2 = second.inputs[LINEAR_OPS[second.name][0]]
        if not graph.is_constant(w2) or graph.shared_buffer(w2) or graph.dtypes[w2] != 0:
            continue
        shape2 = graph.shapes[w2]
        if second.name == "CONV_2D" and shape2[3] != channels:
            continue  # grouped convolution
        if second.name == "DEPTHWISE_CONV_2D" and shape2[3] != channels * second.depth_multiplier:
            continue
        if second.name == "FULLY_CONNECTED" and (len(shape2) != 2 or shape2[1] != channels):
            continue
        pairs.append({"first": op, "second": second, "chain": chain, "relu6": relu6,
                      "rescaled": [op.outputs[0]] + [c.outputs[0] for c in chain],
                      "weights": (op.inputs[w_index], w2), "bias": bias, "channels": channels})
    return pairs


def _spatial_axes(graph, op):
    """True for a MEAN over spatial axes only (global average pooling): the channel axis is kept."""
    if len(op.inputs) < 2 or not graph.is_constant(op.inputs[1]):
        return False
    rank = len(graph.shapes[op.inputs[0]])
    axes = [int(a) % rank for a in np.ravel(graph.values(op.inputs[1]))]
    return rank - 1 not in axes


def _out_range(weights, name):
    """Per output channel max |w| of the first op's weights."""
    axis = LINEAR_OPS[name][2]
    moved = np.moveaxis(np.abs(weights), axis, 0)
    return moved.reshape(moved.shape[0], -1).max(axis=1)


def _in_range(weights, name, multiplier, channels):
    """Per input channel max |w| of the second op's weights."""
    if name == "DEPTHWISE_CONV_2D":
        return np.abs(weights).reshape(-1, channels, multiplier).max(axis=(0, 2))
    axis = LINEAR_OPS[name][3]
    moved = np.moveaxis(np.abs(weights), axis, 0)
    return moved.reshape(moved.shape[0], -1).max(axis=1)


def _scale_out(weights, name, factor):
    shape = [1] * weights.ndim
    shape[LINEAR_OPS[name][2]] = -1
    return weights * factor.reshape(shape)


def _scale_in(weights, name, multiplier, factor):
    if name == "DEPTHWISE_CONV_2D":
        return weights * np.repeat(factor, multiplier).reshape([1] * (weights.ndim - 1) + [-1])
    shape = [1] * weights.ndim
    shape[LINEAR_OPS[name][3]] = -1
    return weights * factor.reshape(shape)


def plan(graph, stats):
    """Scales for every pair of ``graph`` (a float or calibrated model): ({pair index: s (channels,)},
    details). ``stats``: {tensor name: TensorStats} of the float model (the ReLU6 rule reads maxima)."""
    pairs = find_pairs(graph)
    names = graph.tensor_names
    weights = {}
    for pair in pairs:
        for t in pair["weights"]:
            weights.setdefault(t, graph.values(t).astype(np.float64))
    totals = [np.ones(pair["channels"]) for pair in pairs]
    limits = []
    for pair in pairs:
        # the largest total scale a channel may take (values grow by 1 / total): ReLU6 rule, see above
        upper = np.full(pair["channels"], np.inf)
        lower = np.zeros(pair["channels"])
        for t in pair["relu6"]:
            top = stats[names[t]].max if names[t] in stats else np.full(pair["channels"], RELU6_CLIP)
            clipped = top >= RELU6_CLIP * (1 - 1e-5)
            # the channel's values become value / total: they must stay < 6 -> total > top / 6
            lower = np.maximum(lower, np.where(clipped, 1.0, np.maximum(top, 0) / RELU6_CLIP * (1 + 1e-6)))
            upper = np.where(clipped, 1.0, upper)
        limits.append((lower, upper))
    sweeps = 0
    for sweeps in range(1, MAX_SWEEPS + 1):
        moved = 0.0
        for k, pair in enumerate(pairs):
            first, second = pair["first"], pair["second"]
            w1, w2 = pair["weights"]
            r1 = _out_range(weights[w1], first.name)
            r2 = _in_range(weights[w2], second.name, second.depth_multiplier, pair["channels"])
            s = np.ones(pair["channels"])
            ok = (r1 > 0) & (r2 > 0)
            s[ok] = np.sqrt(r1[ok] / r2[ok])
            lower, upper = limits[k]
            s = np.clip(totals[k] * s, lower, upper) / totals[k]
            if not np.all(np.isfinite(s)) or np.any(s <= 0):
                s = np.where(np.isfinite(s) & (s > 0), s, 1.0)
            weights[w1] = _scale_out(weights[w1], first.name, 1.0 / s)
            weights[w2] = _scale_in(weights[w2], second.name, second.depth_multiplier, s)
            totals[k] = totals[k] * s
            moved = max(moved, float(np.max(np.abs(np.log(s)))) if s.size else 0.0)
        if moved < SETTLED:
            break
    details = {"pairs": len(pairs), "sweeps": sweeps, "relu6_pairs": sum(1 for p in pairs if p["relu6"]),
               "relu6_channels_kept": int(sum(np.sum(limits[k][1] == 1.0) for k, p in enumerate(pairs)
                                              if p["relu6"])),
               "max_scale": float(max([np.max(t) for t in totals] or [1.0])),
               "min_scale": float(min([np.min(t) for t in totals] or [1.0]))}
    return pairs, totals, details


def apply(graph, pairs, totals, stats=None):
    """Edit ``graph`` in place: first op's output channels (weights, bias) / s, second op's input channels
    x s; when ``stats`` are given and the graph is calibrated, the rescaled tensors' min/max from their
    per-channel statistics. Returns {tensor name: per-channel factor its values were multiplied by}."""
    by_name = graph.index_by_name()
    factors = {}
    for pair, s in zip(pairs, totals):
        first, second = pair["first"], pair["second"]
        w1, w2 = [by_name[pair_name] for pair_name in (graph_name(pair, 0), graph_name(pair, 1))]
        view = graph.values(w1)
        view[...] = _scale_out(view.astype(np.float64), first.name, 1.0 / s).astype(view.dtype)
        if pair["bias_name"] is not None:
            bias = graph.values(by_name[pair["bias_name"]])
            bias[...] = (bias.astype(np.float64) / s).astype(bias.dtype)
        view = graph.values(w2)
        view[...] = _scale_in(view.astype(np.float64), second.name, second.depth_multiplier, s).astype(view.dtype)
        for name in pair["rescaled_names"]:
            factors[name] = factors.get(name, 1.0) / s
    if stats is not None:
        for name, factor in factors.items():
            t = by_name.get(name)
            views = graph.range_views(t) if t is not None else None
            if views is None or name not in stats:
                continue
            low = stats[name].min * factor
            high = stats[name].max * factor
            views[0][...] = np.float32(np.min(low))
            views[1][...] = np.float32(np.max(high))
    return factors


def graph_name(pair, which):
    return pair["weight_names"][which]


def portable(pairs, graph):
    """The pairs with tensor names added, so that ``apply`` can edit another model of the same graph
    (the calibrated model, the float model for its checks) by name."""
    names = graph.tensor_names
    for pair in pairs:
        pair["weight_names"] = (names[pair["weights"][0]], names[pair["weights"][1]])
        pair["bias_name"] = names[pair["bias"]] if pair["bias"] is not None else None
        pair["rescaled_names"] = [names[t] for t in pair["rescaled"]]
    return pairs
