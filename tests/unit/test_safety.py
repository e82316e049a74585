"""converters.safety: the Lambda gate finds stored code anywhere in a Keras model config (host, no TF).

The configs below are written by hand in the shapes keras 2.2.4 / tf.keras / Keras 3 store (the
integration tests check the same on files that real keras 2.2.4 wrote). A property-style test wraps one
Lambda in 300 random nestings of containers and checks the gate names it with the right path each time.
"""

import base64
import json
import marshal
import random

import pytest

from converters import safety
from converters.errors import UntrustedModelError

pytestmark = pytest.mark.unit

CODE = base64.b64encode(marshal.dumps((lambda x: x).__code__)).decode("ascii")  # what tf.keras/keras 2.2.4 store
RAW_CODE = marshal.dumps((lambda x: x).__code__).decode("raw_unicode_escape")  # what older keras 2.x stores


def lambda_layer(name="lambda_1", class_name="Lambda", output_shape_fn=False, inbound=False):
    config = {"name": name, "trainable": True, "function": [CODE, None, None], "function_type": "lambda",
              "output_shape": [CODE, None, None] if output_shape_fn else None,
              "output_shape_type": "lambda" if output_shape_fn else "raw", "arguments": {}}
    layer = {"class_name": class_name, "config": config}
    if inbound:
        layer.update(name=name, inbound_nodes=[[["input_1", 0, 0, {}]]])
    return layer


def dense(name):
    return {"class_name": "Dense", "name": name, "config": {
        "name": name, "units": 3, "activation": "relu",
        "kernel_initializer": {"class_name": "VarianceScaling",
                               "config": {"scale": 1.0, "mode": "fan_avg", "distribution": "uniform", "seed": None}},
        "bias_initializer": {"class_name": "Zeros", "config": {}}, "kernel_regularizer": None},
        "inbound_nodes": [[["input_1", 0, 0, {}]]]}


def functional(name, layers, class_name="Model"):
    return {"class_name": class_name, "name": name, "config": {
        "name": name,
        "layers": [{"class_name": "InputLayer", "name": "input_1",
                    "config": {"batch_input_shape": [None, 4, 6], "dtype": "float32", "name": "input_1"},
                    "inbound_nodes": []}] + layers,
        "input_layers": [["input_1", 0, 0]], "output_layers": [[getattr(layers[-1], "get", {}.get)("name", "x"), 0, 0]]},
        "inbound_nodes": [[["input_1", 0, 0, {}]]]}


def saved(model):
    """As an .h5 model_config / to_json() stores it."""
    return {"class_name": model["class_name"], "config": model["config"], "keras_version": "2.2.4",
            "backend": "tensorflow"}


def paths(config):
    return [(f["kind"], f["path"]) for f in safety.scan_config(config)]


# ----------------------------------------------------------------------------- every nesting, by hand

