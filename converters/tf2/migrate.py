"""Migrate a re-saved legacy model to Keras 3: ``RUN/model.keras`` that Keras 3 loads as is and that computes
what the origin computed.

For whom: ``converters.verify`` runs it in tf2 after the re-save (``python -m converters.tf2.migrate RUN``,
skipped with ``--no-keras3``); the ``tf2-keras3-migrated`` parity cell then loads ``model.keras`` with
``keras.saving.load_model`` (safe mode) and compares it with the origin's references. Writes
``RUN/model.keras`` and ``RUN/migration.json``, and records the migration in ``manifest.json``
(``migration: {path, status, renamed}``).

How (and why this way): the re-saved ``model.h5`` is loaded with tf-keras, which reads every Keras 2 file
the legacy environments write (standalone Keras 2.2/2.3 and tf.keras 1.x configs alike, measured), and which
computes what the origin computed (its parity cell). Its config (tf-keras 2.x serialization: one format
whatever wrote the file) is translated to Keras 3 layer by layer, the Keras 3 model is built from it with
the public ``keras.Model.from_config``, and the weights are copied layer by layer, matched by the layer's
old name and checked shape by shape. Why not rewrite the ``.h5`` for Keras 3's own h5 loader: that loader
reads tf.keras 1.x configs wrongly (TypeError on Conv2D) and assigns weights by layer order, where a
name-keyed copy with shape checks cannot silently put a tensor in the wrong place.

The translation:

- names Keras 3 refuses (``/``, as in keras-vggface's ``conv1/7x7_s2``) become legal (``/`` -> ``_``, made
  unique), in the layers, their inbound nodes and the model's inputs and outputs; ``renamed`` maps old to new;
- keyword arguments Keras 3 layers no longer take are dropped when their value is the one Keras 3 always
  uses (``time_major: False``, ``implementation``, BatchNormalization's ``fused`` ...); a value that would
  change what the layer computes (``time_major: True``, ``virtual_batch_size``, ``ragged`` inputs) stops the
  migration with a ``ModelLoadError``; list-valued BatchNormalization ``axis`` of one entry becomes an int;
- behaviour Keras 3 changed is kept with Keras 3's own layers, so that loading needs no custom object and
  works in safe mode (the ids are those of ``converters.shared.hazards``):

  * ``keras3-hard-sigmoid`` as an activation (``Activation("hard_sigmoid")`` or ``activation="hard_sigmoid"``
    of any layer): the layer gets ``activation="linear"`` and is followed by ``Rescaling(0.2, offset=0.5)``
    (``NAME__hard_sigmoid_affine``) and ``ReLU(max_value=1)`` (``NAME__hard_sigmoid``): clip(0.2x + 0.5, 0, 1),
    Keras 2's formula, bit for bit. The layer's consumers read ``NAME__hard_sigmoid`` (``outputs`` maps it).
  * ``keras3-hard-sigmoid`` as the recurrent activation of LSTM / ConvLSTM2D / GRU, also inside
    ``Bidirectional`` (Keras 2's default): the gate columns (LSTM i, f, o; GRU z, r) of the kernel,
    recurrent kernel and bias are multiplied by 1.2 and the layer
    keeps Keras 3's ``hard_sigmoid``: relu6(1.2z + 3) / 6 = clip(0.2z + 0.5, 0, 1). Exact up to float
    rounding (~1e-7); the stored gate weights are therefore 1.2 times the original ones (recorded).
  * ``tf1-bn-epsilon``: a TF 1.x BatchNormalization (standalone Keras or tf.keras) of a 4-D input with
    ``epsilon`` below 1.001e-5 ran through TF 1's fused batch norm, which raises epsilon to 1.001e-5; tf-keras and Keras 3
    use the stored value. The migrated layer gets ``epsilon=1.001e-5``.
  * ``tf1-resize-bilinear``: ``UpSampling2D(interpolation="bilinear")`` of a TF 1.x model resized without
    half-pixel centres; Keras 3 (and TF 2) resize with them. The layer becomes two frozen ``EinsumDense``
    layers (``NAME__rows``, then ``NAME``) whose kernels are TF 1's interpolation matrices (rows, columns).

  A custom object (a registered class) would not do: a ``.keras`` file stores the class's name, not its
  code, so ``load_model`` would need tfbridge importable (checked: Keras 3.15 raises "Could not locate class").

What can go wrong: tf-keras cannot load the file (a Lambda of Python 3.7 bytecode, a missing custom layer),
a layer has no Keras 3 equivalent or a semantic argument Keras 3 lost: the step writes ``migration.json``
with ``status: "failed"`` and the error, exits 0, and the ``tf2-keras3-migrated`` cell becomes a
``load_error`` that fails the run (``--no-keras3`` skips the migration). Custom layers (``--custom-objects``)
are not migrated: they are classes written for Keras 2, and Keras 3 would need its own version of them.
"""

