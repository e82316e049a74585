"""Mutation smoke test of reading a frozen TF 1.x graph (issue 26): damaged ``.pb`` files are refused, never crash.

A valid frozen GraphDef (a small CNN made here: placeholder, conv, bias, relu, reshape, matmul, softmax,
weights as constants) is mutated with a fixed seed: random byte flips, truncation, zeroed blocks, and,
through the protobuf parser, node edits that stay a valid GraphDef (unknown ops, dangling or cyclic
inputs, removed or duplicated nodes, placeholder shapes and dtypes that lie, constants whose content is
cut short or of another type). Each mutant goes through ``legacy_tf1.graph_signature.inspect`` (the preflight
read the host runs, ``python -m legacy_tf1 inspect-graph``) in a forked child with a time limit: it must
return or raise a ``TfbridgeError`` (one paragraph, its exit code), never another exception, a signal or
a hang.
"""

import os
import sys

import pytest

from tests.integration import _mutation

pytestmark = pytest.mark.tf1_15

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KINDS = ("flip", "truncate", "zero", "node", "attr")
PER_KIND = _mutation.per_kind(6, 40)  # CI: 6 x 5 = 30; nox -s faults: 40 x 5 = 200
TIME_LIMIT = 60.0


@pytest.fixture(scope="module")
def valid_pb(tmp_path_factory):
    import numpy as np
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        rng = np.random.RandomState(0)
        image = tf.placeholder(tf.float32, (None, 8, 8, 3), name="image")
        kernel = tf.constant(rng.randn(3, 3, 3, 4).astype(np.float32), name="kernel")
        x = tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(image, kernel, [1, 1, 1, 1], "SAME"),
                                      tf.constant(np.zeros(4, np.float32), name="bias")), name="relu")
        x = tf.reshape(x, (-1, 8 * 8 * 4), name="flat")
        dense = tf.constant(rng.randn(8 * 8 * 4, 3).astype(np.float32), name="dense")
        tf.nn.softmax(tf.matmul(x, dense), name="scores")
    path = str(tmp_path_factory.mktemp("valid") / "cnn.pb")
    with open(path, "wb") as handle:
        handle.write(graph.as_graph_def().SerializeToString())
    return path


def mutate(data, kind, rng):
    """One seeded mutant of ``data`` (a serialized GraphDef) of the given kind."""
    if kind in ("node", "attr"):
        return _edit_graph(data, kind, rng)
    data = bytearray(data)
    if kind == "flip":
        for _ in range(rng.randint(1, 32)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    elif kind == "truncate":
        data = data[:rng.randrange(len(data))]
    elif kind == "zero":
        start = rng.randrange(len(data))
        size = rng.choice((8, 64, 512, 4096))
        data[start:start + size] = bytes(len(data[start:start + size]))
    return bytes(data)


def _edit_graph(data, kind, rng):
    import tensorflow as tf

    graph_def = tf.GraphDef()
    graph_def.ParseFromString(data)
    nodes = list(graph_def.node)
    node = graph_def.node[rng.randrange(len(nodes))]
    if kind == "node":
        choice = rng.choice(("op", "input", "cycle", "remove", "duplicate", "control"))
        if choice == "op":
            node.op = rng.choice(("NoSuchOp", "", "Placeholder", "Const", "MatMul"))
        elif choice == "input":
            node.input.append(rng.choice(("ghost", "ghost:3", "image:7", "", "^ghost")))
        elif choice == "cycle":
            node.input.append(node.name)
        elif choice == "remove":
            graph_def.node.remove(node)
        elif choice == "duplicate":
            graph_def.node.add().CopyFrom(node)
        else:
            del node.input[:]
    else:
        placeholder = [n for n in graph_def.node if n.op == "Placeholder"][0]
        constant = rng.choice([n for n in graph_def.node if n.op == "Const"])
        choice = rng.choice(("shape", "dtype", "content", "const_dtype", "drop_attr"))
        if choice == "shape":
            shape = placeholder.attr["shape"].shape
            del shape.dim[:]
            for size in rng.choice(([-1, 3, 3], [1], [], [-1, 8, 8, 3, 2], [0, 0, 0, 0], [-1, -1, -1, 3],
                                    [-1, 2 ** 31, 8, 3])):
                shape.dim.add().size = size
        elif choice == "dtype":
            placeholder.attr["dtype"].type = rng.choice((0, 7, 10, 18, 21, 99))
        elif choice == "content":
            tensor = constant.attr["value"].tensor
            tensor.tensor_content = tensor.tensor_content[:rng.randrange(len(tensor.tensor_content) + 1)]
        elif choice == "const_dtype":
            constant.attr["value"].tensor.dtype = rng.choice((0, 3, 7, 99))
        else:
            target = rng.choice((placeholder, constant, node))
            if target.attr:
                del target.attr[rng.choice(sorted(target.attr))]
    return graph_def.SerializeToString()


def _inspect(path):
    from legacy_tf1 import graph_signature

    graph_signature.inspect(path)  # the preflight read of a graph source


def campaign(valid_path, workdir):
    """Every mutant of ``valid_path``, in a fresh interpreter (see tests/integration/_mutation.py)."""
    import tensorflow  # noqa: F401 - imported once here; every forked child inherits it (no session yet)
    from legacy_tf1 import graph_signature  # noqa: F401

    _mutation.campaign(valid_path, workdir, _inspect, mutate, KINDS, seed=11, per_kind=PER_KIND,
                       time_limit=TIME_LIMIT, label="pb")


def test_mutated_graphs_are_handled_or_refused_never_crash(valid_pb, tmp_path):
    found = _mutation.run_fresh("tests.integration.test_mutations_tf1_15", valid_pb, tmp_path, REPO,
                                timeout=len(KINDS) * PER_KIND * TIME_LIMIT)
    outcomes = found["outcomes"]
    sys.stderr.write("pb mutations: %s\n" % found["by_kind"])
    assert sum(outcomes.values()) == len(KINDS) * PER_KIND
    assert not found["bad"], found["bad"]
    assert _mutation.refused(outcomes) > 0, "the mutations did damage files"
