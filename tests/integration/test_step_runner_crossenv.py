"""The one step runner (converters.steps.StepRunner) with real subprocesses in the ``host`` venv.

The step is tests/integration/_step_probe.py, run exactly as verify/convert/convert_legacy run theirs
(``LocalBackend``, the network sandbox, the error file, the per-step log).
"""

import json
import os
import socket
import signal
import subprocess
import sys
import threading
import time

import pytest

from converters import errors, steps
from envs import backends, venvs

pytestmark = pytest.mark.crossenv

PROBE = "tests.integration._step_probe"


@pytest.fixture
def listener():
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

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1], accepted
    server.close()


def runner(tmp_path, lines=None):
    log = (lambda message: lines.append(message)) if lines is not None else (lambda message: None)
    return steps.StepRunner(str(tmp_path / "run"), log=log, backend=backends.LocalBackend())


def test_a_step_cannot_reach_the_network_while_the_host_can(tmp_path, listener):
    port, accepted = listener
    socket.create_connection(("127.0.0.1", port), timeout=5).close()  # the listener answers the host
    prefix, record = backends.network_sandbox()
    if record["network"] != "isolated":
        pytest.skip("no network namespace on this machine: %s" % record["reason"])
    run = runner(tmp_path)
    outcome = json.loads(run.step("connect", "host", PROBE, ["connect", port]).strip().splitlines()[-1])
    assert outcome["connected"] is False, outcome
    assert "unreachable" in outcome["error"] or "refused" in outcome["error"], outcome
    assert run.sandbox["network"] == "isolated" and run.sandbox["reason"] is None
    assert run.sandbox["method"] in ("unshare --net", "bwrap --unshare-net")
    assert len(accepted) == 1, "only the host's own connection arrived"
    log = (tmp_path / "run" / "logs" / "connect.log").read_text()
    assert log.startswith("$ " + ("bwrap" if backends.filesystem_box()[0] else " ".join(prefix)))

    # the same step, same venv, outside the runner's sandbox does connect: the refusal is the sandbox's
    environ = venvs.run_environ("host")
    direct = subprocess.run(venvs.module_command("host", PROBE, ["connect", port]), env=environ,
                            cwd=venvs.REPO_ROOT, stdout=subprocess.PIPE, universal_newlines=True, check=True)
    assert json.loads(direct.stdout)["connected"] is True


def test_without_unshare_the_probe_says_why(tmp_path, monkeypatch):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "unshare").write_text("#!/bin/sh\necho 'unshare: unshare failed: Operation not permitted' >&2\nexit 1\n")
    (fake / "unshare").chmod(0o755)
    monkeypatch.setenv("PATH", str(fake) + os.pathsep + os.environ["PATH"])
    prefix, record = backends.probe_network_sandbox()
    assert prefix == []
    assert record["network"] == "not_isolated" and record["method"] is None
    assert "Operation not permitted" in record["reason"]
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    prefix, record = backends.probe_network_sandbox()
    assert prefix == [] and record["network"] == "not_isolated" and "could not run" in record["reason"]


def test_a_failed_step_is_its_typed_error_and_its_paragraph_is_shown_once(tmp_path, capfd):
    lines = []
    run = runner(tmp_path, lines)
    with pytest.raises(errors.CalibrationDataError) as caught:
        run.step("fail", "host", PROBE, ["fail"], stream=True)
    assert caught.value.step == "calibrate" and "on purpose" in caught.value.message
    shown = capfd.readouterr().err
    assert "a line the user should see" in shown
    assert "This TensorFlow binary is noise" not in shown, "TensorFlow's start-up chatter is filtered"
    assert "on purpose" not in shown, "the step's paragraph is not shown: the orchestrator prints it once"
    log = (tmp_path / "run" / "logs" / "fail.log").read_text()
    assert "noise" in log and "on purpose" in log, "the log keeps everything"
    assert run.timings[-1]["step"] == "fail" and run.timings[-1]["exit"] == errors.CalibrationDataError.exit_code
    assert any(line.split()[:2] == ["fail", "host"] and "exit %d" % errors.CalibrationDataError.exit_code in line for line in lines)


def test_a_crash_without_an_error_names_the_step_and_its_log(tmp_path):
    with pytest.raises(errors.EnvironmentStepError) as caught:
        runner(tmp_path).step("crash", "host", PROBE, ["crash"])
    paragraph = caught.value.paragraph()
    assert "step crash in environment host exited with status 9" in paragraph and "dying" in paragraph
    assert "logs/crash.log" in paragraph


def test_captured_output_and_timings(tmp_path):
    run = runner(tmp_path)
    assert run.step("sleep", "host", PROBE, ["sleep", "0.1"]) == ""
    assert [t["step"] for t in run.timings] == ["sleep"] and run.timings[0]["seconds"] >= 0.1


