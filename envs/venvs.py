"""Creating, reusing and running the environments declared in ``envs.registry``.

An environment is a venv under ``$TFBRIDGE_HOME/envs/<name>`` (default ``<repo>/.tfbridge``), installed
from its hash-pinned lock (``envs/locks/<name>.txt``) and nothing else. It is *ready* when its state file,
written last and atomically after a successful install, records the sha256 of the current lock and the
interpreter, and its ``site-packages`` still holds what the lock pins (``envs.health``: every pinned
distribution at its version, every file its RECORD lists present at its size; a few milliseconds to a
few hundred, read from files, no TensorFlow import); *broken* when the lock is unchanged but that check
fails (a package uninstalled or a folder deleted by hand, a truncated file); *stale* when the venv exists
but the lock changed or the install never finished (an interrupted install leaves no state file, so it
is never reused as if complete); *missing* otherwise. ``ensure`` rebuilds a broken or stale environment,
saying why in one line.

uv is used when it is on PATH (``TFBRIDGE_INSTALLER=uv|pip`` forces one): it creates the 3.7 venvs
several times faster than pip. The fallback is the interpreter's own ``venv`` + pip with
``--require-hashes``.

Standard library only; Python 3.7 compatible.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time

from envs import health, registry
from envs.errors import InstallFailed, LockMissing
from envs.interpreters import find_python
from envs.paths import REPO_ROOT, lock_path, log_path, python_of, venv_dir

STATE_FILE = "tfbridge-env.json"


def lock_sha256(name):
    path = lock_path(name)
    if not os.path.exists(path):
        raise LockMissing(
            "Environment %s has no lock file (%s), so it cannot be installed reproducibly. "
            "Create it with `nox -s lock -- %s` and commit it." % (name, os.path.relpath(path, REPO_ROOT), name)
        )
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def read_state(name):
    """The recorded state of a completed install, or None (missing or interrupted)."""
    try:
        with open(os.path.join(venv_dir(name), STATE_FILE)) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def status(name):
    """"ready", "broken", "stale" or "missing" (see the module docstring)."""
    return diagnose(name)[0]


def diagnose(name):
    """``(state, reasons)``: the state of ``status`` and, for a broken environment, one line per thing
    its lock pins that is missing or damaged (``envs.health.problems``); ``reasons`` is empty otherwise."""
    if not os.path.isdir(venv_dir(name)):
        return "missing", []
    state = read_state(name)
    if state is None or not os.path.exists(python_of(name)):
        return "stale", []
    try:
        current = lock_sha256(name)
    except LockMissing:
        return "stale", []
    if state.get("lock_sha256") != current:
        return "stale", []
    reasons = health.problems(venv_dir(name), lock_path(name))
    return ("broken", reasons) if reasons else ("ready", [])


def describe_problems(reasons, limit=3):
    """Reasons of a broken environment as one line: the first ``limit`` and how many more."""
    shown = "; ".join(reasons[:limit])
    return shown + ("; and %d more" % (len(reasons) - limit) if len(reasons) > limit else "")


def rebuild_command(name):
    """The command a user runs to rebuild environment ``name`` by hand: the installed ``tfbridge``'s when
    that command started this process (``TFBRIDGE_PROG``, tfbridge/_layout.py), else the nox session."""
    if os.environ.get("TFBRIDGE_PROG", "").startswith("tfbridge "):
        return "tfbridge envs --rebuild %s" % name
    return "nox -s envs -- --rebuild %s" % name


def locked_distribution(name, module):
    """``(distribution, version)`` that environment ``name``'s lock pins for the import ``module``, or
    None (not pinned, unknown environment, no lock)."""
    if name not in registry.ENVIRONMENTS and not registry.is_derived(name):
        return None
    return health.pinned_distribution(lock_path(name), module)


def locked_tf_version(name):
    """The TensorFlow version environment ``name``'s lock pins (read from the lock: no import), or None."""
    pinned = locked_distribution(name, "tensorflow")
    return pinned[1] if pinned else None


def broken_by_import(exc, module, step=None, env_name=None):
    """For steps inside an environment: the ``EnvironmentBroken`` that an ImportError ``exc`` of
    ``module`` means when this environment's lock pins the module that failed (``exc.name``, else
    ``module``), or None when it does not (then it is the step's usual error: a flavour or a custom
    module that this environment does not have). ``env_name`` defaults to ``$TFBRIDGE_ENV``."""
    from converters.errors import EnvironmentBroken

    env_name = env_name or os.environ.get("TFBRIDGE_ENV")
    missing = getattr(exc, "name", None) or module
    pinned = locked_distribution(env_name, missing) if env_name else None
    if pinned is None:
        return None
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return EnvironmentBroken(
        "environment %s is broken: `import %s` failed (%s: %s), yet its lock pins %s %s. This says "
        "nothing about the model: the environment no longer holds what its lock pins (a package "
        "uninstalled or deleted by hand, or damaged files)."
        % (env_name, missing, type(exc).__name__, first[:200], pinned[0], pinned[1]),
        step=step, hint="Rebuild it with `%s` (`nox -s envs` shows what is wrong), then run again."
        % rebuild_command(env_name), env=env_name, package=pinned[0])


