"""The int8 conversion step (command line): ``python -m converters.tf2.tflite_convert RUN_DIR [...]``.

For whom: ``converters.convert`` (host), which runs it in the ``tf2`` environment for a TF 2.x model or a
run folder filled by the legacy re-save step; tf2 environment only. A thin entry: it parses the options
(``_parser``) and calls the pieces, each in its own module:

- ``converters.tf2.sources``: loading each kind of source (and the Lambda gate);
- ``converters.tf2.prepare``: the probe and float reference (a TF 2.x model's run folder is written here);
- ``converters.tf2.quantize``: configuring and running the converter, checking the written file;
- ``converters.tf2.tflite_run``, ``converters.tf2.npu``, ``converters.tf2.quant_debug``: measuring it.

What can go wrong: every error of those modules, raised as the typed errors of ``converters.errors``;
a failed conversion still writes tflite.json (and npu.json when the file was rejected) explaining it.
"""

import os
import sys
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # tf.keras = Keras 2 (tf_keras): legacy .h5 need it
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from converters import runfolder  # noqa: E402
from converters.errors import CalibrationDataError, ConversionError  # noqa: E402
from converters.shared import keras_compat  # noqa: E402

STEP_HELP = """Convert a model to full-int8 TFLite inside the tf2 environment and measure it (one run folder).

  python -m converters.tf2.tflite_convert RUN_DIR --model MODEL [options]   a TF 2.x model: writes
        manifest.json, probe.npz and reference_tf2.npz (float outputs in TF 2.x) first
  python -m converters.tf2.tflite_convert RUN_DIR [options]                 a run folder already filled by
        the legacy re-save step (manifest.json with model.frozen_graph, probe.npz, reference_<origin>.npz)

Writes model_int8.tflite, model_float.tflite, tflite.json, npu.json, layers.json (atomically).
Usually called by `python -m converters.convert` (host), not by hand.
"""


