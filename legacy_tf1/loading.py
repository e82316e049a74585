"""Loading a legacy Keras model in its origin TF 1.x environment (tf1.13 / tf1.15, Python 3.7).

For whom: ``resave`` and ``activations``. Accepts

- a full-model ``.h5`` written by standalone Keras or by tf.keras (the flavour is read from the file's
  ``keras_version`` attribute: "-tf" means tf.keras);
- a weights-only ``.h5`` plus an architecture (``--arch``): a JSON or YAML model config file, or
  ``module:function`` / ``module:function(key=literal, ...)``, e.g.
  ``keras_vggface.vggface:VGGFace(model="senet50", include_top=False, weights=None)``. Keyword values
  are parsed with ``ast.literal_eval`` (literals only: no names, calls or attributes), so the string
  cannot run code beyond importing ``module`` and calling ``function``.

Lambda layers store Python bytecode that loading executes: the file's stored ``model_config`` and an
``--arch`` JSON/YAML config go through the Lambda gate (``converters.safety.check_config``: the whole
config, every nesting) before any Keras call, and a model with a Lambda layer or other stored code is
refused with ``UntrustedModelError`` unless ``trust_model`` is set. Other failures raise
``ModelLoadError`` with a hint (unknown layer -> ``--custom-objects``).
"""

import ast
import importlib
import json
import os

from converters import safety
from converters.errors import InputFileError, ModelLoadError, UsageError
from converters.shared import layer_graph
from converters.shared.keras_compat import load_custom_objects
from converters.preflight_options import parse_arch_call  # the host checks the same syntax first
from legacy_tf1 import compat, inspection
from legacy_tf1.compat_versions import version_tuple


def _load_yaml(text):
    """A Keras YAML model config (``model.to_yaml()``) with the safe loader plus tuples.

    Keras writes shapes as ``!!python/tuple``, which ``yaml.safe_load`` rejects; we accept that one
    tag (it only builds a tuple) and nothing else from the unsafe loader.
    """
    import yaml

    class ConfigLoader(yaml.SafeLoader):
        pass

    ConfigLoader.add_constructor("tag:yaml.org,2002:python/tuple",
                                 lambda loader, node: tuple(loader.construct_sequence(node)))
    try:
        return yaml.load(text, Loader=ConfigLoader)
    except yaml.YAMLError as exc:
        raise InputFileError("--arch YAML is not a model config (%s)." % str(exc).splitlines()[0], step="load")


def build_architecture(arch, flavour, custom_objects, trust_model):
    """A freshly built (untrained) model from ``--arch`` (see the module docstring)."""
    keras = compat.keras_module(flavour)
    if os.path.isfile(arch):
        with open(arch) as handle:
            text = handle.read()
        if arch.lower().endswith((".yaml", ".yml")):
            config = _load_yaml(text)
            text = json.dumps(config)
        else:
            try:
                config = json.loads(text)
            except ValueError as exc:
                raise InputFileError("--arch %s is not valid JSON (%s)." % (arch, exc), step="load")
        safety.check_config(config, "the architecture %s" % arch, trust_model, step="load")
        with compat.custom_object_scope(flavour, custom_objects):
            return keras.models.model_from_json(text, custom_objects=custom_objects)
    module_name, function, kwargs = parse_arch_call(arch)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError("--arch: cannot import %s (%s)." % (module_name, exc), step="load")
    if not hasattr(module, function):
        raise UsageError("--arch: %s has no %s." % (module_name, function), step="load")
    with compat.custom_object_scope(flavour, custom_objects):
        return getattr(module, function)(**kwargs)


def model_flavour(model):
    """"tf.keras" if ``model`` is a tf.keras model, else "keras" (e.g. keras_vggface builds standalone)."""
    import tensorflow as tf

    return "tf.keras" if isinstance(model, tf.keras.Model) else "keras"


