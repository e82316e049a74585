"""``convert_legacy``: a legacy Keras model to a fully int8 TFLite model, with every check on the way.

For whom: ``nox -s convert_legacy -- [MODEL] [options]``. Host side, standard library only: the work runs
in the environments, step by step (``converters.verify`` for re-save and parity, ``converters.convert``
for the int8 conversion, its verification and the report)::

    python -m converters.pipeline [MODEL] [options]   (the options: converters/options.py, README.md)

Every option is checked before the demo is made or any environment step starts
(``converters.preflight.check``, then ``runfolder.check_out``); the ``.h5`` itself is read once, with
h5py alone, by ``verify.inspect_model`` before any step loads it.

With no MODEL it runs the embedded demo: a small face / non-face classifier is made and trained in tf1.13
on scikit-image's LFW faces (``python -m legacy_tf1 make-demo``), then goes through the whole job into
``runs/demo_face`` (``--preprocess unit``, as in its training). Its images come in three disjoint folders:
``train/`` (the model saw only these), ``calibration/`` (calibration samples and the probe, split by
tfbridge) and ``eval/`` (held-out, labelled: the demo runs ``--eval`` on it).

With ``--eval``, the float model's accuracy in its origin TF is measured right after the re-save (``python -m legacy_tf1 evaluate``, step ``eval-<origin>``), then the tf2 conversion step
measures the tf2 float and the int8 model on the same data (``converters.tf2.evaluate``).

Order of the work: the preflight read; then, side by side within ``--jobs`` (``verify.run_side_by_side``),
the re-save, the int8 conversion (it needs only the re-save's model, not its references until it checks
the int8 model; with ``--eval``, after the whole re-save and the origin's ``eval-<origin>`` step) and the
parity cells (the tf2 ones in one process: ``verify.together``). While the re-save runs, one more step than
``--jobs`` runs: the steps started beside it import TensorFlow, then wait for its files
(``runfolder.await_file``); a failed re-save stops them at once. Then the verdict on the cells
(``verify.finish_verify``: the divergence searches, the policy) and the report, which reads both.
``steps.json``'s ``steps`` lists every step with its start and end.

Skipping unchanged work: each run folder records, in ``steps.json``, a key per stage: ``verify`` (the
model's sha256, the architecture and custom-objects files, the probe options and data, the code of
tfbridge and the environment locks) and ``convert`` (the verify key plus the conversion options and the
calibration data). A rerun whose keys equal the recorded ones does nothing; one whose conversion options
changed reuses the re-saved model, the references and the parity cells. ``--force`` redoes everything.

Run-folder safety: ``--out`` is checked before any step, the demo's included (``runfolder.check_out``: a
non-empty folder tfbridge did not make, or one holding the model or data, is refused). The new run is
assembled in a temporary sibling folder and swapped into place only when every stage succeeded, carrying
over every file of the old run folder that tfbridge did not write (``runfolder.publish_run``); a failed or
interrupted run leaves an existing ``--out`` as it was, and its paragraph says so (naming only folders
that exist: with ``--debug`` the partial folder, and the failed conversion in its ``last_failure/``, are
kept and named).

Exit status: 0 when every parity cell and the int8 model match; 1 on a mismatch (the report says where);
2 and above for errors, each one paragraph (``--debug`` for the traceback).
"""

import errno
import hashlib
import json
import os
import shutil
import sys
import time

from converters import cli, convert, errors, options, preflight, preflight_model, runfolder, steps, verify
from envs import registry, venvs

STEPS_FILE = "steps.json"
VERIFY_REPORT = "verify.json"
DEMO_NAME = "demo_face"
CODE_DIRS = ("converters", "legacy_tf1", os.path.join("envs", "locks"))
# What the verify stage leaves in a run folder, reused as is when only conversion options changed.
VERIFY_OUTPUTS = ("manifest.json", "model.h5", "model.pb", "probe.npz", VERIFY_REPORT, "model.keras",
                  "migration.json")
VERIFY_PATTERNS = ("reference_", "parity_", "activations_")


