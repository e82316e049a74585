"""Issue 11, TF 1.x graph sources and a three-output model through ``convert_legacy``.

A ``tf.layers`` CNN with batch norm and dropout that follow a bool ``is_training`` placeholder, made and
trained in tf1.13 at test time (``data/build_graphs.py``), as a frozen GraphDef (``.pb`` and ``.pbtxt``), a
``simple_save`` SavedModel and a checkpoint (``.meta`` + data, with labels, loss and optimizer in the graph);
a CNN with the MNIST tutorials' ``tf.nn.dropout(x, keep_prob)`` (a float placeholder, no ``tf.cond``), frozen with
its random mask; and a standalone-Keras model with a classification, a regression and a sequence head. Each
goes through ``convert_legacy`` to a full-int8 model with int8 I/O that matches its origin, with a parity
matrix of graph cells (tf1.15, tf2-graph); the ``.pbtxt`` and the checkpoint go through ``verify_upgrade``
only and must give byte for byte the ``model.pb`` that the ``.pb`` / the SavedModel run converts to int8;
``--eval`` runs on the ``.pb`` (the frozen graph in the origin, no Keras). The runs start together at module
setup (``started_runs``). Bad inputs: a ``.pb`` that is not a GraphDef, a graph with several candidate
inputs and no ``--inputs``, ``--inputs`` naming a tensor the graph does not have, a frozen graph that records
no TF version and no ``--origin``. Real TensorFlow in every step; driven from the host.
"""

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from envs import venvs

pytestmark = pytest.mark.crossenv

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data")
REPO = os.path.dirname(os.path.dirname(HERE))
FIGURES = os.environ.get("TFBRIDGE_FIGURES")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("graphs")
    subprocess.run([venvs.python_of("tf1.13"), os.path.join(DATA, "build_graphs.py"), str(folder)],
                   env=venvs.run_environ("tf1.13"), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                   check=True)
    return folder


def convert_legacy(model, out, *options, calib=None):
    environ = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run([sys.executable, "-m", "converters.pipeline", str(model), "--calib", str(calib),
                           "--calib-samples", "40", "--probe-samples", "20", "--no-layer-debug", "--out", str(out)]
                          + list(options), env=environ, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True)


def verify_upgrade(model, out, *options, calib=None):
    """Re-save and parity only (no tf2 conversion): for tests that check what the graph becomes, not int8."""
    environ = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run([sys.executable, "-m", "converters.verify", str(model), "--calib", str(calib),
                           "--probe-samples", "20", "--out", str(out)] + list(options), env=environ, cwd=REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)


# The conversions of the module fixtures below, started together at module setup (only those the selected
# tests use), WORKERS at a time: most of a run's time is environments starting (a TF import per step), which
# overlaps well, so the file takes about half of its sequential time. TFBRIDGE_TEST_WORKERS=1: one at a time.
WORKERS = int(os.environ.get("TFBRIDGE_TEST_WORKERS", "2"))
RUNS = {  # fixture: (command, model, options...), in the order the tests use them
    # --eval on a graph source too (labelled .npz): accuracy in the origin through the frozen graph, no Keras
    "pb_run": ("convert_legacy", "cnn.pb", "--origin", "1.13", "--eval", "{models}/eval.npz"),
    "pbtxt_run": ("verify_upgrade", "cnn.pbtxt", "--origin", "1.13"),
    "saved_model_run": ("convert_legacy", "cnn_saved_model"),
    "checkpoint_run": ("verify_upgrade", os.path.join("cnn_ckpt", "model.ckpt"), "--inputs", "image",
                       "--outputs", "scores"),
    "dropout_run": ("convert_legacy", "dropout_cnn.pb", "--origin", "1.13"),
    "three_outputs_run": ("convert_legacy", "three_outputs.h5", "--origin", "1.13", "--no-keras3"),
}


@pytest.fixture(scope="module")
def started_runs(request, models, tmp_path_factory):
    wanted = set()
    for item in request.session.items:
        if getattr(item, "module", None) is request.module:
            wanted.update(item.fixturenames)
    pool = ThreadPoolExecutor(max_workers=max(1, WORKERS))
    futures = {}
    for name, (command, model, *options) in RUNS.items():
        if name not in wanted:
            continue
        out = tmp_path_factory.mktemp("run") / "run"
        run = convert_legacy if command == "convert_legacy" else verify_upgrade
        futures[name] = (out, pool.submit(run, models / model, out, *[o.format(models=models) for o in options],
                                          calib=models / "images.npy"))
    yield futures
    pool.shutdown(wait=True)


