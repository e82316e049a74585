"""One cell of the parity matrix: does the re-saved model give the origin's outputs in this environment?

For whom: ``converters.verify`` runs it inside tf1.15 and tf2 (Python 3.7 compatible). Commands::

    python -m converters.shared.parity RUN --label LABEL [--keras auto|keras|tf.keras|tf_keras|keras3|graph]
    python -m converters.shared.parity activations RUN --label LABEL --out FILE [--keras ...] [--samples N]
    python -m converters.shared.parity divergence RUN --label LABEL [--origin-label ENV]

Several tf2 cells run in one process with ``python -m converters.tf2.cells`` (tf2 only: it also runs the
Keras 3 migration), each through ``parity_cell`` as here.

``RUN`` is a run folder made by ``python -m legacy_tf1 resave``. The first command loads ``RUN/model.h5``
with the chosen Keras (``auto``: the flavour that saved it in TF 1.x, tf_keras in TF 2.x; Keras 3 is
label "tf2-keras3" run in its own process), runs ``probe.npz``, writes ``reference_<LABEL>.npz`` and
``parity_<LABEL>.json``::

    {env, label, runtime, status: match|mismatch|load_error, max_abs, max_rel, cosine, top1_agreement,
     per_output: [...], tolerances, error?, hint?, first_divergent_layer?}

``--keras graph`` (label ``tf2-graph``) runs the frozen graph ``RUN/model.pb`` instead, in a ``tf.compat.v1``
session with the names of the manifest's ``model.frozen_graph`` (no Keras, no Python code of the model: the
route the int8 converter takes); runtime "tensorflow X (frozen graph)", the same keys. It is also every
cell of a TF 1.x graph source (``manifest.model.source_kind``: a GraphDef, SavedModel or checkpoint, which has
no ``model.h5``): ``tf1.15`` and ``tf2-graph``. On a graph cell's mismatch, ``activations --keras graph`` writes
the output of every node of ``model.pb`` (float tensors, in topological order, ``__order__`` holding that
order) in the origin and in the cell's environment, and ``divergence`` names the first node whose tensor
differs: ``first_divergent_node`` (and ``divergence``, the last comparisons), like ``first_divergent_layer``.

A model that does not load here is a ``load_error`` cell (error class, first line, a hint), not a crash:
"this model does not load in Keras 3" is an answer, not a failure of the tool. When the cause is the
model's Lambda layers, whose bytecode of the origin's Python (3.7) this Python cannot load, the cell says so
in words: ``cause: "lambda_bytecode"``, ``explanation`` (the graph is portable, the ``.h5`` is not; give the
function as code with ``--custom-objects``); the migrated cell of such a model says that no migrated model
can exist (the migration loads the ``.h5``). A package that this
environment's lock pins and that does not import is not such an answer: the step fails with
``EnvironmentBroken`` (exit 12) and writes no cell.

Label ``tf2-keras3-migrated`` loads ``RUN/model.keras`` instead (written by ``converters.tf2.migrate``) with
``keras.saving.load_model`` in safe mode, as a user of Keras 3 would; its activations are keyed by the
origin's layer names (``migration.json`` maps them back). ``divergence`` looks the first divergent layer up
in the table of known upgrade hazards (``converters.shared.hazards``): ``hazards: [{id, layer, explanation,
fix}]``, or ``hazard_note`` when no entry matches.

``activations`` writes every layer's output on the first ``--samples`` probe inputs (default 2; full
activations of a deep net are large), keyed by layer name. ``divergence`` compares
``activations_<origin>.npz`` with ``activations_<LABEL>.npz`` layer by layer in the manifest's order with
``converters.shared.metrics.compare`` and records the first layer that does not match in ``parity_<LABEL>.json``.
"""

import argparse
import os
import time

from converters import cli, runfolder
from converters.errors import EnvironmentBroken, InputFileError, ModelLoadError, UntrustedModelError, UsageError
from converters.shared import keras_compat

