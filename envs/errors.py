"""Typed errors of the host side. Each carries a one-paragraph message for the user."""


class EnvError(Exception):
    """An environment cannot be found, created or used. ``str(error)`` is the user-facing paragraph."""

    exit_code = 3


class InterpreterNotFound(EnvError):
    """No interpreter of the Python version an environment needs was found."""


class InstallFailed(EnvError):
    """Creating an environment or installing its lock failed; the message names the log."""


class LockMissing(EnvError):
    """An environment has no lock file yet."""
