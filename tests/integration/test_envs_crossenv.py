"""The environment machinery end to end: a real tiny environment locked and installed from the registry
(uv and pip), and the real ``nox`` sessions failing with their paragraph.

Moved out of tests/unit (which needs no network and runs no nox): these resolve and download
``iniconfig`` from the package registry and run nox as a subprocess. uv and nox are locked in the host
environment (envs/registry.py ``HOST_TOOLS``): a missing one fails the test, it is not skipped.
"""

import os
import shutil
import subprocess
import sys

import pytest

from envs import docker, health, interpreters, locking, paths, registry, venvs
from envs.errors import InstallFailed

pytestmark = pytest.mark.crossenv


@pytest.fixture
def tiny_env(tmp_path, monkeypatch):
    """A real one-package environment declared and locked in a temporary home (not created)."""
    monkeypatch.setenv("TFBRIDGE_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(paths, "LOCK_DIR", str(tmp_path / "locks"))
    tiny = registry.Environment("tiny", "3.11", ("iniconfig==2.0.0",), "test", "x86_64-manylinux_2_28")
    monkeypatch.setitem(registry.ENVIRONMENTS, "tiny", tiny)
    # uv is locked in the host environment (envs/registry.py HOST_TOOLS): missing is a broken host, not a skip
    assert shutil.which("uv") is not None, "uv is not on PATH: run through nox, or put .tfbridge/host-tools/bin on PATH"
    locking.write_lock("tiny", log=lambda *_: None)
    return "tiny"


def _import_iniconfig(name):
    return subprocess.call([venvs.python_of(name), "-c", "import iniconfig"])


@pytest.mark.parametrize("installer", ["uv", "pip"])
def test_environment_is_created_reused_and_rebuilt_when_its_lock_changes(tiny_env, monkeypatch, installer):
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


@pytest.fixture
def tiny_env_created(tiny_env):
    """The tiny environment, created."""
    venvs.ensure(tiny_env, log=lambda *_: None)
    return tiny_env


def test_a_reused_environment_missing_a_locked_package_is_rebuilt_with_one_line(tiny_env_created):
    tiny_env = tiny_env_created
    site = health.site_packages(venvs.venv_dir(tiny_env))
    shutil.rmtree(os.path.join(site, "iniconfig"))  # a half-deleted package: its dist-info is left
    assert venvs.diagnose(tiny_env) == ("broken", ["iniconfig 2.0.0 is incomplete: iniconfig/__init__.py is missing"])
    messages = []
    venvs.ensure(tiny_env, log=messages.append)
    assert messages[0].startswith(
        "environment tiny: iniconfig 2.0.0 is incomplete: iniconfig/__init__.py is missing; rebuilding with")
    assert venvs.status(tiny_env) == "ready"
    assert subprocess.call([venvs.python_of(tiny_env), "-c", "import iniconfig"]) == 0


def test_nox_tests_without_python37_fails_with_the_paragraph(tmp_path):
    """The real command, with Python 3.7 made unfindable: one paragraph, no traceback, non-zero exit."""
    nox = shutil.which("nox", path=os.path.dirname(sys.executable))
    assert nox is not None, "nox is locked in the host environment (envs/registry.py HOST_TOOLS) but missing"
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


def test_docker_build_session_without_engine_fails_with_the_paragraph(tmp_path):
    nox = os.path.join(os.path.dirname(sys.executable), "nox")
    assert os.path.exists(nox), "nox is locked in the host environment (envs/registry.py HOST_TOOLS) but missing"
    # Docker asked for by name: where podman is installed (CI), the session would otherwise build with it
    environ = dict(os.environ, DOCKER_HOST="unix:///nonexistent/docker.sock", TFBRIDGE_CONTAINER_ENGINE="docker")
    result = subprocess.run([nox, "-f", os.path.join(venvs.REPO_ROOT, "noxfile.py"), "-s", "docker_build"],
                            env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            universal_newlines=True, timeout=300)
    assert result.returncode == docker.DockerUnavailable.exit_code, result.stdout  # not nox's generic 1
    assert "Traceback" not in result.stdout
    assert "engine (dockerd) is the missing piece" in result.stdout


@pytest.mark.parametrize("module", ["converters.pipeline", "converters.verify"])
def test_backend_docker_without_engine_names_the_engine(tmp_path, module):
    model = tmp_path / "model.h5"
    model.write_bytes(b"\x89HDF\r\n\x1a\n")  # never read: the backend is checked first
    environ = dict(os.environ, DOCKER_HOST="unix:///nonexistent/docker.sock", PYTHONPATH=venvs.REPO_ROOT,
                   TFBRIDGE_CONTAINER_ENGINE="docker")  # not podman, where it is installed
    result = subprocess.run([sys.executable, "-m", module, str(model), "--origin", "1.13", "--backend", "docker",
                             "--calib", "skimage", "--out", str(tmp_path / "run")], env=environ, cwd=str(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=120)
    assert result.returncode == docker.DockerUnavailable.exit_code
    assert "engine (dockerd) is the missing piece" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()
    assert not [name for name in os.listdir(str(tmp_path)) if ".partial-" in name]
