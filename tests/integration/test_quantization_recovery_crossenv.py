"""Int8 accuracy recovery end to end (issue 22): a depthwise-separable CNN trained in tf1.13 on real digits,
and the same model with its channels rescaled (the same float function, per-channel ranges 1000x apart,
as real trained MobileNets have them), converted per-tensor and per-channel, plain against auto.

``python -m legacy_tf1 separable`` trains the model on scikit-learn's digits (train split) and writes the
rescaled twin; every conversion is calibrated on the train split and evaluated on the 540 held-out test
digits (``--eval``), which neither training, calibration nor the candidates' choice saw. One run per model
and granularity: ``--quantize auto`` also writes the plain converter's file (``model_int8_plain.tflite``)
and, with ``--eval``, the top-1 of every candidate; the plain file is also measured on the probe.

Tolerances: "within 1 point of float" is the issue's target (5 of the 540 samples); "not worse than plain"
is on the probe (held out): auto's SQNR at least plain's minus 0.5 dB (the size of run-to-run rounding
differences between candidates that are equally good at ~45 dB) and its top-1 agreement at least plain's.
CI time: about 3 minutes (training 15-40 s, one convert_legacy, three convert runs).
"""

import json
import os
import subprocess
import sys

import pytest

from envs import venvs

pytestmark = pytest.mark.crossenv

POINTS = 1.0
SQNR_SLACK_DB = 0.5


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    data = tmp_path_factory.mktemp("separable")
    made = subprocess.run(venvs.module_command("tf1.13", "legacy_tf1", ["separable", str(data)]),
                          env=venvs.run_environ("tf1.13"), cwd=venvs.REPO_ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, universal_newlines=True, timeout=600)
    assert made.returncode == 0, made.stdout[-3000:]
    info = json.loads((data / "separable.json").read_text())
    assert info["float_top1_tf1"] >= 90.0  # trained, not chance (10 %)
    assert info["rescaled_float_top1_tf1"] == info["float_top1_tf1"]
    assert info["rescaled_max_abs_difference"] < 1e-5  # the same float function
    assert info["rescale_factors"][1] / info["rescale_factors"][0] > 100
    return data


