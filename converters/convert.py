"""Host orchestrator of the int8 conversion: a TF 2.x model straight to int8, or a filled legacy run folder.

For whom: users (``python -m converters.convert MODEL ...``, behind ``nox -s convert``) and the lead's
``convert_legacy``, which calls ``convert_run(run_dir, options)`` once the re-save / parity steps have
filled the run folder. Standard library only: it never imports TensorFlow or numpy; the work runs in
the ``tf2`` environment as two subprocesses (``converters.tf2.tflite_convert``, then ``converters.tf2.report``).

Usage::

    python -m converters.convert MODEL [--calib PATH] [--preprocess NAME|module:function]
        [--calib-samples N] [--probe-samples N] [--seed S] [--io int8|uint8|float32]
        [--output-io int8|uint8|float32] [--per-tensor] [--allow-float-ops] [--strict-npu]
        [--no-layer-debug] [--trust-model] [--out DIR] [--debug]

MODEL: ``.h5`` (loaded with tf_keras), ``.keras`` (Keras 3) or a SavedModel folder. ``--calib`` is
required (image folder, image, ``.npy``/``.npz``, or ``skimage`` for the built-in sample photos: a demo,
not your data). The probe batch (``--probe-samples``, default 16) is drawn from the same source with the
same seed, and the float model's outputs on it in TF 2.x are the reference. ``--io`` sets the input type
and, unless ``--output-io`` is given, the output type: ``--io int8 --output-io float32`` keeps int8 camera
input and gives float scores. ``--strict-npu`` makes a model that is not fully int8 an error (exit 2)
after the report is written. Results go to ``--out`` (default ``runs/<model-stem>``).

Run-folder safety: the step writes into a staging folder inside the run folder. On success its files
replace the old ones (each rename is atomic). On failure nothing in the run folder is replaced: the
failed attempt, with a report that explains it, is kept in ``RUN/last_failure/``.
"""

import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

from converters import cli, errors
from converters.errors import EnvironmentStepError, UsageError
from envs.venvs import REPO_ROOT

ENV = "tf2"
DEFAULT_CALIB_SAMPLES = 200  # == converters.shared.calibration.DEFAULT_CALIB_SAMPLES (no numpy import here)
DEFAULT_PROBE_SAMPLES = 16
RESULT_FILES = ("manifest.json", "probe.npz", "reference_tf2.npz", "model_int8.tflite", "model_float.tflite",
                "tflite.json", "npu.json", "layers.json", "report.json", "report.md", "report.html")
FAILURE_DIR = "last_failure"
IO_CHOICES = ("int8", "uint8", "float32")


def add_options(parser):
    """The conversion options shared by ``convert`` and ``convert_legacy`` (the lead's nox session)."""
    parser.add_argument("--calib", help="calibration data: image folder, image, .npy/.npz, or 'skimage'")
    parser.add_argument("--preprocess", default=None,
                        help="raw|unit|tf|caffe|vggface1|vggface2|torch|module:function")
    parser.add_argument("--calib-samples", type=int, default=DEFAULT_CALIB_SAMPLES,
                        help="calibration samples (default %d)" % DEFAULT_CALIB_SAMPLES)
    parser.add_argument("--probe-samples", type=int, default=DEFAULT_PROBE_SAMPLES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--io", choices=IO_CHOICES, default="int8", help="input type (default int8)")
    parser.add_argument("--output-io", choices=IO_CHOICES, default=None, help="output type (default: --io)")
    parser.add_argument("--per-tensor", action="store_true", help="one weight scale per tensor")
    parser.add_argument("--allow-float-ops", action="store_true",
                        help="keep ops without an int8 kernel in float instead of failing")
    parser.add_argument("--strict-npu", action="store_true", help="fail unless the model is fully int8")
    parser.add_argument("--no-layer-debug", action="store_true", help="skip the per-layer error analysis")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")


def step_arguments(options):
    """The ``converters.tf2.tflite_convert`` arguments for an options dict/namespace."""
    get = options.get if isinstance(options, dict) else (lambda key, default=None: getattr(options, key, default))
    arguments = []
    for key in ("calib", "preprocess", "calib_samples", "probe_samples", "seed", "io", "output_io"):
        value = get(key)
        if value is not None:
            arguments += ["--" + key.replace("_", "-"), str(value)]
    for key in ("per_tensor", "allow_float_ops", "strict_npu", "no_layer_debug", "trust_model", "debug"):
        if get(key):
            arguments.append("--" + key.replace("_", "-"))
    calib_samples = get("calib_samples")
    if calib_samples is not None and int(calib_samples) < 1:
        raise UsageError("--calib-samples must be at least 1.", step="convert")
    return arguments


def _run_in_env(module, arguments, log):
    """Run ``python -m module arguments`` in tf2; a failure becomes the step's own typed error."""
    from envs import backends, venvs

    backend = backends.get_backend()  # local venvs, or --backend docker ($TFBRIDGE_BACKEND)
    backend.prepare(ENV, log=log)
    handle, error_file = tempfile.mkstemp(prefix="tfbridge-error-", suffix=".json")
    os.close(handle)
    os.remove(error_file)
    argv, environ = backend.command(ENV, module, arguments, backends.mounts_for(arguments),
                                    extra_env={"TFBRIDGE_ERROR_FILE": error_file})
    # --preprocess module:function names the user's own module, usually next to where they run us
    environ["PYTHONPATH"] = environ.get("PYTHONPATH", "") + os.pathsep + os.getcwd()
    code = _call_quietly(argv, environ)
    if code == 0:
        return
    error = cli.read_step_error(error_file)
    if os.path.exists(error_file):
        os.remove(error_file)
    if error is None:
        raise EnvironmentStepError(
            "python -m %s in %s exited with code %d without reporting an error (crash, killed, out of memory)."
            % (module, ENV, code), step=module.rsplit(".", 1)[-1],
            hint="Rerun with --debug; check memory (ResNet50 conversion needs ~3 GB).")
    raise error


# TensorFlow's C++ start-up chatter (absl logging before InitializeLog, oneDNN, CUDA probing, CPU features,
# the MLIR converter's summary lines): not for the user, and no environment variable silences it in TF 2.21.
_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog|[IWE]\d{4} [\d:.]+ +\d+ \S+:\d+\] "
    r"|To enable the following instructions|fully_quantize: |INFO: Created TensorFlow Lite XNNPACK)")


