"""The one step runner: every in-environment step of verify_upgrade, convert_legacy and convert runs here.

Host side, standard library only, Python 3.7 compatible. A step is ``python -m MODULE ARGS`` inside an
environment, through the backend of the run (``envs.backends``: tfbridge's venvs, or ``--backend docker``),
in the network sandbox the backend gives (``StepRunner.sandbox``)::

    runner = StepRunner(run_dir, log=log, debug=False)
    stdout = runner.step("inspect", "tf1.15", "legacy_tf1", ["inspect", model])        # captured
    runner.step("tflite_convert", "tf2", "converters.tf2.tflite_convert", args,
                stream=True, logs=os.path.join(stage, "logs"))                          # shown to the user

For each step: its whole output goes to ``<logs>/<name>.log`` (default ``<run_dir>/logs``), with the
command line first; the step writes its typed error to ``<logs>/<name>.error.json``
(``TFBRIDGE_ERROR_FILE``), which becomes the error raised here (``converters.cli.read_step_error``), or an
``EnvironmentStepError`` when the step died without one; either becomes ``EnvironmentBroken`` when the
step could not import a package its environment's lock pins, or the host's check finds the environment
broken (``StepRunner._classify``): a damaged environment is never reported as a verdict about the model. ``stream=True`` also copies the output to our
stderr as it comes, less TensorFlow's C++ start-up chatter, and without the step's own closing error
paragraph (the orchestrator prints that paragraph once, as its own). ``timings`` lists
``{"step", "env", "seconds", "exit", "started", "ended"}`` (the last two: epoch seconds). KeyboardInterrupt (SIGINT, or SIGTERM via converters.cli) stops
the step's process before it propagates.
"""

import os
import re
import shutil
import subprocess
import sys
import time

from converters import cli, errors
from envs import backends, venvs
from envs.errors import EnvError

# TensorFlow's C++ start-up chatter (absl logging before InitializeLog, oneDNN, CUDA probing, CPU features,
# the MLIR converter's summary lines): not for the user, and no environment variable silences it in TF 2.21.
NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog|[IWE]\d{4} [\d:.]+ +\d+ \S+:\d+\] "
    r"|To enable the following instructions|fully_quantize: |INFO: Created TensorFlow Lite XNNPACK)")

_SANDBOX_NOTED = []  # the "no network sandbox" note is said once per process
_RUNNING = set()  # the step processes running now, in any thread (stop_running)
_STOPPED = []  # stop_running was called: this process is being interrupted


def _stop(process):
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def stop_running():
    """Stop every step process still running. For a SIGINT/SIGTERM that arrived in the main thread while
    other threads wait for their steps (``converters.verify.run_side_by_side``)."""
    _STOPPED.append(True)  # and start no other (a chain's fallback, converters.verify.together)
    for process in list(_RUNNING):
        if process.poll() is None:
            _stop(process)


def user_paths(preprocess=None, arch=None):
    """Host folders a step must be able to import from: the current folder when ``--preprocess`` or
    ``--arch`` names the user's own ``module:function``."""
    named = [value for value in (preprocess, arch) if value and ":" in str(value)
             and not os.path.exists(str(value))]
    return [os.getcwd()] if named else []


