"""The one place where errors become what the user reads (Python 3.7 compatible, no TF import).

Every ``python -m`` entry point of tfbridge (host orchestrators and in-environment steps) wraps its
``run(argv)`` in ``main(run, argv)``:

- a ``TfbridgeError`` (``envs.errors.EnvError`` included) prints its one paragraph to stderr and exits with its code; no traceback unless
  ``--debug`` is among the arguments (or ``TFBRIDGE_DEBUG=1``);
- when ``TFBRIDGE_ERROR_FILE`` is set (the host does that for each in-environment step), the error is
  also written there as JSON, so the host can report it as the step's own paragraph;
- SIGTERM is turned into KeyboardInterrupt so that ``finally`` blocks and atomic writes clean up (the
  first one: a second cannot break off that cleanup);
- an ``OSError`` of a full disk (ENOSPC, errno 28, or that message in any exception) is a ``DiskFullError``;
- anything else is an internal error: one paragraph asking for ``--debug`` and a bug report.
"""

import errno
import json
import os
import signal
import sys
import traceback

from converters.errors import Interrupted, TfbridgeError, disk_full, says_no_space

INTERNAL_ERROR_EXIT = 70


def debug_requested(argv):
    return "--debug" in argv or os.environ.get("TFBRIDGE_DEBUG") == "1"


def _raise_interrupt(signum, frame):
    """The first SIGTERM interrupts; a later one is ignored, so that it cannot break off the cleanup the first
    started (a killed multi-threaded parent sends ``PR_SET_PDEATHSIG``'s signal again for each of its threads
    that dies while the child is reparented among them: ``converters.fleet``). A handler, not SIG_IGN, so that
    a process started during the cleanup does not inherit the ignoring."""
    signal.signal(signal.SIGTERM, _ignore)
    raise KeyboardInterrupt("signal %d" % signum)


def _ignore(signum, frame):
    pass


def main(run, argv=None, step=None):
    """Run ``run(argv)`` and map its outcome to an exit code (see the module docstring)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = debug_requested(argv)
    try:
        signal.signal(signal.SIGTERM, _raise_interrupt)
    except ValueError:  # not the main thread
        pass
    try:
        return int(run(argv) or 0)
    except TfbridgeError as error:
        if error.step is None:
            error.step = step
        return _report(error, debug)
    except KeyboardInterrupt:
        error = Interrupted(
            "interrupted; every file written so far is complete (writes are atomic) and nothing that "
            "existed before was replaced by a partial one.", step=step,
            hint="Run the same command again to finish.")
        return _report(error, debug)
    except SystemExit:
        raise
    except Exception as exc:  # noqa: BLE001 - the last line of defence, reported as a bug
        if getattr(exc, "errno", None) == errno.ENOSPC or says_no_space(str(exc)):
            where = getattr(exc, "filename", None)
            where = os.path.dirname(os.path.abspath(str(where))) if where else None
            return _report(disk_full(where, "%s: %s" % (type(exc).__name__, str(exc).splitlines()[0]),
                                     step=step), debug)
        error = TfbridgeError(
            "internal error (%s: %s)." % (type(exc).__name__, str(exc).splitlines()[0] if str(exc) else ""),
            step=step,
            hint="This is a bug in tfbridge, not in your input. Rerun with --debug for the traceback "
                 "and report it with the command line you used.")
        error.exit_code = INTERNAL_ERROR_EXIT
        error.kind = "internal"
        return _report(error, debug)


def read_step_error(path, default_step=None):
    """The typed error a step wrote to ``path`` (``TFBRIDGE_ERROR_FILE``), or None if it wrote none.

    For the host orchestrators: a failed step's own paragraph becomes theirs, with its class and exit code.
    """
    from converters import errors

    try:
        with open(path) as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return None
    if not data:
        return None
    cls = getattr(errors, data.get("error") or "", None)
    if not (isinstance(cls, type) and issubclass(cls, TfbridgeError)):
        cls = TfbridgeError
    error = cls(data.get("message") or "failed", step=data.get("step") or default_step, hint=data.get("hint"))
    error.exit_code = data.get("exit_code", error.exit_code)
    for key in ("env", "package"):  # EnvironmentBroken: which environment, which package did not import
        if key in data:
            setattr(error, key, data[key])
    return error


def write_result(run_dir, verdict, failing=()):
    """For tfbridge's Python API (``tfbridge/api.py``): where a finished command's run folder is and its
    verdict ("pass" / "fail"), as JSON in ``$TFBRIDGE_RESULT_FILE`` when that is set (nothing otherwise)."""
    path = os.environ.get("TFBRIDGE_RESULT_FILE")
    if not path:
        return
    with open(path + ".tmp", "w") as handle:
        json.dump({"run_dir": os.path.abspath(run_dir), "verdict": verdict, "failing": list(failing)}, handle)
    os.replace(path + ".tmp", path)


def _report(error, debug):
    if debug:
        traceback.print_exc()
    sys.stderr.write(error.paragraph() + "\n")
    sys.stderr.flush()
    error_file = os.environ.get("TFBRIDGE_ERROR_FILE")
    if error_file:
        try:
            data = error.to_dict()
            data["exit_code"] = error.exit_code
            data["paragraph"] = error.paragraph()
            with open(error_file + ".tmp", "w") as handle:
                json.dump(data, handle)
            os.replace(error_file + ".tmp", error_file)
        except OSError:
            pass
    return error.exit_code