NESTINGS = {
    "top_level": (functional("model_1", [lambda_layer(inbound=True), dense("dense_1")]), "lambda_1"),
    "time_distributed": (functional("model_1", [
        {"class_name": "TimeDistributed", "name": "time_distributed_1",
         "config": {"name": "time_distributed_1", "layer": lambda_layer()}}]), "time_distributed_1 > lambda_1"),
    "bidirectional_layer": (functional("model_1", [
        {"class_name": "Bidirectional", "name": "bidi",
         "config": {"name": "bidi", "merge_mode": "concat", "layer": {"class_name": "RNN", "config": {
             "name": "rnn", "go_backwards": False, "cell": {"class_name": "LambdaCell", "config": {
                 "name": "cell", "units": 3, "inner": lambda_layer("trap")}}}}}}]), "bidi > rnn > cell > trap"),
    "bidirectional_backward_layer": (functional("model_1", [
        {"class_name": "Bidirectional", "name": "bidi", "config": {
            "name": "bidi", "layer": {"class_name": "LSTM", "config": {"name": "lstm", "units": 2}},
            "backward_layer": {"class_name": "RNN", "config": {"name": "backward_rnn", "cells": [
                {"class_name": "LSTMCell", "config": {"name": "c0", "units": 2}}, lambda_layer("trap")]}}}}]),
        "bidi > backward_rnn > trap"),
    "sequential_in_model": (functional("model_1", [
        {"class_name": "Sequential", "name": "seq",
         "config": {"name": "seq", "layers": [dense("d"), lambda_layer("trap")]}}]), "seq > trap"),
    "old_sequential_bare_list_in_model": (functional("model_1", [
        {"class_name": "Sequential", "name": "sequential_1", "config": [dense("d"), lambda_layer("trap")]}]),
        "sequential_1 > trap"),
    "model_in_wrapper": (functional("outer", [
        {"class_name": "TimeDistributed", "name": "td", "config": {"name": "td", "layer": functional("mid", [
            functional("inner", [dense("inner_dense"), lambda_layer("trap", inbound=True)])])}}]),
        "td > mid > inner > trap"),
    "functional_tf2_in_functional": (functional("outer", [
        functional("sub", [lambda_layer("trap", inbound=True)], "Functional")], "Functional"), "sub > trap"),
    "output_shape_function": (functional("model_1", [lambda_layer("trap", output_shape_fn=True, inbound=True)]),
                              "trap"),
    "namespaced_class": (functional("model_1", [lambda_layer("trap", "keras.layers.Lambda", inbound=True)]),
                         "trap"),
    "registered_custom_lambda": (functional("model_1", [lambda_layer("trap", "Custom>Lambda", inbound=True)]),
                                 "trap"),
    "keras3_registered_name": (functional("model_1", [
        {"module": "my_package", "class_name": "Renamed", "registered_name": "my_package>Lambda",
         "config": {"name": "trap", "function": {"class_name": "__lambda__", "config": {"code": CODE}}}}]),
        "trap"),
    "unknown_wrapper_key": (functional("model_1", [
        {"class_name": "MyWrapper", "name": "wrap", "config": {
            "name": "wrap", "payload": {"stages": [{"steps": [lambda_layer("trap")]}]}}}]), "wrap > trap"),
}


@pytest.mark.parametrize("case", sorted(NESTINGS))
def test_every_nesting_is_found_with_its_path(case):
    model, expected = NESTINGS[case]
    config = saved(model)
    assert paths(config) == [("lambda", expected)]
    with pytest.raises(UntrustedModelError) as caught:
        safety.check_config(json.dumps(config), "model.h5", trust_model=False, step="load")
    paragraph = caught.value.paragraph()
    assert "model.h5 contains Lambda layer(s) %s;" % expected in paragraph
    assert "--trust-model" in paragraph and "\n" not in paragraph
    # with trust nothing is refused, and the findings are still returned (for the manifest)
    assert [f["path"] for f in safety.check_config(config, "model.h5", trust_model=True)] == [expected]


def test_every_lambda_is_named_in_one_paragraph():
    model = functional("m", [lambda_layer("a", inbound=True), {"class_name": "TimeDistributed", "name": "td",
                                                                 "config": {"name": "td", "layer": lambda_layer("b")}}])
    with pytest.raises(UntrustedModelError) as caught:
        safety.check_config(saved(model), "the architecture arch.json", False)
    assert "the architecture arch.json contains Lambda layer(s) a, td > b;" in caught.value.message
    assert caught.value.step == "gate" and caught.value.exit_code >= 2


def test_a_safe_model_passes():
    tf_op = {"class_name": "TFOpLambda", "name": "tf.math.sin",
             "config": {"name": "tf.math.sin", "function": "math.sin"}, "inbound_nodes": []}
    merge = {"class_name": "Concatenate", "name": "cat", "config": {"name": "cat", "axis": -1, "mode": "concat"}}
    model = functional("m", [dense("d1"), tf_op, merge, {"class_name": "TimeDistributed", "name": "td", "config": {
        "name": "td", "layer": dense("d2")}}])
    assert safety.scan_config(saved(model)) == []
    assert safety.check_config(json.dumps(saved(model)), "model.h5", trust_model=False) == []
    # old keras: a Sequential stored as a bare list of layers
    assert safety.check_config({"class_name": "Sequential", "config": [dense("d")]}, "m.h5", False) == []
    assert safety.check_config([dense("d")], "m.h5", False) == []


# ----------------------------------------------------------------------------- stored code elsewhere

