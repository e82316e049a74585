"""tfbridge's user interface: one nox session per job. No TensorFlow is imported here.

    nox -s convert_legacy -- [MODEL] [options]   legacy Keras model -> fully int8 TFLite (no MODEL: the demo)
    nox -s verify_upgrade -- MODEL [options]     parity across TF 1.13 / 1.15 / 2.x only
    nox -s convert -- MODEL [options]            a TF 2.x model straight to int8
    nox -s npu -- FILE.tflite [--target NAME]    an existing .tflite on NPU targets (Vela, VX delegate rules)
    nox -s fleet -- MANIFEST --out DIR [--shard I/N] [--jobs N]   many models from one manifest
    nox -s fleet_report -- DIR... --out DIR      merge fleet shards into fleet.json / fleet.html
    nox -s tests                                 every test, in every environment
    nox -s faults                                the fault tests at full size (mutations, full disk, kills)
    nox -s envs [-- --rebuild NAME ...]          the environments and their state; recreate one
    nox -s lock [-- NAME ...]                    regenerate the hash-pinned locks

The environments are tfbridge's own (envs/), not nox's: nox's virtualenv backend cannot create Python
3.7 environments, and reuse here is keyed on the lock's content hash. So every session runs with
``venv_backend="none"`` and steps run inside an environment through ``envs.venvs``.

The sessions that run a job (convert_legacy, verify_upgrade, convert, npu, envs) call the entry point of
the installed ``tfbridge`` command (``tfbridge/_cli.py``), so the two give the same options, messages and
exit status.

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
from tfbridge import _cli  # noqa: E402

nox.options.sessions = ["tests"]
nox.options.error_on_external_run = False

REPO_ROOT = venvs.REPO_ROOT


def _fail(session, error):
    """End the session with an environment error's paragraph and its exit status (3), not nox's 1."""
    session.log("tfbridge: %s" % error)
    sys.exit(getattr(error, "exit_code", 3))


def _run(session, command, cwd=None):
    """Run tfbridge's subcommand ``command`` (the same entry point as the installed ``tfbridge`` command,
    tfbridge/_cli.py) with the session's arguments; leave nox with its exit status (0 pass, 1 mismatch,
    >= 2 the error's class: see README.md)."""
    session.log("tfbridge %s %s" % (command, " ".join(session.posargs)))
    code = _cli.run_command(command, session.posargs, cwd=cwd,
                            extra_env={"TFBRIDGE_PROG": "nox -s %s --" % command.replace("-", "_")})
    if code != 0:
        sys.exit(code)


@nox.session(venv_backend="none")
def envs(session):
    """Show every environment: interpreter, lock hash, state and installed versions (-- --rebuild NAME: recreate one; -- --tf 2.4,2.12: make those)."""
    _run(session, "envs")


@nox.session(venv_backend="none")
def lock(session):
    """Regenerate the hash-pinned lock of each environment and the shipped --tf ones (or of those named after --: tf2.12 writes envs/locks/extra/)."""
    from envs import locking

    names = session.posargs or list(registry.ENVIRONMENTS) + [locking.HOST_TOOLS_LOCK] + locking.shipped_names()
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
    _run(session, "verify-upgrade")


@nox.session(venv_backend="none")
def convert_legacy(session):
    """Legacy Keras model -> fully int8 TFLite with parity checks; with no MODEL, the embedded demo."""
    _run(session, "convert-legacy")


@nox.session(venv_backend="none")
def convert(session):
    """A TF 2.x model (.h5, SavedModel folder, .keras) straight to fully int8 TFLite."""
    _run(session, "convert")


@nox.session(venv_backend="none")
def npu(session):
    """Check an existing .tflite for NPUs: -- FILE.tflite [--target NAME ...] [--json] [--strict] [--out-dir DIR]."""
    # FILE is relative to where nox was started (nox itself runs from the noxfile's folder)
    _run(session, "npu", cwd=getattr(session, "invoked_from", None) or os.getcwd())


@nox.session(venv_backend="none")
def fleet(session):
    """Run every model of a TOML manifest through convert_legacy: -- MANIFEST --out DIR [--shard I/N] [--jobs N] (docs/fleet.md)."""
    # MANIFEST and DIR are relative to where nox was started (nox itself runs from the noxfile's folder)
    _run(session, "fleet", cwd=getattr(session, "invoked_from", None) or os.getcwd())


@nox.session(venv_backend="none")
def fleet_report(session):
    """Merge fleet shard folders into fleet.json and fleet.html: -- DIR... --out DIR (docs/fleet.md)."""
    _run(session, "fleet-report", cwd=getattr(session, "invoked_from", None) or os.getcwd())


@nox.session(venv_backend="none")
def docker_files(session):
    """Regenerate docker/<env>.Dockerfile from the declarations, the locks and docker/base-images.cfg."""
    from envs import docker

    docker.write_dockerfiles(session.posargs or None, log=session.log)


@nox.session(venv_backend="none")
def docker_build(session):
    """Build the image of each environment (or of those named after --) with Docker, else podman; -- --base 3.11=IMAGE replaces a pinned base."""
    from envs import docker

    names, base_images = [], {}
    args = list(session.posargs)
    while args:
        arg = args.pop(0)
        if arg == "--base" and args and "=" in args[0]:
            python, image = args.pop(0).split("=", 1)
            base_images[python] = image
        elif arg.startswith("-") or arg not in registry.TF_ENVIRONMENTS:
            session.error("usage: nox -s docker_build [-- NAME ...] [--base PYTHON=IMAGE ...]; environments: %s; "
                          "Pythons: %s" % (", ".join(registry.TF_ENVIRONMENTS), ", ".join(sorted(docker.base_images()))))
        else:
            names.append(arg)
    try:
        session.log("container engine: %s" % docker.engine().name)
        docker.build_images(names or None, bases=base_images, log=session.log)
    except EnvError as error:
        _fail(session, error)


@nox.session(venv_backend="none", tags=["bench"])
def bench(session):
    """Benchmarks against the by-hand recipes (long: ~1.5 h); writes BENCHMARKS.md and BENCHMARKS.json. Not part of tests."""
    environ = dict(os.environ, PYTHONPATH=REPO_ROOT, PYTHONUNBUFFERED="1")
    code = subprocess.call([sys.executable, "-m", "bench.run"] + list(session.posargs), env=environ)
    if code != 0:
        sys.exit(code)