def run_of(started_runs, name):
    out, future = started_runs[name]
    result = future.result()
    assert result.returncode == 0, result.stderr[-3000:]
    return out, json.load(open(str(out / "report.json")))


@pytest.fixture(scope="module")
def pb_run(started_runs):
    return run_of(started_runs, "pb_run")


@pytest.fixture(scope="module")
def pbtxt_run(started_runs):
    return run_of(started_runs, "pbtxt_run")


@pytest.fixture(scope="module")
def three_outputs_run(started_runs):
    return run_of(started_runs, "three_outputs_run")


@pytest.fixture(scope="module")
def dropout_run(started_runs):
    return run_of(started_runs, "dropout_run")


@pytest.fixture(scope="module")
def saved_model_run(started_runs):
    return run_of(started_runs, "saved_model_run")


@pytest.fixture(scope="module")
def checkpoint_run(started_runs):
    return run_of(started_runs, "checkpoint_run")


def assert_graph_int8_match(out, report, name, kind):
    tflite = report["tflite"]
    assert tflite["route"] == "frozen_graph" and tflite["reference_env"] == "tf1.13"
    assert tflite["input_dtype"] == tflite["output_dtype"] == "int8"
    assert tflite["status"] == "match" and tflite["cosine"] >= 0.99, tflite
    transforms = assert_graph_cells_match(out, report, kind)
    markdown = open(str(out / "report.md")).read()
    assert "## Graph source" in markdown and "training switch is_training set to False" in markdown
    verify = json.load(open(str(out / "verify.json")))
    assert verify["skipped_cells"] and "tf2" in verify["skipped_cells"][0]["cells"]
    if FIGURES:
        with open(FIGURES, "a") as handle:
            handle.write(json.dumps({"model": name, "int8_cosine": tflite["cosine"],
                                     "cells": [(c["env"], c["status"], c.get("max_abs")) for c in report["parity"]]})
                         + "\n")
    return transforms


def upgrade_cells(report):
    """The parity cells of the TF upgrade, by env (a quantization candidate's own float check lives in
    report.json's ``quantization`` section, never among them: issue 30)."""
    cells = dict((cell["env"], cell) for cell in report["parity"])
    assert "tflite-float-cle" not in cells
    return cells


def assert_graph_cells_match(out, report, kind):
    """The re-save and parity part (convert_legacy's or verify_upgrade's report.json)."""
    cells = upgrade_cells(report)
    assert sorted(cells) == ["tf1.15", "tf2-graph"]  # graph cells only: no Keras model to load
    for cell in cells.values():
        assert cell["status"] == "match" and cell["keras"] == "graph", cell
        assert cell["per_output"] and cell["max_abs"] is not None
    assert report["model"]["source_kind"] == kind
    assert [i["name"] for i in report["model"]["inputs"]] == ["image"]
    assert report["model"]["inputs"][0]["shape"] == [None, 16, 16, 3]
    transforms = dict((t["transform"], t) for t in report["model"]["transforms"])
    # the training switch became a constant and both tf.cond (batch norm, dropout) lost their training branch
    assert transforms["fix_placeholder"]["node"] == "is_training"
    assert transforms["fold_constant_conds"]["switches"] >= 2
    assert not os.path.exists(str(out / "model.h5")) and os.path.exists(str(out / "model.pb"))
    model_pb = (out / "model.pb").read_bytes()
    for op in (b"Switch", b"Merge", b"RandomUniform"):  # tf.layers.dropout's cond went with its dead branch
        assert op not in model_pb, op
    manifest = json.load(open(str(out / "manifest.json")))
    assert manifest["model"]["frozen_graph"]["check"]["verdict"] == "match"  # model.pb == the source graph
    return transforms


def assert_same_conversion_input(out, converted):
    """``out``'s model.pb is byte for byte the one of the run folder ``converted`` (graph_resave.py writes it
    deterministically), with the same input / output arrays and shapes: the int8 conversion of ``converted``
    is this source's."""
    assert (out / "model.pb").read_bytes() == (converted / "model.pb").read_bytes()
    mine = json.load(open(str(out / "manifest.json")))["model"]
    theirs = json.load(open(str(converted / "manifest.json")))["model"]
    for key in ("input_arrays", "output_arrays", "input_shapes", "batch", "nodes"):
        assert mine["frozen_graph"][key] == theirs["frozen_graph"][key], key
    assert mine["inputs"] == theirs["inputs"] and mine["outputs"] == theirs["outputs"]


