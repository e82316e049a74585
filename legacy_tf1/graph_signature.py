"""Finding a TF 1.x graph's signature: its named inputs and outputs, and the placeholders that inference
fixes (training switches, dropout keep probabilities, placeholders with defaults).

For whom: ``python -m legacy_tf1 inspect-graph`` (``inspect``: the host's preflight read, in tf1.15) and
``legacy_tf1.graph_resave`` (``discover``); Python 3.7, TF 1.13 / 1.15. What can go wrong: ``UsageError``
paragraphs naming the candidate inputs (several candidates without ``--inputs``, a name not in the graph,
a dynamic dimension other than the batch without a shape), and what ``legacy_tf1.graph_sources`` raises.
"""

from converters.errors import UsageError
from legacy_tf1 import compat
from legacy_tf1.graph_sources import import_graph, infer_origin, read_source

tf = compat.tf

# Placeholders that switch a graph between training and inference (by the last part of their name).
TRAINING_SWITCH_NAMES = ("keras_learning_phase", "is_training", "training", "is_train", "phase_train",
                         "train_phase", "phase", "train", "learning_phase", "mode")
KEEP_PROB_NAMES = ("keep_prob", "keep_probability", "dropout_keep_prob", "keep_rate")
# Sink ops that are never model outputs.
NOT_OUTPUT_OPS = ("NoOp", "Assert", "Print", "PrintV2", "SaveV2", "Save", "SaveSlices", "RestoreV2", "Restore",
                  "MergeSummary", "ScalarSummary", "HistogramSummary", "ImageSummary", "AudioSummary",
                  "TensorSummary", "TensorSummaryV2", "WriteSummary", "VariableV2", "Variable", "VarHandleOp",
                  "Const", "Placeholder", "PlaceholderWithDefault", "IsVariableInitialized",
                  "ReportUninitializedVariables", "AssignVariableOp", "ShardedFilename", "StringJoin",
                  "MergeV2Checkpoints")
NOT_OUTPUT_PREFIXES = ("Assign", "Apply", "ResourceApply", "ScatterAdd", "ScatterSub", "ScatterUpdate")
NOT_OUTPUT_SCOPES = ("save", "gradients", "train", "optimizer", "summaries", "summary", "init",
                     "report_uninitialized_variables", "global_step", "Adam", "Momentum", "RMSProp", "GradientDescent",
                     "metrics", "loss", "losses")


def parse_names(text):
    """``--inputs`` / ``--outputs`` text into ``[(name, shape or None)]`` (``converters.preflight_options``' syntax)."""
    from converters import preflight_options

    return preflight_options.parse_tensor_list(text, "--inputs") if text else []


def _tensor_name(name):
    return name if ":" in name else name + ":0"


def _is_training_switch(op):
    base = op.name.split("/")[-1].lower()
    dtype = op.get_attr("dtype")
    if dtype == tf.bool:
        return "bool"
    if not dtype.is_floating or _rank(op) not in (0, None):
        return None
    if base in KEEP_PROB_NAMES:
        return "keep_prob"
    return _dropout_role(op)


# scalar arithmetic a keep probability goes through before it reaches the dropout mask (1 - keep_prob, ...)
SCALAR_ARITHMETIC = ("Identity", "Snapshot", "StopGradient", "Cast", "Sub", "Add", "AddV2", "Mul", "RealDiv", "Div")
ADDS = ("Add", "AddV2")


def _from_uniform(tensor, depth=0):
    """Whether ``tensor`` is a ``RandomUniform``, possibly scaled and shifted (``random_ops.random_uniform``:
    ``RandomUniform * (max - min) + min``)."""
    op = tensor.op
    if op.type == "RandomUniform":
        return True
    if op.type in ADDS + ("Mul",) and depth < 3:
        return any(_from_uniform(t, depth + 1) for t in op.inputs)
    return False


