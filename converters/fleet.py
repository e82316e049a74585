"""``tfbridge fleet MANIFEST --out DIR [--shard I/N] [--jobs N]``: many ``convert_legacy`` runs, one manifest.

For whom: a team with many legacy models (docs/fleet.md). Host side, standard library only::

    python -m converters.fleet MANIFEST --out DIR [--shard I/N] [--jobs N] [--debug]

The manifest is read and every entry checked first (``converters.fleet_manifest``: exit 2, nothing run).
Then the environments are made ready once, here (a venv being created by two runs at once would be
removed under the other's feet), and the shard's models run ``--jobs`` at a time, each as its own
``python -m converters.pipeline`` process (the very command ``convert_legacy`` runs: same options, same
checks, same run folder ``DIR/<name>``, same unchanged-rerun rule), started from the manifest's folder.
A process per model keeps models apart: one that crashes or leaks memory takes no other with it, and the
environments are only read by the steps of several models at once.

What DIR holds::

    DIR/<name>/                      each model's run folder (exactly what convert_legacy --out writes)
    DIR/.fleet/manifest.json         the checked manifest (fleet-report reads the whole fleet from it)
    DIR/.fleet/outcomes/<name>.json  each model's last finished attempt: verdict, exit status, error, time
    DIR/.fleet/logs/<name>.log       each model's output
    DIR/fleet.json, DIR/fleet.html   without --shard (else: tfbridge fleet-report DIR... --out DIR)

Every fleet file is written atomically; an outcome is written only after its model's process ended, and a
run folder is replaced only by a complete run (``runfolder.publish_run``). So a shard killed at any moment
leaves nothing that a rerun trusts half-written: the rerun runs every model again, and each model whose
run folder is complete and unchanged is reused by ``convert_legacy``'s own rule in about a second. A model
that fails (any exit status) is recorded and the others go on. Each running model holds a lock on its
name (``.fleet/locks``), so two shards given overlapping models never write one run folder at once; the
model processes stop with the fleet process, even when it is killed (Linux: ``PR_SET_PDEATHSIG``).

Exit status: 0 when every model of the shard passed; 1 when one did not (a mismatch, or an error of its
own: ``fleet.json`` says which); 2 a bad manifest or option; 3 an environment that cannot be made;
130 interrupted.
"""

import concurrent.futures
import contextlib
import datetime
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from converters import cli, fleet_manifest, fleet_report, runfolder
from converters.errors import Interrupted, UsageError

FLEET_DIR = fleet_manifest.FLEET_DIR
TREE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# ``python -m`` would put the current folder (the manifest's) first on sys.path, where a user's own
# ``converters/`` would shadow tfbridge's: the same launcher as the tfbridge command's (tfbridge/_layout.py).
LAUNCHER = ("import runpy, sys; sys.path[:] = [p for p in sys.path if p not in ('', '.')]; "
            "runpy.run_module(%r, run_name='__main__', alter_sys=True)")
PIPELINE = "converters.pipeline"


def fleet_dir(out, *parts):
    return os.path.join(out, FLEET_DIR, *parts)


def check_fleet_out(out):
    """Refuse a DIR that a fleet could damage: a file, or a non-empty folder that is no fleet folder."""
    given = out
    out = os.path.abspath(out)
    if not os.path.lexists(out):
        return out
    if not os.path.isdir(out):
        raise UsageError("--out %s exists and is not a folder." % given, step="fleet",
                         hint="Give --out a new folder, an empty one, or the DIR of an earlier fleet run.")
    if os.listdir(out) and not os.path.isdir(fleet_dir(out)):
        raise UsageError("--out %s is a folder that tfbridge fleet did not make (it has no %s/) and it is not empty."
                         % (given, FLEET_DIR), step="fleet",
                         hint="Give --out a new folder, an empty one, or the DIR of an earlier fleet run.")
    return out


def _now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _stamp(run_dir):
    """What identifies a published run folder: its marker file's inode and time (publishing replaces it)."""
    try:
        stat = os.stat(os.path.join(run_dir, runfolder.RUN_MARKER))
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns


def _die_with_parent():
    """In the child before exec: SIGTERM when the fleet process dies (Linux), so that a killed fleet
    leaves no model running on (it cleans up its partial folder, as on any SIGTERM)."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


@contextlib.contextmanager
def _model_lock(out, name, log):
    """Hold ``.fleet/locks/<name>.lock`` (the file descriptor is yielded: the model process inherits it,
    so the lock lasts as long as that process)."""
    os.makedirs(fleet_dir(out, "locks"), exist_ok=True)
    handle = open(fleet_dir(out, "locks", name + ".lock"), "a")
    try:
        try:
            import fcntl
        except ImportError:  # no fcntl (Windows): no lock
            yield None
            return
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            log("fleet: %s: another process is running this model in %s; waiting for it" % (name, out))
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        yield handle.fileno()
    finally:
        handle.close()


class Fleet(object):
    """One shard's run: ``run()`` returns the outcome of each model it finished (a list of dicts)."""

    def __init__(self, manifest, out, shard=None, jobs=None, log=None, debug=False):
        self.manifest = manifest
        self.out = os.path.abspath(out)
        self.shard = shard
        self.jobs = max(1, int(jobs or 1))
        self.log = log or (lambda message: sys.stderr.write(message + "\n"))
        self.debug = debug
        self.entries = manifest.for_shard(shard)
        self.stopping = threading.Event()
        self.processes = set()
        self.guard = threading.Lock()
        self.done = 0

    @property
    def shard_text(self):
        return "%d/%d" % self.shard if self.shard else None

    def model_jobs(self, entry):
        """``--jobs`` of one model: the entry's own, else the cores shared among the models run at once."""
        if entry.values.get("jobs"):
            return None
        return max(1, (os.cpu_count() or 1) // self.jobs)

    def prepare(self):
        """Make every environment the shard's models need ready, once, before any model starts."""
        from converters import preflight
        from envs import backends, registry

        wanted = []
        for entry in self.entries:
            backend = entry.values.get("backend") or os.environ.get("TFBRIDGE_BACKEND") or "local"
            names = list(registry.TF_ENVIRONMENTS)
            if entry.values.get("tf") or entry.values.get("bisect"):
                names += preflight.tf_environments(entry.values.get("tf"), backend)
            wanted += [(backend, name) for name in names if (backend, name) not in wanted]
        for backend, name in wanted:
            backends.get_backend(backend).prepare(name, log=self.log)

    def run(self):
        os.makedirs(fleet_dir(self.out, "outcomes"), exist_ok=True)
        os.makedirs(fleet_dir(self.out, "logs"), exist_ok=True)
        runfolder.write_json(fleet_dir(self.out, "manifest.json"), self.manifest.to_json())
        total = len(self.manifest.entries)
        self.log("fleet: %d model(s) in %s%s, %d at a time, into %s" % (
            len(self.entries), self.manifest.path,
            " (shard %s: index mod %d == %d, of %d)" % (self.shard_text, self.shard[1], self.shard[0], total)
            if self.shard else "", self.jobs, self.out))
        if not self.entries:
            return []
        self.prepare()
        outcomes = []
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=self.jobs)
        futures = [pool.submit(self.run_model, entry) for entry in self.entries]
        try:
            pending = set(futures)
            while pending:  # short waits: the main thread must stay free for SIGINT / SIGTERM
                _, pending = concurrent.futures.wait(pending, timeout=0.5)
        except KeyboardInterrupt:
            self.stop()
            pool.shutdown(wait=True)
            raise Interrupted(
                "interrupted; the running models were stopped (each removed its partial run folder), every "
                "finished model's run folder and outcome are complete, and nothing that existed was replaced "
                "by a partial file.", step="fleet",
                hint="Run the same command again: finished models are reused, the others run.")
        pool.shutdown(wait=True)
        for future in futures:
            outcome = future.result()
            if outcome is not None:
                outcomes.append(outcome)
        return outcomes

    def stop(self):
        self.stopping.set()
        with self.guard:
            running = list(self.processes)
        for process in running:
            with contextlib.suppress(OSError):
                process.send_signal(signal.SIGTERM)
        for process in running:
            process.wait()

    def run_model(self, entry):
        """Run one model (its own process); write and return its outcome (None when the fleet stopped)."""
        if self.stopping.is_set():
            return None
        run_dir = os.path.join(self.out, entry.name)
        with _model_lock(self.out, entry.name, self.log) as lock_fd:
            if self.stopping.is_set():
                return None
            return self._run_locked(entry, run_dir, lock_fd)

    def _run_locked(self, entry, run_dir, lock_fd):
        before = _stamp(run_dir)
        logs = fleet_dir(self.out, "logs")
        for name in os.listdir(logs):  # a killed fleet's log of this model (we hold its lock: no one writes it)
            if re.match(r"^\.%s\.[a-z0-9_]{8}\.partial\.log$" % re.escape(entry.name), name):  # runfolder.atomic_path's name
                with contextlib.suppress(OSError):
                    os.remove(os.path.join(logs, name))
        scratch = tempfile.mkdtemp(prefix="tfbridge-fleet-%s-" % entry.name)  # the result and error files
        log_path = fleet_dir(self.out, "logs", entry.name + ".log")
        argv = list(entry.argv) + ["--out", run_dir]
        jobs = self.model_jobs(entry)
        if jobs:
            argv += ["--jobs", str(jobs)]
        if self.debug and "--debug" not in argv:
            argv.append("--debug")
        environ = dict(os.environ, PYTHONPATH=TREE, PYTHONUNBUFFERED="1",
                       TFBRIDGE_PROG="tfbridge fleet (%s):" % entry.name,
                       TFBRIDGE_ERROR_FILE=os.path.join(scratch, "error.json"),
                       TFBRIDGE_RESULT_FILE=os.path.join(scratch, "result.json"))
        started, started_at = time.time(), _now()
        self.log("fleet: %s: started (index %d; log %s)" % (entry.name, entry.index, log_path))
        try:
            with runfolder.atomic_path(log_path) as partial_log, open(partial_log, "w") as log_file:
                log_file.write("$ tfbridge convert-legacy %s\n" % " ".join(argv))
                log_file.flush()
                with self.guard:
                    if self.stopping.is_set():
                        return None
                    process = subprocess.Popen(
                        [sys.executable, "-c", LAUNCHER % PIPELINE] + argv, env=environ, cwd=self.manifest.folder,
                        stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                        pass_fds=(lock_fd,) if lock_fd is not None else (),
                        preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
                    self.processes.add(process)
                code = process.wait()
                with self.guard:
                    self.processes.discard(process)
            if self.stopping.is_set() or code == Interrupted.exit_code:
                return None  # stopped (the fleet, or a Ctrl-C that reached the model too): it did not finish
            outcome = self._outcome(entry, run_dir, code, scratch, before, started, started_at, log_path)
            runfolder.write_json(fleet_dir(self.out, "outcomes", entry.name + ".json"), outcome)
        finally:
            import shutil

            shutil.rmtree(scratch, ignore_errors=True)
        with self.guard:
            self.done += 1
            done = self.done
        self.log("fleet: [%d/%d] %s: %s" % (done, len(self.entries), entry.name, describe(outcome)))
        return outcome

    def _outcome(self, entry, run_dir, code, scratch, before, started, started_at, log_path):
        result = runfolder.read_json_if_valid(os.path.join(scratch, "result.json")) or {}
        outcome = {
            "tfbridge": "fleet-outcome", "schema_version": 1, "name": entry.name, "index": entry.index,
            "key": entry.key, "exit_code": code, "failing": list(result.get("failing") or []), "error": None,
            "seconds": round(time.time() - started, 2), "started": started_at, "finished": _now(),
            "shard": self.shard_text, "host": socket.gethostname(), "run_dir": run_dir,
            "log": log_path, "reused": False,
        }
        if code in (0, 1) and result.get("verdict"):
            outcome["verdict"] = result["verdict"]
            outcome["reused"] = before is not None and _stamp(run_dir) == before
            return outcome
        outcome["verdict"] = "error"
        error = cli.read_step_error(os.path.join(scratch, "error.json"), default_step="convert_legacy")
        if error is None:
            outcome["error"] = {"class": "EnvironmentStepError", "step": "convert_legacy", "hint": None,
                                "message": "the model's process ended with status %d without reporting an error "
                                           "(killed?); its output is in %s." % (code, log_path)}
        else:
            outcome["error"] = {"class": type(error).__name__, "step": error.step, "message": error.message,
                                "hint": error.hint}
        outcome["error"]["paragraph"] = _paragraph(outcome["error"])
        return outcome


def _paragraph(error):
    text = "%s failed: %s" % (error["step"], error["message"]) if error.get("step") else error["message"]
    return (text.rstrip() + (" " + error["hint"] if error.get("hint") else "")).strip()


def describe(outcome):
    """One line: how a model ended."""
    seconds = "%.1f s" % outcome["seconds"]
    if outcome["verdict"] == "pass":
        return "pass (%s%s)" % ("reused, unchanged, " if outcome.get("reused") else "", seconds)
    if outcome["verdict"] == "fail":
        return "FAIL: %s (%s%s)" % (", ".join(outcome["failing"]) or "mismatch",
                                    "reused, unchanged, " if outcome.get("reused") else "", seconds)
    return "error (exit %s, %s; %s): %s" % (outcome["exit_code"], outcome["error"]["class"], seconds,
                                           outcome["error"]["paragraph"])


def parser(prog=None):
    result = fleet_manifest.CommandParser(prog=prog or os.environ.get("TFBRIDGE_PROG") or "tfbridge fleet",
                     description="Run every model of a TOML manifest through convert_legacy (docs/fleet.md).")
    result.add_argument("manifest", metavar="MANIFEST", help="the fleet's TOML file: [[model]] tables, [defaults]")
    result.add_argument("--out", required=True, metavar="DIR", help="the fleet folder: DIR/<name> per model")
    result.add_argument("--shard", metavar="I/N", help="run only the models whose index mod N is I (I 0-based)")
    result.add_argument("--jobs", type=int, metavar="N", default=1,
                        help="models at once (default 1; each model then gets the cores divided by N)")
    result.add_argument("--debug", action="store_true", help="tracebacks; failed runs keep their partial folder")
    return result


def parse(argv, prog=None):
    """The fleet's arguments, checked: (namespace with ``shard`` as (I, N) or None)."""
    args = parser(prog).parse_args(list(argv))
    args.shard = fleet_manifest.parse_shard(args.shard)
    if args.jobs < 1:
        raise UsageError("--jobs must be at least 1 (got %d)." % args.jobs, step="options")
    return args


def fleet(manifest_path, out, shard=None, jobs=None, log=None, debug=False):
    """Check the manifest, run the shard's models; without ``shard`` also write fleet.json and fleet.html.
    Returns (outcomes, exit status)."""
    out = check_fleet_out(out)
    manifest = fleet_manifest.load(manifest_path, out)
    outcomes = Fleet(manifest, out, shard=shard, jobs=jobs, log=log, debug=debug).run()
    if shard is None:
        fleet_report.write([out], out, log=log)
    code = 0 if all(outcome["verdict"] == "pass" for outcome in outcomes) else 1
    return outcomes, code


def run(argv):
    args = parse(argv)
    log = lambda message: sys.stderr.write(message + "\n")  # noqa: E731
    outcomes, code = fleet(args.manifest, args.out, shard=args.shard, jobs=args.jobs, log=log, debug=args.debug)
    for outcome in outcomes:
        print("%-24s %s" % (outcome["name"], describe(outcome)))
    counts = {}
    for outcome in outcomes:
        counts[outcome["verdict"]] = counts.get(outcome["verdict"], 0) + 1
    print("fleet: %d model(s): %s" % (len(outcomes), ", ".join("%d %s" % (counts[k], k) for k in sorted(counts))
                                      or "none in this shard"))
    if args.shard is None:
        print("report: %s" % os.path.join(os.path.abspath(args.out), "fleet.html"))
    else:
        print("merge the shards with: tfbridge fleet-report DIR... --out DIR")
    return code


if __name__ == "__main__":
    sys.exit(cli.main(run, step="fleet"))