def load(path, arch=None, custom_objects_path=None, trust_model=False, info=None):
    """Load ``path`` in this TF 1.x process; return ``(model, flavour, info)`` (``info``: ``inspect_file``)."""
    if info is None:
        info = inspection.inspect_file(path)
    flavour = info["keras_flavour"]
    if not info["weights_only"]:
        # the Lambda gate, on the config as stored (not on ``info``, which a caller may have passed in)
        stored = inspection.stored_model_config(path)
        safety.check_config(stored, path, trust_model, step="load")
        config, _ = safety.parse(stored)
        if config is not None:  # a dangling or cyclic layer graph would make Keras 2's rebuild loop forever
            layer_graph.check(config, path, step="load")
    # the learning phase is baked in when the graph is built: set it for both flavours first
    for name in compat.FLAVOURS:
        _set_inference_mode(name)
    custom_objects = load_custom_objects(custom_objects_path)
    if info["weights_only"]:
        if not arch:
            raise ModelLoadError(
                "%s holds weights only (no model config), so the architecture is unknown." % path, step="load",
                hint="Give --arch CONFIG.json|CONFIG.yaml or --arch module:function(...) that builds the model.")
        model = build_architecture(arch, flavour, custom_objects, trust_model)
        flavour = model_flavour(model)
        try:
            model.load_weights(path)
        except Exception as exc:  # noqa: BLE001 - ValueError/KeyError on a mismatch, others on a damaged file
            raise ModelLoadError("the weights in %s do not fit the architecture %s (%s)." % (path, arch, exc),
                                 step="load", hint="Check --arch builds the same model (layers, shapes, include_top).")
        return model, flavour, info
    keras = compat.keras_module(flavour)
    origin_keras = compat.keras_version(flavour)
    newer = _newer_keras(info.get("keras_version"), origin_keras)
    if newer:
        # TF 2.x-era configs (tf_keras 2.4+, Keras 3) use arguments Keras 2.2/2.3 do not know
        # ("batch_shape", "ragged"...): refuse with both versions instead of a TypeError deep in Keras
        raise ModelLoadError(
            "%s was written by %s, newer than the origin environment %s reads (it has %s %s)."
            % (path, newer, os.environ.get("TFBRIDGE_ENV") or "of TF 1.x", flavour, origin_keras), step="load",
            hint="Give --origin the TF version that saved the file; a model saved by TF 2.x is not legacy: "
                 "convert it directly with `nox -s convert -- MODEL` (python -m converters.convert).")
    try:
        with compat.custom_object_scope(flavour, custom_objects):
            model = keras.models.load_model(path, custom_objects=custom_objects, compile=False)
    except Exception as exc:  # noqa: BLE001 - a damaged or foreign file fails in many ways inside Keras/h5py
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if isinstance(exc, ValueError) and "Unknown" in message:
            hint = "If the model has custom layers, pass --custom-objects FILE.py defining them."
        else:
            message = "%s: %s" % (type(exc).__name__, message)
            hint = ("The file says it was saved by %s %s; check --origin names the TF version that saved it, "
                    "or that the file is complete (not truncated or damaged)." % (flavour, info.get("keras_version")))
        raise ModelLoadError("loading %s with %s %s failed: %s" % (path, flavour, origin_keras, message[:300]),
                             step="load", hint=hint)
    return model, flavour, info


def _set_inference_mode(flavour):
    try:
        compat.keras_module(flavour)
    except ModelLoadError:  # compat's ImportError of a flavour that is not installed: it is not used here
        return
    try:
        compat.set_inference_mode(flavour)
    except Exception as exc:  # noqa: BLE001 - anything else must not be swallowed
        raise ModelLoadError(
            "setting the inference mode (learning phase 0) of %s failed (%s: %s); without it the frozen graph "
            "would keep the training branches of every Dropout and BatchNormalization layer."
            % (flavour, type(exc).__name__, str(exc).splitlines()[0][:300] if str(exc) else ""), step="load",
            hint="This environment's Keras is broken or not the pinned version: check it with `nox -s envs` "
                 "(rebuild it if it is not healthy); --debug shows the traceback.")


def _newer_keras(file_version, origin_version):
    """A description of the Keras that wrote the file when it is TF 2.x era (newer than any TF 1.x origin
    reads) or newer than ``origin_version`` in major.minor; else None."""
    if not file_version:
        return None
    written = version_tuple(file_version)
    if written[:2] <= version_tuple(origin_version)[:2] or written < (2, 4, 0):
        return None  # e.g. keras 2.3.1 in keras 2.2.4: may well load; a failure names both versions
    if written[0] >= 3:
        return "Keras %s (Keras 3)" % file_version
    return "Keras %s (tf.keras / tf_keras of TF 2.x)" % file_version
