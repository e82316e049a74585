"""Rewriting a TF 1.x graph for inference: training switches fixed, constant ``tf.cond`` folded, dropout
masks removed, training batch norms wired to their moving averages, variables frozen, the rest stripped.

For whom: ``legacy_tf1.graph_resave`` (``inference_graph``, ``add_output_aliases``, ``output_ops``), in the
origin environment (tf1.13 / tf1.15, Python 3.7). Every rewrite keeps what the outputs compute at inference;
the re-save proves it by running the rewritten graph against the source (``frozen_graph.check``). Each
rewrite that changed something returns an entry of the manifest's ``transforms`` (``{"transform", "what",
...}``). What can go wrong: ``ModelLoadError`` (a training batch norm without moving averages).
"""

from converters.errors import ModelLoadError
from legacy_tf1 import compat
from legacy_tf1.graph_signature import ADDS

tf = compat.tf


def op_name(name):
    """The op of a tensor or control input name (``^a``, ``a:1`` -> ``a``)."""
    name = name.lstrip("^")
    return name.split(":")[0]


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
    return [by_name[name] for name in topological(names, lambda name: [op_name(i) for i in by_name[name].input])]


def topological_names(graph_def):
    return [node.name for node in _topological(graph_def)]


def fold_constant_conds(graph_def):
    """Fold every ``tf.cond`` (``Switch`` / ``Merge``) whose predicate is a constant into its live branch:
    the dead branch (dropout's mask, batch norm's batch statistics and moving-average updates) is removed.
    Returns ``(new GraphDef, transform or None)``."""
    nodes = _topological(graph_def)
    by_name = dict((node.name, node) for node in nodes)

    def constant_bool(ref):
        name = op_name(ref)
        seen = 0
        while name in by_name and seen < 64:
            node = by_name[name]
            if node.op == "Const" and node.attr["dtype"].type == tf.bool.as_datatype_enum:
                return bool(tf.make_ndarray(node.attr["value"].tensor))
            if node.op == "Identity" and node.input:
                name = op_name(node.input[0])
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
        if any(is_dead(ref_of(i)) for i in data) or any(op_name(c) in dead for c in controls):
            dead.add(node.name)
    if not switches:
        return graph_def, None
    removed = dead | folded
    output = compat.v1().GraphDef()
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
                source = op_name(text)
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
    name = op_name(ref)
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
    node = by_name.get(op_name(ref))
    if node is None:
        return None
    data = [i for i in node.input if not i.startswith("^")]
    if node.op == "RandomUniform":
        return 0.0, 1.0
    if node.op in ("Mul",) + ADDS and len(data) == 2:
        for first, second in ((data[0], data[1]), (data[1], data[0])):
            inner = by_name.get(op_name(first))
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
    node = by_name.get(op_name(ref))
    if node is None or (":" in ref and not ref.endswith(":0")):
        return None
    data = [i for i in node.input if not i.startswith("^")]
    inner = by_name.get(op_name(data[0])) if data else None
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
            scaled = by_name.get(op_name(kept_ref))
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
            masks.append({"node": node.name, "mask": op_name(mask_ref), "why": why,
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
    """The inference GraphDef of a source graph and its transforms: training switches become constants
    (``False``; ``keep_prob`` 1.0), ``PlaceholderWithDefault`` its default, every ``tf.cond`` whose predicate is
    now a constant is folded to its live branch, the random mask of a ``tf.nn.dropout`` whose keep probability
    is now 1.0 is removed, a ``FusedBatchNorm`` left with ``is_training=True`` is wired to its moving averages,
    variables are frozen (``graph_util.convert_variables_to_constants``), ``graph_util.remove_training_nodes``
    drops ``Identity``/``CheckNumerics`` and ``graph_util.extract_sub_graph`` what the outputs do not need.
    ``session``: the session holding the variables of a SavedModel / checkpoint (frozen here)."""
    graph_util = compat.graph_util()
    graph_def_copy = compat.v1().GraphDef()
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
    return [spec["op"] if spec["tensor"].endswith(":0") else output_alias(spec) for spec in found["outputs"]]


def output_alias(spec):
    return "tfbridge_output_%s" % spec["tensor"].replace(":", "_").replace("/", "_")


def add_output_aliases(graph_def, found):
    """An output that is not an op's first tensor (``split:1``) gets an ``Identity`` named for it, because
    the converter and the parity cells take op names."""
    for spec in found["outputs"]:
        if spec["tensor"].endswith(":0"):
            continue
        node = graph_def.node.add()
        node.name = output_alias(spec)
        node.op = "Identity"
        node.input.append(spec["tensor"])
        node.attr["T"].type = tf.as_dtype(spec["dtype"]).as_datatype_enum
