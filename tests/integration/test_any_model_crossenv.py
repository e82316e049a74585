"""Issue 11, inputs of any rank and several inputs: keras 2.2.4 LSTM and GRU classifiers (input (20, 8)) fed by an
``.npy`` of sequences, and a two-input model (image + vector) fed by an ``.npz`` with one array per input
name, each through ``convert_legacy`` to a full-int8 model with int8 I/O that matches its origin.

Driven from the host (``python -m converters.pipeline``); the models are built in tf1.13 at test time
(``data/build_models.py``), the data with numpy in tf1.13. Real TensorFlow in every step.
"""

import json
import os
import subprocess
import sys

import pytest

from envs import venvs

pytestmark = pytest.mark.crossenv

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data")
REPO = os.path.dirname(os.path.dirname(HERE))
FIGURES = os.environ.get("TFBRIDGE_FIGURES")

MAKE = r'''
import sys
import numpy as np
sys.path.insert(0, sys.argv[1])
import build_models
out = sys.argv[2]
build_models.main("lstm", out + "/lstm.h5")
build_models.main("gru", out + "/gru.h5")
build_models.main("two-input", out + "/two_input.h5")
rng = np.random.RandomState(1)
np.save(out + "/sequences.npy", rng.normal(size=(200, 20, 8)).astype("float32"))
np.savez(out + "/two.npz", image=rng.uniform(0, 1, size=(120, 16, 16, 3)).astype("float32"),
         meta=rng.normal(size=(120, 4)).astype("float32"))
np.savez(out + "/image_only.npz", image=rng.uniform(0, 1, size=(120, 16, 16, 3)).astype("float32"))
'''


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("any_model")
    subprocess.run([venvs.python_of("tf1.13"), "-c", MAKE, DATA, str(folder)], env=venvs.run_environ("tf1.13"),
                   cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=True)
    return folder


def convert_legacy(model, calib, out, *options):
    environ = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run([sys.executable, "-m", "converters.pipeline", str(model), "--origin", "1.13",
                           "--calib", str(calib), "--calib-samples", "40", "--probe-samples", "20",
                           "--no-layer-debug", "--out", str(out)] + list(options),
                          env=environ, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True)


def assert_int8_match(result, out, name):
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.load(open(str(out / "report.json")))
    tflite = report["tflite"]
    assert tflite["route"] == "frozen_graph" and tflite["reference_env"] == "tf1.13"
    assert tflite["input_dtype"] == tflite["output_dtype"] == "int8"
    assert tflite["status"] == "match" and tflite["cosine"] >= 0.99, tflite
    cells = dict((cell["env"], cell) for cell in report["parity"])
    for env in ("tf1.15", "tf2", "tf2-graph"):
        assert cells[env]["status"] == "match", cells[env]
    if FIGURES:
        with open(FIGURES, "a") as handle:
            handle.write(json.dumps({"model": name, "int8_cosine": tflite["cosine"],
                                     "cells": [(c["env"], c["status"], c.get("max_abs")) for c in report["parity"]]})
                         + "\n")
    return report


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_recurrent_classifier_with_an_npy_of_sequences_converts_to_int8(inputs, tmp_path, kind):
    out = tmp_path / "run"
    result = convert_legacy(inputs / (kind + ".h5"), inputs / "sequences.npy", out)
    report = assert_int8_match(result, out, kind)
    assert report["model"]["inputs"][0]["shape"] == [None, 20, 8]
    # the data were taken as (N, 20, 8) sequences, not one sample of (200, 20, 8)
    assert report["data"]["calibration"]["count"] == 40 and report["data"]["probe"]["count"] == 20
    manifest = json.load(open(str(out / "manifest.json")))
    assert manifest["model"]["frozen_graph"]["unrolled"] == [kind]  # no TF 1.x loop in the graph
    assert os.path.getsize(str(out / "model_int8.tflite")) > 0


def test_two_input_model_with_an_npz_per_input_name_converts_to_int8(inputs, tmp_path):
    out = tmp_path / "run"
    result = convert_legacy(inputs / "two_input.h5", inputs / "two.npz", out)
    report = assert_int8_match(result, out, "two-input")
    assert [spec["name"] for spec in report["model"]["inputs"]] == ["image", "meta"]
    probe = json.load(open(str(out / "manifest.json")))["probe"]
    assert probe["kind"] == "multi" and sorted(probe["ranges"]) == ["image", "meta"]
    assert report["data"]["overlap"] == 0  # calibration and probe disjoint, by content of both inputs


def test_two_input_model_refuses_an_npz_missing_one_inputs_array(inputs, tmp_path):
    result = convert_legacy(inputs / "two_input.h5", inputs / "image_only.npz", tmp_path / "run")
    assert result.returncode == 8, result.stderr[-2000:]  # CalibrationDataError
    assert "no array for model input(s) meta" in result.stderr and "Traceback" not in result.stderr
    assert not os.path.exists(str(tmp_path / "run"))
