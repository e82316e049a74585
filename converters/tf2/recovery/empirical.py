"""Empirical bias correction, layer by layer, on the int8 model itself (the ``ebias`` candidate).

For whom: ``converters.tf2.recovery.search``; ``tf2`` environment only.

What it does: for each CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED of the int8 model, in execution order,
the int8 model (with the corrections made so far in place) and the float model it was quantized from run on
the calibration samples; the per-channel mean of the difference between the layer's dequantized int8 output
and the float layer's output (matched by position: ``graph.linear_pairs``) is subtracted from its int32 bias,
in bias steps (input scale x weight scale). Unlike the analytic correction (``bias``: (W_q - W) E[x]), it
sees what the quantized activations before the layer bring in. Layers are corrected one after the other,
because corrections interact: a layer's measured error includes what the uncorrected layers before it
pass on (FACTS.md, 2026-12-07: one pass for all layers gave a constant output).

The invariant: only int32 bias values of linear ops change (shared bias buffers are given their own first,
``graph.unshare``): the same ops, tensors, scales and int8 I/O.

Fused activations: TFLite's op output is after the fused ReLU / ReLU6, and the pre-activation value is
not observable. The bias is a pre-activation quantity, so the mean difference is taken only over the
positions where neither the float nor the int8 output is clipped (by the activation or by the int8 range):
there, output difference = pre-activation difference. A channel with fewer than ``MIN_LINEAR`` such
positions (nearly always clipped) takes the mean over all its positions (the clipped mean: the right
direction, an underestimate). The selection is slightly biased near the clip (a position the int8 model
shifts across zero leaves the set), which is second order in the shift.

How sure: a channel's mean difference is an estimate; its standard error is taken over samples (a
sample's positions are not independent). The correction is shrunk by it (``shrink``): a mean within one
standard error of 0 is not applied. It matters where a layer sees one position per sample (a classifier:
its corrections were below their standard error on an untrained MobileNet and cost SQNR on fresh inputs).

The schedule (why it is fast and stays exact): correcting layer L needs L's int8 output with every layer
before it final. Instead of one int8 pass over the whole model per layer (the naive schedule), the int8
tensors that are final are kept (per sample, raw int8), and layer L's output is computed by a sub-model
that contains only the ops between the kept tensors and L (in a chain: the previous linear layer, the ops
between, and L), fed with the kept values. TFLite's kernels are deterministic, so every value is the one
the full model computes: the corrected file is byte for byte the naive schedule's (tested), at the cost
of about two model passes instead of one per layer. The float model is run the same way (it never
changes: each float op runs once). Measured on the LFW MobileNetV1 (legacy_tf1 mobilenet, 31 ops, 28
layers, 96 samples, 2 shared cores): 56 int8 op runs instead of 411, 15 s instead of 120 s, same file. A kept tensor is dropped once the layer it feeds has been corrected after it was computed
(its descendants), and when no later op reads it. A sub-model holds only the tensors and constants its ops
touch, and runs on a batch of samples at once (``Runner``'s ``batch``; integer kernels compute each row as
one sample: the same file, tested): on the same MobileNet (per-tensor, 80 samples a fold) a fit went from
about 5 s to 0.5 s, and auto's whole search from 28.6 s to 9.5 s (2026-12-07, 2 shared cores).
"""

import copy
import time

import numpy as np

from converters.tf2 import tflite_model
from converters.tf2.recovery import bias as bias_correction
from converters.tf2.recovery.graph import LINEAR_OPS, Graph, linear_pairs, unshare

BATCH_BYTES = 64 << 20  # a batched sub-model's tensors (every one kept) take at most this much memory
MIN_LINEAR = 16  # unclipped positions a channel's mean needs before it is trusted over the clipped mean
# fused activation -> (low, high) of its output in real units
_CLIPS = {"NONE": (-np.inf, np.inf), None: (-np.inf, np.inf), "RELU": (0.0, np.inf), "RELU6": (0.0, 6.0),
          "RELU_N1_TO_1": (-1.0, 1.0)}


