"""A test-only step for tests/integration/test_step_runner_crossenv.py: ``python -m tests.integration._step_probe``.

``connect PORT``: try a TCP connection to 127.0.0.1:PORT and print one JSON line with the outcome (exit 0
either way). ``escape FILE SECRET PORT``: try to write FILE (directly,
and through ``/proc/<pid>/root`` of every process it sees), read SECRET (``~`` is expanded) and connect to 127.0.0.1:PORT, and print one JSON line saying which of them worked (exit 0
either way; what a model's trusted code might try). ``fail``: print noise and a line, then fail with a typed error (one paragraph, written to
TFBRIDGE_ERROR_FILE by converters.cli). ``crash``: exit 9 without reporting an error. ``sleep``: sleep.
Standard library only, so it runs in any environment.
"""

import json
import os
import socket
import sys
import time

from converters import cli, errors


def escape(write_path, secret_path, port):
    """{"write", "proc", "read", "connect"}: "escaped" or "blocked: <the error>" for each attempt."""
    outcome = {}
    def through_proc():  # /proc/<pid>/root of any process it sees leads to that process's file system
        for pid in sorted(name for name in os.listdir("/proc") if name.isdigit()):
            try:
                with open("/proc/%s/root%s" % (pid, write_path), "w") as handle:
                    handle.write("written through /proc/%s/root" % pid)
                return
            except OSError as error:
                last = error
        raise last

    attempts = (("write", lambda: open(write_path, "w").write("written from inside a step")),
                ("proc", through_proc),
                ("read", lambda: open(os.path.expanduser(secret_path)).read()),
                ("connect", lambda: socket.create_connection(("127.0.0.1", port), timeout=5).close()))
    for name, attempt in attempts:
        try:
            attempt()
            outcome[name] = "escaped"
        except OSError as error:
            outcome[name] = "blocked: %s: %s" % (type(error).__name__, error)
    return outcome


def run(argv):
    if argv[0] == "connect":
        try:
            socket.create_connection(("127.0.0.1", int(argv[1])), timeout=5).close()
            outcome = {"connected": True}
        except OSError as error:
            outcome = {"connected": False, "error": "%s: %s" % (type(error).__name__, error)}
        print(json.dumps(outcome))
        return 0
    if argv[0] == "escape":
        print(json.dumps(escape(argv[1], argv[2], int(argv[3]))))
        return 0
    if argv[0] == "fail":
        sys.stderr.write("I0101 12:00:00.000000   123 cpu_feature_guard.cc:210] This TensorFlow binary is noise\n")
        sys.stderr.write("a line the user should see\n")
        sys.stderr.flush()
        raise errors.CalibrationDataError("the probe step failed on purpose.", step="calibrate",
                                          hint="Nothing to do: this is a test.")
    if argv[0] == "crash":
        sys.stderr.write("dying\n")
        sys.exit(9)
    if argv[0] == "sleep":
        time.sleep(float(argv[1]))
        return 0
    raise errors.UsageError("unknown probe %r" % argv[0])


if __name__ == "__main__":
    sys.exit(cli.main(run, step="probe"))
