"""Issue 32, a fleet of legacy models end to end: four kinds in one manifest, two shards in two processes at
once, one of them killed and rerun, merged, each verdict equal to that model's own ``convert_legacy`` run.

The models (built in tf1.13 at test time, as the other integration tests build them): the zoo's small
standalone-Keras CNN (``.h5``, an ``.npy`` of images), the keras 2.2.4 LSTM of ``data/build_models.py``
(``.npy`` of sequences; its Keras 3 cell mismatches: a ``fail`` verdict with a first divergent layer), the
``tf.layers`` CNN of ``data/build_graphs.py`` as a TF1 frozen graph (``.pb``), and a CNN with a Lambda layer
(no ``--trust-model``: an ``error``, exit 7, that must not stop the others). Few samples, so that it stays
small: the whole file is about six small conversions.

- shards 0/2 and 1/2 start together in separate folders; shard 0's fleet process gets SIGKILL once its first
  model is under way: its model process stops too (``PR_SET_PDEATHSIG``), nothing it left is trusted (no
  outcome, no run folder, no fleet.json), and the rerun completes;
- ``fleet-report`` of both folders lists the four models once, with the verdict and failing cells of each
  model's single ``convert_legacy`` run (same options, its own folder), run beside the shards;
- a rerun of the finished shard 1 reuses its run (``reused``) and is quick; ``fleet-report`` of shard 1
  alone lists shard 0's models as ``missing``.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from envs import venvs

pytestmark = pytest.mark.crossenv

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data")
REPO = os.path.dirname(os.path.dirname(HERE))

MAKE = r'''
import sys
import numpy as np
sys.path.insert(0, sys.argv[1])
import build_models
out = sys.argv[2]
build_models.main("lstm", out + "/lstm.h5")
build_models.main("lambda", out + "/lambda.h5")
rng = np.random.RandomState(1)
np.save(out + "/sequences.npy", rng.normal(size=(40, 20, 8)).astype("float32"))
np.save(out + "/images32.npy", rng.uniform(0, 255, size=(40, 32, 32, 3)).astype("float32"))
'''

MANIFEST = """
[defaults]
origin = "1.13"
calib_samples = 16
probe_samples = 10
parity_samples = 4
no_layer_debug = true
quantize = "plain"
no_keras3 = true

[[model]]
path = "keras_cnn.h5"
calib = "images32.npy"

[[model]]
path = "lstm.h5"
calib = "sequences.npy"

[[model]]
path = "cnn.pb"
name = "tf1-graph"
calib = "images.npy"

[[model]]
path = "lambda.h5"
calib = "images.npy"
"""
EXPECTED = {"keras_cnn": "pass", "lstm": "fail", "tf1-graph": "pass", "lambda": "error"}


def environ():
    variables = dict(os.environ, PYTHONPATH=REPO)
    variables.pop("TFBRIDGE_DEBUG", None)
    return variables


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fleet_models")
    python, env = venvs.python_of("tf1.13"), venvs.run_environ("tf1.13")
    for argv in ([python, "-c", MAKE, DATA, str(folder)], [python, os.path.join(DATA, "build_graphs.py"), str(folder)],
                 [python, "-m", "legacy_tf1", "zoo", "keras-cnn", "--out", str(folder / "keras_cnn.h5"), "--seed", "0"]):
        subprocess.run(argv, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=True)
    (folder / "fleet.toml").write_text(MANIFEST)
    return folder


def start(module, *args, log=None):
    """``python -m module args``; its output in pipes, or in the file ``log`` (a long run's output would
    fill a pipe that is read only at its end)."""
    stream = open(str(log), "w") if log else subprocess.PIPE
    return subprocess.Popen([sys.executable, "-m", module] + [str(a) for a in args], cwd=REPO, env=environ(),
                            stdout=stream, stderr=stream, universal_newlines=True)


def started_in(folder, name):
    """True once the model's run is under way in the fleet folder (its partial run folder exists)."""
    return os.path.isdir(str(folder)) and any(entry.startswith(".%s.partial-" % name)
                                              for entry in os.listdir(str(folder)))


def finish(process, timeout=1500):
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def pipelines_in(folder):
    """Process ids of running convert_legacy processes writing under ``folder``."""
    found = []
    for pid in os.listdir("/proc"):
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as handle:
                argv = handle.read().split(b"\0")
        except (OSError, ValueError):
            continue
        if any(b"converters.pipeline" in a for a in argv) and any(str(folder).encode() in a for a in argv):
            found.append(int(pid))
    return found


def outcome(folder, name):
    with open(str(folder / ".fleet" / "outcomes" / (name + ".json"))) as handle:
        return json.load(handle)