ACTIVATION_SAMPLES = 2
# The cell of the Keras 3 model written by converters.tf2.migrate (RUN/model.keras), beside "tf2-keras3"
# (RUN/model.h5 as it is, in Keras 3).
MIGRATED_LABEL = "tf2-keras3-migrated"
# The cell of the frozen graph (RUN/model.pb) run in tf2 with tf.compat.v1: the route the converter takes.
GRAPH_LABEL = "tf2-graph"
GRAPH = "graph"  # the --keras value of that cell: no Keras, the GraphDef in a compat.v1 session
GRAPH_BATCH = 8
NO_GRAPH_DIVERGENCE = ("the search for the first divergent layer is not available for the frozen graph cell "
                       "(a graph has nodes, not Keras layers); compare with the Keras cells of the same runtime")
MODEL_KERAS = "model.keras"
MIGRATION = "migration.json"

HINTS = {
    "keras3": "Keras 3 cannot read every Keras 2 .h5 (tf.keras 1.x configs, removed arguments); use tf_keras "
              "(TF_USE_LEGACY_KERAS=1) in TF 2.x, or convert from the frozen graph (model.pb).",
    "tf_keras": "tf-keras should load Keras 2 .h5 files; if a custom layer is missing pass --custom-objects, "
                "otherwise convert from the frozen graph (model.pb).",
}


