"""Host orchestrator of the int8 conversion: a TF 2.x model straight to int8, or a filled legacy run folder.

For whom: users (``python -m converters.convert MODEL ...``, behind ``nox -s convert``) and the lead's
``convert_legacy``, which converts the run folder the re-save step filled side by side with the parity
cells (``run_conversion(..., convert=False)``, then ``Conversion.convert`` and ``Conversion.finish``; the
report, which reads the parity cells, once both are done); ``convert_run(run_dir, options)`` does it all
in one go. Standard library only: it never imports TensorFlow or numpy; the work runs in
the ``tf2`` environment as two subprocesses (``converters.tf2.tflite_convert``, then ``converters.tf2.report``).

Usage::

    python -m converters.convert MODEL [--calib PATH] [--preprocess NAME|module:function]
        [--calib-samples N] [--probe-samples N] [--seed S] [--io int8|uint8|float32]
        [--output-io int8|uint8|float32] [--per-tensor] [--allow-float-ops] [--strict-npu]
        [--no-layer-debug] [--trust-model] [--out DIR] [--debug]

MODEL: ``.h5`` (loaded with tf_keras), ``.keras`` (Keras 3) or a SavedModel folder. ``--calib`` is
required (image folder, image, ``.npy``/``.npz``, or ``skimage`` for the built-in sample photos: a demo,
not your data). The probe batch (``--probe-samples``, sized by ``converters.options.probe_size``) is
drawn from the same source with the same seed, and the float model's outputs on it in TF 2.x are the reference. ``--io`` sets the input type
and, unless ``--output-io`` is given, the output type: ``--io int8 --output-io float32`` keeps int8 camera
input and gives float scores. ``--strict-npu`` makes a model that is not fully int8 an error (``NotInt8Error``,
exit 10) after the report is written. Every option is declared in ``converters.options`` and checked by
``converters.preflight`` before the first step. Results go to ``--out`` (default ``runs/<model-stem>``).

Run-folder safety: ``--out`` is checked before any step (``runfolder.check_out``: a non-empty folder
tfbridge did not make, or one holding the model or data, is refused) and marked as a tfbridge run folder
(``runfolder.RUN_MARKER``, listing the files tfbridge wrote). The steps (``converters.steps.StepRunner``, in
the file-system box and without network where the OS allows it: ``sandbox.json`` says how) write into a
staging folder inside the run folder. On success its files replace tfbridge's old ones (each rename is atomic); files tfbridge did
not write are never touched. On failure nothing in the run folder is replaced: the failed attempt, with
a report that explains it, is kept in ``RUN/last_failure/``.
"""

import glob
import json
import os
import shutil
import sys
import tempfile
import time

from converters import cli, errors, options, preflight, preflight_data, runfolder, steps
from converters.errors import UsageError

ENV = "tf2"
SANDBOX_FILE = "sandbox.json"  # how the steps' network was cut off (StepRunner.sandbox), for the report
RESULT_FILES = ("manifest.json", "probe.npz", "reference_tf2.npz", "model_int8.tflite", "model_float.tflite",
                "tflite.json", "npu.json", "layers.json", "eval.json", "report.json", "report.md", "report.html", SANDBOX_FILE,
                # issue 22: the plain converter's file and the equalized float model; the last name is the
                # equalized model's parity cell of earlier versions (issue 30 moved its check into report.json's
                # quantization section), kept so that an old run folder's copy is treated as a result file
                "model_int8_plain.tflite", "model_float_cle.tflite", "parity_tflite-float-cle.json")
FAILURE_DIR = "last_failure"
REPORT_GO, REPORT_CANCELLED = ".report-go", ".report-cancelled"  # converters.tf2.report GO / CANCELLED


def step_arguments(values):
    """The ``converters.tf2.tflite_convert`` arguments for a dict/namespace of declared option values
    (``converters.options``: every option the step takes, defaults included)."""
    return options.step_argv(values, options.TFLITE)


def _runner(values, run_dir, log):
    get = values.get
    return steps.StepRunner(run_dir, log=log, user_paths=steps.user_paths(get("preprocess"), get("arch")))


def _stage(run_dir):
    return tempfile.mkdtemp(prefix=".stage-", dir=run_dir)


