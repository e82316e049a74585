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
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # tf.keras = Keras 2 (tf_keras): legacy .h5 need it
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from converters import runfolder  # noqa: E402
from converters.errors import ConversionError  # noqa: E402

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
    from converters.shared import calibration
    from converters.tf2 import npu, prepare, quant_debug, quantize, sources, tflite_run

    args = _parser().parse_args(argv)
    run_dir = os.path.abspath(args.run_dir)
    out_dir = os.path.abspath(args.out or args.run_dir)
    os.makedirs(out_dir, exist_ok=True)
    options = quantize.ConversionOptions(io=args.io, output_io=args.output_io, per_tensor=args.per_tensor,
                                         allow_float_ops=args.allow_float_ops)
    timings = {}
    with sources.scratch_dir() as workdir:
        started = time.perf_counter()
        source = sources.load_source(args.model if args.model else run_dir, workdir, trust_model=args.trust_model)
        timings["load"] = round(time.perf_counter() - started, 2)
        if args.model:
            prepared = prepare.for_tf2_model(out_dir, args.model, source, args.calib, args.preprocess,
                                             args.probe_samples, args.seed)
        else:
            prepared = prepare.from_run_folder(run_dir, args.calib, args.preprocess)
        timings.update(prepared.timings)
        input_name = source.inputs[0]["name"]
        calib = calibration.CalibrationSource(prepared.calib, source.input_shape, prepared.preprocess,
                                              args.calib_samples, args.seed, progress=True, input_name=input_name)
        started = time.perf_counter()
        tflite_path = os.path.join(out_dir, runfolder.TFLITE)
        try:
            result, used = quantize.convert(source, tflite_path, calib.representative_dataset(), options,
                                            float_output_path=os.path.join(out_dir, "model_float.tflite"))
        except ConversionError as error:
            _write_failure(out_dir, error, options, timings, calib, args.strict_npu)
            raise
        timings["convert"] = round(time.perf_counter() - started, 2)
        timings["convert_int8"] = result["seconds"]
        if "float_seconds" in result:
            timings["convert_float"] = result["float_seconds"]
        started = time.perf_counter()
        result.update(tflite_run.evaluate(tflite_path, prepared.probe, prepared.references))
        timings["evaluate"] = round(time.perf_counter() - started, 2)
        result["reference_env"] = prepared.origin
        result["calibration"] = calib.describe()
        readiness = result.pop("npu")
        readiness["strict"] = args.strict_npu
        runfolder.write_json(os.path.join(out_dir, "npu.json"), readiness)
        if args.no_layer_debug:
            layers = {"layers": [], "skipped": True}
        else:
            debug_data = calibration.CalibrationSource(prepared.calib, source.input_shape, prepared.preprocess,
                                                       quant_debug.DEFAULT_DEBUG_SAMPLES, args.seed,
                                                       progress=False, input_name=input_name)
            converter = quantize.debug_converter(used, debug_data.representative_dataset(), options)
            layers = quant_debug.debug_layers(converter, debug_data.representative_dataset())
            timings["layer_debug"] = layers.get("seconds")
        runfolder.write_json(os.path.join(out_dir, "layers.json"), layers)
        result["timings"] = timings
        runfolder.write_json(os.path.join(out_dir, "tflite.json"), result)
        if args.strict_npu:
            npu.check(tflite_path, strict=True)
    return 0


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
    import sys

    from converters.cli import main

    sys.exit(main(run_step, step="convert"))
