"""Which ops of a .tflite the NXP i.MX 8M Plus NPU takes: the VX delegate's own op rules, applied per op.

For whom: ``converters.tf2.npu`` (target ``imx8mp``). Pure Python (standard library): the table is data
(``vx_delegate_ops.json``), the model is the op/tensor description ``npu.read_model`` returns, so the
decision is unit-tested on hand-made op lists.

Why a table and not a compiler: the i.MX 8M Plus's NPU (VeriSilicon VIP8000) has no offline compiler. Its
TFLite delegate (VeriSilicon's ``tflite-vx-delegate``) decides at load time, op by op, whether to take an
op: the op must be in its registry, pass the checks every op passes (no int64 input, rank <= 6, no
0-sized dimension, no int16/int64 output) and its own checks (hybrid types, options, static shapes...).
``vx_delegate_ops.json`` is that registry and those checks, read from the delegate's ``op_map.cc`` at the
commit it names, as data; any op not in it stays on the CPU.

Each op gets one placement:

- ``npu``: in the table and every rule holds;
- ``cpu``: not in the table ("not mapped by the VX delegate"), or a rule fails (its text is the reason);
- ``unknown``: a rule could not be decided from the file (an option or operand it needs is absent).

What it cannot say: whether the NPU driver accepts the delegated graph at run time, and how fast it runs
(no estimate: ``estimated_ms`` is null). The table's ``notes`` (per-channel vs per-tensor, bit-exactness)
go into the report with every imx8mp entry.
"""

import json
import os

TABLE_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vx_delegate_ops.json")
EIGHT_BIT = ("int8", "uint8")


class Undecided(Exception):
    """A rule needs something the model description does not have."""


def load_table(path=TABLE_PATH):
    with open(path) as handle:
        return json.load(handle)


def describe_source(table):
    source = table["source"]
    return "%s %s @ %s" % (source["repository"], source["path"], source["commit"][:12])


def _tensor(model, op, kind, index):
    indices = op["inputs"] if kind == "input" else op["outputs"]
    if index >= len(indices) or indices[index] < 0:
        raise Undecided("%s %d is absent" % (kind, index))
    return model["tensors"][indices[index]]


def _tensors(model, op, kind, which):
    indices = op["inputs"] if kind == "input" else op["outputs"]
    if which == "all":
        chosen = range(len(indices))
    elif which == "rest":
        chosen = range(1, len(indices))
    else:
        chosen = which
    return [model["tensors"][indices[i]] for i in chosen if i < len(indices) and indices[i] >= 0]


def _quantized(tensor):
    return bool(tensor.get("scales"))


def _per_channel(tensor):
    return len(tensor.get("scales") or []) > 1


def _option(op, name):
    options = op.get("options")
    if options is None or name not in options:
        raise Undecided("option %s is not in the file" % name)
    return options[name]


def _input_dtype_not(model, op, rule):
    return not any(t["dtype"] in rule["dtypes"] for t in _tensors(model, op, "input", rule["inputs"]))


def _output_dtype_not(model, op, rule):
    return not any(t["dtype"] in rule["dtypes"] for t in _tensors(model, op, "output", rule["outputs"]))


def _max_input_rank(model, op, rule):
    return all(len(t["shape"]) <= rule["rank"] for t in _tensors(model, op, "input", "all"))


def _no_zero_dim(model, op, rule):
    tensors = _tensors(model, op, "input", "all") + _tensors(model, op, "output", "all")
    return not any(0 in t["shape"] for t in tensors)


def _same_dtype(model, op, rule):
    first, second = (_tensor(model, op, "input", i) for i in rule["inputs"])
    return first["dtype"] == second["dtype"]


def _option_equals(model, op, rule):
    return _option(op, rule["option"]) == rule["value"]


def _not_both_options(model, op, rule):
    return not all(bool(_option(op, name)) for name in rule["options"])


def _input_dim_max(model, op, rule):
    shape = _tensor(model, op, "input", rule["input"])["shape"]
    return all(shape[axis] <= rule["max"] for axis in rule["axes"] if axis < len(shape))


def _not_grouped_and_batched(model, op, rule):
    data, weights = _tensor(model, op, "input", 0), _tensor(model, op, "input", 1)
    if len(data["shape"]) < 4 or len(weights["shape"]) < 4:
        raise Undecided("conv2d operands are not 4-D")
    grouped = data["shape"][3] != weights["shape"][3]
    batched = data["shape"][0] != 1
    return not (grouped and batched)


def _not_dtype_pair(model, op, rule):
    source = _tensor(model, op, "input", rule["input"])
    target = _tensor(model, op, "output", rule["output"])
    matches = source["dtype"] in rule["input_dtypes"] and target["dtype"] in rule["output_dtypes"]
    if rule.get("input_quantized"):
        matches = matches and _quantized(source)
    if rule.get("output_quantized"):
        matches = matches and _quantized(target)
    if rule.get("input_per_channel"):
        matches = matches and _per_channel(source)
    if rule.get("output_per_channel"):
        matches = matches and _per_channel(target)
    return not matches


def _not_activation_with_dtype(model, op, rule):
    activation = _option(op, "fused_activation_function")
    if activation != rule["activation"]:
        return True
    return not (_tensor(model, op, "input", 0)["dtype"] == rule["dtype"]
                and _tensor(model, op, "output", 0)["dtype"] == rule["dtype"])


