"""The Lambda gate through the user-facing commands (issue 16), driven from the host.

Trap models are built by real keras 2.2.4 in tf1.13 (``data/build_traps.py``): a Lambda at the top
level, inside ``TimeDistributed``, inside ``Bidirectional``'s wrapped layer (through an RNN cell, the
only way keras 2.2.4 allows), inside a ``Sequential`` nested in a ``Model``, inside a nested model inside
``TimeDistributed``, and a Lambda with a function-valued ``output_shape``. Each trap's function creates
a marker file if it ever runs. ``verify_upgrade`` and ``convert_legacy`` must refuse every trap without
``--trust-model`` (exit >= 2, the Lambda's path in the paragraph, no marker, nothing written); with
``--trust-model`` verify_upgrade processes two nested traps (the slow positive path).
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
CASES = ("top", "time_distributed", "bidirectional", "sequential_in_model", "model_in_wrapper",
         "output_shape_fn")

MAKE_CALIB = r'''
import sys
import numpy as np
np.save(sys.argv[1], np.random.RandomState(0).uniform(-1, 1, (16, 4, 6)).astype(np.float32))
'''


@pytest.fixture(scope="module")
def traps(tmp_path_factory):
    root = tmp_path_factory.mktemp("traps")
    venvs.ensure("tf1.13", log=lambda message: None)
    python, environ = venvs.python_of("tf1.13"), venvs.run_environ("tf1.13")
    output = subprocess.check_output([python, os.path.join(DATA, "build_traps.py"), str(root)], env=environ,
                                     cwd=REPO, stderr=subprocess.DEVNULL)
    made = json.loads(output.decode("utf-8").strip().splitlines()[-1])
    assert sorted(made) == sorted(CASES)
    calib = str(root / "calib.npy")
    subprocess.check_call([python, "-c", MAKE_CALIB, calib], env=environ, cwd=REPO)
    for trap in made.values():
        assert os.path.isfile(trap["model"]) and not os.path.exists(trap["marker"])
        trap["calib"] = calib
    return made


def tfbridge(module, *args):
    environ = dict(os.environ, PYTHONPATH=REPO)
    environ.pop("TFBRIDGE_DEBUG", None)
    return subprocess.run([sys.executable, "-m", module] + [str(a) for a in args], cwd=REPO, env=environ,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)


def custom_options(trap):
    return ["--custom-objects", trap["custom_objects"]] if trap["custom_objects"] else []


def assert_refused(result, trap, out):
    assert result.returncode == 7, (result.returncode, result.stderr[-3000:])  # UntrustedModelError
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    paragraph = [line for line in result.stderr.splitlines() if line.startswith("tfbridge: ")][-1]
    assert "contains Lambda layer(s) %s;" % trap["path"] in paragraph, paragraph
    assert "--trust-model" in paragraph
    assert not os.path.exists(trap["marker"]), "the Lambda's code ran without --trust-model"
    assert not os.path.exists(str(out)), "a refused run wrote its --out"
    parent = os.path.dirname(str(out))
    assert not [name for name in os.listdir(parent) if ".partial" in name or ".old-" in name]


@pytest.mark.parametrize("case", CASES)
def test_verify_and_convert_legacy_refuse_the_trap_without_trust(traps, tmp_path, case):
    trap = traps[case]
    out = tmp_path / "verify"
    assert_refused(tfbridge("converters.verify", trap["model"], "--origin", "1.13", "--out", out,
                            *custom_options(trap)), trap, out)
    out = tmp_path / "convert_legacy"
    # 16 samples: 8 for the probe, 8 for calibration (they never share one)
    assert_refused(tfbridge("converters.pipeline", trap["model"], "--origin", "1.13", "--calib", trap["calib"],
                            "--calib-samples", "8", "--probe-samples", "8", "--out", out, *custom_options(trap)),
                   trap, out)


@pytest.mark.parametrize("case", ["model_in_wrapper", "bidirectional"])
def test_verify_processes_a_nested_trap_with_trust(traps, tmp_path, case):
    trap = traps[case]
    out = tmp_path / "run"
    result = tfbridge("converters.verify", trap["model"], "--origin", "1.13", "--out", out, "--trust-model",
                      *custom_options(trap))
    # tf2 (Python 3.11) cannot load the Lambda's Python 3.7 bytecode: its Keras cells are load_errors with
    # cause lambda_bytecode, tolerated because the frozen graph matches in tf2 (README "Verdicts"): exit 0
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    report = json.load(open(str(out / "report.json")))
    assert report["model"]["trusted"] is True
    assert report["model"]["lambda_layers"] == [trap["path"]]
    cells = dict((cell["env"], cell) for cell in report["parity"])
    assert cells["tf1.15"]["status"] == "match", cells["tf1.15"]
    assert cells["tf2-graph"]["status"] == "match", cells["tf2-graph"]
    assert cells["tf2"]["status"] == "load_error" and cells["tf2"].get("cause") == "lambda_bytecode", cells["tf2"]
    assert os.path.exists(trap["marker"]), "trusted, the stored code ran (the trap is real)"
    os.remove(trap["marker"])