def sha256_of(path):
    """sha256 of a file, or of a folder's files (relative names and contents, sorted)."""
    if path is None:
        return None
    if os.path.isfile(path):
        return runfolder.sha256_file(path)
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__pycache__")
        for name in sorted(files):
            if name.endswith(".pyc"):
                continue
            full = os.path.join(root, name)
            digest.update(os.path.relpath(full, path).encode("utf-8") + b"\0")
            digest.update(runfolder.sha256_file(full).encode("ascii"))
    return digest.hexdigest()


def code_fingerprint():
    """One hash of tfbridge's code and the environment locks: a change of either invalidates old runs."""
    digest = hashlib.sha256()
    for folder in CODE_DIRS:
        digest.update(folder.encode() + b"=" + sha256_of(os.path.join(venvs.REPO_ROOT, folder)).encode())
    return digest.hexdigest()


def stage_keys(args):
    """(verify key, convert key) of a run with these options (see the module docstring)."""
    code = code_fingerprint()
    calib = args.calib  # a path is hashed by content; "skimage" (built-in photos) stands for itself
    verify_inputs = {
        "model": model_key(args.model), "arch": args.arch, "origin": args.origin,
        "arch_file": sha256_of(args.arch) if args.arch and os.path.isfile(args.arch) else None,
        "custom_objects": sha256_of(args.custom_objects), "trust_model": bool(args.trust_model),
        "input_range": args.input_range, "probe_samples": args.probe_samples, "seed": args.seed,
        "calib": sha256_of(calib) if calib and os.path.exists(calib) else calib,
        "probe": _data_key(getattr(args, "probe", None)),
        "preprocess": args.preprocess, "code": code,
        "no_keras3": bool(getattr(args, "no_keras3", False)),
        # --tf, --bisect: more cells, each in an environment fixed by its lock (made on first use, under
        # $TFBRIDGE_HOME: not in the code key)
        "tf": getattr(args, "tf", None), "bisect": bool(getattr(args, "bisect", False)),
        "tf_locks": [sha256_of(venvs.lock_path(name)) if os.path.exists(venvs.lock_path(name)) else None
                     for name in registry.tf_environments(getattr(args, "tf", None))],
        # a TF 1.x graph's signature options (converters/options.py)
        "graph": [getattr(args, key, None) for key in ("inputs", "outputs", "tags", "signature")],
    }
    verify_key = _hash_json(verify_inputs)
    convert_inputs = {"verify": verify_key}
    for key in ("calib_samples", "io", "output_io", "per_tensor", "allow_float_ops", "strict_npu", "npu_target",
                "no_layer_debug"):
        convert_inputs[key] = getattr(args, key, None)
    convert_inputs["eval"] = _data_key(getattr(args, "eval", None))
    convert_inputs["eval_classes"] = _data_key(getattr(args, "eval_classes", None))
    return verify_key, _hash_json(convert_inputs)


def model_key(path):
    """The model by content: a file, a SavedModel folder, or a checkpoint's .meta / .index / .data-* files
    (given as its prefix, which is no file: ``converters.preflight_model.model_files``)."""
    if path and preflight_model.checkpoint_meta(path) and preflight_model.model_kind(path) == "checkpoint":
        digest = hashlib.sha256()
        for name in preflight_model.model_files(path):
            digest.update(os.path.basename(name).encode("utf-8") + b"\0" + sha256_of(name).encode("ascii"))
        return digest.hexdigest()
    return sha256_of(path)


def _data_key(path):
    """A data path by content (a file's or a folder's sha256); a name that is not a path stands for itself."""
    return sha256_of(path) if path and os.path.exists(path) else path


def _hash_json(data):
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode("utf-8")).hexdigest()


# The demo's calibration folder holds 50 images: 30 calibrate, 20 are the probe (disjoint, split by
# tfbridge); used unless --calib-samples / --probe-samples are given other values than the defaults.
DEMO_CALIB_SAMPLES = 30
DEMO_PROBE_SAMPLES = 20


def demo_source():
    """Where the demo model and its images are made (once): (folder, model, calibration folder)."""
    source = os.path.abspath(os.path.join("runs", ".demo-source"))
    return source, os.path.join(source, DEMO_NAME + ".h5"), os.path.join(source, "calibration")


