"""The one step runner: every in-environment step of verify_upgrade, convert_legacy and convert runs here.

Host side, standard library only, Python 3.7 compatible. A step is ``python -m MODULE ARGS`` inside an
environment, through the backend of the run (``envs.backends``: tfbridge's venvs, or ``--backend docker``),
in the sandbox the backend gives (``StepRunner.sandbox``: no network, and where bubblewrap works a
file-system box in which only the run folder is writable, less the files the step only reads)::

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

_SANDBOX_NOTED = []  # the "no network sandbox" / "no file-system box" notes are said once per process
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
    other threads wait for their steps (``converters.parity_matrix.run_side_by_side``)."""
    _STOPPED.append(True)  # and start no other (a chain's fallback, converters.parity_matrix.together)
    for process in list(_RUNNING):
        if process.poll() is None:
            _stop(process)


# Files of a run folder that a step finds there when it starts only read (the steps that write them run
# before they exist: the re-save, the tf2 preparation): a boxed step gets them read-only.
READ_ONLY_NAMES = ("manifest.json", "model.h5", "model.pb", "model.keras", "probe.npz", "custom_objects.py")
READ_ONLY_PREFIXES = ("reference_",)


def read_only_files(run_dir):
    """The files of ``run_dir`` a step may read but not change (``READ_ONLY_NAMES``), present now."""
    try:
        names = os.listdir(run_dir)
    except OSError:
        return []
    return [os.path.join(run_dir, name) for name in sorted(names)
            if name in READ_ONLY_NAMES or (name.startswith(READ_ONLY_PREFIXES) and name.endswith(".npz"))]


# Free space a step needs to start: below this the run folder's disk is called full before the step starts
# (and a step that failed with less than LOW_SPACE_BYTES left is taken to have run out of disk).
# TFBRIDGE_MIN_FREE_MB overrides it (0: no check before a step).
MIN_FREE_BYTES = 2 * 1024 * 1024
LOW_SPACE_BYTES = 256 * 1024


def free_bytes(folder):
    """Bytes free for the user on the disk holding ``folder`` (or its nearest existing parent)."""
    while folder and not os.path.isdir(folder) and os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)
    try:
        stat = os.statvfs(folder)
    except (OSError, AttributeError):
        return float("inf")
    return stat.f_bavail * stat.f_frsize


def check_free_space(run_dir, name):
    """Raise ``DiskFullError`` when the run folder's disk has less than ``MIN_FREE_BYTES`` free."""
    need = MIN_FREE_BYTES
    if os.environ.get("TFBRIDGE_MIN_FREE_MB"):
        need = float(os.environ["TFBRIDGE_MIN_FREE_MB"]) * 1024 * 1024
    free = free_bytes(run_dir)
    if free < need:
        raise errors.disk_full(_place(run_dir), "step %s needs at least %.1f MB free to start" % (name, need / 1e6),
                               step=name)


def _place(run_dir):
    """The folder to name for a run folder's disk: the folder that holds a run's partial folder (which is
    removed when the run fails), else the run folder."""
    if os.path.basename(run_dir).startswith(".") and ".partial-" in os.path.basename(run_dir):
        return os.path.dirname(run_dir)
    return run_dir


class _Log(object):
    """The step's log file; a failed write (a full disk) is remembered, not raised, so that the step runs
    on and its own error, if any, is the one reported."""

    def __init__(self, handle):
        self.handle = handle
        self.failure = None

    def write(self, data):
        if self.failure is not None:
            return
        try:
            self.handle.write(data)
        except OSError as error:
            self.failure = error