class Runner(object):
    """Runs parts of one TFLite model on the samples, keeping the values of the tensors it computed.

    ``values(targets)`` computes the tensors ``targets`` (each a list of per-sample arrays, raw: int8 stays
    int8) by a sub-model of the ops between the kept tensors and the targets; ``forget(tensors)`` drops kept
    values (a correction made them stale). ``full=True`` runs the whole model for every request instead (the
    naive schedule, kept to check the fast one against). ``batch``: a sub-model runs on up to
    ``BATCH_BYTES`` of samples at once (its inputs resized to a batch: one invoke instead of one per sample;
    integer kernels compute each batch row as they compute one sample), unless a tensor of it would not
    keep one row per sample (e.g. a RESHAPE to a fixed shape): then one sample at a time."""

    def __init__(self, content, samples, full=False, batch=True):
        from tensorflow.lite.tools import flatbuffer_utils

        self.batch = batch
        self.batched = 0  # sub-model runs made on batches of samples
        self.graph = Graph(bytearray(content))
        self.model = flatbuffer_utils.read_model_from_bytearray(bytes(content))
        self.full = full
        self.count = len(samples)
        self.kept = {}
        self.passes = 0
        self.ops_run = 0
        self.inputs = {}
        for k, t in enumerate(self.graph.inputs):
            self.inputs[t] = [_quantize(np.asarray(sample[k], np.float32), self.graph, t) for sample in samples]
        self.kept.update(self.inputs)

    def set_values(self, t, values):
        """Write ``values`` into constant tensor ``t`` of the model this runner builds sub-models from."""
        buffer = self.model.buffers[self.graph.buffers[t]]
        buffer.data = np.frombuffer(np.ascontiguousarray(values).tobytes(), np.uint8).copy()

    def forget(self, tensors):
        for t in tensors:
            if t not in self.inputs:
                self.kept.pop(t, None)

    def evict(self, after):
        """Drop kept values that no op at or after position ``after`` reads (no later sub-model needs them)."""
        for t in list(self.kept):
            if t in self.inputs:
                continue
            if all(op.index < after for op in self.graph.consumers.get(t, [])) and t not in self.graph.outputs:
                del self.kept[t]

    def values(self, targets):
        if self.full:
            self.kept = dict(self.inputs)
        ops, frontier = self._cone(targets)
        if ops:
            self._run(ops, frontier, targets)
        return [self.kept[t] for t in targets]

    def _cone(self, targets):
        graph = self.graph
        ops, frontier, stack = set(), set(), list(targets)
        while stack:
            t = stack.pop()
            if t < 0 or t in frontier:
                continue
            if t in self.kept:
                frontier.add(t)
                continue
            if graph.is_constant(t):
                continue
            op = graph.producer.get(t)
            if op is None:
                raise ValueError("tensor %d (%s) is neither computed nor an input" % (t, graph.tensor_names[t]))
            if op.index in ops:
                continue
            ops.add(op.index)
            stack.extend(op.inputs)
        return sorted(ops), sorted(frontier)

    def _sub_model(self, ops, frontier, targets):
        """(bytes of the model of ops ``ops`` alone, fed at ``frontier`` and giving ``targets``, {tensor of
        the whole model: its index in the sub-model}). Only the tensors those ops touch and the buffers of
        their constants are written (packing every tensor of the model for each sub-model took most of the
        time on a small model); every other field is the whole model's, so the kernels compute the same."""
        from tensorflow.lite.tools import flatbuffer_utils

        graph, source = self.graph, self.model.subgraphs[0]
        used = set(frontier) | set(targets)
        for i in ops:
            operator = source.operators[i]
            for field in (operator.inputs, operator.outputs, getattr(operator, "intermediates", None)):
                used.update(int(t) for t in (field if field is not None else []) if t >= 0)
        used = sorted(used)
        index = dict((t, k) for k, t in enumerate(used))
        buffers = [self.model.buffers[0]]  # buffer 0: the empty one every non-constant tensor may point to
        tensors = []
        for t in used:
            tensor = copy.copy(source.tensors[t])
            if graph.is_constant(t):
                buffers.append(self.model.buffers[tensor.buffer])
                tensor.buffer = len(buffers) - 1
            else:
                tensor.buffer = 0
            tensors.append(tensor)

        def renumbered(field):
            return None if field is None else np.array([index[int(t)] if t >= 0 else -1 for t in field], np.int32)

        operators = []
        for i in ops:
            operator = copy.copy(source.operators[i])
            operator.inputs = renumbered(operator.inputs)
            operator.outputs = renumbered(operator.outputs)
            if getattr(operator, "intermediates", None) is not None:
                operator.intermediates = renumbered(operator.intermediates)
            operators.append(operator)
        subgraph = copy.copy(source)
        subgraph.tensors = tensors
        subgraph.operators = operators
        subgraph.inputs = np.array([index[t] for t in frontier], np.int32)
        subgraph.outputs = np.array([index[t] for t in targets], np.int32)
        model = copy.copy(self.model)
        model.subgraphs = [subgraph]
        model.signatureDefs = []
        model.metadata = []  # their buffer indices are the whole model's
        model.metadataBuffer = []
        model.buffers = buffers
        return bytes(flatbuffer_utils.convert_object_to_bytearray(model)), index

    def _run(self, ops, frontier, targets):
        graph = self.graph
        content, index = self._sub_model(ops, frontier, targets)
        shapes = [list(self.kept[t][0].shape) for t in frontier]
        interpreter = tflite_model.interpreter(content, shapes, threads=2, preserve=True)
        computed = [t for i in ops for t in graph.ops[i].outputs if t >= 0]
        # an op that runs in its input's buffer (e.g. ADD) leaves its output there: such inputs are not kept
        spans = {}
        for t in set(computed) | set(frontier):
            try:
                spans[t] = tflite_model.data_span(interpreter, index[t])
            except ValueError:  # no buffer of its own
                spans[t] = None
        overwritten = set()
        for i in ops:
            outs = [spans.get(o) for o in graph.ops[i].outputs if o >= 0]
            for t in graph.ops[i].inputs:
                own = spans.get(t)
                if own is not None and own[1] and any(o is not None and o[0] == own[0] for o in outs):
                    overwritten.add(t)
        readable = [t for t in computed if spans.get(t) is not None and t not in overwritten]
        per_sample = sum(span[1] for span in spans.values() if span is not None)
        chunk = min(self.count, max(1, BATCH_BYTES // max(1, per_sample))) if self.batch else 1
        batched = _batched(content, [index[t] for t in frontier], [index[t] for t in readable], interpreter, shapes,
                           chunk) if chunk > 1 else None
        if batched is not None:
            interpreter = batched
            self.batched += 1
        else:
            chunk = 1
        found = dict((t, []) for t in readable)
        details = interpreter.get_input_details()
        for start in range(0, self.count, chunk):
            picks = [min(k, self.count - 1) for k in range(start, start + chunk)]  # the last chunk padded
            for detail, t in zip(details, frontier):
                values = self.kept[t]
                interpreter.set_tensor(detail["index"], values[start] if chunk == 1 else
                                       np.concatenate([values[k] for k in picks]))
            interpreter.invoke()
            for t in readable:
                view = interpreter.tensor(index[t])()
                for row in range(min(chunk, self.count - start)):
                    found[t].append(np.array(view[row:row + 1]) if chunk > 1 else np.array(view))
                del view
        del interpreter
        missing = [t for t in targets if t not in found]
        if missing:
            raise ValueError("tensors %s cannot be read after the run" % missing)
        self.kept.update(found)
        self.passes += 1
        self.ops_run += len(ops)


def _batched(content, frontier, readable, single, shapes, chunk):
    """An interpreter of the sub-model ``content`` whose inputs take ``chunk`` samples at once, or None when
    one of its tensors would not hold one row per sample (``single``: the one-sample interpreter, whose
    shapes must be (1, ...) and become (chunk, ...)) or it cannot be prepared so."""
    expected = {}
    for t in list(frontier) + list(readable):
        shape = list(single.tensor(t)().shape)
        if not shape or shape[0] != 1:
            return None
        expected[t] = [chunk] + shape[1:]
    try:
        interpreter = tflite_model.interpreter(content, [[chunk] + list(shape[1:]) for shape in shapes], threads=2,
                                               preserve=True)
    except (RuntimeError, ValueError):
        return None
    for t, shape in expected.items():
        view = interpreter.tensor(t)()
        same = list(view.shape) == shape
        del view
        if not same:
            return None
    return interpreter


def correct(int8_content, float_model, samples, log=None, full=False, shrinking=True, batch=True):
    """``int8_content`` (a full-integer TFLite model, bytes) with its linear layers' int32 biases corrected
    layer by layer so that each layer's output mean matches ``float_model``'s (the float TFLite model it was
    quantized from, bytes: the equalized one for ``cle``), measured on ``samples`` (each a list of float
    arrays in the model's input order). Returns (bytes, details): details is JSON-able (layers corrected,
    sub-model runs, seconds, mean and largest |correction| in output LSB, channels that fell back to the
    clipped mean, channels left alone). ``full=True`` runs the naive schedule (a whole-model pass per layer:
    the same result); ``shrinking=False`` applies the raw means (``shrink``).

    What can go wrong: a model whose linear ops differ from the float model's (``linear_pairs`` None) or
    that has control-flow subgraphs raises ValueError; the search then skips the candidate."""
    log = log or (lambda message: None)
    started = time.perf_counter()
    own = unshare(int8_content, bias_correction.bias_tensors(Graph(bytearray(int8_content))))
    content = bytearray(own)
    graph = Graph(content)
    float_graph = Graph(bytearray(float_model))
    pairs = linear_pairs(float_graph, graph)
    if pairs is None:
        raise ValueError("the int8 model's linear ops differ from the float model's")
    int8_runner = Runner(bytes(content), samples, full=full, batch=batch)
    float_runner = Runner(float_model, samples, batch=batch)
    layers = []
    for float_op, op in pairs:
        b_index = LINEAR_OPS[op.name][1]
        if len(op.inputs) <= b_index or op.inputs[b_index] < 0 or graph.dtypes[op.inputs[b_index]] != 2:
            continue
        b, out, float_out = op.inputs[b_index], op.outputs[0], float_op.outputs[0]
        out_quant, bias_quant = graph.quantization(out), graph.quantization(b)
        if out_quant is None or bias_quant is None or graph.dtypes[out] != 9:
            continue
        quantized = np.stack(int8_runner.values([out])[0]).astype(np.int64)
        reference = np.stack(float_runner.values([float_out])[0]).astype(np.float64)
        if quantized.size != reference.size:
            continue
        mean, standard_error, fallback = mean_error(quantized.reshape(reference.shape), reference, out_quant,
                                                    op.activation)
        error = shrink(mean, standard_error) if shrinking else mean
        if error.size != bias_quant[0].size and bias_quant[0].size != 1:
            continue
        view = graph.values(b)
        before = view.copy()
        bias_correction.correct(graph, {b: (error, None)})
        int8_runner.set_values(b, view)
        int8_runner.forget(_descendants(graph, op))
        int8_runner.evict(op.index)
        float_runner.evict(float_op.index)
        scale = float(out_quant[0][0])
        steps = np.abs(error) / scale
        layers.append({"op": op.index, "name": op.name, "channels": int(error.size),
                       "mean_abs_lsb": round(float(steps.mean()), 3), "max_abs_lsb": round(float(steps.max()), 3),
                       "clipped_mean_channels": int(fallback),
                       "undetermined_channels": int(np.count_nonzero(error == 0)),
                       "changed": int(np.count_nonzero(view != before))})
    details = {"layers": len(layers), "schedule": "naive" if full else "sub-models",
               "int8_runs": int8_runner.passes, "int8_ops_run": int8_runner.ops_run,
               "int8_runs_batched": int8_runner.batched,
               "int8_ops": len(graph.ops), "samples": len(samples),
               "mean_abs_lsb": round(float(np.mean([row["mean_abs_lsb"] for row in layers])), 3) if layers else 0.0,
               "seconds": round(time.perf_counter() - started, 2), "per_layer": layers}
    log("ebias: %d layers corrected in %.1f s (%d int8 runs of %d ops in all, model of %d ops)" % (
        len(layers), details["seconds"], int8_runner.passes, int8_runner.ops_run, len(graph.ops)))
    return bytes(content), details


def mean_error(quantized, reference, quant, activation):
    """(per-channel mean of int8 output - float output over the positions neither clips, in real units;
    its standard error; how many channels fell back to the mean over all positions). ``quantized``: raw
    int8 outputs, one row per sample; ``reference``: float outputs of the same shape (channels last);
    ``quant``: the output's (scales, zero points, axis); ``activation``: the op's fused activation name.
    The standard error is taken over samples (each sample's own mean: positions in one sample are not
    independent draws)."""
    scale, zero = float(quant[0][0]), int(quant[1][0])
    low, high = _CLIPS.get(activation, (-np.inf, np.inf))
    q_low = max(-128, zero + int(np.round(low / scale))) if np.isfinite(low) else -128
    q_high = min(127, zero + int(np.round(high / scale))) if np.isfinite(high) else 127
    samples, channels = reference.shape[0], reference.shape[-1]
    q = quantized.reshape(samples, -1, channels)
    f = reference.reshape(samples, -1, channels)
    difference = (q - zero) * scale - f
    linear = (q > q_low) & (q < q_high) & (f > (q_low - zero) * scale) & (f < (q_high - zero) * scale)
    counts = linear.sum(axis=1)  # (samples, channels)
    sums = np.where(linear, difference, 0.0).sum(axis=1)
    fallback = counts.sum(axis=0) < MIN_LINEAR
    mean = np.where(fallback, difference.mean(axis=(0, 1)), sums.sum(axis=0) / np.maximum(counts.sum(axis=0), 1))
    per_sample = np.where(fallback[None, :], difference.mean(axis=1), sums / np.maximum(counts, 1))
    seen = np.where(fallback[None, :], True, counts > 0)
    n = seen.sum(axis=0)
    spread = np.sqrt(np.where(seen, (per_sample - mean[None, :]) ** 2, 0.0).sum(axis=0) / np.maximum(n - 1, 1))
    error = np.where(n > 1, spread / np.sqrt(np.maximum(n, 1)), np.inf)
    return mean, error, int(fallback.sum())


def shrink(mean, error):
    """The correction to apply: ``mean`` shrunk towards 0 by its standard error (positive-part James-Stein
    factor 1 - (se / mean)^2): a mean the samples do not determine (|mean| <= se, e.g. a classifier's few
    outputs seen once per sample) is not corrected, a well-determined one nearly fully."""
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = np.clip(1.0 - (error / np.abs(mean)) ** 2, 0.0, 1.0)
    return np.where(np.isfinite(factor), factor, 0.0) * mean


def _descendants(graph, op):
    """The tensors computed from ``op``'s outputs (its outputs included)."""
    found, stack = set(), [t for t in op.outputs if t >= 0]
    while stack:
        t = stack.pop()
        if t in found:
            continue
        found.add(t)
        for consumer in graph.consumers.get(t, []):
            stack.extend(o for o in consumer.outputs if o >= 0)
    return found


def _quantize(x, graph, t):
    """A float sample as input tensor ``t`` takes it (the probe's rounding: ``statistics.run``)."""
    dtype = {0: np.float32, 9: np.int8, 3: np.uint8, 7: np.int16}.get(graph.dtypes[t], np.float32)
    quant = graph.quantization(t)
    if np.dtype(dtype).kind == "f" or quant is None or not quant[0][0]:
        return x.astype(dtype)
    info = np.iinfo(dtype)
    return np.clip(np.round(x / quant[0][0] + quant[1][0]), info.min, info.max).astype(dtype)
