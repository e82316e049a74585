"""Accuracy of the re-saved float model in its origin TensorFlow on labelled held-out data (``--eval``).

For whom: ``convert_legacy`` with ``--eval`` (``converters.pipeline`` runs ``python -m legacy_tf1 evaluate
RUN --eval PATH [--eval-classes FILE] [--preprocess NAME]`` in the origin environment after the re-save
and before the int8 conversion); Python 3.7, TF 1.13 / 1.15. Loads the run folder's ``model.h5`` with the
Keras that saved it (``converters.shared.parity``'s loader: the same Lambda gate and custom objects), or,
for a TF 1.x graph source (no ``model.h5``), its frozen graph ``model.pb`` in a session (runtime
"tensorflow X (frozen graph)", no Keras imported),
reads the data in batches with the code the tf2 step uses (``converters.shared.labelled``), and writes:

- ``eval_<env>.json``: samples, classes, top-1 (top-5 with more than 5 classes) in percent, the runtime;
- ``eval_<env>.npz``: ``top1``, the per-sample top-1 predictions (int32), which the tf2 step pairs with
  the tf2 float model's to count the samples whose prediction changed between TensorFlow versions.

What can go wrong: ``CalibrationDataError`` (step ``eval``) for data that does not fit the model, and
the load errors of the parity step.
"""

import os
import time

import numpy as np

from converters import runfolder
from converters.errors import CalibrationDataError

BATCH = 32


def evaluate(run, eval_path, classes_file=None, preprocess=None, label="tf1", batch=BATCH):
    """Evaluate ``run``'s model.h5 on ``eval_path`` here; write and return the summary (module docstring)."""
    from converters.shared import accuracy, keras_compat, labelled, parity

    started = time.time()
    manifest = parity._read_manifest(run)
    graph_source = parity.is_graph_source(manifest)
    flavour = None if graph_source else keras_compat.resolve("auto", manifest["model"].get("keras_flavour"))
    if flavour:
        keras_compat.prepare(flavour)
    preprocess = preprocess or (manifest.get("probe") or {}).get("preprocess") or "raw"
    inputs = manifest["model"]["inputs"]
    data = labelled.LabelledData(eval_path, [i["shape"] for i in inputs], [i["name"] for i in inputs], preprocess,
                                 classes_file, batch)
    outputs = manifest["model"]["outputs"][0].get("shape") or []
    width = outputs[-1] if outputs and outputs[-1] not in (None, -1) else None
    classes = data.check_classes(width)
    model = parity._load(run, manifest, flavour)
    tally = accuracy.Tally(classes)
    predictions = []
    for batch_inputs, labels, _ in data.batches():
        scores = model.predict_on_batch(batch_inputs if len(batch_inputs) > 1 else batch_inputs[0])
        if isinstance(scores, (list, tuple)):
            scores = scores[0]
        try:
            predictions.append(tally.add(labels, scores))
        except ValueError as exc:
            raise CalibrationDataError("--eval %s does not fit the model: %s." % (eval_path, exc), step="eval")
    summary = tally.summary()
    summary.update({"env": label, "runtime": _graph_runtime() if graph_source else keras_compat.runtime(flavour),
                    "source": data.path, "kind": data.kind,
                    "class_names": data.class_names, "preprocess": preprocess, "unit": "percent",
                    "seconds": round(time.time() - started, 2)})
    summary_name, predictions_name = "eval_%s.json" % label, "eval_%s.npz" % label
    runfolder.write_arrays(os.path.join(run, predictions_name),
                           {"top1": np.concatenate(predictions).astype(np.int32)})
    runfolder.write_json(os.path.join(run, summary_name), summary)
    return summary


def _graph_runtime():
    """What ran for a TF 1.x graph source (no Keras): its frozen graph in a session of this TF."""
    import tensorflow as tf

    return "tensorflow %s (frozen graph)" % tf.__version__
