"""A TFLite model as the recovery rewrites see it: ops, tensors and writable views of their values.

For whom: the accuracy-recovery rewrites (``converters.tf2.recovery``); ``tf2`` environment only.
``Graph(bytearray)`` reads a float, calibrated or quantized TFLite flatbuffer with TensorFlow's own
schema and gives numpy **views into the bytearray**: writing a weight, a bias or a calibrated min/max
through them edits the model in place. Every rewrite here changes values only, never sizes, so the
flatbuffer is never rebuilt and everything else in it (names, op order, metadata) stays byte for byte.

What can go wrong: a model of several subgraphs is read from its first (main) subgraph only; a buffer
shared by several tensors is reported by ``shared_buffer`` so that a rewrite can leave it alone.
"""

import numpy as np

from converters.tf2 import tflite_model

# op name -> (weights input, bias input, weights' output-channel axis, weights' input-channel axis)
LINEAR_OPS = {
    "CONV_2D": (1, 2, 0, 3),
    "DEPTHWISE_CONV_2D": (1, 2, 3, None),  # [1, H, W, C*M]: output channel k reads input channel k // M
    "FULLY_CONNECTED": (1, 2, 0, 1),
}
ACTIVATIONS = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH", 5: "SIGN_BIT"}
_DTYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 9: np.int8, 7: np.int16}


class Op(object):
    """One operator: ``name`` (builtin name), ``inputs``/``outputs`` (tensor indices), ``activation``
    (the fused activation's name or None), ``depth_multiplier`` (depthwise only)."""

    def __init__(self, index, name, inputs, outputs, activation=None, depth_multiplier=1, window=None):
        self.window = window  # convolutions: {padding: "SAME"|"VALID", stride: (h, w), dilation: (h, w)}
        self.index = index
        self.name = name
        self.inputs = inputs
        self.outputs = outputs
        self.activation = activation
        self.depth_multiplier = depth_multiplier

    def __repr__(self):
        return "Op(%d %s %s->%s %s)" % (self.index, self.name, self.inputs, self.outputs, self.activation)


