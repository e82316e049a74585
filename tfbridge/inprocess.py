"""Method 1: quantize the Keras model you just trained, in your own TF 2.x process, to full int8.

    from tfbridge.inprocess import to_int8
    report = to_int8(model, calibration_images, "model_int8.tflite", probe=held_out_images)

For a training script or notebook that has a live ``tf.keras`` (tf_keras, Keras 2) or Keras 3 model and
its TensorFlow imported. The conversion is the commands' own (``converters.tf2.quantize.convert``: the
MLIR converter, full int8 with int8 I/O by default, calibration on every core, ops left in float
refused, the written file checked against the request, NPU readiness); a Keras 3 model goes the route
its ``.keras`` file takes in ``tfbridge convert`` (exported to a SavedModel), a tf_keras model the
route of its ``.h5``. With ``probe=`` the int8 model is measured against the live model's float
outputs on those held-out samples, with the commands' verdict (``converters.tf2.tflite_run``); the tests
cover single-input models (a model of several inputs converts the same way; its probe check is untested).

Supported: Python >= 3.10 and TensorFlow 2.x with its LiteRT or ``tf.lite`` interpreter; tested with
TensorFlow 2.21 (tensorflow-cpu 2.21.0, tf-keras 2.21.0, Keras 3.15: the ``tf2`` environment,
tests/integration/test_install_inprocess_tf2.py). TF 1.x is refused (``UsageError``): a TF 1.x model
goes through ``tfbridge convert-legacy``.

What can go wrong: ``tfbridge.errors`` classes: ``UsageError`` (TF 1.x, an unknown ``io``),
``CalibrationDataError`` (data that is empty or does not fit the model's inputs), ``ConversionError``
(the converter fails, or ops without an int8 kernel stay in float without ``allow_float_ops``; the file
at ``output_path`` is then left as it was).
"""

import os
import sys
import time

from tfbridge._private import tree_imports
from tfbridge.report import Int8Figures, NpuReadiness, Report

DEFAULT_SAMPLES = 200  # as --calib-samples (converters/options.py DEFAULT_CALIB_SAMPLES)


def to_int8(model, representative_data, output_path, io="int8", output_io=None, per_tensor=False,
            allow_float_ops=False, npu_targets=("imx8mp",), samples=DEFAULT_SAMPLES, probe=None, jobs=None,
            quantize=None):
    """Write ``model`` as a fully int8 ``.tflite`` at ``output_path``; return a ``tfbridge.Report``.

    ``representative_data``: calibration samples preprocessed as in training: a numpy array (N, ...)
    (a model of several inputs: a list or dict of arrays, one per input), a ``tf.data.Dataset`` or an
    iterable / generator function yielding samples or batches (a ``(x, y)`` pair uses ``x``); its first
    ``samples`` samples are used. ``io`` / ``output_io``: int8 (default), uint8 or float32;
    ``per_tensor``: one weight scale per tensor; ``npu_targets``: NPUs to check the file for (docs/npu.md,
    ``--npu-target``); ``probe``: held-out samples (same forms) to measure the int8 model on; ``jobs``:
    calibration threads (default: the cores); ``quantize``: as ``--quantize`` (default: the commands'
    default, ``auto``: candidates scored on the *last* calibration samples given, so give them shuffled;
    ``plain``: TFLite's own min/max, independent of their order). Also writes ``<output stem>.report.json``
    beside the file and, when candidates were compared, the plain converter's as ``<output stem>_plain.tflite``.
    """
    import tensorflow as tf

    from tfbridge import errors

    if sys.version_info < (3, 10) or int(tf.__version__.split(".")[0]) < 2:
        raise errors.UsageError(
            "tfbridge.inprocess needs Python >= 3.10 and TensorFlow 2.x (this is Python %d.%d, TensorFlow %s)."
            % (sys.version_info[0], sys.version_info[1], tf.__version__), step="options",
            hint="For a TF 1.x model, save it and run `tfbridge convert-legacy MODEL.h5 --calib DATA`.")
    output_path = os.path.abspath(os.fspath(output_path))
    saved = dict((key, os.environ.get(key)) for key in ("TF_USE_LEGACY_KERAS", "TF_CPP_MIN_LOG_LEVEL"))
    with tree_imports():
        try:
            from converters.tf2 import npu, reference, sources, tflite_run
            from converters.tf2 import npu_targets as npu_targets_module
            from converters.tf2 import quantize as quantize_module
        finally:  # the tree's modules set these for its own processes: leave the user's process as it was
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        from converters import runfolder

        chosen = dict(io=io, output_io=output_io, per_tensor=per_tensor, allow_float_ops=allow_float_ops, jobs=jobs)
        if quantize is not None:  # the commands' --quantize (converters/options.py); its default otherwise
            chosen["quantize"] = quantize
        options = quantize_module.ConversionOptions(**chosen)
        with sources.scratch_dir() as workdir:
            started = time.perf_counter()
            source = sources.load_source(model, workdir)
            calibration = _samples(representative_data, source.inputs, samples, "representative_data")
            # everything that can be refused is checked before the file is written
            probe_samples = _samples(probe, source.inputs, None, "probe") if probe is not None else None
            targets = list(npu_targets or [])
            unknown = [name for name in targets if npu_targets_module.canonical(name) is None]
            if unknown:
                raise errors.UsageError("unknown NPU target(s) %s." % ", ".join(map(repr, unknown)), step="options",
                                        hint="Known targets: %s." % ", ".join(npu_targets_module.TARGETS))
            # written in the scratch folder first: the conversion names its side files (the plain model)
            # after a run folder's; only the chosen file and the plain one come out, under the user's name
            staged = os.path.join(workdir, runfolder.TFLITE)
            result, used = quantize_module.convert(source, staged, lambda: (list(s) for s in calibration),
                                                   options)
            plain = os.path.join(workdir, quantize_module.PLAIN_TFLITE)
            if os.path.exists(plain):
                plain_path = os.path.splitext(output_path)[0] + "_plain.tflite"
                with open(plain, "rb") as handle:
                    runfolder.write_bytes(plain_path, handle.read())
                result["quantization"]["plain_path"] = plain_path
            with open(staged, "rb") as handle:
                runfolder.write_bytes(output_path, handle.read())
            result["path"] = output_path
            figures = {}
            if probe_samples is not None:
                probe_inputs = [_stack([s[k] for s in probe_samples]) for k in range(len(source.inputs))]
                references = reference.float_reference(used, probe_inputs[0] if len(probe_inputs) == 1
                                                       else probe_inputs)
                figures = tflite_run.evaluate(output_path, probe_inputs if len(probe_inputs) > 1 else probe_inputs[0],
                                              [references[o["name"]] for o in used.outputs],
                                              input_names=[spec["name"] for spec in used.inputs])
            readiness = result.pop("npu")
            readiness["targets"] = npu.assess_targets(output_path, targets)
            seconds = round(time.perf_counter() - started, 2)
    return _write_report(output_path, result, figures, readiness, calibration, seconds, tf.__version__)


