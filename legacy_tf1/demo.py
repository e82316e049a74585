"""The demo model: a small face / non-face classifier trained in tf1.13 on real images.

For whom: ``nox -s convert_legacy`` with no MODEL, so a newcomer sees the whole job work on a real legacy
model; and the tests. Data: scikit-image's ``skimage.data.lfw_subset()``, 200 grayscale 25x25 images that
ship inside the package (no download): the first 100 are faces, the last 100 are not.

Three disjoint sets, drawn per class with one seeded permutation (so each holds as many faces as
non-faces): ``train/`` (100 images: the model is fitted on these only), ``calibration/`` (50: the int8
calibration samples and, split off by tfbridge itself, the probe batch) and ``eval/`` (50: labelled
held-out images for ``--eval``). Each folder has one subfolder per class (``face``, ``non_face``: sorted,
not the model's output order ``CLASSES``, so the eval run passes ``--eval-classes classes.txt``).
Training uses standalone Keras (the TF 1.13 era's way), seeded, a few epochs.

Model input: float32 ``(N, 25, 25, 1)`` pixels scaled to [0, 1] (preprocess preset ``unit``: x / 255 of
the 8-bit PNGs written to the folders); output: softmax over (non-face, face).

``make_demo(out)`` writes ``demo_face.h5``, the three image folders (8-bit grayscale PNG), ``classes.txt``
(the class names in output order, for ``--eval-classes``) and ``demo_face.json`` (the split, the
held-out accuracy measured here in tf1.13, preprocess, input range, class names).
"""

import os
import shutil
import time

import numpy as np

from converters import runfolder
from legacy_tf1 import compat

CLASSES = ["non_face", "face"]
SIZE = 25
# per class (100 images each): train, calibration (calibration + probe), eval
SPLIT = (("train", 50), ("calibration", 25), ("eval", 25))


def load_images():
    """(images uint8 (200, 25, 25), labels (200,)) from skimage's lfw_subset."""
    from skimage import data

    images = data.lfw_subset()
    pixels = np.clip(np.round(images * 255.0), 0, 255).astype(np.uint8)
    labels = np.array([1] * 100 + [0] * 100, dtype=np.int64)
    return pixels, labels


def build(keras):
    layers = keras.layers
    inputs = layers.Input(shape=(SIZE, SIZE, 1), name="face_image")
    x = layers.Conv2D(8, (3, 3), activation="relu", padding="same", name="conv1")(inputs)
    x = layers.MaxPooling2D((2, 2), name="pool1")(x)
    x = layers.Conv2D(16, (3, 3), activation="relu", padding="same", name="conv2")(x)
    x = layers.MaxPooling2D((2, 2), name="pool2")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(32, activation="relu", name="fc1")(x)
    outputs = layers.Dense(2, activation="softmax", name="face_probs")(x)
    return keras.models.Model(inputs, outputs, name="demo_face")


def split_indices(labels, seed):
    """{"train": [...], "calibration": [...], "eval": [...]} image indices, disjoint, each half faces."""
    rng = np.random.RandomState(seed)
    parts = dict((name, []) for name, _ in SPLIT)
    for label in range(len(CLASSES)):
        members = np.flatnonzero(labels == label)
        members = members[rng.permutation(len(members))]
        start = 0
        for name, count in SPLIT:
            parts[name].extend(int(i) for i in members[start:start + count])
            start += count
    return dict((name, sorted(indices)) for name, indices in parts.items())


def _write_images(folder, pixels, labels, indices):
    from PIL import Image

    for index in indices:
        target = os.path.join(folder, CLASSES[labels[index]])
        if not os.path.isdir(target):
            os.makedirs(target)
        path = os.path.join(target, "%03d.png" % index)
        with runfolder.atomic_path(path) as temporary:
            Image.fromarray(pixels[index], mode="L").save(temporary, format="PNG")


def make_demo(out, seed=0, epochs=15):
    """Train and write the demo (see the module docstring); returns the json written."""
    started = time.time()
    keras = compat.keras_module("keras")
    np.random.seed(seed)
    compat.set_seed(seed)
    pixels, labels = load_images()
    parts = split_indices(labels, seed)
    train = np.random.RandomState(seed).permutation(parts["train"])  # mixed classes in every batch
    held_out = np.array(parts["eval"])
    x = (pixels.astype(np.float32) / 255.0)[..., None]
    y = keras.utils.to_categorical(labels, 2)
    model = build(keras)
    model.compile(optimizer=keras.optimizers.Adam(lr=0.003), loss="categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x[train], y[train], epochs=epochs, batch_size=16, verbose=0, shuffle=False)
    predicted = np.argmax(model.predict(x[held_out]), axis=1)
    accuracy = float(np.mean(predicted == labels[held_out]))
    if not os.path.isdir(out):
        os.makedirs(out)
    model_path = os.path.join(out, "demo_face.h5")
    with runfolder.atomic_path(model_path) as temporary:
        model.save(temporary)
    for name, indices in parts.items():
        shutil.rmtree(os.path.join(out, name), ignore_errors=True)  # an older demo's images must not stay
        _write_images(os.path.join(out, name), pixels, labels, indices)
    runfolder.write_text(os.path.join(out, "classes.txt"), "\n".join(CLASSES) + "\n")
    info = {"model": "demo_face.h5", "folders": dict((name, name) for name in parts), "classes_file": "classes.txt",
            "images": int(len(labels)), "split": dict((name, len(indices)) for name, indices in parts.items()),
            "indices": parts, "held_out": int(len(held_out)), "held_out_accuracy": accuracy,
            "epochs": epochs, "seed": seed, "preprocess": "unit", "input_range": [0.0, 1.0], "classes": CLASSES,
            "data": "skimage.data.lfw_subset (first 100 faces, last 100 non-faces)",
            "train_seconds": round(time.time() - started, 2)}
    runfolder.write_json(os.path.join(out, "demo_face.json"), info)
    return info
