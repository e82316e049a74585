"""Host-driven conversion: legacy run folders made in tf1.13, and TF 2.x models, through converters.convert.

Every step runs in its real environment as a subprocess (as ``nox -s convert_legacy`` / ``convert`` do):
the model is built and re-saved in tf1.13 by ``python -m legacy_tf1`` (its frozen graph, probe and
references land in the run folder), then ``converters.convert.convert_run`` converts it in tf2 and writes
the report. The host test process itself imports no TensorFlow.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest

from converters import convert
from converters.errors import NotInt8Error
from envs import venvs

pytestmark = pytest.mark.crossenv


def run_in(env, module, args):
    environ = venvs.run_environ(env)
    result = subprocess.run(venvs.module_command(env, module, args), cwd=venvs.REPO_ROOT, env=environ,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
    assert result.returncode == 0, result.stdout[-3000:]
    return result.stdout


def legacy_run(tmp_path, zoo_name, resave_args, zoo_args=()):
    model = str(tmp_path / (zoo_name + ".h5"))
    run = str(tmp_path / "run")
    run_in("tf1.13", "legacy_tf1", ["zoo", zoo_name, "--out", model, "--seed", "0"] + list(zoo_args))
    run_in("tf1.13", "legacy_tf1", ["resave", model, "--out", run] + list(resave_args))
    return run


def read(run, name):
    with open(os.path.join(run, name)) as handle:
        return json.load(handle)


def test_small_legacy_cnn_converts_from_its_tf1_13_frozen_graph(tmp_path):
    run = legacy_run(tmp_path, "keras-cnn", ["--calib", "skimage", "--preprocess", "unit", "--probe-samples", "12"])
    assert read(run, "manifest.json")["model"]["frozen_graph"], "the re-save step froze the graph"
    report_path = convert.convert_run(run, {"calib_samples": 40})
    report = read(run, "report.json")
    assert report_path == os.path.join(run, "report.json")
    tflite = report["tflite"]
    assert tflite["route"] == "frozen_graph" and tflite["reference_env"] == "tf1.13"
    assert tflite["input_dtype"] == tflite["output_dtype"] == "int8"
    assert tflite["status"] == "match" and tflite["cosine"] >= 0.99, tflite
    assert report["npu"]["verdict"] == "ready"
    assert report["timings"]["convert"] > 0
    for name in ("model_int8.tflite", "report.html", "report.md", "npu.json", "layers.json"):
        assert os.path.exists(os.path.join(run, name)), name
    assert not [n for n in os.listdir(run) if n.startswith(".stage-")], "staging folder cleaned up"

    # the graph route fails -> the Keras .h5 route is taken, and both attempts are recorded
    with open(os.path.join(run, "model.pb"), "wb") as handle:
        handle.write(b"this is not a GraphDef")
    convert.convert_run(run, {"calib_samples": 20, "no_layer_debug": True})
    tflite = read(run, "tflite.json")
    assert [a["route"] for a in tflite["attempts"]] == ["frozen_graph", "keras_h5"]
    assert [a["status"] for a in tflite["attempts"]] == ["failed", "ok"]
    assert tflite["route"] == "keras_h5" and tflite["status"] == "match"


def test_vggface_resnet50_from_tf1_13_frozen_graph_matches_on_real_faces(tmp_path):
    """rcmalli keras-vggface ResNet50 (no top, avg pooling, float32 2048-d output), weights=None with a
    fixed seed, built and frozen in tf1.13; probe and calibration: real photographs, vggface1 preprocessing."""
    run = legacy_run(tmp_path, "vggface-resnet50",
                     ["--calib", "skimage", "--preprocess", "vggface1", "--probe-samples", "16"],
                     ["--pooling", "avg", "--input-shape", "224,224,3"])
    convert.convert_run(run, {"calib_samples": 100, "output_io": "float32"})
    report = read(run, "report.json")
    tflite = report["tflite"]
    sys.stderr.write("resnet50: %s\n" % json.dumps({k: tflite.get(k) for k in (
        "cosine", "top1_agreement", "max_abs_lsb", "sqnr_db", "size_bytes", "float_size_bytes", "attempts")}))
    assert tflite["route"] == "frozen_graph"
    assert tflite["io"]["outputs"][0]["dtype"] == "float32" and tflite["io"]["inputs"][0]["dtype"] == "int8"
    assert tflite["cosine"] >= 0.99 and tflite["status"] == "match"
    assert tflite["size_bytes"] < 0.3 * tflite["float_size_bytes"]
    assert report["npu"]["verdict"] == "partial", "float32 output: a DEQUANTIZE at the boundary"
    assert report["npu"]["ops"]["CONV_2D"] == 53


MAKE_H5 = r'''
import os, sys
os.environ["TF_USE_LEGACY_KERAS"] = "1"
import tf_keras
tf_keras.utils.set_random_seed(0)
L = tf_keras.layers
m = tf_keras.Sequential([L.Input((28, 28, 3)), L.Conv2D(8, 3, activation="relu"), L.MaxPooling2D(),
                         L.Conv2D(8, 3, activation="relu"), L.GlobalAveragePooling2D(), L.Dense(4, activation="softmax")])
m.save(sys.argv[1])
'''


def test_convert_cli_for_a_tf2_model_and_no_clobber_on_failure(tmp_path):
    model = str(tmp_path / "tf2model.h5")
    subprocess.check_call([venvs.python_of("tf2"), "-c", MAKE_H5, model], env=venvs.run_environ("tf2"))
    out = str(tmp_path / "out")
    host = [sys.executable, "-m", "converters.convert"]
    environ = dict(os.environ, PYTHONPATH=venvs.REPO_ROOT)
    # skimage's 106 pictures: 16 probe samples, 30 of the other 90 calibrate
    done = subprocess.run(host + [model, "--calib", "skimage", "--preprocess", "unit", "--calib-samples", "30",
                                  "--probe-samples", "16",
                                  "--out", out], cwd=venvs.REPO_ROOT, env=environ, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "report:" in done.stdout and "NPU: ready" in done.stdout
    manifest = read(out, "manifest.json")
    assert manifest["origin"]["env"] == "tf2" and manifest["model"]["route"] == "keras_h5"
    assert read(out, "tflite.json")["reference_env"] == "tf2"
    before = {name: open(os.path.join(out, name), "rb").read() for name in ("model_int8.tflite", "report.json")}

    # uint8 I/O is not NPU-ready; --strict-npu makes that an error, and the good results stay
    failed = subprocess.run(host + [model, "--calib", "skimage", "--preprocess", "unit", "--calib-samples", "30",
                                    "--probe-samples", "16",
                                    "--io", "uint8", "--strict-npu", "--out", out], cwd=venvs.REPO_ROOT,
                            env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    assert failed.returncode == NotInt8Error.exit_code
    assert "npu failed" in failed.stderr and "uint8" in failed.stderr and "Traceback" not in failed.stderr
    for name, content in before.items():
        assert open(os.path.join(out, name), "rb").read() == content, name
    failure = os.path.join(out, convert.FAILURE_DIR)
    assert read(failure, "npu.json")["verdict"] == "partial"
    assert os.path.exists(os.path.join(failure, "report.html"))

    # a usage error is one paragraph, no traceback, nothing written
    shutil.rmtree(failure)
    bad = subprocess.run(host + [model, "--out", out], cwd=venvs.REPO_ROOT, env=environ,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    assert bad.returncode == 2 and "--calib" in bad.stderr and "Traceback" not in bad.stderr
    assert not os.path.exists(failure)
