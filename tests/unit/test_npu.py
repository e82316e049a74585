"""The NPU readiness decision on hand-made op/tensor lists (pure logic, no TF)."""

import pytest

from converters.tf2 import npu


def t(name, dtype, constant=False, signature=None):
    return {"name": name, "dtype": dtype, "is_constant": constant, "shape": [1, 4],
            "shape_signature": signature if signature is not None else [1, 4]}


def int8_chain():
    tensors = [t("in", "int8"), t("w", "int8", True), t("b", "int32", True), t("conv", "int8"), t("out", "int8")]
    ops = [{"name": "CONV_2D", "inputs": [0, 1, 2], "outputs": [3]},
           {"name": "SOFTMAX", "inputs": [3], "outputs": [4]}]
    return ops, tensors, [0], [4]


@pytest.mark.unit
def test_all_int8_with_int32_bias_is_ready():
    result = npu.assess(*int8_chain())
    assert result["verdict"] == "ready" and result["fully_int8"] is True
    assert result["problems"] == [] and result["ops"] == {"CONV_2D": 1, "SOFTMAX": 1}


@pytest.mark.unit
def test_float_io_with_boundary_quantize_is_partial():
    tensors = [t("in", "float32"), t("q", "int8"), t("w", "int8", True), t("conv", "int8"), t("out", "float32")]
    ops = [{"name": "QUANTIZE", "inputs": [0], "outputs": [1]},
           {"name": "CONV_2D", "inputs": [1, 2, -1], "outputs": [3]},
           {"name": "DEQUANTIZE", "inputs": [3], "outputs": [4]}]
    result = npu.assess(ops, tensors, [0], [4])
    assert result["verdict"] == "partial" and not result["fully_int8"]
    assert any("input in is float32" in p for p in result["problems"])
    assert any("DEQUANTIZE at the model boundary" in p for p in result["problems"])
    assert result["float_ops"] == []


@pytest.mark.unit
def test_uint8_io_is_partial():
    tensors = [t("in", "uint8"), t("q", "int8"), t("out", "int8")]
    ops = [{"name": "QUANTIZE", "inputs": [0], "outputs": [1]}, {"name": "RELU", "inputs": [1], "outputs": [2]}]
    result = npu.assess(ops, tensors, [0], [2])
    assert result["verdict"] == "partial"


@pytest.mark.unit
def test_float_island_is_not_ready_and_names_the_op():
    # what TF 2.21 really writes for tf.sin: int8 -> DEQUANTIZE -> SIN (float) -> QUANTIZE -> int8
    tensors = [t("in", "int8"), t("deq", "float32"), t("sin", "float32"), t("q", "int8"), t("out", "int8")]
    ops = [{"name": "DEQUANTIZE", "inputs": [0 + 0], "outputs": [1]},
           {"name": "SIN", "inputs": [1], "outputs": [2]},
           {"name": "QUANTIZE", "inputs": [2], "outputs": [3]},
           {"name": "RELU", "inputs": [3], "outputs": [4]}]
    result = npu.assess(ops, tensors, [0], [4])
    assert result["verdict"] == "not_ready" and not result["fully_int8"]
    assert result["float_ops"] == ["SIN"]
    assert "sin" in result["float_tensors"] and "deq" in result["float_tensors"]
    assert any("QUANTIZE in the middle" in p for p in result["problems"])


@pytest.mark.unit
def test_float_weight_constant_is_not_ready():
    ops, tensors, inputs, outputs = int8_chain()
    tensors[1] = t("w", "float32", True)
    result = npu.assess(ops, tensors, inputs, outputs)
    assert result["verdict"] == "not_ready" and "CONV_2D" in result["float_ops"]


@pytest.mark.unit
def test_dynamic_shape_is_not_ready():
    ops, tensors, inputs, outputs = int8_chain()
    tensors[0] = t("in", "int8", signature=[-1, 4])
    result = npu.assess(ops, tensors, inputs, outputs)
    assert result["verdict"] == "not_ready"
    assert any("dynamic shape" in p for p in result["problems"])


@pytest.mark.unit
@pytest.mark.parametrize("dtype", ["int64", "int16", "bool"])
def test_non_int8_activation_is_not_ready(dtype):
    ops, tensors, inputs, outputs = int8_chain()
    tensors[3] = t("conv", dtype)
    result = npu.assess(ops, tensors, inputs, outputs)
    assert result["verdict"] == "not_ready"
    assert any("conv is %s" % dtype in p for p in result["problems"])


@pytest.mark.unit
def test_variable_int32_is_not_ready_but_constant_int32_is_fine():
    ops, tensors, inputs, outputs = int8_chain()
    tensors[3] = t("conv", "int32")
    variable = npu.assess(ops, tensors, inputs, outputs)
    assert variable["verdict"] == "not_ready"
    assert any("conv is int32" in problem for problem in variable["problems"])
    # the constant case: an int32 shape operand (and the int32 bias) of int8 ops is fine
    tensors = [t("in", "int8"), t("w", "int8", True), t("b", "int32", True), t("conv", "int8"),
               t("shape", "int32", True), t("flat", "int8"), t("out", "int8")]
    ops = [{"name": "CONV_2D", "inputs": [0, 1, 2], "outputs": [3]},
           {"name": "RESHAPE", "inputs": [3, 4], "outputs": [5]},
           {"name": "SOFTMAX", "inputs": [5], "outputs": [6]}]
    constant = npu.assess(ops, tensors, [0], [6])
    assert constant["verdict"] == "ready" and constant["fully_int8"] is True
    assert not constant["problems"] and not constant["float_ops"]


@pytest.mark.unit
def test_int8_requantize_is_a_note_not_a_problem():
    tensors = [t("in", "int8"), t("rq", "int8"), t("out", "int8")]
    ops = [{"name": "QUANTIZE", "inputs": [0], "outputs": [1]}, {"name": "RELU", "inputs": [1], "outputs": [2]}]
    result = npu.assess(ops, tensors, [0], [2])
    assert result["verdict"] == "ready" and result["notes"]


@pytest.mark.unit
def test_weight_granularity_counts_scales():
    summary = {"tensors": [
        dict(t("w1", "int8", True), shape=[8, 3, 3, 3], scales=[0.1] * 8),
        dict(t("w2", "int8", True), shape=[4, 8], scales=[0.1]),
        dict(t("b", "int32", True), shape=[8], scales=[0.01] * 8),
        dict(t("act", "int8"), shape=[1, 8], scales=[0.2]),
    ]}
    assert npu.weight_granularity(summary) == {"per_channel": 1, "per_tensor": 1}
