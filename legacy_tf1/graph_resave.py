"""The re-save step of a TF 1.x graph source: the run folder of a Keras model, without ``model.h5``.

For whom: ``python -m legacy_tf1 resave`` of a graph (``legacy_tf1._cli``), in the origin environment
(tf1.13 or tf1.15, Python 3.7); the Keras ``.h5`` path is ``legacy_tf1.resave``. It reads the source
(``graph_sources``), finds its signature (``graph_signature``), runs the source graph as it is on the probe
(training switches fed for inference: the references), rewrites it for inference (``graph_inference``) and
checks the rewritten graph here against those references: a rewrite that changed the result is a
``ModelLoadError``, never a silent difference. It writes ``model.pb`` (serialized deterministically: the same
graph, the same bytes), ``probe.npz``, ``reference_<origin>.npz`` and ``manifest.json`` (``model.source_kind``,
named inputs / outputs and shapes, ``frozen_graph``: ``input_arrays``, ``output_arrays``, ``input_shapes``,
``batch``, ``transforms``, ``check``).
"""

import os
import time

import numpy as np

from converters import runfolder
from converters.errors import ModelLoadError
from legacy_tf1 import compat
from legacy_tf1.graph_inference import add_output_aliases, inference_graph, output_alias, output_ops
from legacy_tf1.graph_signature import discover
from legacy_tf1.graph_sources import import_graph, read_source, source_sha256

tf = compat.tf

GRAPH_BATCH = 8


def feeds_for(found, probe, start, stop, graph):
    feed = {}
    for spec in found["inputs"]:
        feed[graph.get_tensor_by_name(spec["tensor"])] = probe[spec["name"]][start:stop]
    return feed


def batch_of(found):
    sizes = [spec.get("batch") for spec in found["inputs"] if spec.get("batch")]
    return int(sizes[0]) if sizes else GRAPH_BATCH


def run_graph(session, found, probe, extra_feed=None):
    """The outputs of ``found`` for the probe, in batches (a graph whose inputs have a static batch size is
    fed that many at a time): ``{output name: float32 array}``."""
    graph = session.graph
    fetches = [graph.get_tensor_by_name(spec["tensor"]) for spec in found["outputs"]]
    total = len(probe[found["inputs"][0]["name"]])
    step = batch_of(found)
    parts = [[] for _ in fetches]
    for start in range(0, total, step):
        feed = feeds_for(found, probe, start, start + step, graph)
        feed.update(extra_feed or {})
        for collected, value in zip(parts, session.run(fetches, feed)):
            collected.append(np.asarray(value, dtype=np.float32))
    return dict((spec["name"], np.concatenate(part, axis=0)) for spec, part in zip(found["outputs"], parts))


def training_feed(found, graph):
    """The training switches fed at inference (``False``, ``keep_prob`` 1.0) when the *source* graph runs."""
    feed = {}
    for entry in found["fixed"]:
        if entry["value"] == "default":
            continue
        tensor = graph.get_tensor_by_name(entry["node"] + ":0")
        feed[tensor] = np.asarray(entry["value"], dtype=tensor.dtype.as_numpy_dtype)
    return feed


def _session_config():
    return compat.v1().ConfigProto(intra_op_parallelism_threads=2, inter_op_parallelism_threads=1)


def _open_session(source, graph):
    """A session over ``graph`` holding ``source``'s variables (SavedModel, checkpoint), or its constants."""
    session = compat.v1().Session(graph=graph, config=_session_config())
    try:
        with graph.as_default():
            if source.kind == "saved_model":
                loader = getattr(compat.v1().saved_model, "loader", None) or tf.saved_model.loader
                loader.load(session, source.tags, source.path)
            elif source.kind == "checkpoint":
                saver = compat.v1().train.import_meta_graph(source.path, clear_devices=True)
                if saver is None:
                    raise ModelLoadError("the checkpoint graph %s has no variables to restore." % source.path,
                                         step="resave", hint="Give the frozen graph (.pb) instead.")
                saver.restore(session, source.prefix)
            else:
                compat.v1().import_graph_def(source.graph_def, name="")
    except (tf.errors.OpError, ValueError, IOError) as exc:
        session.close()
        raise ModelLoadError("loading %s in TensorFlow %s failed: %s" % (
            source.path, tf.__version__, str(exc).splitlines()[0][:300]), step="resave",
            hint="Check that the variable files belong to this graph, and the origin (--origin).")
    return session


