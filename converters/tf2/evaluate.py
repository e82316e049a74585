"""Accuracy of the float and the int8 model on labelled held-out data (``--eval``), in tf2.

For whom: the conversion step (``converters.tf2.tflite_convert``, which calls ``evaluate_run`` after the
int8 model is written and writes ``eval.json``), and the report (``eval`` in report.json); ``tf2``
environment only. Three figures for one set of labelled samples (``converters.shared.labelled``):

- the float model in its origin environment: for a legacy model, TF 1.x's own numbers
  (``eval_<origin>.json`` and its per-sample top-1 ``eval_<origin>.npz``, written by
  ``python -m legacy_tf1 evaluate`` in the origin before this step); for a TF 2.x model, tf2 itself;
- the float model the converter started from, in TF 2.x (the Keras model, the SavedModel or the TF 1.x
  frozen graph run by TF 2.x: ``float_predictor``);
- the int8 model in LiteRT (quantized input, dequantized output, as ``converters.tf2.tflite_run``).

The int8 drop is paired against the tf2 float model (same process, same batches): top-1 (and top-5
with more than 5 classes), the drop in points with Newcombe's paired 95 % interval, flipped
predictions and the classes that lose most (``converters.shared.accuracy``). Streamed batch by batch;
what is kept per sample is the origin's top-1 prediction (one int32) read back for the pairing.

What can go wrong: ``CalibrationDataError`` (step ``eval``) for eval data that does not fit the model,
``InputFileError`` when the origin's eval file is missing.
"""

import os
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # tf.keras = Keras 2 (tf_keras): legacy .h5 need it
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from converters import runfolder  # noqa: E402
from converters.errors import CalibrationDataError, InputFileError  # noqa: E402

EVAL_FILE = "eval.json"


def origin_files(label):
    """(summary json, per-sample predictions npz) of the origin's float evaluation."""
    return "eval_%s.json" % label, "eval_%s.npz" % label


def _first(outputs):
    if isinstance(outputs, dict):
        outputs = [outputs[key] for key in sorted(outputs)]
    if isinstance(outputs, (list, tuple)):
        outputs = outputs[0]
    return np.asarray(outputs)


def float_predictor(source):
    """(batch of inputs -> first output's scores, description) for a ``converters.tf2.sources.Source``."""
    import tensorflow as tf

    if source.keras_model is not None:
        model = source.keras_model
        return (lambda inputs: _first(model(inputs if len(inputs) > 1 else inputs[0], training=False)),
                "%s model in TF %s" % (source.kind, tf.__version__))
    if source.kind == "frozen_graph":
        graph_def = tf.compat.v1.GraphDef()
        with open(source.path, "rb") as handle:
            graph_def.ParseFromString(handle.read())
        wrapped = tf.compat.v1.wrap_function(lambda: tf.compat.v1.import_graph_def(graph_def, name=""), [])
        graph = wrapped.graph
        function = wrapped.prune([graph.as_graph_element(i["name"] + ":0") for i in source.inputs],
                                 [graph.as_graph_element(o["name"] + ":0") for o in source.outputs])

        def predict(inputs):
            try:
                return _first(function(*[tf.constant(x) for x in inputs]))
            except (tf.errors.InvalidArgumentError, ValueError):  # a graph frozen with batch 1
                rows = [_first(function(*[tf.constant(x[i:i + 1]) for x in inputs])) for i in range(len(inputs[0]))]
                return np.concatenate(rows)

        return predict, "frozen graph (TF 1.x) in TF %s" % tf.__version__
    loaded = tf.saved_model.load(source.path)
    signature = loaded.signatures["serving_default"] if "serving_default" in loaded.signatures else \
        loaded.signatures[sorted(loaded.signatures)[0]]
    names = [i["name"] for i in source.inputs]

    def predict_saved(inputs):
        rows = []
        for index in range(len(inputs[0])):  # the signature was fixed to batch 1 by the source
            rows.append(_first(signature(**dict((n, tf.constant(x[index:index + 1])) for n, x in zip(names, inputs)))))
        return np.concatenate(rows)

    return predict_saved, "SavedModel signature in TF %s" % tf.__version__


def _classes_of(shape):
    width = shape[-1] if shape else None
    return int(width) if width not in (None, -1) else None


