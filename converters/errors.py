"""Typed errors of tfbridge's library code. Python 3.7 compatible; no TensorFlow import.

Every error carries the *step* it happened in and a one-paragraph message (what failed, why, what to do).
The command-line entry points catch ``TfbridgeError`` once (``converters.cli.main``), print
``error.paragraph()`` and exit with ``error.exit_code``; the traceback is shown only with ``--debug``.
Library code raises; it never prints and exits. The host's environment errors (``envs.errors.EnvError``)
are ``TfbridgeError`` too.

Exit status, one per class (README.md, "Exit status", shows this table; a unit test keeps them equal):

====  =========================  ==========================================================
0                                every parity cell and the int8 model match
1     ``ParityError``            a verdict, not an error: a mismatch (the report says where)
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


class Interrupted(TfbridgeError):
    """SIGINT or SIGTERM arrived; what was written so far is reported."""

    kind = "interrupted"
    exit_code = 130
