"""NPU readiness of a .tflite: is every op and tensor int8, and where does each op run on each NPU target.

For whom: the conversion step (npu.json, ``--strict-npu``, ``--npu-target``), the report, and users checking
an existing model: ``nox -s npu -- FILE.tflite [--target NAME ...] [--json] [--strict]`` (which runs
``python -m converters.tf2.npu`` in tf2). Reading a file (``read_model``) needs the ``tf2`` environment
(the flatbuffer schema of tensorflow.lite); the decisions (``assess``, ``vx_delegate.place_ops``,
``npu_targets``) are pure Python, unit-tested on hand-made op/tensor lists.

Two questions, two answers in npu.json:

- ``fully_int8`` / ``verdict`` (below): necessary for any int8 NPU, not sufficient;
- ``targets``: one entry per ``--npu-target`` (``npu_targets`` says its keys): for an Ethos-U, Arm's Vela
  compiles the model (``converters.tf2.vela``) and says which ops stay on the CPU and why, and how long an
  inference should take; for the i.MX 8M Plus, the VX delegate's op rules (``converters.tf2.vx_delegate``)
  say which ops it would take.

Why it matters: an NPU such as the VeriSilicon VIP8000 of the NXP i.MX 8M Plus runs only int8
(per-tensor or per-channel) ops. One float op splits the graph: everything from there on falls back to
the CPU, with a copy between the two.

The decision (``assess``), stated once:

- **ready** (``fully_int8: true``): every tensor is int8, except constant int32 tensors (biases, shape
  and axis operands), which NPUs accept; no tensor has a dynamic dimension; I/O are int8.
- **partial**: the interior is int8, but the model's input or output is float32 or uint8, so a
  QUANTIZE / DEQUANTIZE op sits at the boundary. The NPU runs the interior; the conversion at the edge
  costs one CPU pass over the input/output. Ask for ``--io int8`` to make it ready.
- **not_ready**: any of: a float (or int16/int64/bool ...) tensor between input and output; an op that
  computes in float; QUANTIZE/DEQUANTIZE between float and int8 in the middle of the graph (the sign of a
  float island); a non-constant int32/int64 tensor; a dynamic shape (shape_signature -1).

An int8 -> int8 QUANTIZE (requantize, e.g. before CONCATENATION with different scales) is int8 and does
not count against readiness; it is listed in ``notes``.
"""

import collections

INT8 = "int8"
FLOAT_TYPES = ("float32", "float16", "float64", "bfloat16")
BOUNDARY_OPS = ("QUANTIZE", "DEQUANTIZE")