def _dropout_role(op):
    """``"keep_prob"`` or ``"rate"`` when the scalar float placeholder ``op`` drives a ``tf.nn.dropout`` mask
    however it is named (the MNIST tutorials' ``keep_prob = tf.placeholder(tf.float32)`` is
    ``dropout/Placeholder``), else None. Found by structure: through scalar arithmetic to the mask of TF <= 1.13
    (``Floor(keep + uniform)``) or of TF 1.14+ (``GreaterEqual(uniform, rate)``); each ``1 - p`` on the way
    swaps keep probability and rate."""
    stack = [(op.outputs[0], 0, 0)]
    seen = set()
    while stack:
        tensor, flips, depth = stack.pop()
        if tensor.name in seen:
            continue
        seen.add(tensor.name)
        for consumer in tensor.consumers():
            others = [t for t in consumer.inputs if t is not tensor]
            if consumer.type in ADDS and any(c.type == "Floor" for t in consumer.outputs for c in t.consumers()) \
                    and any(_from_uniform(t) for t in others):
                return "keep_prob" if flips % 2 == 0 else "rate"
            if consumer.type == "GreaterEqual" and len(consumer.inputs) == 2 and consumer.inputs[1] is tensor \
                    and _from_uniform(consumer.inputs[0]):
                return "rate" if flips % 2 == 0 else "keep_prob"
            if consumer.type in SCALAR_ARITHMETIC and depth < 6:
                flip = 1 if consumer.type == "Sub" and consumer.inputs[1] is tensor else 0
                stack.extend((t, flips + flip, depth + 1) for t in consumer.outputs)
    return None


def _rank(op):
    try:
        shape = op.outputs[0].shape
        return None if shape.ndims is None else shape.ndims
    except (ValueError, AttributeError):
        return None


def _excluded_sink(op):
    if op.type in NOT_OUTPUT_OPS or op.type.startswith(NOT_OUTPUT_PREFIXES):
        return "a %s op" % op.type
    scope = op.name.split("/")[0]
    if scope in NOT_OUTPUT_SCOPES or scope.startswith(("gradients", "save_", "Adam", "train_")):
        return "in the %s scope (training, saving or summaries)" % scope
    if not op.outputs:
        return "no output"
    return None


def _ancestors(ops):
    seen = set()
    stack = list(ops)
    while stack:
        op = stack.pop()
        if op.name in seen:
            continue
        seen.add(op.name)
        stack.extend(t.op for t in op.inputs)
        stack.extend(op.control_inputs)
    return seen


def _spec_of(tensor, name, shape=None):
    dims = None if tensor.shape.ndims is None else [None if d is None else int(d) for d in tensor.shape.as_list()]
    return {"name": name, "tensor": tensor.name, "op": tensor.op.name, "dtype": tensor.dtype.base_dtype.name,
            "graph_shape": dims, "shape": shape or dims}


