"""The one home of version-specific TF 1.x / Keras symbols (tf1.13 and tf1.15, Python 3.7).

For whom: every module of ``legacy_tf1`` that needs Keras or TF graph functions. A TF 1.x process can
hold two Keras implementations: standalone ``keras`` (2.2.4 in tf1.13, 2.3.1 in tf1.15) and ``tf.keras``
(reporting "2.2.4-tf" in both). A model file must be loaded by the flavour that saved it: standalone
Keras cannot deserialize some tf.keras configs and vice versa. Both flavours share TensorFlow's default
graph but keep their own session and learning-phase state, so a process picks one flavour and stays
with it.

Flavour names: ``"keras"`` (standalone) and ``"tf.keras"``. What can go wrong: ``keras_module("keras")``
raises ``ModelLoadError`` if standalone Keras is not installed in the environment.
"""

import os

# TF 1.x prints pages of deprecation warnings on import; they drown the one paragraph we print.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

from converters.errors import ModelLoadError, UsageError  # noqa: E402
from legacy_tf1.compat_versions import version_tuple  # noqa: E402

FLAVOURS = ("keras", "tf.keras")

try:  # TF >= 1.14 moved logging under compat.v1; 1.13 has only tf.logging
    tf.compat.v1.logging.set_verbosity(tf.compat.v1.logging.ERROR)
except AttributeError:
    tf.logging.set_verbosity(tf.logging.ERROR)


TF_VERSION = version_tuple(tf.__version__)


def keras_module(flavour):
    """The Keras package for ``flavour`` ("keras" or "tf.keras")."""
    if flavour == "tf.keras":
        return tf.keras
    if flavour == "keras":
        try:
            import keras  # standalone Keras prints "Using TensorFlow backend." on stderr; harmless
        except ImportError as exc:
            from envs.venvs import broken_by_import  # a locked package gone: the environment, not the model

            broken = broken_by_import(exc, "keras", step="load")
            if broken is not None:
                raise broken
            raise ModelLoadError(
                "standalone Keras is not installed in this environment (%s)." % exc, step="load",
                hint="Use the tf1.13 or tf1.15 environment, which pin keras 2.2.4 / 2.3.1.")
        return keras
    raise UsageError("unknown Keras flavour %r (expected one of %s)." % (flavour, ", ".join(FLAVOURS)))


def keras_version(flavour):
    return keras_module(flavour).__version__


def backend(flavour):
    return keras_module(flavour).backend


def set_inference_mode(flavour):
    """Make Dropout/BatchNormalization behave as at inference *before* the model is built.

    The learning phase is baked into the graph at build time, so this must run before loading; a frozen
    graph made without it would contain the training branch of every Dropout/BN layer.
    """
    backend(flavour).set_learning_phase(0)


def session(flavour):
    return backend(flavour).get_session()


def reset(flavour):
    """Drop the current graph and session (between models built in one process, e.g. the zoo)."""
    backend(flavour).clear_session()


def set_seed(seed):
    """Seed TF's graph-level random state (weights of freshly built models become deterministic)."""
    if hasattr(tf, "set_random_seed"):  # TF 1.x
        tf.set_random_seed(seed)
    else:  # pragma: no cover - tf.compat.v1 spelling
        tf.compat.v1.set_random_seed(seed)


def v1():
    """TF's 1.x API: ``tf.compat.v1`` (TF 1.14+), else ``tf`` itself (TF 1.13)."""
    return getattr(getattr(tf, "compat", None), "v1", None) or tf


def graph_util():
    """``graph_util`` (freezing and pruning GraphDefs): moved under ``tf.compat.v1`` in TF 1.14."""
    return getattr(v1(), "graph_util", None) or tf.graph_util


def freeze_graph(flavour, output_op_names):
    """The inference graph of the current session with variables folded into constants (a GraphDef).

    ``graph_util.convert_variables_to_constants`` is the TF 1.x API the tf2 converter's
    ``from_frozen_graph`` expects; it moved under ``tf.compat.v1`` in 1.14 (both exist in 1.15).
    """
    sess = session(flavour)
    graph_util = getattr(getattr(tf, "compat", None), "v1", None)
    graph_util = getattr(graph_util, "graph_util", None) or tf.graph_util
    graph_def = sess.graph.as_graph_def()
    frozen = graph_util.convert_variables_to_constants(sess, graph_def, list(output_op_names))
    extract = getattr(graph_util, "extract_sub_graph", None)
    if extract is not None:
        frozen = extract(frozen, list(output_op_names))
    return frozen


def save_h5(model, flavour, path):
    """``model.save(path, include_optimizer=False)``, with every weight read from the session in one run.

    Why: Keras (2.2.4 / 2.3.1 and tf.keras of TF 1.13 / 1.15) reads the weights layer by layer, one
    ``session.run`` each, and a TF 1.x session builds and prunes a new executor for every new set of
    fetches: on ResNet50, 106 runs took 6.5 of the save's 6.9 s. Here they are read once and the saver's
    ``batch_get_value`` is served from that read while it runs (found by identity in the modules that
    hold it, put back afterwards); the values, and so the file, are the same. Feature-detected: a
    backend without ``batch_get_value`` saves as Keras does.
    """
    read = getattr(backend(flavour), "batch_get_value", None)
    weights = list(model.weights)
    if read is None or not weights:
        model.save(path, include_optimizer=False)
        return
    values = dict(zip([id(w) for w in weights], read(weights)))

    def batch_get_value(ops):
        if all(id(op) in values for op in ops):
            return [values[id(op)] for op in ops]
        return read(ops)

    import sys

    # vars(), not getattr(): a lazily loaded module (TF's LazyLoader) must not be imported by the lookup
    holders = [m for m in list(sys.modules.values()) if (getattr(m, "__dict__", None) or {}).get(
        "batch_get_value") is read]
    try:
        for module in holders:
            module.batch_get_value = batch_get_value
        model.save(path, include_optimizer=False)
    finally:
        for module in holders:
            module.batch_get_value = read


def custom_object_scope(flavour, custom_objects):
    return keras_module(flavour).utils.CustomObjectScope(custom_objects or {})


def layer_class_names(flavour):
    """Names of the layer classes that ``flavour`` knows without custom objects."""
    layers = keras_module(flavour).layers
    return set(name for name in dir(layers) if not name.startswith("_"))


def fingerprint(flavour):
    """The origin fingerprint recorded in the manifest: python, tensorflow, keras, h5py, numpy."""
    import platform

    import h5py
    import numpy

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras_version(flavour),
        "keras_flavour": flavour,
        "h5py": h5py.__version__,
        "numpy": numpy.__version__,
    }