def assess(ops, tensors, inputs, outputs):
    """Decide NPU readiness from a model description (pure; no TF).

    ``ops``: [{"name": "CONV_2D", "inputs": [tensor index, ...], "outputs": [...]}] in execution order;
    ``tensors``: [{"name", "dtype", "shape", "shape_signature", "is_constant"}] indexed by position;
    ``inputs``/``outputs``: tensor indices of the model's inputs and outputs.
    Returns {fully_int8, verdict, float_tensors, ops: {name: count}, problems: [...], notes: [...]}.
    """
    inputs = set(inputs)
    outputs = set(outputs)
    boundary = inputs | outputs
    problems = []
    boundary_problems = []
    notes = []
    float_tensors = []
    for index, tensor in enumerate(tensors):
        dtype = tensor["dtype"]
        name = tensor["name"] or "#%d" % index
        signature = tensor.get("shape_signature")
        if signature is not None and any(int(d) == -1 for d in signature):
            problems.append("tensor %s has a dynamic shape %s (an NPU needs static shapes)"
                            % (name, list(signature)))
        if dtype == INT8:
            continue
        if dtype == "int32" and tensor.get("is_constant"):
            continue  # biases and shape/axis operands
        if index in boundary and dtype in FLOAT_TYPES + ("uint8",):
            boundary_problems.append("model %s %s is %s, not int8"
                                     % ("input" if index in inputs else "output", name, dtype))
            if dtype in FLOAT_TYPES:
                float_tensors.append(name)
            continue
        if tensor.get("is_constant") and dtype in FLOAT_TYPES:
            problems.append("constant %s is %s (a float weight: its op runs in float)" % (name, dtype))
            float_tensors.append(name)
            continue
        if dtype in FLOAT_TYPES:
            float_tensors.append(name)
        problems.append("tensor %s is %s, not int8" % (name, dtype))
    counts = collections.OrderedDict()
    for op in ops:
        counts[op["name"]] = counts.get(op["name"], 0) + 1
        types_in = [tensors[i]["dtype"] for i in op["inputs"] if i >= 0]
        types_out = [tensors[i]["dtype"] for i in op["outputs"] if i >= 0]
        if op["name"] in BOUNDARY_OPS:
            at_edge = (any(i in inputs for i in op["inputs"]) if op["name"] == "QUANTIZE" else False) or \
                      any(i in outputs for i in op["outputs"])
            if all(t == INT8 for t in types_in + types_out):
                notes.append("%s int8->int8 (requantize)" % op["name"])
            elif at_edge:
                boundary_problems.append("%s at the model boundary (%s -> %s)"
                                         % (op["name"], "/".join(types_in), "/".join(types_out)))
            else:
                problems.append("%s in the middle of the graph (%s -> %s): a float island"
                                % (op["name"], "/".join(types_in), "/".join(types_out)))
            continue
        variable_types = [tensors[i]["dtype"] for i in list(op["inputs"]) + list(op["outputs"])
                          if i >= 0 and not tensors[i].get("is_constant")]
        if any(t in FLOAT_TYPES for t in variable_types) or any(
                tensors[i]["dtype"] in FLOAT_TYPES for i in op["inputs"] if i >= 0):
            problems.append("op %s computes in float" % op["name"])
    problems = _unique(problems)
    boundary_problems = _unique(boundary_problems)
    if problems:
        verdict = "not_ready"
    elif boundary_problems:
        verdict = "partial"
    else:
        verdict = "ready"
    return {
        "fully_int8": verdict == "ready",
        "verdict": verdict,
        "float_tensors": _unique(float_tensors),
        "ops": dict(counts),
        "problems": problems + boundary_problems,
        "notes": _unique(notes),
        "float_ops": _unique([p.split()[1] for p in problems if p.startswith("op ")]),
    }


def _unique(items):
    seen = []
    for item in items:
        if item not in seen:
            seen.append(item)
    return seen


def weight_granularity(summary):
    """Count int8 weight tensors quantized per channel (several scales) and per tensor (one scale)."""
    per_channel = per_tensor = 0
    for tensor in summary["tensors"]:
        if tensor["dtype"] != INT8 or not tensor.get("is_constant") or len(tensor["shape"]) < 2:
            continue
        scales = tensor.get("scales") or []
        if len(scales) > 1:
            per_channel += 1
        elif len(scales) == 1:
            per_tensor += 1
    return {"per_channel": per_channel, "per_tensor": per_tensor}


TFLITE_IDENTIFIER = b"TFL3"  # the flatbuffer file identifier of the TFLite schema, at bytes 4..8


def _unreadable(path, why):
    from converters.errors import InputFileError

    return InputFileError("cannot read %s as a TFLite model: %s." % (path, why), step="npu",
                          hint="Give a .tflite file written by the TFLite converter; this one is not one, "
                               "or it is truncated or damaged (convert the model again).")


