"""The NPUs tfbridge checks an int8 model for (``--npu-target``), and one report entry per target.

For whom: ``converters.tf2.npu`` (the conversion step's npu.json and ``nox -s npu``). Pure Python: the
compilers are called by ``converters.tf2.vela`` (Ethos-U) and ``converters.tf2.vx_delegate`` (i.MX 8M
Plus); this module names the targets and turns what they said into the entry report.json shows:

    {"target", "compiler", "status", "ops_total", "ops_on_npu", "ops_on_cpu": [{"op", "name", "reason"}],
     "ops_unknown": [...], "npu_ops_fraction", "npu_macs_fraction", "estimated_ms", "sram_bytes",
     "dram_bytes", "flash_bytes", "system_config", "memory_mode", "clock_hz", "compiled_model", "notes"}

Ops are the .tflite's own ops (what the user's converter wrote), not Vela's internal ones (Vela splits a
SOFTMAX into twenty). ``npu_macs_fraction`` weighs each op by its multiply-accumulates, computed here from
the tensor shapes (convolutions, depthwise, fully connected, transpose conv, batch matmul, pooling), so it
is the same measure for every target; Vela's own count is ``macs``.
"""

import collections

from converters import options

VX = "vx"
VELA = "vela"
DEFAULT = options.DEFAULT_NPU_TARGET
ALIASES = options.NPU_TARGET_ALIASES

# What each target of converters.options.NPU_TARGETS is: imx8mp is checked against the VX delegate's
# op table, every Ethos-U configuration is compiled by Vela.
DESCRIPTIONS = {
    "imx8mp": "NXP i.MX 8M Plus: VeriSilicon VIP8000 NPU through the TFLite VX delegate",
    "ethos-u65-256": "Arm Ethos-U65, 256 MACs/cycle (the NPU of the NXP i.MX 93)",
}
TARGETS = collections.OrderedDict(
    (name, (VX if name == "imx8mp" else VELA,
            DESCRIPTIONS.get(name) or "Arm Ethos-%s, %s MACs/cycle" % tuple(name[len("ethos-"):].upper().split("-"))))
    for name in options.NPU_TARGETS)

VELA_NOTE = ("Estimated by Vela %s for its default system configuration %s and memory mode %s (NPU at %s MHz): "
             "Arm's reference system, not a measurement on a board.")
IMX93_NOTE = ("The i.MX 93's NPU is an Ethos-U65-256, but Vela's own configuration file has no i.MX 93 system "
              "(NXP's is not public in Vela's package): read the time as an estimate for Arm's reference system.")


canonical = options.canonical_npu_target


def kind(name):
    return TARGETS[name][0]


def compiled_name(target):
    """The file name of the model compiled for ``target``, next to model_int8.tflite."""
    return "model_int8_vela_%s.tflite" % target


def _prod(values):
    total = 1
    for value in values:
        total *= int(value)
    return total


def op_macs(op, tensors):
    """Multiply-accumulates of one op from its tensor shapes (0 for ops without a MAC array workload)."""
    def shape(kind_, index):
        indices = op["inputs"] if kind_ == "in" else op["outputs"]
        if index >= len(indices) or indices[index] < 0:
            return None
        return tensors[indices[index]]["shape"]

    name = op["name"]
    out = shape("out", 0)
    if not out:
        return 0
    if name in ("CONV_2D", "CONV_3D"):
        weights = shape("in", 1)
        return _prod(out) * _prod(weights[1:]) if weights else 0
    if name == "DEPTHWISE_CONV_2D":
        weights = shape("in", 1)
        return _prod(out) * _prod(weights[1:-1]) if weights else 0
    if name == "FULLY_CONNECTED":
        weights = shape("in", 1)
        return _prod(out) * int(weights[-1]) if weights else 0
    if name == "TRANSPOSE_CONV":
        weights, data = shape("in", 1), shape("in", 2)
        return _prod(data) * _prod(weights[:-1]) if weights and data else 0
    if name == "BATCH_MATMUL":
        left = shape("in", 0)
        return _prod(out) * int(left[-1]) if left else 0
    if name in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
        options = op.get("options") or {}
        return _prod(out) * int(options.get("filter_width", 1)) * int(options.get("filter_height", 1))
    return 0


