"""NPU targets on hand-made op lists (pure logic, no TF): the VX delegate's op table applied per op, Vela's
text read back into per-op placements, the per-target entry and what --strict-npu refuses."""

import pytest

from converters import options, preflight_options
from converters.errors import UsageError
from converters.tf2 import npu, npu_targets, vela, vx_delegate

pytestmark = pytest.mark.unit


def t(name, dtype, shape, constant=False, scales=None):
    return {"name": name, "dtype": dtype, "shape": list(shape), "is_constant": constant,
            "scales": list(scales) if scales is not None else [0.1]}


def model(ops, tensors):
    return {"ops": ops, "tensors": tensors, "inputs": [0], "outputs": [len(tensors) - 1]}


def conv_chain(extra_op, extra_tensors):
    """in -> CONV_2D -> <extra op> -> out, all int8 per-channel weights."""
    tensors = [t("in", "int8", (1, 8, 8, 3)), t("w", "int8", (8, 3, 3, 3), True, [0.1] * 8),
               t("b", "int32", (8,), True, [0.01] * 8), t("conv", "int8", (1, 8, 8, 8))]
    ops = [{"name": "CONV_2D", "inputs": [0, 1, 2], "outputs": [3], "options": {"fused_activation_function": 1}}]
    base = len(tensors)
    tensors += extra_tensors
    op = dict(extra_op)
    op["inputs"] = [3 if i == "conv" else base + i for i in op["inputs"]]
    op["outputs"] = [base + i for i in op["outputs"]]
    ops.append(op)
    return model(ops, tensors)


def by_op(placed):
    return dict((p["op"], p) for p in placed)


def test_the_table_names_its_source_and_maps_the_common_int8_ops():
    table = vx_delegate.load_table()
    assert table["source"]["repository"] == "VeriSilicon/tflite-vx-delegate"
    assert len(table["source"]["commit"]) == 40
    for op in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "SOFTMAX", "ADD", "MAX_POOL_2D", "MEAN"):
        assert op in table["ops"], op
    assert any("per-tensor" in note for note in table["notes"])
    for rules in list(table["ops"].values()) + [table["generic"]]:
        for rule in rules:
            assert rule["rule"] in vx_delegate.RULES and rule["text"]


def test_an_int8_conv_chain_is_delegated_whole():
    m = conv_chain({"name": "MAX_POOL_2D", "inputs": ["conv"], "outputs": [0],
                    "options": {"filter_width": 2, "filter_height": 2}}, [t("out", "int8", (1, 4, 4, 8))])
    placed = vx_delegate.place_ops(m)
    assert [p["placement"] for p in placed] == ["npu", "npu"]


def test_an_op_the_delegate_does_not_map_is_named_as_cpu_fallback():
    m = conv_chain({"name": "MIRROR_PAD", "inputs": ["conv", 0], "outputs": [1]},
                   [t("pads", "int32", (4, 2), True, []), t("out", "int8", (1, 10, 10, 8))])
    placed = by_op(vx_delegate.place_ops(m))
    assert placed["CONV_2D"]["placement"] == "npu"
    assert placed["MIRROR_PAD"]["placement"] == "cpu"
    assert "MIRROR_PAD is not mapped by the VX delegate" in placed["MIRROR_PAD"]["reason"]


def test_a_failed_constraint_is_named():
    # the delegate refuses int8 BATCH_MATMUL (its own check), though it maps the op
    tensors = [t("a", "int8", (1, 4, 8)), t("b", "int8", (1, 8, 4)), t("out", "int8", (1, 4, 4))]
    m = model([{"name": "BATCH_MATMUL", "inputs": [0, 1], "outputs": [2], "options": {"adj_x": False, "adj_y": False}}],
              tensors)
    placement, reason = vx_delegate.place_op(m, m["ops"][0], vx_delegate.load_table())
    assert placement == "cpu" and "no int8 input" in reason


def test_generic_checks_apply_to_every_op():
    tensors = [t("in", "int8", (1, 1, 1, 1, 1, 1, 2)), t("out", "int8", (1, 1, 1, 1, 1, 1, 2))]
    m = model([{"name": "RELU", "inputs": [0], "outputs": [1]}], tensors)
    placement, reason = vx_delegate.place_op(m, m["ops"][0], vx_delegate.load_table())
    assert placement == "cpu" and "rank > 6" in reason


def test_a_rule_the_file_cannot_decide_is_unknown_not_guessed():
    tensors = [t("in", "int8", (1, 8)), t("begin", "int32", (2,), True, []), t("end", "int32", (2,), True, []),
               t("strides", "int32", (2,), True, []), t("out", "int8", (1, 4))]
    m = model([{"name": "STRIDED_SLICE", "inputs": [0, 1, 2, 3], "outputs": [4], "options": None}], tensors)
    placement, reason = vx_delegate.place_op(m, m["ops"][0], vx_delegate.load_table())
    assert placement == "unknown" and "new_axis_mask" in reason