def read_model(path):
    """Parse a .tflite file with the flatbuffer schema (tf2 environment only).

    Returns {ops, tensors, inputs, outputs} for the main subgraph, as ``assess`` takes them; tensors
    also carry ``scales``, ``zero_points`` and ``quantized_dimension``. Raises ``InputFileError`` on a
    file that is not a TFLite flatbuffer, or one that is truncated or damaged.

    Why so defensive: the file may come from anywhere (``python -m converters.tf2.npu FILE``). The TFLite
    identifier is checked first, the parse is pure Python (a damaged buffer raises, it cannot crash the
    process as the C++ interpreter could), and every tensor / opcode index is checked against its table
    before ``assess`` follows it.
    """
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except (OSError, IOError) as exc:
        from converters.errors import InputFileError

        raise InputFileError("cannot read %s (%s)." % (path, exc), step="npu", hint="Check the path.")
    if len(data) < 8 or data[4:8] != TFLITE_IDENTIFIER:
        raise _unreadable(path, "it does not carry the TFLite file identifier %r (%d bytes)"
                          % (TFLITE_IDENTIFIER.decode(), len(data)))
    try:
        return _parse(data)
    except Exception as exc:  # noqa: BLE001 - struct.error, IndexError, UnicodeDecodeError... on a damaged buffer
        raise _unreadable(path, "the flatbuffer is damaged (%s: %s)" % (type(exc).__name__, str(exc)[:200]))


def _parse(data):
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(data))
    if not model.subgraphs:
        raise ValueError("no subgraph")
    subgraph = model.subgraphs[0]
    buffers = model.buffers or []
    tensors = []
    for tensor in subgraph.tensors or []:
        buffer = buffers[tensor.buffer] if tensor.buffer is not None else None
        has_data = buffer is not None and buffer.data is not None and len(buffer.data) > 0
        # large models keep buffers outside the flatbuffer (offset/size): constant too
        has_data = has_data or bool(buffer is not None and getattr(buffer, "size", 0))
        quant = tensor.quantization
        scales = [float(s) for s in (quant.scale if quant is not None and quant.scale is not None else [])]
        zero_points = [int(z) for z in (quant.zeroPoint if quant is not None and quant.zeroPoint is not None
                                        else [])]
        name = tensor.name.decode("utf-8", "replace") if isinstance(tensor.name, bytes) else str(tensor.name)
        tensors.append({
            "name": name,
            "dtype": flatbuffer_utils.type_to_name(tensor.type).lower().replace("tensortype.", ""),
            "shape": [int(d) for d in (tensor.shape if tensor.shape is not None else [])],
            "shape_signature": [int(d) for d in tensor.shapeSignature]
            if tensor.shapeSignature is not None else None,
            "is_constant": has_data,
            "scales": scales,
            "zero_points": zero_points,
            "quantized_dimension": int(quant.quantizedDimension) if quant is not None else 0,
        })

    def indices(values, what):
        values = [int(i) for i in (values if values is not None else [])]
        for index in values:
            if not -1 <= index < len(tensors):
                raise ValueError("%s refers to tensor %d of %d" % (what, index, len(tensors)))
        return values

    ops = []
    for number, op in enumerate(subgraph.operators or []):
        if not 0 <= op.opcodeIndex < len(model.operatorCodes or []):
            raise ValueError("op %d has opcode index %d of %d" % (number, op.opcodeIndex,
                                                                 len(model.operatorCodes or [])))
        code = model.operatorCodes[op.opcodeIndex]
        custom = getattr(code, "customCode", None)
        ops.append({
            "name": flatbuffer_utils.opcode_to_name(model, op.opcodeIndex),
            "inputs": indices(op.inputs, "op %d" % number),
            "outputs": indices(op.outputs, "op %d" % number),
            "options": _options(getattr(op, "builtinOptions", None)),
            "custom_code": custom.decode("utf-8", "replace") if isinstance(custom, bytes) else custom,
        })
    inputs = [i for i in indices(subgraph.inputs, "the model inputs") if i >= 0]
    outputs = [i for i in indices(subgraph.outputs, "the model outputs") if i >= 0]
    return {"ops": ops, "tensors": tensors, "inputs": inputs, "outputs": outputs}


def _options(options):
    """A flatbuffer op's builtin options as ``{snake_case name: scalar}`` (None when it has none)."""
    if options is None:
        return None
    found = {}
    for key, value in vars(options).items():
        if isinstance(value, (bool, int, float, str)):
            found[_snake(key)] = value
    return found