class StepRunner(object):
    """Runs in-environment steps (module docstring). ``backend``: default ``envs.backends.get_backend()``."""

    def __init__(self, run_dir, log=None, debug=False, backend=None, user_paths=()):
        self.run_dir = run_dir
        self.log = log or (lambda message: sys.stderr.write(message + "\n"))
        self.debug = debug
        self.backend = backend or backends.get_backend()  # local venvs, or --backend docker ($TFBRIDGE_BACKEND)
        self.user_paths = list(user_paths)
        self.timings = []
        self.prepared = set()
        self.extra_env = {}  # set in every step's environment (e.g. runfolder.AWAIT_ENV)
        self.nice = 0  # added to the niceness of every step (`nice -n`): steps that only fill idle cores

    @property
    def sandbox(self):
        """{"network": "isolated"|"not_isolated", "method": ..., "reason": ...} of every step run here."""
        return self.backend.sandbox()

    def prepare(self, env):
        """Make ``env`` usable (once per runner); raises EnvError (e.g. no Docker engine) before any step."""
        if env not in self.prepared:
            self.backend.prepare(env, log=self.log)
            self.prepared.add(env)

    def step(self, name, env, module, args, stream=False, logs=None, nice=None):
        """Run one step; return its output (stdout; stdout and stderr when ``stream``). Raises the step's
        typed error when it fails. ``nice``: added to its niceness (default the runner's ``nice``)."""
        if _STOPPED:
            raise errors.Interrupted("interrupted before step %s started." % name, step=name)
        self.prepare(env)
        self._note_sandbox()
        logs = logs or os.path.join(self.run_dir, "logs")
        if not os.path.isdir(logs):
            os.makedirs(logs)
        log_path = os.path.join(logs, "%s.log" % name)
        error_file = os.path.join(logs, "%s.error.json" % name)
        if os.path.exists(error_file):
            os.remove(error_file)
        args = [str(arg) for arg in args] + (["--debug"] if self.debug and "--debug" not in args else [])
        argv, environ = self.backend.command(env, module, args, backends.mounts_for(args),
                                             extra_env=dict(self.extra_env, TFBRIDGE_ERROR_FILE=error_file),
                                             user_paths=self.user_paths)
        nice = self.nice if nice is None else nice
        if nice and self.backend.name == "local" and shutil.which("nice"):
            # coreutils' nice, not a preexec_fn: steps start from several threads at once, and Python code
            # between fork and exec is not safe in a threaded process (the subprocess documentation)
            argv = ["nice", "-n", str(int(nice))] + list(argv)
        started = time.time()
        with open(log_path, "wb", buffering=0) as log_file:
            log_file.write(("$ %s\n" % " ".join(argv)).encode("utf-8"))
            process = subprocess.Popen(argv, cwd=venvs.REPO_ROOT, env=environ, stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT if stream else log_file)
            _RUNNING.add(process)
            try:
                output = _pump(process, log_file, _Shown(error_file) if stream else None)
            except BaseException:
                _stop(process)
                raise
            finally:
                _RUNNING.discard(process)
        ended = time.time()
        seconds = round(ended - started, 2)
        # started / ended: wall-clock epoch seconds, to see which steps overlapped (steps run side by side)
        self.timings.append({"step": name, "env": env, "seconds": seconds, "exit": process.returncode,
                             "started": round(started, 2), "ended": round(ended, 2)})
        self.log("  %-28s %-7s %6.1f s  %s" % (name, env, seconds, _outcome(process.returncode)))
        if process.returncode != 0:
            raise self._error(name, env, process.returncode, error_file, log_path)
        return output

    def _note_sandbox(self):
        sandbox = self.sandbox
        if sandbox.get("network") != "isolated" and not _SANDBOX_NOTED:
            _SANDBOX_NOTED.append(True)
            # not "tfbridge: ...": that prefix starts an error paragraph
            self.log("network sandbox unavailable: %s; steps run with network access" % sandbox.get("reason"))

    def _error(self, name, env, code, error_file, log_path):
        error = cli.read_step_error(error_file, default_step=name)
        if error is None:
            error = self._crash(name, env, code, log_path)
        return self._classify(name, env, error)

    def _classify(self, name, env, error):
        """The honest class of a failed step's error: ``EnvironmentBroken`` when the step says a locked
        package did not import, or when the environment no longer holds what its lock pins
        (``envs.venvs.diagnose``, a fraction of a second, run only after a failure), whatever the step
        made of it (a crash, "the model does not load"). The step knows which import failed; the host
        knows the lock and the venv."""
        if self.backend.name != "local":  # an image is checked by its lock's hash (envs/docker.py)
            if isinstance(error, errors.EnvironmentBroken):
                error.hint = "Rebuild its image with `nox -s docker_build -- %s`, then run again." % env
            return error
        try:
            state, reasons = venvs.diagnose(env)
        except (OSError, EnvError):
            state, reasons = "unknown", []
        if isinstance(error, errors.EnvironmentBroken):
            if reasons:
                error.message = "%s The host's check of the environment: %s." % (
                    error.message.rstrip(), venvs.describe_problems(reasons))
            return error
        if state != "broken":
            return error
        broken = errors.EnvironmentBroken(
            "environment %s is broken (%s), so step %s failed: %s This says nothing about the model: the "
            "environment no longer holds what its lock pins." % (
                env, venvs.describe_problems(reasons), name, error.message.rstrip()),
            step=name, env=env, package=None if reasons[0].startswith("its ") else reasons[0].split(" ")[0],
            hint="Rebuild it with `%s` (the next run rebuilds it too), then run again."
            % venvs.rebuild_command(env))
        return broken

    def _crash(self, name, env, code, log_path):
        tail = ""
        try:
            with open(log_path, errors="replace") as handle:
                lines = [line.rstrip() for line in handle if line.strip()]
            tail = lines[-1] if len(lines) > 1 else ""
        except OSError:
            pass
        return errors.EnvironmentStepError(
            "step %s in environment %s exited with status %d without reporting an error (last line: %s)."
            % (name, env, code, tail[:300] or "none"), step=name,
            hint="The process crashed or was killed (out of memory? ResNet50 conversion needs about 3 GB). "
                 "Rerun with --debug, which keeps the run's folder and its logs/%s.log." % name)


