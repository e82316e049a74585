"""TF 1.x graph sources: a frozen GraphDef (``.pb`` / ``.pbtxt``), a TF1 SavedModel folder, a TF1 checkpoint.

For whom: ``python -m legacy_tf1 inspect-graph`` (the host's preflight read, in tf1.15) and ``python -m
legacy_tf1 resave`` of a graph (in the origin environment: tf1.13 or tf1.15); Python 3.7, TF 1.13 / 1.15.
The Keras ``.h5`` path is ``legacy_tf1.resave``; this module is its counterpart for models that are graphs.

What it does, in order:

1. **Read** the source without running it (``read_source``): the GraphDef (binary or text), the SavedModel's
   MetaGraphDef for ``--tags`` (default ``serve``) and its signature (``--signature``, default
   ``serving_default``, else the only one), or a checkpoint's ``.meta`` (the ``.meta`` path, the checkpoint
   prefix, or a folder with a ``checkpoint`` file / one ``.meta``).
2. **Origin** (``infer_origin``): the SavedModel's / ``.meta``'s ``meta_info_def.tensorflow_version``, else the
   GraphDef's ``versions.producer`` mapped conservatively: producer <= 27 (TF 1.13's) -> tf1.13, <= 134
   (TF 1.15's) -> tf1.15, above -> made by TF 2.x (refused: ``convert`` takes TF 2.x models). No record
   (producer 0, no version string): ``--origin`` is required.
3. **Signature** (``discover``): inputs are the SavedModel signature's inputs, else the ``Placeholder`` ops
   the outputs depend on, leaving out training switches (bool placeholders such as ``keras_learning_phase``
   or ``is_training``, scalar ``keep_prob`` placeholders, a scalar float placeholder that drives a
   ``tf.nn.dropout`` mask whatever its name: ``_dropout_role``) and ``PlaceholderWithDefault`` ops, which are
   fixed to inference. Outputs are the signature's, else the graph's sink nodes that are not training, summary,
   save, init or variable-update ops (and, with ``--inputs``, computable from those inputs). ``--inputs
   NAME[:SHAPE],...`` and ``--outputs NAME,...`` choose them; several candidate inputs without ``--inputs``,
   a name that is not in the graph, or a dynamic dimension other than the batch without a shape are
   ``UsageError`` paragraphs naming the inputs.
4. **Inference graph** (``inference_graph``): training switches become constants (``False``; ``keep_prob``
   1.0), ``PlaceholderWithDefault`` its default, every ``tf.cond`` whose predicate is now a constant is
   folded to its live branch (dropout and the batch-norm training branch of ``tf.layers`` / Keras go with
   the dead branch), the random mask of a ``tf.nn.dropout`` without a cond whose keep probability is now 1.0
   is removed (``remove_dropout_masks``, matched by structure), a ``FusedBatchNorm`` left with
   ``is_training=True`` is wired to its moving averages, variables are frozen
   (``graph_util.convert_variables_to_constants``, for a SavedModel or a checkpoint, in this origin
   environment), ``graph_util.remove_training_nodes`` drops ``Identity``/``CheckNumerics`` and
   ``graph_util.extract_sub_graph`` what the outputs do not need. Each step that changed something is an
   entry of the manifest's ``transforms`` (``{"transform", "what", ...}``).
5. **Re-save** (``resave_graph``): the run-folder contract of a Keras model without ``model.h5``:
   ``model.pb`` (the inference graph, serialized deterministically: the same graph, the same bytes),
   ``probe.npz``, ``reference_<origin>.npz`` (the *source* graph run as it is, training switches fed
   ``False``), ``manifest.json`` with ``model.source_kind``, named inputs / outputs and shapes,
   ``frozen_graph`` (``input_arrays``, ``output_arrays``, ``input_shapes``, ``batch``, ``transforms``) and
   ``frozen_graph.check``: the inference graph run here against the source's outputs (a transform that
   changed the result is a ``ModelLoadError``, never a silent difference).

What can go wrong: ``InputFileError`` (not a GraphDef / SavedModel / checkpoint, data files missing),
``UsageError`` (inputs or outputs ambiguous, missing, or of dynamic shape; no origin), ``ModelLoadError``
(made by TF 2.x; an op this TF does not know; a training-only part that cannot be fixed).
"""

import os
import time

import numpy as np

from converters import runfolder
from converters.errors import InputFileError, ModelLoadError, UsageError
from legacy_tf1 import compat

tf = compat.tf

# TF's GraphDef producer versions (tf.version.GRAPH_DEF_VERSION), measured in the environments.
PRODUCER_TF1_13 = 27
PRODUCER_TF1_15 = 134
GRAPH_KINDS = ("frozen_graph", "saved_model", "checkpoint")
DEFAULT_TAGS = "serve"
DEFAULT_SIGNATURE = "serving_default"
GRAPH_BATCH = 8
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


def _graph_util():
    module = getattr(getattr(tf, "compat", None), "v1", None)  # TF 1.14+ moved it under compat.v1
    return getattr(module, "graph_util", None) or tf.graph_util


def _v1():
    return getattr(getattr(tf, "compat", None), "v1", None) or tf


# ------------------------------------------------------------------------------------------- reading


