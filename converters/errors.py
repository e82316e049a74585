"""Typed errors of tfbridge's library code. Python 3.7 compatible; no TensorFlow import.

Every error carries the *step* it happened in and a one-paragraph message (what failed, why, what to do).
The command-line entry points catch ``TfbridgeError`` once (``converters.cli.main``), print
``error.paragraph()`` and exit with ``error.exit_code``; the traceback is shown only with ``--debug``.
Library code raises; it never prints and exits. The host's environment errors (``envs.errors.EnvError``)
are ``TfbridgeError`` too.

Exit status, one per class (README.md, "Exit status", shows this table; a unit test keeps them equal):

====  =========================  ==========================================================
0                                every parity cell and the int8 model match
1     ``ParityError``            a verdict, not an error: a mismatch of a parity cell or of the int8 model, in `convert_legacy` and `convert` alike (the report says where)
2     ``UsageError``             a bad option or combination of options (and the base class)
3     ``EnvError``               an environment cannot be found, created or used (envs/errors.py)
4     ``DockerUnavailable``      the docker backend has no engine or no image (envs/docker.py)
5     ``InputFileError``         a model or data file is missing, unreadable or of the wrong kind
6     ``ModelLoadError``         the model does not load (unknown layer, newer Keras, weights only)
7     ``UntrustedModelError``    loading would run code stored in the file; no --trust-model
8     ``CalibrationDataError``   calibration, probe or eval data is empty, unreadable, too small, wrong shape
9     ``ConversionError``        the converter failed or wrote something other than what was asked
10    ``NotInt8Error``           ops or tensors that cannot be int8 (--allow-float-ops, --strict-npu)
11    ``EnvironmentStepError``   a step crashed or was killed without reporting an error
12    ``EnvironmentBroken``      an environment lacks a package its lock pins (not a model verdict)
13    ``DiskFullError``          the disk that holds the run folder is full (or too full to start a step)
70                               internal error: a bug in tfbridge (rerun with --debug, report it)
130   ``Interrupted``            SIGINT or SIGTERM
====  =========================  ==========================================================
"""


class TfbridgeError(Exception):
    """Base class. ``step``: where it failed (e.g. "load", "calibrate", "convert"); ``hint``: what to do."""

    exit_code = 2
    kind = "error"

    def __init__(self, message, step=None, hint=None):
        super(TfbridgeError, self).__init__(message)
        self.message = message
        self.step = step
        self.hint = hint

    def paragraph(self):
        parts = []
        if self.step:
            parts.append("tfbridge: %s failed: %s" % (self.step, self.message))
        else:
            parts.append("tfbridge: %s" % self.message)
        if self.hint:
            parts.append(self.hint)
        return " ".join(part.rstrip() for part in parts)

    def to_dict(self):
        return {"error": type(self).__name__, "kind": self.kind, "step": self.step,
                "message": self.message, "hint": self.hint}


class UsageError(TfbridgeError):
    """A bad option or combination of options."""

    kind = "usage"


class InputFileError(TfbridgeError):
    """A model or data file is missing, unreadable, not of the expected format, or corrupt."""

    kind = "input"
    exit_code = 5


class ModelLoadError(TfbridgeError):
    """A model could not be loaded (unknown layer, newer Keras, weights-only file without architecture)."""

    kind = "load"
    exit_code = 6


class UntrustedModelError(TfbridgeError):
    """Loading the model would run code stored in the file (Lambda layers) and --trust-model was not given."""

    kind = "untrusted"
    exit_code = 7


class CalibrationDataError(TfbridgeError):
    """Calibration or probe data is empty, unreadable, of the wrong shape or dtype, or not finite."""

    kind = "calibration"
    exit_code = 8


class ConversionError(TfbridgeError):
    """The TFLite converter failed, or produced a model that is not what was asked for."""

    kind = "convert"
    exit_code = 9


class NotInt8Error(TfbridgeError):
    """The model has ops or tensors that cannot be int8 and --allow-float-ops/--strict-npu says so."""

    kind = "npu"
    exit_code = 10


class ParityError(TfbridgeError):
    """Outputs of an environment do not match the origin's references."""

    kind = "parity"
    exit_code = 1


class EnvironmentStepError(TfbridgeError):
    """A step run inside an environment failed without writing its result (crash, killed)."""

    kind = "environment"
    exit_code = 11


class EnvironmentBroken(TfbridgeError):
    """An environment no longer holds what its lock pins: a locked package is missing, damaged or does
    not import. Never a verdict about the model. ``env``: the environment; ``package``: the import or
    distribution name that failed (carried across processes in the step's error file)."""

    kind = "environment"
    exit_code = 12

    def __init__(self, message, step=None, hint=None, env=None, package=None):
        super(EnvironmentBroken, self).__init__(message, step=step, hint=hint)
        self.env = env
        self.package = package

    def to_dict(self):
        data = super(EnvironmentBroken, self).to_dict()
        data.update(env=self.env, package=self.package)
        return data


class DiskFullError(TfbridgeError):
    """The disk holding the run folder is full: a write failed with ENOSPC (errno 28), in the host or in a
    step (whose own report may be lost with it), or too little space is left to start a step."""

    kind = "disk"
    exit_code = 13


# How a full disk shows in an exception or in a step's last output lines: the C library's message, errno 28
# (h5py: "errno = 28"; Python: "[Errno 28]"), the symbol.
NO_SPACE_MARKS = ("No space left on device", "errno = 28", "[Errno 28]", "ENOSPC")


def says_no_space(text):
    """True when ``text`` (an exception's message, a step's output) reports a full disk."""
    return bool(text) and any(mark in text for mark in NO_SPACE_MARKS)


def disk_full(where, detail, step=None, left=""):
    """The ``DiskFullError`` paragraph for the disk holding ``where`` (None: not known, e.g. inside a step):
    how much is free there, what failed."""
    if where:
        message = "the disk holding %s is full%s (%s)." % (where, _free_text(where), detail.rstrip(". "))
    else:
        message = "a write failed: the disk is full (%s)." % detail.rstrip(". ")
    hint = ("Free some space there, or give --out a folder on a disk with more room, then run the same "
            "command again. %s" % left).strip()
    return DiskFullError(message, step=step, hint=hint)


def no_space_words(text):
    """The part of ``text`` that says the disk is full (e.g. "[Errno 28] No space left on device"), or None."""
    import re

    found = re.search(r"(\[Errno 28\] [A-Za-z ]*|errno = 28|No space left on device|ENOSPC)", text or "")
    return found.group(1).strip() if found else None


def _free_text(where):
    import os

    folder = where
    while folder and not os.path.isdir(folder):
        parent = os.path.dirname(folder)
        if parent == folder:
            return ""
        folder = parent
    try:
        stat = os.statvfs(folder)
    except (OSError, AttributeError):
        return ""
    return ": %.1f MB free of %.1f MB" % (stat.f_bavail * stat.f_frsize / 1e6, stat.f_blocks * stat.f_frsize / 1e6)


class Interrupted(TfbridgeError):
    """SIGINT or SIGTERM arrived; what was written so far is reported."""

    kind = "interrupted"
    exit_code = 130