class Graph(object):
    """The main subgraph of ``content`` (a bytearray, edited in place through the views)."""

    def __init__(self, content):
        if not isinstance(content, bytearray):
            raise TypeError("Graph edits in place: give it a bytearray")
        self.content = content
        schema = tflite_model.schema()
        self._schema = schema
        self._model = schema.Model.GetRootAsModel(content, 0)
        self._graph = self._model.Subgraphs(0)
        graph = self._graph
        self.inputs = [int(i) for i in graph.InputsAsNumpy()]
        self.outputs = [int(i) for i in graph.OutputsAsNumpy()]
        self.tensor_names = []
        self.shapes = []
        self.dtypes = []
        self.buffers = []
        for t in range(graph.TensorsLength()):
            tensor = graph.Tensors(t)
            self.tensor_names.append(tensor.Name().decode("utf-8", "replace"))
            self.shapes.append([int(d) for d in tensor.ShapeAsNumpy()] if tensor.ShapeLength() else [])
            self.dtypes.append(tensor.Type())
            self.buffers.append(tensor.Buffer())
        self._buffer_users = {}
        for t, b in enumerate(self.buffers):
            self._buffer_users[b] = self._buffer_users.get(b, 0) + 1
        self.ops = []
        for o in range(graph.OperatorsLength()):
            operator = graph.Operators(o)
            name = tflite_model.operator_name(schema, self._model, operator.OpcodeIndex())
            inputs = [int(i) for i in operator.InputsAsNumpy()] if operator.InputsLength() else []
            outputs = [int(i) for i in operator.OutputsAsNumpy()] if operator.OutputsLength() else []
            activation, multiplier, window = self._options(operator, name)
            self.ops.append(Op(o, name, inputs, outputs, activation, multiplier, window))
        self.producer = {}
        self.consumers = {}
        for op in self.ops:
            for t in op.outputs:
                self.producer[t] = op
            for t in op.inputs:
                if t >= 0:
                    self.consumers.setdefault(t, []).append(op)

    def _options(self, operator, name):
        schema = self._schema
        table = operator.BuiltinOptions()
        if table is None:
            return None, 1, None
        kinds = {"CONV_2D": schema.Conv2DOptions, "DEPTHWISE_CONV_2D": schema.DepthwiseConv2DOptions,
                 "FULLY_CONNECTED": schema.FullyConnectedOptions, "ADD": schema.AddOptions,
                 "MAX_POOL_2D": schema.Pool2DOptions, "AVERAGE_POOL_2D": schema.Pool2DOptions}
        kind = kinds.get(name)
        if kind is None:
            return None, 1, None
        options = kind()
        options.Init(table.Bytes, table.Pos)
        activation = ACTIVATIONS.get(options.FusedActivationFunction(), "OTHER") \
            if hasattr(options, "FusedActivationFunction") else None
        multiplier = options.DepthMultiplier() if hasattr(options, "DepthMultiplier") else 1
        window = None
        if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            window = {"padding": "SAME" if options.Padding() == schema.Padding.SAME else "VALID",
                      "stride": (int(options.StrideH()), int(options.StrideW())),
                      "dilation": (int(options.DilationHFactor() or 1), int(options.DilationWFactor() or 1))}
        return activation, max(1, int(multiplier or 1)), window

    # ------------------------------------------------------------------------------------------ values

    def is_constant(self, t):
        buffer = self._model.Buffers(self.buffers[t])
        return buffer is not None and buffer.DataLength() > 0

    def shared_buffer(self, t):
        """True when another tensor reads the same (non-empty) buffer: editing it would edit both."""
        return self._buffer_users.get(self.buffers[t], 0) > 1

    def values(self, t):
        """A writable view of constant tensor ``t``'s values in its dtype and shape (into ``content``)."""
        buffer = self._model.Buffers(self.buffers[t])
        if buffer is None or buffer.DataLength() == 0:
            raise ValueError("tensor %d (%s) has no constant data" % (t, self.tensor_names[t]))
        raw = buffer.DataAsNumpy()
        dtype = _DTYPES.get(self.dtypes[t])
        if dtype is None:
            raise ValueError("tensor %d has an unsupported type %d" % (t, self.dtypes[t]))
        return raw.view(dtype).reshape(self.shapes[t])

    def quantization(self, t):
        """(scales, zero_points, quantized_dimension) of tensor ``t`` or None (numpy copies)."""
        quant = self._graph.Tensors(t).Quantization()
        if quant is None or not quant.ScaleLength():
            return None
        return (quant.ScaleAsNumpy().astype(np.float64), quant.ZeroPointAsNumpy().astype(np.int64),
                int(quant.QuantizedDimension()))

    def range_views(self, t):
        """(min, max) writable views of tensor ``t``'s calibrated range, or None."""
        quant = self._graph.Tensors(t).Quantization()
        if quant is None or not quant.MinLength() or not quant.MaxLength():
            return None
        return quant.MinAsNumpy(), quant.MaxAsNumpy()

    # ----------------------------------------------------------------------------------------- lookups

    def index_by_name(self):
        """{tensor name: index} (the first tensor of each name)."""
        found = {}
        for t, name in enumerate(self.tensor_names):
            found.setdefault(name, t)
        return found

    def activation_tensors(self):
        """Float tensors that ops compute (not constants), in op order, without duplicates."""
        seen = []
        for op in self.ops:
            for t in op.outputs:
                if t >= 0 and self.dtypes[t] == 0 and t not in seen:
                    seen.append(t)
        return seen

    def op_signature(self):
        """The op names in order: two models with the same signature run the same ops."""
        return [op.name for op in self.ops]


def linear_pairs(float_graph, quantized_graph):
    """[(float op, quantized op)] of the linear ops (CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED) of a float
    or calibrated model and of its quantization, matched by position: the quantizer keeps the ops and their
    order (it only adds QUANTIZE / DEQUANTIZE at float I/O) but may rename tensors (biases become
    ``arith.constant<N>``). None when the two do not have the same linear ops in the same order."""
    first = [op for op in float_graph.ops if op.name in LINEAR_OPS]
    second = [op for op in quantized_graph.ops if op.name in LINEAR_OPS]
    if [op.name for op in first] != [op.name for op in second]:
        return None
    return list(zip(first, second))