class GraphSource(object):
    """A graph source read from disk (nothing run): ``graph_def``, and for a SavedModel / checkpoint the
    ``meta_graph`` and ``signature`` (a SignatureDef or None), ``prefix`` (checkpoint), ``tf_version``
    (``meta_info_def.tensorflow_version`` or None), ``producer`` (``versions.producer``)."""

    def __init__(self, kind, path, graph_def, meta_graph=None, signature=None, signature_key=None, tags=None,
                 prefix=None, tf_version=None):
        self.kind = kind
        self.path = path
        self.graph_def = graph_def
        self.meta_graph = meta_graph
        self.signature = signature
        self.signature_key = signature_key
        self.tags = tags
        self.prefix = prefix
        self.tf_version = tf_version or None
        self.producer = int(graph_def.versions.producer) if graph_def.HasField("versions") else 0


def graph_kind(path):
    """``frozen_graph``, ``saved_model``, ``checkpoint`` or None (a Keras file), decided like the host's
    preflight (``converters.preflight.model_kind``)."""
    from converters import preflight

    kind = preflight.model_kind(path)
    return kind if kind in GRAPH_KINDS else None


def checkpoint_paths(path):
    """``(meta file, checkpoint prefix)`` of a checkpoint given as its ``.meta``, its prefix or its folder."""
    from converters import preflight

    meta = preflight.checkpoint_meta(path)
    if meta is None:
        raise InputFileError("%s is not a TF checkpoint: no .meta file found for it." % path, step="preflight",
                             hint="Give the checkpoint's .meta file, its prefix (model.ckpt) or its folder.")
    prefix = meta[:-len(".meta")]
    folder = os.path.dirname(meta)
    state = os.path.join(folder, "checkpoint")
    if os.path.isdir(path) and os.path.isfile(state):  # the folder's latest checkpoint
        latest = tf.train.latest_checkpoint(folder)
        if latest and os.path.isfile(latest + ".meta"):
            meta, prefix = latest + ".meta", latest
    if not (os.path.isfile(prefix + ".index") or os.path.isfile(prefix)):
        raise InputFileError("the checkpoint %s has a graph (.meta) but no variable data (%s.index and "
                             "%s.data-*)." % (meta, prefix, prefix), step="preflight",
                             hint="Copy the checkpoint's .index and .data-* files next to its .meta.")
    return meta, prefix


def read_source(path, tags=None, signature=None):
    """Read a graph source (see the module docstring); ``InputFileError`` for a file that is not one."""
    kind = graph_kind(path)
    if kind == "frozen_graph":
        return GraphSource(kind, path, _read_graph_def(path))
    if kind == "saved_model":
        return _read_saved_model(path, tags, signature)
    if kind == "checkpoint":
        meta, prefix = checkpoint_paths(path)
        meta_graph = _parse(meta, _meta_graph_pb2().MetaGraphDef, "a MetaGraphDef (.meta)")
        return GraphSource(kind, meta, meta_graph.graph_def, meta_graph=meta_graph, prefix=prefix,
                           tf_version=meta_graph.meta_info_def.tensorflow_version)
    raise InputFileError("%s is not a TF 1.x graph (.pb/.pbtxt GraphDef, SavedModel folder or checkpoint)." % path,
                         step="preflight")


def _meta_graph_pb2():
    from tensorflow.core.protobuf import meta_graph_pb2

    return meta_graph_pb2


def _parse(path, message_class, what):
    from google.protobuf import message as protobuf_message
    from google.protobuf import text_format

    message = message_class()
    with open(path, "rb") as handle:
        data = handle.read()
    try:
        if path.lower().endswith(".pbtxt"):
            text_format.Merge(data.decode("utf-8"), message)
        else:
            message.ParseFromString(data)
    except (protobuf_message.DecodeError, text_format.ParseError, UnicodeDecodeError, RuntimeWarning,
            ValueError) as exc:
        raise InputFileError("%s is not %s (%s)." % (path, what, str(exc).splitlines()[0][:200] if str(exc) else
                                                      type(exc).__name__), step="preflight",
                             hint="Give a TF 1.x GraphDef (.pb written with SerializeToString(), .pbtxt with "
                                  "tf.train.write_graph(..., as_text=True)), a SavedModel folder or a checkpoint.")
    return message


def _read_graph_def(path):
    graph_def = _parse(path, _v1().GraphDef, "a TensorFlow GraphDef")
    if not len(graph_def.node):
        raise InputFileError("%s holds no GraphDef nodes: it is not a TensorFlow graph (or an empty one)." % path,
                             step="preflight",
                             hint="Give a frozen TF 1.x GraphDef (.pb/.pbtxt), a SavedModel folder or a checkpoint.")
    return graph_def