def test_frozen_graphdef_pb_converts_to_int8_and_matches_its_origin(pb_run):
    out, report = pb_run
    assert_graph_int8_match(out, report, "tf.layers cnn .pb", "frozen_graph")
    assert report["origin"]["env"] == "tf1.13"


def test_eval_on_a_graph_source_runs_the_frozen_graph_in_its_origin(pb_run):
    out, report = pb_run
    origin = json.load(open(str(out / "eval_tf1.13.json")))
    assert origin["samples"] == 24 and origin["top1"] is not None
    runtime = origin["runtime"]  # no Keras in a graph run: "tensorflow 1.13.x (frozen graph)"
    assert runtime.startswith("tensorflow 1.13") and runtime.endswith("(frozen graph)"), runtime
    assert "keras" not in runtime.lower()
    evaluation = report["eval"]
    assert evaluation["samples"] == 24 and evaluation["origin_env"] == "tf1.13"
    assert evaluation["float_by_env"]["tf1.13"]["runtime"] == runtime
    assert evaluation["float_route"] == "frozen_graph" and "frozen graph" in evaluation["float_runtime"]
    # the same frozen graph in the origin and in tf2: no prediction changed between TF versions
    assert evaluation["origin_vs_tf2_float_flipped"] == 0
    assert evaluation["int8_top1"] is not None


def test_frozen_graphdef_pbtxt_is_read_into_the_same_inference_graph_as_the_pb(pbtxt_run, pb_run):
    # the text GraphDef differs from the .pb only in how it is read: a re-save (verify_upgrade) and its parity
    # cells prove it reads; the inference graph it becomes is the .pb's, whose int8 conversion pb_run checks
    out, report = pbtxt_run  # verify_upgrade's report.json
    assert report["verdict"] == "pass" and report["model"]["path"].endswith("cnn.pbtxt")
    assert_graph_cells_match(out, report, "frozen_graph")
    assert_same_conversion_input(out, pb_run[0])
    assert [t["what"] for t in report["model"]["transforms"]] == [t["what"] for t in pb_run[1]["model"]["transforms"]]


def test_tf1_saved_model_infers_its_origin_and_converts_to_int8(saved_model_run):
    out, report = saved_model_run
    transforms = assert_graph_int8_match(out, report, "tf.layers cnn SavedModel", "saved_model")
    assert "freeze" in transforms  # variables frozen in the origin environment
    verify = json.load(open(str(out / "verify.json")))
    assert "tensorflow_version 1.13" in verify["origin_reason"]


def test_tf1_checkpoint_is_frozen_in_its_origin_into_the_saved_models_int8_input(checkpoint_run, saved_model_run):
    # the checkpoint (training graph: labels, loss, optimizer, saver) holds the SavedModel's session: frozen
    # in its origin (verify_upgrade), it must become the very graph the SavedModel run converts to int8
    out, report = checkpoint_run  # verify_upgrade's report.json
    assert report["verdict"] == "pass"
    transforms = assert_graph_cells_match(out, report, "checkpoint")
    assert "freeze" in transforms and transforms["freeze"]["variables"] > 0
    assert [o["name"] for o in report["model"]["outputs"]] == ["scores"]
    assert_same_conversion_input(out, saved_model_run[0])


