"""Loading a model for the int8 converter: one entry point per kind of source, one dispatcher.

For whom: the conversion step (``converters.tf2.tflite_convert``) and the tests; ``tf2`` environment only
(Python 3.11, TF 2.21, tf-keras, Keras 3). The one place in ``converters.tf2`` that branches on the Keras
flavour and on the kind of source (tf2onnx's ``tf_loader`` pattern).

Sources (``load_source`` picks one), each with its *route* (recorded in tflite.json, with its time):

==================== ========================= ==================================================
source               route / entry point       how
==================== ========================= ==================================================
in-memory Keras      ``keras``                 concrete function with batch 1 -> from_concrete_functions
                     ``from_keras_model``      (a Keras 3 object: ``from_keras3_model``, as a ``.keras``)
``.h5``              ``keras_h5`` ``from_h5``  tf_keras.models.load_model (legacy Keras 2), then as above
``.keras``           ``keras3``                keras.saving.load_model (Keras 3, ``safe_mode`` unless
                     ``from_keras3``           trusted), export() to a SavedModel, then as a SavedModel
SavedModel folder    ``saved_model``           tf.saved_model.load, serving signature with batch 1
                     ``from_saved_model``
run folder           ``frozen_graph``          tf.compat.v1 from_frozen_graph(RUN/model.pb) with the names in
                     ``from_run_folder``       manifest ``model.frozen_graph``; if that route fails:
                     ``keras_h5`` (fallback)   RUN/model.h5 as above (a ``Deferred``, loaded only if needed).
==================== ========================= ==================================================

The batch dimension is fixed to 1: an NPU delegate (VX / Ethos-U) needs static shapes, and a
shape_signature of -1 would make ``converters.tf2.npu`` call the model not ready.

Safety: before Keras sees an ``.h5`` or ``.keras`` file, its stored configuration (the ``model_config``
attribute, read with h5py; ``config.json`` inside the ``.keras`` zip) goes through
``converters.safety.check_config``, which refuses Lambda layers at any depth unless ``trust_model``.
A Keras 3 file is also loaded with ``safe_mode=not trust_model``. A SavedModel or frozen graph holds no
Python code.

What can go wrong: ``InputFileError`` (missing path, unknown format, incomplete run folder),
``ModelLoadError`` (the source does not load), ``UntrustedModelError`` (Lambda layers without
``trust_model``).
"""

import contextlib
import dataclasses
import os
import shutil
import tempfile
import zipfile

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # tf.keras = Keras 2 (tf_keras): legacy .h5 need it
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

from converters import runfolder  # noqa: E402
from converters.errors import InputFileError, ModelLoadError, UntrustedModelError  # noqa: E402

ROUTES = ("keras", "keras_h5", "keras3", "saved_model", "frozen_graph")


@dataclasses.dataclass
class Source:
    """A loaded source: what the converter is built from, and the model's input/output description."""

    kind: str  # one of ROUTES
    path: str | None
    inputs: list  # [{name, shape, dtype}]
    outputs: list
    build: object  # () -> a configured-but-unquantized converter
    fallback: "Deferred | None" = None  # a run folder's model.h5: loaded only if the primary route fails
    keras_model: object = None

    @property
    def input_shape(self):
        return self.inputs[0]["shape"]


@dataclasses.dataclass
class Deferred:
    """A source loaded only when needed (``load()`` -> ``Source``); ``kind``/``path`` name it in attempts."""

    kind: str
    path: str
    trusted: bool

    def load(self):
        return from_h5(self.path, self.trusted)


