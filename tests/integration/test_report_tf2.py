"""report.json / report.md / report.html from a real conversion step plus parity cells (tf2)."""

import json
import os
import re

import pytest

pytestmark = pytest.mark.tf2

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    import tf_keras

    from converters import runfolder
    from converters.tf2 import tflite_convert

    folder = tmp_path_factory.mktemp("run")
    tf_keras.utils.set_random_seed(1)
    layers = tf_keras.layers
    model = tf_keras.Sequential([layers.Input((20, 20, 3)), layers.Conv2D(6, 3, activation="relu"),
                                 layers.MaxPooling2D(), layers.Flatten(), layers.Dense(5, activation="softmax")])
    h5 = str(folder / "tiny.h5")
    model.save(h5)
    code = tflite_convert.run_step([str(folder), "--model", h5, "--calib", "skimage", "--preprocess", "unit",
                                    "--calib-samples", "20", "--probe-samples", "8"])
    assert code == 0
    # parity cells as converters.shared.parity writes them (one per environment)
    runfolder.write_json(str(folder / "parity_tf1.15.json"), {
        "env": "tf1.15", "runtime": "keras 2.3.1", "status": "match", "max_abs": 3e-8, "cosine": 1.0,
        "top1_agreement": 1.0})
    runfolder.write_json(str(folder / "parity_tf2.json"), {
        "env": "tf2", "runtime": "tf_keras 2.21", "status": "mismatch", "max_abs": 0.2, "cosine": 0.97,
        "top1_agreement": 0.75, "hint": "BatchNormalization epsilon differs", "first_divergent_layer": "bn_1"})
    return str(folder)


def test_report_json_has_the_design_keys(run_folder):
    from converters.tf2 import report

    data = report.write(run_folder)
    for key in ("model", "origin", "parity", "tflite", "npu", "layers", "timings"):
        assert key in data
    assert set(("path", "sha256", "inputs", "outputs")) <= set(data["model"])
    assert data["model"]["inputs"][0]["shape"] == [1, 20, 20, 3]
    assert set(("env", "python", "tensorflow", "keras", "h5py", "numpy")) <= set(data["origin"])
    # the two cells written here: a quantization candidate's float check is no parity cell (issue 30)
    assert [p["env"] for p in data["parity"]] == ["tf1.15", "tf2"]
    assert data["quantization"]["chosen"]
    for key in ("path", "input_dtype", "output_dtype", "size_bytes", "status", "cosine", "top1_agreement",
                "max_abs_lsb", "sqnr_db", "sqnr_centered_db", "correlation"):
        assert key in data["tflite"], key
    assert data["tflite"]["input_dtype"] == "int8" and data["tflite"]["status"] == "match"
    assert data["tflite"]["size_bytes"] == os.path.getsize(os.path.join(run_folder, "model_int8.tflite"))
    assert data["npu"]["verdict"] == "ready" and data["npu"]["ops"]["CONV_2D"] == 1
    assert data["layers"] and all("rmse_over_scale" in layer and "name" in layer for layer in data["layers"])
    assert data["timings"]["convert"] > 0
    with open(os.path.join(run_folder, "report.json")) as handle:
        assert json.load(handle)["tflite"]["cosine"] == data["tflite"]["cosine"]


def test_html_is_self_contained_and_shows_every_section(run_folder):
    from converters.tf2 import report

    report.write(run_folder)
    with open(os.path.join(run_folder, "report.html")) as handle:
        html = handle.read()
    assert not re.search(r'(src|href)="https?://', html), "no external resources"
    assert "<style>" in html and html.count("data:image/png;base64,") == 2  # size + per-layer plots
    for text in ("tf1.15", "BatchNormalization epsilon differs", "bn_1", "CONV_2D", "MAX_POOL_2D",
                 "Where precision is lost", "ready", "mismatch", "zero point"):
        assert text in html, text
    with open(os.path.join(run_folder, "report.md")) as handle:
        markdown = handle.read()
    assert "| tf2 | tf_keras 2.21 | mismatch |" in markdown and "## NPU readiness" in markdown


def test_report_of_a_failed_conversion_explains_it(tmp_path):
    from converters.tf2 import report
    from converters import runfolder

    runfolder.write_json(str(tmp_path / "manifest.json"), {"model": {"path": "/m.h5"}, "origin": {"env": "tf1.13"}})
    runfolder.write_json(str(tmp_path / "tflite.json"), {"status": "conversion_error",
                                                          "error": "the int8 converter left op(s) SIN in float"})
    runfolder.write_json(str(tmp_path / "npu.json"), {"verdict": "not_ready", "fully_int8": False,
                                                      "ops": {"SIN": 1}, "float_ops": ["SIN"],
                                                      "problems": ["op SIN computes in float"], "rejected": True})
    data = report.write(str(tmp_path))
    assert data["tflite"]["status"] == "conversion_error" and data["parity"] == [] and data["layers"] == []
    html = (tmp_path / "report.html").read_text()
    assert "left op(s) SIN in float" in html and "op SIN computes in float" in html


def test_no_manifest_is_an_input_error(tmp_path):
    from converters.tf2 import report
    from converters.errors import InputFileError

    with pytest.raises(InputFileError, match="no manifest.json"):
        report.write(str(tmp_path))