import argparse
import copy
import inspect
import json
import os
import time

from converters import cli, runfolder
from converters.errors import InputFileError, ModelLoadError, TfbridgeError, UntrustedModelError, UsageError
from converters.shared import keras_compat, parity

MODEL_KERAS = parity.MODEL_KERAS      # "model.keras"
MIGRATION = parity.MIGRATION          # "migration.json"
STEP = "migrate"

NOT_MIGRATED_HINT = ("This model cannot be migrated to Keras 3 by tfbridge: keep to the tf2 (tf-keras) route or the "
                     "frozen graph (model.pb), and give --no-keras3 to skip the migration and its parity cell.")
# Keyword arguments every Keras 3 layer takes (Layer.__init__ and its documented legacy kwargs).
BASE_KWARGS = frozenset(("name", "trainable", "dtype", "input_shape", "batch_input_shape", "batch_size",
                         "input_dim", "activity_regularizer", "autocast"))
# Dropped arguments whose value changes what the layer computes when it is not the given one.
SEMANTIC_DEFAULTS = {"time_major": False, "virtual_batch_size": None, "adjustment": None, "ragged": False,
                     "sparse": False, "renorm": False}
MODEL_CLASSES = ("Functional", "Model", "Sequential")
ILLEGAL = "/"
HARD_SIGMOID = "hard_sigmoid"
FUSED_MIN_EPSILON = 1.001e-5  # tf.nn.fused_batch_norm's floor (TF 1.x nn_impl.py: "a requirement by CUDNN")
# Recurrent layers whose recurrent_activation drives gates: one flag per block of `units` weight columns,
# True for a gate (LSTM and ConvLSTM2D: i, f, c, o; GRU: z, r, h), in Keras 2's and Keras 3's layout.
GATES = {"LSTM": (True, True, False, True), "ConvLSTM2D": (True, True, False, True), "GRU": (True, True, False)}
RECURRENT = ("LSTM", "GRU", "SimpleRNN", "ConvLSTM2D")


def _is_hard_sigmoid(value):
    """True for Keras 2's hard_sigmoid as a config stores it: a name, or a serialized function."""
    if isinstance(value, dict):
        config = value.get("config")
        if value.get("class_name") == "function":
            value = config.get("name") if isinstance(config, dict) else config
        else:
            value = value.get("class_name")
    return value == HARD_SIGMOID


