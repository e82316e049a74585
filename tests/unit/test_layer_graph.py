"""converters.shared.layer_graph: configs Keras 2 would rebuild forever are refused (no Keras here)."""

import pytest

from converters.errors import ModelLoadError
from converters.shared import layer_graph

pytestmark = pytest.mark.unit


def model(layers, name="m"):
    return {"class_name": "Model", "config": {"name": name, "layers": layers,
                                              "input_layers": [["x", 0, 0]], "output_layers": [["d", 0, 0]]}}


def layer(name, *inputs):
    return {"name": name, "class_name": "Dense", "config": {"name": name},
            "inbound_nodes": [[[source, 0, 0, {}] for source in inputs]] if inputs else []}


def test_a_sound_graph_and_a_sequential_pass():
    assert layer_graph.problems(model([layer("x"), layer("a", "x"), layer("d", "a", "x")])) == []
    assert layer_graph.problems({"class_name": "Sequential", "config": [{"class_name": "Dense"}]}) == []


def test_a_dangling_input_a_cycle_and_a_missing_output_are_named():
    dangling = model([layer("x"), layer("a", "ghost"), layer("d", "a")])
    assert layer_graph.problems(dangling) == ["in m, layer 'a' takes its input from 'ghost', which the config "
                                              "does not have"]
    cycle = model([layer("x"), layer("a", "x", "d"), layer("d", "a")])
    assert layer_graph.problems(cycle) == ["in m, layers a, d feed each other in a cycle"]
    nested = model([layer("x"), {"name": "inner", "class_name": "Model", "inbound_nodes": [[["x", 0, 0, {}]]],
                                 "config": {"name": "inner", "layers": [layer("i"), layer("j", "nowhere")]}},
                    layer("d", "inner")])
    assert layer_graph.problems(nested) == ["in inner, layer 'j' takes its input from 'nowhere', which the "
                                            "config does not have"]
    empty = model([layer("x"), dict(layer("a"), inbound_nodes=[[]]), layer("d", "a")])
    assert layer_graph.problems(empty) == ["in m, layer 'a' has an inbound node that names no input layer"]
    no_output = model([layer("x"), layer("a", "x")])
    assert layer_graph.problems(no_output) == ["in m, output_layers names 'd', which the config does not have"]
    with pytest.raises(ModelLoadError) as caught:
        layer_graph.check(dangling, "x.h5")
    assert caught.value.step == "load" and "is not a graph Keras can rebuild" in caught.value.paragraph()
