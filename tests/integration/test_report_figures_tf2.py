"""The search's report-only figures (issue 31) are the same whether computed inline or later in a thread,
and a failure there never fails a conversion.

Runs inside tf2 with real TF 2.21: the search of ``converters.tf2.recovery.search`` on
test_requantize_tf2's small CNN and scikit-image patches, with TensorFlow's own calibrator and quantizer.
Tolerance: none (the same code on the same inputs and interpreters: the figures must be equal).
"""

import os

import pytest

from tests.integration.test_requantize_tf2 import _quantizer, setup  # noqa: F401 - the module's fixture

pytestmark = pytest.mark.tf2

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")


def test_the_deferred_figures_equal_the_inline_ones(setup):  # noqa: F811
    from converters.tf2 import beside, calibrate
    from converters.tf2.recovery import search

    args = (setup["float"], setup["samples"], search.parse("bias,cle,cle+bias"), setup["calibrate"],
            _quantizer(False))
    _, _, _, inline, inline_extras = search.search(*args)
    chosen, _, _, deferred, extras = search.search(*args, defer_report=True)
    assert "report_work" not in inline_extras
    assert "float_check" not in deferred.get("cle", {}) and "bias_float_moved" not in deferred
    figures = beside.Background(extras.pop("report_work")).result()
    search.merge_report_work(deferred, figures)
    assert inline["cle"]["float_check"] == deferred["cle"]["float_check"]
    assert inline["cle"].get("judged") == deferred["cle"].get("judged")
    for key in ("bias_float_moved", "layers", "layers_samples", "chosen"):
        assert inline.get(key) == deferred.get(key), key
    if chosen is not None and deferred["chosen"] != "plain":
        assert deferred["layers"]  # the per-layer errors of plain and the chosen file were computed
    assert "layers" in deferred["timings"]


def test_a_failure_in_the_figures_is_a_report_line_not_a_failed_run():
    from converters.tf2 import beside, calibrate

    def broken():
        raise MemoryError("no room for the float model")

    value = beside.Background(broken).result()
    assert value == {"report_figures_error": "MemoryError: no room for the float model"}