class Migration(object):
    """The translation of one model (see the module docstring). ``origin_flavour``: the Keras that saved
    the file in TF 1.x ("keras", "tf.keras"; None when unknown)."""

    def __init__(self, keras, origin_flavour=None):
        self.keras = keras
        self.origin_flavour = origin_flavour
        self.bn_epsilon = set()    # old names of BatchNormalization layers whose epsilon TF 1 raised
        self.renamed = {}          # old layer name -> new
        self.outputs = {}          # new name of the layer that now gives an old layer's output -> old name
        self.dropped = {}          # new layer name -> {argument: value}
        self.fixes = []            # [{hazard, layer, how}]
        self.gate_scaled = {}      # old layer name -> a flag per weight column: is it a gate (x1.2)?
        self.resize = {}           # old UpSampling2D name -> its (rows, columns) scale
        self.helpers = set()       # new names of layers the migration added
        self.einsum = {}           # new name of a resize EinsumDense -> (old UpSampling2D name, "rows"|"cols")

    # -- names --
    def legal_name(self, name, taken):
        if ILLEGAL not in name and name not in self.renamed:
            return name
        base = name.replace(ILLEGAL, "_")
        candidate, index = base, 1
        while candidate in taken:
            candidate, index = "%s_%d" % (base, index), index + 1
        return candidate

    # -- config translation --
    def translate_model(self, config):
        """The Keras 3 config of a functional model config (tf-keras ``get_config()``; not modified)."""
        config = copy.deepcopy(config)
        taken = set(layer["config"]["name"] for layer in config["layers"])
        for layer in config["layers"]:
            old = layer["config"]["name"]
            new = self.legal_name(old, taken)
            if new != old:
                self.renamed[old] = new
                taken.add(new)
        consumer_of = {}  # old name -> the new name that consumers must read instead (added layers)
        layers = []
        for layer in config["layers"]:
            for added in self.translate_layer(layer, consumer_of):
                layers.append(added)
        for layer in layers:  # the added layers are wired already (to new names)
            if layer["name"] not in self.helpers:
                layer["inbound_nodes"] = self._rename_nodes(layer.get("inbound_nodes", []), consumer_of)
        config["layers"] = layers
        config["input_layers"] = self._rename_refs(config["input_layers"], {})
        config["output_layers"] = self._rename_refs(config["output_layers"], consumer_of)
        if ILLEGAL in str(config.get("name", "")):
            config["name"] = config["name"].replace(ILLEGAL, "_")
        return config

    def _new(self, old):
        return self.renamed.get(old, old)

    def _rename_refs(self, refs, consumer_of):
        if refs and isinstance(refs[0], str):  # a single [name, node, tensor] reference
            refs = [refs]
            single = True
        else:
            single = False
        out = [[consumer_of.get(ref[0], self._new(ref[0]))] + list(ref[1:]) for ref in refs]
        return out[0] if single else out

    def _rename_nodes(self, nodes, consumer_of):
        renamed = []
        for node in nodes:
            if isinstance(node, dict):  # Keras 3 style node: rename inside keras_history
                renamed.append(json.loads(json.dumps(node), object_hook=lambda obj: self._history(obj, consumer_of)))
                continue
            renamed.append([[consumer_of.get(entry[0], self._new(entry[0]))] + list(entry[1:]) for entry in node])
        return renamed

    def _history(self, obj, consumer_of):
        if "keras_history" in obj:
            history = obj["keras_history"]
            obj["keras_history"] = [consumer_of.get(history[0], self._new(history[0]))] + list(history[1:])
        return obj

    def translate_layer(self, layer, consumer_of):
        """The Keras 3 layer config(s) for one tf-keras layer entry (added layers follow it)."""
        class_name = layer["class_name"]
        old = layer["config"]["name"]
        new = self._new(old)
        layer = copy.deepcopy(layer)
        layer["config"]["name"] = new
        layer["name"] = new
        layer.pop("module", None)
        layer.pop("registered_name", None)
        layer.pop("build_config", None)
        if class_name in MODEL_CLASSES:
            raise ModelLoadError("layer %s is a nested %s; nested models are not migrated yet." % (old, class_name),
                                 step=STEP, hint=NOT_MIGRATED_HINT)
        klass = getattr(self.keras.layers, class_name, None)
        if klass is None:
            raise ModelLoadError("layer %s is a %s, which Keras %s does not have (a custom layer is a Keras 2 "
                                 "class: Keras 3 needs its own version)." % (old, class_name, self.keras.__version__),
                                 step=STEP, hint=NOT_MIGRATED_HINT)
        layer["config"] = self._clean_kwargs(klass, class_name, layer["config"], new)
        for key in ("layer", "backward_layer"):  # wrappers (Bidirectional, TimeDistributed): the inner layer too
            inner = layer["config"].get(key)
            if isinstance(inner, dict) and "class_name" in inner:
                inner_class = getattr(self.keras.layers, inner["class_name"], None)
                if inner_class is None:
                    raise ModelLoadError("layer %s wraps a %s, which Keras %s does not have."
                                         % (old, inner["class_name"], self.keras.__version__), step=STEP,
                                         hint=NOT_MIGRATED_HINT)
                inner.pop("build_config", None)
                inner["module"], inner["registered_name"] = "keras.layers", None  # a built-in Keras 3 layer
                inner["config"] = self._clean_kwargs(inner_class, inner["class_name"], inner["config"],
                                                     "%s > %s" % (new, inner["config"].get("name")))
        added = [layer]
        config = layer["config"]
        if class_name == "UpSampling2D" and config.get("interpolation") == "bilinear":
            return self._legacy_bilinear(layer, old, new, consumer_of)
        if (class_name == "BatchNormalization" and self.origin_flavour in ("keras", "tf.keras")
                and float(config.get("epsilon", 1e-3)) < FUSED_MIN_EPSILON
                and config.get("axis") in (1, 3, -1, -3)):
            self.bn_epsilon.add(old)  # applied in build_keras3, where the input rank is known
        rnn_class, rnn_config = class_name, config
        if class_name == "Bidirectional":  # forward and backward weights have the same layout: scale both
            rnn_class = (config.get("layer") or {}).get("class_name")
            rnn_config = (config.get("layer") or {}).get("config") or {}
        if rnn_class in GATES and _is_hard_sigmoid(rnn_config.get("recurrent_activation")):
            units = int(rnn_config.get("units") or rnn_config["filters"])
            self.gate_scaled[old] = [gate for gate in GATES[rnn_class] for _ in range(units)]
            self.fixes.append({"hazard": "keras3-hard-sigmoid", "layer": old,
                               "how": "gate columns of kernel, recurrent kernel and bias x1.2; Keras 3 "
                                      "hard_sigmoid kept (relu6(1.2z+3)/6 = clip(0.2z+0.5, 0, 1))"})
        if rnn_class in RECURRENT and _is_hard_sigmoid(rnn_config.get("activation")):
            raise ModelLoadError("layer %s uses hard_sigmoid as its cell activation, which Keras 3 computes "
                                 "differently and which cannot be re-expressed with Keras 3's own layers." % old,
                                 step=STEP, hint=NOT_MIGRATED_HINT)
        if rnn_class not in RECURRENT and _is_hard_sigmoid(config.get("activation")):
            config["activation"] = "linear"
            affine = "%s__hard_sigmoid_affine" % new
            clip = "%s__hard_sigmoid" % new
            dtype = config.get("dtype", "float32")
            added.append({"class_name": "Rescaling", "name": affine,
                          "config": {"name": affine, "scale": 0.2, "offset": 0.5, "dtype": dtype},
                          "inbound_nodes": [[[new, 0, 0, {}]]]})
            added.append({"class_name": "ReLU", "name": clip,
                          "config": {"name": clip, "max_value": 1.0, "negative_slope": 0.0, "threshold": 0.0,
                                     "dtype": dtype},
                          "inbound_nodes": [[[affine, 0, 0, {}]]]})
            consumer_of[old] = clip
            self.outputs[clip] = old
            self.helpers.update((affine, clip))
            self.fixes.append({"hazard": "keras3-hard-sigmoid", "layer": old,
                               "how": "activation linear, then Rescaling(0.2, offset=0.5) and ReLU(max_value=1) "
                                      "(%s, %s): clip(0.2x+0.5, 0, 1)" % (affine, clip)})
        return added

    def _clean_kwargs(self, klass, class_name, config, new):
        accepted = set(BASE_KWARGS)
        for base in klass.__mro__:
            if "__init__" in vars(base):
                try:
                    accepted |= set(inspect.signature(base.__init__).parameters)
                except (TypeError, ValueError):
                    pass
        if class_name == "InputLayer":
            accepted |= {"batch_input_shape"}
        dropped = {}
        kept = {}
        for key, value in config.items():
            if key in accepted:
                kept[key] = value
                continue
            if key in SEMANTIC_DEFAULTS and value != SEMANTIC_DEFAULTS[key]:
                raise ModelLoadError("layer %s (%s) has %s=%r, which Keras 3 no longer supports."
                                     % (new, class_name, key, value), step=STEP,
                                     hint=NOT_MIGRATED_HINT)
            dropped[key] = value
        if class_name == "BatchNormalization" and isinstance(kept.get("axis"), list) and len(kept["axis"]) == 1:
            kept["axis"] = kept["axis"][0]
        if class_name == "InputLayer" and "batch_input_shape" in kept and "batch_shape" not in kept:
            kept["batch_shape"] = kept.pop("batch_input_shape")
        if class_name != "InputLayer":  # a functional config has its InputLayer: the shape here is redundant
            for key in ("input_shape", "batch_input_shape", "input_dim", "batch_size"):
                if key in kept:
                    dropped[key] = kept.pop(key)
        if dropped:
            self.dropped[new] = dropped
        return kept

    def _legacy_bilinear(self, layer, old, new, consumer_of):
        config = layer["config"]
        if config.get("data_format", "channels_last") != "channels_last":
            raise ModelLoadError("layer %s: bilinear UpSampling2D in channels_first is not migrated." % old,
                                 step=STEP, hint=NOT_MIGRATED_HINT)
        rows = "%s__rows" % new
        self.resize[old] = tuple(int(v) for v in config.get("size", (2, 2)))
        self.helpers.add(rows)
        self.einsum[rows] = (old, "rows")
        self.einsum[new] = (old, "cols")
        self.fixes.append({"hazard": "tf1-resize-bilinear", "layer": old,
                           "how": "two frozen EinsumDense layers (%s, %s) holding TF 1's bilinear interpolation "
                                  "matrices (no half-pixel centres)" % (rows, new)})
        dtype = config.get("dtype", "float32")
        first = {"class_name": "EinsumDense", "name": rows,
                 "inbound_nodes": self._rename_nodes(layer["inbound_nodes"], consumer_of),
                 "config": {"name": rows, "equation": "bhwc,hH->bHwc", "output_shape": None,
                            "trainable": False, "dtype": dtype}}
        second = {"class_name": "EinsumDense", "name": new, "inbound_nodes": [[[rows, 0, 0, {}]]],
                  "config": {"name": new, "equation": "bHwc,wW->bHWc", "output_shape": None,
                             "trainable": False, "dtype": dtype}}
        return [first, second]


