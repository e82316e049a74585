"""Legacy models for the Keras 3 migration tests, built in tf1.13 (``python build_keras3_models.py KIND OUT``).

Each kind is made in its origin version (TF 1.13 with standalone Keras 2.2.4, or TF 1.13's tf.keras), with
seeded weights, small enough to load in seconds everywhere:

- ``keras-lstm``      standalone Keras LSTM classifier (default ``recurrent_activation="hard_sigmoid"``:
                      the Keras 3 ``hard_sigmoid`` hazard)
- ``keras-rnn-wrappers``  ``Bidirectional(LSTM)`` and ``ConvLSTM2D`` (hard_sigmoid gates inside a wrapper and
                      in a convolutional LSTM; Keras 3 does not load the file as it is)
- ``keras-gru``       standalone Keras GRU (``reset_after=False``, ``recurrent_activation="hard_sigmoid"``
                      by Keras 2.2.4's defaults)
- ``keras-hard-sigmoid``  Dense + ``Activation("hard_sigmoid")`` and a Dense with ``activation="hard_sigmoid"``
- ``keras-upsampling-bilinear``  ``UpSampling2D(interpolation="bilinear")`` (TF 1.x resize without
                      half-pixel centres, against TF 2.x's ``tf.image.resize``)
- ``tfkeras-prelu``   a tf.keras 1.13 CNN with PReLU (Keras 3 fails to deserialize tf.keras 1.x configs)
- ``keras-slash-names``  a small CNN whose layer names contain '/' as keras-vggface's do
- ``keras-bn-epsilon``  BatchNormalization with ``epsilon=1e-7`` and moving variances of 1e-7..1e-5
"""

import sys

import numpy as np
import tensorflow as tf


def _keras(kind):
    if kind.startswith("tfkeras"):
        return tf.keras
    import keras

    return keras


def build(kind):
    keras = _keras(kind)
    layers = keras.layers
    if kind in ("keras-lstm", "keras-gru"):
        inputs = layers.Input(shape=(12, 6), name="sequence")
        rnn = layers.LSTM if kind == "keras-lstm" else layers.GRU
        x = rnn(16, return_sequences=True, name="rnn1")(inputs)
        x = rnn(8, name="rnn2")(x)
        outputs = layers.Dense(3, name="scores")(x)  # linear: a softmax could saturate and hide a change
        return keras.models.Model(inputs, outputs)
    if kind == "keras-rnn-wrappers":
        inputs = layers.Input(shape=(4, 6, 6, 2), name="clip")
        x = layers.ConvLSTM2D(3, (3, 3), padding="same", name="conv_lstm")(inputs)
        y = layers.Reshape((4, 72), name="frames")(inputs)
        y = layers.Bidirectional(layers.LSTM(6), name="bi_lstm")(y)
        x = layers.Concatenate(name="both")([layers.Flatten(name="flat")(x), y])
        outputs = layers.Dense(3, name="scores")(x)
        return keras.models.Model(inputs, outputs)
    if kind == "keras-hard-sigmoid":
        inputs = layers.Input(shape=(10,), name="features")
        x = layers.Dense(16, name="dense1")(inputs)
        x = layers.Activation("hard_sigmoid", name="gate")(x)
        x = layers.Dense(8, activation="hard_sigmoid", name="dense2")(x)
        outputs = layers.Dense(3, name="scores")(x)
        return keras.models.Model(inputs, outputs)
    if kind == "keras-upsampling-bilinear":
        inputs = layers.Input(shape=(8, 8, 3), name="image")
        x = layers.Conv2D(4, (3, 3), padding="same", name="conv1")(inputs)
        x = layers.UpSampling2D((2, 2), interpolation="bilinear", name="up")(x)
        x = layers.Conv2D(4, (3, 3), padding="same", name="conv2")(x)
        outputs = layers.GlobalAveragePooling2D(name="gap")(x)
        return keras.models.Model(inputs, outputs)
    if kind == "tfkeras-prelu":
        inputs = layers.Input(shape=(24, 24, 3), name="image")
        x = layers.Conv2D(8, (3, 3), name="conv1")(inputs)
        x = layers.PReLU(shared_axes=[1, 2], name="prelu1")(x)
        x = layers.MaxPooling2D((2, 2), name="pool1")(x)
        x = layers.Conv2D(16, (3, 3), name="conv2")(x)
        x = layers.BatchNormalization(name="bn2")(x)
        x = layers.PReLU(name="prelu2")(x)
        x = layers.Flatten(name="flatten")(x)
        outputs = layers.Dense(4, name="scores")(x)
        return keras.models.Model(inputs, outputs)
    if kind == "keras-slash-names":
        inputs = layers.Input(shape=(16, 16, 3), name="image")
        x = layers.Conv2D(4, (3, 3), padding="same", name="conv1/3x3_s1")(inputs)
        x = layers.BatchNormalization(name="conv1/3x3_s1/bn")(x)
        x = layers.Activation("relu", name="conv1/relu")(x)
        x = layers.GlobalAveragePooling2D(name="pool/gap")(x)
        outputs = layers.Dense(3, name="classifier/scores")(x)
        return keras.models.Model(inputs, outputs)
    if kind == "keras-bn-epsilon":
        inputs = layers.Input(shape=(8, 8, 3), name="image")
        x = layers.Conv2D(4, (3, 3), padding="same", name="conv1")(inputs)
        x = layers.BatchNormalization(epsilon=1e-7, name="bn1")(x)
        outputs = layers.GlobalAveragePooling2D(name="gap")(x)
        return keras.models.Model(inputs, outputs)
    raise SystemExit("unknown kind %r" % kind)


