"""--npu-target end to end: the demo through ``convert_legacy`` compiles 100 % on an Ethos-U NPU (Vela), and
``nox -s npu`` checks an existing .tflite, a damaged one with one paragraph and an error status.

Real environments, real model (the demo, trained in tf1.13), real Vela.
"""

import json
import os
import subprocess
import sys

import pytest

from envs import venvs

pytestmark = pytest.mark.crossenv

NOX = os.path.join(os.path.dirname(sys.executable), "nox")


def run(command, cwd, timeout=900):
    environ = dict(os.environ, PYTHONPATH=venvs.REPO_ROOT)
    return subprocess.run(command, cwd=str(cwd), env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=timeout)


def nox_npu(cwd, *args):
    # nox is locked in the host environment (envs/registry.py HOST_TOOLS): missing is a broken host, not a skip
    assert os.path.exists(NOX), "nox is missing from %s" % os.path.dirname(NOX)
    return run([NOX, "-f", os.path.join(venvs.REPO_ROOT, "noxfile.py"), "-s", "npu", "--"] + list(args), cwd)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("npu_demo")
    result = run([sys.executable, "-m", "converters.pipeline", "--npu-target", "ethos-u65-256",
                  "--npu-target", "imx8mp", "--strict-npu"], cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    return cwd / "runs" / "demo_face"


def test_the_demo_compiles_entirely_on_an_ethos_u65(demo):
    report = json.loads((demo / "report.json").read_text())
    npu = report["npu"]
    assert npu["fully_int8"] is True
    entries = dict((e["target"], e) for e in npu["targets"])
    assert list(entries) == ["ethos-u65-256", "imx8mp"]
    u65 = entries["ethos-u65-256"]
    assert u65["status"] == "ok" and u65["ops_on_cpu"] == [] and u65["npu_ops_fraction"] == 1.0
    assert u65["ops_on_npu"] == u65["ops_total"] > 0 and u65["npu_macs_fraction"] == 1.0
    assert u65["estimated_ms"] > 0 and u65["sram_bytes"] > 0 and u65["system_config"]
    assert (demo / u65["compiled_model"]).is_file()
    # tfbridge wrote it, so a rerun may replace it (runfolder.OWNED_PREFIXES)
    assert u65["compiled_model"] in json.loads((demo / ".tfbridge-run.json").read_text())["files"]
    assert entries["imx8mp"]["ops_on_cpu"] == [] and entries["imx8mp"]["estimated_ms"] is None
    markdown = (demo / "report.md").read_text()
    assert "### ethos-u65-256" in markdown and "Every op runs on the NPU." in markdown
    assert "ethos-u65-256" in (demo / "report.html").read_text()


def test_nox_npu_checks_an_existing_tflite(demo):
    result = nox_npu(demo, "model_int8.tflite", "--target", "ethos-u55-128", "--json")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    entry = payload["targets"][0]
    assert entry["target"] == "ethos-u55-128" and entry["ops_on_cpu"] == [] and entry["estimated_ms"] > 0


def test_nox_npu_on_a_damaged_file_gives_one_paragraph_and_an_error_status(demo, tmp_path):
    damaged = tmp_path / "damaged.tflite"
    damaged.write_bytes((demo / "model_int8.tflite").read_bytes()[:2000])
    result = nox_npu(tmp_path, "damaged.tflite", "--target", "ethos-u65-256")
    output = result.stdout + result.stderr
    assert result.returncode == 5  # InputFileError
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if line.startswith("tfbridge:")]
    assert len(lines) == 1 and "cannot read damaged.tflite as a TFLite model" in lines[0]