def _publish(stage, run_dir, names):
    """Move the staged results into the run folder (each rename atomic); return the relative paths moved."""
    moved = []
    for name in names:
        source = os.path.join(stage, name)
        if os.path.isfile(source):
            os.replace(source, os.path.join(run_dir, name))
            moved.append(name)
    logs = os.path.join(stage, "logs")
    if os.path.isdir(logs):
        os.makedirs(os.path.join(run_dir, "logs"), exist_ok=True)
        for name in sorted(os.listdir(logs)):
            os.replace(os.path.join(logs, name), os.path.join(run_dir, "logs", name))
            moved.append(os.path.join("logs", name))
    return moved


def _keep_failure(stage, run_dir):
    failure = os.path.join(run_dir, FAILURE_DIR)
    shutil.rmtree(failure, ignore_errors=True)
    os.replace(stage, failure)
    runfolder.add_to_marker(run_dir, "convert",
                            [os.path.join(FAILURE_DIR, name) for name in runfolder.files_in(failure)])
    return failure


def _convert_in_stage(run_dir, step_args, copied, log, runner, keep_failure=True, parity=False):
    """Run the step into a staging folder, report, then publish or keep the failure (module docstring).

    ``keep_failure=False`` (convert_legacy, whose run folder is itself temporary): a failed attempt is
    not kept and the error names no folder; the caller says what became of its ``--out``.
    """
    conversion = Conversion(run_dir, step_args, copied, runner, keep_failure=keep_failure, parity=parity)
    conversion.begin()
    _convert_or_discard(conversion)
    return conversion.finish()


def _convert_or_discard(conversion):
    try:
        conversion.convert()
    except errors.TfbridgeError:
        pass  # finish() reports it, keeps the attempt when asked, and raises it
    except BaseException:  # interrupted: nothing to report
        conversion.discard()
        raise


class Conversion(object):
    """The conversion of a run folder in three parts: ``begin`` (the staging folder), ``convert`` (the
    ``tflite_convert`` step) and ``finish`` (the report, then publish or keep the failure).
    ``convert_legacy`` runs ``convert`` side by side with the parity cells (it needs only the re-save's
    outputs) and ``finish`` once they are done: the report reads their ``parity_*.json``.

    ``parity``: copy the run folder's ``parity_*.json`` into the stage (at ``finish``) for the report.
    """

    def __init__(self, run_dir, step_args, copied, runner, keep_failure=True, parity=False):
        self.run_dir, self.step_args, self.copied = run_dir, step_args, list(copied)
        self.runner, self.keep_failure, self.parity = runner, keep_failure, parity
        self.stage = self.logs = self.failure = None
        self.early_report = None  # the report step started before the run's last steps end (issue 31)
        self.report_go = None

    def begin(self):
        self.runner.prepare(ENV)  # no engine, no image: refused before anything is written
        if not os.path.isdir(self.run_dir):
            os.makedirs(self.run_dir)
        if runfolder.read_marker(self.run_dir) is None:  # new, empty (check_out), or filled by the re-save step
            runfolder.write_marker(self.run_dir, "convert")
        self.stage = _stage(self.run_dir)
        self.logs = os.path.join(self.stage, "logs")
        try:
            runfolder.write_json(os.path.join(self.stage, SANDBOX_FILE), self.runner.sandbox)
        except BaseException:
            self.discard()
            raise

    def convert(self, log=None):
        """The conversion step; ``log``: where its step-table line goes (default the runner's own)."""
        own = self.runner.log
        if log is not None:
            self.runner.log = log
        try:
            self.runner.step("tflite_convert", ENV, "converters.tf2.tflite_convert", self.step_args(self.stage),
                             stream=True, logs=self.logs)
        except errors.TfbridgeError as failure:
            self.failure = failure
            raise
        finally:
            self.runner.log = own

    def start_report(self):
        """Start the report step now (``convert_legacy``: once the conversion is done, while parity cells
        may still run): it imports what it renders with, then waits for ``finish`` to say go
        (``converters.tf2.report --await-go``), so its start is off the run's critical path. Once only, and
        only after a successful conversion."""
        import threading

        if self.early_report is not None or self.failure is not None:
            return
        runner, stage = self.runner, self.stage
        runner.extra_env.setdefault(runfolder.AWAIT_ENV, "3600")  # the step waits for the go (else at once)
        holder = {"error": None}

        def report():
            try:
                runner.step("report", ENV, "converters.tf2.report", [stage, "--quiet", "--await-go"], stream=True,
                            logs=self.logs)
            except BaseException as error:  # noqa: BLE001 - handed to finish()
                holder["error"] = error

        thread = threading.Thread(target=report, name="report", daemon=True)
        thread.start()
        self.early_report = (thread, holder)

    def _end_early_report(self, go):
        """Say go (or cancel) to the early report and wait for it; returns its error or None."""
        if self.early_report is None:
            return None
        thread, holder = self.early_report
        self.early_report = None
        marker = REPORT_GO if go else REPORT_CANCELLED
        self.report_go = time.monotonic() if go else None  # the run's timeline: when the report could start
        try:
            runfolder.write_text(os.path.join(self.stage, marker), "%s\n" % marker)
        except OSError:
            pass
        thread.join()
        return holder["error"]

    def finish(self):
        """Report, then publish into the run folder (or keep the failed attempt and raise its error);
        return report.json's path."""
        runner, stage, run_dir = self.runner, self.stage, self.run_dir
        try:
            # copied now, not when begun: the re-save may have been writing them beside the conversion
            copied = [name for name in self.copied if os.path.exists(os.path.join(run_dir, name))]
            for name in copied:
                shutil.copy2(os.path.join(run_dir, name), os.path.join(stage, name))
            if self.parity:
                for path in sorted(glob.glob(os.path.join(run_dir, "parity_*.json"))):
                    shutil.copy2(path, os.path.join(stage, os.path.basename(path)))
                    copied.append(os.path.basename(path))
            failure = self.failure
            if failure is not None:
                self._end_early_report(go=False)
                if self.keep_failure:
                    if os.path.exists(os.path.join(stage, "manifest.json")):
                        try:
                            runner.step("report", ENV, "converters.tf2.report", [stage, "--quiet"], stream=True,
                                        logs=self.logs)
                        except errors.TfbridgeError:
                            pass  # the conversion error is the one to show
                    kept = _keep_failure(stage, run_dir)
                    if failure.kind == "npu":
                        note = "The converted model and its report are in %s." % kept
                    else:
                        note = "Nothing in %s was replaced; the failed attempt and its report are in %s." % (
                            run_dir, kept)
                    failure.hint = ((failure.hint or "") + " " + note).strip()
                raise failure
            if self.early_report is not None:  # started early: every result is in the stage now
                error = self._end_early_report(go=True)
                if error is not None:
                    raise error
            else:
                runner.step("report", ENV, "converters.tf2.report", [stage, "--quiet"], stream=True, logs=self.logs)
            compiled = sorted(n for n in os.listdir(stage) if n.startswith(runfolder.VELA_PREFIX))  # --npu-target
            published = _publish(stage, run_dir, [n for n in RESULT_FILES if n not in copied] + compiled)
            set_run_dir(run_dir)
            shutil.rmtree(os.path.join(run_dir, FAILURE_DIR), ignore_errors=True)
            runfolder.add_to_marker(run_dir, "convert", published)
        finally:
            self.discard()
        return os.path.join(run_dir, "report.json")

    def discard(self):
        self._end_early_report(go=False)
        if self.stage and os.path.isdir(self.stage):
            shutil.rmtree(self.stage, ignore_errors=True)


