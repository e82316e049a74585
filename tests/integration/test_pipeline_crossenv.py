"""``convert_legacy`` end to end on the embedded demo: the newcomer's first command, and its reruns.

Real environments, real model (trained in tf1.13 on scikit-image's LFW faces), real conversion.
"""

import json
import os
import subprocess
import sys

import pytest

from envs import venvs

pytestmark = pytest.mark.crossenv


def convert_legacy(cwd, *args):
    environ = dict(os.environ, PYTHONPATH=venvs.REPO_ROOT)
    return subprocess.run([sys.executable, "-m", "converters.pipeline"] + list(args), cwd=str(cwd), env=environ,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=900)


def snapshot(folder):
    return {name: os.stat(os.path.join(folder, name)).st_mtime_ns for name in sorted(os.listdir(folder))
            if os.path.isfile(os.path.join(folder, name))}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("demo")
    result = convert_legacy(cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    return cwd, result


def test_demo_runs_end_to_end_to_a_fully_int8_model(demo):
    cwd, result = demo
    run = cwd / "runs" / "demo_face"
    report = json.loads((run / "report.json").read_text())
    for key in ("model", "origin", "parity", "tflite", "npu", "layers", "timings"):
        assert key in report, key
    assert report["origin"]["env"] == "tf1.13" and report["origin"]["tensorflow"] == "1.13.2"
    cells = {cell["env"]: cell for cell in report["parity"]}
    assert cells["tf1.15"]["status"] == "match" and cells["tf2"]["status"] == "match"
    assert report["tflite"]["input_dtype"] == "int8" and report["tflite"]["output_dtype"] == "int8"
    assert report["tflite"]["status"] == "match" and report["tflite"]["cosine"] >= 0.99
    assert report["npu"]["fully_int8"] is True and report["npu"]["verdict"] == "ready"
    assert report["timings"]["convert"] > 0
    assert report["run_dir"] == str(run)
    html = (run / "report.html").read_text()
    assert "<html" in html and "data:image/png;base64," in html  # self-contained, with its plots
    assert (run / "report.md").stat().st_size > 0
    assert "verdict: pass" in result.stdout and "NPU: ready" in result.stdout
    assert not [name for name in os.listdir(str(cwd / "runs")) if ".partial-" in name]


def test_conversion_runs_side_by_side_with_the_parity_cells(demo):
    # issue 13: the conversion needs only the re-save's outputs, so it does not wait for the parity cells
    # (steps.json lists every step with its start and end); the report, which reads the cells, comes after
    cwd, result = demo
    run = cwd / "runs" / "demo_face"
    ran = json.loads((run / "steps.json").read_text())["steps"]
    by_name = {step["step"]: step for step in ran}
    cells = [step for step in ran if step["step"].startswith("parity-")]
    assert len(cells) >= 2, [step["step"] for step in ran]  # tf1.15, and the tf2 cells in one process
    assert by_name["tflite_convert"]["started"] < max(cell["ended"] for cell in cells)
    # the demo runs --eval: the origin's evaluation loads model.h5, so it starts once the whole re-save has
    # ended; the conversion starts beside the re-save all the same (issue 31) and waits for the evaluation's
    # files only at its own --eval phase (report.json's timeline: seconds since the run started)
    assert by_name["eval-tf1.13"]["started"] >= by_name["resave"]["ended"]
    line = json.loads((run / "report.json").read_text())["timings"]["timeline"]
    whole = dict((item["step"], item) for item in line if item["phase"] == "step")
    assert set(whole) == set(by_name)
    # the report step starts once the conversion is done, its imports overlapping the cells still running;
    # it renders when the host says go, after every cell has ended
    assert by_name["report"]["started"] >= by_name["tflite_convert"]["ended"]
    go = [item for item in line if item["step"] == "report" and item["phase"] == "imports, then wait for the go"]
    assert go and go[0]["end"] >= max(whole[cell["step"]]["end"] for cell in cells) - 0.01
    phases = dict((item["phase"], item) for item in line if item["step"] == "tflite_convert" and item["phase"] != "step")
    for name in ("import TensorFlow", "wait for the re-saved model", "search: calibrate, candidates, choose",
                 "evaluate int8 on the probe", "layer debugger (thread)", "wait for eval-tf1.13", "--eval"):
        assert whole["tflite_convert"]["start"] <= phases[name]["start"] <= phases[name]["end"] \
            <= whole["tflite_convert"]["end"], name
    assert phases["wait for eval-tf1.13"]["waits_on"] == "eval-tf1.13"
    assert phases["--eval"]["start"] >= whole["eval-tf1.13"]["end"] - 1.0  # its summary is the step's last write
    path = json.loads((run / "report.json").read_text())["timings"]["critical_path"]
    assert path[-1]["step"] == "report"
    if (os.cpu_count() or 1) >= 2:
        # the tf2 cells and the conversion start beside the re-save (TensorFlow imported meanwhile) and wait
        # for its model
        assert by_name["parity-tf2-cells"]["started"] < by_name["resave"]["ended"]
        assert by_name["tflite_convert"]["started"] < by_name["resave"]["ended"]
        assert not (run / ".resave-failed").exists() and not (run / ".eval-failed").exists()
    # each cell compares the probe's first --parity-samples samples (default 16; the demo's probe is 20)
    report = json.loads((run / "report.json").read_text())
    compared = [cell.get("samples") for cell in report["parity"] if cell.get("status") == "match"]
    assert compared and all(count == 16 for count in compared), compared
    table = [line.split()[0] for line in result.stderr.splitlines()
             if line.startswith("  parity-") or line.startswith("  tflite_convert ")]
    assert table[-1] == "tflite_convert" and len(table) == len(cells) + 1  # the table's order is fixed


def test_demo_calibrates_probes_and_evaluates_on_disjoint_images(demo):
    import hashlib

    cwd, _ = demo
    source = cwd / "runs" / ".demo-source"
    folders = {}
    for name in ("train", "calibration", "eval"):
        files = sorted((source / name).rglob("*.png"))
        assert files, name
        folders[name] = set(hashlib.sha256(path.read_bytes()).hexdigest() for path in files)
        assert len(folders[name]) == len(files), "duplicate images inside %s" % name
    assert not folders["train"] & folders["calibration"]
    assert not folders["train"] & folders["eval"] and not folders["calibration"] & folders["eval"]
    assert sorted(os.listdir(str(source / "eval"))) == ["face", "non_face"]

    report = json.loads((cwd / "runs" / "demo_face" / "report.json").read_text())
    data = report["data"]
    assert data["overlap"] == 0
    assert data["calibration"]["count"] == 30 and data["probe"]["count"] == 20
    assert data["calibration"]["source"] == data["probe"]["source"] == str(source / "calibration")
    # the probe in the run folder is not among the samples calibration saw: recomputed here from the files
    manifest = json.loads((cwd / "runs" / "demo_face" / "manifest.json").read_text())
    assert len(set(manifest["probe"]["source_sha256"])) == 20
    assert {h[:16] for h in folders["eval"]}.isdisjoint(manifest["probe"]["source_sha256"])

    evaluation = report["eval"]
    assert evaluation["samples"] == len(folders["eval"]) == 50 and evaluation["classes"] == 2
    assert evaluation["int8_top1"] - evaluation["float_top1"] == pytest.approx(-evaluation["drop_points"], abs=1e-9)
    assert 0 <= evaluation["flipped"] <= evaluation["samples"]
    low, high = evaluation["drop_ci95"]
    assert low <= evaluation["drop_points"] <= high and high - low < 40
    assert evaluation["float_top1"] >= 80.0 and evaluation["int8_top1"] >= 80.0  # a trained face detector
    assert evaluation["float_by_env"]["tf1.13"]["top1"] == pytest.approx(evaluation["float_top1"], abs=4.0)
    assert evaluation["overlap"] == {"calibration": 0, "probe": 0}
    correctness = evaluation["correctness"]
    assert sum(correctness.values()) == 50
    assert correctness["float_only"] - correctness["int8_only"] == round(evaluation["drop_points"] * 50 / 100.0)
    markdown = (cwd / "runs" / "demo_face" / "report.md").read_text()
    assert "## Accuracy on held-out data" in markdown and "Overlap" in markdown
    assert "Accuracy on held-out data" in (cwd / "runs" / "demo_face" / "report.html").read_text()


def test_unchanged_rerun_does_nothing(demo):
    cwd, _ = demo
    run = str(cwd / "runs" / "demo_face")
    before = snapshot(run)
    result = convert_legacy(cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "nothing to do" in result.stderr
    assert snapshot(run) == before  # not one file rewritten


def test_changed_conversion_option_reuses_the_resave_and_parity(demo):
    cwd, _ = demo
    run = cwd / "runs" / "demo_face"
    reference_before = (run / "reference_tf1.13.npz").read_bytes()
    result = convert_legacy(cwd, "--per-tensor")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "reusing the re-save and parity results" in result.stderr
    assert "resave " not in result.stderr  # the tf1.13 step did not run again
    assert (run / "reference_tf1.13.npz").read_bytes() == reference_before
    tflite = json.loads((run / "tflite.json").read_text())
    assert tflite["per_tensor"] is True and tflite["weights"]["per_channel"] == 0
    steps = json.loads((run / "steps.json").read_text())
    assert set(steps) >= {"verify", "convert"}