def _entry(target, compiler, model, placements):
    """The common part of an entry from ``placements`` (one dict per op, in execution order)."""
    tensors = model["tensors"]
    macs = [op_macs(op, tensors) for op in model["ops"]]
    on_npu = [p for p in placements if p["placement"] == "npu"]
    on_cpu = [p for p in placements if p["placement"] == "cpu"]
    unknown = [p for p in placements if p["placement"] == "unknown"]
    total_macs = sum(macs)
    npu_macs = sum(macs[p["index"]] for p in on_npu if p.get("index") is not None)
    return {
        "target": target,
        "description": TARGETS[target][1],
        "compiler": compiler,
        "status": "ok",
        "ops_total": len(model["ops"]),
        "ops_on_npu": len(on_npu),
        "ops_on_cpu": [{"op": p["op"], "name": p["name"], "reason": p["reason"]} for p in on_cpu],
        "ops_unknown": [{"op": p["op"], "name": p["name"], "reason": p["reason"]} for p in unknown],
        "npu_ops_fraction": round(len(on_npu) / float(len(model["ops"])), 4) if model["ops"] else None,
        "npu_macs_fraction": round(npu_macs / float(total_macs), 4) if total_macs else None,
        "model_macs": total_macs,
        "estimated_ms": None,
        "sram_bytes": None,
        "dram_bytes": None,
        "flash_bytes": None,
        "notes": [],
    }


def vx_entry(target, model, placements, table):
    """The imx8mp entry from ``vx_delegate.place_ops``."""
    from converters.tf2 import vx_delegate

    entry = _entry(target, "VX delegate op table (%s)" % vx_delegate.describe_source(table), model, placements)
    entry["source"] = dict(table["source"])
    entry["notes"] = list(table.get("notes", []))
    return entry


def vela_placements(model, result):
    """One placement per op of ``model`` from Vela's CPU warnings (``vela.compile_model``'s result). An op
    Vela names but the model does not have (an internal op) is added at the end, without an index."""
    reasons = dict(result.get("cpu_reasons") or {})
    cpu_names = set(result.get("cpu_names") or []) | set(reasons)
    placements = []
    seen = set()
    for index, op in enumerate(model["ops"]):
        outputs = [i for i in op["outputs"] if i >= 0]
        name = model["tensors"][outputs[0]]["name"] if outputs else ""
        label = op["name"] if op["name"] != "CUSTOM" else op.get("custom_code")
        if name in cpu_names:
            seen.add(name)
            why = reasons.get(name, {}).get("reasons") or ["placed on the CPU by Vela (no reason given)"]
            placements.append({"index": index, "op": label, "name": name, "placement": "cpu",
                               "reason": "; ".join(why)})
        else:
            placements.append({"index": index, "op": label, "name": name, "placement": "npu", "reason": None})
    for name in sorted(cpu_names - seen):
        info = reasons.get(name, {})
        placements.append({"index": None, "op": info.get("op", "?"), "name": name, "placement": "cpu",
                           "reason": "; ".join(info.get("reasons") or ["placed on the CPU by Vela"])})
    return placements


def vela_entry(target, model, result):
    """An Ethos-U entry from ``vela.compile_model``'s result (an error entry when Vela failed)."""
    compiler = "Arm Vela %s" % (result.get("version") or "?")
    if result.get("status") != "ok":
        entry = _entry(target, compiler, model, [])
        entry.update(status="error", error=result.get("error"), ops_on_npu=None, npu_ops_fraction=None,
                     npu_macs_fraction=None)
        return entry
    entry = _entry(target, compiler, model, vela_placements(model, result))
    summary = result["summary"]
    for key in ("estimated_ms", "sram_bytes", "dram_bytes", "flash_bytes", "system_config", "memory_mode",
                "clock_hz", "macs", "cycles"):
        entry[key] = summary.get(key)
    entry["compiled_model"] = result.get("compiled")
    entry["compile_seconds"] = result.get("seconds")
    clock = summary.get("clock_hz")
    entry["notes"] = [VELA_NOTE % (result.get("version") or "?", summary.get("system_config"),
                                   summary.get("memory_mode"), "%g" % (clock / 1e6) if clock else "?")]
    if target == "ethos-u65-256":
        entry["notes"].append(IMX93_NOTE)
    return entry


def strict_failures(entries):
    """One line per target with an op on the CPU or no compilation (what ``--strict-npu`` refuses)."""
    lines = []
    for entry in entries:
        if entry.get("status") != "ok":
            lines.append("%s: not compiled (%s)" % (entry["target"], entry.get("error")))
        elif entry["ops_on_cpu"]:
            shown = ", ".join("%s (%s)" % (o["op"], o["reason"]) for o in entry["ops_on_cpu"][:3])
            more = len(entry["ops_on_cpu"]) - 3
            lines.append("%s: %d op(s) on the CPU: %s%s" % (entry["target"], len(entry["ops_on_cpu"]), shown,
                                                            " and %d more" % more if more > 0 else ""))
    return lines