def set_run_dir(run_dir):
    """Record the run folder's final path in report.json (the report was written in a staging folder)."""
    path = os.path.join(run_dir, "report.json")
    if os.path.exists(path):
        report = runfolder.read_json(path)
        report["run_dir"] = os.path.abspath(run_dir)
        runfolder.write_json(path, report)


def convert_model(model, opts, out=None, log=None):
    """Convert a TF 2.x model (.h5, .keras, SavedModel folder) into run folder ``out``; return report.json.

    Raises the step's typed error (``ModelLoadError``, ``CalibrationDataError``, ``ConversionError``,
    ``NotInt8Error``...), with nothing of an earlier run in ``out`` replaced.
    """
    log = log or _stderr
    values = options.values_of(opts)
    values["model"] = model
    preflight.check(options.CONVERT, values)  # every option, before any environment step
    model = values["model"]
    stem = os.path.splitext(os.path.basename(os.path.normpath(model)))[0]
    run_dir = runfolder.check_out(out or os.path.join("runs", stem), runfolder.protected_inputs(values),
                                  step="convert")
    arguments = step_arguments(values)
    return _convert_in_stage(run_dir, lambda stage: [stage, "--model", model] + arguments, (), log,
                             _runner(values, run_dir, log))


def convert_run(run_dir, opts, log=None, keep_failure=True):
    """Convert a run folder filled by the legacy re-save step (manifest.json, model.pb / model.h5,
    probe.npz, reference_<origin>.npz, parity_*.json) and write the report; return report.json's path.

    ``opts``: a dict or argparse namespace of declared option values (``converters.options``).
    Without ``calib`` the probe's own image source is used when the manifest names one.
    ``keep_failure``: keep a failed attempt in ``RUN/last_failure`` (see ``_convert_in_stage``).
    """
    return run_conversion(run_dir, opts, log=log, keep_failure=keep_failure).finish()