def summarize_error(exc, limit=400):
    """The first line of an exception and, when Keras wraps the cause ("Exception encountered: ..."), that
    cause too: the first line alone is often a config dump that does not say what was wrong."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return ""
    first = lines[0]
    cause = [line for line in lines[1:] if line.startswith("Exception encountered")]
    if cause:
        return "%s ... %s" % (first[:150], cause[-1][:limit])
    return first[:limit]


def lambda_bytecode_cause(manifest):
    """The explanation, in words, of why this model's ``.h5`` cannot load as Keras in this Python, when its
    Lambda layers hold bytecode of another Python (marshal is not portable between minor versions), else None.
    The cell then records ``cause: "lambda_bytecode"`` (``converters.verify`` tolerates such a load_error
    of the Python 3.11 Keras cells when the frozen graph cell matches)."""
    import platform

    layers = manifest["model"].get("lambda_layers") or []
    origin_python = str(manifest["origin"].get("python") or "3.7")
    here = platform.python_version()
    if not layers or origin_python.split(".")[:2] == here.split(".")[:2]:
        return None
    return ("the Lambda layer(s) %s hold Python %s bytecode, which Python %s cannot load: the frozen graph "
            "(model.pb, cell %s) is portable, the .h5 is not. To make the .h5 portable, give the function as "
            "code: rewrite the Lambda as a named function or a layer class in a file passed with "
            "--custom-objects." % (", ".join(layers), ".".join(origin_python.split(".")[:2]),
                                   ".".join(here.split(".")[:2]), GRAPH_LABEL))


def load_hint(exc, flavour, manifest):
    """What to do about a load failure, specific where the cause is known."""
    text = str(exc)
    explained = lambda_bytecode_cause(manifest)
    if explained:
        return explained[0].upper() + explained[1:] + "."
    if manifest["model"].get("lambda_layers") and flavour != "keras" and (
            isinstance(exc, (EOFError, SystemError, ValueError, TypeError)) or "marshal" in text):
        return ("The model's Lambda layer(s) %s hold Python %s bytecode, which this Python cannot load. "
                "Rewrite them as a custom layer class passed with --custom-objects, or convert from the "
                "frozen graph (model.pb), which needs no Python code."
                % (", ".join(manifest["model"]["lambda_layers"]), manifest["origin"].get("python", "3.7")))
    if "cannot contain character `/`" in text:
        return ("Keras 3 forbids '/' in layer names, and this model has such names (keras-vggface uses e.g. "
                "'conv1/7x7_s2'). Use tf_keras (TF_USE_LEGACY_KERAS=1) or the frozen graph (model.pb).")
    if "Unknown layer" in text or "Could not locate class" in text:
        return "A custom layer is not known here: pass --custom-objects FILE.py that defines it for this Keras."
    return HINTS.get(flavour, HINTS["tf_keras"])


def activations_name(label):
    return "activations_%s.npz" % label


def _read_manifest(run):
    path = os.path.join(run, runfolder.MANIFEST)
    if not os.path.isfile(path):
        raise InputFileError("%s has no manifest.json: it is not a completed run folder." % run, step="parity",
                             hint="Run `python -m legacy_tf1 resave MODEL --out %s` in the origin environment first." % run)
    return runfolder.read_json(path)


def _custom_objects(run, manifest):
    name = manifest["model"].get("custom_objects")
    return keras_compat.load_custom_objects(os.path.join(run, name)) if name else {}


def is_graph_source(manifest):
    """A run folder of a TF 1.x graph (GraphDef, SavedModel, checkpoint): model.pb only, no model.h5."""
    return bool(manifest["model"].get("source_kind")) and manifest["model"].get("source_kind") != "h5"


class GraphModel(object):
    """``model.pb`` with the ``predict`` / ``predict_on_batch`` of a Keras model (for ``legacy_tf1.evaluate``
    of a graph source, which has no ``model.h5``): a ``tf.compat.v1`` session over the frozen graph."""

    def __init__(self, run, manifest):
        import tensorflow as tf

        self.manifest = manifest
        self.graph = _import_frozen(run, manifest)
        info = manifest["model"]["frozen_graph"]
        self.inputs = [self.graph.get_tensor_by_name(name + ":0") for name in info["input_arrays"]]
        self.outputs = [self.graph.get_tensor_by_name(name + ":0") for name in info["output_arrays"]]
        self.batch = info.get("batch") or GRAPH_BATCH
        self.session = tf.compat.v1.Session(graph=self.graph)

    def predict(self, feeds, batch_size=None, verbose=0):
        import numpy as np

        feeds = feeds if isinstance(feeds, (list, tuple)) else [feeds]
        parts = [[] for _ in self.outputs]
        for start in range(0, len(feeds[0]), self.batch):
            values = self.session.run(self.outputs, dict((tensor, feed[start:start + self.batch])
                                                         for tensor, feed in zip(self.inputs, feeds)))
            for collected, value in zip(parts, values):
                collected.append(np.asarray(value, dtype=np.float32))
        results = [np.concatenate(part, axis=0) for part in parts]
        return results if len(results) > 1 else results[0]

    predict_on_batch = predict


def _import_frozen(run, manifest):
    import tensorflow as tf

    graph_info = manifest["model"].get("frozen_graph")
    if not graph_info:
        raise ModelLoadError("the re-save step wrote no frozen graph (%s)."
                             % (manifest["model"].get("frozen_graph_error") or "freezing was not attempted"),
                             step="parity", hint="The converter then takes model.h5 (cell tf2); see the "
                                                 "re-save log for why freezing failed.")
    graph_def = tf.compat.v1.GraphDef()
    with open(os.path.join(run, graph_info.get("path") or runfolder.MODEL_PB), "rb") as handle:
        graph_def.ParseFromString(handle.read())
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
    return graph


def _load(run, manifest, flavour, label=None):
    if is_graph_source(manifest):
        return GraphModel(run, manifest)
    if label == MIGRATED_LABEL:
        return _load_migrated(run, manifest)
    path = os.path.join(run, runfolder.MODEL_H5)
    # the Lambda gate again: this step loads the run folder's file, trusted only as the re-save recorded
    return keras_compat.load_model(flavour, path, _custom_objects(run, manifest),
                                   trust_model=bool(manifest["model"].get("trusted")))


def _load_migrated(run, manifest):
    """The Keras 3 ``model.keras`` of ``converters.tf2.migrate``, loaded as a user would: ``load_model``,
    safe mode (unless the re-save was trusted), no custom object from tfbridge."""
    path = os.path.join(run, MODEL_KERAS)
    if not os.path.isfile(path):
        record_path = os.path.join(run, MIGRATION)
        record = runfolder.read_json(record_path) if os.path.isfile(record_path) else {}
        explained = lambda_bytecode_cause(manifest)
        if explained:
            raise ModelLoadError("no migrated Keras 3 model can exist for this model: the migration loads "
                                 "model.h5, and %s" % explained, step="parity",
                                 hint="Convert through the frozen graph (cell %s), or rewrite the Lambda as code "
                                      "passed with --custom-objects so that model.h5 loads, and rerun."
                                      % GRAPH_LABEL)
        raise ModelLoadError("the migrated Keras 3 model %s was not written: %s"
                             % (path, record.get("error") or "the migrate step did not run"), step="parity",
                             hint=record.get("hint") or "Run `python -m converters.tf2.migrate RUN` in tf2.")
    keras = keras_compat.keras_module("keras3")
    return keras.saving.load_model(path, compile=False, safe_mode=not manifest["model"].get("trusted"))


def migrated_names(run):
    """For the migrated model's activations: ``(new name -> old name, names to leave out)`` from
    ``migration.json`` (renamed layers, layers whose output another layer now gives, added helper layers)."""
    record = runfolder.read_json(os.path.join(run, MIGRATION))
    old_of = dict((new, old) for old, new in (record.get("renamed") or {}).items())
    skip = set(record.get("helper_layers") or [])
    for alias, old in (record.get("outputs") or {}).items():
        skip.add((record.get("renamed") or {}).get(old, old))  # the layer itself now gives the pre-activation
        skip.discard(alias)
        old_of[alias] = old
    return old_of, skip


def _predict(model, manifest, probe, samples=None):
    import numpy as np

    feed = [probe[spec["name"]][:samples] for spec in manifest["model"]["inputs"]]
    outputs = model.predict(feed if len(feed) > 1 else feed[0], batch_size=8, verbose=0)
    if not isinstance(outputs, (list, tuple)):
        outputs = [outputs]
    names = [spec["name"] for spec in manifest["model"]["outputs"]]
    return dict((name, np.asarray(value, dtype=np.float32)) for name, value in zip(names, outputs))


def warm_up(flavour):
    """Import TensorFlow (its Keras switch set first) while the re-save still runs (``runfolder.await_file``):
    the import is the part of a cell that needs nothing of the re-save."""
    if flavour != GRAPH:
        keras_compat.prepare(keras_compat.resolve(flavour, None))
    keras_compat.import_tensorflow()


def _first(arrays, samples):
    """The first ``samples`` rows of each array (all of them when ``samples`` is None or 0)."""
    return dict((name, value[:samples] if samples else value) for name, value in arrays.items())


def _origin_references(run, origin, samples):
    """The origin's reference outputs on the probe's first ``samples`` samples (``--parity-samples``),
    waited for when this step started beside the re-save (``runfolder.await_file``)."""
    path = runfolder.await_file(run, runfolder.reference_name(origin))
    return _first(runfolder.read_arrays(path), samples)


def parity_cell(run, label, flavour="auto", samples=None, compare=True):
    """Load, run the probe's first ``samples`` samples (all when None or 0: ``--parity-samples``), compare
    with the origin's references; write and return the cell. ``compare=False``: return, once the outputs
    are written, a callable that compares and writes the cell (a cell started beside the re-save then does
    its own work before it waits for the origin's references, ``converters.tf2.cells``); a load error is
    returned as a cell at once."""
    manifest = _read_manifest(run)
    if flavour == GRAPH:
        return graph_cell(run, label, manifest, samples, compare)
    flavour = keras_compat.resolve(flavour, manifest["model"].get("keras_flavour"))
    keras_compat.prepare(flavour)
    origin = manifest["origin"]["env"]
    cell = {"env": label, "label": label, "keras": flavour, "origin": origin, "status": None,
            "max_abs": None, "max_rel": None, "cosine": None, "top1_agreement": None, "per_output": []}
    timings = {}
    started = time.time()
    try:
        cell["runtime"] = keras_compat.runtime(flavour)
        model = _load(run, manifest, flavour, label)
    except (UntrustedModelError, EnvironmentBroken):  # a refusal / a damaged environment: not a cell
        raise
    except Exception as exc:  # noqa: BLE001 - any load failure is an honest matrix cell
        broken = keras_compat.environment_broken(exc)  # e.g. Keras importing a locked package that is gone
        if broken is not None:
            raise broken
        cell.update(status="load_error", error="%s: %s" % (type(exc).__name__, summarize_error(exc)),
                    error_class=type(exc).__name__,
                    hint=getattr(exc, "hint", None) or load_hint(exc, flavour, manifest))
        explained = lambda_bytecode_cause(manifest)
        if explained:
            cell.update(cause="lambda_bytecode", explanation=explained)
        cell.setdefault("runtime", flavour)
        timings["load_s"] = round(time.time() - started, 3)
        cell["timings"] = timings
        runfolder.write_json(os.path.join(run, runfolder.parity_name(label)), cell)
        return cell
    timings["load_s"] = round(time.time() - started, 3)
    t0 = time.time()
    probe = runfolder.read_arrays(os.path.join(run, runfolder.PROBE))
    outputs = _predict(model, manifest, probe, samples or None)
    del model
    runfolder.write_arrays(os.path.join(run, runfolder.reference_name(label)), outputs)
    timings["predict_s"] = round(time.time() - t0, 3)
    cell["timings"] = timings

    def finish():
        return _compare(run, cell, outputs, samples)

    return finish() if compare else finish


def _compare(run, cell, outputs, samples, graph_source=False):
    """Compare a cell's outputs with the origin's references (waited for, ``_origin_references``); write
    ``parity_<label>.json`` and return the cell."""
    from converters.shared import metrics

    started = time.time()
    references = _origin_references(run, cell["origin"], samples)
    summary = metrics.compare_outputs(references, outputs)
    cell["timings"]["compare_s"] = round(time.time() - started, 3)  # with the wait for the references
    cell.update(status=summary["verdict"], max_abs=summary["max_abs"], max_rel=summary["max_rel"],
                cosine=summary["cosine"], top1_agreement=summary["top1_agreement"],
                per_output=summary["per_output"], tolerances=summary["tolerances"], samples=_count(outputs))
    if summary["warnings"]:
        cell["warnings"] = summary["warnings"]
    if cell.get("keras") == GRAPH and (cell["status"] == "match" or graph_source):
        cell.pop("divergence_note", None)  # a graph source: the node search runs
    runfolder.write_json(os.path.join(run, runfolder.parity_name(cell["label"])), cell)
    return cell


def _count(outputs):
    """How many probe samples a cell compared."""
    return int(len(next(iter(outputs.values())))) if outputs else 0


def _graph_outputs(run, manifest, samples=None):
    """Run ``probe.npz`` through the frozen graph (``RUN/model.pb``, names in the manifest's
    ``model.frozen_graph``) in a ``tf.compat.v1`` session: ``{output name: array}``. Raises on load failure."""
    model = GraphModel(run, manifest)
    probe = _first(runfolder.read_arrays(os.path.join(run, runfolder.PROBE)), samples)
    values = model.predict([probe[spec["name"]] for spec in manifest["model"]["inputs"]])
    values = values if isinstance(values, list) else [values]
    names = [spec["name"] for spec in manifest["model"]["outputs"]]
    return dict(zip(names, values))


def graph_cell(run, label, manifest=None, samples=None, compare=True):
    """The cell of the frozen graph (``--keras graph``): the same keys as a Keras cell; ``keras: "graph"``,
    runtime "tensorflow X (frozen graph)". A graph that does not import or run here is a ``load_error``.
    ``compare``: as ``parity_cell``'s."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    manifest = manifest or _read_manifest(run)
    origin = manifest["origin"]["env"]
    cell = {"env": label, "label": label, "keras": GRAPH, "origin": origin, "status": None, "max_abs": None,
            "max_rel": None, "cosine": None, "top1_agreement": None, "per_output": [],
            "divergence_note": NO_GRAPH_DIVERGENCE}
    timings = {}
    started = time.time()
    try:
        import tensorflow as tf

        cell["runtime"] = "tensorflow %s (frozen graph)" % tf.__version__
        outputs = _graph_outputs(run, manifest, samples)
    except EnvironmentBroken:
        raise
    except Exception as exc:  # noqa: BLE001 - a graph that does not run here is an honest cell
        broken = keras_compat.environment_broken(exc)
        if broken is not None:
            raise broken
        cell.update(status="load_error", error="%s: %s" % (type(exc).__name__, summarize_error(exc)),
                    error_class=type(exc).__name__,
                    hint=getattr(exc, "hint", None) or "The frozen graph (model.pb) does not run in this "
                    "TensorFlow: an op it holds may be gone; the converter then takes model.h5 (cell tf2).")
        cell.setdefault("runtime", "frozen graph")
        timings["load_s"] = round(time.time() - started, 3)
        cell["timings"] = timings
        runfolder.write_json(os.path.join(run, runfolder.parity_name(label)), cell)
        return cell
    timings["predict_s"] = round(time.time() - started, 3)
    runfolder.write_arrays(os.path.join(run, runfolder.reference_name(label)), outputs)
    cell["timings"] = timings

    def finish():
        return _compare(run, cell, outputs, samples, is_graph_source(manifest))

    return finish() if compare else finish


def layer_activations(keras, model, inputs, layer_names=None):
    """Every (named) layer's output for ``inputs``, as ``{layer_name: array}`` (``name/i`` for layers with
    several outputs). Works with any Keras 2/3 module; layers without a single output tensor in the model's
    graph (shared layers, nested models called twice) are skipped."""
    import numpy as np

    tensors, names = [], []
    for layer in model.layers:
        if type(layer).__name__ == "InputLayer" or (layer_names is not None and layer.name not in layer_names):
            continue
        try:
            output = layer.output
        except (AttributeError, ValueError, RuntimeError):
            continue
        if isinstance(output, (list, tuple)):
            for index, tensor in enumerate(output):
                tensors.append(tensor)
                names.append("%s/%d" % (layer.name, index))
        else:
            tensors.append(output)
            names.append(layer.name)
    probe_model = keras.models.Model(inputs=model.inputs, outputs=tensors)
    values = probe_model.predict(inputs if len(inputs) > 1 else inputs[0], batch_size=8, verbose=0)
    if not isinstance(values, (list, tuple)):
        values = [values]
    return dict((name, np.asarray(value, dtype=np.float32)) for name, value in zip(names, values))


def activations(run, label, out, flavour="auto", samples=ACTIVATION_SAMPLES):
    manifest = _read_manifest(run)
    flavour = keras_compat.resolve(flavour, manifest["model"].get("keras_flavour"))
    keras_compat.prepare(flavour)
    model = _load(run, manifest, flavour, label)
    probe = runfolder.read_arrays(os.path.join(run, runfolder.PROBE))
    feed = [probe[spec["name"]][:samples] for spec in manifest["model"]["inputs"]]
    values = layer_activations(keras_compat.keras_module(flavour), model, feed)
    if label == MIGRATED_LABEL:  # compare under the origin's layer names
        old_of, skip = migrated_names(run)
        values = dict((old_of.get(name.split("/")[0], name.split("/")[0]) + name[len(name.split("/")[0]):], value)
                      for name, value in values.items() if name.split("/")[0] not in skip)
    runfolder.write_arrays(out, values)
    return sorted(values)


def first_divergence(origin_values, candidate_values, layer_order):
    """``(first_divergent_layer or None, per-layer comparisons)`` comparing in ``layer_order``."""
    from converters.shared import metrics

    compared = []
    keys = []  # (layer, array key): a layer with several outputs has keys "layer/0", "layer/1", ...
    for layer in layer_order:
        if layer in origin_values:
            keys.append((layer, layer))
        else:
            keys.extend((layer, k) for k in sorted(origin_values) if k.startswith(layer + "/"))
    for layer, key in keys:
        if key not in candidate_values:
            continue
        result = metrics.compare(origin_values[key], candidate_values[key], name=key)
        compared.append({"layer": key, "verdict": result["verdict"], "max_abs": result["max_abs"],
                         "cosine": result["cosine"], "reasons": result["reasons"]})
        if result["verdict"] != "match":
            return layer, compared
    return None, compared


ORDER_KEY = "__order__"


def graph_activations(run, out, samples=ACTIVATION_SAMPLES):
    """The output of every node of ``RUN/model.pb`` on the first ``samples`` probe inputs: float tensors
    keyed by tensor name, in topological order (``__order__``). Works in every environment (tf.compat.v1)."""
    import numpy as np

    manifest = _read_manifest(run)
    model = GraphModel(run, manifest)
    probe = runfolder.read_arrays(os.path.join(run, runfolder.PROBE))
    feeds = [probe[spec["name"]][:samples] for spec in manifest["model"]["inputs"]]
    inputs = set(tensor.name for tensor in model.inputs)
    tensors = []
    for op in topological_ops(model.graph):
        if op.type in ("Const", "Placeholder", "NoOp"):
            continue
        for tensor in op.outputs:
            if tensor.dtype.is_floating and tensor.name not in inputs:
                tensors.append(tensor)
    values = {}
    step = min(model.batch, samples) if model.batch else samples
    for start in range(0, len(feeds[0]), step):
        fetched = model.session.run(tensors, dict((t, f[start:start + step]) for t, f in zip(model.inputs, feeds)))
        for tensor, value in zip(tensors, fetched):
            values.setdefault(tensor.name, []).append(np.asarray(value, dtype=np.float32))
    arrays = dict((name, np.concatenate(parts, axis=0) if parts[0].ndim else parts[0])
                  for name, parts in values.items())
    arrays[ORDER_KEY] = np.array([tensor.name for tensor in tensors])
    runfolder.write_arrays(out, arrays)
    return [tensor.name for tensor in tensors]


def topological_ops(graph):
    """The ops of ``graph`` in topological order (the GraphDef's order breaking ties)."""
    from converters.shared.graph_order import topological

    ops = graph.get_operations()
    inputs = dict((op.name, [t.op.name for t in op.inputs] + [c.name for c in op.control_inputs]) for op in ops)
    return [graph.get_operation_by_name(name) for name in topological([op.name for op in ops], inputs.get)]


def first_divergent_node(origin_values, candidate_values):
    """``(first node whose tensor differs or None, comparisons)``, in the origin's topological order."""
    from converters.shared import metrics

    order = [str(name) for name in origin_values[ORDER_KEY]]
    compared = []
    for name in order:
        if name not in candidate_values or name not in origin_values:
            continue
        result = metrics.compare(origin_values[name], candidate_values[name], name=name)
        compared.append({"node": name, "verdict": result["verdict"], "max_abs": result["max_abs"],
                         "cosine": result["cosine"], "reasons": result["reasons"]})
        if result["verdict"] != "match":
            return name.split(":")[0], compared
    return None, compared


def divergence(run, label, origin_label=None):
    manifest = _read_manifest(run)
    origin_label = origin_label or manifest["origin"]["env"]
    paths = [os.path.join(run, activations_name(name)) for name in (origin_label, label)]
    for path in paths:
        if not os.path.isfile(path):
            raise InputFileError("%s is missing." % path, step="divergence",
                                 hint="Run `python -m converters.shared.parity activations` (tf1.15/tf2) or "
                                      "`python -m legacy_tf1 activations` (origin) first.")
    origin_values = runfolder.read_arrays(paths[0])
    candidate_values = runfolder.read_arrays(paths[1])
    cell_path = os.path.join(run, runfolder.parity_name(label))
    cell = runfolder.read_json(cell_path) if os.path.isfile(cell_path) else {"env": label}
    if ORDER_KEY in origin_values:  # a graph: nodes of model.pb, not Keras layers
        node, compared = first_divergent_node(origin_values, candidate_values)
        cell["first_divergent_node"] = node
        cell["divergence"] = compared[-5:]
        cell["nodes_compared"] = len(compared)
        cell.pop("divergence_note", None)
        if node is None:
            cell["divergence_note"] = ("every node of model.pb matches the origin's on %d probe samples; the "
                                       "difference is in the outputs only" % ACTIVATION_SAMPLES)
        runfolder.write_json(cell_path, cell)
        return node
    layer, compared = first_divergence(origin_values, candidate_values, manifest.get("layers") or [])
    cell["first_divergent_layer"] = layer
    cell["divergence"] = compared[-5:]
    if layer:
        _name_hazards(run, cell, layer, label, origin_label)
    cell["layers_compared"] = len(compared)
    runfolder.write_json(cell_path, cell)
    return layer


def _name_hazards(run, cell, layer, label, origin_label):
    """Check the first divergent layer against the table of known behaviour changes (``hazards``)."""
    import h5py

    from converters.shared import hazards

    try:
        with h5py.File(os.path.join(run, runfolder.MODEL_H5), "r") as handle:
            config = handle.attrs.get("model_config")
        configs = hazards.layer_configs(config) if config is not None else {}
    except Exception:  # noqa: BLE001 - no config, no lookup: the note below says so
        configs = {}
    class_name, layer_config = configs.get(layer, (None, {}))
    context = {"env": label, "keras": cell.get("keras"), "origin": origin_label}
    cell["hazards"] = hazards.lookup(layer, class_name, layer_config, context)
    if not cell["hazards"]:
        cell["hazard_note"] = hazards.NO_KNOWN_HAZARD % (layer, class_name or "class unknown")
    elif label == MIGRATED_LABEL:
        cell["hazard_note"] = ("the migration applies the fix of %s to %s, yet the layer diverges: a bug in "
                               "tfbridge's migration; report it" % (", ".join(h["id"] for h in cell["hazards"]), layer))


def _parser():
    parser = argparse.ArgumentParser(prog="python -m converters.shared.parity", description=__doc__.split("\n\n")[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def run(argv):
    command = "parity"
    if argv and argv[0] in ("activations", "divergence"):
        command, argv = argv[0], argv[1:]
    parser = _parser()
    parser.add_argument("run", help="run folder made by legacy_tf1 resave")
    parser.add_argument("--label", required=True, help="name of this matrix cell, e.g. tf1.15, tf2, tf2-keras3")
    if command == "parity":
        parser.add_argument("--keras", default="auto", choices=keras_compat.FLAVOURS + (GRAPH,),
                            help="the Keras that loads model.h5, or graph: model.pb in a tf.compat.v1 session")
        parser.add_argument("--samples", type=int, default=0,
                            help="the probe's first N samples (--parity-samples; 0: all)")
    elif command == "activations":
        parser.add_argument("--keras", default="auto", choices=keras_compat.FLAVOURS + (GRAPH,),
                            help="the Keras that loads model.h5, or graph: every node of model.pb")
    if command == "activations":
        parser.add_argument("--out", help="output .npz (default RUN/activations_LABEL.npz)")
        parser.add_argument("--samples", type=int, default=ACTIVATION_SAMPLES)
    if command == "divergence":
        parser.add_argument("--origin-label", default=None)
    args = parser.parse_args(argv)
    if not os.path.isdir(args.run):
        raise UsageError("run folder %s does not exist." % args.run, step=command)
    if command == "activations":
        out = args.out or os.path.join(args.run, activations_name(args.label))
        if args.keras == GRAPH:
            names = graph_activations(args.run, out, args.samples)
            print("%d node outputs -> %s" % (len(names), out))
            return 0
        names = activations(args.run, args.label, out, args.keras, args.samples)
        print("%d layer outputs -> %s" % (len(names), out))
        return 0
    if command == "divergence":
        layer = divergence(args.run, args.label, args.origin_label)
        print("first divergent layer: %s" % layer)
        return 0
    runfolder.await_file(args.run, runfolder.MANIFEST, before=lambda: warm_up(args.keras))
    cell = parity_cell(args.run, args.label, args.keras, args.samples)
    print("%s: %s (max_abs %s)" % (args.label, cell["status"], cell["max_abs"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(cli.main(run, step="parity"))