def demo_sample_counts(args):
    """The demo's calibration and probe sizes (its calibration folder holds 50 images), where the
    defaults were left; before the preflight checks, which check the split with them."""
    if args.calib_samples == options.DEFAULT_CALIB_SAMPLES:
        args.calib_samples = DEMO_CALIB_SAMPLES
    if args.probe_samples is None and not getattr(args, "probe", None):
        args.probe_samples = DEMO_PROBE_SAMPLES


def prepare_demo(args, log):
    """Make (once) the demo model and its images in tf1.13; fill in the demo's options: calibration and
    probe from ``calibration/``, ``--eval`` on the held-out ``eval/`` (classes in output order from
    ``classes.txt``)."""
    source, model, calibration = demo_source()
    stamp = os.path.join(source, "made-by.json")
    demo_code = sha256_of(os.path.join(venvs.REPO_ROOT, "legacy_tf1", "demo.py"))
    made = runfolder.read_json(stamp) if os.path.exists(stamp) else {}
    if not os.path.exists(model) or made.get("demo_code") != demo_code:
        log("demo: training the face / non-face model in tf1.13 on scikit-image's LFW faces")
        os.makedirs(source, exist_ok=True)
        verify.run_step("make-demo", "tf1.13", "legacy_tf1", ["make-demo", "--out", source], log, source)
        runfolder.write_json(stamp, {"demo_code": demo_code})
    else:
        log("demo: reusing the demo model in %s" % source)
    args.model = model
    args.calib = args.calib or calibration
    if not getattr(args, "eval", None):
        args.eval = os.path.join(source, "eval")
        args.eval_classes = os.path.join(source, "classes.txt")
    args.preprocess = args.preprocess or "unit"  # as in its training: x / 255
    args.origin = args.origin or "1.13"


