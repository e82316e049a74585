"""report.md / report.html say which model the per-layer debugger's figures are of (``report.layers_source``):
the written file, or the calibrated model's own quantization when the chosen candidate's edits could not be
put into the debugger's model."""

import pytest

from converters.tf2 import report

pytestmark = pytest.mark.unit


def _report(chosen, copied=None):
    info = {} if copied is None else {"values_from_written_file": copied}
    return {"layers_info": info, "quantization": {"chosen": chosen}}


@pytest.mark.parametrize("chosen", ["plain", "cle", None])
def test_a_candidate_without_value_edits_is_the_debuggers_own_quantization(chosen):
    assert report.layers_source(_report(chosen)).startswith("Layers of the written file (")


def test_the_written_files_values_put_into_the_debugger_are_counted():
    text = report.layers_source(_report("gptq+ebias", {"copied": 12, "changed": 12, "skipped": []}))
    assert text.startswith("Layers of the written file:") and "12 int8" in text and "gptq+ebias" in text


@pytest.mark.parametrize("copied, why", [
    ({"copied": 0, "changed": 0, "skipped": ["the two models do not have the same quantized linear ops (3 and 4)"]},
     "(3 and 4)"),
    ({"copied": 0, "changed": 0, "skipped": [], "error": "ValueError: broken"}, "ValueError: broken"),
])
def test_edits_that_could_not_be_put_in_are_said_with_the_reason(copied, why):
    text = report.layers_source(_report("ebias", copied))
    assert text.startswith("Layers of the calibrated model's own quantization, without ebias's edits") and why in text


def test_a_value_edit_with_no_record_is_not_called_the_written_file():
    assert "without cle+bias's edits" in report.layers_source(_report("cle+bias"))
