"""Re-save a legacy model in its origin environment and record what every later check compares against.

For whom: ``python -m legacy_tf1 resave`` (run by ``converters.verify`` in tf1.13 or tf1.15). Writes, into
the run folder, each file atomically (``converters.runfolder``):

- ``model.h5``           the model re-saved by the origin Keras, without optimizer state
- ``model.pb``           its frozen inference graph (for ``from_frozen_graph`` in tf2), when freezing works
- ``probe.npz``          the probe inputs, keyed by model input name
- ``manifest.json``      written once the model files and the probe are: the steps that started beside
                         the re-save (``converters.runfolder.await_file``) begin their work when it appears
- ``reference_<env>.npz`` the origin's outputs on the probe, keyed by model output name, written last (the
                         manifest is then written again, with the time the probe took)
- ``custom_objects.py``  a copy of ``--custom-objects``, so the run folder is self-contained

Probe: ``--probe-samples`` (default 100, ``converters.options``) inputs. From data when there is some:
``--probe PATH`` (a separate source), else ``--calib PATH``, whose seeded permutation gives calibration its
first samples and the probe its last ones, so that the tf2 conversion step calibrates on samples the
probe does not hold (``converters.shared.calibration.draw_probe``, the same code the tf2 step draws a
TF 2.x model's probe with; the manifest records the indices and content hashes of the probe's samples).
Without data: uniform random inputs in ``--input-range`` with ``--seed`` (default 0). The default range is
[0, 255] for image-like inputs (4-D: pixels before any preprocessing, the same magnitude as
mean-subtracted pixels that vggface-style models take) and [-1, 1] for others; the range is recorded in
the manifest. Uniform noise exercises every weight but is not the data distribution.

What can go wrong: ``UntrustedModelError`` (Lambda without ``--trust-model``), ``ModelLoadError``,
``UsageError`` (a model input with unknown dimensions and no probe data to fix them).
"""

import os
import time

import numpy as np

from converters import options, runfolder
from converters.preflight_options import parse_range  # noqa: F401 - resave.parse_range, as before
from converters.errors import CalibrationDataError, UsageError
from legacy_tf1 import compat, inspection, loading

DEFAULT_SAMPLES = None  # converters.options.probe_size: 100, or half of a small --calib source
DEFAULT_SEED = options.DEFAULT_SEED
IMAGE_RANGE = (0.0, 255.0)
OTHER_RANGE = (-1.0, 1.0)


def _tensor_spec(tensor, name):
    shape = [None if dim is None else int(dim) for dim in tensor.shape.as_list()]
    return {"name": name, "tensor": tensor.name, "shape": shape, "dtype": tensor.dtype.base_dtype.name}


def default_range(shape):
    return IMAGE_RANGE if len(shape) == 4 else OTHER_RANGE


def make_probe(inputs, samples, seed, input_range=None, calib=None, preprocess=None, probe=None):
    """(arrays keyed by input name, probe description for the manifest).

    ``probe``: a separate probe source (``--probe``); else ``calib`` shared with calibration (the probe
    takes the last ``samples`` positions of its seeded permutation); else random data.
    """
    data = probe or calib
    if data:
        from converters.shared.calibration import draw_probe

        # one input: an image folder, an image, .npy or .npz of any rank; several: an .npz with one array
        # per input name (converters.shared.calibration.MultiSource)
        drawn = draw_probe(data, tuple(inputs[0]["shape"]), preprocess or "raw", samples, seed,
                           shared=not probe, input_name=inputs[0]["name"], batch_first=True,
                           inputs=[(spec["name"], tuple(spec["shape"])) for spec in inputs])
        arrays = dict((spec["name"], np.asarray(drawn.arrays.get(spec["name"], drawn.array), dtype=np.float32))
                      for spec in inputs)
        info = {"source": "probe" if probe else "calibration", "preprocess": preprocess or "raw",
                "range": [float(arrays[inputs[0]["name"]].min()), float(arrays[inputs[0]["name"]].max())]}
        if len(inputs) > 1:
            info["ranges"] = dict((name, [float(a.min()), float(a.max())]) for name, a in arrays.items())
        info.update(drawn.describe())
        return arrays, info
    rng = np.random.RandomState(seed)
    arrays, ranges = {}, {}
    for spec in inputs:
        if any(dim is None for dim in spec["shape"][1:]):
            raise UsageError("input %s has unknown dimensions %s, so a random probe cannot be shaped."
                             % (spec["name"], spec["shape"]), step="probe",
                             hint="Build the model with a fixed input_shape, or give --calib images.")
        low, high = input_range or default_range(spec["shape"])
        shape = [options.probe_size(samples)] + spec["shape"][1:]
        arrays[spec["name"]] = rng.uniform(low, high, size=shape).astype(np.float32)
        ranges[spec["name"]] = [low, high]
    first = ranges[inputs[0]["name"]] if inputs else None
    return arrays, {"source": "random_uniform", "samples": options.probe_size(samples), "seed": seed, "range": first,
                    "ranges": ranges, "explicit_range": input_range is not None}


