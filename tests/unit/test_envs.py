"""The environment machinery, on the real interpreters and a real (tiny) environment."""

import os
import shutil
import subprocess
import sys

import pytest

from envs import interpreters, locking, registry, testing, venvs
from envs.errors import InstallFailed, InterpreterNotFound, LockMissing

pytestmark = pytest.mark.unit

UNFINDABLE = {"PATH": "/usr/bin:/bin", "PYENV_ROOT": "/nonexistent-pyenv", "HOME": "/nonexistent-home"}


def test_every_environment_is_declared_once_with_a_committed_lock():
    assert list(registry.ENVIRONMENTS) == ["host", "tf1.13", "tf1.15", "tf2"]
    for name, env in registry.ENVIRONMENTS.items():
        with open(venvs.lock_path(name)) as handle:
            text = handle.read()
        assert "nox -s lock -- %s" % name in text.splitlines()[2]
        # every pin in the declaration is in the lock, hash-pinned
        for requirement in env.requirements:
            version = registry.pinned_version(env, requirement.split("==")[0])
            if version:
                assert "%s==%s \\\n    --hash=sha256:" % (requirement.split("==")[0], version) in text
    assert registry.pinned_version(registry.get("tf1.13"), "TensorFlow") == "1.13.2"
    assert registry.pinned_version(registry.get("tf1.15"), "keras") == "2.3.1"
    assert registry.pinned_version(registry.get("tf2"), "tensorflow_cpu") == "2.21.0"


def test_markers_and_groups_derive_from_the_registry():
    assert registry.marker_name("tf1.13") == "tf1_13"
    markers = [marker for _, marker, _ in testing.groups()]
    assert markers == ["unit", "tf1_13", "tf1_15", "tf2", "crossenv"]


def test_unknown_environment_names_the_known_ones():
    with pytest.raises(KeyError, match="tf1.13"):
        registry.get("tf9")


def test_python_37_is_found_and_really_is_37():
    path = interpreters.find_python("3.7")
    out = subprocess.check_output([path, "-c", "import sys; print(sys.version_info[:2])"])
    assert out.strip() == b"(3, 7)"


def test_override_variable_wins_and_a_wrong_one_is_an_error():
    real = interpreters.find_python("3.11")
    environ = dict(UNFINDABLE, TFBRIDGE_PYTHON_3_11=real)
    assert interpreters.find_python("3.11", environ) == real
    with pytest.raises(InterpreterNotFound, match="TFBRIDGE_PYTHON_3_7 is set to '/bin/true'"):
        interpreters.find_python("3.7", dict(UNFINDABLE, TFBRIDGE_PYTHON_3_7="/bin/true"))


def test_missing_interpreter_is_one_paragraph_naming_version_places_and_remedies():
    with pytest.raises(InterpreterNotFound) as caught:
        interpreters.find_python("3.7", UNFINDABLE)
    message = str(caught.value)
    assert "\n" not in message
    for needle in ("Python 3.7", "/nonexistent-pyenv/versions", "PATH", "TFBRIDGE_PYTHON_3_7",
                   "pyenv install", "conda", "Docker"):
        assert needle in message


def _import_iniconfig(name):
    return subprocess.call([venvs.python_of(name), "-c", "import iniconfig"])


@pytest.mark.parametrize("installer", ["uv", "pip"])
def test_environment_is_created_reused_and_rebuilt_when_its_lock_changes(tiny_env, monkeypatch, installer):
    if installer == "uv" and shutil.which("uv") is None:
        pytest.skip("uv not on PATH")
    monkeypatch.setenv("TFBRIDGE_INSTALLER", installer)
    messages = []
    assert venvs.status(tiny_env) == "missing"
    venvs.ensure(tiny_env, log=messages.append)
    assert venvs.status(tiny_env) == "ready"
    assert venvs.read_state(tiny_env)["installer"] == installer
    assert _import_iniconfig(tiny_env) == 0
    assert "creating with %s" % installer in messages[0]

    messages.clear()
    venvs.ensure(tiny_env, log=messages.append)
    assert messages == ["environment tiny: ready (lock %s), reused" % venvs.lock_sha256(tiny_env)[:12]]

    with open(venvs.lock_path(tiny_env), "a") as handle:
        handle.write("# edited\n")
    assert venvs.status(tiny_env) == "stale"
    messages.clear()
    venvs.ensure(tiny_env, log=messages.append)
    assert "stale, creating" in messages[0]
    assert venvs.status(tiny_env) == "ready"