def _not_all_inputs_dtype(model, op, rule):
    return not all(t["dtype"] == rule["dtype"] for t in _tensors(model, op, "input", rule["inputs"]))


def _output_static(model, op, rule):
    return len(_tensor(model, op, "output", rule["output"])["shape"]) != 0


def _input_static(model, op, rule):
    return len(_tensor(model, op, "input", rule["input"])["shape"]) != 0


def _quantized_if_8bit(model, op, rule):
    return all(_quantized(t) for t in _tensors(model, op, "input", rule["inputs"]) if t["dtype"] in EIGHT_BIT)


def _input_constant(model, op, rule):
    return bool(_tensor(model, op, "input", rule["input"]).get("is_constant"))


def _input_dtype_in(model, op, rule):
    return _tensor(model, op, "input", rule["input"])["dtype"] in rule["dtypes"]


def _same_dtype_in_out(model, op, rule):
    return _tensor(model, op, "input", rule["input"])["dtype"] == _tensor(model, op, "output", rule["output"])["dtype"]


def _input_rank_equals(model, op, rule):
    return len(_tensor(model, op, "input", rule["input"])["shape"]) == rule["rank"]


def _input_dim_equals(model, op, rule):
    shape = _tensor(model, op, "input", rule["input"])["shape"]
    if rule["axis"] >= len(shape):
        raise Undecided("input %d has no axis %d" % (rule["input"], rule["axis"]))
    return shape[rule["axis"]] == rule["value"]


def _slice_keeps_batch(model, op, rule):
    data, out = _tensor(model, op, "input", 0), _tensor(model, op, "output", 0)
    if len(data["shape"]) <= 3:
        return True
    return bool(out["shape"]) and data["shape"][0] == out["shape"][0]


def _same_rank(model, op, rule):
    first, second = (_tensor(model, op, "input", i) for i in rule["inputs"])
    return len(first["shape"]) == len(second["shape"])


def _not_rank_with_dtype(model, op, rule):
    tensor = _tensor(model, op, "input", rule["input"])
    return not (len(tensor["shape"]) == rule["rank"] and tensor["dtype"] in rule["dtypes"])


def _never(model, op, rule):
    return False


RULES = {
    "input_dtype_not": _input_dtype_not, "output_dtype_not": _output_dtype_not, "max_input_rank": _max_input_rank,
    "no_zero_dim": _no_zero_dim, "same_dtype": _same_dtype, "option_equals": _option_equals,
    "not_both_options": _not_both_options, "input_dim_max": _input_dim_max,
    "not_grouped_and_batched": _not_grouped_and_batched, "not_dtype_pair": _not_dtype_pair,
    "not_activation_with_dtype": _not_activation_with_dtype, "not_all_inputs_dtype": _not_all_inputs_dtype,
    "output_static": _output_static, "input_static": _input_static, "quantized_if_8bit": _quantized_if_8bit,
    "input_constant": _input_constant, "input_dtype_in": _input_dtype_in, "same_dtype_in_out": _same_dtype_in_out,
    "input_rank_equals": _input_rank_equals, "input_dim_equals": _input_dim_equals,
    "slice_keeps_batch": _slice_keeps_batch, "same_rank": _same_rank, "not_rank_with_dtype": _not_rank_with_dtype,
    "never": _never,
}


def place_op(model, op, table):
    """``(placement, reason)`` of one op: ("npu", None), ("cpu", why) or ("unknown", why)."""
    name = op["name"]
    if name == "CUSTOM":
        code = op.get("custom_code")
        rules = table.get("custom", {}).get(code)
        if rules is None:
            return "cpu", "custom op %r is not mapped by the VX delegate" % code
    else:
        rules = table["ops"].get(name)
        if rules is None:
            return "cpu", "%s is not mapped by the VX delegate" % name
    undecided = []
    for rule in list(table.get("generic", [])) + list(rules):
        check = RULES[rule["rule"]]
        try:
            holds = check(model, op, rule)
        except Undecided as why:
            undecided.append("%s (%s)" % (rule["text"], why))
            continue
        except (IndexError, KeyError, TypeError) as why:  # a malformed op: say so, do not guess
            undecided.append("%s (%s: %s)" % (rule["text"], type(why).__name__, why))
            continue
        if not holds:
            return "cpu", "VX delegate check failed: %s" % rule["text"]
    if undecided:
        return "unknown", "cannot decide from the file: %s" % "; ".join(undecided)
    return "npu", None


def place_ops(model, table=None):
    """The placement of every op of ``model`` (``npu.read_model``'s dict): a list of
    ``{"index", "op", "name", "placement", "reason"}`` in execution order."""
    table = table or load_table()
    placed = []
    for index, op in enumerate(model["ops"]):
        placement, reason = place_op(model, op, table)
        outputs = [i for i in op["outputs"] if i >= 0]
        placed.append({"index": index, "op": op["name"] if op["name"] != "CUSTOM" else op.get("custom_code"),
                       "name": model["tensors"][outputs[0]]["name"] if outputs else "",
                       "placement": placement, "reason": reason})
    return placed
