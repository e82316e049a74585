"""Small legacy models for the integration tests, built in tf1.13 (``python build_models.py KIND OUT``).

Kinds: ``drifting`` (a CNN with the ``ScaleShift`` custom layer of ``drifting_layer.py`` in the middle),
``lambda`` (a CNN with a Lambda layer, to be refused without --trust-model), ``lstm`` / ``gru`` (an LSTM / GRU sequence
classifier, input (20, 8)), ``two-input`` (inputs ``image`` (16, 16, 3) and ``meta`` (4,)). Weights are seeded.
"""

import os
import sys

import numpy as np
import tensorflow as tf

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def main(kind, out):
    np.random.seed(0)
    tf.set_random_seed(0)
    import keras

    if kind in ("lstm", "gru"):  # a sequence classifier: input (20 steps, 8 features), not an image
        sequence = keras.layers.Input(shape=(20, 8), name="sequence")
        recurrent = keras.layers.LSTM if kind == "lstm" else keras.layers.GRU
        x = recurrent(16, name=kind)(sequence)
        outputs = keras.layers.Dense(4, activation="softmax", name="classes")(x)
        keras.models.Model(sequence, outputs).save(out)
        return
    if kind == "two-input":  # an image and a vector of side information, one score vector
        image = keras.layers.Input(shape=(16, 16, 3), name="image")
        meta = keras.layers.Input(shape=(4,), name="meta")
        x = keras.layers.Conv2D(4, (3, 3), padding="same", activation="relu", name="conv1")(image)
        x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
        m = keras.layers.Dense(4, activation="relu", name="meta_dense")(meta)
        x = keras.layers.Concatenate(name="joined")([x, m])
        outputs = keras.layers.Dense(3, name="scores")(x)
        keras.models.Model([image, meta], outputs).save(out)
        return
    inputs = keras.layers.Input(shape=(16, 16, 3), name="image")
    x = keras.layers.Conv2D(4, (3, 3), padding="same", activation="relu", name="conv1")(inputs)
    if kind == "drifting":
        from drifting_layer import ScaleShift

        x = ScaleShift(name="scale_shift")(x)
    elif kind == "lambda":
        x = keras.layers.Lambda(lambda t: t * 0.5, name="halve")(x)
    else:
        raise SystemExit("unknown kind %r" % kind)
    x = keras.layers.Conv2D(8, (3, 3), padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    # linear scores, not softmax: a saturated softmax would hide the drift this model exists to show
    outputs = keras.layers.Dense(3, name="scores")(x)
    keras.models.Model(inputs, outputs).save(out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