def convert_legacy(args, log):
    """Run the whole job (module docstring); return (report dict, exit status)."""
    if args.backend:
        os.environ["TFBRIDGE_BACKEND"] = args.backend
    # every option, before the demo is made or any environment step starts (converters/preflight.py)
    demo = args.model is None
    if demo:
        demo_sample_counts(args)
    values = options.values_of(args)
    preflight.check(options.CONVERT_LEGACY, values, demo=demo)
    for key in ("model", "calib", "arch", "custom_objects", "npu_target", "probe", "eval", "eval_classes"):
        setattr(args, key, values.get(key))
    if demo:
        args.out = args.out or os.path.join("runs", DEMO_NAME)
        runfolder.check_out(args.out, [demo_source()[0]] + runfolder.protected_inputs(args), step="convert_legacy")
        prepare_demo(args, log)
    out = runfolder.check_out(args.out or verify.default_out(args.model), runfolder.protected_inputs(args),
                              step="convert_legacy")
    runfolder.recover(out, log)  # what a killed run of this --out left beside it, before its steps.json is read
    verify_key, convert_key = stage_keys(args)
    recorded = _read_steps(out)
    if not args.force and recorded.get("convert") == convert_key and os.path.exists(os.path.join(out, "report.json")):
        log("convert_legacy: inputs, options and code unchanged since the last run; nothing to do (--force redoes it)")
        return _finish(out, skipped=["verify", "convert"])

    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    temporary = runfolder.partial_folder(out)
    succeeded = False
    skipped = []
    timings = {}
    try:
        started = time.time()
        stage_start = time.time()
        reuse = not args.force and recorded.get("verify") == verify_key and _copy_verify_outputs(out, temporary)
        if reuse:
            log("convert_legacy: model, probe and code unchanged: reusing the re-save and parity results")
            skipped.append("verify")
            verifying, runner, chains = None, steps.StepRunner(temporary, log=log, debug=bool(args.debug)), []
        else:
            opts = verify.Options(log=log, **dict(vars(args), out=out))
            verifying = verify.begin_verify(opts, temporary, log)
            runner, chains = verifying.runner, list(verifying.chains)
        timings["preflight"] = round(time.time() - stage_start, 2)
        # The conversion needs only the re-save's model: it runs side by side with the re-save's references and
        # the parity cells (started right after the re-save: it is the longest), and the report, which reads
        # the cells, after all of them. The steps that start beside the re-save import TensorFlow, then wait
        # for its model (runfolder.await_file).
        # A failed attempt is kept (in the partial folder's last_failure/) only when that folder is kept.
        conversion = convert.run_conversion(temporary, args, log=log, keep_failure=bool(args.debug), convert=False)
        conversion.runner.extra_env.update(runner.extra_env)  # it may start beside the re-save and wait for it
        resave = chains[0][0] if verifying is not None else None
        convert_steps = []

        def convert_chain(chain_runner):
            if getattr(args, "eval", None):
                if resave is not None:  # the origin's evaluation loads model.h5: after the whole re-save
                    resave.done.wait()
                    if resave.failed:
                        raise errors.Interrupted("not started: the re-save failed.", step="eval")
                convert_steps.extend(evaluate_origin(args, temporary, chain_runner.log, runner.prepared))
            conversion.convert(log=chain_runner.log)

        chains.append([convert_chain])
        stage_start = time.time()
        try:
            # the re-save, the conversion (the longest chain), the parity cells (longest first); the others
            # start beside the re-save and wait for its model (beside=1: one more chain at once meanwhile)
            first = [0, len(chains) - 1] + list(verifying.first[1:]) if verifying is not None else [len(chains) - 1]
            verify.run_side_by_side(runner, chains, verify.jobs_of(args), first=first,
                                    beside=1 if verifying is not None else 0)
        except errors.TfbridgeError as failure:
            if failure is not conversion.failure:  # a parity chain failed first (in chain order): as before
                conversion.discard()
                raise
        except BaseException:
            conversion.discard()
            raise
        timings["side_by_side"] = round(time.time() - stage_start, 2)
        stage_start = time.time()
        if verifying is not None:
            report = verify.finish_verify(verifying, opts)
            runfolder.write_json(os.path.join(temporary, VERIFY_REPORT), report)
        conversion.finish()  # the report (the parity cells' verdicts included), or the conversion's error
        timings["report"] = round(time.time() - stage_start, 2)
        timings["total"] = round(time.time() - started, 2)
        # every step with its start and end (epoch seconds): which ran side by side
        ran = (list(verifying.runner.timings) if verifying is not None else []) + convert_steps + \
            conversion.runner.timings
        runfolder.write_json(os.path.join(temporary, STEPS_FILE),
                             {"verify": verify_key, "convert": convert_key, "seconds": timings, "steps": ran})
        runfolder.publish_run(temporary, out, "convert_legacy")
        succeeded = True
        convert.set_run_dir(out)
    except errors.TfbridgeError as failure:
        if not args.debug:
            failure.hint = ((failure.hint or "") + " " + _left_as_it_was(out)).strip()
        raise
    except OSError as failure:  # a write of the host's own into the partial folder (e.g. publishing it)
        if not errors.says_no_space(str(failure)) and failure.errno != errno.ENOSPC:
            raise
        raise errors.disk_full(out, "%s: %s" % (type(failure).__name__, failure), step="convert_legacy",
                               left="" if args.debug else _left_as_it_was(out))
    except KeyboardInterrupt:  # SIGINT, or SIGTERM via converters.cli: say what was left
        raise errors.Interrupted(
            "interrupted; the running step was stopped and this run's partial folder removed; %s"
            % _left_as_it_was(out),
            step="convert_legacy", hint="Run the same command again to finish.")
    finally:
        if not succeeded:
            if args.debug and os.path.isdir(temporary):
                log("tfbridge: the partial run folder is kept for inspection: %s" % temporary)
            else:
                shutil.rmtree(temporary, ignore_errors=True)
    return _finish(out, skipped=skipped)