MARSHALLED = {
    "function_type_under_unknown_class": ({"class_name": "MyFancy", "name": "fancy", "config": {
        "name": "fancy", "fn": {"function": [CODE, None, None], "function_type": "lambda"}}}, "fancy", "MyFancy"),
    "output_shape_type": ({"class_name": "Reshaper", "name": "r", "config": {
        "name": "r", "output_shape": [CODE, None, None], "output_shape_type": "lambda"}}, "r", "Reshaper"),
    "mask_type": ({"class_name": "Masker", "name": "mk", "config": {
        "name": "mk", "mask": [RAW_CODE, None, None], "mask_type": "lambda"}}, "mk", "Masker"),
    "keras1_merge_mode": ({"class_name": "Merge", "name": "merge_1", "config": {
        "name": "merge_1", "mode": [RAW_CODE, None, None], "mode_type": "lambda"}}, "merge_1", "Merge"),
    "bytecode_under_any_key": ({"class_name": "Opaque", "name": "op", "config": {
        "name": "op", "blob": {"payload": [CODE, [1.0], None]}}}, "op", "Opaque"),
    "raw_bytecode_in_a_list": ({"class_name": "Opaque", "name": "op", "config": {
        "name": "op", "steps": [[RAW_CODE, None, None]]}}, "op", "Opaque"),
    "keras3_lambda_object": ({"class_name": "Holder", "name": "h", "config": {
        "name": "h", "fn": {"class_name": "__lambda__", "config": {"code": CODE, "defaults": None}}}},
        "h > <__lambda__>", "__lambda__"),
}


@pytest.mark.parametrize("case", sorted(MARSHALLED))
def test_marshalled_code_outside_a_lambda_is_refused(case):
    layer, path, class_name = MARSHALLED[case]
    wrapped = {"class_name": "TimeDistributed", "name": "td", "config": {"name": "td", "layer": layer}}
    findings = safety.scan_config(saved(functional("m", [dense("d"), wrapped])))
    assert [(f["kind"], f["path"], f["class_name"]) for f in findings] == [("marshalled", "td > " + path, class_name)]
    with pytest.raises(UntrustedModelError) as caught:
        safety.check_config(saved(functional("m", [wrapped])), "model.h5", False)
    assert "model.h5 contains stored Python code outside a Lambda layer at td > %s" % path in caught.value.message
    assert safety.check_config(saved(functional("m", [wrapped])), "model.h5", True)


def test_lambda_and_marshalled_code_are_both_named():
    custom = {"class_name": "MyFancy", "name": "fancy", "config": {"name": "fancy", "function_type": "lambda"}}
    model = functional("m", [lambda_layer("trap", inbound=True), custom])
    with pytest.raises(UntrustedModelError) as caught:
        safety.check_config(saved(model), "model.h5", False)
    message = caught.value.message
    assert message.startswith("model.h5 contains Lambda layer(s) trap and stored Python code outside a Lambda "
                              "layer at fancy (class MyFancy")


def test_short_strings_and_names_are_not_mistaken_for_code():
    names = ["Ywxx1234", "4wEAAAAA", "\u00e3bc", "function", "concat", "lambda"]
    layers = [dense(name) for name in names]
    layers.append({"class_name": "Dense", "name": "d", "config": {"name": "d", "activation": "lambda"}})
    assert safety.scan_config(saved(functional("m", layers))) == []


# ----------------------------------------------------------------------------- fail closed

UNPARSABLE = {
    "not_json": "{'class_name': 'Model'",
    "truncated_json": json.dumps(saved(NESTINGS["top_level"][0]))[:200],
    "not_utf8": b"\xff\xfe{}",
    "json_number": "42",
    "json_string": "\"model\"",
    "dict_without_class_name": json.dumps({"config": {"layers": []}}),
    "dict_without_config": json.dumps({"class_name": "Model"}),
    "list_of_strings": json.dumps(["Dense", "Lambda"]),
    "too_deep_for_json": "[" * 100000 + "]" * 100000,
}


@pytest.mark.parametrize("case", sorted(UNPARSABLE))
def test_unparsable_config_is_refused_without_trust_and_allowed_with_it(case):
    text = UNPARSABLE[case]
    with pytest.raises(UntrustedModelError) as caught:
        safety.check_config(text, "model.h5", trust_model=False, step="load")
    assert "cannot be checked for stored code" in caught.value.message
    assert "--trust-model" in caught.value.paragraph()
    findings = safety.check_config(text, "model.h5", trust_model=True)
    assert [f["kind"] for f in findings] == ["unparsable"]


def test_a_deeply_nested_config_is_walked_without_recursion():
    layer = lambda_layer("trap")
    for depth in range(3000):
        layer = {"class_name": "TimeDistributed", "config": {"name": "t%d" % depth, "layer": layer}}
    findings = safety.scan_config(saved(functional("m", [layer])))
    assert len(findings) == 1 and findings[0]["path"].startswith("t2999 > t2998 >")
    assert findings[0]["path"].endswith("t0 > trap")