def run_conversion(run_dir, opts, log=None, keep_failure=True, convert=True):
    """``convert_run`` up to its report: a ``Conversion`` begun (and, with ``convert``, converted: its error
    is kept for ``finish``). ``convert_legacy`` begins it with ``convert=False`` and runs ``convert`` side
    by side with the parity cells."""
    log = log or _stderr
    run_dir = os.path.abspath(run_dir)
    # convert_legacy (convert=False): the re-save may still be writing it; its step waits (runfolder.await_file)
    if convert and not os.path.exists(os.path.join(run_dir, "manifest.json")):
        raise errors.InputFileError("%s has no manifest.json." % run_dir, step="convert",
                                    hint="Run the re-save step (convert_legacy) into this folder first.")
    values = options.values_of(opts)
    for key in ("calib", "probe", "eval", "eval_classes"):  # the step runs in the repository folder
        if values.get(key) and values[key] != preflight_data.BUILTIN_SKIMAGE:
            values[key] = os.path.abspath(values[key])
    arguments = step_arguments(values)
    conversion = Conversion(run_dir, lambda stage: [run_dir, "--out", stage] + arguments, ["manifest.json"],
                            _runner(values, run_dir, log), keep_failure=keep_failure, parity=True)
    conversion.begin()
    if convert:
        _convert_or_discard(conversion)
    return conversion


def _stderr(message):
    sys.stderr.write(message + "\n")


def quantization_summary(report):
    """One line on how the int8 model was made (``--quantize``, issue 22), or None."""
    section = report.get("quantization")
    if not section:
        return None
    line = "quantization: %s (%s)" % (section.get("chosen"), section.get("why"))
    plain = section.get("plain_probe")
    if plain and section.get("chosen") != "plain":
        line += "; on the probe plain %s gives SQNR %s dB, top-1 agreement %s" % (
            section.get("plain_path"), "%.1f" % plain["sqnr_db"] if plain.get("sqnr_db") is not None else "-",
            plain.get("top1_agreement"))
    cle = (section.get("cle") or {}).get("probe_check")
    if cle:
        line += "; equalized float model vs origin: %s (max |diff| %.3g)" % (cle.get("status"), cle.get("max_abs") or 0.0)
    seconds = (section.get("timings") or {}).get("total")
    if seconds is not None and len(section.get("candidates") or []) > 1:
        line += "; the search took %.0f s (--quantize plain skips it)" % seconds
    return line


def int8_failed(report):
    """True when the int8 file does not match the float model on the probe (``tflite.status``; README's exit
    table: 1, as a parity mismatch). A quantization candidate's own checks never fail a run."""
    status = (report.get("tflite") or {}).get("status")
    return status not in (None, "match")


def run(argv):
    args = options.parse(options.CONVERT, argv)
    if args.backend:
        os.environ["TFBRIDGE_BACKEND"] = args.backend
    report_path = convert_model(args.model, args, out=args.out)
    with open(report_path) as stream:
        report = json.load(stream)
    tflite, npu = report.get("tflite") or {}, report.get("npu") or {}
    sys.stdout.write(
        "int8 model: %s\n  %s vs float: centered SQNR %s dB, correlation %s, cosine %.5f, top-1 %s, max %s LSB; "
        "NPU: %s\n  report: %s\n" % (
            os.path.join(os.path.dirname(report_path), "model_int8.tflite"), tflite.get("status"),
            "%.1f" % tflite["sqnr_centered_db"] if tflite.get("sqnr_centered_db") is not None else "-",
            "%.3f" % tflite["correlation"] if tflite.get("correlation") is not None else "-",
            tflite.get("cosine") or 0.0, tflite.get("top1_agreement"),
            "%.2f" % tflite["max_abs_lsb"] if tflite.get("max_abs_lsb") is not None else "-",
            npu.get("verdict"), os.path.join(os.path.dirname(report_path), "report.html")))
    for reason in tflite.get("reasons") or []:
        sys.stdout.write("  int8 mismatch: %s\n" % reason)
    line = quantization_summary(report)
    if line:
        sys.stdout.write("  %s\n" % line)
    failed = int8_failed(report)
    cli.write_result(os.path.dirname(report_path), "fail" if failed else "pass", ["int8 TFLite"] if failed else [])
    return 1 if failed else 0


if __name__ == "__main__":
    from converters.cli import main

    sys.exit(main(run, step="convert"))
