"""Activation ranges chosen, not only min/max: per tensor, the range that loses least to int8.

For whom: ``converters.tf2.recovery.search``; ``tf2`` environment only.

TFLite's calibration sets each activation tensor's int8 range to the min and max it saw. One outlier
then stretches the step for every other value. Here each calibrated activation tensor's range can be
narrowed, from a seeded sample of its values on the calibration data
(``converters.tf2.recovery.statistics``):

- ``percentile``: the 0.01 and 99.99 percentiles (a range that keeps 0 when min/max did);
- ``mse``: of the min/max range shrunk by each factor of a grid (both ends together),
  (geometric, 1.0 down to 0.02) the one whose int8 quantization (round to the 255-step grid with its zero point, clip) of the sampled
  values has the smallest mean squared error, clipping included.

The invariant: only calibrated min/max values change; ops, tensors and the model's inputs (whose range
is the int8 input's scale, part of the interface) do not. The quantizer derives scales and zero points
from these ranges as it does from the calibrator's.
"""

import numpy as np

METHODS = ("percentile", "mse")
SHRINK = np.geomspace(1.0, 0.02, 48)
PERCENTILE = 99.99


def _quant_mse(values, low, high):
    low, high = min(low, 0.0), max(high, 0.0)
    if high - low <= 0:
        return float(np.mean(values ** 2))
    scale = (high - low) / 255.0
    zero = np.round(-128 - low / scale)
    q = np.clip(np.round(values / scale + zero), -128, 127)
    return float(np.mean(((q - zero) * scale - values) ** 2))


def choose(values, low, high, method):
    """(low, high) for one tensor's sampled ``values`` and its min/max range."""
    if values.size == 0 or not np.isfinite(low) or not np.isfinite(high) or high <= low:
        return low, high
    values = values.astype(np.float64)
    if method == "percentile":
        new_low = float(np.percentile(values, 100 - PERCENTILE)) if low < 0 else low
        new_high = float(np.percentile(values, PERCENTILE)) if high > 0 else high
        return min(new_low, 0.0) if low <= 0 else new_low, max(new_high, 0.0) if high >= 0 else new_high
    best = (_quant_mse(values, low, high), 1.0)
    for factor in SHRINK[1:]:
        error = _quant_mse(values, low * factor, high * factor)
        if error < best[0]:
            best = (error, factor)
    return low * best[1], high * best[1]


def narrow(graph, stats, method, factors=None, keep=()):
    """Set the calibrated range of every activation tensor of ``graph`` (a calibrated model, in place)
    that has statistics, except ``keep`` (tensor indices, e.g. the model's inputs). ``factors``: the
    per-channel factors equalization applied (values are rescaled before choosing). Returns how many
    ranges narrowed and the median width kept."""
    factors = factors or {}
    narrowed = 0
    kept = []
    for t in graph.activation_tensors():
        name = graph.tensor_names[t]
        views = graph.range_views(t)
        if t in keep or views is None or name not in stats:
            continue
        low, high = float(views[0][0]), float(views[1][0])
        values = stats[name].samples(factors.get(name))
        new_low, new_high = choose(values, low, high, method)
        if (new_low, new_high) != (low, high) and new_high > new_low:
            views[0][...] = np.float32(new_low)
            views[1][...] = np.float32(new_high)
            narrowed += 1
            kept.append((new_high - new_low) / (high - low))
    return {"narrowed": narrowed, "median_width_kept": round(float(np.median(kept)), 3) if kept else 1.0}
