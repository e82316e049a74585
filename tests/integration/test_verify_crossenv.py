"""verify_upgrade end to end, driven from the host: real models built in tf1.13, parity in tf1.15 and tf2.

Every ``python -m converters.verify`` here runs with numpy made unimportable, which proves the host
orchestrator is standard library only. Cost (2 cores): about 6 minutes in all; the vggface models use
``include_top=False`` (VGG16 with its top is 138 M parameters) and VGG16 a 64x64 input (its minimum is 48;
ResNet50 and SENet50 need 224 / >= 197 because of their final 7x7 average pool).
"""

import json
import os
import subprocess
import sys

import pytest

from converters import runfolder
from converters.errors import InputFileError, UntrustedModelError
from envs import venvs

pytestmark = pytest.mark.crossenv

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data")
REPO = os.path.dirname(os.path.dirname(HERE))
FIGURES = os.environ.get("TFBRIDGE_FIGURES")  # optional: append measured figures (JSON lines) here

# numpy is blocked (sys.modules[...] = None makes `import numpy` raise ImportError)
NO_NUMPY_VERIFY = (
    "import sys, runpy; sys.modules['numpy'] = None; "
    "sys.argv = ['converters.verify'] + sys.argv[1:]; "
    "runpy.run_module('converters.verify', run_name='__main__', alter_sys=True)"
)


@pytest.fixture(scope="module", autouse=True)
def environments():
    for name in ("tf1.13", "tf1.15", "tf2"):
        venvs.ensure(name, log=lambda message: None)


def in_tf113(*args):
    environ = venvs.run_environ("tf1.13")
    return subprocess.run([venvs.python_of("tf1.13")] + [str(a) for a in args], env=environ, cwd=REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, check=True)


def zoo(name, out, *options):
    in_tf113("-m", "legacy_tf1", "zoo", name, "--out", out, *options)
    return str(out)


def verify(model, out, *options):
    environ = dict(os.environ, PYTHONPATH=REPO)
    result = subprocess.run([sys.executable, "-c", NO_NUMPY_VERIFY, str(model), "--out", str(out)]
                            + [str(o) for o in options], env=environ, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, universal_newlines=True)
    report_path = os.path.join(str(out), "report.json")
    report = json.load(open(report_path)) if os.path.isfile(report_path) else None
    if FIGURES and report:
        with open(FIGURES, "a") as handle:
            handle.write(json.dumps({"model": os.path.basename(str(model)), "timings": report["timings"],
                                     "cells": [(c["env"], c["status"], c.get("max_abs"), c.get("max_rel"))
                                               for c in report["parity"]]}) + "\n")
    return result, report


def cells(report):
    return dict((cell["env"], cell) for cell in report["parity"])


def assert_clean_run_folder(out):
    parent = os.path.dirname(str(out))
    assert not [name for name in os.listdir(parent) if ".partial-" in name or ".old-" in name]


@pytest.mark.parametrize("name,options", [
    ("vggface-senet50", []),
    ("vggface-resnet50", []),
    ("vggface-vgg16", ["--input-shape", "64,64,3"]),
])
def test_vggface_architectures_match_in_newer_tensorflow(tmp_path, name, options):
    model = zoo(name, tmp_path / (name + ".h5"), *options)
    # 8 random probe samples: enough to show float32 differences at 197x197 (the default 100 would cost
    # ~30 s per cell on 2 cores); the Keras 3 migration of these models has its own test
    # (test_keras3_migration_crossenv.py), so it is skipped here
    result, report = verify(model, tmp_path / "run", "--probe-samples", "8", "--no-keras3")
    assert result.returncode == 0, result.stderr[-2000:]
    matrix = cells(report)
    assert report["origin"]["env"] == "tf1.13" and report["origin"]["keras"] == "2.2.4"
    assert report["verdict"] == "pass"
    for env in ("tf1.15", "tf2"):
        assert matrix[env]["status"] == "match", matrix[env]
        # real float32 differences, not a comparison of a file with itself
        assert 0.0 < matrix[env]["max_abs"] <= matrix[env]["per_output"][0]["allowed_abs"]
        assert matrix[env]["cosine"] > 0.99999
    keras3 = matrix["tf2-keras3"]
    assert keras3["status"] in ("match", "load_error")  # an honest cell either way
    if keras3["status"] == "load_error":
        assert keras3["error"] and keras3["hint"] and keras3["tolerated"] is True
        # keras-vggface names layers "conv1/7x7_s2"; Keras 3 rejects '/' in names (the cause is kept)
        assert "cannot contain character" in keras3["error"] and "'/'" in keras3["hint"]
    assert "tf2" in result.stdout and "match" in result.stdout  # the matrix is printed
    assert os.path.isfile(os.path.join(str(tmp_path / "run"), "report.md"))
    assert_clean_run_folder(tmp_path / "run")


def test_tf_keras_model_from_tf113(tmp_path):
    model = zoo("tfkeras-cnn", tmp_path / "tfkeras_cnn.h5")
    result, report = verify(model, tmp_path / "run")
    assert result.returncode == 0, result.stderr[-2000:]
    assert report["model"]["keras_flavour"] == "tf.keras"
    assert report["origin"]["keras"].endswith("-tf")
    matrix = cells(report)
    assert matrix["tf1.15"]["status"] == "match" and matrix["tf1.15"]["keras"] == "tf.keras"
    assert matrix["tf2"]["status"] == "match"
    # Keras 3 cannot deserialize tf.keras 1.x configs (FACTS): an honest, tolerated load_error
    assert matrix["tf2-keras3"]["status"] == "load_error" and matrix["tf2-keras3"]["tolerated"]
    assert "Conv2D" in matrix["tf2-keras3"]["error"]


