"""The ``tfbridge`` package on the host: layout, command line, API plumbing (no environment, no TensorFlow).

The installed wheel and the real commands are tests/integration/test_install_crossenv.py; method 1 is
tests/integration/test_install_inprocess_tf2.py.
"""

import json
import os
import subprocess
import sys
import time
import types

import pytest

import tfbridge
from tfbridge import _cli, _layout, _private, api, errors
from tfbridge.report import Report

pytestmark = pytest.mark.unit

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_in_a_clone_the_tree_is_the_repository_and_the_home_is_left_to_envs(monkeypatch):
    monkeypatch.delenv("TFBRIDGE_HOME", raising=False)
    assert not _layout.installed() and _layout.tree() == REPO_ROOT
    assert _layout.home() is None  # envs.venvs keeps <repo>/.tfbridge: CI and the tests are unaffected
    environ = _layout.host_environ("convert", base={"PATH": "/usr/bin"})
    assert environ["PYTHONPATH"] == REPO_ROOT and "TFBRIDGE_HOME" not in environ
    assert environ["TFBRIDGE_PROG"] == "tfbridge convert"


def test_installed_the_home_is_a_per_user_cache_never_site_packages(monkeypatch, tmp_path):
    tree = tmp_path / "site-packages" / "tfbridge" / "_tree"
    (tree / "converters").mkdir(parents=True)
    monkeypatch.setattr(_layout, "INSTALLED_TREE", str(tree))
    monkeypatch.delenv("TFBRIDGE_HOME", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert _layout.installed() and _layout.tree() == str(tree)
    assert _layout.home() == str(tmp_path / "cache" / "tfbridge")
    environ = _layout.host_environ("envs", base={})
    assert environ["TFBRIDGE_HOME"] == str(tmp_path / "cache" / "tfbridge")
    assert environ["PYTHONDONTWRITEBYTECODE"] == "1" and environ["PYTHONPATH"] == str(tree)
    monkeypatch.setenv("TFBRIDGE_HOME", str(tmp_path / "mine"))
    assert _layout.host_environ("envs")["TFBRIDGE_HOME"] == str(tmp_path / "mine")


def test_every_subcommand_is_a_module_of_the_tree_with_a_main():
    for command, module in _layout.COMMANDS.items():
        path = os.path.join(REPO_ROOT, *module.split(".")) + ".py"
        path = path if os.path.exists(path) else os.path.join(REPO_ROOT, *module.split("."), "__main__.py")
        with open(path) as handle:
            assert "__main__" in handle.read(), command


def test_the_launcher_leaves_the_current_folder_off_sys_path(tmp_path):
    (tmp_path / "envs.py").write_text("raise SystemExit('the user envs.py was imported')\n")
    argv = _layout.command_argv("envs", ["--help"])
    result = subprocess.run(argv, cwd=str(tmp_path), env=_layout.host_environ("envs"), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, universal_newlines=True, timeout=60)
    assert result.returncode == 0, result.stdout
    assert "usage: tfbridge envs" in result.stdout


def test_unknown_subcommand_and_version(capsys):
    assert _cli.main(["frobnicate"]) == 2
    assert "unknown subcommand" in capsys.readouterr().err
    assert _cli.main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("tfbridge %s" % tfbridge.__version__)


def test_a_bad_option_is_the_declarations_usage_error_with_its_exit_code(tmp_path):
    code = _cli.run_command("convert", ["m.h5", "--io", "int4"], cwd=str(tmp_path),
                            stdout=subprocess.DEVNULL)
    assert code == errors.UsageError.exit_code == 2


def test_the_api_raises_the_typed_error_of_the_command(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(errors.UsageError, match="int4") as caught:
        tfbridge.convert("m.h5", calib="c.npy", io="int4", quiet=True)
    assert caught.value.exit_code == 2 and caught.value.step == "options"
    assert "tfbridge convert" in caught.value.message  # the parser is named after the command used
    with pytest.raises(errors.InputFileError) as caught:
        tfbridge.verify_upgrade("missing.h5", quiet=True)
    assert caught.value.exit_code == 5


def test_keyword_options_become_the_declared_command_line():
    assert api._argv({"calib": "c.npy", "calib_samples": 50, "per_tensor": True, "allow_float_ops": False,
                      "npu_target": ["imx8mp", "ethos-u65-256"], "out": None}) == [
        "--calib", "c.npy", "--calib-samples", "50", "--per-tensor",
        "--npu-target", "imx8mp", "--npu-target", "ethos-u65-256"]


def test_errors_are_the_trees_classes_and_come_back_from_their_json():
    with _private.tree_imports():
        from converters import errors as tree_errors
        from envs.errors import InterpreterNotFound
    assert errors.ConversionError is tree_errors.ConversionError
    assert errors.InterpreterNotFound is InterpreterNotFound
    error = errors.from_dict({"error": "CalibrationDataError", "message": "empty", "step": "calibrate",
                              "hint": "give data", "exit_code": 8}, 8)
    assert type(error) is errors.CalibrationDataError and error.paragraph().startswith("tfbridge: calibrate failed")
    assert type(errors.from_dict({"error": "InstallFailed", "message": "x", "exit_code": 3}, 3)) is errors.InstallFailed
    unknown = errors.from_dict(None, 11)
    assert type(unknown) is errors.EnvironmentStepError and unknown.exit_code == 11


def test_tree_imports_give_back_the_users_modules():
    theirs = types.ModuleType("envs")
    mine = sys.modules.get("envs")
    sys.modules["envs"] = theirs
    try:
        with _private.tree_imports():
            import envs

            assert envs is not theirs and hasattr(envs, "registry")
        assert sys.modules["envs"] is theirs
    finally:
        if mine is not None:
            sys.modules["envs"] = mine


def test_report_reads_a_run_folder(tmp_path):
    (tmp_path / "model_int8.tflite").write_bytes(b"x")
    (tmp_path / "report.json").write_text(json.dumps({
        "parity": [{"env": "tf2", "label": "tf2", "status": "match", "max_abs": 1e-7, "cosine": 1.0,
                    "top1_agreement": 1.0, "runtime": "tensorflow 2.21.0 + tf_keras 2.21.0"}],
        "tflite": {"path": "/staging/model_int8.tflite", "status": "match", "input_dtype": "int8",
                   "output_dtype": "int8", "size_bytes": 1, "cosine": 0.999, "sqnr_db": 40.0},
        "npu": {"verdict": "ready", "fully_int8": True, "problems": [],
                "targets": [{"target": "imx8mp", "ops_on_npu": 8, "ops_on_cpu": []}]}}))
    report = Report.read(str(tmp_path), command="convert", verdict="fail", failing=["int8 TFLite"])
    assert report.verdict == "fail" and not report.passed and report.failing == ["int8 TFLite"]
    assert report.parity[0].status == "match" and report.parity[0].runtime.startswith("tensorflow 2.21")
    assert report.int8_model == str(tmp_path / "model_int8.tflite")  # the run folder's, not the staging path
    assert report.int8.sqnr_db == 40.0 and report.npu.targets[0].ops_on_npu == 8


def test_the_rebuild_hint_names_the_command_that_was_used(monkeypatch):
    from envs import venvs

    monkeypatch.setenv("TFBRIDGE_PROG", "tfbridge convert")
    assert venvs.rebuild_command("tf2") == "tfbridge envs --rebuild tf2"
    monkeypatch.setenv("TFBRIDGE_PROG", "nox -s convert --")
    assert venvs.rebuild_command("tf2") == "nox -s envs -- --rebuild tf2"


LAUNCHER_SCRIPT = """
import subprocess, sys
sys.path.insert(0, %r)
from tfbridge import _layout
child = subprocess.Popen([sys.executable, "-c", "import signal, sys, time; "
                          "signal.signal(signal.SIGTERM, lambda s, f: sys.exit(130)); "
                          "print('ready', flush=True); time.sleep(60)"], stdout=subprocess.PIPE)
child.stdout.readline()
print('waiting', flush=True)
code, _ = _layout.wait(child)
sys.exit(code)
""" % REPO_ROOT


def test_a_sigterm_to_the_command_reaches_its_child_which_stops_cleanly():
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER_SCRIPT], stdout=subprocess.PIPE,
                                universal_newlines=True)
    assert launcher.stdout.readline().strip() == "waiting"
    # "waiting" is printed just before _layout.wait installs its SIGTERM handler: give it the moment to
    # (a SIGTERM in between would end the launcher itself, -15; seen on a loaded machine)
    time.sleep(1.0)
    launcher.terminate()
    assert launcher.wait(timeout=30) == 130  # the child's status: it got the SIGTERM, the launcher waited
