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

from converters.tf2 import tflite_model

VALUE_SAMPLES = 16384  # values kept per tensor for the range choice (spread over the samples)


MEAN_ROWS = 4096  # positions per sample a channel mean is taken over (evenly strided): ample for a mean


class TensorStats(object):
    """Per-channel statistics of one tensor over the samples seen (see the module docstring); only the
    ``kinds`` asked for are kept: "mean" (bias correction's E[x]), "range" (per-channel min and max:
    equalization's rescaled tensors and its ReLU6 rule), "values" (a sample for the range choice)."""

    def __init__(self, channels, kinds=("mean", "range", "values")):
        self.channels = channels
        self.kinds = frozenset(kinds)
        self.sum = np.zeros(channels, np.float64)
        self.count = 0
        self.min = np.full(channels, np.inf, np.float64)
        self.max = np.full(channels, -np.inf, np.float64)
        self.values = []
        self.value_channels = []

    def add(self, array, keep, rng):
        flat = np.asarray(array, np.float32).reshape(-1, self.channels)
        if "mean" in self.kinds:
            step = max(1, flat.shape[0] // MEAN_ROWS)
            rows = flat[::step]
            self.sum += rows.mean(axis=0, dtype=np.float64) if rows.shape[0] > 1 else rows[0]
            self.count += 1
        if "range" in self.kinds:
            np.minimum(self.min, flat.min(axis=0), out=self.min)
            np.maximum(self.max, flat.max(axis=0), out=self.max)
        if keep and "values" in self.kinds:
            picked = rng.randint(0, flat.size, size=min(keep, flat.size))
            self.values.append(flat.reshape(-1)[picked].copy())
            self.value_channels.append((picked % self.channels).astype(np.int32))

    @property
    def mean(self):
        """Per-channel mean: the mean over samples of each sample's mean over positions (equal weights:
        every sample has the same number of positions)."""
        return self.sum / max(1, self.count)

    def samples(self, channel_scale=None):
        """The kept values, each multiplied by its channel's scale when ``channel_scale`` is given."""
        if not self.values:
            return np.zeros(0, np.float32)
        values = np.concatenate(self.values)
        if channel_scale is not None:
            values = values * channel_scale[np.concatenate(self.value_channels)]
        return values


class Collector(object):
    """Statistics gathered while the calibration's fast route runs the float model over the same samples
    (``converters.tf2.calibrate.InterpreterObserver``), so that they cost no second pass. ``names``: the
    model's tensor names; ``count``: how many samples will be fed; ``wanted``: {tensor name: kinds}
    (``TensorStats``), the only tensors observed. ``complete()`` says whether every sample was seen (a
    route that fell back to TFLite's calibrator leaves it incomplete: ``collect``)."""

    def __init__(self, names, count, wanted, seed=0):
        self.names = names
        self.count = count
        self.wanted = wanted
        self.rng = np.random.RandomState(seed)
        self.keep = -(-VALUE_SAMPLES // max(1, count))
        self.stats = {}
        self.seen = set()
        self.excluded = set()

    def add(self, t, view):
        if t in self.excluded or view.size == 0:
            return
        name = self.names[t]
        kinds = self.wanted.get(name)
        if not kinds:
            return
        if name not in self.stats:
            self.stats[name] = TensorStats(int(view.shape[-1]) if view.ndim else 1, kinds)
        self.stats[name].add(view, self.keep, self.rng)

    def for_sample(self, index):
        """The collector sample ``index``'s tensors go to: this one."""
        return self

    def sample_done(self, index):
        self.seen.add(index)

    def reset(self):
        self.stats, self.seen = {}, set()

    def complete(self):
        return len(self.seen) == self.count and bool(self.stats)


class FoldCollectors(object):
    """One ``Collector`` per fold of the search's cross-fitting, fed by one pass over every sample: sample
    i's tensors go to fold ``fold_of[i]``'s collector (``parts[k]``), which numbers its samples as a pass
    over that fold alone would (so its statistics, value samples included, are the same)."""

    def __init__(self, names, wanted, fold_of, seed=0):
        self.fold_of = list(fold_of)
        folds = sorted(set(self.fold_of))
        self.parts = [Collector(names, self.fold_of.count(k), wanted, seed) for k in folds]
        self.position = {}
        for k in folds:
            for rank, index in enumerate(i for i, f in enumerate(self.fold_of) if f == k):
                self.position[index] = rank

    @property
    def excluded(self):
        return self.parts[0].excluded

    @excluded.setter
    def excluded(self, tensors):
        for part in self.parts:
            part.excluded = set(tensors)

    def for_sample(self, index):
        return _Numbered(self.parts[self.fold_of[index]], self.position[index])

    def sample_done(self, index):  # the observer calls the object ``for_sample`` gave
        raise AssertionError("FoldCollectors.for_sample gives the collector to call")

    def reset(self):
        for part in self.parts:
            part.reset()

    def complete(self):
        return all(part.complete() for part in self.parts)


class _Numbered(object):
    """A fold's collector seen through one sample: ``sample_done`` with the sample's number in its fold."""

    def __init__(self, collector, position):
        self.collector = collector
        self.position = position

    def add(self, t, view):
        self.collector.add(t, view)

    def sample_done(self, index):
        self.collector.sample_done(self.position)


def merge(parts):
    """{tensor name: TensorStats} over the samples of several ``parts`` (each a {name: TensorStats} of
    disjoint samples, e.g. the search's folds): sums and counts add (the mean is over every sample), ranges
    widen, value samples join. A tensor missing from a part is left out (it was not observed there)."""
    if len(parts) == 1:
        return parts[0]
    names = set(parts[0]).intersection(*[set(p) for p in parts[1:]])
    merged = {}
    for name in names:
        first = parts[0][name]
        out = TensorStats(first.channels, first.kinds)
        for part in parts:
            other = part[name]
            out.sum += other.sum
            out.count += other.count
            np.minimum(out.min, other.min, out=out.min)
            np.maximum(out.max, other.max, out=out.max)
            out.values.extend(other.values)
            out.value_channels.extend(other.value_channels)
        merged[name] = out
    return merged


def collect(model_content, samples, wanted, threads=2, seed=0):
    """{tensor name: TensorStats} for the tensors of ``model_content`` (a float TFLite model) that
    ``wanted`` names ({name: kinds}, as ``Collector``), over ``samples`` (a list of samples, each a list of
    arrays in the model's input order).

    Left out: a tensor that an op overwrites in place (TFLite runs e.g. a residual ADD in its input's
    buffer, even with every tensor kept: ``calibrate.in_place_inputs``), since after the run its buffer
    holds that op's output; the rewrites then leave the layers that read it alone."""
    if not samples:
        return {}
    from converters.tf2.recovery.graph import Graph

    shapes = [list(np.shape(x)) for x in samples[0]]
    names = Graph(bytearray(model_content)).tensor_names
    overwritten = overwritten_inputs(model_content, shapes)
    tensors = [t for t, name in enumerate(names) if wanted.get(name) and t not in overwritten]
    interpreter = tflite_model.interpreter(bytes(model_content), shapes, threads=max(2, threads), preserve=True)
    inputs = interpreter.get_input_details()
    rng = np.random.RandomState(seed)
    keep = -(-VALUE_SAMPLES // len(samples))
    stats = {}
    for sample in samples:
        for detail, array in zip(inputs, sample):
            interpreter.set_tensor(detail["index"], np.asarray(array, dtype=detail["dtype"]))
        interpreter.invoke()
        for t in tensors:
            try:
                view = interpreter.tensor(t)()
            except ValueError:  # a tensor TFLite gave no buffer of its own (e.g. a RESHAPE's output)
                continue
            if view.size == 0:
                del view
                continue
            if names[t] not in stats:
                stats[names[t]] = TensorStats(int(view.shape[-1]) if view.ndim else 1, wanted[names[t]])
            stats[names[t]].add(view, keep, rng)
            del view
    del interpreter
    return stats


def overwritten_inputs(model_content, shapes):
    """The tensors an op overwrites in place (its output in the input's buffer), from an interpreter
    planned as the calibrator's (nothing run); tensors without a buffer of their own are skipped, and a
    model whose buffers cannot be read at all gives the empty set (its statistics are then as read)."""
    from converters.tf2.recovery.graph import Graph

    graph = Graph(bytearray(model_content))
    try:
        interpreter = tflite_model.interpreter(bytes(model_content), shapes)
    except Exception:  # noqa: BLE001 - the statistics pass reports its own failure
        return set()

    def span(t):
        try:
            return tflite_model.data_span(interpreter, t)
        except ValueError:  # no buffer of its own
            return None

    found = set()
    for op in graph.ops:
        outputs = [span(o) for o in op.outputs if o >= 0]
        for i in op.inputs:
            if i < 0 or graph.is_constant(i):
                continue
            own = span(i)
            if own is not None and own[1] and any(o is not None and o[0] == own[0] for o in outputs):
                found.add(i)
    del interpreter
    return found


def run(model_content, samples, threads=2, tensors=()):
    """Outputs of a TFLite model (float or int8 with any I/O type) on ``samples``, dequantized to float:
    ([array (N, ...)] per output, {tensor: [arrays]} of ``tensors`` dequantized, per sample).

    Without ``tensors`` the model runs as the probe runs it (``converters.tf2.tflite_run``: TFLite's default
    delegates, XNNPACK among them, several times faster on int8); with them, on the builtin kernels,
    whose every tensor can be read."""
    shapes = [list(np.shape(x)) for x in samples[0]]
    if tensors:
        interpreter = tflite_model.interpreter(bytes(model_content), shapes, threads=max(2, threads), preserve=True)
    else:
        interpreter = _default_interpreter(bytes(model_content), shapes, threads)
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


def _default_interpreter(model_content, shapes, threads):
    """An interpreter as the probe's (``converters.tf2.tflite_run``: LiteRT, else tf.lite), from bytes."""
    import warnings

    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # LiteRT not installed: TensorFlow's own interpreter
        from tensorflow.lite.python.interpreter import Interpreter
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        interpreter = Interpreter(model_content=model_content, num_threads=max(2, threads))
    for detail, shape in zip(interpreter.get_input_details(), shapes):
        if list(detail["shape"]) != list(shape):
            interpreter.resize_tensor_input(detail["index"], list(shape))
    interpreter.allocate_tensors()
    return interpreter


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
