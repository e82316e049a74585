"""Typed errors of tfbridge's library code. Python 3.7 compatible; no TensorFlow import.

Every error carries the *step* it happened in and a one-paragraph message (what failed, why, what to do).
The command-line entry points catch ``TfbridgeError`` once, print ``error.paragraph()`` and exit with
``error.exit_code``; the traceback is shown only with ``--debug``. Library code raises; it never prints
and exits.
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


class ModelLoadError(TfbridgeError):
    """A model could not be loaded (unknown layer, newer Keras, weights-only file without architecture)."""

    kind = "load"


class UntrustedModelError(TfbridgeError):
    """Loading the model would run code stored in the file (Lambda layers) and --trust-model was not given."""

    kind = "untrusted"


class CalibrationDataError(TfbridgeError):
    """Calibration or probe data is empty, unreadable, of the wrong shape or dtype, or not finite."""

    kind = "calibration"


class ConversionError(TfbridgeError):
    """The TFLite converter failed, or produced a model that is not what was asked for."""

    kind = "convert"


class NotInt8Error(TfbridgeError):
    """The model has ops or tensors that cannot be int8 and --allow-float-ops/--strict-npu says so."""

    kind = "npu"


class ParityError(TfbridgeError):
    """Outputs of an environment do not match the origin's references."""

    kind = "parity"
    exit_code = 1


class EnvironmentStepError(TfbridgeError):
    """A step run inside an environment failed without writing its result (crash, killed)."""

    kind = "environment"


class Interrupted(TfbridgeError):
    """SIGINT or SIGTERM arrived; what was written so far is reported."""

    kind = "interrupted"
    exit_code = 130