def legacy_bilinear_matrix(size_in, scale):
    """TF 1.x ``resize_bilinear(align_corners=False, half_pixel_centers=False)`` along one axis, as the
    (size_in, size_in * scale) matrix M with ``out = in @ M``."""
    import numpy as np

    size_out = size_in * scale
    matrix = np.zeros((size_in, size_out), dtype=np.float64)
    for out in range(size_out):
        source = out * (float(size_in) / size_out)
        low = int(np.floor(source))
        high = min(low + 1, size_in - 1)
        frac = source - low
        matrix[low, out] += 1.0 - frac
        matrix[high, out] += frac
    return matrix.astype(np.float32)


def _scale_gates(weights, gates):
    """Multiply the gate columns (the last axis; ``gates``: a flag per column, LSTM i, f, o; GRU z, r) of
    every kernel, recurrent kernel and bias by 1.2."""
    import numpy as np

    factor = np.float32(1.2)
    columns = [index for index, gate in enumerate(gates) if gate]
    scaled = []
    for w in weights:
        w = np.array(w, copy=True)
        w[..., columns] = w[..., columns] * factor
        scaled.append(w)
    return scaled


def build_keras3(legacy_model, keras, origin_flavour=None):
    """(Keras 3 model, Migration, number of weight arrays copied) from a tf-keras model: translated config,
    weights copied (module docstring). ``origin_flavour``: the Keras that saved the file in TF 1.x."""
    import numpy as np

    migration = Migration(keras, origin_flavour)
    config = legacy_model.get_config()
    if "layers" not in config or "input_layers" not in config:  # Sequential: make it functional first
        import tf_keras

        legacy_model = tf_keras.Model(legacy_model.inputs, legacy_model.outputs, name=legacy_model.name)
        config = legacy_model.get_config()
    translated = migration.translate_model(config)
    # the resize layers' output shapes follow from the input shape of the legacy layer they replace
    for layer in translated["layers"]:
        old = _old_name(migration, layer["name"])
        if old in migration.bn_epsilon and len(legacy_model.get_layer(old).input_shape) == 4:
            # Keras 2 on TF 1.x ran 4-D batch norm through fused_batch_norm, which raises epsilon to 1.001e-5
            migration.fixes.append({"hazard": "tf1-bn-epsilon", "layer": old,
                                    "how": "epsilon %g -> %g (what TF 1's fused batch norm used)"
                                           % (layer["config"]["epsilon"], FUSED_MIN_EPSILON)})
            layer["config"]["epsilon"] = FUSED_MIN_EPSILON
        if layer["name"] in migration.einsum:
            old, axis = migration.einsum[layer["name"]]
            h, w, c = [int(d) for d in legacy_model.get_layer(old).input_shape[1:]]
            sh, sw = migration.resize[old]
            layer["config"]["output_shape"] = [h * sh, w, c] if axis == "rows" else [h * sh, w * sw, c]
    model = keras.Model.from_config(translated)
    copied = 0
    for legacy_layer in legacy_model.layers:
        old = legacy_layer.name
        new = migration.renamed.get(old, old)
        weights = legacy_layer.get_weights()
        if old in migration.resize:
            h, w = [int(d) for d in legacy_layer.input_shape[1:3]]
            sh, sw = migration.resize[old]
            model.get_layer("%s__rows" % new).set_weights([legacy_bilinear_matrix(h, sh)])
            model.get_layer(new).set_weights([legacy_bilinear_matrix(w, sw)])
            continue
        if not weights:
            continue
        if old in migration.gate_scaled:
            weights = _scale_gates(weights, migration.gate_scaled[old])
        target = model.get_layer(new)
        weights = _in_target_order(legacy_layer, target, weights)
        shapes = [tuple(int(d) for d in v.shape) for v in target.weights]
        given = [tuple(np.shape(w)) for w in weights]
        if shapes != given:
            raise ModelLoadError("layer %s: Keras 3 expects weights of shapes %s, the re-saved model has %s."
                                 % (old, shapes, given), step=STEP,
                                 hint=NOT_MIGRATED_HINT)
        target.set_weights(weights)
        copied += len(weights)
    return model, migration, copied