def test_dequantize_of_a_per_channel_tensor_falls_back():
    tensors = [t("w", "int8", (8, 3), True, [0.1] * 8), t("out", "float32", (8, 3), scales=[])]
    m = model([{"name": "DEQUANTIZE", "inputs": [0], "outputs": [1]}], tensors)
    placement, reason = vx_delegate.place_op(m, m["ops"][0], vx_delegate.load_table())
    assert placement == "cpu" and "per-channel" in reason


def test_custom_ops():
    tensors = [t("in", "int8", (1, 4)), t("out", "int8", (1, 4))]
    table = vx_delegate.load_table()
    nbg = model([{"name": "CUSTOM", "custom_code": "vsi-npu", "inputs": [0], "outputs": [1]}], tensors)
    other = model([{"name": "CUSTOM", "custom_code": "MyOp", "inputs": [0], "outputs": [1]}], tensors)
    assert vx_delegate.place_op(nbg, nbg["ops"][0], table)[0] == "npu"
    assert vx_delegate.place_op(other, other["ops"][0], table) == ("cpu", "custom op 'MyOp' is not mapped by the "
                                                                          "VX delegate")


def test_vx_entry_counts_ops_and_macs():
    m = conv_chain({"name": "MIRROR_PAD", "inputs": ["conv", 0], "outputs": [1]},
                   [t("pads", "int32", (4, 2), True, []), t("out", "int8", (1, 10, 10, 8))])
    table = vx_delegate.load_table()
    entry = npu_targets.vx_entry("imx8mp", m, vx_delegate.place_ops(m, table), table)
    assert entry["ops_total"] == 2 and entry["ops_on_npu"] == 1 and entry["npu_ops_fraction"] == 0.5
    assert entry["ops_on_cpu"][0]["op"] == "MIRROR_PAD"
    assert entry["model_macs"] == 8 * 8 * 8 * 3 * 3 * 3 and entry["npu_macs_fraction"] == 1.0
    assert entry["estimated_ms"] is None and entry["sram_bytes"] is None
    assert entry["compiler"].startswith("VX delegate op table (VeriSilicon/tflite-vx-delegate op_map.cc @")
    assert npu_targets.strict_failures([entry]) == [
        "imx8mp: 1 op(s) on the CPU: MIRROR_PAD (MIRROR_PAD is not mapped by the VX delegate)"]


VELA_OUTPUT = """Warning: No configuration file specified. Using a default of ['vela.ini'].

Warning (supported operators) operator: GATHER, ofm: 'model/gather;axis'
Reason: Unsupported opType
Warning (supported operators) operator: CONV_2D, ofm: 'model/conv2'
Reason: Stride values for both width and height must be in the range [1, 3]
Reason: Kernel element sum must be below 1000000

Network summary for m
CPU operators = 2 (40.0%)
   CPU: Passthrough = model/gather;axis (outputs [1, 8, 8, 4])
   CPU: Passthrough = model/conv2 (outputs [1, 2, 2, 8])
NPU operators = 3 (60.0%)
   NPU: Conv2D = model/conv1 (outputs [1, 8, 8, 8])
"""


def test_vela_text_is_read_back_per_op():
    reasons = vela.parse_cpu_reasons(VELA_OUTPUT)
    assert reasons["model/gather;axis"] == {"op": "GATHER", "reasons": ["Unsupported opType"]}
    assert reasons["model/conv2"]["reasons"] == ["Stride values for both width and height must be in the range "
                                                 "[1, 3]", "Kernel element sum must be below 1000000"]
    assert vela.parse_cpu_lines(VELA_OUTPUT) == ["model/gather;axis", "model/conv2"]


