"""Loading a re-saved Keras ``.h5`` with a chosen Keras implementation, in TF 1.15 or TF 2.x.

For whom: ``converters.shared.parity`` (the parity matrix) and, through ``load_custom_objects``, the TF 1.x
re-save step. The one place in ``converters`` that touches version-specific Keras symbols. Python 3.7
compatible; TensorFlow/Keras are imported lazily, inside the functions, because the right import order
depends on the flavour (tf-keras needs ``TF_USE_LEGACY_KERAS=1`` *before* TensorFlow is imported).

Flavours:

========== ============================================================================
keras      standalone Keras 2.x (TF 1.x environments only; in TF 2 ``import keras`` is Keras 3)
tf.keras   TensorFlow's bundled Keras (TF 1.x; in TF >= 2.16 it is Keras 3 unless legacy is forced)
tf_keras   the tf-keras package (legacy Keras 2 for TF >= 2.16)
keras3     Keras 3 (``import keras`` with keras >= 3)
auto       TF 1.x: the flavour that saved the file (manifest); TF 2.x: tf_keras
========== ============================================================================

What can go wrong: a flavour that is not installed raises ``ModelLoadError``, or ``EnvironmentBroken`` when
this environment's lock pins it (the environment is damaged; not a verdict about the model); a Lambda layer (or other
stored code) in a file not trusted raises ``UntrustedModelError`` before Keras sees the file; loading
itself raises whatever the Keras implementation raises (the caller turns it into a ``load_error`` cell).
"""

import importlib
import importlib.util
import inspect
import os

from converters import safety
from converters.errors import InputFileError, ModelLoadError, UsageError

FLAVOURS = ("auto", "keras", "tf.keras", "tf_keras", "keras3")


def prepare(flavour):
    """Set process-wide switches a flavour needs; call before anything imports TensorFlow."""
    if flavour == "tf_keras":
        # TF >= 2.16: makes tf.keras (and TF's own Keras-based helpers) the tf-keras package
        os.environ["TF_USE_LEGACY_KERAS"] = "1"
    elif flavour == "keras3":
        os.environ.pop("TF_USE_LEGACY_KERAS", None)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def import_tensorflow():
    """Import TensorFlow for its import time only (with the Keras switch ``prepare`` already set): what a
    step started beside the re-save does while it waits (``converters.runfolder.await_file``)."""
    import tensorflow  # noqa: F401


def resolve(flavour, saved_flavour):
    """The concrete flavour for ``auto`` in this process (see the table in the module docstring)."""
    if flavour not in FLAVOURS:
        raise UsageError("unknown --keras %r (expected one of %s)." % (flavour, ", ".join(FLAVOURS)))
    if flavour != "auto":
        return flavour
    if _tf_major_without_import() >= 2:
        return "tf_keras"
    return saved_flavour or "keras"


def _tf_major_without_import():
    # package metadata, so that resolving "auto" does not import TF before prepare() has run
    try:
        from importlib import metadata
    except ImportError:  # Python 3.7
        try:
            import importlib_metadata as metadata
        except ImportError:
            metadata = None
    for dist in ("tensorflow", "tensorflow-cpu"):
        try:
            return int(metadata.version(dist).split(".")[0])
        except Exception:  # noqa: BLE001 - not installed under that name
            continue
    spec = importlib.util.find_spec("tensorflow")
    if spec is None:
        raise ModelLoadError("TensorFlow is not installed in this environment.", step="parity")
    return 1


def keras_module(flavour):
    """The Keras module of a concrete flavour (call ``prepare(flavour)`` first)."""
    try:
        if flavour == "tf.keras":
            import tensorflow as tf

            return tf.keras
        if flavour == "tf_keras":
            return importlib.import_module("tf_keras")
        module = importlib.import_module("keras")
    except ImportError as exc:
        # a package this environment's lock pins that does not import: the environment is broken, and
        # saying "the model does not load here" would be false (envs.venvs.broken_by_import)
        broken = environment_broken(exc, "tensorflow" if flavour == "tf.keras" else
                                    "tf_keras" if flavour == "tf_keras" else "keras")
        if broken is not None:
            raise broken
        raise ModelLoadError("Keras flavour %s is not installed here (%s)." % (flavour, exc), step="parity",
                             hint="Pick the flavour of this environment: keras/tf.keras in TF 1.x, "
                                  "tf_keras/keras3 in tf2.")
    major = int(version_of(module).split(".")[0])
    if flavour == "keras" and major >= 3:
        raise ModelLoadError("`keras` is Keras %s here; standalone Keras 2 is a TF 1.x flavour."
                             % version_of(module), step="parity", hint="Use --keras keras3 or tf_keras.")
    if flavour == "keras3" and major < 3:
        raise ModelLoadError("`keras` is %s here, not Keras 3." % version_of(module), step="parity",
                             hint="Keras 3 exists in TF 2.16 and later (tf2; --tf 2.16 on).")
    return module


