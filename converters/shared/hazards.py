"""Known behaviour changes between TF 1.13/1.15, TF 2.x, tf-keras and Keras 3, and the lookup that names
them for a parity cell's first divergent layer.

For whom: ``converters.shared.parity divergence`` (every environment: Python 3.7, no TensorFlow import)
puts ``hazards: [{id, layer, explanation, fix}]`` into a mismatching cell; the reports show them in words;
``converters.tf2.migrate`` applies the fixes for the Keras 3 file (ids are shared). Each entry was
reproduced with a model made in its origin version (tests/integration/data/build_keras3_models.py; the
figures are in docs/keras3.md, "Known upgrade hazards").

A hazard matches a layer by its stored config (class and arguments, read from the re-saved ``model.h5``)
and by the cell: which Keras runs it (``keras3``, ``tf_keras``, ...) and which TF made the file. A mismatch
whose first divergent layer matches no entry says so (``NO_KNOWN_HAZARD``): that is a new behaviour change
or a bug, and worth a report.
"""

HARD_SIGMOID = "hard_sigmoid"
RECURRENT = ("LSTM", "GRU", "LSTMCell", "GRUCell")
TF1_ORIGINS = ("tf1.13", "tf1.15")


def _tf1(label):
    """Is this cell run in TF 1.x (tf1.15, or a --tf environment such as tf1.14, tf1.14-graph)?"""
    return str(label or "").startswith("tf1.")


def _activation_name(value):
    if isinstance(value, dict):
        config = value.get("config") or {}
        return config.get("name") or value.get("class_name")
    return value


def _hard_sigmoid(config):
    """The arguments of ``config`` that hold Keras 2's hard_sigmoid."""
    return [key for key in ("activation", "recurrent_activation") if _activation_name(config.get(key)) == HARD_SIGMOID]


def _match_hard_sigmoid(class_name, config, context):
    if context.get("keras") != "keras3":
        return None
    keys = _hard_sigmoid(config)
    if class_name in ("Bidirectional", "TimeDistributed", "RNN"):
        inner = config.get("layer") or config.get("cell") or {}
        keys = ["%s.%s" % (inner.get("class_name"), key) for key in _hard_sigmoid(inner.get("config") or {})]
    return ", ".join(keys) or None


def _match_resize(class_name, config, context):
    if context.get("origin") not in TF1_ORIGINS or _tf1(context.get("env")):
        return None
    if class_name == "UpSampling2D" and config.get("interpolation") == "bilinear":
        return "interpolation=bilinear"
    return None


def _match_bn_epsilon(class_name, config, context):
    if context.get("origin") not in TF1_ORIGINS or _tf1(context.get("env")):
        return None
    if class_name != "BatchNormalization":
        return None
    epsilon = config.get("epsilon")
    if epsilon is not None and float(epsilon) < FUSED_MIN_EPSILON:
        return "epsilon=%g" % float(epsilon)
    return None


FUSED_MIN_EPSILON = 1.001e-5

