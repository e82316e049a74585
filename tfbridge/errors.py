"""tfbridge's typed errors, for users of the Python API: the very classes the tree defines
(``converters/errors.py``, ``envs/errors.py``), each with its ``exit_code`` (README.md, "Exit status").

Every error is a ``TfbridgeError`` with ``message``, ``step`` (where it failed), ``hint`` (what to do)
and ``paragraph()`` (what the command line prints). A command run through ``tfbridge.convert_legacy``
and the others raises the class its command exited with (``from_exit``); ``tfbridge.inprocess`` raises
them directly.
"""

from tfbridge._private import tree_imports

with tree_imports():
    from converters.errors import (CalibrationDataError, ConversionError, EnvironmentBroken,  # noqa: F401
                                   EnvironmentStepError, InputFileError, Interrupted, ModelLoadError,
                                   NotInt8Error, ParityError, TfbridgeError, UntrustedModelError, UsageError)
    from envs.docker import DockerUnavailable  # noqa: F401
    from envs.errors import EnvError, InstallFailed, InterpreterNotFound, LockMissing  # noqa: F401

INTERNAL_ERROR_EXIT = 70

CLASSES = dict((cls.__name__, cls) for cls in (
    TfbridgeError, UsageError, InputFileError, ModelLoadError, UntrustedModelError, CalibrationDataError,
    ConversionError, NotInt8Error, ParityError, EnvironmentStepError, EnvironmentBroken, Interrupted,
    EnvError, InterpreterNotFound, InstallFailed, LockMissing, DockerUnavailable))


def from_dict(data, exit_code):
    """The typed error a command wrote to its error file (``converters.cli``), or a ``TfbridgeError``
    carrying ``exit_code`` when it wrote none (``data`` None)."""
    data = data or {}
    cls = CLASSES.get(data.get("error") or "")
    if cls is None:
        cls = next((c for c in CLASSES.values() if c.exit_code == exit_code), TfbridgeError)
    message = data.get("message") or "the command exited with status %d without a message." % exit_code
    error = cls(message, step=data.get("step"), hint=data.get("hint"))
    for key in ("env", "package"):
        if key in data:
            setattr(error, key, data[key])
    if data.get("exit_code") is not None or cls is TfbridgeError:
        error.exit_code = data.get("exit_code", exit_code)
    if data.get("kind") == "internal":
        error.kind = "internal"
    return error