RECURRENT = ("LSTM", "GRU", "SimpleRNN")


def unrolled_for_graph(model, flavour, custom_objects_path=None):
    """``(model to freeze, names of the recurrent layers unrolled)``.

    A Keras 2 recurrent layer (LSTM, GRU, SimpleRNN) with ``unroll=False`` runs a TF 1.x ``while_loop``
    over TensorArrays; TF 2.x's TFLite converter has no builtin op for those (``TensorArrayV3``), and its
    calibrator crashes on the TF 2.x loop of the same layer. With a static number of time steps the layer
    can be unrolled: the same weights and arithmetic, one cell per step, plain ops that convert to full
    int8. So the frozen graph (``model.pb``) is made from a clone with ``unroll=True`` and the same weights;
    ``model.h5`` keeps the model as it was. The tf2-graph parity cell checks the clone against the origin.
    """
    config = model.get_config()
    layers = config if isinstance(config, list) else config.get("layers") or []
    unrolled = []
    for layer in layers:
        settings = layer.get("config") or {}
        if layer.get("class_name") in RECURRENT and not settings.get("unroll"):
            keras_layer = model.get_layer(settings.get("name"))
            steps = keras_layer.input_shape[1] if isinstance(keras_layer.input_shape, tuple) else None
            if steps is None:
                continue  # a dynamic number of steps cannot be unrolled: the loop stays
            settings["unroll"] = True
            unrolled.append(settings["name"])
    if not unrolled:
        return model, []
    from converters.shared.keras_compat import load_custom_objects

    custom = load_custom_objects(custom_objects_path) if custom_objects_path else {}
    with compat.custom_object_scope(flavour, custom):
        clone = type(model).from_config(config, custom_objects=custom)
    clone.set_weights(model.get_weights())
    return clone, unrolled


