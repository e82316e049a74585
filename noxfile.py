"""tfbridge's user interface: one nox session per job. No TensorFlow is imported here.

    nox -s convert_legacy -- [MODEL] [options]   legacy Keras model -> fully int8 TFLite (no MODEL: the demo)
    nox -s verify_upgrade -- MODEL [options]     parity across TF 1.13 / 1.15 / 2.x only
    nox -s convert -- MODEL [options]            a TF 2.x model straight to int8
    nox -s npu -- FILE.tflite [--target NAME]    an existing .tflite on NPU targets (Vela, VX delegate rules)
    nox -s tests                                 every test, in every environment
    nox -s faults                                the fault tests at full size (mutations, full disk, kills)
    nox -s envs [-- --rebuild NAME ...]          the environments and their state; recreate one
    nox -s lock [-- NAME ...]                    regenerate the hash-pinned locks

The environments are tfbridge's own (envs/), not nox's: nox's virtualenv backend cannot create Python
3.7 environments, and reuse here is keyed on the lock's content hash. So every session runs with
``venv_backend="none"`` and steps run inside an environment through ``envs.venvs``.

Exit status: a failing nox session exits 1 whatever went wrong, which would hide tfbridge's exit status
(README.md, "Exit status": 1 a mismatch, 2 and above an error, one code per error class). So the
sessions that run tfbridge leave nox with the command's own status (``sys.exit``), and an environment
error ends a session with status 3.
"""

import os
import subprocess
import sys

import nox

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from envs import registry, venvs  # noqa: E402
from envs.errors import EnvError  # noqa: E402

nox.options.sessions = ["tests"]
nox.options.error_on_external_run = False

REPO_ROOT = venvs.REPO_ROOT


def _fail(session, error):
    """End the session with an environment error's paragraph and its exit status (3), not nox's 1."""
    session.log("tfbridge: %s" % error)
    sys.exit(getattr(error, "exit_code", 3))


def _run_host_module(session, module, args):
    """Run a host-side tfbridge module (standard library only) with nox's own interpreter; leave nox
    with the module's exit status (0 pass, 1 mismatch, >= 2 the error's class: see README.md)."""
    environ = dict(os.environ, PYTHONPATH=REPO_ROOT, PYTHONUNBUFFERED="1")
    session.log("python -m %s %s" % (module, " ".join(args)))
    code = subprocess.call([sys.executable, "-m", module] + list(args), env=environ)
    if code != 0:
        sys.exit(code)


@nox.session(venv_backend="none")
def envs(session):
    """Show every environment: interpreter, lock hash, state and installed versions (-- --rebuild NAME: recreate one)."""
    from envs import report

    args = list(session.posargs)
    if args:
        if args[0] != "--rebuild" or len(args) < 2:
            session.error("usage: nox -s envs [-- --rebuild NAME [NAME ...]]; known: %s"
                          % ", ".join(registry.ENVIRONMENTS))
        try:
            report.rebuild(args[1:], log=session.log)
        except KeyError as error:
            session.error(str(error))
        except EnvError as error:
            _fail(session, error)
    session.log("\n" + report.environments_table())


@nox.session(venv_backend="none")
def lock(session):
    """Regenerate the hash-pinned lock of each environment (or of those named after --)."""
    from envs import locking

    names = session.posargs or list(registry.ENVIRONMENTS) + [locking.HOST_TOOLS_LOCK]
    for name in names:
        try:
            locking.write_lock(name, log=session.log)
        except KeyError as error:
            session.error(str(error))
        except EnvError as error:
            _fail(session, error)


@nox.session(venv_backend="none")
def tests(session):
    """Run every test: host unit tests, then the tests inside tf1.13, tf1.15 and tf2, then cross-environment tests."""
    from envs import testing

    try:
        code = testing.run_all(session.posargs, log=session.log)
    except EnvError as error:
        _fail(session, error)
    if code != 0:
        session.error("tests failed (see the summary above)")


@nox.session(venv_backend="none", tags=["faults"])
def faults(session):
    """The fault tests at full size: 1000+ mutated inputs, every disk-full case, 10 kill points (long; not in tests)."""
    from envs import testing

    try:
        code = testing.run_faults(session.posargs, log=session.log)
    except EnvError as error:
        _fail(session, error)
    if code != 0:
        session.error("fault tests failed (see the summary above)")


@nox.session(venv_backend="none")
def verify_upgrade(session):
    """Re-save a legacy model in its TF version and check its outputs in every newer environment."""
    _run_host_module(session, "converters.verify", session.posargs)


@nox.session(venv_backend="none")
def convert_legacy(session):
    """Legacy Keras model -> fully int8 TFLite with parity checks; with no MODEL, the embedded demo."""
    _run_host_module(session, "converters.pipeline", session.posargs)


@nox.session(venv_backend="none")
def convert(session):
    """A TF 2.x model (.h5, SavedModel folder, .keras) straight to fully int8 TFLite."""
    _run_host_module(session, "converters.convert", session.posargs)


@nox.session(venv_backend="none")
def npu(session):
    """Check an existing .tflite for NPUs: -- FILE.tflite [--target NAME ...] [--json] [--strict] [--out-dir DIR]."""
    try:
        python = venvs.ensure("tf2", log=session.log)
        environ = venvs.run_environ("tf2")
    except EnvError as error:
        _fail(session, error)
    environ = dict(environ, PYTHONPATH=REPO_ROOT, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="3")
    # FILE is relative to where nox was started (nox itself runs from the noxfile's folder)
    cwd = getattr(session, "invoked_from", None) or os.getcwd()
    code = subprocess.call([python, "-m", "converters.tf2.npu"] + list(session.posargs), env=environ, cwd=cwd)
    if code != 0:
        sys.exit(code)


@nox.session(venv_backend="none")
def docker_files(session):
    """Regenerate docker/<env>.Dockerfile from the declarations, the locks and docker/base-images.cfg."""
    from envs import docker

    docker.write_dockerfiles(session.posargs or None, log=session.log)


@nox.session(venv_backend="none")
def docker_build(session):
    """Build the Docker image of each environment (or of those named after --); needs a Docker engine."""
    from envs import docker

    try:
        docker.build_images(session.posargs or None, log=session.log)
    except EnvError as error:
        _fail(session, error)


@nox.session(venv_backend="none", tags=["bench"])
def bench(session):
    """Benchmarks against the by-hand recipes (long: ~1.5 h); writes BENCHMARKS.md and BENCHMARKS.json. Not part of tests."""
    _run_host_module(session, "bench.run", session.posargs)