def test_interrupting_the_runner_stops_the_step(tmp_path):
    code = ("import sys\n"
            "from converters import steps\n"
            "from envs import backends\n"
            "try:\n"
            "    steps.StepRunner(sys.argv[1], backend=backends.LocalBackend()).step("
            "'sleep', 'host', %r, ['sleep', '120'])\n"
            "except KeyboardInterrupt:\n"
            "    print('interrupted')\n" % PROBE)
    environ = dict(os.environ, PYTHONPATH=venvs.REPO_ROOT)
    process = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "run")], env=environ,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 60
    children = []
    while time.time() < deadline and not children:
        time.sleep(0.2)
        try:
            with open("/proc/%d/task/%d/children" % (process.pid, process.pid)) as handle:
                children = [int(pid) for pid in handle.read().split()]
        except OSError:
            pass
    assert children, "the step was started"
    time.sleep(1.0)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert stdout.strip() == "interrupted", stderr[-2000:]
    for pid in children:
        assert not os.path.exists("/proc/%d" % pid) or open("/proc/%d/stat" % pid).read().split(")")[-1].split()[0] == "Z"


def test_a_boxed_step_writes_only_its_run_folder_and_sees_no_home_and_no_network(tmp_path, listener,
                                                                                 monkeypatch):
    """The file-system box (bubblewrap): what trusted model code could try, tried by a step, each blocked;
    the same step outside the box succeeds at each (so the refusals are the box's)."""
    boxed, record = backends.filesystem_box()
    if not boxed:
        pytest.skip("no file-system box on this machine: %s" % record["filesystem_reason"])
    port, accepted = listener
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    secret = home / ".ssh" / "id_rsa"
    secret.write_text("not a real key")
    monkeypatch.setenv("HOME", str(home))
    model_folder = tmp_path / "models"
    model_folder.mkdir()
    model = model_folder / "model.h5"
    model.write_bytes(b"a model")
    outside = model_folder / "written-by-the-step.txt"
    run = runner(tmp_path)
    os.makedirs(run.run_dir)
    inside = os.path.join(run.run_dir, "model.h5")
    with open(inside, "wb") as handle:
        handle.write(b"the re-saved model")
    assert run.sandbox["filesystem"] == "boxed" and run.sandbox["filesystem_method"] == "bwrap"
    attempts = []
    for target in (str(outside), inside, "/usr/written-by-the-step"):
        output = run.step("escape", "host", PROBE, ["escape", target, "~/.ssh/id_rsa", port, str(model)])
        attempts.append(json.loads(output.strip().splitlines()[-1]))
    for outcome in attempts:
        assert all(value.startswith("blocked") for value in outcome.values()), attempts
    assert "Read-only file system" in attempts[0]["write"] and "Read-only file system" in attempts[1]["write"]
    assert "No such file" in attempts[0]["read"], "the home folder is empty inside the box"
    assert not outside.exists() and open(inside, "rb").read() == b"the re-saved model" and not accepted
    # its own run folder is writable, and the model it names is readable
    output = run.step("escape", "host", PROBE, ["escape", os.path.join(run.run_dir, "mine.txt"), str(model), port])
    inside_run = json.loads(output.strip().splitlines()[-1])
    assert inside_run["write"] == "escaped" and inside_run["read"] == "escaped", inside_run
    os.remove(os.path.join(run.run_dir, "mine.txt"))
    # the control: the same step, run as the user without the box, does each
    direct = subprocess.run(venvs.module_command("host", PROBE, ["escape", str(outside), "~/.ssh/id_rsa", port]),
                            env=venvs.run_environ("host"), cwd=venvs.REPO_ROOT, stdout=subprocess.PIPE,
                            universal_newlines=True, check=True)
    assert json.loads(direct.stdout) == {"write": "escaped", "proc": "escaped", "read": "escaped",
                                         "connect": "escaped"}
    assert outside.exists() and len(accepted) == 1


class _NoSandbox(backends.LocalBackend):
    """A local backend on a machine where the probe failed (what ``sandbox()`` reports is all that changes)."""

    def sandbox(self):
        return {"network": "not_isolated", "method": None, "reason": "`unshare --net -- true` failed: EPERM",
                "filesystem": "not_boxed", "filesystem_method": None,
                "filesystem_reason": "bubblewrap is not installed (`apt-get install bubblewrap` gives `bwrap`)"}


def test_an_unavailable_sandbox_is_said_once_and_recorded(tmp_path, monkeypatch):
    monkeypatch.setattr(steps, "_SANDBOX_NOTED", [])
    lines = []
    for run_dir in ("a", "b"):  # two runners of one process, as convert_legacy has (verify, then convert)
        run = steps.StepRunner(str(tmp_path / run_dir), log=lines.append, backend=_NoSandbox())
        run.step("sleep", "host", PROBE, ["sleep", "0"])
        run.step("sleep2", "host", PROBE, ["sleep", "0"])
        assert run.sandbox["network"] == "not_isolated"
    notes = [line for line in lines if "unavailable" in line]
    assert notes == ["file-system box unavailable: bubblewrap is not installed (`apt-get install bubblewrap` "
                     "gives `bwrap`); steps run with your user's file access",
                     "network sandbox unavailable: `unshare --net -- true` failed: EPERM; "
                     "steps run with network access"]
