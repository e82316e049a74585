"""The legacy model zoo: models built in TF 1.x exactly as their era's code built them.

For whom: tests, the demo and anyone who wants a known legacy ``.h5`` to try the toolkit on. Weights are
random but deterministic (``weights=None``; TF graph seed and numpy seed fixed), because pre-trained
weights are downloaded from the internet at run time, which these machines cannot do.

Models (``build(name, **options)``; ``python -m legacy_tf1 zoo NAME --out FILE.h5``):

- ``vggface-vgg16``, ``vggface-resnet50``, ``vggface-senet50``: rcmalli's keras-vggface 0.6 architectures
  (standalone Keras). Options: ``include_top`` (default False), ``input_shape`` (default 224x224x3;
  VGG16 without top accepts >= 48, ResNet50 needs 224 (its 7x7 average pool) , SENet50 needs >= 197),
  ``pooling``.
- ``tfkeras-cnn``: a small CNN built with tf.keras (the file says keras_version "2.2.4-tf").
- ``keras-cnn``: the same CNN with standalone Keras.

What can go wrong: keras-vggface raises ``ValueError`` for input shapes below the architecture's minimum.
"""

import numpy as np

from legacy_tf1 import compat

VGGFACE = {"vggface-vgg16": "vgg16", "vggface-resnet50": "resnet50", "vggface-senet50": "senet50"}
NAMES = sorted(VGGFACE) + ["keras-cnn", "tfkeras-cnn"]


def small_cnn(keras, input_shape=(32, 32, 3), classes=4):
    """A small conv net with BN, pooling, dropout and softmax: the layer types most legacy models use."""
    layers = keras.layers
    inputs = layers.Input(shape=tuple(input_shape), name="image")
    x = layers.Conv2D(8, (3, 3), padding="same", activation="relu", name="conv1")(inputs)
    x = layers.BatchNormalization(name="bn1")(x)
    x = layers.MaxPooling2D((2, 2), name="pool1")(x)
    x = layers.Conv2D(16, (3, 3), padding="same", activation="relu", name="conv2")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(0.25, name="drop")(x)
    outputs = layers.Dense(classes, activation="softmax", name="probs")(x)
    return keras.models.Model(inputs, outputs, name="small_cnn")


def build(name, seed=0, include_top=False, input_shape=None, pooling=None):
    """Build zoo model ``name`` with deterministic weights; returns ``(model, flavour)``."""
    np.random.seed(seed)
    compat.set_seed(seed)
    if name in VGGFACE:
        from keras_vggface.vggface import VGGFace

        kwargs = {"model": VGGFACE[name], "include_top": include_top, "weights": None, "pooling": pooling}
        # without top, keras-vggface leaves H and W open (None); fix them so the model can be probed
        # and frozen with concrete shapes
        kwargs["input_shape"] = tuple(input_shape or (224, 224, 3))
        return VGGFace(**kwargs), "keras"
    if name == "keras-cnn":
        return small_cnn(compat.keras_module("keras"), input_shape or (32, 32, 3)), "keras"
    if name == "tfkeras-cnn":
        return small_cnn(compat.keras_module("tf.keras"), input_shape or (32, 32, 3)), "tf.keras"
    raise ValueError("unknown zoo model %r (known: %s)" % (name, ", ".join(NAMES)))


def _perturb_batchnorm(model, seed):
    # fresh BN layers have mean 0 / var 1, so they are identities and would hide BN bugs: give them
    # deterministic non-trivial statistics.
    rng = np.random.RandomState(seed + 1)
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            weights = layer.get_weights()
            new = []
            for index, w in enumerate(weights):
                if index == len(weights) - 1:  # moving variance: positive
                    new.append(rng.uniform(0.5, 1.5, size=w.shape).astype(w.dtype))
                else:
                    new.append((w + rng.normal(0, 0.1, size=w.shape)).astype(w.dtype))
            layer.set_weights(new)


def save(name, out, seed=0, include_top=False, input_shape=None, pooling=None, weights_only=False):
    """Build and save zoo model ``name`` to ``out`` atomically; return a small description."""
    from converters import runfolder

    model, flavour = build(name, seed, include_top, input_shape, pooling)
    _perturb_batchnorm(model, seed)
    with runfolder.atomic_path(out) as temporary:
        if weights_only:
            model.save_weights(temporary)
        else:
            model.save(temporary)
    return {"name": name, "path": out, "flavour": flavour, "parameters": int(model.count_params()),
            "input_shape": list(model.input_shape[1:]), "output_shape": list(model.output_shape[1:])}