def test_two_shards_at_once_one_killed_and_rerun_merge_to_the_single_runs_verdicts(models, tmp_path):
    from converters import fleet_manifest

    shard0, shard1 = tmp_path / "shard0", tmp_path / "shard1"
    manifest = fleet_manifest.load(str(models / "fleet.toml"), str(shard0))
    assert [e.name for e in manifest.for_shard((0, 2))] == ["keras_cnn", "tf1-graph"]
    first = start("converters.fleet", models / "fleet.toml", "--out", shard0, "--shard", "0/2")
    second = start("converters.fleet", models / "fleet.toml", "--out", shard1, "--shard", "1/2")
    # kill shard 0's fleet process once its first model's run is under way (its partial folder exists)
    deadline = time.time() + 600
    while not started_in(shard0, "keras_cnn") and time.time() < deadline:
        assert first.poll() is None, first.communicate()
        time.sleep(0.5)
    os.kill(first.pid, signal.SIGKILL)
    first.communicate()
    # its model process was told to stop (PR_SET_PDEATHSIG) and cleans up: none is left running
    deadline = time.time() + 120
    while pipelines_in(shard0) and time.time() < deadline:
        time.sleep(0.5)
    assert pipelines_in(shard0) == []
    assert not started_in(shard0, "keras_cnn")  # ... and removed its partial run folder on that SIGTERM
    assert not os.path.exists(str(shard0 / "fleet.json")) and not os.path.exists(str(shard0 / "keras_cnn"))
    assert not os.path.exists(str(shard0 / ".fleet" / "outcomes" / "keras_cnn.json"))

    # the single convert_legacy runs, with each entry's own arguments, beside the shards
    singles = dict((entry.name, start(
        "converters.pipeline", *(entry.argv + ["--jobs", "1", "--out", tmp_path / "single" / entry.name]),
        log=tmp_path / ("single-%s.log" % entry.name))) for entry in manifest.entries)
    rerun = start("converters.fleet", models / "fleet.toml", "--out", shard0, "--shard", "0/2")
    code, out, err = finish(rerun)
    assert code == 0, err[-3000:]  # both of shard 0's models pass
    assert sorted(os.listdir(str(shard0 / ".fleet" / "logs"))) == ["keras_cnn.log", "tf1-graph.log"]
    code, out, err = finish(second)
    assert code == 1, err[-3000:]  # the LSTM's Keras 3 cell mismatches, the Lambda model is refused
    single = dict((name, finish(process)[0]) for name, process in singles.items())  # exit status of each

    report = tmp_path / "merged"
    code, out, err = finish(start("converters.fleet_report", shard0, shard1, "--out", report))
    assert code == 1, err  # not every model passed
    fleet = json.load(open(str(report / "fleet.json")))
    models_by_name = dict((m["name"], m) for m in fleet["models"])
    assert [m["name"] for m in fleet["models"]] == ["keras_cnn", "lstm", "tf1-graph", "lambda"]
    assert dict((name, m["verdict"]) for name, m in models_by_name.items()) == EXPECTED
    for name, model in models_by_name.items():
        assert model["exit_code"] == single[name], (name, single[name], model)  # 0 pass, 1 fail, 7 refused
        if model["verdict"] in ("pass", "fail"):
            single_verify = json.load(open(str(tmp_path / "single" / name / "verify.json")))
            single_report = json.load(open(str(tmp_path / "single" / name / "report.json")))
            int8_failed = single_report["tflite"]["status"] != "match"
            assert model["failing"] == single_verify["failing"] + (["int8 TFLite"] if int8_failed else []), name
            assert dict((c["label"], c["status"]) for c in single_report["parity"]) == dict(
                (env, cell["status"]) for env, cell in model["parity"].items())
            assert model["int8"]["status"] == single_report["tflite"]["status"]
            assert model["int8"]["sqnr_db"] > 10 and model["npu"]["targets"]["imx8mp"]["npu_ops_fraction"] > 0
            assert os.path.exists(model["report_html"])
    assert models_by_name["lstm"]["failing"] == ["tf2-keras3"]
    assert models_by_name["lstm"]["first_divergent_layer"] == {"env": "tf2-keras3", "layer": "lstm"}
    assert models_by_name["lambda"]["exit_code"] == 7
    assert models_by_name["lambda"]["error"]["class"] == "UntrustedModelError"
    page = open(str(report / "fleet.html")).read()
    assert 'href="../shard0/keras_cnn/report.html"' in page and "tf2-keras3" in page

    # a rerun of the finished shard reuses its models
    started = time.time()
    code, out, err = finish(start("converters.fleet", models / "fleet.toml", "--out", shard1, "--shard", "1/2"))
    assert code == 1 and outcome(shard1, "lstm")["reused"] is True, err[-2000:]
    assert "reused, unchanged" in err and time.time() - started < 120
    # shard 1 alone: shard 0's models are listed as missing, not dropped
    code, out, err = finish(start("converters.fleet_report", shard1, "--out", tmp_path / "alone"))
    alone = json.load(open(str(tmp_path / "alone" / "fleet.json")))
    assert [m["verdict"] for m in alone["models"]] == ["missing", "fail", "missing", "error"]