def test_model_saved_in_tf115_is_inferred_and_checked_in_tf2_only(tmp_path):
    model = str(tmp_path / "cnn_keras231.h5")
    environ = venvs.run_environ("tf1.15")
    subprocess.run([venvs.python_of("tf1.15"), "-m", "legacy_tf1", "zoo", "keras-cnn", "--out", model],
                   env=environ, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=True)
    result, report = verify(model, tmp_path / "run", "--input-range", "0,1")
    assert result.returncode == 0, result.stderr[-2000:]
    assert report["origin"]["env"] == "tf1.15" and report["origin"]["keras"] == "2.3.1"
    assert "2.3.1" in report["origin_reason"]
    assert [cell["env"] for cell in report["parity"]] == ["tf2", "tf2-graph", "tf2-keras3", "tf2-keras3-migrated"]
    assert cells(report)["tf2"]["status"] == "match"
    assert cells(report)["tf2-graph"]["status"] == "match" and cells(report)["tf2-graph"]["keras"] == "graph"


def test_custom_layer_that_drifts_in_tf2_is_a_mismatch_at_that_layer(tmp_path):
    model = str(tmp_path / "drift.h5")
    in_tf113(os.path.join(DATA, "build_models.py"), "drifting", model)
    result, report = verify(model, tmp_path / "run", "--custom-objects", os.path.join(DATA, "drifting_layer.py"),
                            "--input-range", "0,1")
    assert result.returncode == 1, result.stderr[-2000:]
    assert report["verdict"] == "fail" and "tf2" in report["failing"]
    matrix = cells(report)
    assert matrix["tf1.15"]["status"] == "match"  # same arithmetic in TF 1.x
    assert "first_divergent_layer" not in matrix["tf1.15"]
    for env in ("tf2", "tf2-keras3"):
        assert matrix[env]["status"] == "mismatch"
        assert matrix[env]["first_divergent_layer"] == "scale_shift"
        # the layer before it still matched, so the search really compared layer by layer
        assert [step["verdict"] for step in matrix[env]["divergence"]] == ["match", "mismatch"]
    assert "first divergent layer: scale_shift" in result.stdout


def test_lambda_model_is_refused_and_an_existing_run_is_untouched(tmp_path):
    model = str(tmp_path / "lambda.h5")
    in_tf113(os.path.join(DATA, "build_models.py"), "lambda", model)
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("an earlier run")
    runfolder.write_marker(str(out), "verify_upgrade", files=[])  # an earlier run folder; keep.txt is the user's
    result, _ = verify(model, out)
    assert result.returncode == UntrustedModelError.exit_code
    assert "UntrustedModel" not in result.stderr  # a paragraph, not a traceback
    assert "halve" in result.stderr and "--trust-model" in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(os.listdir(str(out))) == [runfolder.RUN_MARKER, "keep.txt"]
    assert_clean_run_folder(out)

    result, report = verify(model, out, "--trust-model", "--input-range", "0,1")
    # trusted, it re-saves and matches in tf1.15 (Python 3.7); in tf2 (Python 3.11) the Lambda's 3.7
    # bytecode cannot be loaded as Keras, but its frozen graph runs there and matches: the Keras cells
    # of Python 3.11 are explained load_errors, tolerated because the graph (the converter's route) matches
    assert result.returncode == 0, result.stderr[-2000:]
    matrix = cells(report)
    assert matrix["tf1.15"]["status"] == "match"
    graph = matrix["tf2-graph"]
    assert graph["status"] == "match" and "frozen graph" in graph["runtime"], graph
    assert 0.0 <= graph["max_abs"] <= graph["per_output"][0]["allowed_abs"]
    for env in ("tf2", "tf2-keras3", "tf2-keras3-migrated"):
        cell = matrix[env]
        assert cell["status"] == "load_error" and cell["tolerated"], cell
        assert cell["cause"] == "lambda_bytecode"
        assert "halve" in cell["explanation"] and "3.7" in cell["explanation"] and "3.11" in cell["explanation"]
        assert "portable" in cell["explanation"] and "--custom-objects" in cell["explanation"]
    assert "halve" in matrix["tf2"]["hint"] and "model.pb" in matrix["tf2"]["hint"]
    assert "no migrated Keras 3 model can exist" in matrix["tf2-keras3-migrated"]["error"]
    assert report["model"]["frozen_graph"]["output_arrays"]  # the way out the hint names exists
    assert "lambda_bytecode" in report["policy"] and "tf2-graph" in report["policy"]
    # the new, complete run replaced tfbridge's files; the user's file, which tfbridge did not write, is kept
    assert (out / "keep.txt").read_text() == "an earlier run"
    assert_clean_run_folder(out)


def test_missing_model_is_a_usage_paragraph(tmp_path):
    result, _ = verify(tmp_path / "nope.h5", tmp_path / "run")
    assert result.returncode == InputFileError.exit_code
    assert "does not exist" in result.stderr and "Traceback" not in result.stderr
    assert not os.path.exists(str(tmp_path / "run"))