def test_interrupted_install_is_never_reused(tiny_env):
    venvs.ensure(tiny_env, log=lambda *_: None)
    os.remove(os.path.join(venvs.venv_dir(tiny_env), venvs.STATE_FILE))  # as if killed before the end
    assert venvs.status(tiny_env) == "stale"
    messages = []
    venvs.ensure(tiny_env, log=messages.append)
    assert "stale, creating" in messages[0]


def test_failed_install_names_environment_and_log(tiny_env):
    with open(venvs.lock_path(tiny_env), "w") as handle:  # a hash that no distribution has
        handle.write("iniconfig==2.0.0 --hash=sha256:%s\n" % ("0" * 64))
    with pytest.raises(InstallFailed) as caught:
        venvs.ensure(tiny_env, log=lambda *_: None)
    message = str(caught.value)
    assert "environment tiny" in message and venvs.log_path(tiny_env) in message
    assert os.path.exists(venvs.log_path(tiny_env))
    assert venvs.status(tiny_env) == "stale"


def test_missing_lock_says_how_to_make_it(tiny_env):
    os.remove(venvs.lock_path(tiny_env))
    with pytest.raises(LockMissing, match="nox -s lock -- tiny"):
        venvs.ensure(tiny_env, log=lambda *_: None)


def test_run_environ_puts_the_env_bin_first_and_the_repo_on_the_path():
    environ = venvs.run_environ("tf1.15", base={"PATH": "/usr/bin"})
    assert environ["PATH"].split(os.pathsep)[0] == os.path.join(venvs.venv_dir("tf1.15"), "bin")
    assert environ["PYTHONPATH"] == venvs.REPO_ROOT
    assert environ["TFBRIDGE_ENV"] == "tf1.15"


def test_junit_counts(tmp_path):
    path = tmp_path / "r.xml"
    path.write_text('<testsuites><testsuite tests="7" failures="1" errors="1" skipped="2"/></testsuites>')
    assert testing.junit_counts(str(path)) == {"passed": 3, "failed": 2, "skipped": 2}
    assert testing.junit_counts(str(tmp_path / "absent.xml")) == {"passed": 0, "failed": 0, "skipped": 0}


def test_nox_tests_without_python37_fails_with_the_paragraph(tmp_path):
    """The real command, with Python 3.7 made unfindable: one paragraph, no traceback, non-zero exit."""
    nox = shutil.which("nox", path=os.path.dirname(sys.executable))
    if nox is None:
        pytest.skip("nox is not installed in this environment")
    path_dirs = [os.path.dirname(sys.executable), "/usr/bin", "/bin"]
    uv = shutil.which("uv")
    if uv:
        path_dirs.insert(1, os.path.dirname(uv))
    # Keep what reaching the registry needs (certificates, proxies, uv's cache under HOME).
    environ = {key: value for key, value in os.environ.items()
               if key.startswith(("SSL_", "REQUESTS_", "PIP_", "UV_", "HTTP", "NO_PROXY"))
               or key.lower().endswith("_proxy") or key == "HOME"}
    environ.update({
        "PATH": os.pathsep.join(path_dirs),
        "PYENV_ROOT": "/nonexistent-pyenv",
        "TFBRIDGE_HOME": str(tmp_path / "home"),
        "TFBRIDGE_PYTHON_3_11": interpreters.find_python("3.11"),
    })
    result = subprocess.run(
        [nox, "-f", os.path.join(venvs.REPO_ROOT, "noxfile.py"), "-s", "tests"],
        env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, timeout=600,
    )
    assert result.returncode == 3, result.stdout  # EnvError's status, not nox's generic 1
    assert "Traceback" not in result.stdout
    lines = [line for line in result.stdout.splitlines() if "No Python 3.7 interpreter was found" in line]
    assert len(lines) == 1, result.stdout
    assert "pyenv install 3.7.16" in lines[0] and "conda" in lines[0]