def _read_tail(path, size=8192):
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - size))
            return handle.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _last_lines(text, count=5):
    return [line for line in (text or "").splitlines() if line.strip()][-count:]


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
        check_free_space(self.run_dir, name)
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
        mounts = backends.mounts_for(args, writable=[self.run_dir, logs], read_only_files=read_only_files(self.run_dir))
        argv, environ = self.backend.command(env, module, args, mounts,
                                             extra_env=dict(self.extra_env, TFBRIDGE_ERROR_FILE=error_file),
                                             user_paths=self.user_paths)
        nice = self.nice if nice is None else nice
        if nice and self.backend.name == "local" and shutil.which("nice"):
            # coreutils' nice, not a preexec_fn: steps start from several threads at once, and Python code
            # between fork and exec is not safe in a threaded process (the subprocess documentation)
            argv = ["nice", "-n", str(int(nice))] + list(argv)
        started = time.time()
        mono_start = time.monotonic()  # the run's timeline (converters.timeline): the steps' own clock
        with open(log_path, "wb", buffering=0) as opened:
            log_file = _Log(opened)
            log_file.write(("$ %s\n" % " ".join(argv)).encode("utf-8"))
            process = subprocess.Popen(argv, cwd=venvs.REPO_ROOT, env=environ, stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT if stream else opened)
            _RUNNING.add(process)
            try:
                output = _pump(process, log_file, _Shown(error_file) if stream else None)
            except BaseException:
                _stop(process)
                raise
            finally:
                _RUNNING.discard(process)
        ended = time.time()
        mono_end = time.monotonic()
        seconds = round(ended - started, 2)
        # started / ended: wall-clock epoch seconds, to see which steps overlapped (steps run side by side)
        self.timings.append({"step": name, "env": env, "seconds": seconds, "exit": process.returncode,
                             "started": round(started, 2), "ended": round(ended, 2),
                             "mono_start": round(mono_start, 3), "mono_end": round(mono_end, 3)})
        self.log("  %-28s %-7s %6.1f s  %s" % (name, env, seconds, _outcome(process.returncode)))
        if process.returncode != 0:
            raise self._error(name, env, process.returncode, error_file, log_path, output, log_file.failure)
        if log_file.failure is not None and errors.says_no_space(str(log_file.failure)):
            raise errors.disk_full(_place(self.run_dir), "writing logs/%s.log: %s" % (name, log_file.failure),
                                   step=name)
        return output

    def _note_sandbox(self):
        sandbox = self.sandbox
        # not "tfbridge: ...": that prefix starts an error paragraph
        if sandbox.get("filesystem") != "boxed" and "filesystem" not in _SANDBOX_NOTED:
            _SANDBOX_NOTED.append("filesystem")
            self.log("file-system box unavailable: %s; steps run with your user's file access"
                     % sandbox.get("filesystem_reason"))
        if sandbox.get("network") != "isolated" and "network" not in _SANDBOX_NOTED:
            _SANDBOX_NOTED.append("network")
            self.log("network sandbox unavailable: %s; steps run with network access" % sandbox.get("reason"))

    def _error(self, name, env, code, error_file, log_path, output="", log_failure=None):
        error = cli.read_step_error(error_file, default_step=name)
        if error is None:
            error = self._crash(name, env, code, log_path)
        full = self._disk_full(name, error, log_path, output, log_failure)
        return full if full is not None else self._classify(name, env, error)

    def _disk_full(self, name, error, log_path, output, log_failure):
        """A ``DiskFullError`` when the failed step ran out of disk: its error or its last output lines say
        so (errno 28; TF 1.13's h5py even dies with SIGSEGV on it, its report lost), the host could not
        write its log for that reason, or the run folder's disk is nearly full now. None otherwise."""
        said = [error.message, str(log_failure or "")] + _last_lines(output) + _last_lines(_read_tail(log_path))
        evidence = [line for line in said if errors.says_no_space(line)]
        if not evidence and not isinstance(error, errors.DiskFullError) and \
                free_bytes(self.run_dir) >= LOW_SPACE_BYTES:
            return None
        detail = "step %s ran out of space: %s" % (name, errors.no_space_words(evidence[-1])) if evidence else \
            "step %s failed with %d bytes left: %s" % (name, free_bytes(self.run_dir), error.message.rstrip()[:200])
        return errors.disk_full(_place(self.run_dir), detail, step=name)

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
        held = self.held[0].decode("utf-8", "replace").strip() if self.held else ""
        if paragraph and held == paragraph.strip():
            self.held = []
        elif held and errors.says_no_space(held):  # its error file could not be written: the host reports it
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