def evaluate_origin(args, run_dir, log, prepared=()):
    """The float model's accuracy on ``--eval`` in its origin TF (step ``eval-<origin>``): writes
    ``eval_<origin>.json`` / ``.npz`` into ``run_dir`` for the tf2 step to pair with (module docstring).
    Returns the step's timings."""
    origin = runfolder.read_json(os.path.join(run_dir, runfolder.MANIFEST))["origin"]["env"]
    arguments = ["evaluate", run_dir, "--eval", args.eval, "--label", origin]
    if getattr(args, "eval_classes", None):
        arguments += ["--eval-classes", args.eval_classes]
    if args.preprocess:
        arguments += ["--preprocess", args.preprocess]
    runner = steps.StepRunner(run_dir, log=log, debug=bool(args.debug),
                              user_paths=steps.user_paths(args.preprocess, args.arch))
    runner.prepared = set(prepared)  # environments made ready already (by the main thread)
    runner.step("eval-%s" % origin, origin, "legacy_tf1", arguments)
    return runner.timings


def _left_as_it_was(out):
    if os.path.exists(out):
        return "%s was left as it was before this run (nothing in it was replaced)." % out
    return "%s was not created." % out


def _read_steps(out):
    try:
        return runfolder.read_json(os.path.join(out, STEPS_FILE))
    except (OSError, ValueError):
        return {}


def _copy_verify_outputs(source, target):
    names = [name for name in os.listdir(source)
             if name in VERIFY_OUTPUTS or name.startswith(VERIFY_PATTERNS)]
    if VERIFY_REPORT not in names or "manifest.json" not in names:
        return False
    for name in names:
        full = os.path.join(source, name)
        if os.path.isfile(full):
            shutil.copy2(full, os.path.join(target, name))
    return True


def _finish(out, skipped):
    report = runfolder.read_json(os.path.join(out, "report.json"))
    verify_report = runfolder.read_json(os.path.join(out, VERIFY_REPORT))
    report["skipped_stages"] = skipped
    failing = list(verify_report.get("failing") or [])
    if convert.int8_failed(report):
        failing.append("int8 TFLite")
    status = 1 if failing else 0
    return report, verify_report, status, failing


def summary(out, report, verify_report, failing):
    """What the user reads at the end: the parity matrix, the int8 result, NPU readiness, where to look."""
    lines = [verify.format_table(verify.matrix_rows(verify_report)), ""]
    tflite, npu = report.get("tflite") or {}, report.get("npu") or {}
    lines.append("int8 TFLite: %s (input %s, output %s, %s bytes): centered SQNR %s dB, correlation %s, cosine %s, "
                 "top-1 agreement %s, max %s LSB, SQNR %s dB" % (
                     tflite.get("status"), tflite.get("input_dtype"), tflite.get("output_dtype"),
                     tflite.get("size_bytes"), _num(tflite.get("sqnr_centered_db"), 3),
                     _num(tflite.get("correlation"), 3), _num(tflite.get("cosine"), 5),
                     _num(tflite.get("top1_agreement"), 3), _num(tflite.get("max_abs_lsb"), 3),
                     _num(tflite.get("sqnr_db"), 3)))
    for reason in tflite.get("reasons") or []:
        lines.append("  int8 mismatch: %s" % reason)
    quantization = convert.quantization_summary(report)
    if quantization:
        lines.append(quantization)
    lines.append("NPU: %s%s" % (npu.get("verdict"), " (fully int8)" if npu.get("fully_int8") else
                                "; problems: " + "; ".join(str(p) for p in npu.get("problems") or [])))
    lines.append("verdict: %s" % ("FAIL: " + ", ".join(failing) if failing else "pass"))
    lines.append("report: %s" % os.path.join(out, "report.html"))
    return "\n".join(lines)


def _num(value, digits):
    return "-" if value is None else ("%.*g" % (digits, value) if isinstance(value, float) else str(value))


def run(argv):
    args = options.parse(options.CONVERT_LEGACY, argv)
    log = lambda message: sys.stderr.write(message + "\n")  # noqa: E731
    report, verify_report, status, failing = convert_legacy(args, log)
    out = os.path.abspath(args.out or verify.default_out(args.model))
    print(summary(out, report, verify_report, failing))
    cli.write_result(out, "fail" if status else "pass", failing)
    return status


if __name__ == "__main__":
    sys.exit(cli.main(run, step="convert_legacy"))
