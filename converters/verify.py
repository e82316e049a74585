"""``verify_upgrade``: is it safe to upgrade TensorFlow for this legacy model? (host side, stdlib only)

For whom: ``nox -s verify_upgrade -- MODEL ...`` and the lead's ``convert_legacy`` (``verify(options)``).
Runs on the host interpreter (Python 3.11, no numpy, no TensorFlow); every step that needs TF or numpy
runs inside an environment as a subprocess (``envs.venvs``) and talks through the run folder::

    python -m converters.verify MODEL [--origin 1.13|1.15] [--calib PATH] [--preprocess NAME]
        [--arch ...] [--custom-objects F.py] [--trust-model] [--input-range LO,HI]
        [--probe-samples N] [--seed S] [--out DIR] [--debug]

Steps: ``inspect`` (tf1.15, only without ``--origin``: the origin is inferred from the file's
``keras_version``; "2.2.4-tf" is ambiguous and maps to tf1.13), ``resave`` in the origin environment,
one ``parity`` cell per newer runtime (tf1.15 when the origin is tf1.13; tf2 with tf-keras; tf2 with
Keras 3), and for every ``mismatch`` the first-divergent-layer search (per-layer activations in the
origin and in that runtime, compared in layer order inside the runtime's environment).

Exit status: 0 when every cell matches; 1 when any cell is ``mismatch``, or ``load_error`` in tf1.15
or tf2 (tf-keras). A Keras 3 ``load_error`` alone does *not* fail the run: Keras 3 is documented not to
read every Keras 2 ``.h5`` (tf.keras 1.x configs), the toolkit's tf2 route is tf-keras or the frozen
graph, so that cell is reported honestly but is not a regression of the user's model. Any other failure
is a typed error with one paragraph (the failing step's own message) and exit status >= 2.

Per-layer activations (``activations_<env>.npz``) are deleted once compared, unless ``--debug``.

Run-folder safety: the run is built in a temporary sibling folder (``.<name>.partial-XXXX`` next to
``--out``) and swapped into place only when every step completed (a parity mismatch is a completed run
with a negative answer). A failed or interrupted run removes its temporary folder (kept with
``--debug`` for inspection) and leaves an existing ``--out`` untouched.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from converters import cli, errors, runfolder
from envs import backends, venvs
from envs import report as report_tables

ORIGINS = {"1.13": "tf1.13", "tf1.13": "tf1.13", "1.15": "tf1.15", "tf1.15": "tf1.15"}
INSPECT_ENV = "tf1.15"
# Cells whose load_error is informative, not a failure (see the module docstring).
LOAD_ERROR_TOLERATED = ("tf2-keras3",)


class Options(object):
    """What ``verify`` needs; the same names as the command-line options."""

    def __init__(self, model, origin=None, calib=None, preprocess=None, arch=None, custom_objects=None,
                 trust_model=False, out=None, debug=False, input_range=None, probe_samples=None, seed=None,
                 log=None):
        self.model = model
        self.origin = origin
        self.calib = calib
        self.preprocess = preprocess
        self.arch = arch
        self.custom_objects = custom_objects
        self.trust_model = trust_model
        self.out = out
        self.debug = debug
        self.input_range = input_range
        self.probe_samples = probe_samples
        self.seed = seed
        self.log = log


def cells_for(origin_env):
    """The parity cells to check for a model from ``origin_env``: (label, env, keras flavour)."""
    cells = []
    if origin_env == "tf1.13":
        cells.append(("tf1.15", "tf1.15", "auto"))
    cells.append(("tf2", "tf2", "tf_keras"))
    cells.append(("tf2-keras3", "tf2", "keras3"))
    return cells


def default_out(model):
    return os.path.join("runs", os.path.splitext(os.path.basename(model))[0])


class _Runner(object):
    """Runs in-environment steps, logs each to ``RUN/logs/<step>.log`` and turns failures into typed errors."""

    def __init__(self, run_dir, debug, log):
        self.run_dir = run_dir
        self.debug = debug
        self.log = log
        self.timings = []
        self.ensured = set()
        self.backend = backends.get_backend()  # local venvs, or --backend docker ($TFBRIDGE_BACKEND)

    def ensure(self, env):
        if env not in self.ensured:
            self.backend.prepare(env, log=self.log)
            self.ensured.add(env)

    def step(self, name, env, module, args, capture=False):
        self.ensure(env)
        logs = os.path.join(self.run_dir, "logs")
        if not os.path.isdir(logs):
            os.makedirs(logs)
        log_path = os.path.join(logs, "%s.log" % name)
        error_file = os.path.join(logs, "%s.error.json" % name)
        args = list(args) + (["--debug"] if self.debug else [])
        argv, environ = self.backend.command(env, module, args, backends.mounts_for(args),
                                             extra_env={"TFBRIDGE_ERROR_FILE": error_file})
        started = time.time()
        with open(log_path, "w") as log_file:
            log_file.write("$ %s\n" % " ".join(argv))
            log_file.flush()
            process = subprocess.Popen(argv, cwd=venvs.REPO_ROOT, env=environ, stdout=subprocess.PIPE,
                                       stderr=log_file, universal_newlines=True)
            try:
                stdout, _ = process.communicate()
            except BaseException:
                process.terminate()
                process.wait()
                raise
            log_file.write(stdout)
        seconds = round(time.time() - started, 2)
        self.timings.append({"step": name, "env": env, "seconds": seconds, "exit": process.returncode})
        self.log("  %-28s %-7s %6.1f s  %s" % (name, env, seconds, "ok" if process.returncode == 0 else
                                             "exit %d" % process.returncode))
        if process.returncode != 0:
            raise self._error(name, env, process.returncode, error_file, log_path)
        return stdout

    def _error(self, name, env, code, error_file, log_path):
        error = cli.read_step_error(error_file, default_step=name)
        if error is not None:
            return error
        tail = ""
        try:
            with open(log_path) as handle:
                lines = [line.rstrip() for line in handle if line.strip()]
            tail = lines[-1] if lines else ""
        except OSError:
            pass
        return errors.EnvironmentStepError(
            "step %s in environment %s exited with status %d without reporting an error (last line: %s)."
            % (name, env, code, tail[:300] or "none"), step=name,
            hint="The process crashed or was killed (out of memory?). Rerun with --debug to keep the "
                 "partial run folder and read its logs/%s.log." % name)


def check_origin(origin):
    """The environment name of ``--origin`` (None when not given); ``UsageError`` for an unknown one."""
    if not origin:
        return None
    env = ORIGINS.get(str(origin))
    if env is None:
        raise errors.UsageError(
            "--origin %r is not a TF version tfbridge has a legacy environment for." % origin, step="verify",
            hint="Give --origin 1.13 or --origin 1.15 (the TF version that saved the model), or leave it out "
                 "to infer it from the file; a model saved by TF 2.x is converted directly with "
                 "`nox -s convert -- MODEL`.")
    return env


def _resolve_origin(options, runner):
    if options.origin:
        return check_origin(options.origin), "given with --origin", None
    output = runner.step("inspect", INSPECT_ENV, "legacy_tf1", ["inspect", os.path.abspath(options.model)])
    try:
        info = json.loads(output.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise errors.EnvironmentStepError("inspect printed no JSON.", step="inspect")
    if not info.get("inferred_origin"):
        raise errors.UsageError("cannot infer the origin TF version: %s." % info.get("origin_reason"),
                                step="inspect", hint="Give --origin 1.13 or --origin 1.15.")
    return info["inferred_origin"], info.get("origin_reason"), info


def verify(options):
    """Run the parity check (see the module docstring) and return the report dict.

    ``options``: an ``Options`` or a dict of its keyword arguments (``model`` is required; ``log`` is a
    callable taking one line, default stderr).

    The report is also written to ``report.json`` / ``report.md`` in ``options.out``. Raises a
    ``TfbridgeError`` subclass when a step fails (the step's own paragraph); a parity mismatch is not an
    exception: see ``report["verdict"]`` ("pass" or "fail").
    """
    if isinstance(options, dict):
        options = Options(**options)
    log = options.log or (lambda message: sys.stderr.write(message + "\n"))
    model = options.model
    check_origin(options.origin)
    if not model or not os.path.isfile(model):
        raise errors.InputFileError("model file %s does not exist." % model, step="verify",
                                    hint="Give the path of a legacy Keras .h5 file.")
    for name, path in (("--custom-objects", options.custom_objects), ("--calib", options.calib)):
        if path and not os.path.exists(path):
            raise errors.InputFileError("%s %s does not exist." % (name, path), step="verify")
    out = os.path.abspath(options.out or default_out(model))
    parent = os.path.dirname(out)
    if not os.path.isdir(parent):
        os.makedirs(parent)
    temporary = tempfile.mkdtemp(prefix=".%s.partial-" % os.path.basename(out), dir=parent)
    succeeded = False
    started = time.time()
    try:
        report = _verify_into(options, temporary, log)
        report["run"] = out
        _write_report(temporary, report)
        _swap_into_place(temporary, out)
        succeeded = True
        report["seconds"] = round(time.time() - started, 2)
        return report
    finally:
        if not succeeded:
            if options.debug:
                log("tfbridge: the partial run folder is kept for inspection: %s" % temporary)
            else:
                shutil.rmtree(temporary, ignore_errors=True)


def _verify_into(options, run_dir, log):
    runner = _Runner(run_dir, options.debug, log)
    log("tfbridge verify_upgrade: %s" % options.model)
    origin_env, origin_reason, _ = _resolve_origin(options, runner)
    log("  origin: %s (%s)" % (origin_env, origin_reason))
    args = ["resave", os.path.abspath(options.model), "--out", run_dir, "--origin-env", origin_env]
    for flag, value in (("--arch", options.arch), ("--input-range", options.input_range),
                        ("--probe-samples", options.probe_samples), ("--seed", options.seed),
                        ("--calib", options.calib and os.path.abspath(options.calib)),
                        ("--preprocess", options.preprocess),
                        ("--custom-objects", options.custom_objects and os.path.abspath(options.custom_objects))):
        if value is not None:
            args += [flag, str(value)]
    if options.trust_model:
        args.append("--trust-model")
    runner.step("resave", origin_env, "legacy_tf1", args)
    manifest = runfolder.read_json(os.path.join(run_dir, runfolder.MANIFEST))

    cells = []
    origin_activations = False
    for label, env, flavour in cells_for(origin_env):
        runner.step("parity-%s" % label, env, "converters.shared.parity", [run_dir, "--label", label, "--keras", flavour])
        cell = runfolder.read_json(os.path.join(run_dir, runfolder.parity_name(label)))
        if cell.get("status") == "mismatch":
            if not origin_activations:
                runner.step("activations-%s" % origin_env, origin_env, "legacy_tf1",
                            ["activations", run_dir, "--label", origin_env])
                origin_activations = True
            runner.step("activations-%s" % label, env, "converters.shared.parity",
                        ["activations", run_dir, "--label", label, "--keras", flavour])
            runner.step("divergence-%s" % label, env, "converters.shared.parity",
                        ["divergence", run_dir, "--label", label, "--origin-label", origin_env])
            cell = runfolder.read_json(os.path.join(run_dir, runfolder.parity_name(label)))
            _drop_activations(run_dir, label, options.debug)
        cell["tolerated"] = cell.get("status") == "load_error" and label in LOAD_ERROR_TOLERATED
        cells.append(cell)

    if origin_activations:
        _drop_activations(run_dir, origin_env, options.debug)
    failing = [c["env"] for c in cells if c["status"] == "mismatch" or (c["status"] == "load_error" and not c["tolerated"])]
    model_info = dict(manifest["model"])
    return {
        "schema_version": runfolder.SCHEMA_VERSION,
        "model": model_info,
        "origin": manifest["origin"],
        "origin_reason": origin_reason,
        "probe": manifest.get("probe"),
        "parity": [_public_cell(cell) for cell in cells],
        "verdict": "fail" if failing else "pass",
        "failing": failing,
        "timings": runner.timings,
        "policy": "exit 1 on any mismatch, or load_error outside %s" % ", ".join(LOAD_ERROR_TOLERATED),
    }


def _drop_activations(run_dir, label, debug):
    # per-layer activations of a deep net are hundreds of MB; the verdict is in parity_<label>.json.
    # --debug keeps them for a closer look.
    if not debug:
        path = os.path.join(run_dir, "activations_%s.npz" % label)
        if os.path.exists(path):
            os.remove(path)


def verify_into(options, run_dir, log):
    """Run every verify step into ``run_dir`` (which the caller owns and swaps into place); return the
    report dict without writing it. For ``convert_legacy``, which converts in the same folder before
    anything is swapped in, so that a failed conversion leaves the previous run untouched."""
    return _verify_into(options, run_dir, log)


def run_step(name, env, module, args, log, run_dir):
    """Run one in-environment step as verify does (log in ``run_dir/logs``, typed error on failure);
    return its stdout."""
    return _Runner(run_dir, False, log).step(name, env, module, args)


def _public_cell(cell):
    keep = ("env", "runtime", "keras", "status", "max_abs", "max_rel", "cosine", "top1_agreement", "error",
            "error_class", "hint", "first_divergent_layer", "divergence", "tolerated", "warnings", "per_output",
            "tolerances", "timings")
    return dict((key, cell[key]) for key in keep if key in cell)


def _swap_into_place(temporary, out):
    # rename the old run aside first, so that at every instant either the old or the new run is complete
    old = None
    if os.path.exists(out):
        old = tempfile.mkdtemp(prefix=".%s.old-" % os.path.basename(out), dir=os.path.dirname(out))
        os.rmdir(old)
        os.rename(out, old)
    try:
        os.rename(temporary, out)
    except OSError:
        if old is not None:
            os.rename(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


swap_into_place = _swap_into_place


def _number(value, digits=3):
    if value is None:
        return "-"
    if isinstance(value, float):
        return "%.*g" % (digits, value)
    return str(value)


def matrix_rows(report):
    rows = [("env", "runtime", "status", "max_abs", "cosine", "top1", "note")]
    origin = report["origin"]
    rows.append((origin["env"], "tensorflow %s + %s %s" % (origin.get("tensorflow"), origin.get("keras_flavour"),
                                                        origin.get("keras")), "origin", "0", "1", "-", "reference"))
    for cell in report["parity"]:
        if cell.get("first_divergent_layer"):
            note = "first divergent layer: %s" % cell["first_divergent_layer"]
        elif cell.get("error"):
            note = cell["error"][:100] + (" (tolerated)" if cell.get("tolerated") else "")
        else:
            note = ""
        if cell.get("warnings"):
            note = (note + "; " if note else "") + "warning: saturated probe outputs"
        rows.append((cell["env"], cell.get("runtime", "-"), cell["status"], _number(cell.get("max_abs")),
                     _number(cell.get("cosine"), 7), _number(cell.get("top1_agreement")), note))
    return rows


def format_table(rows):
    """``rows[0]`` is the header (see ``matrix_rows``)."""
    return report_tables.format_table(rows[0], rows[1:])


def markdown(report):
    rows = matrix_rows(report)
    lines = ["# tfbridge verify_upgrade: %s" % os.path.basename(report["model"]["path"]), "",
             "- model: `%s` (sha256 `%s`)" % (report["model"]["path"], report["model"]["sha256"][:16]),
             "- origin: %s (%s)" % (report["origin"]["env"], report.get("origin_reason")),
             "- probe: %s" % json.dumps(report.get("probe"), sort_keys=True),
             "- verdict: **%s**" % report["verdict"], "",
             "| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    for row in rows[1:]:
        lines.append("| " + " | ".join(str(value).replace("|", "\\|") for value in row) + " |")
    lines += ["", "Tolerances: max_abs <= atol + rtol * max|ref| (atol 1e-4, rtol 1e-3), cosine >= 0.9999, "
              "top-1 agreement 100 % outside near-ties (see converters/metrics.py).",
              "", "Policy: %s." % report["policy"], "", "| step | env | seconds |", "|---|---|---|"]
    for timing in report["timings"]:
        lines.append("| %s | %s | %s |" % (timing["step"], timing["env"], timing["seconds"]))
    return "\n".join(lines) + "\n"


def _write_report(run_dir, report):
    runfolder.write_json(os.path.join(run_dir, "report.json"), report)
    runfolder.write_text(os.path.join(run_dir, "report.md"), markdown(report))


def _parser():
    parser = argparse.ArgumentParser(prog="python -m converters.verify",
                                     description="Re-save a legacy Keras model in its TF version and check its "
                                                 "outputs in newer TF versions.")
    parser.add_argument("model", help="legacy Keras .h5 (full model, or weights with --arch)")
    # validated in verify() (check_origin), so that a bad value is one paragraph, not a usage dump
    parser.add_argument("--origin", help="TF version that saved MODEL: 1.13 or 1.15 (default: inferred)")
    parser.add_argument("--calib", help="probe from these images instead of random data")
    parser.add_argument("--preprocess", help="preprocess preset for --calib (converters.shared.preprocess)")
    parser.add_argument("--arch", help="architecture for a weights-only file: JSON/YAML or module:function(...)")
    parser.add_argument("--custom-objects", help="FILE.py defining CUSTOM_OBJECTS or the custom layer classes")
    parser.add_argument("--trust-model", action="store_true", help="allow Lambda layers (runs code from the file)")
    parser.add_argument("--input-range", help="LO,HI of the random probe (default 0,255 for images, else -1,1)")
    parser.add_argument("--probe-samples", type=int, help="probe batch size (default 8)")
    parser.add_argument("--seed", type=int, help="probe seed (default 0)")
    parser.add_argument("--out", help="run folder (default runs/<model-stem>)")
    parser.add_argument("--backend", choices=("local", "docker"), default=None,
                        help="where the environment steps run (default local venvs)")
    parser.add_argument("--debug", action="store_true", help="tracebacks; keep a failed run's partial folder")
    return parser


def run(argv):
    args = _parser().parse_args(argv)
    backend = vars(args).pop("backend")
    if backend:
        os.environ["TFBRIDGE_BACKEND"] = backend
    report = verify(Options(**vars(args)))
    print(format_table(matrix_rows(report)))
    print("\nverdict: %s; report: %s" % (report["verdict"], os.path.join(report["run"], "report.md")))
    return 1 if report["verdict"] == "fail" else 0


if __name__ == "__main__":
    sys.exit(cli.main(run, step="verify"))
