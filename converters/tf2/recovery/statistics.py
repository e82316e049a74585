"""What the float model computes on the calibration samples, per channel: the recovery rewrites' data.

For whom: ``converters.tf2.recovery.search``; ``tf2`` environment only. One pass of TFLite's interpreter
(the float model the converter made, every tensor kept, the builtin kernels the calibrator uses) over
the calibration samples records, for every float activation tensor, per channel (the last axis):
mean, min and max, and a seeded random sample of its values with their channels (for choosing
activation ranges). Cross-layer equalization reads the maxima (ReLU6), bias correction the means,
range choice the value samples; equalization rescales channels, so every statistic is kept per channel
and rescaled, never recomputed.
"""

import numpy as np

from converters.tf2 import calibrate

VALUE_SAMPLES = 16384  # values kept per tensor for the range choice (spread over the samples)


class TensorStats(object):
    """Per-channel statistics of one tensor over the samples seen (see the module docstring)."""

    def __init__(self, channels):
        self.channels = channels
        self.sum = np.zeros(channels, np.float64)
        self.count = 0
        self.min = np.full(channels, np.inf, np.float64)
        self.max = np.full(channels, -np.inf, np.float64)
        self.values = []
        self.value_channels = []

    def add(self, array, keep, rng):
        flat = np.asarray(array, np.float32).reshape(-1, self.channels)
        self.sum += flat.sum(axis=0, dtype=np.float64)
        self.count += flat.shape[0]
        np.minimum(self.min, flat.min(axis=0), out=self.min)
        np.maximum(self.max, flat.max(axis=0), out=self.max)
        if keep:
            picked = rng.randint(0, flat.size, size=min(keep, flat.size))
            self.values.append(flat.reshape(-1)[picked].copy())
            self.value_channels.append((picked % self.channels).astype(np.int32))

    @property
    def mean(self):
        return self.sum / max(1, self.count)

    def samples(self, channel_scale=None):
        """The kept values, each multiplied by its channel's scale when ``channel_scale`` is given."""
        if not self.values:
            return np.zeros(0, np.float32)
        values = np.concatenate(self.values)
        if channel_scale is not None:
            values = values * channel_scale[np.concatenate(self.value_channels)]
        return values


def collect(model_content, samples, tensors, threads=2, seed=0):
    """{tensor: TensorStats} for ``tensors`` of ``model_content`` (a float TFLite model) over ``samples``
    (a list of samples, each a list of arrays in the model's input order)."""
    if not samples:
        return {}
    shapes = [list(np.shape(x)) for x in samples[0]]
    interpreter = calibrate._interpreter(bytes(model_content), shapes, threads=max(2, threads), preserve=True)
    inputs = interpreter.get_input_details()
    rng = np.random.RandomState(seed)
    keep = -(-VALUE_SAMPLES // len(samples))
    stats = {}
    for sample in samples:
        for detail, array in zip(inputs, sample):
            interpreter.set_tensor(detail["index"], np.asarray(array, dtype=detail["dtype"]))
        interpreter.invoke()
        for t in tensors:
            view = interpreter.tensor(t)()
            if view.size == 0:
                del view
                continue
            if t not in stats:
                stats[t] = TensorStats(int(view.shape[-1]) if view.ndim else 1)
            stats[t].add(view, keep, rng)
            del view
    del interpreter
    return stats


def run(model_content, samples, threads=2, tensors=()):
    """Outputs of a TFLite model (float or int8 with any I/O type) on ``samples``, dequantized to float:
    ([array (N, ...)] per output, {tensor: [arrays]} of ``tensors`` dequantized, per sample)."""
    shapes = [list(np.shape(x)) for x in samples[0]]
    interpreter = calibrate._interpreter(bytes(model_content), shapes, threads=max(2, threads),
                                         preserve=bool(tensors))
    inputs = interpreter.get_input_details()
    outputs = interpreter.get_output_details()
    details = dict((d["index"], d) for d in interpreter.get_tensor_details())
    results = [[] for _ in outputs]
    kept = dict((t, []) for t in tensors)
    for sample in samples:
        for detail, array in zip(inputs, sample):
            interpreter.set_tensor(detail["index"], _quantize(np.asarray(array, np.float32), detail))
        interpreter.invoke()
        for k, detail in enumerate(outputs):
            results[k].append(_dequantize(interpreter.get_tensor(detail["index"]), detail))
        for t in tensors:
            view = interpreter.tensor(t)()
            kept[t].append(_dequantize(np.array(view), details[t]))
            del view
    del interpreter
    return [np.concatenate(r) for r in results], kept


def _quantize(x, detail):
    dtype = np.dtype(detail["dtype"])
    scale, zero_point = detail["quantization"]
    if dtype.kind == "f" or not scale:
        return x.astype(dtype)
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(dtype)


def _dequantize(q, detail):
    q = np.asarray(q)
    if q.dtype.kind == "f":
        return q.astype(np.float32)
    params = detail.get("quantization_parameters") or {}
    scales = np.asarray(params.get("scales", []), np.float64)
    zeros = np.asarray(params.get("zero_points", []), np.float64)
    if scales.size > 1:  # per-axis (weights): not an activation
        axis = params.get("quantized_dimension", 0)
        shape = [1] * q.ndim
        shape[axis] = -1
        return ((q - zeros.reshape(shape)) * scales.reshape(shape)).astype(np.float32)
    scale, zero_point = detail["quantization"]
    if not scale:
        return q.astype(np.float32)
    return ((q.astype(np.float64) - zero_point) * scale).astype(np.float32)
