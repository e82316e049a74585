"""The first divergent node of a graph cell (issue 11, item 3), with real TensorFlow 1.15.

A small frozen graph is run node by node (``converters.shared.parity.graph_activations``) as the origin;
then one weight constant of the middle layer is changed, as a TF whose kernel computed that layer
differently would, and the node search must name that layer's op, not an earlier or later one.
"""

import json
import os

import numpy as np
import pytest

pytestmark = pytest.mark.tf1_15

import tensorflow as tf  # noqa: E402  (a TF group that cannot import its TensorFlow fails)


def _run_folder(folder):
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 6], name="x")
        w1 = tf.constant(np.linspace(-1, 1, 48).reshape(6, 8).astype("float32"), name="w1")
        h = tf.nn.relu(tf.matmul(x, w1, name="dense1"), name="relu1")
        w2 = tf.constant(np.linspace(1, -1, 32).reshape(8, 4).astype("float32"), name="w2")
        h = tf.nn.relu(tf.matmul(h, w2, name="dense2"), name="relu2")
        tf.nn.softmax(h, name="scores")
    with open(os.path.join(folder, "model.pb"), "wb") as handle:
        handle.write(graph.as_graph_def().SerializeToString())
    np.savez(os.path.join(folder, "probe.npz"), x=np.random.RandomState(0).normal(size=(4, 6)).astype("float32"))
    manifest = {"model": {"source_kind": "frozen_graph", "inputs": [{"name": "x", "shape": [None, 6]}],
                          "outputs": [{"name": "scores", "shape": [None, 4]}],
                          "frozen_graph": {"path": "model.pb", "input_arrays": ["x"], "output_arrays": ["scores"]}},
               "origin": {"env": "tf1.13"}}
    with open(os.path.join(folder, "manifest.json"), "w") as handle:
        json.dump(manifest, handle)
    with open(os.path.join(folder, "parity_tf1.15.json"), "w") as handle:
        json.dump({"env": "tf1.15", "status": "mismatch"}, handle)


def test_first_divergent_node_is_the_op_whose_tensor_changed(tmp_path):
    from converters.shared import parity

    folder = str(tmp_path)
    _run_folder(folder)
    parity.graph_activations(folder, os.path.join(folder, "activations_tf1.13-graph.npz"))
    graph_def = tf.compat.v1.GraphDef()
    with open(os.path.join(folder, "model.pb"), "rb") as handle:
        graph_def.ParseFromString(handle.read())
    for node in graph_def.node:  # the middle layer's weights change: dense2 is the first op to differ
        if node.name == "w2":
            value = tf.make_ndarray(node.attr["value"].tensor) * 1.01
            node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(value))
    with open(os.path.join(folder, "model.pb"), "wb") as handle:
        handle.write(graph_def.SerializeToString())
    parity.graph_activations(folder, os.path.join(folder, "activations_tf1.15.npz"))
    assert parity.divergence(folder, "tf1.15", "tf1.13-graph") == "dense2"
    with open(os.path.join(folder, "parity_tf1.15.json")) as handle:
        cell = json.load(handle)
    assert cell["first_divergent_node"] == "dense2"
    assert [entry["node"] for entry in cell["divergence"]] == ["dense1:0", "relu1:0", "dense2:0"]
    assert cell["divergence"][-1]["verdict"] == "mismatch"