def _parser():
    """The step's command line: its own plumbing (RUN_DIR, --model, --out) and the user options the host
    forwards to it, declared once in ``converters.options`` (same names, types and defaults)."""
    import argparse

    from converters import options

    parser = argparse.ArgumentParser(prog="python -m converters.tf2.tflite_convert", description=STEP_HELP,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir")
    parser.add_argument("--model", help="a TF 2.x model (.h5, .keras, SavedModel folder)")
    parser.add_argument("--out", help="write the results here instead of RUN_DIR (the host stages them)")
    options.add_step_options(parser, options.TFLITE)
    return parser


def run_step(argv):
    """The in-environment conversion step (see STEP_HELP); returns the exit code."""
    from converters.shared.phases import Phases, now

    imports = now()  # the imports below load TensorFlow (converters.tf2.quantize): a phase of the timeline
    from converters.shared import calibration
    from converters.tf2 import beside, npu, prepare, quant_debug, quantize, sources, tflite_run

    args = _parser().parse_args(argv)
    run_dir = os.path.abspath(args.run_dir)
    out_dir = os.path.abspath(args.out or args.run_dir)
    os.makedirs(out_dir, exist_ok=True)
    options = quantize.ConversionOptions(io=args.io, output_io=args.output_io, per_tensor=args.per_tensor,
                                         allow_float_ops=args.allow_float_ops,
                                         jobs=getattr(args, "jobs", None),  # issue 13: calibration shards
                                         quantize=args.quantize)  # issue 22: accuracy recovery
    timings = {}
    phases = Phases()  # the run's timeline (converters.timeline): every phase on the monotonic clock
    phases.add("import TensorFlow", imports)
    if not args.model:  # started beside the re-save: TensorFlow imported while it writes the model
        mono = now()
        runfolder.await_file(run_dir, runfolder.MANIFEST, before=keras_compat.import_tensorflow)
        phases.add("wait for the re-saved model", mono, waits_on="resave")
    with sources.scratch_dir() as workdir:
        started = window = time.perf_counter()  # window: model on disk -> int8 file written (bench/run.py)
        mono = now()
        source = sources.load_source(args.model if args.model else run_dir, workdir, trust_model=args.trust_model)
        timings["load"] = round(time.perf_counter() - started, 2)
        phases.add("load model", mono)
        mono = now()
        if args.model:
            prepared = prepare.for_tf2_model(out_dir, args.model, source, args.calib, args.preprocess,
                                             args.probe_samples, args.seed, probe=args.probe)
        else:
            prepared = prepare.from_run_folder(run_dir, args.calib, args.preprocess)
        timings.update(prepared.timings)
        inputs = model_inputs(run_dir, source, bool(args.model))
        phases.add("probe" if not args.model else "probe and float references", mono)

        def calibration_data(samples, progress):
            # never a probe sample: the probe's tail of a shared source is left out, and any sample equal
            # to a probe sample by content is skipped (converters.shared.calibration); a model of several
            # inputs gets one array per input (an .npz with one array per input name)
            return calibration.make_source(
                prepared.calib, inputs, prepared.preprocess, samples,
                prepared.calib_seed if prepared.reserve_probe else args.seed, batch_first=True, progress=progress,
                reserve_probe=prepared.reserve_probe, exclude=prepared.probe_keys)

        calib = calibration_data(args.calib_samples, True)
        if calib.shortfall():
            sys.stderr.write("note: %s\n" % calib.shortfall())
        data_errors = []

        def representative_dataset():
            # the converter wraps what its data set raises in its own error: keep ours, to report it as is
            try:
                for sample in calib.representative_dataset()():
                    yield sample
            except CalibrationDataError as exc:
                data_errors.append(exc)
                raise

        started = time.perf_counter()
        convert_mono = now()
        tflite_path = os.path.join(out_dir, runfolder.TFLITE)
        try:
            # issue 13: the calibrated model and the first calibration samples, reused by the layer debugger
            artifacts = {"keep_samples": 0 if args.no_layer_debug else quant_debug.DEFAULT_DEBUG_SAMPLES,
                         "defer_report": True}
            if args.eval:  # issue 22: every candidate's file, for its --eval top-1 in the ablation table
                artifacts["candidates_dir"] = os.path.join(workdir, "candidates")
                os.makedirs(artifacts["candidates_dir"], exist_ok=True)
            result, used = quantize.convert(source, tflite_path, representative_dataset, options,
                                            float_output_path=os.path.join(out_dir, "model_float.tflite"),
                                            artifacts=artifacts)
        except ConversionError as error:
            _write_failure(out_dir, data_errors[0] if data_errors else error, options, timings, calib,
                           args.strict_npu)
            if data_errors:  # bad calibration data, not a converter failure (exit 8, step "calibrate")
                raise data_errors[0] from error
            raise
        _add_conversion_phases(phases, convert_mono, artifacts.get("phases"))
        # issue 31: the layer debugger is only for the report: it runs in a thread beside the probe's evaluation,
        # the quantization checks and --eval (its interpreter, LiteRT's and a subprocess wait release the GIL)
        # a chosen candidate that edits the int8 file's values (bias, ebias, gptq): the debugger is given them
        chosen = (result.get("quantization") or {}).get("chosen") or "plain"
        edits = set(chosen.split("+")) & {"bias", "ebias", "gptq"}
        debugger = None if args.no_layer_debug else beside.Beside(
            "layer debugger", _layer_debugger, artifacts, calibration_data, used, options, bool(edits), phases=phases)
        # --npu-target: Vela (a process per Ethos-U target) and the VX op table for imx8mp, beside them too
        targets = beside.Beside("NPU targets", npu.assess_targets, tflite_path, args.npu_target, out_dir, phases=phases)
        # the search's figures only the report reads (float-side checks, per-layer errors of plain and chosen)
        # are computed in a thread started when the candidate was chosen (beside.Background)
        figures = artifacts.pop("report_work", None)
        try:  # a failure below waits for the thread: TensorFlow must not be torn down under it
            data = data_section(calib, prepared)
            timings["convert"] = round(time.perf_counter() - started, 2)
            timings["model_to_int8"] = round(time.perf_counter() - window, 2)
            timings["convert_int8"] = result["seconds"]
            if "float_seconds" in result:
                timings["convert_float"] = result["float_seconds"]
            mono = now()
            prepared.reference_outputs()  # a conversion started beside the re-save may wait for them here
            phases.add("wait for the references", mono, waits_on="resave")
            started = time.perf_counter()
            mono = now()
            result.update(tflite_run.evaluate(tflite_path, prepared.probe, prepared.reference_outputs(),
                                              input_names=[name for name, _ in inputs]))
            timings["evaluate"] = round(time.perf_counter() - started, 2)
            phases.add("evaluate int8 on the probe", mono)
            if result.get("quantization"):  # issue 22: the plain file on the same probe; the equalized float model
                started = time.perf_counter()
                mono = now()
                recovery_checks(out_dir, result["quantization"], prepared, [name for name, _ in inputs],
                                args.parity_samples)
                timings["quantization_checks"] = round(time.perf_counter() - started, 2)
                phases.add("quantization checks", mono)
            result["reference_env"] = prepared.origin
            result["calibration"] = calib.describe()
            result["data"] = data
            readiness = result.pop("npu")
            readiness["strict"] = args.strict_npu
            mono = now()
            readiness["targets"] = targets.result()
            timings["npu_targets"] = targets.seconds
            phases.add("wait for the NPU targets (thread)", mono)
            runfolder.write_json(os.path.join(out_dir, "npu.json"), readiness)
            if args.eval:
                from converters.tf2 import evaluate

                if prepared.origin != "tf2":  # convert_legacy runs the origin's evaluation beside this step
                    mono = now()
                    runfolder.await_file(run_dir, evaluate.origin_files(prepared.origin)[0],
                                         failed=runfolder.EVAL_FAILED,
                                         waited_for="the origin's evaluation (eval-%s)" % prepared.origin)
                    phases.add("wait for eval-%s" % prepared.origin, mono, waits_on="eval-%s" % prepared.origin)
                started = time.perf_counter()
                report = evaluate.evaluate_run(
                    run_dir, args.eval, args.eval_classes, prepared.preprocess, used, tflite_path,
                    os.path.join(out_dir, "model_float.tflite") if result.get("float_path") else None,
                    origin=prepared.origin, known_keys={"calibration": data["calibration_keys"],
                                                        "probe": prepared.probe_keys},
                    candidates=artifacts.get("candidate_files"),
                    chosen=(result.get("quantization") or {}).get("chosen"))  # its file is tflite_path: one run
                runfolder.write_json(os.path.join(out_dir, evaluate.EVAL_FILE), report)
                timings["eval"] = round(time.perf_counter() - started, 2)
                phases.add("--eval", now() - timings["eval"])
            if figures is not None:
                from converters.tf2.recovery import search

                mono = now()
                search.merge_report_work(result["quantization"], figures.result())
                phases.add("quantization figures (thread)", figures.start, figures.end)
                phases.add("wait for the quantization figures (thread)", mono)
        except BaseException:
            for thread in (debugger, targets, figures):
                if thread is not None:
                    thread.thread.join()
            raise
        if debugger is None:
            layers = {"layers": [], "skipped": True}
        else:
            mono = now()
            layers = debugger.result()
            phases.add("wait for the layer debugger (thread)", mono)
            timings["layer_debug"] = layers.get("seconds")
        runfolder.write_json(os.path.join(out_dir, "layers.json"), layers)
        data.pop("calibration_keys")
        result["timings"] = timings
        result["phases"] = phases.as_list()
        runfolder.write_json(os.path.join(out_dir, "tflite.json"), result)
        if args.strict_npu:
            npu.strict_check(readiness)
    return 0


def _layer_debugger(artifacts, calibration_data, used, options, edited=False):
    """layers.json's content: the per-layer debugger on the conversion's calibrated model and first
    calibration samples (issue 13: no second conversion, calibration or reading of the samples); when the
    chosen candidate ``edited`` the int8 file's values, on those values (the file's bytes, ``artifacts``)."""
    from converters.tf2 import quant_debug, quantize

    calibrated = artifacts.get("calibrated_model")
    written = artifacts.get("int8_model") if calibrated and edited else None
    kept = artifacts.get("calibration_samples")
    if calibrated and kept:
        debug_dataset = lambda: (list(sample) for sample in kept)  # noqa: E731
        converter = None
    else:
        debug_dataset = calibration_data(quant_debug.DEFAULT_DEBUG_SAMPLES, False).representative_dataset()
        converter = None if calibrated else quantize.debug_converter(used, debug_dataset, options)
    return quant_debug.debug_layers(converter, debug_dataset, calibrated_model=calibrated,
                                    per_tensor=options.per_tensor, written_model=written)


def _add_conversion_phases(phases, start, inside):
    """The conversion's own phases (the calibration hook's: ``converters.tf2.calibrate``), the graph's
    conversion starting with the step's call; the whole call when the hook recorded nothing."""
    from converters.shared.phases import now

    inside = [dict(entry) for entry in inside or []]
    if not inside:
        phases.add("convert", start)
        return
    for entry in inside:
        if entry["start"] is None:
            entry["start"] = start
        phases.add(entry["phase"], entry["start"], entry["end"])
    last = inside[-1]["end"]
    if now() - last > 0.05:  # writing the files, the float model, the written file's check
        phases.add("write and check the files", last)


def recovery_checks(out_dir, section, prepared, input_names, parity_samples=0):
    """On the probe (held out from calibration and from the candidates' judging): the plain converter's
    int8 file measured as the chosen one is, on the whole probe (``section["plain_probe"]``); and, when the
    chosen candidate equalized the float model, that equalized float model against the origin's references
    on the probe's first ``parity_samples`` (0: all), within the float tolerances
    (``section["cle"]["probe_check"]``). That check belongs to the quantization section: equalization is a
    step towards the int8 file, which the int8 verdict judges against the origin end to end; it is not an
    environment of the upgrade-parity matrix, and it never fails a run by itself."""
    from converters.shared import metrics
    from converters.tf2 import tflite_run

    stale = os.path.join(out_dir, "parity_tflite-float-cle.json")  # earlier versions' cell: not a parity cell
    if os.path.exists(stale):
        os.remove(stale)
    references = prepared.reference_outputs()
    if section.get("plain_path") and section.get("chosen") != "plain":  # plain chosen: its figures are the file's
        measured = tflite_run.evaluate(os.path.join(out_dir, section["plain_path"]), prepared.probe, references,
                                       input_names=input_names)
        section["plain_probe"] = dict((key, measured.get(key)) for key in (
            "status", "sqnr_db", "sqnr_centered_db", "correlation", "cosine", "top1_agreement", "top1_decisive",
            "max_abs_lsb", "reasons"))
    if not section.get("cle_float_path"):
        return
    import numpy as np

    count = parity_samples or len(references[0])
    probe = [x[:count] for x in prepared.probe] if isinstance(prepared.probe, list) else prepared.probe[:count]
    references = [np.asarray(r)[:count] for r in references]
    names = ["output_%d" % k for k in range(len(references))]
    outputs, _, interpreter = tflite_run.run(os.path.join(out_dir, section["cle_float_path"]), probe,
                                             input_names=input_names)
    summary = metrics.compare_outputs(
        dict((n, np.asarray(r, np.float32)) for n, r in zip(names, references)),
        dict((n, o.reshape(np.shape(r))) for n, o, r in zip(names, outputs, references)))
    section["cle"]["probe_check"] = {
        "status": summary["verdict"], "max_abs": summary["max_abs"], "max_rel": summary["max_rel"],
        "cosine": summary["cosine"], "samples": int(len(references[0])),
        "runtime": "%s: %s" % (getattr(interpreter, "runtime_name", "tflite"), section["cle_float_path"])}


def model_inputs(run_dir, source, tf2_model):
    """[(input name, batch-first shape)] in the order the converter's inputs take: the source's own (the
    frozen graph's input arrays follow the Keras inputs of the manifest, whose names the probe and the
    calibration .npz use)."""
    if not tf2_model:
        manifest = runfolder.read_json(os.path.join(run_dir, runfolder.MANIFEST))
        described = (manifest.get("model") or {}).get("inputs") or []
        if len(described) == len(source.inputs):
            return [(spec["name"], [1] + list(spec["shape"][1:])) for spec in described]
    return [(spec["name"], spec["shape"]) for spec in source.inputs]


def data_section(calib, prepared):
    """report.json's ``data``: the calibration set the converter saw, the probe, and their overlap counted
    by content hash of the samples (source item and preprocessed sample) - computed, not assumed.

    ``calibration_keys`` (the calibration samples' hashes) is for the eval step and is dropped before
    the section is written.
    """
    from converters.shared import calibration

    keys = list(calib.yielded_keys)
    described = calib.describe()
    section = {
        "calibration": {"source": described["source"], "count": len(keys), "requested": calib.requested,
                        "available": calib.available, "seed": calib.seed,
                        "excluded_as_probe": described["excluded_as_probe"]},
        "probe": dict(prepared.probe_data),
        "overlap": calibration.count_overlap(keys, prepared.probe_keys),
        "split": ("one seeded permutation of %s: calibration its first samples, the probe its last %d"
                  % (described["source"], prepared.reserve_probe)) if prepared.reserve_probe
        else "separate sources (calibration samples equal to a probe sample by content are skipped)",
        "calibration_keys": keys,
    }
    if calib.shortfall():
        section["calibration"]["note"] = calib.shortfall()
    return section


def _write_failure(out_dir, error, options, timings, calib, strict_npu):
    """tflite.json (and npu.json for a rejected file) of a failed conversion, for the report."""
    readiness = getattr(error, "npu", None)
    if readiness is not None:
        readiness = dict(readiness, rejected=True, strict=strict_npu)
        runfolder.write_json(os.path.join(out_dir, "npu.json"), readiness)
    runfolder.write_json(os.path.join(out_dir, "tflite.json"), {
        "status": "conversion_error", "error": error.message, "hint": error.hint,
        "attempts": getattr(error, "attempts", None), "input_dtype": options.io,
        "output_dtype": options.output_io, "timings": timings,
        "calibration": calib.describe(), "path": None})


if __name__ == "__main__":
    from converters.cli import main

    sys.exit(main(run_step, step="convert"))