def evaluate_run(run_dir, eval_path, classes_file, preprocess, source, tflite_path, float_tflite_path=None,
                 origin="tf2", known_keys=None, candidates=None, chosen=None):
    """Evaluate the float (origin, tf2) and the int8 model on ``eval_path``; return the ``eval`` dict.

    ``source``: the ``Source`` the converter used; ``known_keys``: {"calibration": [...], "probe": [...]}
    content hashes, to count eval samples that are also calibration or probe samples; ``candidates``:
    {name: int8 .tflite path} of the quantization candidates (issue 22), whose top-1 on the same batches
    goes into ``candidates_top1`` (the ablation table; the choice was made before, without this data);
    ``chosen``: the candidate whose model ``tflite_path`` is (the same ops and weights, written by the
    converter): its top-1 is the int8 model's, counted from the same run instead of a second one.
    """
    from converters.shared import accuracy, calibration, labelled
    from converters.tf2 import tflite_run

    started = time.perf_counter()
    data = labelled.LabelledData(eval_path, [i["shape"] for i in source.inputs], [i["name"] for i in source.inputs],
                                 preprocess, classes_file)
    interpreter = tflite_run.make_interpreter(tflite_path)
    width = _classes_of(list(interpreter.get_output_details()[0]["shape"])) or _classes_of(
        source.outputs[0].get("shape") or [])
    classes = data.check_classes(width)
    predict, float_runtime = float_predictor(source)
    origin_top1 = origin_summary = None
    if origin != "tf2":
        summary_name, predictions_name = origin_files(origin)
        summary_path = os.path.join(run_dir, summary_name)
        if not os.path.exists(summary_path):
            raise InputFileError("the origin's evaluation %s is missing." % summary_path, step="eval",
                                 hint="Run `python -m legacy_tf1 evaluate RUN --eval PATH` in %s first." % origin)
        origin_summary = runfolder.read_json(summary_path)
        origin_top1 = runfolder.read_arrays(os.path.join(run_dir, predictions_name))["top1"]
        if len(origin_top1) != data.samples:
            raise InputFileError("the origin's evaluation has %d samples, --eval %s has %d." % (
                len(origin_top1), eval_path, data.samples), step="eval",
                hint="Rerun the whole job: the eval data changed between the steps.")
    tally = accuracy.PairedTally(classes)
    origin_flipped = 0
    candidate_runs = dict((name, [tflite_run.make_interpreter(path) if name != chosen else None, 0])
                          for name, path in (candidates or {}).items())
    offset = 0
    overlap = {"calibration": 0, "probe": 0}
    known = dict((name, list(keys or [])) for name, keys in (known_keys or {}).items())
    for inputs, labels, keys in data.batches():
        try:
            float_scores = predict(inputs)
            int8_scores = tflite_run.run_batch(interpreter, inputs, what="eval")[0][0]
            float_top1, _ = tally.add(labels, float_scores, int8_scores)
            for run in candidate_runs.values():
                scores = int8_scores if run[0] is None else tflite_run.run_batch(run[0], inputs, what="eval")[0][0]
                run[1] += int(np.sum(np.argmax(scores.reshape(len(labels), -1), axis=1) == np.asarray(labels)))
        except ValueError as exc:
            raise CalibrationDataError("--eval %s does not fit the model: %s." % (eval_path, exc), step="eval")
        if origin_top1 is not None:
            origin_flipped += int(np.sum(origin_top1[offset:offset + len(labels)] != float_top1))
        for name in overlap:
            overlap[name] += calibration.count_overlap(keys, known.get(name) or [])
        offset += len(labels)
    result = tally.summary(data.class_names)
    result.update({
        "source": data.path, "kind": data.kind, "preprocess": data.describe()["preprocess"],
        "class_names": data.class_names,
        "float_env": "tf2", "float_runtime": float_runtime, "float_route": source.kind,
        "int8_runtime": getattr(interpreter, "runtime_name", "?"),
        "origin_env": origin,
        "overlap": overlap,
        "seconds": round(time.perf_counter() - started, 2),
    })
    per_env = {"tf2": {"top1": result["float_top1"], "top5": result.get("float_top5")}}
    if origin_summary is not None:
        per_env[origin] = {"top1": origin_summary.get("top1"), "top5": origin_summary.get("top5"),
                           "runtime": origin_summary.get("runtime")}
        result["origin_vs_tf2_float_flipped"] = origin_flipped
    result["float_by_env"] = per_env
    if candidate_runs:
        result["candidates_top1"] = dict((name, round(100.0 * run[1] / max(1, data.samples), 2))
                                         for name, run in candidate_runs.items())
    return result