HAZARDS = (
    {
        "id": "keras3-hard-sigmoid",
        "title": "Keras 3 changed hard_sigmoid",
        "applies": "Keras 3 loading a Keras 2 file: LSTM, GRU and ConvLSTM2D, also inside Bidirectional "
                   "(hard_sigmoid is Keras 2's default recurrent_activation), Activation('hard_sigmoid'), any "
                   "layer with activation='hard_sigmoid'",
        "explanation": "Keras 2 (standalone, tf.keras 1.x, tf-keras) computes hard_sigmoid as "
                       "clip(0.2 x + 0.5, 0, 1); Keras 3 computes relu6(x + 3) / 6 = clip(x / 6 + 0.5, 0, 1). "
                       "The name in the file is the same, the function is not: every gate of an LSTM/GRU "
                       "saturates later, and the outputs drift (max |delta| 0.006 to 0.02 on small two-layer LSTMs).",
        "fix": "Use the migrated model.keras (cell tf2-keras3-migrated): tfbridge multiplies the LSTM/GRU gate "
               "columns (i, f, o / z, r) of kernel, recurrent kernel and bias by 1.2, so that Keras 3's "
               "hard_sigmoid gives clip(0.2 z + 0.5), and follows other hard_sigmoid layers with "
               "Rescaling(0.2, offset=0.5) and ReLU(max_value=1). In your own Keras 3 code do the same; "
               "do not switch to 'sigmoid' (a different function again).",
        "match": _match_hard_sigmoid,
    },
    {
        "id": "tf1-resize-bilinear",
        "title": "TF 1 bilinear resize has no half-pixel centres",
        "applies": "a TF 1.x model with UpSampling2D(interpolation='bilinear') (also tf.image.resize_bilinear / "
                   "resize_images in a Lambda) run in TF 2.x, with tf-keras or Keras 3",
        "explanation": "TF 1.x resizes with align_corners=False and half_pixel_centers=False: output pixel i "
                       "samples the input at i / scale (top-left aligned, the last row and column repeated). "
                       "TF 2's tf.image.resize, which tf-keras and Keras 3 use, samples at (i + 0.5) / scale - 0.5 "
                       "(half-pixel centres). The same weights see an image shifted by a quarter pixel at scale 2 "
                       "(cosine 0.968 at the layer on a small CNN; measured: TF 1.13 and 1.15 agree, TF 2.21 "
                       "differs in both Keras flavours).",
        "fix": "Use the migrated model.keras: tfbridge replaces the layer by two frozen EinsumDense layers holding "
               "TF 1's interpolation matrices. In your own TF 2 code, call tf.compat.v1.image.resize_bilinear("
               "x, size, align_corners=False, half_pixel_centers=False) in a custom layer; or fine-tune the "
               "model after the upgrade.",
        "match": _match_resize,
    },
    {
        "id": "tf1-bn-epsilon",
        "title": "TF 1 raised a BatchNormalization epsilon below 1.001e-5; TF 2 does not",
        "applies": "a TF 1.x BatchNormalization (standalone Keras 2 or tf.keras) of a 4-D input with epsilon < "
                   "1.001e-5, run in TF 2.x with tf-keras or Keras 3",
        "explanation": "Keras 2 on TF 1.x (standalone and tf.keras) runs the batch norm of 4-D inputs through tf.nn.fused_batch_norm, which "
                       "raises any epsilon below 1.001e-5 to 1.001e-5 (a cuDNN requirement, applied on the CPU "
                       "too); tf-keras and Keras 3 in TF 2.21 divide by sqrt(variance + epsilon) with the stored "
                       "epsilon. Channels whose moving variance is of the order of 1e-5 or below are scaled "
                       "differently (measured: epsilon 1e-7, variances 1e-7..1e-5: cosine 0.98 at the layer).",
        "fix": "Set epsilon to 1.001e-5 (what the origin computed with). The migrated model.keras does so; in a "
               "tf-keras model, rebuild the layer with epsilon=1.001e-5 and copy its weights.",
        "match": _match_bn_epsilon,
    },
)

BY_ID = dict((hazard["id"], hazard) for hazard in HAZARDS)
NO_KNOWN_HAZARD = ("no known upgrade hazard matches layer %s (%s): a behaviour change tfbridge does not know yet, "
                   "or a bug; see the divergence table and report it")


def layer_configs(model_config):
    """``{layer name: (class_name, config)}`` of a Keras model config (dict or JSON text), at every depth of
    nested models."""
    import json

    if isinstance(model_config, bytes):
        model_config = model_config.decode("utf-8")
    if isinstance(model_config, str):
        model_config = json.loads(model_config)
    found = {}

    def walk(node):
        config = node.get("config") or {}
        layers = config.get("layers") if isinstance(config, dict) else None
        if isinstance(layers, list):
            for layer in layers:
                if isinstance(layer, dict):
                    name = (layer.get("config") or {}).get("name") or layer.get("name")
                    found[name] = (layer.get("class_name"), layer.get("config") or {})
                    walk(layer)

    walk(model_config)
    return found


def lookup(layer, class_name, config, context):
    """The known hazards of ``layer`` (its stored ``class_name`` and ``config``) in a cell described by
    ``context`` ({"env": cell label, "keras": flavour, "origin": origin env}): a list of
    ``{id, layer, explanation, fix, matched}``."""
    found = []
    for hazard in HAZARDS:
        matched = hazard["match"](class_name, config or {}, context)
        if matched:
            found.append({"id": hazard["id"], "layer": layer, "title": hazard["title"], "matched": matched,
                          "explanation": hazard["explanation"], "fix": hazard["fix"]})
    return found