def _snake(name):
    out = []
    for char in name:
        if char.isupper():
            out.append("_" + char.lower())
        else:
            out.append(char)
    return "".join(out).lstrip("_")


def assess_targets(path, targets, out_dir=None, summary=None):
    """One entry per NPU target (``npu_targets``): Vela compiles ``path`` for each Ethos-U target (the
    compiled model goes to ``out_dir`` as ``model_int8_vela_<target>.tflite``, or is dropped when
    ``out_dir`` is None); the VX delegate's table places each op for ``imx8mp``."""
    import tempfile

    from converters.tf2 import npu_targets, vela, vx_delegate

    summary = summary or read_model(path)
    entries = []
    table = None
    for name in targets or [npu_targets.DEFAULT]:
        target = npu_targets.canonical(name)
        if target is None:
            from converters.errors import UsageError

            raise UsageError("unknown NPU target %r." % name, step="npu",
                             hint="Known targets: %s." % ", ".join(npu_targets.TARGETS))
        if npu_targets.kind(target) == npu_targets.VX:
            table = table or vx_delegate.load_table()
            entries.append(npu_targets.vx_entry(target, summary, vx_delegate.place_ops(summary, table), table))
            continue
        if out_dir is None:
            scratch = tempfile.mkdtemp(prefix="npu-")
            try:
                result = vela.compile_model(path, target, scratch, npu_targets.compiled_name(target))
            finally:
                import shutil

                shutil.rmtree(scratch, ignore_errors=True)
            result["compiled"] = None
        else:
            result = vela.compile_model(path, target, out_dir, npu_targets.compiled_name(target))
        entries.append(npu_targets.vela_entry(target, summary, result))
    return entries


def strict_check(result):
    """``--strict-npu``: raise ``NotInt8Error`` when the model is not fully int8, or when an op of any
    target stays on the CPU (or a target could not be compiled)."""
    from converters.errors import NotInt8Error
    from converters.tf2 import npu_targets

    if result["verdict"] != "ready":
        raise NotInt8Error(
            "the model is %s for an int8 NPU: %s." % (result["verdict"].replace("_", " "),
                                                       "; ".join(result["problems"][:5])),
            step="npu",
            hint="Use --io int8 for int8 I/O; replace float ops in the model (or drop --strict-npu to keep "
                 "the partly-float model and see npu.json).")
    failures = npu_targets.strict_failures(result.get("targets") or [])
    if failures:
        raise NotInt8Error(
            "the model is fully int8, but not every op runs on the NPU: %s." % "; ".join(failures),
            step="npu",
            hint="Each reason is the NPU compiler's own (Vela) or the VX delegate's rule; change those ops "
                 "(another op, shape or option the NPU takes), or drop --strict-npu to accept the CPU "
                 "fallback (npu.json / the report's NPU section list every op).")


def check(path, strict=False, targets=(), out_dir=None):
    """Read ``path`` and assess it, for each of ``targets`` too (``assess_targets``); with ``strict``,
    ``strict_check`` raises ``NotInt8Error``."""
    summary = read_model(path)
    result = assess(summary["ops"], summary["tensors"], summary["inputs"], summary["outputs"])
    result["weights"] = weight_granularity(summary)
    if targets:
        result["targets"] = assess_targets(path, targets, out_dir, summary=summary)
    if strict:
        strict_check(result)
    return result


def _usage_error(message):
    from converters.errors import UsageError

    raise UsageError("nox -s npu: %s." % message, step="npu",
                     hint="nox -s npu -- FILE.tflite [--target NAME ...] [--json] [--strict] [--out-dir DIR]")