def _write_report(output_path, result, figures, readiness, calibration, seconds, tf_version):
    tflite = dict(result, **figures)
    tflite["status"] = figures.get("status") or "not_measured"
    tflite["calibration"] = {"source": "in-process data", "count": len(calibration)}
    data = {"command": "to_int8", "tensorflow": tf_version, "tflite": tflite, "npu": readiness,
            "timings": {"model_to_int8": seconds}}
    report_path = os.path.splitext(output_path)[0] + ".report.json"
    with tree_imports():
        from converters import runfolder

        runfolder.write_json(report_path, data)
    failing = ["int8 TFLite"] if figures and figures.get("status") != "match" else []
    int8 = Int8Figures(path=output_path, status=tflite["status"], input_dtype=result.get("input_dtype"),
                       output_dtype=result.get("output_dtype"), size_bytes=result.get("size_bytes"),
                       cosine=figures.get("cosine"), top1_agreement=figures.get("top1_agreement"),
                       max_abs_lsb=figures.get("max_abs_lsb"), sqnr_db=figures.get("sqnr_db"))
    return Report(command="to_int8", verdict="fail" if failing else "pass", run_dir=os.path.dirname(output_path),
                  failing=failing, int8=int8, npu=NpuReadiness.from_json(readiness), raw=data)


def _stack(arrays):
    import numpy as np

    return np.concatenate(arrays, axis=0)


def _samples(data, inputs, limit, what):
    """The first ``limit`` samples of ``data`` (module docstring's forms) as lists of float arrays with a
    batch of 1, one per model input, checked against the inputs' shapes."""
    import numpy as np

    from tfbridge import errors

    names = [spec["name"] for spec in inputs]
    collected = []

    def add_batch(element):
        if isinstance(element, dict):
            try:
                element = [element[name] for name in names]
            except KeyError as missing:
                raise errors.CalibrationDataError(
                    "%s has no array for input %s (it has %s)." % (what, missing, ", ".join(map(str, element))),
                    step="calibrate", hint="Name one array per model input: %s." % ", ".join(names))
        if isinstance(element, (tuple, list)) and len(inputs) == 1 and len(element) == 2 \
                and np.ndim(element[0]) >= len(inputs[0]["shape"]) - 1:
            element = element[0]  # an (x, y) pair of a labelled dataset
        arrays = list(element) if (isinstance(element, (tuple, list)) and len(inputs) > 1) else [element]
        if len(arrays) != len(inputs):
            raise errors.CalibrationDataError(
                "%s gives %d array(s) per sample; the model has %d input(s) (%s)."
                % (what, len(arrays), len(inputs), ", ".join(names)), step="calibrate")
        arrays = [np.asarray(array.numpy() if hasattr(array, "numpy") else array) for array in arrays]
        batched = []
        for array, spec in zip(arrays, inputs):
            rank = len(spec["shape"])
            if array.ndim == rank - 1:
                array = array[None]
            if array.ndim != rank or list(array.shape[1:]) != [d for d in spec["shape"][1:]]:
                raise errors.CalibrationDataError(
                    "%s: a sample of shape %s does not fit input %s of shape %s."
                    % (what, list(array.shape), spec["name"], ["N"] + list(spec["shape"][1:])), step="calibrate",
                    hint="Give samples preprocessed as in training, shaped like the model's input.")
            if not np.all(np.isfinite(array)):
                raise errors.CalibrationDataError("%s holds NaN or infinite values." % what, step="calibrate")
            batched.append(array.astype(spec.get("dtype") or "float32", copy=False))
        for index in range(len(batched[0])):
            if limit is not None and len(collected) >= limit:
                return False
            collected.append([array[index:index + 1] for array in batched])
        return limit is None or len(collected) < limit

    if isinstance(data, dict) or hasattr(data, "shape") or (isinstance(data, (list, tuple)) and len(inputs) > 1
                                                            and all(hasattr(a, "shape") for a in data)):
        add_batch(data)  # arrays: one batch of N samples
    else:
        iterable = data() if callable(data) else data
        for element in iterable:
            if not add_batch(element):
                break
    if not collected:
        raise errors.CalibrationDataError("%s holds no sample." % what, step="calibrate",
                                          hint="Give at least one sample (100-500 calibrate well).")
    return collected
