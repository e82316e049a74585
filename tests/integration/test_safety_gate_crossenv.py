"""The Lambda gate through the user-facing commands (issue 16), driven from the host.

Trap models are built by real keras 2.2.4 in tf1.13 (``data/build_traps.py``): a Lambda at the top
level, inside ``TimeDistributed``, inside ``Bidirectional``'s wrapped layer (through an RNN cell, the
only way keras 2.2.4 allows), inside a ``Sequential`` nested in a ``Model``, inside a nested model inside
``TimeDistributed``, and a Lambda with a function-valued ``output_shape``. Each trap's function creates
a marker file if it ever runs. ``verify_upgrade`` and ``convert_legacy`` must refuse every trap without
``--trust-model`` (exit >= 2, the Lambda's path in the paragraph, no marker, nothing written); with
``--trust-model`` verify_upgrade processes two nested traps (the slow positive path), and the trusted code
runs inside the file-system box (issue 26): its attempts to write outside the run folder, to read
``~/.ssh/id_rsa`` and to connect to a listener on the host each fail, and the step logs and report say so.
"""

import json
import os
import socket
import subprocess
import sys
import threading

import pytest

from envs import backends, venvs

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
def listener():
    """A TCP listener on the host; the traps try to connect to it (``accepted`` counts who did)."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted = []

    def accept():
        while True:
            try:
                connection, _ = server.accept()
            except OSError:
                return
            accepted.append(True)
            connection.close()

    threading.Thread(target=accept, daemon=True).start()
    yield server.getsockname()[1], accepted
    server.close()


@pytest.fixture(scope="module")
def traps(tmp_path_factory, listener):
    root = tmp_path_factory.mktemp("traps")
    venvs.ensure("tf1.13", log=lambda message: None)
    python, environ = venvs.python_of("tf1.13"), venvs.run_environ("tf1.13")
    environ["TRAP_PORT"] = str(listener[0])  # baked into each trap's function (build_traps.py)
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


def tfbridge(module, *args, **variables):
    environ = dict(os.environ, PYTHONPATH=REPO, **variables)
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
def test_verify_processes_a_nested_trap_with_trust_and_boxes_its_code(traps, tmp_path, listener, case):
    trap = traps[case]
    out = tmp_path / "run"
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_rsa").write_text("not a real key")
    connections = len(listener[1])
    result = tfbridge("converters.verify", trap["model"], "--origin", "1.13", "--out", out, "--trust-model",
                      *custom_options(trap), HOME=str(home))
    # tf2 (Python 3.11) cannot load the Lambda's Python 3.7 bytecode: its Keras cells are load_errors with
    # cause lambda_bytecode, tolerated because the frozen graph matches in tf2 (docs/parity.md): exit 0
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    report = json.load(open(str(out / "report.json")))
    assert report["model"]["trusted"] is True
    assert report["model"]["lambda_layers"] == [trap["path"]]
    cells = dict((cell["env"], cell) for cell in report["parity"])
    assert cells["tf1.15"]["status"] == "match", cells["tf1.15"]
    assert cells["tf2-graph"]["status"] == "match", cells["tf2-graph"]
    assert cells["tf2"]["status"] == "load_error" and cells["tf2"].get("cause") == "lambda_bytecode", cells["tf2"]
    # the stored code ran (trusted) in the re-save (tf1.13) and the tf1.15 cell; what it tried is in their logs
    said = {}
    for name in os.listdir(str(out / "logs")):
        for line in open(str(out / "logs" / name), errors="replace"):
            if line.startswith("trap: "):
                said.setdefault(name, []).append(line.strip())
    assert "resave.log" in said, sorted(os.listdir(str(out / "logs")))
    boxed, record = backends.filesystem_box()
    if not boxed:  # the fallback: the run says so, and the code ran with the user's rights
        assert report["sandbox"]["filesystem"] == "not_boxed" and report["sandbox"]["filesystem_reason"]
        assert "file-system box unavailable: " in result.stderr
        os.remove(trap["marker"])
        return
    assert report["sandbox"]["filesystem"] == "boxed" and report["sandbox"]["network"] == "isolated"
    for lines in said.values():
        attempts = [line.split(" ")[1] for line in lines]
        assert sorted(set(attempts)) == ["connect", "read", "write"], lines
        assert all(" blocked: " in line for line in lines), lines
    sys.stderr.write("trap %s: %d escape attempts in %s, all blocked\n"
                     % (case, sum(len(lines) for lines in said.values()), ", ".join(sorted(said))))
    assert not os.path.exists(trap["marker"]), "the trusted code wrote outside its run folder"
    assert len(listener[1]) == connections, "the trusted code reached the host's network"