def _read_saved_model(path, tags, signature):
    from tensorflow.core.protobuf import saved_model_pb2

    name = "saved_model.pb" if os.path.isfile(os.path.join(path, "saved_model.pb")) else "saved_model.pbtxt"
    saved = _parse(os.path.join(path, name), saved_model_pb2.SavedModel, "a SavedModel")
    wanted = set(t.strip() for t in (tags or DEFAULT_TAGS).split(",") if t.strip())
    found = [meta for meta in saved.meta_graphs if set(meta.meta_info_def.tags) == wanted]
    if not found:
        available = ["--tags %s" % ",".join(sorted(meta.meta_info_def.tags)) for meta in saved.meta_graphs]
        raise UsageError("the SavedModel %s has no MetaGraph tagged %s (it has: %s)."
                         % (path, ",".join(sorted(wanted)), "; ".join(available) or "none"), step="preflight",
                         hint="Give --tags with one of the tag sets it has.")
    meta = found[0]
    keys = sorted(meta.signature_def)
    if signature:
        key = signature
    elif DEFAULT_SIGNATURE in meta.signature_def:
        key = DEFAULT_SIGNATURE
    elif len(keys) == 1:
        key = keys[0]
    else:
        key = None
    if key is not None and key not in meta.signature_def:
        raise UsageError("the SavedModel %s has no signature %r (it has: %s)." % (path, key, ", ".join(keys) or "none"),
                         step="preflight", hint="Give --signature with one of them.")
    if key is None and keys:
        raise UsageError("the SavedModel %s has several signatures and none is %s: %s."
                         % (path, DEFAULT_SIGNATURE, ", ".join(keys)), step="preflight",
                         hint="Give --signature NAME with the one to convert.")
    return GraphSource("saved_model", path, meta.graph_def, meta_graph=meta,
                       signature=meta.signature_def[key] if key else None, signature_key=key,
                       tags=sorted(wanted), tf_version=meta.meta_info_def.tensorflow_version)


# -------------------------------------------------------------------------------------------- origin


def _major_minor(text):
    parts = []
    for piece in str(text).split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts + [0] * (2 - len(parts)))


def infer_origin(source):
    """``(env or None, reason, made_by_tf2)`` from what the file records (module docstring, step 2)."""
    if source.tf_version:
        version = _major_minor(source.tf_version)
        where = "meta_info_def.tensorflow_version %s" % source.tf_version
        if version >= (2, 0):
            return None, "%s: made by TensorFlow 2.x" % where, True
        if version <= (1, 13):
            return "tf1.13", "%s (TF <= 1.13 -> tf1.13)" % where, False
        return "tf1.15", "%s (TF 1.14/1.15 -> tf1.15)" % where, False
    producer = source.producer
    where = "GraphDef versions.producer %d" % producer
    if producer <= 0:
        return None, "the graph records no TensorFlow version (no meta_info_def.tensorflow_version, " \
                     "GraphDef versions.producer 0)", False
    if producer <= PRODUCER_TF1_13:
        return "tf1.13", "%s (TF 1.13 writes %d; <= %d -> tf1.13)" % (where, PRODUCER_TF1_13, PRODUCER_TF1_13), False
    if producer <= PRODUCER_TF1_15:
        return "tf1.15", "%s (TF 1.14-1.15 write %d-%d -> tf1.15)" % (where, PRODUCER_TF1_13 + 1, PRODUCER_TF1_15), \
            False
    return None, "%s: above TF 1.15's %d, made by TensorFlow 2.x" % (where, PRODUCER_TF1_15), True


# ----------------------------------------------------------------------------------------- signature


def parse_names(text):
    """``--inputs`` / ``--outputs`` text into ``[(name, shape or None)]`` (``converters.preflight``'s syntax)."""
    from converters import preflight

    return preflight.parse_tensor_list(text, "--inputs") if text else []


def _op_name(name):
    name = name.lstrip("^")
    return name.split(":")[0]


def _tensor_name(name):
    return name if ":" in name else name + ":0"


def import_graph(graph_def, step="preflight"):
    """A ``tf.Graph`` holding ``graph_def`` (names unchanged); an op this TF does not know is a paragraph."""
    _check_placeholder_shapes(graph_def, step)
    graph = tf.Graph()
    try:
        with graph.as_default():
            _v1().import_graph_def(graph_def, name="")
    except (ValueError, TypeError, tf.errors.NotFoundError) as exc:
        text = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        raise ModelLoadError("the graph does not load in TensorFlow %s: %s." % (tf.__version__, text), step=step,
                             hint="An op unknown to this TF (a graph from a newer TF, or a custom op) cannot run "
                                  "here; give --origin the TF version that made the graph.")
    return graph