@contextlib.contextmanager
def scratch_dir():
    """A temporary folder removed afterwards (Keras 3 SavedModel exports)."""
    path = tempfile.mkdtemp(prefix="tfbridge-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _batch1(shape):
    shape = list(shape)
    if shape and (shape[0] is None or shape[0] == -1):
        shape[0] = 1
    return [None if d is None else int(d) for d in shape]


def _clean(name):
    return name.split(":")[0]


# ------------------------------------------------------------------------------------- the Lambda gate

def h5_model_config(path):
    """The ``model_config`` attribute of an .h5 as text (read with h5py, nothing executed), or None.

    None when the file is not HDF5 or has no stored architecture: tf_keras then fails with its own error
    (a ``ModelLoadError``) without running anything.
    """
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            config = handle.attrs.get("model_config")
    except OSError:
        return None
    if isinstance(config, bytes):
        config = config.decode("utf-8")
    return config


def keras3_config(path):
    """The ``config.json`` inside a Keras 3 ``.keras`` zip as text, or None when it is not such a zip."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.read("config.json").decode("utf-8")
    except (OSError, KeyError, zipfile.BadZipFile):
        return None


def _gate(config_text, path, trust_model):
    """Refuse (``UntrustedModelError``) a stored configuration with Lambda layers unless trusted."""
    from converters import safety

    if config_text is None:
        return []
    return safety.check_config(config_text, where=path, trust_model=trust_model, step="load")


# ---------------------------------------------------------------------------- one entry point per kind

def from_keras_model(model, kind="keras", path=None):
    """A ``Source`` from a Keras 2 (tf_keras) or Keras 3 model object, traced with batch 1."""
    specs = [tf.TensorSpec(_batch1(t.shape), t.dtype, name=_clean(t.name)) for t in model.inputs]

    def build():
        function = tf.function(lambda *xs: model(list(xs) if len(xs) > 1 else xs[0], training=False))
        concrete = function.get_concrete_function(*specs)
        return tf.lite.TFLiteConverter.from_concrete_functions([concrete], model)

    inputs = [{"name": _clean(t.name), "shape": _batch1(t.shape), "dtype": str(t.dtype.name)}
              for t in model.inputs]
    outputs = [{"name": _clean(t.name), "shape": _batch1(t.shape), "dtype": str(t.dtype.name)}
               for t in model.outputs]
    return Source(kind, path, inputs, outputs, build, keras_model=model)


def load_h5(path, trust_model=False):
    """The tf_keras model of an ``.h5`` file, after the Lambda gate on its stored configuration."""
    _gate(h5_model_config(path), path, trust_model)
    import tf_keras

    try:
        return tf_keras.models.load_model(path, compile=False)
    except Exception as exc:  # noqa: BLE001 - any load failure becomes one paragraph
        raise ModelLoadError(
            "tf_keras could not load %s (%s: %s)." % (path, type(exc).__name__, str(exc).splitlines()[0][:300]),
            step="load",
            hint="A legacy file (TF 1.x, Lambda layers, custom layers) should go through "
                 "`nox -s convert_legacy`, which re-saves it in its own TF version first.") from exc


def from_h5(path, trust_model=False):
    """A ``Source`` (route ``keras_h5``) from a Keras 2 ``.h5`` file, loaded with tf_keras."""
    return from_keras_model(load_h5(path, trust_model), "keras_h5", path)


def from_saved_model(path, kind="saved_model"):
    """A ``Source`` from a SavedModel folder through its serving signature (batch fixed to 1)."""
    try:
        loaded = tf.saved_model.load(path)
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError("cannot load the SavedModel %s (%s)." % (path, str(exc).splitlines()[0][:300]),
                             step="load") from exc
    signatures = getattr(loaded, "signatures", {})
    if not signatures:
        raise ModelLoadError("the SavedModel %s has no serving signature." % path, step="load",
                             hint="Save it with a signature (model.export(path) or tf.saved_model.save).")
    key = "serving_default" if "serving_default" in signatures else sorted(signatures)[0]
    signature = signatures[key]
    _, kwargs = signature.structured_input_signature
    names = sorted(kwargs)
    specs = [tf.TensorSpec(_batch1(kwargs[n].shape), kwargs[n].dtype, name=n) for n in names]
    outputs_spec = signature.structured_outputs

    def build():
        def call(*xs):
            result = signature(**dict(zip(names, xs)))
            return [result[k] for k in sorted(result)]

        concrete = tf.function(call).get_concrete_function(*specs)
        return tf.lite.TFLiteConverter.from_concrete_functions([concrete], loaded)

    inputs = [{"name": n, "shape": _batch1(kwargs[n].shape), "dtype": kwargs[n].dtype.name} for n in names]
    outputs = [{"name": k, "shape": _batch1(outputs_spec[k].shape), "dtype": outputs_spec[k].dtype.name}
               for k in sorted(outputs_spec)]
    return Source(kind, path, inputs, outputs, build)


def from_keras3(path, workdir, trust_model=False):
    """A ``Source`` (route ``keras3``) from a Keras 3 ``.keras`` file, exported to a SavedModel in ``workdir``."""
    _gate(keras3_config(path), path, trust_model)
    import keras

    try:
        # safe_mode refuses Lambda layers whose code is stored as bytecode; --trust-model lifts it
        model = keras.saving.load_model(path, compile=False, safe_mode=not trust_model)
    except ValueError as exc:
        if "safe_mode" in str(exc) or "Lambda" in str(exc):
            raise UntrustedModelError(
                "%s has Lambda layer(s); loading them runs Python code stored in the file." % path,
                step="load", hint="Give --trust-model only if you trust where the file comes from.") from exc
        raise ModelLoadError("Keras %s could not load %s (%s)." % (keras.__version__, path,
                             str(exc).splitlines()[0][:300]), step="load") from exc
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError("Keras %s could not load %s (%s)." % (keras.__version__, path,
                             str(exc).splitlines()[0][:300]), step="load") from exc
    try:
        model.inputs  # a layer that failed while Keras rebuilt the model leaves it unbuilt (only a warning)
    except AttributeError as exc:
        raise ModelLoadError("Keras %s loaded %s but could not build it (%s); a layer failed while the model "
                             "was rebuilt (see the warnings above)." % (keras.__version__, path, exc),
                             step="load") from exc
    return from_keras3_model(model, workdir, path)


def from_keras3_model(model, workdir, path=None):
    """A ``Source`` (route ``keras3``) from a Keras 3 model object (loaded from a ``.keras`` file, or
    live in the user's process: ``tfbridge.inprocess``), exported to a SavedModel in ``workdir``."""
    # Keras 3 models are not tf.keras models: the converter reads them through an exported SavedModel.
    exported = os.path.join(workdir, "keras3_saved_model")
    model.export(exported, format="tf_saved_model", verbose=False, input_signature=_keras3_signature(model))
    source = from_saved_model(exported, kind="keras3")
    source.path = path
    source.keras_model = model
    return source


def _keras3_signature(model):
    """A single-input functional model's input, named after its InputLayer (as the model loaded from its
    ``.keras`` file names it; a live model's input tensor is named "keras_tensor"), so that the live
    model and its file convert to the same bytes. None (Keras's own signature) for any other model."""
    inputs = list(getattr(model, "inputs", None) or [])
    history = getattr(inputs[0], "_keras_history", None) if len(inputs) == 1 else None
    if history is None:
        return None
    return [tf.TensorSpec(inputs[0].shape, inputs[0].dtype, name=history.operation.name)]


def is_keras3_model(model):
    """True for a Keras 3 model object (package ``keras`` >= 3), False for tf_keras / tf.keras 2.x."""
    if type(model).__module__.split(".")[0] != "keras":
        return False
    import keras

    return int(keras.__version__.split(".")[0]) >= 3


def from_frozen_graph(run_dir, manifest):
    """A ``Source`` (route ``frozen_graph``) from a run folder's model.pb and its manifest's tensor names."""
    graph = manifest.get("model", {}).get("frozen_graph") or {}
    pb = os.path.join(run_dir, graph.get("path") or runfolder.MODEL_PB)
    if not os.path.exists(pb):
        raise InputFileError("no frozen graph at %s." % pb, step="convert")
    input_arrays = list(graph.get("input_arrays") or [])
    output_arrays = list(graph.get("output_arrays") or [])
    if not input_arrays or not output_arrays:
        raise InputFileError("manifest model.frozen_graph lacks input_arrays/output_arrays.", step="convert")
    model_inputs = manifest.get("model", {}).get("inputs") or []
    input_shapes = {}
    for array_name, described in zip(input_arrays, model_inputs):
        input_shapes[array_name] = _batch1(described["shape"])
    for array_name, shape in (graph.get("input_shapes") or {}).items():
        input_shapes[array_name] = _batch1(shape)

    def build():
        folded = fold_zeros_like(pb, input_arrays, input_shapes)
        if folded is None:
            return tf.compat.v1.lite.TFLiteConverter.from_frozen_graph(
                pb, input_arrays, output_arrays, input_shapes=input_shapes or None)
        handle, path = tempfile.mkstemp(suffix=".pb", prefix="tfbridge-folded-")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(folded.SerializeToString())
            return tf.compat.v1.lite.TFLiteConverter.from_frozen_graph(
                path, input_arrays, output_arrays, input_shapes=input_shapes or None)
        finally:
            os.remove(path)

    inputs = [{"name": n, "shape": input_shapes.get(n), "dtype": "float32"} for n in input_arrays]
    outputs = [{"name": n, "shape": None, "dtype": "float32"} for n in output_arrays]
    for described, out in zip(manifest.get("model", {}).get("outputs") or [], outputs):
        out["shape"] = _batch1(described.get("shape") or [])
    return Source("frozen_graph", pb, inputs, outputs, build)


def fold_zeros_like(pb, input_arrays, input_shapes):
    """The GraphDef of ``pb`` with every ``ZerosLike`` whose shape is static at batch 1 replaced by a
    constant of zeros, or None when there is none.

    Keras 2 recurrent layers (LSTM, GRU) make their initial state as ``zeros_like(inputs)``: a ZerosLike
    op, which has no int8 kernel in TFLite (the converter would leave a float island). With the batch
    fixed to 1 (``input_shapes``), its shape is known and its value is a constant.
    """
    import numpy as np

    graph_def = tf.compat.v1.GraphDef()
    with open(pb, "rb") as handle:
        graph_def.ParseFromString(handle.read())
    if not any(node.op == "ZerosLike" for node in graph_def.node):
        return None
    graph = tf.Graph()
    with graph.as_default():
        mapped = dict(("%s:0" % name, tf.compat.v1.placeholder(tf.float32, input_shapes.get(name),
                                                                name="tfbridge_batch1_%d" % k))
                      for k, name in enumerate(input_arrays) if input_shapes.get(name))
        tf.compat.v1.import_graph_def(graph_def, input_map=mapped, name="")
    constants = {}
    for node in graph_def.node:
        if node.op == "ZerosLike":
            tensor = graph.get_tensor_by_name(node.name + ":0")
            if tensor.shape.is_fully_defined():
                constants[node.name] = np.zeros(tensor.shape.as_list(), dtype=tensor.dtype.as_numpy_dtype)
    if not constants:
        return None
    for node in graph_def.node:
        if node.name in constants:
            value = constants[node.name]
            node.op = "Const"
            del node.input[:]
            node.attr.clear()
            node.attr["dtype"].type = tf.as_dtype(value.dtype).as_datatype_enum
            node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(value))
    return graph_def


def from_run_folder(run_dir, trust_model=False):
    """A run folder's source: its frozen graph when it has one, with its ``model.h5`` as the fallback.

    The ``model.h5`` counts as trusted when the manifest says the re-save step was trusted.
    """
    manifest = runfolder.read_json(os.path.join(run_dir, runfolder.MANIFEST))
    h5 = os.path.join(run_dir, runfolder.MODEL_H5)
    fallback = None
    trusted = bool(trust_model or (manifest.get("model") or {}).get("trusted"))
    if os.path.exists(h5):
        fallback = Deferred("keras_h5", h5, trusted)
    if (manifest.get("model") or {}).get("frozen_graph") or os.path.exists(
            os.path.join(run_dir, runfolder.MODEL_PB)):
        try:
            primary = from_frozen_graph(run_dir, manifest)
        except InputFileError:
            if fallback is None:
                raise
            primary = None
        if primary is not None:
            primary.fallback = fallback
            return primary
    if fallback is not None:
        return fallback.load()
    raise InputFileError("the run folder %s holds neither model.pb nor model.h5." % run_dir,
                         step="convert", hint="Run the re-save step (convert_legacy) first.")


# ---------------------------------------------------------------------------------------- dispatcher

def load_source(source, workdir, trust_model=False):
    """Make a ``Source`` from a Keras model object, an .h5/.keras file, a SavedModel or a run folder.

    ``workdir``: a scratch folder (Keras 3 models are exported there). Raises ``InputFileError`` for a
    missing path or an unknown format, ``UntrustedModelError`` for Lambda layers in an .h5/.keras file
    without ``trust_model``, ``ModelLoadError`` when the source does not load.
    """
    if hasattr(source, "inputs") and hasattr(source, "layers"):
        if is_keras3_model(source):  # the same route as its .keras file: exported to a SavedModel
            return from_keras3_model(source, workdir)
        return from_keras_model(source, "keras", None)
    path = str(source)
    if not os.path.exists(path):
        raise InputFileError("%s does not exist." % path, step="load")
    if os.path.isdir(path):
        if os.path.exists(os.path.join(path, runfolder.MANIFEST)):
            return from_run_folder(path, trust_model)
        if os.path.exists(os.path.join(path, "saved_model.pb")):
            return from_saved_model(path)
        raise InputFileError("%s is a folder but neither a SavedModel nor a run folder." % path, step="load")
    lower = path.lower()
    if lower.endswith((".h5", ".hdf5")):
        return from_h5(path, trust_model)
    if lower.endswith(".keras"):
        return from_keras3(path, workdir, trust_model)
    raise InputFileError("%s: unknown model format (expected .h5, .keras, a SavedModel folder or a run "
                         "folder)." % path, step="load")