def unshare(content, tensors):
    """``content`` (bytes) with each of ``tensors`` (indices into the main subgraph) given a buffer of its
    own where it shares one (the quantizer shares equal constants: every all-zero bias of a model
    reads one buffer). Rebuilt through TensorFlow's flatbuffer object API (the only rewrite here that
    changes sizes); returns ``content`` unchanged when nothing is shared."""
    graph = Graph(bytearray(content))
    shared = [t for t in tensors if graph.shared_buffer(t)]
    if not shared:
        return content
    import copy

    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytes(content))
    subgraph = model.subgraphs[0]
    for t in shared:
        tensor = subgraph.tensors[t]
        model.buffers.append(copy.deepcopy(model.buffers[tensor.buffer]))
        tensor.buffer = len(model.buffers) - 1
    return flatbuffer_utils.convert_object_to_bytearray(model)


def _quantized_linear_ops(graph):
    """The linear ops whose weights are int8 constants, in op order (a debug model's float copies left out)."""
    found = []
    for op in graph.ops:
        if op.name not in LINEAR_OPS:
            continue
        w = op.inputs[LINEAR_OPS[op.name][0]]
        if w >= 0 and graph.dtypes[w] == 9 and graph.is_constant(w):
            found.append(op)
    return found


def transplant(target, source):
    """``target`` (bytes: another quantization of the model ``source`` was quantized from, e.g. the layer
    debugger's instrumented model) with the int8 weights and int32 biases of ``source``'s linear ops
    (bytes: the written int8 file, whose rewrites - bias, ebias, gptq - edit only those values). The ops
    are matched by position among the linear ops with int8 weights; a tensor is copied only when its dtype,
    shape and scales are the same on both sides. Returns (bytes, {"copied": n, "changed": n, "skipped":
    [reasons]}): ``changed`` counts the tensors whose values differed; no copy at all (skipped says why)
    when the two do not have the same quantized linear ops."""
    source_graph = Graph(bytearray(source))
    target_graph = Graph(bytearray(target))
    first, second = _quantized_linear_ops(source_graph), _quantized_linear_ops(target_graph)
    if [op.name for op in first] != [op.name for op in second]:
        return target, {"copied": 0, "changed": 0,
                        "skipped": ["the two models do not have the same quantized linear ops (%d and %d)"
                                    % (len(first), len(second))]}
    pairs = []
    for a, b in zip(first, second):
        for position in LINEAR_OPS[a.name][:2]:
            if position < len(a.inputs) and position < len(b.inputs) and min(a.inputs[position],
                                                                            b.inputs[position]) >= 0:
                pairs.append((a.inputs[position], b.inputs[position]))
    report = {"copied": 0, "changed": 0, "skipped": []}
    copies = []
    for s, t in pairs:
        name = target_graph.tensor_names[t]
        if not (source_graph.is_constant(s) and target_graph.is_constant(t)):
            report["skipped"].append("%s: not a constant on both sides" % name)
            continue
        same = (source_graph.dtypes[s] == target_graph.dtypes[t] and source_graph.shapes[s] == target_graph.shapes[t])
        qs, qt = source_graph.quantization(s), target_graph.quantization(t)
        same = same and (qs is None) == (qt is None) and (qs is None or (
            qs[0].shape == qt[0].shape and np.array_equal(qs[0], qt[0]) and np.array_equal(qs[1], qt[1])))
        if not same:
            report["skipped"].append("%s: another dtype, shape or scale" % name)
            continue
        report["copied"] += 1
        if not np.array_equal(target_graph.values(t), source_graph.values(s)):
            copies.append((s, t))
    report["changed"] = len(copies)
    if not copies:
        return target, report
    # a changed tensor that shares its buffer (equal constants) gets its own first; the rest is edited in place
    graph = Graph(bytearray(unshare(target, [t for _, t in copies])))
    for s, t in copies:
        graph.values(t)[...] = source_graph.values(s)
    return bytes(graph.content), report