def _check_placeholder_shapes(graph_def, step):
    """Refuse a placeholder whose declared shape has a dimension of size 0 or below -1: TF 1.x's shape
    inference divides by such a size when the graph is imported (SIGFPE: the process dies without a word).
    Found by the .pb mutation campaign (tests/integration/test_mutations_tf1_15.py)."""
    for node in graph_def.node:
        if not node.op.startswith("Placeholder") or "shape" not in node.attr:
            continue
        shape = node.attr["shape"].shape
        sizes = [dim.size for dim in shape.dim]
        if not shape.unknown_rank and any(size == 0 or size < -1 for size in sizes):
            raise ModelLoadError(
                "placeholder %s declares the shape (%s): a dimension of size %d cannot hold an input (a damaged "
                "or hand-edited graph)." % (node.name, ", ".join("?" if size == -1 else str(size) for size in sizes),
                                            [size for size in sizes if size == 0 or size < -1][0]),
                step=step, hint="Export the graph again from the code that made it.")


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
    """The model signature of ``source``: ``{"inputs", "outputs", "fixed", "skipped_outputs", "graph"}``
    (module docstring, step 3). Each input: name, tensor, op, dtype, shape (batch first, ``None`` batch)
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


# ---------------------------------------------------------------------------------- inference graph


def _set_const(node, value, dtype):
    node.op = "Const"
    del node.input[:]
    node.attr.clear()
    node.attr["dtype"].type = dtype.as_datatype_enum
    node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(value, dtype=dtype))


def fix_placeholders(graph_def, fixed):
    """Training switches -> constants, placeholders with defaults -> their default (``fixed`` of
    ``discover``). Returns the transforms applied."""
    by_name = dict((entry["node"], entry) for entry in fixed)
    done = []
    for node in graph_def.node:
        entry = by_name.get(node.name)
        if entry is None:
            continue
        if node.op == "PlaceholderWithDefault":
            dtype = node.attr["dtype"].type
            node.op = "Identity"
            for key in list(node.attr):
                del node.attr[key]
            node.attr["T"].type = dtype
        else:
            _set_const(node, entry["value"], tf.as_dtype(node.attr["dtype"].type))
        done.append({"transform": "fix_placeholder", "node": node.name, "value": entry["value"],
                     "what": entry["what"]})
    return done


def _topological(graph_def):
    """The nodes of ``graph_def`` in an order where every input comes first (GraphDef order as tie-break;
    nodes on a cycle, TF 1.x loops, as written)."""
    from converters.shared.graph_order import topological

    by_name = dict((node.name, node) for node in graph_def.node)
    names = [node.name for node in graph_def.node]
    return [by_name[name] for name in topological(names, lambda name: [_op_name(i) for i in by_name[name].input])]


def topological_names(graph_def):
    return [node.name for node in _topological(graph_def)]


def fold_constant_conds(graph_def):
    """Fold every ``tf.cond`` (``Switch`` / ``Merge``) whose predicate is a constant into its live branch:
    the dead branch (dropout's mask, batch norm's batch statistics and moving-average updates) is removed.
    Returns ``(new GraphDef, transform or None)``."""
    nodes = _topological(graph_def)
    by_name = dict((node.name, node) for node in nodes)

    def constant_bool(ref):
        name = _op_name(ref)
        seen = 0
        while name in by_name and seen < 64:
            node = by_name[name]
            if node.op == "Const" and node.attr["dtype"].type == tf.bool.as_datatype_enum:
                return bool(tf.make_ndarray(node.attr["value"].tensor))
            if node.op == "Identity" and node.input:
                name = _op_name(node.input[0])
                seen += 1
                continue
            if node.op == "LogicalNot" and node.input:
                value = constant_bool(node.input[0])
                return None if value is None else not value
            return None
        return None

    forward = {}  # "node:port" -> the tensor it now is
    dead = set()  # node names whose outputs are dead
    dead_ports = set()  # "switch:port" dead outputs

    def ref_of(text):
        name = text.lstrip("^")
        return name if ":" in name else name + ":0"

    def resolve(ref):
        seen = 0
        while ref in forward and seen < 1000:
            ref = forward[ref]
            seen += 1
        return ref

    def is_dead(ref):
        ref = resolve(ref)
        return ref in dead_ports or ref.split(":")[0] in dead

    switches = merges = 0
    folded = set()  # the Switch / Merge nodes folded away
    for node in nodes:
        data = [i for i in node.input if not i.startswith("^")]
        controls = [i for i in node.input if i.startswith("^")]
        if node.op == "Switch" and len(data) == 2:
            predicate = constant_bool(resolve(ref_of(data[1])))
            if predicate is not None:
                switches += 1
                folded.add(node.name)
                live, gone = (1, 0) if predicate else (0, 1)
                if is_dead(ref_of(data[0])):
                    dead.add(node.name)
                else:
                    forward["%s:%d" % (node.name, live)] = resolve(ref_of(data[0]))
                    dead_ports.add("%s:%d" % (node.name, gone))
                continue
        if node.op == "Merge":
            inputs = [ref_of(i) for i in data]
            alive = [i for i in inputs if not is_dead(i)]
            if len(alive) < len(inputs):
                merges += 1
                folded.add(node.name)
                if alive:
                    forward[node.name + ":0"] = resolve(alive[0])
                    dead_ports.add(node.name + ":1")  # value_index: a dead branch's bookkeeping
                else:
                    dead.add(node.name)
                continue
        if any(is_dead(ref_of(i)) for i in data) or any(_op_name(c) in dead for c in controls):
            dead.add(node.name)
    if not switches:
        return graph_def, None
    removed = dead | folded
    output = _v1().GraphDef()
    output.versions.CopyFrom(graph_def.versions)
    output.library.CopyFrom(graph_def.library)
    for node in graph_def.node:
        if node.name in removed:
            continue
        copy = output.node.add()
        copy.CopyFrom(node)
        del copy.input[:]
        for text in node.input:
            if text.startswith("^"):
                source = _op_name(text)
                if source in removed or (source in by_name and by_name[source].op in ("Identity", "Const")):
                    continue  # ordering on a folded branch's pivot: nothing to order at inference
                copy.input.append(text)
                continue
            target = resolve(ref_of(text))
            name, port = target.split(":")
            copy.input.append(name if port == "0" else target)
    return output, {"transform": "fold_constant_conds", "switches": switches, "merges": merges,
                    "nodes_removed": len(removed),
                    "what": "%d tf.cond switch(es) with a constant predicate folded to their inference branch "
                            "(%d merge(s); %d nodes of training branches removed: dropout masks, batch "
                            "statistics, moving-average updates)" % (switches, merges, len(removed))}


def _scalar(by_name, ref, depth=0):
    """The value of a scalar that only constants compute (``Const`` through ``Identity``/``Cast`` and
    ``Sub``/``Add``/``Mul``/``RealDiv``), else None."""
    name = _op_name(ref)
    node = by_name.get(name)
    if node is None or depth > 12 or (":" in ref and not ref.endswith(":0")):
        return None
    data = [i for i in node.input if not i.startswith("^")]
    if node.op == "Const":
        try:
            value = tf.make_ndarray(node.attr["value"].tensor)
        except (TypeError, ValueError):
            return None
        return float(value.reshape(-1)[0]) if value.size == 1 and value.dtype.kind in "fiu" else None
    if node.op in ("Identity", "Snapshot", "StopGradient", "Cast") and data:
        return _scalar(by_name, data[0], depth + 1)
    if node.op in ("Sub", "Add", "AddV2", "Mul", "RealDiv", "Div") and len(data) == 2:
        a, b = _scalar(by_name, data[0], depth + 1), _scalar(by_name, data[1], depth + 1)
        if a is None or b is None:
            return None
        if node.op == "Sub":
            return a - b
        if node.op in ("Add", "AddV2"):
            return a + b
        if node.op == "Mul":
            return a * b
        return a / b if b else None
    return None


def _uniform_range(by_name, ref):
    """``(low, high)`` of a ``RandomUniform`` (``[0, 1)``) scaled and shifted by constants
    (``random_ops.random_uniform``: ``RandomUniform * (max - min) + min``), else None."""
    node = by_name.get(_op_name(ref))
    if node is None:
        return None
    data = [i for i in node.input if not i.startswith("^")]
    if node.op == "RandomUniform":
        return 0.0, 1.0
    if node.op in ("Mul",) + ADDS and len(data) == 2:
        for first, second in ((data[0], data[1]), (data[1], data[0])):
            inner = by_name.get(_op_name(first))
            value = _scalar(by_name, second)
            if inner is None or value is None:
                continue
            span = _uniform_range(by_name, first) if inner.op in ("RandomUniform", "Mul") else None
            if span is None:
                continue
            if node.op == "Mul":
                return (span[0] * value, span[1] * value) if value >= 0 else None
            return span[0] + value, span[1] + value
    return None


def _mask_of_ones(by_name, ref):
    """A text describing the dropout mask ``ref`` when it is 1 everywhere, else None. TF <= 1.13
    (``nn_ops.dropout``): ``Floor(keep + U[lo, hi))``, all ones when ``keep + lo >= 1`` and ``keep + hi <= 2``;
    TF 1.14+: ``Cast(GreaterEqual(U[lo, hi), rate))``, all ones when ``rate <= lo``."""
    node = by_name.get(_op_name(ref))
    if node is None or (":" in ref and not ref.endswith(":0")):
        return None
    data = [i for i in node.input if not i.startswith("^")]
    inner = by_name.get(_op_name(data[0])) if data else None
    if inner is None:
        return None
    inner_data = [i for i in inner.input if not i.startswith("^")]
    if node.op == "Floor" and inner.op in ADDS and len(inner_data) == 2:
        for keep_ref, noise_ref in ((inner_data[0], inner_data[1]), (inner_data[1], inner_data[0])):
            keep, span = _scalar(by_name, keep_ref), _uniform_range(by_name, noise_ref)
            if keep is not None and span is not None and keep + span[0] >= 1.0 and keep + span[1] <= 2.0:
                return "floor(%g + U[%g, %g)) = 1" % (keep, span[0], span[1])
    if node.op == "Cast" and inner.op == "GreaterEqual" and len(inner_data) == 2:
        span, rate = _uniform_range(by_name, inner_data[0]), _scalar(by_name, inner_data[1])
        if span is not None and rate is not None and rate <= span[0]:
            return "U[%g, %g) >= %g is true" % (span[0], span[1], rate)
    return None


def _to_identity(node, source):
    """``node`` (keeping its name, dtype and control inputs) becomes ``Identity(source)``."""
    dtype = node.attr["T"].type
    controls = [i for i in node.input if i.startswith("^")]
    node.op = "Identity"
    del node.input[:]
    node.input.append(source)
    node.input.extend(controls)
    for key in list(node.attr):
        del node.attr[key]
    node.attr["T"].type = dtype


def remove_dropout_masks(graph_def):
    """Remove the random mask of every ``tf.nn.dropout`` whose keep probability is now the constant 1.0 (a
    ``keep_prob`` placeholder fixed to inference, a ``placeholder_with_default(1.0)``): matched by the
    structure TF 1.x builds, not by names. TF <= 1.13: ``Mul(RealDiv(x, keep), Floor(keep + U))``; TF 1.14+:
    ``Mul(Mul(x, 1 / (1 - rate)), Cast(GreaterEqual(U, rate)))``, ``U = RandomUniform * (max - min) + min``.
    When the mask is 1 everywhere, its ``Mul`` becomes an ``Identity`` of the other factor, and the scaling by
    the constant 1.0 an ``Identity`` of ``x``; the ``RandomUniform``, ``Floor`` / ``GreaterEqual`` and their
    constants are left without consumers (``extract_sub_graph`` prunes them). Changes ``graph_def`` in place;
    returns the transform or None."""
    by_name = dict((node.name, node) for node in graph_def.node)
    masks = []
    for node in graph_def.node:
        if node.op != "Mul":
            continue
        data = [i for i in node.input if not i.startswith("^")]
        if len(data) != 2:
            continue
        for mask_ref, kept_ref in ((data[1], data[0]), (data[0], data[1])):
            why = _mask_of_ones(by_name, mask_ref)
            if why is None or _mask_of_ones(by_name, kept_ref) is not None:
                continue
            scaled = by_name.get(_op_name(kept_ref))
            scaling = None
            if scaled is not None and (":" not in kept_ref or kept_ref.endswith(":0")):
                scaled_data = [i for i in scaled.input if not i.startswith("^")]
                if scaled.op in ("RealDiv", "Div") and len(scaled_data) == 2 \
                        and _scalar(by_name, scaled_data[1]) == 1.0:
                    scaling = scaled_data[0]
                elif scaled.op == "Mul" and len(scaled_data) == 2:
                    for x_ref, one_ref in ((scaled_data[0], scaled_data[1]), (scaled_data[1], scaled_data[0])):
                        if _scalar(by_name, one_ref) == 1.0 and _scalar(by_name, x_ref) is None:
                            scaling = x_ref
                            break
            masks.append({"node": node.name, "mask": _op_name(mask_ref), "why": why,
                          "scale": scaled.name if scaling is not None else None})
            _to_identity(node, kept_ref)
            if scaling is not None:
                _to_identity(scaled, scaling)
            break
    if not masks:
        return None
    return {"transform": "remove_dropout", "masks": masks,
            "what": "%d tf.nn.dropout random mask(s) removed (%s), keep probability 1.0: the mask is 1 "
                    "everywhere (%s), so RandomUniform, its scaling, Floor/GreaterEqual and the multiplication "
                    "by the mask and by 1/keep_prob are gone" % (len(masks), ", ".join(m["node"] for m in masks),
                                                                 masks[0]["why"])}


BATCH_NORMS = ("FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3")


def fix_training_batch_norms(graph_def):
    """A ``FusedBatchNorm`` still computing batch statistics (``is_training=True``, not under a cond) is
    switched to inference with its scope's moving averages (``<scope>/moving_mean`` / ``moving_variance``).
    Returns the transforms; ``ModelLoadError`` when the moving averages are not in the graph."""
    names = set(node.name for node in graph_def.node)
    done = []
    for node in graph_def.node:
        if node.op not in BATCH_NORMS or not node.attr["is_training"].b:
            continue
        scope = node.name.rsplit("/", 1)[0] if "/" in node.name else ""
        stats = []
        for stat in ("moving_mean", "moving_variance"):
            found = [candidate for candidate in ("%s/%s/read" % (scope, stat), "%s/%s" % (scope, stat))
                     if candidate in names]
            stats.append(found[0] if found else None)
        if None in stats:
            raise ModelLoadError(
                "batch norm %s computes batch statistics (is_training=True) and the graph holds no moving "
                "averages for it (%s/moving_mean, %s/moving_variance): its inference outputs are unknown."
                % (node.name, scope, scope), step="resave",
                hint="Export the graph for inference (training=False), or give the checkpoint / SavedModel, "
                     "which hold the moving averages.")
        while len(node.input) < 5:
            node.input.append(stats[0])
        node.input[3], node.input[4] = stats[0], stats[1]
        node.attr["is_training"].b = False
        done.append({"transform": "batch_norm_inference", "node": node.name,
                     "what": "batch norm %s switched from batch statistics to its moving averages" % node.name})
    return done


def inference_graph(graph_def, found, session=None):
    """The inference GraphDef of a source graph (module docstring, step 4) and its transforms.
    ``session``: the session holding the variables of a SavedModel / checkpoint (frozen here)."""
    graph_util = _graph_util()
    graph_def_copy = _v1().GraphDef()
    graph_def_copy.CopyFrom(graph_def)
    transforms = fix_placeholders(graph_def_copy, found["fixed"])
    folded, transform = fold_constant_conds(graph_def_copy)
    if transform:
        transforms.append(transform)
    transform = remove_dropout_masks(folded)
    if transform:
        transforms.append(transform)
    transforms.extend(fix_training_batch_norms(folded))
    outputs = output_ops(found)
    if session is not None:
        variables = sum(1 for node in folded.node if node.op in ("VariableV2", "Variable", "VarHandleOp"))
        folded = graph_util.convert_variables_to_constants(session, folded, outputs)
        transforms.append({"transform": "freeze", "what": "variables frozen into constants "
                           "(graph_util.convert_variables_to_constants, in TF %s)" % tf.__version__,
                           "variables": variables})
    before = len(folded.node)
    protected = outputs + [spec["op"] for spec in found["inputs"]]
    cleaned = graph_util.remove_training_nodes(folded, protected_nodes=protected)
    cleaned = graph_util.extract_sub_graph(cleaned, outputs)
    if len(cleaned.node) != before:
        transforms.append({"transform": "strip", "nodes_before": before, "nodes_after": len(cleaned.node),
                           "what": "graph_util.remove_training_nodes and extract_sub_graph: %d -> %d nodes "
                                   "(Identity/CheckNumerics and what the outputs do not need)"
                                   % (before, len(cleaned.node))})
    for node in cleaned.node:
        if node.op in BATCH_NORMS and node.attr["is_training"].b:  # pragma: no cover - fixed above
            raise ModelLoadError("batch norm %s still computes batch statistics." % node.name, step="resave")
    return cleaned, transforms


def output_ops(found):
    return [spec["op"] if spec["tensor"].endswith(":0") else _output_alias(spec) for spec in found["outputs"]]


def _output_alias(spec):
    return "tfbridge_output_%s" % spec["tensor"].replace(":", "_").replace("/", "_")


def add_output_aliases(graph_def, found):
    """An output that is not an op's first tensor (``split:1``) gets an ``Identity`` named for it, because
    the converter and the parity cells take op names."""
    for spec in found["outputs"]:
        if spec["tensor"].endswith(":0"):
            continue
        node = graph_def.node.add()
        node.name = _output_alias(spec)
        node.op = "Identity"
        node.input.append(spec["tensor"])
        node.attr["T"].type = tf.as_dtype(spec["dtype"]).as_datatype_enum


# ------------------------------------------------------------------------------------------ running


def feeds_for(found, probe, start, stop, graph):
    feed = {}
    for spec in found["inputs"]:
        feed[graph.get_tensor_by_name(spec["tensor"])] = probe[spec["name"]][start:stop]
    return feed


def batch_of(found):
    sizes = [spec.get("batch") for spec in found["inputs"] if spec.get("batch")]
    return int(sizes[0]) if sizes else GRAPH_BATCH


def run_graph(session, found, probe, extra_feed=None):
    """The outputs of ``found`` for the probe, in batches (a graph whose inputs have a static batch size is
    fed that many at a time): ``{output name: float32 array}``."""
    graph = session.graph
    fetches = [graph.get_tensor_by_name(spec["tensor"]) for spec in found["outputs"]]
    total = len(probe[found["inputs"][0]["name"]])
    step = batch_of(found)
    parts = [[] for _ in fetches]
    for start in range(0, total, step):
        feed = feeds_for(found, probe, start, start + step, graph)
        feed.update(extra_feed or {})
        for collected, value in zip(parts, session.run(fetches, feed)):
            collected.append(np.asarray(value, dtype=np.float32))
    return dict((spec["name"], np.concatenate(part, axis=0)) for spec, part in zip(found["outputs"], parts))


def training_feed(found, graph):
    """The training switches fed at inference (``False``, ``keep_prob`` 1.0) when the *source* graph runs."""
    feed = {}
    for entry in found["fixed"]:
        if entry["value"] == "default":
            continue
        tensor = graph.get_tensor_by_name(entry["node"] + ":0")
        feed[tensor] = np.asarray(entry["value"], dtype=tensor.dtype.as_numpy_dtype)
    return feed


def _session_config():
    return _v1().ConfigProto(intra_op_parallelism_threads=2, inter_op_parallelism_threads=1)


def _open_session(source, graph):
    """A session over ``graph`` holding ``source``'s variables (SavedModel, checkpoint), or its constants."""
    session = _v1().Session(graph=graph, config=_session_config())
    try:
        with graph.as_default():
            if source.kind == "saved_model":
                loader = getattr(_v1().saved_model, "loader", None) or tf.saved_model.loader
                loader.load(session, source.tags, source.path)
            elif source.kind == "checkpoint":
                saver = _v1().train.import_meta_graph(source.path, clear_devices=True)
                if saver is None:
                    raise ModelLoadError("the checkpoint graph %s has no variables to restore." % source.path,
                                         step="resave", hint="Give the frozen graph (.pb) instead.")
                saver.restore(session, source.prefix)
            else:
                _v1().import_graph_def(source.graph_def, name="")
    except (tf.errors.OpError, ValueError, IOError) as exc:
        session.close()
        raise ModelLoadError("loading %s in TensorFlow %s failed: %s" % (
            source.path, tf.__version__, str(exc).splitlines()[0][:300]), step="resave",
            hint="Check that the variable files belong to this graph, and the origin (--origin).")
    return session


