"""The CLI's one line on how the int8 model was made (converters.convert.quantization_summary): host side."""

import pytest

from converters import convert

pytestmark = pytest.mark.unit


def test_the_line_says_what_was_chosen_and_what_the_search_cost():
    report = {"quantization": {"chosen": "bias", "why": "+0.29 dB", "plain_path": "model_int8_plain.tflite",
                               "plain_probe": {"sqnr_db": 32.16, "top1_agreement": None},
                               "candidates": [{"name": "plain"}, {"name": "bias"}], "timings": {"total": 24.6}}}
    line = convert.quantization_summary(report)
    assert line.startswith("quantization: bias (+0.29 dB)")
    assert "plain model_int8_plain.tflite gives SQNR 32.2 dB" in line
    assert line.endswith("the search took 25 s (--quantize plain skips it)")


def test_plain_alone_has_no_search_to_cost():
    report = {"quantization": {"chosen": "plain", "why": "asked for alone", "candidates": [{"name": "plain"}],
                               "timings": {"total": 1.0}}}
    assert "search took" not in convert.quantization_summary(report)
    assert convert.quantization_summary({}) is None
