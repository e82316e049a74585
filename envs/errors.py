"""Typed errors of the host side. Each carries a one-paragraph message for the user.

``EnvError`` is a ``converters.errors.TfbridgeError`` (one base class for every tfbridge error, caught
once in ``converters.cli.main``); its exit status is 3 (``DockerUnavailable``: 4).
"""

from converters.errors import TfbridgeError


class EnvError(TfbridgeError):
    """An environment cannot be found, created or used. ``str(error)`` is the user-facing paragraph."""

    exit_code = 3
    kind = "environment"

    def __init__(self, message, step=None, hint=None):
        super(EnvError, self).__init__(message, step=step, hint=hint)


class InterpreterNotFound(EnvError):
    """No interpreter of the Python version an environment needs was found."""


class InstallFailed(EnvError):
    """Creating an environment or installing its lock failed; the message names the log."""


class LockMissing(EnvError):
    """An environment has no lock file yet."""