def resave_graph(model_path, out, origin_env, inputs=None, outputs=None, tags=None, signature=None, samples=None,
                 seed=0, input_range=None, calib=None, preprocess=None, probe_source=None):
    """Re-save the graph source ``model_path`` into the run folder ``out`` (module docstring); returns the
    manifest dict."""
    from converters.shared import metrics
    from legacy_tf1.resave import make_probe

    timings = {}
    started = time.time()
    source = read_source(model_path, tags, signature)
    found = discover(source, inputs, outputs)
    if not os.path.isdir(out):
        os.makedirs(out)
    np.random.seed(seed)
    probe, probe_info = make_probe(found["inputs"], samples, seed, input_range, calib, preprocess,
                                   probe=probe_source)
    for name, array in probe.items():
        if not np.all(np.isfinite(array)):
            from converters.errors import CalibrationDataError

            raise CalibrationDataError("probe input %s has non-finite values." % name, step="probe")
    graph = tf.Graph()
    session = _open_session(source, graph)
    try:
        timings["load_s"] = round(time.time() - started, 3)
        t0 = time.time()
        # the reference: the source graph as it is, its training switches fed for inference
        found_here = dict(found, graph=graph)
        references = run_graph(session, found_here, probe, training_feed(found, graph))
        timings["probe_s"] = round(time.time() - t0, 3)
        t0 = time.time()
        with graph.as_default():
            graph_def = graph.as_graph_def() if source.kind != "frozen_graph" else source.graph_def
        add_output_aliases(graph_def, found)
        parameters = _parameters(session, graph) if source.kind != "frozen_graph" else None
        frozen, transforms = inference_graph(graph_def, found, session if source.kind != "frozen_graph" else None)
    finally:
        session.close()
    if parameters is None:  # a frozen graph: its float constants
        parameters = int(sum(int(np.prod([d.size for d in node.attr["value"].tensor.tensor_shape.dim] or [1]))
                             for node in frozen.node if node.op == "Const"
                             and node.attr["dtype"].type == tf.float32.as_datatype_enum))
    runfolder.write_bytes(os.path.join(out, runfolder.MODEL_PB), frozen.SerializeToString(deterministic=True))
    timings["freeze_s"] = round(time.time() - t0, 3)
    # the inference graph must compute what the source computes, here, before any other TF sees it
    t0 = time.time()
    check_graph = import_graph(frozen, step="resave")
    with compat.v1().Session(graph=check_graph, config=_session_config()) as check_session:
        found_check = dict(found, outputs=[dict(spec, tensor=(spec["tensor"] if spec["tensor"].endswith(":0")
                                                              else output_alias(spec) + ":0"))
                                           for spec in found["outputs"]])
        rerun = run_graph(check_session, found_check, probe)
    check = metrics.compare_outputs(references, rerun)
    timings["check_s"] = round(time.time() - t0, 3)
    if check["verdict"] != "match":
        raise ModelLoadError(
            "the inference graph made from %s does not compute what the source graph computes in TF %s (max |d| "
            "%.3g, cosine %.6f) after: %s." % (model_path, tf.__version__, check["max_abs"], check["cosine"] or 0.0,
                                               "; ".join(t["what"] for t in transforms) or "no change"),
            step="resave", hint="A training-only part tfbridge does not know how to fix (e.g. dropout without a "
                                "training switch): export the graph for inference, or give --outputs/--inputs "
                                "that avoid it.")
    runfolder.write_arrays(os.path.join(out, runfolder.PROBE), probe)
    runfolder.write_arrays(os.path.join(out, runfolder.reference_name(origin_env)), references)
    origin = {"env": origin_env}
    origin.update(fingerprint())
    input_arrays = [spec["op"] for spec in found["inputs"]]
    output_arrays = output_ops(found)
    frozen_info = {"path": runfolder.MODEL_PB, "input_arrays": input_arrays, "output_arrays": output_arrays,
                   "input_shapes": dict((spec["op"], [spec.get("batch") or 1] + spec["shape"][1:])
                                        for spec in found["inputs"]),
                   "batch": batch_of(found) if any(spec.get("batch") for spec in found["inputs"]) else None,
                   "nodes": len(frozen.node), "unrolled": [], "transforms": transforms,
                   "check": {"verdict": check["verdict"], "max_abs": check["max_abs"], "cosine": check["cosine"]}}
    keep = ("name", "shape", "dtype")
    manifest = {
        "schema_version": runfolder.SCHEMA_VERSION,
        "model": {
            "path": os.path.abspath(model_path),
            "sha256": source_sha256(model_path),
            "source_kind": source.kind,
            "resaved_path": None,
            "inputs": [dict((k, s[k]) for k in keep) for s in found["inputs"]],
            "outputs": [dict((k, s[k]) for k in keep) for s in found["outputs"]],
            "tensors": dict((s["name"], s["tensor"]) for s in found["inputs"] + found["outputs"]),
            "keras_flavour": None,
            "weights_only": False,
            "trusted": False,
            "lambda_layers": [],
            "frozen_graph": frozen_info,
            "frozen_graph_error": None,
            "transforms": transforms,
            "fixed": found["fixed"],
            "skipped_outputs": found["skipped_outputs"][:20],
            "graph_source": {"tags": source.tags, "signature": source.signature_key, "producer": source.producer,
                             "tensorflow_version": source.tf_version, "nodes": len(source.graph_def.node),
                             "prefix": source.prefix},
            "parameters": parameters,
        },
        "origin": origin,
        "probe": probe_info,
        "layers": [],
        "timings": timings,
    }
    runfolder.write_json(os.path.join(out, runfolder.MANIFEST), manifest)
    return manifest


def _parameters(session, graph):
    with graph.as_default():
        variables = compat.v1().global_variables()
    return int(sum(int(np.prod(v.shape.as_list())) for v in variables if v.shape.is_fully_defined()))


def fingerprint():
    """The origin fingerprint of a graph run (no Keras involved)."""
    import platform

    return {"python": platform.python_version(), "tensorflow": tf.__version__, "keras": None,
            "keras_flavour": "graph", "h5py": None, "numpy": np.__version__}