def _run(data, module, model, out, *extra):
    environ = dict(os.environ, PYTHONPATH=venvs.REPO_ROOT)
    command = [sys.executable, "-m", module, str(data / model), "--calib", str(data / "calib.npy"),
               "--preprocess", "raw", "--eval", str(data / "eval.npz"), "--out", str(data / out)] + list(extra)
    result = subprocess.run(command, env=environ, cwd=str(data), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((data / out / "report.json").read_text())


@pytest.fixture(scope="module")
def rescaled_per_tensor(models):
    """The headline case, through the whole legacy path (re-save in tf1.13, parity, int8)."""
    return _run(models, "converters.pipeline", "model_rescaled.h5", "rescaled_pt", "--origin", "1.13",
                "--per-tensor", "--no-keras3")


@pytest.fixture(scope="module")
def others(models):
    return {(model, granularity): _run(models, "converters.convert", model + ".h5", "%s_%s" % (model, granularity),
                                       *(["--per-tensor"] if granularity == "per_tensor" else []))
            for model, granularity in (("model_rescaled", "per_channel"), ("model", "per_tensor"),
                                       ("model", "per_channel"))}


def _figures(report):
    quantization = report["quantization"]
    evaluation = report["eval"]
    top1 = dict((c["name"], c["eval_top1"]) for c in quantization["candidates"])
    assert top1 == evaluation["candidates_top1"]
    return quantization, evaluation["float_top1"], top1


def test_per_tensor_auto_recovers_the_rescaled_model_that_plain_loses(rescaled_per_tensor):
    quantization, float_top1, top1 = _figures(rescaled_per_tensor)
    assert quantization["chosen"] != "plain" and "cle" in quantization["chosen"], quantization["why"]
    chosen = rescaled_per_tensor["eval"]["int8_top1"]
    assert top1[quantization["chosen"]] == pytest.approx(chosen, abs=0.01)  # the written file is the chosen one
    assert abs(float_top1 - chosen) <= POINTS, (float_top1, top1)
    assert float_top1 - top1["plain"] > POINTS, (float_top1, top1)  # plain is not: the test has teeth
    # deleting equalization leaves only plain and bias: both lose the model
    assert float_top1 - max(top1["plain"], top1["bias"]) > POINTS, top1
    assert rescaled_per_tensor["tflite"]["weights"]["per_channel"] == 0
    assert rescaled_per_tensor["tflite"]["status"] == "match"


def test_the_equalized_float_model_is_checked_in_the_quantization_section_not_the_parity_matrix(
        rescaled_per_tensor, models):
    """Equalization is a step towards the int8 file: its float check and its probe check live in
    ``quantization.cle``, beside the int8 gain it brought; the upgrade-parity matrix holds environments."""
    envs = [cell["env"] for cell in rescaled_per_tensor["parity"]]
    assert "tflite-float-cle" not in envs and not (models / "rescaled_pt" / "parity_tflite-float-cle.json").exists()
    cle = rescaled_per_tensor["quantization"]["cle"]
    assert cle["float_check"]["verdict"] == "match"
    assert cle["probe_check"]["status"] == "match"  # the chosen equalized model against the origin, on the probe
    assert cle["int8_gain_db"] > 10 and "float deviation included" in cle["judged"]


def test_auto_is_never_worse_than_plain_on_the_probe(rescaled_per_tensor, others):
    for key, report in [(("model_rescaled", "per_tensor"), rescaled_per_tensor)] + sorted(others.items()):
        quantization = report["quantization"]
        if quantization["chosen"] != "plain":  # plain chosen: the written file is plain's
            plain = quantization["plain_probe"]
            assert report["tflite"]["sqnr_db"] >= plain["sqnr_db"] - SQNR_SLACK_DB, (key, quantization["why"])
            assert report["tflite"]["sqnr_centered_db"] >= plain["sqnr_centered_db"] - SQNR_SLACK_DB, key
            assert report["tflite"]["top1_agreement"] >= plain["top1_agreement"], key
        float_top1, chosen = report["eval"]["float_top1"], report["eval"]["int8_top1"]
        assert abs(float_top1 - chosen) <= POINTS, (key, float_top1, chosen)


def test_the_layer_debugger_shows_the_written_files_values(rescaled_per_tensor, others):
    """A chosen candidate that edits the int8 file's values (bias, ebias, gptq): the per-layer debugger's
    instrumented model holds them (``recovery.graph.transplant``); otherwise it is plain's quantization."""
    for key, report in [(("model_rescaled", "per_tensor"), rescaled_per_tensor)] + sorted(others.items()):
        chosen = report["quantization"]["chosen"]
        info = report["layers_info"]
        assert report["layers"] and "error" not in info, (key, info)
        if set(chosen.split("+")) & {"bias", "ebias", "gptq"}:
            copied = info["values_from_written_file"]
            assert copied["copied"] > 0 and copied["skipped"] == [], (key, chosen, copied)
        else:
            assert "values_from_written_file" not in info, (key, chosen)


def test_per_channel_plain_loses_the_rescaled_model_too_and_auto_recovers_it(others):
    quantization, float_top1, top1 = _figures(others[("model_rescaled", "per_channel")])
    # per-channel weights do not help: the activations are per tensor, and their channels differ 1000x
    assert float_top1 - top1["plain"] > POINTS
    assert abs(float_top1 - top1[quantization["chosen"]]) <= POINTS


def test_every_candidate_runs_the_same_ops_on_the_npu_as_plain(rescaled_per_tensor, models):
    quantization = rescaled_per_tensor["quantization"]
    assert quantization["same_ops_as_plain"] is True
    plain = models / "rescaled_pt" / quantization["plain_path"]
    checked = subprocess.run(venvs.module_command("tf2", "converters.tf2.npu", [str(plain), "--json"]),
                             env=dict(venvs.run_environ("tf2"), PYTHONPATH=venvs.REPO_ROOT), cwd=venvs.REPO_ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=300)
    assert checked.returncode == 0, checked.stderr[-2000:]
    plain_npu = json.loads(checked.stdout)
    chosen_npu = rescaled_per_tensor["npu"]
    assert plain_npu["fully_int8"] is True and chosen_npu["fully_int8"] is True
    assert plain_npu["ops"] == chosen_npu["ops"]

    def placement(npu):
        return [(t["target"], t["ops_on_npu"], t["ops_on_cpu"]) for t in npu["targets"]]

    assert placement(plain_npu) == placement(chosen_npu)


def test_the_report_shows_the_ablation_and_why(rescaled_per_tensor, models):
    quantization = rescaled_per_tensor["quantization"]
    names = [c["name"] for c in quantization["candidates"]]
    assert names[:4] == ["plain", "bias", "cle", "cle+bias"]  # auto's first stage ...
    assert names[4:] == quantization["layerwise"]["candidates"]  # ... and its layer-wise second (a small model)
    for candidate in quantization["candidates"]:
        for key in ("sqnr_db", "sqnr_centered_db", "correlation", "cosine", "top1_agreement", "max_abs_lsb",
                    "seconds", "eval_top1"):
            assert candidate[key] is not None, (candidate["name"], key)
    # every calibration sample judged the candidates (cross-fitting), none of them on a model fitted on it
    assert quantization["validation"]["samples"] == rescaled_per_tensor["data"]["calibration"]["count"]
    assert quantization["validation"]["folds"] >= 2
    html = (models / "rescaled_pt" / "report.html").read_text()
    assert "How the int8 model was made" in html and "cross-fitting" in html and "centered SQNR" in html
    assert "per-layer error, plain vs chosen" in html
    assert os.path.exists(str(models / "rescaled_pt" / "model_int8_plain.tflite"))
