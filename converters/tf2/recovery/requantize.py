"""Plain's int8 model for other calibration ranges without running the quantizer again.

For whom: the search (``converters.tf2.recovery.search``), which needs plain's int8 model once per fold:
the same float model quantized with each fold's ranges. TensorFlow's ``mlir_quantize`` takes ~2 s a call on
ResNet50 and holds the GIL (issue 31); when only the ranges change, what it writes differently is known:
each activation's scale and zero point (from its range, or from a neighbour's where the quantizer makes
an op keep one scale: concatenation, pooling, reshape), and each int32 bias (its float value over the
input's scale times the weights'). The weights do not depend on the ranges.

How: a ``Template`` is learned from one quantization the quantizer made (``calibrated`` -> ``quantized``):
for every quantized activation, the calibrated tensor whose range gives exactly its scale and zero point
(its own first, then its neighbours nearest first), or "fixed" (softmax, logistic, tanh and what keeps
their scale); for every bias, its float values and the two scales it is divided by. A model the template
cannot explain exactly (an activation no range reproduces, a per-channel activation, a bias that is not
reproduced bit for bit, several subgraphs) raises ``Unexplained``: the caller quantizes as before.
``apply`` writes another fit's scales, zero points and biases into a copy of the quantized model, in
place (no size changes). The search checks the template once against the quantizer (``Requantizer``:
the second base it quantizes both ways, byte for byte) before it uses it instead of the quantizer.

What can go wrong: nothing silently: a template that did not reproduce the quantizer's bytes is never
used, and the quantizer then runs for every fit.
"""

import numpy as np

from converters.tf2.recovery.graph import LINEAR_OPS, Graph, linear_pairs

FIXED_OUTPUT = ("LOGISTIC", "SOFTMAX", "TANH", "LOG_SOFTMAX")  # the quantizer fixes their output scale
QMIN, QMAX = -128, 127
NEIGHBOUR_DEPTH = 4  # how far (ops) a scale is looked for: concatenation's inputs take its output's


class Unexplained(ValueError):
    """The template cannot say how the quantizer would quantize this model for other ranges."""


def activation_params(low, high):
    """(float32 scale, zero point) the quantizer gives the range [low, high] (int8, asymmetric, not narrow):
    MLIR's ``fakeQuantAttrsToType`` as TFLite's post-training quantization calls it (``legacy_float_scale``:
    in float32): the range widened to hold 0, the zero point taken from the end whose estimate is nearer
    and rounded half away from zero."""
    f = np.float32
    low, high = min(f(low), f(0.0)), max(f(high), f(0.0))
    if abs(float(high) - float(low)) < np.finfo(np.float64).eps:
        return f(1.0), 0
    scale = f(f(high - low) / f(QMAX - QMIN))
    from_min = f(f(QMIN) - f(low / scale))
    from_max = f(f(QMAX) - f(high / scale))
    min_error = f(f(abs(QMIN)) + abs(f(low / scale)))
    max_error = f(f(abs(QMAX)) + abs(f(high / scale)))
    zero = from_min if min_error < max_error else from_max
    if zero < QMIN:
        return scale, QMIN
    if zero > QMAX:
        return scale, QMAX
    return scale, int(_round_away(np.array([zero], np.float32))[0])


def _round_away(values):
    return np.sign(values) * np.floor(np.abs(values) + 0.5)


def bias_values(float_bias, input_scale, weight_scales):
    """(int32 values, float32 scales) of a bias as TFLite's quantizer writes it (its legacy float path,
    ``SymmetricPerChannelBiasQuantize``): each channel's scale the input's times its weights' in float32,
    and each float32 bias times the scale's float32 inverse, rounded half away from zero (checked bit for
    bit whenever a template is learned)."""
    f = np.float32
    scales = (f(input_scale) * np.asarray(weight_scales, f)).astype(f)
    quantized = _round_away((np.asarray(float_bias, f) * (f(1.0) / scales).astype(f)).astype(f).astype(np.float64))
    if np.any(np.abs(quantized) > 2 ** 30):  # near int32's end the quantizer adjusts the weights' scales
        raise Unexplained("a bias is within a factor 2 of int32's range: the quantizer may adjust scales")
    return quantized.astype(np.int32), scales


def _params(graph, t):
    quant = graph.quantization(t)
    if quant is None:
        return None
    return np.float32(quant[0][0]), int(quant[1][0]), len(quant[0])