def _in_target_order(legacy_layer, target, weights):
    """``weights`` in the order of the Keras 3 layer's variables when both name the same variables (gamma,
    beta, moving_mean, ...) in another order; else as they are (the shape check then decides)."""
    legacy_names = [w.name.split("/")[-1].split(":")[0] for w in legacy_layer.weights]
    target_names = [v.name.split("/")[-1].split(":")[0] for v in target.weights]
    if legacy_names == target_names or sorted(legacy_names) != sorted(target_names) or \
            len(set(legacy_names)) != len(legacy_names):
        return weights
    by_name = dict(zip(legacy_names, weights))
    return [by_name[name] for name in target_names]


def _old_name(migration, new):
    for old, renamed in migration.renamed.items():
        if renamed == new:
            return old
    return new


def migrate(run, trust_model=None):
    """Write ``RUN/model.keras`` and ``RUN/migration.json`` (module docstring); return the migration record."""
    manifest_path = os.path.join(run, runfolder.MANIFEST)
    if not os.path.isfile(manifest_path):
        raise InputFileError("%s has no manifest.json: it is not a completed run folder." % run, step=STEP,
                             hint="Run the re-save step first.")
    manifest = runfolder.read_json(manifest_path)
    started = time.time()
    record = {"status": "failed", "path": MODEL_KERAS, "source": runfolder.MODEL_H5, "renamed": {},
              "outputs": {}, "helper_layers": [], "fixes": [], "dropped_arguments": {}, "custom_objects": []}
    keras_compat.prepare("tf_keras")
    target = os.path.join(run, MODEL_KERAS)
    try:
        import keras
        import tf_keras

        record["keras"] = keras.__version__
        record["tf_keras"] = tf_keras.__version__
        trusted = bool(manifest["model"].get("trusted")) if trust_model is None else trust_model
        custom = manifest["model"].get("custom_objects")
        custom_objects = keras_compat.load_custom_objects(os.path.join(run, custom)) if custom else {}
        legacy = keras_compat.load_model("tf_keras", os.path.join(run, runfolder.MODEL_H5), custom_objects,
                                         trust_model=trusted)
        model, migration, copied = build_keras3(legacy, keras, manifest["model"].get("keras_flavour"))
        with runfolder.atomic_path(target) as temporary:
            model.save(temporary)
        record.update(status="migrated", renamed=migration.renamed, outputs=migration.outputs,
                      helper_layers=sorted(migration.helpers), fixes=migration.fixes,
                      dropped_arguments=migration.dropped, weights_copied=copied,
                      layers=[layer.name for layer in model.layers if type(layer).__name__ != "InputLayer"],
                      sha256=runfolder.sha256_file(target))
    except UntrustedModelError:
        raise
    except Exception as exc:  # noqa: BLE001 - a model that cannot be migrated is an answer (the cell says it)
        if os.path.exists(target):
            os.remove(target)
        record["error"] = "%s: %s" % (type(exc).__name__, str(exc).strip().splitlines()[0][:400] if str(exc) else "")
        record["error_class"] = type(exc).__name__
        record["hint"] = getattr(exc, "hint", None) or NOT_MIGRATED_HINT
        if not isinstance(exc, TfbridgeError):
            record["traceback_hint"] = "rerun with --debug for the traceback"
        if os.environ.get("TFBRIDGE_DEBUG"):
            raise
    record["seconds"] = round(time.time() - started, 3)
    runfolder.write_json(os.path.join(run, MIGRATION), record)
    manifest["migration"] = {"path": MODEL_KERAS if record["status"] == "migrated" else None,
                             "status": record["status"], "record": MIGRATION, "renamed": record["renamed"]}
    runfolder.write_json(manifest_path, manifest)
    return record


def run(argv):
    parser = argparse.ArgumentParser(prog="python -m converters.tf2.migrate", description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="run folder made by legacy_tf1 resave")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.run):
        raise UsageError("run folder %s does not exist." % args.run, step=STEP)
    if args.debug:
        os.environ["TFBRIDGE_DEBUG"] = "1"
    record = migrate(args.run)
    if record["status"] == "migrated":
        print("migrated -> %s (%d renamed, %d behaviour fixes)" % (os.path.join(args.run, MODEL_KERAS),
                                                                 len(record["renamed"]), len(record["fixes"])))
    else:
        print("not migrated: %s" % record["error"])
    return 0


if __name__ == "__main__":
    raise SystemExit(cli.main(run, step=STEP))
