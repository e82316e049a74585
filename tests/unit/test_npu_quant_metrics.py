"""Pure pieces of the int8 checks: decisive top-1, per-layer debugger statistics, I/O (de)quantization."""

import numpy as np
import pytest

from converters.tf2 import quant_debug, tflite_run

pytestmark = pytest.mark.unit


def test_decisive_top1_ignores_near_ties():
    scale = 0.01
    reference = np.array([[0.50, 0.495, 0.0],    # margin 0.5 LSB: a tie for int8
                          [0.90, 0.10, 0.0],     # margin 80 LSB: decisive
                          [0.20, 0.60, 0.2]])    # decisive
    flipped = np.array([[0.49, 0.50, 0.0], [0.90, 0.10, 0.0], [0.2, 0.6, 0.2]])
    agreement, count = tflite_run.decisive_top1(reference, flipped, scale)
    assert (agreement, count) == (1.0, 2)
    wrong = flipped.copy()
    wrong[1] = [0.1, 0.9, 0.0]
    assert tflite_run.decisive_top1(reference, wrong, scale) == (0.5, 2)
    assert tflite_run.decisive_top1(np.ones((2, 4, 4)), np.ones((2, 4, 4)), scale) == (None, 0)


def test_quantize_dequantize_round_trip_with_tensor_parameters():
    detail = {"dtype": np.int8, "quantization": (0.5, -10)}
    x = np.array([-100.0, -59.0, 0.0, 1.2, 58.5, 100.0])
    q = tflite_run.quantize(x, detail)
    assert q.dtype == np.int8 and list(q) == [-128, -128, -10, -8, 107, 127]  # clipped at both ends
    np.testing.assert_allclose(tflite_run.dequantize(q, detail), [-59, -59, 0, 1.0, 58.5, 68.5])
    uint8 = {"dtype": np.uint8, "quantization": (1.0, 0)}
    assert list(tflite_run.quantize(np.array([-3.0, 300.0]), uint8)) == [0, 255]
    floating = {"dtype": np.float32, "quantization": (0.0, 0)}
    assert tflite_run.quantize(np.array([1.5]), floating).dtype == np.float32


def test_debugger_statistics_become_rmse_over_scale_with_flags():
    csv_text = ("op_name,tensor_idx,num_elements,stddev,mean_error,max_abs_error,mean_squared_error,scale,"
                "zero_point,tensor_name\n"
                "CONV_2D,7,100,0.1,0.0,0.2,0.0001,0.01,0,conv1\n"
                "ADD,9,100,0.1,0.0,0.2,0.0064,0.1,0,add1\n"
                "MEAN,11,100,0.1,0.0,0.2,0.01,0.1,0,pool\n")
    layers = quant_debug.parse_statistics(csv_text)
    assert [layer["name"] for layer in layers] == ["conv1", "add1", "pool"]
    assert [layer["rmse_over_scale"] for layer in layers] == [1.0, 0.8, 1.0]
    assert [layer["flagged"] for layer in layers] == [True, True, True]
    calm = quant_debug.parse_statistics(csv_text.replace("0.0064", "0.0009"))
    assert calm[1]["rmse_over_scale"] == 0.3 and not calm[1]["flagged"]