# ------------------------------------------------------------------------------------------- resave


def resave_graph(model_path, out, origin_env, inputs=None, outputs=None, tags=None, signature=None, samples=None,
                 seed=0, input_range=None, calib=None, preprocess=None, probe_source=None):
    """The re-save step of a graph source (module docstring, step 5); returns the manifest dict."""
    from converters.shared import metrics
    from legacy_tf1.resave import make_probe

    timings = {}
    started = time.time()
    source = read_source(model_path, tags, signature)
    found = discover(source, inputs, outputs)
    if not os.path.isdir(out):
        os.makedirs(out)
    np.random.seed(seed)
    probe, probe_info = make_probe(found["inputs"], samples, seed, input_range, calib, preprocess,
                                   probe=probe_source)
    for name, array in probe.items():
        if not np.all(np.isfinite(array)):
            from converters.errors import CalibrationDataError

            raise CalibrationDataError("probe input %s has non-finite values." % name, step="probe")
    graph = tf.Graph()
    session = _open_session(source, graph)
    try:
        timings["load_s"] = round(time.time() - started, 3)
        t0 = time.time()
        # the reference: the source graph as it is, its training switches fed for inference
        found_here = dict(found, graph=graph)
        references = run_graph(session, found_here, probe, training_feed(found, graph))
        timings["probe_s"] = round(time.time() - t0, 3)
        t0 = time.time()
        with graph.as_default():
            graph_def = graph.as_graph_def() if source.kind != "frozen_graph" else source.graph_def
        add_output_aliases(graph_def, found)
        parameters = _parameters(session, graph) if source.kind != "frozen_graph" else None
        frozen, transforms = inference_graph(graph_def, found, session if source.kind != "frozen_graph" else None)
    finally:
        session.close()
    if parameters is None:  # a frozen graph: its float constants
        parameters = int(sum(int(np.prod([d.size for d in node.attr["value"].tensor.tensor_shape.dim] or [1]))
                             for node in frozen.node if node.op == "Const"
                             and node.attr["dtype"].type == tf.float32.as_datatype_enum))
    runfolder.write_bytes(os.path.join(out, runfolder.MODEL_PB), frozen.SerializeToString(deterministic=True))
    timings["freeze_s"] = round(time.time() - t0, 3)
    # the inference graph must compute what the source computes, here, before any other TF sees it
    t0 = time.time()
    check_graph = import_graph(frozen, step="resave")
    with _v1().Session(graph=check_graph, config=_session_config()) as check_session:
        found_check = dict(found, outputs=[dict(spec, tensor=(spec["tensor"] if spec["tensor"].endswith(":0")
                                                              else _output_alias(spec) + ":0"))
                                           for spec in found["outputs"]])
        rerun = run_graph(check_session, found_check, probe)
    check = metrics.compare_outputs(references, rerun)
    timings["check_s"] = round(time.time() - t0, 3)
    if check["verdict"] != "match":
        raise ModelLoadError(
            "the inference graph made from %s does not compute what the source graph computes in TF %s (max |d| "
            "%.3g, cosine %.6f) after: %s." % (model_path, tf.__version__, check["max_abs"], check["cosine"] or 0.0,
                                               "; ".join(t["what"] for t in transforms) or "no change"),
            step="resave", hint="A training-only part tfbridge does not know how to fix (e.g. dropout without a "
                                "training switch): export the graph for inference, or give --outputs/--inputs "
                                "that avoid it.")
    runfolder.write_arrays(os.path.join(out, runfolder.PROBE), probe)
    runfolder.write_arrays(os.path.join(out, runfolder.reference_name(origin_env)), references)
    origin = {"env": origin_env}
    origin.update(fingerprint())
    input_arrays = [spec["op"] for spec in found["inputs"]]
    output_arrays = output_ops(found)
    frozen_info = {"path": runfolder.MODEL_PB, "input_arrays": input_arrays, "output_arrays": output_arrays,
                   "input_shapes": dict((spec["op"], [spec.get("batch") or 1] + spec["shape"][1:])
                                        for spec in found["inputs"]),
                   "batch": batch_of(found) if any(spec.get("batch") for spec in found["inputs"]) else None,
                   "nodes": len(frozen.node), "unrolled": [], "transforms": transforms,
                   "check": {"verdict": check["verdict"], "max_abs": check["max_abs"], "cosine": check["cosine"]}}
    keep = ("name", "shape", "dtype")
    manifest = {
        "schema_version": runfolder.SCHEMA_VERSION,
        "model": {
            "path": os.path.abspath(model_path),
            "sha256": source_sha256(model_path),
            "source_kind": source.kind,
            "resaved_path": None,
            "inputs": [dict((k, s[k]) for k in keep) for s in found["inputs"]],
            "outputs": [dict((k, s[k]) for k in keep) for s in found["outputs"]],
            "tensors": dict((s["name"], s["tensor"]) for s in found["inputs"] + found["outputs"]),
            "keras_flavour": None,
            "weights_only": False,
            "trusted": False,
            "lambda_layers": [],
            "frozen_graph": frozen_info,
            "frozen_graph_error": None,
            "transforms": transforms,
            "fixed": found["fixed"],
            "skipped_outputs": found["skipped_outputs"][:20],
            "graph_source": {"tags": source.tags, "signature": source.signature_key, "producer": source.producer,
                             "tensorflow_version": source.tf_version, "nodes": len(source.graph_def.node),
                             "prefix": source.prefix},
            "parameters": parameters,
        },
        "origin": origin,
        "probe": probe_info,
        "layers": [],
        "timings": timings,
    }
    runfolder.write_json(os.path.join(out, runfolder.MANIFEST), manifest)
    return manifest


def _parameters(session, graph):
    with graph.as_default():
        variables = _v1().global_variables()
    return int(sum(int(np.prod(v.shape.as_list())) for v in variables if v.shape.is_fully_defined()))


def source_sha256(path):
    """sha256 of a graph source: the file, or every file of a SavedModel folder / checkpoint (by name)."""
    import hashlib

    from converters import preflight

    files = preflight.model_files(path)
    if len(files) == 1 and files[0] == path:
        return runfolder.sha256_file(path)
    digest = hashlib.sha256()
    for name in files:
        digest.update(os.path.basename(name).encode("utf-8") + b"\0")
        digest.update(runfolder.sha256_file(name).encode("ascii"))
    return digest.hexdigest()


def fingerprint():
    """The origin fingerprint of a graph run (no Keras involved)."""
    import platform

    return {"python": platform.python_version(), "tensorflow": tf.__version__, "keras": None,
            "keras_flavour": "graph", "h5py": None, "numpy": np.__version__}