def test_tf_nn_dropout_with_a_keep_prob_placeholder_is_removed_and_converts_to_full_int8(dropout_run):
    # the MNIST-tutorial dropout: keep_prob a float placeholder (dropout/Placeholder), tf.nn.dropout, no cond
    out, report = dropout_run
    tflite = report["tflite"]
    assert tflite["route"] == "frozen_graph" and tflite["input_dtype"] == tflite["output_dtype"] == "int8"
    assert tflite["status"] == "match" and tflite["cosine"] >= 0.99, tflite
    assert report["npu"]["float_ops"] == [], report["npu"]  # no RandomUniform / Floor left as float ops
    assert not any(op.upper() in ("RANDOM_UNIFORM", "FLOOR") for op in report["npu"]["ops"]), report["npu"]["ops"]
    cells = upgrade_cells(report)
    assert sorted(cells) == ["tf1.15", "tf2-graph"]
    for cell in cells.values():
        assert cell["status"] == "match", cell
    transforms = report["model"]["transforms"]
    fixed = [t for t in transforms if t["transform"] == "fix_placeholder"]
    # found by structure (the name says nothing), fixed to 1.0; labels is not needed by the output
    assert [(t["node"], t["value"]) for t in fixed] == [("dropout/Placeholder", 1.0)]
    removal = [t for t in transforms if t["transform"] == "remove_dropout"]
    assert len(removal) == 1 and len(removal[0]["masks"]) == 1, transforms
    assert "dropout" in removal[0]["what"] and "floor(1 + U[0, 1)) = 1" in removal[0]["what"]
    assert "fold_constant_conds" not in [t["transform"] for t in transforms]  # no tf.cond in this graph
    model_pb = open(str(out / "model.pb"), "rb").read()
    for op in (b"RandomUniform", b"Floor", b"RealDiv"):
        assert op not in model_pb, op
    manifest = json.load(open(str(out / "manifest.json")))
    assert manifest["model"]["frozen_graph"]["check"]["verdict"] == "match"  # model.pb == the source graph
    assert "tf.nn.dropout random mask" in open(str(out / "report.md")).read()
    if FIGURES:
        with open(FIGURES, "a") as handle:
            handle.write(json.dumps({"model": "tf.nn.dropout keep_prob cnn .pb", "int8_cosine": tflite["cosine"],
                                     "cells": [(c["env"], c["status"], c.get("max_abs")) for c in report["parity"]]})
                         + "\n")


def test_three_output_keras_model_converts_to_int8_with_per_output_figures(three_outputs_run):
    out, report = three_outputs_run
    assert [o["name"] for o in report["model"]["outputs"]] == ["classes", "box", "sequence"]
    tflite = report["tflite"]
    assert tflite["input_dtype"] == tflite["output_dtype"] == "int8"
    assert tflite["status"] == "match" and tflite["cosine"] >= 0.99, tflite
    cells = dict((cell["env"], cell) for cell in report["parity"])
    for env in ("tf1.15", "tf2", "tf2-graph"):
        assert cells[env]["status"] == "match", cells[env]
        assert len(cells[env]["per_output"]) == 3
    if FIGURES:
        with open(FIGURES, "a") as handle:
            handle.write(json.dumps({"model": "three-output keras", "int8_cosine": tflite["cosine"],
                                     "cells": [(c["env"], c["status"], c.get("max_abs")) for c in report["parity"]]})
                         + "\n")


def test_a_pb_that_is_not_a_graphdef_is_refused_before_any_step(models, tmp_path):
    result = convert_legacy(models / "not_a_graph.pb", tmp_path / "run", calib=models / "images.npy")
    assert result.returncode == 5, result.stderr[-2000:]  # InputFileError
    assert "is not a TensorFlow GraphDef" in result.stderr and "Traceback" not in result.stderr
    assert "preflight" in result.stderr and not os.path.exists(str(tmp_path / "run"))


def test_several_candidate_inputs_without_inputs_option_are_named(models, tmp_path):
    result = convert_legacy(models / "cnn_ckpt", tmp_path / "run", calib=models / "images.npy")
    assert result.returncode == 2, result.stderr[-2000:]  # UsageError
    assert "2 candidate inputs (image, labels)" in result.stderr and "--inputs" in result.stderr
    assert "Traceback" not in result.stderr and not os.path.exists(str(tmp_path / "run"))


def test_inputs_naming_a_missing_tensor_lists_the_placeholders(models, tmp_path):
    result = convert_legacy(models / "cnn.pb", tmp_path / "run", "--origin", "1.13", "--inputs", "pixels:?x16x16x3",
                            calib=models / "images.npy")
    assert result.returncode == 2, result.stderr[-2000:]
    assert "--inputs names pixels, which is not a tensor" in result.stderr
    assert "placeholders: image, is_training" in result.stderr and "Traceback" not in result.stderr


def test_a_frozen_graph_that_records_no_version_needs_origin(models, tmp_path):
    result = convert_legacy(models / "cnn.pb", tmp_path / "run", calib=models / "images.npy")
    assert result.returncode == 2, result.stderr[-2000:]
    assert "cannot infer the origin TF version" in result.stderr and "--origin 1.13" in result.stderr