def test_vela_entry_names_each_cpu_op_with_its_reason(tmp_path):
    tensors = [t("in", "int8", (1, 8, 8, 3)), t("w", "int8", (8, 3, 3, 3), True), t("model/conv1", "int8", (1, 8, 8, 8)),
               t("idx", "int32", (4,), True, []), t("model/gather;axis", "int8", (1, 8, 8, 4))]
    m = model([{"name": "CONV_2D", "inputs": [0, 1, -1], "outputs": [2]},
               {"name": "GATHER", "inputs": [2, 3], "outputs": [4]}], tensors)
    summary_csv = tmp_path / "m_summary_X.csv"
    summary_csv.write_text("accelerator_configuration,system_config,memory_mode,core_clock,inference_time,"
                           "sram_memory_used,dram_memory_used,on_chip_flash_memory_used,off_chip_flash_memory_used,"
                           "nn_macs,cycles_total\nEthos_U55_128,Ethos_U55_High_End_Embedded,Shared_Sram,500000000.0,"
                           "4.1e-06,0.75,0.0,0.0,1.703125,14848,2049\n")
    result = {"status": "ok", "summary": vela.parse_summary(str(summary_csv)), "version": "5.2.0",
              "cpu_reasons": vela.parse_cpu_reasons(VELA_OUTPUT), "cpu_names": vela.parse_cpu_lines(VELA_OUTPUT),
              "compiled": "model_int8_vela_ethos-u55-128.tflite", "seconds": 0.5}
    entry = npu_targets.vela_entry("ethos-u55-128", m, result)
    assert entry["ops_on_npu"] == 1 and entry["npu_ops_fraction"] == 0.5
    gather = [o for o in entry["ops_on_cpu"] if o["op"] == "GATHER"]
    assert gather == [{"op": "GATHER", "name": "model/gather;axis", "reason": "Unsupported opType"}]
    # Vela named an op the model does not have: kept, not dropped
    assert any(o["name"] == "model/conv2" for o in entry["ops_on_cpu"])
    assert entry["estimated_ms"] == pytest.approx(0.0041)
    assert entry["sram_bytes"] == 768 and entry["dram_bytes"] == 0 and entry["flash_bytes"] == 1744
    assert entry["system_config"] == "Ethos_U55_High_End_Embedded" and entry["memory_mode"] == "Shared_Sram"
    assert "Ethos_U55_High_End_Embedded" in entry["notes"][0]


def test_a_failed_compilation_is_an_entry_and_a_strict_failure():
    tensors = [t("in", "int8", (1, 4)), t("out", "int8", (1, 4))]
    m = model([{"name": "RELU", "inputs": [0], "outputs": [1]}], tensors)
    entry = npu_targets.vela_entry("ethos-u65-256", m, {"status": "error", "error": "Vela exited with status 1"})
    assert entry["status"] == "error" and entry["ops_on_npu"] is None
    assert npu_targets.strict_failures([entry]) == ["ethos-u65-256: not compiled (Vela exited with status 1)"]


def test_strict_check_refuses_a_cpu_fallback_of_a_fully_int8_model():
    from converters.errors import NotInt8Error

    result = {"verdict": "ready", "problems": [], "targets": [
        {"target": "ethos-u55-128", "status": "ok", "ops_on_cpu": [{"op": "GATHER", "name": "g", "reason": "r"}]}]}
    with pytest.raises(NotInt8Error) as caught:
        npu.strict_check(result)
    assert "ethos-u55-128: 1 op(s) on the CPU: GATHER (r)" in caught.value.message
    result["targets"][0]["ops_on_cpu"] = []
    npu.strict_check(result)  # every op on the NPU: no error


def test_target_names_agree_between_host_and_tf2():
    assert tuple(npu_targets.TARGETS) == options.NPU_TARGETS
    assert npu_targets.ALIASES == options.NPU_TARGET_ALIASES
    assert npu_targets.DEFAULT == options.DEFAULT_NPU_TARGET


def test_preflight_makes_target_names_canonical_and_refuses_unknown_ones():
    assert preflight_options.check_npu_targets(None) == ["imx8mp"]
    assert preflight_options.check_npu_targets(["Ethos_U65_256", "imx93", "imx8mp"]) == ["ethos-u65-256", "imx8mp"]
    with pytest.raises(UsageError) as caught:
        preflight_options.check_npu_targets(["ethos-u65-128"])
    assert "ethos-u65-128" in caught.value.message and "did you mean" in caught.value.message


def test_npu_target_is_repeatable_and_reaches_the_step():
    args = options.parse(options.CONVERT, ["m.h5", "--npu-target", "ethos-u55-128", "--npu-target", "imx8mp"])
    assert args.npu_target == ["ethos-u55-128", "imx8mp"]
    argv = options.step_argv(options.values_of(args), options.TFLITE)
    assert argv[argv.index("--npu-target"):][:4] == ["--npu-target", "ethos-u55-128", "--npu-target", "imx8mp"]
    assert options.parse(options.CONVERT, ["m.h5"]).npu_target == ["imx8mp"]


def test_report_shows_each_target_with_its_cpu_ops():
    from converters.tf2 import report

    m = conv_chain({"name": "MIRROR_PAD", "inputs": ["conv", 0], "outputs": [1]},
                   [t("pads", "int32", (4, 2), True, []), t("out", "int8", (1, 10, 10, 8))])
    table = vx_delegate.load_table()
    entry = npu_targets.vx_entry("imx8mp", m, vx_delegate.place_ops(m, table), table)
    lines = "\n".join(report.target_markdown(entry))
    assert "### imx8mp" in lines and "| CPU | MIRROR_PAD | out | MIRROR_PAD is not mapped by the VX delegate |" in lines
    assert "per-tensor" in lines
    title, value, detail, tone = report.target_card(entry)
    assert (title, value, tone) == ("NPU imx8mp", "1/2 ops on NPU", "bad")