def choose_installer():
    forced = os.environ.get("TFBRIDGE_INSTALLER")
    if forced:
        if forced not in ("uv", "pip"):
            raise InstallFailed("TFBRIDGE_INSTALLER must be 'uv' or 'pip', not %r." % forced)
        if forced == "uv" and not shutil.which("uv"):
            raise InstallFailed("TFBRIDGE_INSTALLER=uv, but uv is not on PATH. Install it (`pip install uv`).")
        return forced
    return "uv" if shutil.which("uv") else "pip"


def ensure(name, log=print, force=False):
    """Make environment ``name`` ready and return the path of its python.

    Reuses it while its lock is unchanged and it still holds what the lock pins; otherwise (re)creates
    it from scratch (``force``: always). Raises InterpreterNotFound, LockMissing or InstallFailed, each
    with a one-paragraph message.
    """
    env = registry.get(name)
    if registry.is_derived(name):  # --tf: its lock is made (or taken from those tfbridge ships) on first use
        from envs import locking

        locking.ensure_lock(env, log=log)
    state, reasons = diagnose(name)
    if state == "ready" and not force:
        recorded = read_state(name)
        if not recorded.get("bytecode"):  # made before tfbridge compiled its environments: compile it once
            log("environment %s: compiling its Python files once (every import compiled them, then threw "
                "them away)" % name)
            recorded["bytecode"] = compile_bytecode(name)
            _write_json_atomic(os.path.join(venv_dir(name), STATE_FILE), recorded)
        log("environment %s: ready (lock %s), reused" % (name, recorded["lock_sha256"][:12]))
        return python_of(name)
    digest = lock_sha256(name)
    interpreter = find_python(env.python)
    installer = choose_installer()
    source = "with %s from %s (Python %s: %s)" % (
        installer, os.path.relpath(lock_path(name), REPO_ROOT), env.python, interpreter)
    if state == "broken":
        # one line that says why a reused environment is not reused, e.g. "keras 2.3.1 is missing"
        log("environment %s: %s; rebuilding %s" % (name, describe_problems(reasons), source))
    elif force and state == "ready":
        log("environment %s: rebuilding on request %s" % (name, source))
    else:
        log("environment %s: %s, creating %s" % (name, state, source))
    started = time.time()
    target = venv_dir(name)
    if os.path.exists(target):
        shutil.rmtree(target)
    os.makedirs(os.path.dirname(log_path(name)), exist_ok=True)
    with open(log_path(name), "w") as log_file:
        if installer == "uv":
            steps = [
                # --seed: pip and setuptools in the venv, as `python -m venv` gives (TF 1.x imports pkg_resources)
                ["uv", "venv", "--quiet", "--seed", "--python", interpreter, target],
                ["uv", "pip", "install", "--python", python_of(name), "--require-hashes",
                 "--no-deps", "-r", lock_path(name)],
            ]
        else:
            steps = [
                [interpreter, "-m", "venv", target],
                # --ignore-requires-python: the lock was resolved by uv, which ignores upper bounds
                # of Requires-Python; pip must install the very same pins (ai-edge-litert needs
                # backports-strenum 1.3.1, which declares <3.11 yet works on 3.11).
                [python_of(name), "-m", "pip", "install", "--no-input", "--require-hashes",
                 "--no-deps", "--ignore-requires-python", "-r", lock_path(name)],
            ]
        for step in steps:
            log_file.write("$ %s\n" % " ".join(step))
            log_file.flush()
            code = subprocess.call(step, stdout=log_file, stderr=subprocess.STDOUT, env=_install_environ())
            if code != 0:
                raise InstallFailed(
                    "Installing environment %s failed in step `%s` (exit %d); the venv at %s is left "
                    "incomplete and will be rebuilt on the next run. The full output is in %s. Check the "
                    "package registry is reachable, then run again; if a pin cannot be installed, "
                    "regenerate the lock with `nox -s lock -- %s`."
                    % (name, " ".join(step[:3]), code, target, log_path(name), name)
                )
    bytecode = compile_bytecode(name)
    seconds = time.time() - started
    size = folder_bytes(target)
    _write_json_atomic(
        os.path.join(target, STATE_FILE),
        {
            "name": name,
            "lock_sha256": digest,
            "python": interpreter,
            "installer": installer,
            "bytecode": bytecode,
            "install_seconds": round(seconds, 2),
            "size_bytes": size,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    )
    log("environment %s: ready in %.1f s (%s, %.2f GB)" % (name, seconds, installer, size / 1e9))
    return python_of(name)


def folder_bytes(path):
    """The bytes of every file under ``path`` (symbolic links not followed): an environment's size on disk."""
    total = 0
    for folder, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                pass
    return total


def compile_bytecode(name):
    """Compile every Python file of the environment's ``site-packages`` to bytecode, once, at install.

    Neither uv (by default) nor pip under ``PYTHONDONTWRITEBYTECODE=1`` (set on these machines, see
    FACTS.md) writes ``.pyc`` files, and that variable also stops Python from caching what it compiles:
    every step process then compiled TensorFlow's ~3,000 modules from source on import (measured
    ``import tensorflow``: tf2 7.5 s -> 3.2 s, tf1.15 with keras 3.3 s -> 1.2 s, tf1.13 2.2 s -> 0.8 s).
    ``compileall`` writes them whatever that variable says. A file that does not compile (a Python 2
    example shipped in a wheel) is left to compile on import, as before; returns "compiled" or
    "partial (exit N)"."""
    folder = health.site_packages(venv_dir(name))
    if folder is None:
        return "none (no site-packages)"
    with open(log_path(name), "a") as log_file:
        command = [python_of(name), "-m", "compileall", "-q", "-j", "0", folder]
        log_file.write("$ %s\n" % " ".join(command))
        log_file.flush()
        code = subprocess.call(command, stdout=log_file, stderr=subprocess.STDOUT, env=_install_environ())
    return "compiled" if code == 0 else "partial (exit %d)" % code


# glibc malloc in every environment process: allocations up to 1 GiB from the heap, and freed memory kept
# (not handed back to the kernel unless 4 GiB are free). TensorFlow allocates and frees each batch's
# activations (ResNet50, batch 8: ~0.5 GB); by default each large block was a fresh mmap, every page of it
# faulted in again. Measured on ResNet50 (2 cores): the tf2 parity cells 21.0 s -> 17.6 s (page faults
# 1.02 M -> 0.50 M, system time 3.1 s -> 2.0 s), the re-save 14.6 s -> 13.2 s; peak RSS +6 %. The same
# variables for every process of an environment, the benchmark's by-hand recipe included.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(1 << 30), "MALLOC_TRIM_THRESHOLD_": str(1 << 32)}


def run_environ(name, base=None):
    """The process environment for running code inside ``name``: its bin first on PATH (TF 1.15's
    converter shells out to ``toco_from_protos``, found only there), the repository importable."""
    environ = dict(os.environ if base is None else base)
    bindir = os.path.join(venv_dir(name), "bin")
    environ["PATH"] = bindir + os.pathsep + environ.get("PATH", os.defpath)
    environ["VIRTUAL_ENV"] = venv_dir(name)
    environ["PYTHONPATH"] = REPO_ROOT
    environ.pop("PYTHONHOME", None)
    environ["TFBRIDGE_ENV"] = name
    # tf2: make `import tf_keras`-style legacy Keras 2 the tf.keras, as the legacy files need.
    environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    environ.setdefault("PYTHONHASHSEED", "0")
    for variable, value in MALLOC_ENV.items():
        environ.setdefault(variable, value)
    return environ


def module_command(name, module, args=()):
    """The argv that runs ``python -m module args`` inside environment ``name``."""
    return [python_of(name), "-m", module] + [str(arg) for arg in args]


def installed_versions(name, packages=("tensorflow", "keras", "tf-keras", "h5py", "numpy")):
    """Installed versions in ``name``, read from package metadata (no TensorFlow import)."""
    script = (
        "import json, sys\n"
        "try:\n    from importlib import metadata\nexcept ImportError:  # Python 3.7\n    import importlib_metadata as metadata\n"
        "out = {}\n"
        "for name in sys.argv[1:]:\n"
        "    found = None\n"
        "    for dist in (name, name + '-cpu'):\n"
        "        try:\n            found = metadata.version(dist); break\n"
        "        except Exception:\n            pass\n"
        "    out[name] = found\n"
        "print(json.dumps(out))\n"
    )
    try:
        output = subprocess.check_output(
            [python_of(name), "-c", script] + list(packages), stderr=subprocess.DEVNULL,
            universal_newlines=True, timeout=60,
        )
        return json.loads(output)
    except (OSError, subprocess.SubprocessError, ValueError):
        return {package: None for package in packages}


def _install_environ():
    environ = dict(os.environ)
    environ.pop("PYTHONPATH", None)
    environ.pop("VIRTUAL_ENV", None)
    environ.setdefault("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    return environ


def _write_json_atomic(path, data):
    temporary = path + ".tmp-%d" % os.getpid()
    with open(temporary, "w") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


if __name__ == "__main__":  # pragma: no cover - debugging aid: python -m envs.venvs NAME
    print(ensure(sys.argv[1]))
