"""A small CNN trained in tf1.13 on scikit-learn's digits: accuracy of the int8 model on real data.

For whom: BENCHMARKS.md ("Accuracy on real data", ``bench/run.py``) and the crossenv test
``tests/integration/test_digits_crossenv.py``: a legacy model (standalone Keras 2.2.4, the TF 1.13 era's
way) trained on real data, so that ``convert_legacy --eval`` measures what int8 costs in top-1 on samples
the model never saw, instead of agreement on random inputs.

Data: ``sklearn.datasets.load_digits()``, 1,797 real 8x8 handwritten digits (UCI optdigits test set) that
ship inside scikit-learn (no download), pixel values 0..16. One fixed stratified split
(``train_test_split(test_size=TEST_FRACTION, stratify=y, random_state=seed)``): the model is fitted on
the train split only; the test split is the labelled held-out set.

Model input: float32 ``(N, 8, 8, 1)`` = pixels / 16, in [0, 1] (already scaled: tfbridge's preprocess
preset ``raw``); output: softmax over the digits 0..9 (class index = digit).

``python -m legacy_tf1 digits OUT_DIR [--seed 0] [--epochs 30]`` writes into OUT_DIR:

- ``model.h5``: the trained model (standalone Keras 2.2.4 ``.h5``);
- ``calib.npy``: the train split's images, float32 (N, 8, 8, 1): ``--calib`` (tfbridge splits off the
  probe from it: calibration and probe both come from training data, the eval set stays unseen);
- ``eval.npz``: ``x`` (the test split's images, float32 (N, 8, 8, 1)) and ``y`` (int64 digits): ``--eval``;
- ``digits.json``: the split sizes, the seed, and the float top-1 measured here in tf1.13.

What can go wrong: scikit-learn missing from the environment (it is in the tf1.13 lock: an ImportError
here means a broken environment; rebuild it with ``nox -s envs``).
"""

import os
import time

import numpy as np

from converters import runfolder
from legacy_tf1 import compat

TEST_FRACTION = 0.3  # 540 test digits: one flip moves top-1 by 0.19 points
EPOCHS = 30
BATCH = 32


def load(seed=0):
    """(x_train, y_train, x_test, y_test): float32 (N, 8, 8, 1) in [0, 1] and int64 labels, stratified."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0)[..., None]
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=TEST_FRACTION, stratify=y,
                                                        random_state=seed)
    return x_train, y_train, x_test, y_test


def build(keras):
    """A LeNet-like CNN for 8x8 digits (conv-conv-pool-dense), ~20 k parameters."""
    layers = keras.layers
    inputs = layers.Input(shape=(8, 8, 1), name="digit_image")
    x = layers.Conv2D(16, (3, 3), activation="relu", padding="same", name="conv1")(inputs)
    x = layers.Conv2D(32, (3, 3), activation="relu", padding="same", name="conv2")(x)
    x = layers.MaxPooling2D((2, 2), name="pool")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(32, activation="relu", name="fc1")(x)
    outputs = layers.Dense(10, activation="softmax", name="digit_probs")(x)
    return keras.models.Model(inputs, outputs, name="digits_cnn")


def reproducible_keras(seed):
    """Standalone Keras, seeded, on one thread: TF 1.x's multi-threaded reductions make training differ
    from run to run (measured: float top-1 97.96 / 98.15 / 98.33 % with the same seed); the figures in
    BENCHMARKS.md should be reproducible. tf.Session / ConfigProto are the same in TF 1.13 and 1.15 (this
    module runs only there)."""
    keras = compat.keras_module("keras")
    np.random.seed(seed)
    compat.set_seed(seed)
    tf = compat.tf
    keras.backend.set_session(tf.Session(graph=tf.get_default_graph(), config=tf.ConfigProto(
        intra_op_parallelism_threads=1, inter_op_parallelism_threads=1)))
    return keras


def write_data(out, x_train, x_test, y_test):
    """``calib.npy`` (the train split's images) and ``eval.npz`` (the test split, labelled) into ``out``."""
    with runfolder.atomic_path(os.path.join(out, "calib.npy")) as temporary:
        with open(temporary, "wb") as handle:
            np.save(handle, x_train)
    runfolder.write_arrays(os.path.join(out, "eval.npz"), {"x": x_test, "y": y_test})


def make_digits(out, seed=0, epochs=EPOCHS):
    """Train and write the files of the module docstring into ``out``; returns digits.json's content."""
    started = time.time()
    keras = reproducible_keras(seed)
    x_train, y_train, x_test, y_test = load(seed)
    model = build(keras)
    model.compile(optimizer=keras.optimizers.Adam(lr=0.003), loss="categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x_train, keras.utils.to_categorical(y_train, 10), epochs=epochs, batch_size=BATCH, verbose=0,
              shuffle=True)
    predicted = np.argmax(model.predict(x_test, batch_size=256), axis=1)
    top1 = 100.0 * float(np.mean(predicted == y_test))
    if not os.path.isdir(out):
        os.makedirs(out)
    with runfolder.atomic_path(os.path.join(out, "model.h5")) as temporary:
        model.save(temporary)
    write_data(out, x_train, x_test, y_test)
    info = {"model": "model.h5", "calib": "calib.npy", "eval": "eval.npz", "preprocess": "raw",
            "input_range": [0.0, 1.0], "data": "sklearn.datasets.load_digits (1,797 8x8 digits, pixels / 16)",
            "split": {"train": int(len(y_train)), "test": int(len(y_test)), "test_fraction": TEST_FRACTION,
                      "stratified": True, "seed": seed},
            "epochs": epochs, "float_top1_tf1": top1, "unit": "percent", "parameters": int(model.count_params()),
            "train_seconds": round(time.time() - started, 2)}
    runfolder.write_json(os.path.join(out, "digits.json"), info)
    return info