def _call_quietly(argv, environ):
    """Run a step with its stdout and stderr streamed to ours, less TensorFlow's C++ start-up lines.

    Splits on both newlines and carriage returns so that progress bars still move as they are drawn.
    """
    process = subprocess.Popen(argv, cwd=REPO_ROOT, env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    pending = b""
    try:
        while True:
            chunk = os.read(process.stdout.fileno(), 4096)
            if not chunk:
                break
            pending += chunk
            while True:
                cut = max(pending.rfind(b"\n"), pending.rfind(b"\r"))
                if cut < 0:
                    break
                text, pending = pending[:cut + 1], pending[cut + 1:]
                for piece in re.split(rb"(?<=[\r\n])", text):
                    if piece and not _NOISE.match(piece.decode("utf-8", "replace")):
                        sys.stderr.buffer.write(piece)
                sys.stderr.flush()
        if pending:
            sys.stderr.buffer.write(pending)
        return process.wait()
    except BaseException:
        process.terminate()
        process.wait()
        raise


def _stage(run_dir):
    os.makedirs(run_dir, exist_ok=True)
    return tempfile.mkdtemp(prefix=".stage-", dir=run_dir)


def _publish(stage, run_dir, names):
    for name in names:
        source = os.path.join(stage, name)
        if os.path.exists(source):
            os.replace(source, os.path.join(run_dir, name))


def _keep_failure(stage, run_dir):
    failure = os.path.join(run_dir, FAILURE_DIR)
    shutil.rmtree(failure, ignore_errors=True)
    os.replace(stage, failure)
    return failure


def _convert_in_stage(run_dir, step_args, copied, log):
    """Run the step into a staging folder, report, then publish or keep the failure (module docstring)."""
    stage = _stage(run_dir)
    try:
        for name in copied:
            shutil.copy2(os.path.join(run_dir, name), os.path.join(stage, name))
        try:
            _run_in_env("converters.tf2.tflite_convert", step_args(stage), log)
        except errors.TfbridgeError as failure:
            if os.path.exists(os.path.join(stage, "manifest.json")):
                try:
                    _run_in_env("converters.tf2.report", [stage, "--quiet"], log)
                except errors.TfbridgeError:
                    pass  # the conversion error is the one to show
            kept = _keep_failure(stage, run_dir)
            if failure.kind == "npu":
                note = "The converted model and its report are in %s." % kept
            else:
                note = "Nothing in %s was replaced; the failed attempt and its report are in %s." % (run_dir, kept)
            failure.hint = ((failure.hint or "") + " " + note).strip()
            raise
        _run_in_env("converters.tf2.report", [stage, "--quiet"], log)
        _publish(stage, run_dir, [n for n in RESULT_FILES if n not in copied])
        set_run_dir(run_dir)
        shutil.rmtree(os.path.join(run_dir, FAILURE_DIR), ignore_errors=True)
    finally:
        if os.path.isdir(stage):
            shutil.rmtree(stage, ignore_errors=True)
    return os.path.join(run_dir, "report.json")


def set_run_dir(run_dir):
    """Record the run folder's final path in report.json (the report was written in a staging folder)."""
    path = os.path.join(run_dir, "report.json")
    if os.path.exists(path):
        from converters import runfolder

        report = runfolder.read_json(path)
        report["run_dir"] = os.path.abspath(run_dir)
        runfolder.write_json(path, report)


def convert_model(model, options, out=None, log=None):
    """Convert a TF 2.x model (.h5, .keras, SavedModel folder) into run folder ``out``; return report.json.

    Raises the step's typed error (``ModelLoadError``, ``CalibrationDataError``, ``ConversionError``,
    ``NotInt8Error``...), with nothing of an earlier run in ``out`` replaced.
    """
    log = log or _stderr
    if not os.path.exists(model):
        raise errors.InputFileError("%s does not exist." % model, step="convert")
    get = options.get if isinstance(options, dict) else (lambda key, default=None: getattr(options, key, default))
    if not get("calib"):
        raise UsageError("no calibration data (--calib).", step="calibrate",
                         hint="Give --calib with a folder of representative images (and --preprocess as in "
                              "training), an .npy file, or 'skimage' for the built-in sample photos (a demo).")
    stem = os.path.splitext(os.path.basename(os.path.normpath(model)))[0]
    run_dir = os.path.abspath(out or os.path.join("runs", stem))
    arguments = step_arguments(options)
    model = os.path.abspath(model)
    calib = get("calib")
    if calib and calib != "skimage":
        arguments[arguments.index("--calib") + 1] = os.path.abspath(calib)
    return _convert_in_stage(run_dir, lambda stage: [stage, "--model", model] + arguments, (), log)


def convert_run(run_dir, options, log=None):
    """Convert a run folder filled by the legacy re-save step (manifest.json, model.pb / model.h5,
    probe.npz, reference_<origin>.npz, parity_*.json) and write the report; return report.json's path.

    ``options``: a dict or argparse namespace with the keys of ``add_options`` (calib, preprocess, io, ...).
    Without ``calib`` the probe's own image source is used when the manifest names one.
    """
    log = log or _stderr
    run_dir = os.path.abspath(run_dir)
    if not os.path.exists(os.path.join(run_dir, "manifest.json")):
        raise errors.InputFileError("%s has no manifest.json." % run_dir, step="convert",
                                    hint="Run the re-save step (convert_legacy) into this folder first.")
    arguments = step_arguments(options)
    if "--calib" in arguments:
        index = arguments.index("--calib") + 1
        if arguments[index] != "skimage":
            arguments[index] = os.path.abspath(arguments[index])
    copied = ["manifest.json"] + [os.path.basename(p) for p in glob.glob(os.path.join(run_dir, "parity_*.json"))]
    return _convert_in_stage(run_dir, lambda stage: [run_dir, "--out", stage] + arguments, copied, log)


def _stderr(message):
    sys.stderr.write(message + "\n")


def run(argv):
    parser = argparse.ArgumentParser(
        prog="python -m converters.convert",
        description="Convert a TF 2.x model (.h5, .keras, SavedModel folder) to full-int8 TFLite, "
                    "check it against the float model, assess NPU readiness and write the report.")
    parser.add_argument("model")
    parser.add_argument("--out", default=None, help="run folder (default runs/<model-stem>)")
    # not in add_options: convert_legacy declares its own --trust-model (for the re-save step); a
    # trust_model attribute in the options is forwarded to the step either way
    parser.add_argument("--trust-model", action="store_true",
                        help="allow Lambda layers in .h5/.keras files (loading them runs code in the file)")
    add_options(parser)
    args = parser.parse_args(argv)
    report_path = convert_model(args.model, args, out=args.out)
    with open(report_path) as stream:
        report = json.load(stream)
    tflite, npu = report.get("tflite") or {}, report.get("npu") or {}
    sys.stdout.write(
        "int8 model: %s\n  %s vs float: cosine %.5f, top-1 %s, max %s LSB; NPU: %s\n  report: %s\n" % (
            os.path.join(os.path.dirname(report_path), "model_int8.tflite"), tflite.get("status"),
            tflite.get("cosine") or 0.0, tflite.get("top1_agreement"),
            "%.2f" % tflite["max_abs_lsb"] if tflite.get("max_abs_lsb") is not None else "-",
            npu.get("verdict"), os.path.join(os.path.dirname(report_path), "report.html")))
    return 0


if __name__ == "__main__":
    from converters.cli import main

    sys.exit(main(run, step="convert"))