# ----------------------------------------------------------------------------- property: random nestings

def _wrap(rng, inner, counter):
    """``inner`` (a layer config) inside a random container; returns (config, name added to the path or None)."""
    counter[0] += 1
    name = "n%d" % counter[0]
    kind = rng.choice(["time_distributed", "bidirectional", "bidirectional_keys", "sequential",
                       "old_sequential", "model", "functional", "rnn_cell", "stacked_cells", "unknown_key",
                       "plain_dict", "plain_list"])
    siblings = [dense("s%d_%d" % (counter[0], i)) for i in range(rng.randint(0, 2))]
    if kind == "time_distributed":
        return {"class_name": "TimeDistributed", "name": name, "config": {"name": name, "layer": inner}}, name
    if kind == "bidirectional":
        return {"class_name": "Bidirectional", "name": name,
                "config": {"name": name, "layer": inner, "merge_mode": rng.choice(["concat", "sum", None])}}, name
    if kind == "bidirectional_keys":
        key = rng.choice(["forward_layer", "backward_layer"])
        config = {"name": name, "layer": dense("fw%d" % counter[0])}
        config[key] = inner
        return {"class_name": "Bidirectional", "name": name, "config": config}, name
    if kind == "sequential":
        layers = siblings + [inner]
        rng.shuffle(layers)
        return {"class_name": "Sequential", "name": name, "config": {"name": name, "layers": layers}}, name
    if kind == "old_sequential":
        layers = siblings + [inner]
        rng.shuffle(layers)
        return {"class_name": "Sequential", "name": name, "config": layers}, name
    if kind in ("model", "functional"):
        layers = siblings + [inner]
        rng.shuffle(layers)
        return functional(name, layers, "Model" if kind == "model" else "Functional"), name
    if kind == "rnn_cell":
        return {"class_name": rng.choice(["RNN", "SimpleRNN", "MyRNN"]), "name": name,
                "config": {"name": name, "cell": inner}}, name
    if kind == "stacked_cells":
        cells = siblings + [inner]
        rng.shuffle(cells)
        return {"class_name": "RNN", "name": name, "config": {"name": name, "cell": {
            "class_name": "StackedRNNCells", "config": {"name": name + "_cells", "cells": cells}}}}, \
            name + " > " + name + "_cells"
    if kind == "unknown_key":
        key = "k%d" % rng.randint(0, 99)
        holder = {key: inner} if rng.random() < 0.5 else {key: [rng.randint(0, 9), {"deeper": inner}]}
        config = {"name": name, "units": 4}
        config.update(holder)
        return {"class_name": "Custom%d" % rng.randint(0, 9), "name": name, "config": config}, name
    if kind == "plain_dict":  # a non-layer dict: adds nothing to the path
        return {"options": {"x%d" % rng.randint(0, 9): inner}, "class": "not-a-layer"}, None
    return [rng.randint(0, 9), None, inner], None  # a plain list


def test_property_random_nestings_around_one_lambda_are_always_found():
    rng = random.Random(20260416)
    for trial in range(300):
        counter = [0]
        name = "lam%d" % trial
        class_name = rng.choice(["Lambda", "Lambda", "keras.layers.Lambda", "Custom>Lambda", "keras.layers>Lambda"])
        node, path = lambda_layer(name, class_name, output_shape_fn=rng.random() < 0.3), [name]
        for _ in range(rng.randint(1, 7)):
            node, added = _wrap(rng, node, counter)
            if added:
                path.insert(0, added)
        if not isinstance(node, dict) or "class_name" not in node:  # the root model's layers hold layer configs
            node = {"class_name": "Custom", "name": "holder", "config": {"name": "holder", "x": node}}
            path.insert(0, "holder")
        root = functional("root", [dense("first"), node]) if rng.random() < 0.8 else {
            "class_name": "Sequential", "config": [dense("first"), node]}
        text = json.dumps(saved(root) if "name" in root else root, sort_keys=rng.random() < 0.5)
        expected = " > ".join(path)
        assert paths(json.loads(text)) == [("lambda", expected)], (trial, text[:2000])
        with pytest.raises(UntrustedModelError) as caught:
            safety.check_config(text, "model.h5", trust_model=False)
        assert expected in caught.value.message, trial