def _neighbours(graph, t):
    """Tensors reachable from ``t`` through the ops that produce or read it, nearest first (non-constant)."""
    seen, order, frontier = {t}, [], [t]
    for _ in range(NEIGHBOUR_DEPTH):
        following = []
        for u in frontier:
            ops = ([graph.producer[u]] if u in graph.producer else []) + graph.consumers.get(u, [])
            for op in ops:
                for v in op.inputs + op.outputs:
                    if v >= 0 and v not in seen and not graph.is_constant(v):
                        seen.add(v)
                        order.append(v)
                        following.append(v)
        frontier = following
    return order


def _ranges(calibrated_graph):
    """{tensor name: (min, max)} of the calibrated model's per-tensor ranges; Unexplained when two ranged
    tensors share a name (the template finds tensors by name: the quantizer renumbers them)."""
    ranges = {}
    for t, name in enumerate(calibrated_graph.tensor_names):
        views = calibrated_graph.range_views(t)
        if views is None:
            continue
        if name in ranges:
            raise Unexplained("two calibrated tensors are named %r" % name)
        ranges[name] = (np.float32(views[0][0]), np.float32(views[1][0])) if len(views[0]) == 1 else None
    return dict((name, value) for name, value in ranges.items() if value is not None)


class Template(object):
    """What plain's quantization of a model does with its ranges (module docstring)."""

    def __init__(self, calibrated, quantized):
        calibrated_graph = Graph(bytearray(calibrated))
        graph = Graph(bytearray(quantized))
        if graph._model.SubgraphsLength() != 1:
            raise Unexplained("the model has several subgraphs")
        ranges = _ranges(calibrated_graph)
        self.activations = []  # (quantized tensor, calibrated tensor name) ; name None: fixed scale
        biases = {}
        for op in graph.ops:
            if op.name in LINEAR_OPS and len(op.inputs) > 2 and op.inputs[2] >= 0:
                biases[op.inputs[2]] = op
        for t in range(len(graph.tensor_names)):
            params = _params(graph, t)
            if params is None or graph.dtypes[t] not in (9,):  # int8 tensors only (int32 biases below)
                if params is not None and graph.dtypes[t] == 2 and t not in biases:
                    raise Unexplained("an int32 tensor %r is not a bias" % graph.tensor_names[t])
                continue
            if graph.is_constant(t):
                continue  # weights and other int8 constants: their scale is their values', not a range's
            if params[2] != 1:
                raise Unexplained("activation %r is quantized per channel" % graph.tensor_names[t])
            self.activations.append((t, self._source(graph, t, params[:2], ranges)))
        self.biases = []  # (bias tensor, float values, input tensor, weight tensor)
        pairs = linear_pairs(calibrated_graph, graph)  # the quantizer keeps the linear ops in order
        float_ops = dict((q.index, f) for f, q in pairs or [])
        for t, op in sorted(biases.items()):
            if graph.dtypes[t] != 2 or _params(graph, t) is None:
                continue
            name = graph.tensor_names[t]
            float_bias = self._float_bias(calibrated_graph, graph, float_ops.get(op.index), t)
            x, w = op.inputs[0], op.inputs[1]
            scale_x, scale_w = graph.quantization(x), graph.quantization(w)
            if scale_x is None or scale_w is None:
                raise Unexplained("bias %r: its input or weights are not quantized" % name)
            values, scales = bias_values(float_bias, scale_x[0][0], scale_w[0])
            if not (np.array_equal(values, graph.values(t).reshape(-1)) and
                    np.array_equal(scales, graph.quantization(t)[0].astype(np.float32))):
                raise Unexplained("bias %r is not reproduced bit for bit" % name)
            self.biases.append((t, float_bias, x, w))

    @staticmethod
    def _source(graph, t, params, ranges):
        name = graph.tensor_names[t]
        candidates = [t] + _neighbours(graph, t)
        for u in candidates:
            other = graph.tensor_names[u]
            if other in ranges and activation_params(*ranges[other]) == params:
                return other
        for u in candidates:
            if u in graph.producer and graph.producer[u].name in FIXED_OUTPUT and _params(graph, u)[:2] == params:
                return None
        raise Unexplained("no calibrated range gives activation %r its scale" % name)

    @staticmethod
    def _float_bias(calibrated_graph, graph, float_op, t):
        """The float bias the quantizer rounded: the bias of ``float_op``, the calibrated model's linear op
        paired with the bias's (``graph.linear_pairs``; the quantizer renames some constants)."""
        if float_op is None or len(float_op.inputs) < 3 or float_op.inputs[2] < 0:
            raise Unexplained("bias %r has no float counterpart" % graph.tensor_names[t])
        values = np.array(calibrated_graph.values(float_op.inputs[2]), np.float32).reshape(-1)
        if values.shape != graph.values(t).reshape(-1).shape:
            raise Unexplained("bias %r has another length in the float model" % graph.tensor_names[t])
        return values

    def apply(self, quantized, calibrated):
        """``quantized`` (bytes, the model the template was learned from) with the scales, zero points and
        biases that ``calibrated`` (the same float model with other ranges) gives: bytes."""
        ranges = _ranges(Graph(bytearray(calibrated)))
        graph = Graph(bytearray(quantized))
        model_graph = graph._graph
        for t, source in self.activations:
            if source is None:
                continue
            if source not in ranges:
                raise Unexplained("the new calibration has no range for %r" % source)
            scale, zero = activation_params(*ranges[source])
            quant = model_graph.Tensors(t).Quantization()
            quant.ScaleAsNumpy()[0] = scale
            quant.ZeroPointAsNumpy()[0] = zero
        written = {}
        for t, float_bias, x, w in self.biases:
            values, scales = bias_values(float_bias, graph.quantization(x)[0][0], graph.quantization(w)[0])
            buffer = graph.buffers[t]
            if buffer in written and not np.array_equal(written[buffer], values):
                raise Unexplained("two biases share a buffer and would differ")
            written[buffer] = values
            graph.values(t).reshape(-1)[:] = values
            model_graph.Tensors(t).Quantization().ScaleAsNumpy()[:] = scales
        return bytes(graph.content)