def resave(model_path, out, origin_env, arch=None, custom_objects=None, trust_model=False,
           samples=DEFAULT_SAMPLES, seed=DEFAULT_SEED, input_range=None, calib=None, preprocess=None,
           probe_source=None):
    """Run the whole re-save step (see the module docstring); return the manifest dict."""
    timings = {}
    started = time.time()
    info = inspection.inspect_file(model_path)
    if not os.path.isdir(out):
        os.makedirs(out)
    copied = None
    if custom_objects:
        copied = os.path.join(out, "custom_objects.py")
        if os.path.abspath(custom_objects) != os.path.abspath(copied):
            with open(custom_objects, "rb") as handle:
                runfolder.write_bytes(copied, handle.read())
    np.random.seed(seed)
    compat.set_seed(seed)
    model, flavour, info = loading.load(model_path, arch=arch, custom_objects_path=copied or custom_objects,
                                        trust_model=trust_model, info=info)
    timings["load_s"] = round(time.time() - started, 3)
    inputs = [_tensor_spec(t, n) for t, n in zip(model.inputs, model.input_names)]
    outputs = [_tensor_spec(t, n) for t, n in zip(model.outputs, model.output_names)]
    # the probe first: a model we cannot probe fails before the expensive save and freeze
    probe, probe_info = make_probe(inputs, samples, seed, input_range, calib, preprocess, probe=probe_source)
    for name, array in probe.items():
        if not np.all(np.isfinite(array)):
            raise CalibrationDataError("probe input %s has non-finite values." % name, step="probe")

    t0 = time.time()
    resaved = os.path.join(out, runfolder.MODEL_H5)
    with runfolder.atomic_path(resaved) as temporary:
        compat.save_h5(model, flavour, temporary)  # all weights in one session run (issue 13)
    timings["save_s"] = round(time.time() - t0, 3)

    t0 = time.time()
    frozen = None
    try:
        graph_model, unrolled = unrolled_for_graph(model, flavour, copied or custom_objects)
        output_ops = [t.op.name for t in graph_model.outputs]
        graph_def = compat.freeze_graph(flavour, output_ops)
        runfolder.write_bytes(os.path.join(out, runfolder.MODEL_PB), graph_def.SerializeToString())
        frozen = {"path": runfolder.MODEL_PB, "input_arrays": [t.op.name for t in graph_model.inputs],
                  "output_arrays": output_ops,
                  "input_shapes": dict((t.op.name, [1] + spec["shape"][1:])
                                       for t, spec in zip(graph_model.inputs, inputs)),
                  "nodes": len(graph_def.node), "unrolled": unrolled}
    except Exception as exc:  # noqa: BLE001 - a model we cannot freeze still has a valid .h5
        frozen = None
        freeze_error = "%s: %s" % (type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
    else:
        freeze_error = None
    timings["freeze_s"] = round(time.time() - t0, 3)

    runfolder.write_arrays(os.path.join(out, runfolder.PROBE), probe)
    manifest = _manifest(model_path, model, flavour, info, resaved, inputs, outputs, arch, copied, trust_model,
                         frozen, freeze_error, origin_env, probe_info, timings)
    # the model is ready: the steps that need only it (the conversion, the cells' loading) start on it now
    runfolder.write_json(os.path.join(out, runfolder.MANIFEST), manifest)

    t0 = time.time()
    feed = [probe[spec["name"]] for spec in inputs]
    predictions = model.predict(feed if len(feed) > 1 else feed[0], batch_size=min(8, max(1, len(feed[0]))))
    if not isinstance(predictions, list):
        predictions = [predictions]
    references = dict((spec["name"], np.asarray(p, dtype=np.float32)) for spec, p in zip(outputs, predictions))
    runfolder.write_arrays(os.path.join(out, runfolder.reference_name(origin_env)), references)
    timings["probe_s"] = round(time.time() - t0, 3)
    runfolder.write_json(os.path.join(out, runfolder.MANIFEST), manifest)
    return manifest


def _manifest(model_path, model, flavour, info, resaved, inputs, outputs, arch, copied, trust_model, frozen,
              freeze_error, origin_env, probe_info, timings):
    origin = {"env": origin_env}
    origin.update(compat.fingerprint(flavour))
    layers = [layer.name for layer in model.layers if type(layer).__name__ != "InputLayer"]
    manifest = {
        "schema_version": runfolder.SCHEMA_VERSION,
        "model": {
            "path": os.path.abspath(model_path),
            "sha256": runfolder.sha256_file(model_path),
            "resaved_path": runfolder.MODEL_H5,
            "resaved_sha256": runfolder.sha256_file(resaved),
            "inputs": [dict((k, s[k]) for k in ("name", "shape", "dtype")) for s in inputs],
            "outputs": [dict((k, s[k]) for k in ("name", "shape", "dtype")) for s in outputs],
            "keras_flavour": flavour,
            "keras_version_in_file": info.get("keras_version"),
            "weights_only": info["weights_only"],
            "arch": arch,
            "custom_objects": "custom_objects.py" if copied else None,
            "trusted": bool(trust_model),
            "lambda_layers": info.get("lambda_layers") or [],
            "frozen_graph": frozen,
            "frozen_graph_error": freeze_error,
            "parameters": int(model.count_params()),
        },
        "origin": origin,
        "probe": probe_info,
        "layers": layers,
        "timings": timings,
    }
    return manifest