def format_entry(entry):
    """A target entry as the lines ``nox -s npu`` prints."""
    lines = ["%s (%s): " % (entry["target"], entry["compiler"])]
    if entry.get("status") != "ok":
        lines[0] += "not compiled: %s" % entry.get("error")
        return lines
    lines[0] += "%d of %d ops on the NPU (%.1f %%), MACs on the NPU %s" % (
        entry["ops_on_npu"], entry["ops_total"], 100.0 * (entry["npu_ops_fraction"] or 0.0),
        "%.1f %%" % (100.0 * entry["npu_macs_fraction"]) if entry.get("npu_macs_fraction") is not None else "-")
    if entry.get("estimated_ms") is not None:
        lines.append("  estimated %.3f ms per inference; SRAM %s B, DRAM %s B, flash %s B (%s, %s)" % (
            entry["estimated_ms"], entry.get("sram_bytes"), entry.get("dram_bytes"), entry.get("flash_bytes"),
            entry.get("system_config"), entry.get("memory_mode")))
    for op in entry["ops_on_cpu"]:
        lines.append("  CPU: %s %s: %s" % (op["op"], op["name"], op["reason"]))
    for op in entry.get("ops_unknown") or []:
        lines.append("  unknown: %s %s: %s" % (op["op"], op["name"], op["reason"]))
    if entry.get("compiled_model"):
        lines.append("  compiled model: %s" % entry["compiled_model"])
    for note in entry.get("notes") or []:
        lines.append("  note: %s" % note)
    return lines


def run(argv):
    """``python -m converters.tf2.npu FILE.tflite [--target NAME ...] [--strict] [--json] [--out-dir DIR]``:
    NPU readiness of an existing .tflite (``nox -s npu`` runs it in tf2)."""
    import argparse
    import json
    import os

    from converters.tf2 import npu_targets

    class Parser(argparse.ArgumentParser):
        def error(self, message):
            _usage_error(message)

    parser = Parser(
        prog=os.environ.get("TFBRIDGE_PROG") or "nox -s npu --",
        description="Is every op and tensor of this .tflite int8, and which of its ops run on each NPU target "
                    "(Arm Vela for Ethos-U, the VX delegate's rules for the i.MX 8M Plus)? Runs in tf2.")
    parser.add_argument("model", help="a .tflite file")
    parser.add_argument("--target", action="append", metavar="NAME",
                        help="an NPU target (repeatable; default %s): %s" % (
                            npu_targets.DEFAULT, ", ".join(npu_targets.TARGETS)))
    parser.add_argument("--strict", action="store_true",
                        help="exit 10 unless the model is fully int8 and every op of every target runs on the NPU")
    parser.add_argument("--json", action="store_true", help="print the assessment as JSON")
    parser.add_argument("--out-dir", metavar="DIR", help="keep the models Vela compiles here")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    targets = []
    for name in args.target or [npu_targets.DEFAULT]:
        target = npu_targets.canonical(name)
        if target is None:
            _usage_error("unknown --target %r (known: %s)" % (name, ", ".join(npu_targets.TARGETS)))
        if target not in targets:
            targets.append(target)
    if args.out_dir:
        os.makedirs(args.out_dir, exist_ok=True)
    summary = read_model(args.model)
    if not any(t["dtype"] in (INT8, "uint8") and t.get("scales") for t in summary["tensors"]):
        from converters.errors import NotInt8Error

        raise NotInt8Error("%s has no quantized int8 tensor: it is a float model, not an int8 one." % args.model,
                           step="npu",
                           hint="Convert it to full int8 first (nox -s convert -- MODEL --calib DATA), then check "
                                "the model_int8.tflite it writes.")
    result = assess(summary["ops"], summary["tensors"], summary["inputs"], summary["outputs"])
    result["weights"] = weight_granularity(summary)
    result["targets"] = assess_targets(args.model, targets, args.out_dir, summary=summary)
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        print("%s: NPU %s%s" % (args.model, result["verdict"], " (fully int8)" if result["fully_int8"] else ""))
        print("ops: %s" % ", ".join("%s x%d" % item for item in sorted(result["ops"].items())))
        for problem in result["problems"]:
            print("problem: %s" % problem)
        for entry in result["targets"]:
            print("\n".join(format_entry(entry)))
    if args.strict:
        strict_check(result)
    return 0


if __name__ == "__main__":
    import os
    import sys

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from converters.cli import main

    sys.exit(main(run, step="npu"))
