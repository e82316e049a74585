"""A real ReLU6 MobileNetV1 through ``convert_legacy`` with default options (issue 30's test model).

The model (``legacy_tf1/mobilenet.py``, fixture ``mobilenet_faces`` in ``conftest.py``) is keras.applications'
MobileNet trained in tf1.13 on real faces; its probe is 95 % faces, the kind of probe on which raw SQNR,
cosine and top-1 cannot tell a good int8 file from a constant one (FACTS.md, "Measured 2026-12-07").
What must hold whatever the quantization search chooses: int8 input and output, every op int8, the
``quantization`` section with its ``plain`` baseline, and the three data sets disjoint.

CI time: the model's training (about a minute) and one ``convert_legacy`` (1-3 minutes; ``--no-keras3``
leaves out the Keras 3 parity cells, which this model adds nothing to).
"""

import json
import os
import subprocess
import sys

import pytest

from envs import venvs

pytestmark = pytest.mark.crossenv


@pytest.fixture(scope="module")
def default_run(mobilenet_faces):
    data = mobilenet_faces
    out = data / "run_default"
    environ = dict(os.environ, PYTHONPATH=venvs.REPO_ROOT)
    command = [sys.executable, "-m", "converters.pipeline", str(data / "model.h5"), "--origin", "1.13",
               "--calib", str(data / "calib.npy"), "--probe", str(data / "probe.npy"), "--preprocess", "tf",
               "--eval", str(data / "eval.npz"), "--no-keras3", "--out", str(out)]
    result = subprocess.run(command, env=environ, cwd=str(data), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]  # every parity cell and the int8 model match
    return json.loads((out / "report.json").read_text()), result


def test_the_int8_file_has_int8_io_and_every_op_int8(default_run):
    report, _ = default_run
    tflite = report["tflite"]
    assert tflite["input_dtype"] == "int8" and tflite["output_dtype"] == "int8", tflite["io"]
    assert [item["dtype"] for item in tflite["io"]["inputs"] + tflite["io"]["outputs"]] == ["int8", "int8"]
    npu = report["npu"]
    assert npu["fully_int8"] is True, npu.get("problems")
    assert not npu["float_ops"], npu["float_ops"]
    assert tflite["weights"]["per_channel"] > 0 and tflite["weights"]["per_tensor"] == 0  # the default


def test_the_quantization_section_holds_the_plain_baseline_and_the_choice(default_run):
    report, _ = default_run
    quantization = report["quantization"]
    names = [candidate["name"] for candidate in quantization["candidates"]]
    assert "plain" in names, names
    assert quantization["chosen"] in names, (quantization["chosen"], names)
    assert quantization["same_ops_as_plain"] is True
    # --eval: every candidate's held-out top-1 beside the written file's
    assert set(report["eval"]["candidates_top1"]) == set(names)
    # issue 30's fidelity figures are in every place the report measures an int8 file
    tflite = report["tflite"]
    for where in [tflite] + tflite["outputs"] + quantization["candidates"]:
        assert "sqnr_centered_db" in where and "correlation" in where, sorted(where)
    # issue 30's per-channel figures with default options, on the held-out probe (95 % one class): a constant
    # output scores <= 0 dB centered and r = 0 here, so these bars cannot be passed by a flattened file
    assert tflite["status"] == "match", tflite.get("reasons")
    assert tflite["sqnr_centered_db"] >= 6.0 and tflite["correlation"] >= 0.85, tflite
    assert tflite["top1_agreement"] >= 0.98
    if quantization["chosen"] != "plain":  # auto is not worse than plain on the probe (0.5 dB: rounding noise)
        plain = quantization["plain_probe"]
        assert tflite["sqnr_centered_db"] >= plain["sqnr_centered_db"] - 0.5, (quantization["why"], plain)
    # a MobileNet-class model gets auto's layer-wise stage (its MACs times the samples are within the limit)
    assert "skipped" not in quantization["layerwise"], quantization["layerwise"]
    assert [c["name"] for c in quantization["candidates"]][4:] == quantization["layerwise"]["candidates"]


def test_calibration_probe_and_eval_are_disjoint_and_the_probe_is_skewed(default_run, mobilenet_faces):
    report, _ = default_run
    assert report["eval"]["overlap"] == {"calibration": 0, "probe": 0}, report["eval"]["overlap"]
    assert report["data"]["overlap"] == 0, report["data"]
    info = json.loads((mobilenet_faces / "mobilenet.json").read_text())
    parts = info["indices"]
    assert not set(parts["probe"]) & set(parts["calibration"])
    assert not set(parts["eval"]) & (set(parts["probe"]) | set(parts["calibration"]))
    assert report["tflite"]["probe_samples"] == info["split"]["probe"]
    # the probe's figures are those of a mostly-one-class batch: the model's float predictions agree
    assert info["probe_predicted_face_share"] >= 0.9
