"""Finding the Python interpreter an environment needs, on a machine that may not have it on PATH.

Where we look, in order:

1. ``TFBRIDGE_PYTHON_<MAJOR>_<MINOR>`` (e.g. ``TFBRIDGE_PYTHON_3_7=/opt/py37/bin/python3.7``): an
   explicit choice wins, and when it is set but wrong that is an error rather than a silent fallback.
2. ``pythonX.Y`` on PATH, *run* to check it: pyenv's shims are on PATH but fail with "command not
   found" unless PYENV_VERSION names the version (measured on these machines).
3. pyenv's versions folder: ``$PYENV_ROOT/versions/X.Y.*/bin/pythonX.Y`` (``PYENV_ROOT`` defaults to
   ``~/.pyenv``), the newest patch release first.

Standard library only; Python 3.7 compatible.
"""

import glob
import os
import shutil
import subprocess

from envs.errors import InterpreterNotFound


def override_variable(version):
    """The environment variable that names an interpreter for ``version`` ("3.7" -> TFBRIDGE_PYTHON_3_7)."""
    return "TFBRIDGE_PYTHON_" + version.replace(".", "_")


def pyenv_root(environ=None):
    environ = os.environ if environ is None else environ
    return environ.get("PYENV_ROOT") or os.path.join(os.path.expanduser("~"), ".pyenv")


def find_python(version, environ=None):
    """Return the absolute path of a working Python ``version`` ("3.7"), or raise InterpreterNotFound.

    The error message is one paragraph naming the version, every place looked at and how to get one.
    """
    environ = dict(os.environ if environ is None else environ)
    looked = []

    variable = override_variable(version)
    override = environ.get(variable)
    if override:
        found = _check(override, version, environ)
        if found:
            return found
        raise InterpreterNotFound(
            "%s is set to %r, but that is not a working Python %s. Point it at a Python %s "
            "executable, or unset it to let tfbridge search PATH and pyenv." % (variable, override, version, version)
        )
    looked.append("$%s (not set)" % variable)

    on_path = shutil.which("python" + version, path=environ.get("PATH", os.defpath))
    if on_path:
        found = _check(on_path, version, environ)
        if found:
            return found
        looked.append("PATH: %s (does not run as Python %s; a pyenv shim?)" % (on_path, version))
    else:
        looked.append("PATH (no python%s)" % version)

    root = pyenv_root(environ)
    pattern = os.path.join(root, "versions", version + ".*", "bin", "python" + version)
    candidates = sorted(glob.glob(pattern), key=_patch_level, reverse=True)
    for candidate in candidates:
        found = _check(candidate, version, environ)
        if found:
            return found
    looked.append("pyenv: %s" % pattern)

    raise InterpreterNotFound(
        "No Python %s interpreter was found, and the environments that need it cannot be created "
        "(TensorFlow 1.x wheels exist only for Python <= 3.7). Looked at: %s. To fix: install it with "
        "pyenv (`pyenv install %s`), or with conda (`conda create -n py%s python=%s`) and set %s to "
        "its python; or run the steps in the Docker images (see docs/containers.md)."
        % (version, "; ".join(looked), _latest_known(version), version.replace(".", ""), version, variable)
    )


# Prints the version and the *base* interpreter: a venv's python found on PATH would otherwise become
# the parent of our venvs, tying them to a venv that may be deleted.
_PROBE = (
    "import os, sys\n"
    "print('%d.%d' % sys.version_info[:2])\n"
    "base = os.path.join(sys.base_prefix, 'bin', 'python%d.%d' % sys.version_info[:2])\n"
    "print(base if sys.prefix != sys.base_prefix and os.path.exists(base) else sys.executable)\n"
)


def _check(executable, version, environ):
    """The real path of ``executable`` if it runs and reports ``version``, else None."""
    env = {k: v for k, v in environ.items() if not k.startswith("PYTHON")}
    try:
        result = subprocess.run(
            [executable, "-c", _PROBE],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            timeout=30,
            universal_newlines=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    lines = result.stdout.split()
    if result.returncode != 0 or len(lines) < 2 or lines[0] != version:
        return None
    return lines[1]


def _patch_level(path):
    name = path.split(os.sep)[-3]  # .../versions/3.7.16/bin/python3.7
    parts = []
    for piece in name.split("."):
        parts.append(int(piece) if piece.isdigit() else -1)
    return parts


def _latest_known(version):
    return {"3.7": "3.7.16"}.get(version, version)
