"""converters.shared.graph_order: topological order, stable, with cycles kept as written."""

import pytest

from converters.shared.graph_order import topological

pytestmark = pytest.mark.unit


def test_inputs_come_first_and_the_written_order_breaks_ties():
    inputs = {"c": ["a", "b"], "b": ["a"], "a": [], "d": []}
    # a and d are ready at the start; the smaller written position goes first (a: 2, d: 3); b is ready
    # after a, and its position (1) is smaller than d's
    assert topological(["c", "b", "a", "d"], inputs.get) == ["a", "b", "c", "d"]


def test_names_outside_the_graph_are_ignored_and_cycles_keep_their_order():
    inputs = {"x": ["placeholder_elsewhere"], "loop1": ["loop2", "x"], "loop2": ["loop1"], "y": ["x"]}
    assert topological(["loop1", "loop2", "x", "y"], inputs.get) == ["x", "y", "loop1", "loop2"]