class Requantizer(object):
    """``quantize(calibrated, key)`` for the search: the quantizer's own call (``quantize``), or, for plain's
    base (``key`` ``()``: the float model's weights, min/max ranges of some of the samples), plain's template
    once it has reproduced the quantizer byte for byte. Other bases always take the quantizer: equalization
    changes the weights, and a range method (mse, percentile) breaks relations that min/max ranges keep
    (a padding's range is its input's) and on which the template may rely unseen.

    The first such base quantized (the search quantizes the fit on all samples first: its file is written)
    teaches the template; the second is quantized both ways and compared byte for byte; from the third on
    the template writes the model, unless it was refused. ``record``: report.json's
    ``quantization.requantize`` (what was learned, checked and used, or why not)."""

    def __init__(self, quantize):
        self.quantize = quantize
        self.template = None
        self.source = None
        self.state = "learn"
        self.record = {"quantizer_calls": 0, "templated": 0}

    def _quantizer(self, calibrated):
        self.record["quantizer_calls"] += 1
        return self.quantize(calibrated)

    def _refuse(self, reason):
        self.state = "off"
        self.template = self.source = None
        self.record["refused"] = reason

    def __call__(self, calibrated, key=()):
        if tuple(key) != () or self.state == "off":
            return self._quantizer(calibrated)
        if self.state == "learn":
            quantized = self._quantizer(calibrated)
            try:
                self.template = Template(calibrated, quantized)
            except Exception as exc:  # noqa: BLE001 - Unexplained, or a model it misreads: the quantizer
                self._refuse("the template cannot explain this model: %s" % exc)
                return quantized
            self.source, self.state = quantized, "check"
            return quantized
        if self.state == "check":
            quantized = self._quantizer(calibrated)
            try:
                same = self.template.apply(self.source, calibrated) == quantized
            except Exception as exc:  # noqa: BLE001
                self._refuse("the template cannot write the second fit: %s" % exc)
                return quantized
            if not same:
                self._refuse("the template's model differs from the quantizer's on the second fit")
            else:
                self.state = "use"
                self.record["checked"] = "the second fit quantized both ways: byte for byte equal"
            return quantized
        try:
            written = self.template.apply(self.source, calibrated)
        except Exception as exc:  # noqa: BLE001 - this fit only (e.g. no range for a tensor): the quantizer
            self.record.setdefault("quantizer_for", []).append(str(exc)[:200])
            return self._quantizer(calibrated)
        self.record["templated"] += 1
        return written
