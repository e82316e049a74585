"""The one tolerance policy of the parity matrix (converters.verify.tolerate): which failed cells fail a run."""

import os

import pytest

from converters import verify

pytestmark = pytest.mark.unit
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def lambda_cells(graph_status):
    cells = [{"env": "tf1.15", "status": "match"}, {"env": "tf2-graph", "status": graph_status}]
    for env in ("tf2", "tf2-keras3", "tf2-keras3-migrated"):
        cells.append({"env": env, "status": "load_error", "cause": "lambda_bytecode"})
    return verify.tolerate(cells)


def test_every_model_gets_a_frozen_graph_cell_in_tf2():
    assert ("tf2-graph", "tf2", "graph") in verify.cells_for("tf1.13")
    assert ("tf2-graph", "tf2", "graph") in verify.cells_for("tf1.15", keras3=False)


def test_lambda_load_errors_in_python_3_11_are_tolerated_only_when_the_graph_matches():
    good = dict((cell["env"], cell["tolerated"]) for cell in lambda_cells("match"))
    assert good == {"tf1.15": False, "tf2-graph": False, "tf2": True, "tf2-keras3": True,
                    "tf2-keras3-migrated": True}
    for status in ("mismatch", "load_error"):
        bad = dict((cell["env"], cell["tolerated"]) for cell in lambda_cells(status))
        assert not bad["tf2"] and not bad["tf2-keras3-migrated"] and not bad["tf2-graph"]
        assert bad["tf2-keras3"]  # Keras 3 reading the .h5 as it is: a load_error is always tolerated


def test_a_load_error_of_another_cause_is_not_tolerated_by_the_graph():
    cells = verify.tolerate([{"env": "tf2-graph", "status": "match"}, {"env": "tf2", "status": "load_error"},
                             {"env": "tf2-keras3-migrated", "status": "load_error"}])
    assert [cell["tolerated"] for cell in cells] == [False, False, False]


def test_a_graph_load_error_is_tolerated_only_when_tf_keras_matches():
    for tf2, expected in (("match", True), ("mismatch", False), ("load_error", False)):
        cells = verify.tolerate([{"env": "tf2", "status": tf2}, {"env": "tf2-graph", "status": "load_error"}])
        assert cells[1]["tolerated"] is expected
    mismatch = verify.tolerate([{"env": "tf2", "status": "match"}, {"env": "tf2-graph", "status": "mismatch"}])
    assert mismatch[1]["tolerated"] is False


def test_the_policy_is_stated_in_the_docstring_the_docs_and_the_report():
    with open(os.path.join(REPO, "docs", "parity.md")) as handle:
        page = handle.read()
    for text in (verify.__doc__, page, verify.POLICY):
        assert "tf2-graph" in text and "lambda_bytecode" in text and "tf2-keras3-migrated" in text
