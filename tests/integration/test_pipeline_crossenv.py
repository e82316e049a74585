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