def version_of(module):
    """A Keras module's version. TF 2.6 ... 2.15: ``tf.keras`` is the keras package's ``keras.api._v2.keras``,
    which has no ``__version__``; the keras package's is the one."""
    version = getattr(module, "__version__", None)
    if version:
        return version
    try:
        import keras

        return keras.__version__
    except (ImportError, AttributeError):
        import tensorflow as tf

        return tf.__version__


def environment_broken(exc, module=None, step="parity"):
    """The ``EnvironmentBroken`` an exception means when it is an ImportError of a package this
    environment's lock pins (or a SyntaxError in a file of the environment's own packages), else None.
    For the callers that would otherwise report a failure as a verdict about the model."""
    from envs import venvs

    if isinstance(exc, SyntaxError) and exc.filename and "site-packages" in exc.filename:
        top = exc.filename.split("site-packages" + os.sep, 1)[-1].split(os.sep)[0]
        if top.endswith(".py"):
            top = top[:-3]
        error = ImportError("%s (a damaged file of an installed package)" % str(exc).splitlines()[0])
        error.name = top
        exc = error
    if not isinstance(exc, ImportError):
        return None
    return venvs.broken_by_import(exc, getattr(exc, "name", None) or module or "", step=step)


def runtime(flavour):
    """A one-line description of what ran, e.g. "tensorflow 2.21.0 + tf_keras 2.21.0"."""
    import tensorflow as tf

    return "tensorflow %s + %s %s" % (tf.__version__, flavour, version_of(keras_module(flavour)))


def check_h5(path, trust_model, step="parity"):
    """The Lambda gate (``converters.safety``) on the ``model_config`` stored in ``path``, read with h5py
    (nothing executed); raises ``UntrustedModelError`` for a Lambda or stored code unless ``trust_model``.
    A file without a model config (weights only) has nothing to check."""
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            config = handle.attrs.get("model_config")
    except Exception as exc:  # noqa: BLE001 - OSError usually; h5py fails in many ways on a damaged file
        raise InputFileError("%s is not a readable HDF5 file (%s)." % (path, str(exc)[:300] or type(exc).__name__),
                             step=step, hint="Rerun the re-save step to rewrite the run folder's model.h5.")
    if config is None:
        return []
    if hasattr(config, "tolist") and not isinstance(config, (bytes, str)):
        config = config.tolist()
    return safety.check_config(config, path, trust_model, step=step)


def load_model(flavour, path, custom_objects=None, trust_model=False):
    """Load a full-model ``.h5`` for inference (no optimizer, no compile) with ``flavour``, after the
    Lambda gate (``check_h5``): a Lambda is loaded only with ``trust_model`` (the manifest's ``trusted``,
    recorded by the re-save step from ``--trust-model``)."""
    check_h5(path, trust_model)
    keras = keras_module(flavour)
    custom_objects = dict(custom_objects or {})
    if flavour == "keras3":
        # Keras 3 refuses Lambda deserialization in safe mode: off only for a model the user trusted
        return keras.models.load_model(path, custom_objects=custom_objects, compile=False,
                                       safe_mode=not trust_model)
    with keras.utils.CustomObjectScope(custom_objects):
        return keras.models.load_model(path, custom_objects=custom_objects, compile=False)


def load_custom_objects(path):
    """The custom objects defined by a user's ``FILE.py``: its ``CUSTOM_OBJECTS`` dict if it has one,
    else every class defined at module level in that file (keyed by class name).

    For whom: ``--custom-objects`` in every environment. Executes the file (it is the user's own code).
    Raises ``InputFileError`` if the file does not exist or fails to import.
    """
    if not path:
        return {}
    if not os.path.isfile(path):
        raise InputFileError("custom objects file %s does not exist." % path, step="load",
                             hint="Give a Python file defining CUSTOM_OBJECTS = {...} or the layer classes.")
    name = "tfbridge_custom_objects_%d" % (abs(hash(os.path.abspath(path))) % 10 ** 8)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - the user's file: report any failure as input error
        raise InputFileError("custom objects file %s failed to import (%s: %s)." % (path, type(exc).__name__, exc),
                             step="load", hint="Run `python %s` in the same environment to see the error." % path)
    objects = getattr(module, "CUSTOM_OBJECTS", None)
    if objects is None:
        objects = dict((key, value) for key, value in vars(module).items()
                       if inspect.isclass(value) and value.__module__ == module.__name__)
    if not isinstance(objects, dict):
        raise InputFileError("CUSTOM_OBJECTS in %s is a %s, not a dict." % (path, type(objects).__name__),
                             step="load", hint="Define CUSTOM_OBJECTS = {\"LayerName\": LayerClass, ...}.")
    return objects