def discover(source, inputs_text=None, outputs_text=None):
    """The model signature of ``source``: ``{"inputs", "outputs", "fixed", "skipped_outputs", "graph"}``.

    Inputs are the SavedModel signature's inputs, else the ``Placeholder`` ops the outputs depend on, leaving
    out training switches (bool placeholders such as ``keras_learning_phase`` or ``is_training``, scalar
    ``keep_prob`` placeholders, a scalar float placeholder that drives a ``tf.nn.dropout`` mask whatever its
    name: ``_dropout_role``) and ``PlaceholderWithDefault`` ops, which are fixed to inference. Outputs are the
    signature's, else the graph's sink nodes that are not training, summary, save, init or variable-update
    ops (and, with ``inputs_text``, computable from those inputs). ``inputs_text`` (``--inputs
    NAME[:SHAPE],...``) and ``outputs_text`` (``--outputs NAME,...``) choose them.

    Each input: name, tensor, op, dtype, shape (batch first, ``None`` batch)
    and ``batch`` (a static batch size the graph demands, else None). ``fixed``: training placeholders and
    placeholders with defaults, with the value they take at inference."""
    graph = import_graph(source.graph_def)
    given_inputs = parse_names(inputs_text)
    given_outputs = [name for name, _ in parse_names(outputs_text)] if outputs_text else []
    placeholders = [op for op in graph.get_operations() if op.type in ("Placeholder", "PlaceholderWithDefault")]
    by_key = {}
    if source.signature is not None:
        for key, info in source.signature.inputs.items():
            by_key[key] = info.name
        out_keys = dict((key, info.name) for key, info in source.signature.outputs.items())
    else:
        out_keys = {}

    def resolve(name, what):
        tensor_name = by_key.get(name) or out_keys.get(name) or _tensor_name(name)
        try:
            return graph.get_tensor_by_name(tensor_name)
        except (KeyError, ValueError):
            listed = ", ".join(op.name for op in placeholders if op.type == "Placeholder") or "none"
            keys = (" signature %s: %s;" % ("inputs" if what == "--inputs" else "outputs",
                                            ", ".join(sorted(by_key if what == "--inputs" else out_keys))))\
                if source.signature is not None else ""
            raise UsageError("%s names %s, which is not a tensor of %s." % (what, name, source.path), step="preflight",
                             hint="Name tensors of the graph (op name or op:index).%s placeholders: %s."
                                  % (keys, listed))

    skipped = []
    # ------------------------------------------------------------------ outputs
    if given_outputs:
        outputs = [(name, resolve(name, "--outputs")) for name in given_outputs]
    elif source.signature is not None and source.signature.outputs:
        outputs = [(key, graph.get_tensor_by_name(source.signature.outputs[key].name))
                   for key in sorted(source.signature.outputs)]
    else:
        outputs = []
        for op in graph.get_operations():
            if any(t.consumers() for t in op.outputs) or op._control_outputs:  # noqa: SLF001 - no public API
                continue
            why = _excluded_sink(op)
            if why is None and not op.outputs[0].dtype.is_floating:
                why = "of dtype %s (not a float output)" % op.outputs[0].dtype.name
            if why is None and any(a.startswith(("gradients/", "save/")) for a in _ancestors([op])):
                why = "computed from gradients (training)"
            if why is None and not any(graph.get_operation_by_name(a).type == "Placeholder"
                                       for a in _ancestors([op])):
                why = "not computed from any placeholder"
            if why:
                if op.type not in ("Const", "NoOp") and op.outputs and op.outputs[0].dtype.is_floating:
                    skipped.append({"node": op.name, "why": why})  # the ones a reader may have expected
            else:
                outputs.append((op.name, op.outputs[0]))
    # ------------------------------------------------------------------ inputs
    needed = _ancestors([tensor.op for _, tensor in outputs])
    if given_inputs:
        inputs = [(name, resolve(name, "--inputs"), shape) for name, shape in given_inputs]
        given_ops = set(tensor.op.name for _, tensor, _ in inputs)
        if not given_outputs and source.signature is None:  # keep the outputs these inputs compute
            others = set(op.name for op in placeholders if op.type == "Placeholder" and op.name not in given_ops
                         and not _is_training_switch(op))
            kept = []
            for name, tensor in outputs:
                uses = others & _ancestors([tensor.op])
                if uses:
                    skipped.append({"node": name, "why": "needs placeholder(s) %s, not among --inputs"
                                                         % ", ".join(sorted(uses))})
                else:
                    kept.append((name, tensor))
            outputs = kept
            needed = _ancestors([tensor.op for _, tensor in outputs])
    elif source.signature is not None and source.signature.inputs:
        inputs = []
        for key in sorted(source.signature.inputs):
            tensor = graph.get_tensor_by_name(source.signature.inputs[key].name)
            if tensor.dtype == tf.bool:  # a training switch in the signature: fixed below
                continue
            inputs.append((key, tensor, None))
    else:
        candidates = [op for op in placeholders if op.type == "Placeholder" and op.name in needed
                      and not _is_training_switch(op)]
        if len(candidates) > 1:
            raise UsageError(
                "%s has %d candidate inputs (%s): tfbridge cannot tell which are the model's inputs and which "
                "feed training only (labels, masks)." % (source.path, len(candidates),
                                                         ", ".join(op.name for op in candidates)),
                step="preflight",
                hint="Give --inputs with the model's inputs, e.g. --inputs %s (add :SHAPE such as "
                     ":1x224x224x3 for a dynamic shape), and --outputs if the outputs are not found."
                     % candidates[0].name)
        inputs = [(op.name, op.outputs[0], None) for op in candidates]
    if not outputs:
        raise UsageError("no output found in %s%s." % (source.path, " (left out: %s)" % "; ".join(
            "%s: %s" % (s["node"], s["why"]) for s in skipped[:8]) if skipped else ""), step="preflight",
            hint="Give --outputs NAME,... (the op names of the model's outputs).")
    if not inputs:
        raise UsageError("no input placeholder found that the outputs (%s) of %s depend on."
                         % (", ".join(name for name, _ in outputs), source.path), step="preflight",
                         hint="Give --inputs NAME[:SHAPE],... naming the model's input tensors.")
    input_ops = set(tensor.op.name for _, tensor, _ in inputs)
    # ------------------------------------------------------------------ fixed to inference
    fixed = []
    for op in placeholders:
        if op.name in input_ops or op.name not in needed:
            continue
        if op.type == "PlaceholderWithDefault":
            fixed.append({"node": op.name, "op": op.type, "value": "default",
                          "what": "placeholder with default %s takes its default" % op.name})
            continue
        switch = _is_training_switch(op)
        if switch == "bool":
            fixed.append({"node": op.name, "op": op.type, "value": False, "dtype": "bool",
                          "what": "training switch %s set to False (inference)" % op.name})
        elif switch == "keep_prob":
            fixed.append({"node": op.name, "op": op.type, "value": 1.0, "dtype": op.get_attr("dtype").name,
                          "what": "dropout keep probability %s set to 1.0 (no dropout)" % op.name})
        elif switch == "rate":
            fixed.append({"node": op.name, "op": op.type, "value": 0.0, "dtype": op.get_attr("dtype").name,
                          "what": "dropout rate %s set to 0.0 (no dropout)" % op.name})
        else:
            raise UsageError("the outputs (%s) also need placeholder %s, which is not among the inputs (%s)."
                             % (", ".join(name for name, _ in outputs), op.name, ", ".join(sorted(input_ops))),
                             step="preflight", hint="Add it to --inputs, or give --outputs that do not need it.")
    # ------------------------------------------------------------------ shapes
    specs = []
    for name, tensor, shape in inputs:
        spec = _spec_of(tensor, name)
        graph_shape = spec["graph_shape"]
        if shape is not None:
            if graph_shape is not None and (len(graph_shape) != len(shape) or any(
                    g is not None and s is not None and g != s for g, s in zip(graph_shape, shape))):
                raise UsageError("--inputs %s:%s does not fit the graph's shape %s of %s."
                                 % (name, "x".join("?" if d is None else str(d) for d in shape),
                                    _shape_text(graph_shape), tensor.name), step="preflight",
                                 hint="Give a shape of the same rank whose fixed dimensions agree with the graph's.")
            full = list(shape)
        elif graph_shape is None:
            raise UsageError("input %s (%s) has an unknown rank: its shape is needed." % (name, tensor.name),
                             step="preflight", hint="Give --inputs %s:SHAPE, e.g. %s:1x224x224x3." % (name, name))
        else:
            full = list(graph_shape)
        if any(d is None for d in full[1:]):
            raise UsageError("input %s (%s) has shape %s: a dimension other than the batch is dynamic, so the "
                             "probe, calibration and the int8 model cannot be shaped." % (name, tensor.name,
                                                                                          _shape_text(full)),
                             step="preflight", hint="Give its shape: --inputs %s:%s." % (
                                 name, "x".join(["?"] + ["N" if d is None else str(d) for d in full[1:]])))
        spec["batch"] = full[0] if graph_shape and graph_shape[0] is not None else None
        spec["shape"] = [None] + [int(d) for d in full[1:]] if full else [None]
        specs.append(spec)
    out_specs = [_spec_of(tensor, name) for name, tensor in outputs]
    for spec in out_specs:
        if spec["shape"]:
            spec["shape"] = [None] + spec["shape"][1:]
    return {"inputs": specs, "outputs": out_specs, "fixed": fixed, "skipped_outputs": skipped, "graph": graph}


def _shape_text(shape):
    return "(%s)" % ", ".join("?" if d is None else str(d) for d in shape)


def inspect(path, tags=None, signature=None, inputs=None, outputs=None):
    """The preflight read of a graph source for the host (JSON-able): kind, origin, signature."""
    source = read_source(path, tags, signature)
    origin, reason, made_by_tf2 = infer_origin(source)
    info = {"kind": source.kind, "path": source.path, "producer": source.producer,
            "tensorflow_version": source.tf_version, "inferred_origin": origin, "origin_reason": reason,
            "made_by_tf2": made_by_tf2, "signature": source.signature_key, "tags": source.tags,
            "nodes": len(source.graph_def.node)}
    if made_by_tf2:
        return info
    found = discover(source, inputs, outputs)
    keep = ("name", "tensor", "shape", "dtype", "batch")
    info.update(inputs=[dict((k, s.get(k)) for k in keep) for s in found["inputs"]],
                outputs=[dict((k, s.get(k)) for k in keep) for s in found["outputs"]],
                input_names=[s["name"] for s in found["inputs"]], fixed=found["fixed"],
                skipped_outputs=found["skipped_outputs"][:20])
    return info