KINDS = ("keras-lstm", "keras-gru", "keras-rnn-wrappers", "keras-hard-sigmoid", "keras-upsampling-bilinear", "tfkeras-prelu",
         "keras-slash-names", "keras-bn-epsilon")


def _perturb(model, seed=1):
    # fresh BN layers are identities (mean 0, var 1) and fresh biases are 0: give both non-trivial values
    rng = np.random.RandomState(seed)
    for layer in model.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        new = []
        for w in weights:
            if type(layer).__name__ == "BatchNormalization" and w is weights[-1]:
                # tiny variances where the epsilon matters (keras-bn-epsilon), ordinary ones elsewhere
                low, high = (1e-7, 1e-5) if layer.epsilon < 1e-5 else (0.5, 1.5)
                new.append(rng.uniform(low, high, size=w.shape).astype(w.dtype))
            elif not w.any() or type(layer).__name__ == "PReLU":
                new.append(rng.normal(0, 0.3, size=w.shape).astype(w.dtype))
            else:
                new.append(w)
        layer.set_weights(new)


def main(kind, out):
    np.random.seed(0)
    tf.set_random_seed(0)
    model = build(kind)
    _perturb(model)
    model.save(out)


# keras-vggface (no top, random weights) at the smallest input each accepts: VGG16 from 48 px, ResNet50 and
# SENet50 need 197 (their 7x7 average pool).
ZOO = {"vggface-vgg16": (64, 64, 3), "vggface-resnet50": (197, 197, 3), "vggface-senet50": (197, 197, 3)}


def resave_all(folder, kinds, probe_samples=4):
    """Build every kind (and keras-vggface zoo model) named in ``kinds`` into ``folder/<kind>.h5`` and re-save
    each, as ``python -m legacy_tf1 resave`` does, into the run folder ``folder/<kind>/``: one TF 1.13
    process for all of them (the tests' time budget)."""
    import json
    import os

    import keras

    from legacy_tf1 import resave, zoo

    def fresh_graph():  # standalone Keras and tf.keras each keep a session: start every model afresh
        keras.backend.clear_session()
        tf.keras.backend.clear_session()

    done = {}
    for kind in kinds:
        fresh_graph()
        path = os.path.join(folder, kind + ".h5")
        if kind in ZOO:
            zoo.save(kind, path, input_shape=ZOO[kind])
        else:
            main(kind, path)
        fresh_graph()
        manifest = resave.resave(path, os.path.join(folder, kind), "tf1.13", samples=probe_samples)
        done[kind] = manifest["model"]["keras_flavour"]
    print(json.dumps(done))


if __name__ == "__main__":
    if sys.argv[1] == "--resave-all":   # --resave-all FOLDER KIND...
        resave_all(sys.argv[2], sys.argv[3:])
    else:
        main(sys.argv[1], sys.argv[2])