def _outcome(code):
    """A step's word in the step table: ok, stopped (exit 130: ``Interrupted``, e.g. a step that waited for
    a re-save that failed, whose own error is the one reported), or its exit status."""
    if code == 0:
        return "ok"
    return "stopped (exit %d)" % code if code == errors.Interrupted.exit_code else "exit %d" % code


class _Shown(object):
    """What ``stream=True`` shows the user: the output less NOISE, and less the step's closing paragraph
    (a ``tfbridge: `` line is held back until more output follows it; at the end it is dropped when it
    is the paragraph the step also wrote to its error file)."""

    def __init__(self, error_file):
        self.error_file = error_file
        self.held = []

    def write(self, piece):
        text = piece.decode("utf-8", "replace")
        if NOISE.match(text):
            return
        if text.startswith("tfbridge: "):
            self.flush()
            self.held.append(piece)
            return
        if text.strip():
            self.flush()
        if self.held:
            self.held.append(piece)
        else:
            _stderr(piece)

    def flush(self):
        for piece in self.held:
            _stderr(piece)
        self.held = []

    def close(self):
        paragraph = _paragraph_in(self.error_file)
        if paragraph and self.held and self.held[0].decode("utf-8", "replace").strip() == paragraph.strip():
            self.held = []
        self.flush()


def _paragraph_in(error_file):
    import json

    try:
        with open(error_file) as handle:
            return json.load(handle).get("paragraph")
    except (OSError, ValueError, AttributeError):
        return None


def _stderr(piece):
    stream = getattr(sys.stderr, "buffer", None)
    if stream is not None:
        sys.stderr.flush()
        stream.write(piece)
        stream.flush()
    else:
        sys.stderr.write(piece.decode("utf-8", "replace"))
        sys.stderr.flush()


def _pump(process, log_file, shown):
    """Copy the step's stdout to the log (and to ``shown``) as it comes; return it as text. Splits on
    newlines and carriage returns so that progress bars still move as they are drawn."""
    collected = []
    pending = b""
    while True:
        chunk = os.read(process.stdout.fileno(), 65536)
        if not chunk:
            break
        log_file.write(chunk)
        collected.append(chunk)
        if shown is None:
            continue
        pending += chunk
        cut = max(pending.rfind(b"\n"), pending.rfind(b"\r"))
        if cut < 0:
            continue
        text, pending = pending[:cut + 1], pending[cut + 1:]
        for piece in re.split(rb"(?<=[\r\n])", text):
            if piece:
                shown.write(piece)
    process.stdout.close()
    process.wait()
    if shown is not None:
        if pending:
            shown.write(pending)
        shown.close()
    return b"".join(collected).decode("utf-8", "replace")
