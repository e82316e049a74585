"""A real MobileNetV1 (keras.applications, ReLU6 everywhere) trained in tf1.13 on real faces, with a probe
that is mostly one class: the test model of int8 fidelity on a skewed probe (issue 30).

For whom: ``tests/integration/conftest.py`` (``mobilenet_faces``), BENCHMARKS.md (``bench/run.py`` section
8); TF 1.x environments (Python 3.7, standalone Keras 2.2.4 and its ``keras.applications.MobileNet``).

Why this model: FACTS.md's real 2-class MobileNetV1, judged on a probe that is 97 % one class, showed
that raw SQNR, cosine and top-1 cannot tell a good int8 file from one whose output is constant. This is
the same architecture (depthwise separable blocks, batch norm, ReLU6 after every convolution, the
1x1-convolution classifier of ``keras.applications``), small (``ALPHA`` 0.25, 48x48x3: training takes
under a minute of one core), trained here on images that ship with scikit-image (no download), with a probe that is mostly faces, as a user's own
photographs would be.

Data: ``skimage.data.lfw_subset()``, 200 grayscale 25x25 images: the first 100 are faces, the last 100 are
not. Each is resized to 48x48 (bilinear), rounded to 8-bit values and replicated to 3 channels; the files
hold those pixel values (float32, 0..255) and the model expects them after ``--preprocess tf``
(x / 127.5 - 1, ``keras.applications.mobilenet.preprocess_input``), the preprocessing it was trained with.
One seeded permutation per class (``SPLIT``) cuts three disjoint sets:

- ``eval.npz``: 20 faces and 20 non-faces, labelled (``x``, ``y``): ``--eval``, never trained on;
- ``probe.npy``: 38 faces and 2 non-faces (95 % faces): ``--probe``, never trained on;
- ``calib.npy``: the other 120 images (42 faces, 78 non-faces), the training set: ``--calib`` (as users
  calibrate on their training data; calibration and probe share no image).

Training: the calibration images and their mirror images, class-weighted (the training set is 35 %
faces), Adam, ``EPOCHS`` epochs, seeded, one thread (``digits.reproducible_keras``). Output: softmax over
``CLASSES`` (non-face, face).

``python -m legacy_tf1 mobilenet OUT_DIR [--seed 0] [--epochs N]`` writes model.h5, calib.npy, probe.npy,
eval.npz and mobilenet.json (split sizes, the probe's class balance, the float accuracy measured here)
into OUT_DIR.

What can go wrong: scikit-image missing from the environment (it is in the tf1.13 lock: an ImportError
here means a broken environment; ``nox -s envs`` rebuilds it).
"""

import os
import time

import numpy as np

from converters import runfolder
from legacy_tf1 import digits

CLASSES = ["non_face", "face"]
SIZE = 48
ALPHA = 0.25
EPOCHS = 25
BATCH = 32
# per class, in order (face, non_face): held-out eval, probe; the rest trains and calibrates
SPLIT = {"face": (20, 38), "non_face": (20, 2)}


def load_images():
    """(pixels float32 (200, SIZE, SIZE, 3) with 8-bit values 0..255, labels int64 (200,): 1 = face)."""
    from skimage import data, transform

    images = data.lfw_subset()
    resized = np.stack([transform.resize(image, (SIZE, SIZE), order=1, mode="edge", anti_aliasing=False)
                        for image in images])
    pixels = np.clip(np.round(resized * 255.0), 0, 255).astype(np.float32)
    labels = np.array([1] * 100 + [0] * 100, dtype=np.int64)
    return np.repeat(pixels[..., None], 3, axis=-1), labels


def preprocess(pixels):
    """tfbridge's preset ``tf``: x / 127.5 - 1 (MobileNet's own preprocess_input)."""
    return pixels / np.float32(127.5) - np.float32(1.0)


def split_indices(labels, seed):
    """{"eval", "probe", "calibration"}: disjoint sorted image indices (``SPLIT`` per class)."""
    rng = np.random.RandomState(seed)
    parts = {"eval": [], "probe": [], "calibration": []}
    for label, name in enumerate(CLASSES):
        members = np.flatnonzero(labels == label)
        members = members[rng.permutation(len(members))]
        held, probe = SPLIT[name]
        parts["eval"].extend(int(i) for i in members[:held])
        parts["probe"].extend(int(i) for i in members[held:held + probe])
        parts["calibration"].extend(int(i) for i in members[held + probe:])
    return dict((name, sorted(indices)) for name, indices in parts.items())


def build(keras, seed=0):
    """keras.applications' MobileNetV1 (alpha ALPHA, SIZE x SIZE x 3, 2 classes, random weights)."""
    return keras.applications.MobileNet(input_shape=(SIZE, SIZE, 3), alpha=ALPHA, include_top=True, weights=None,
                     classes=len(CLASSES))


def make_mobilenet(out, seed=0, epochs=EPOCHS):
    """Train and write the files of the module docstring into ``out``; returns mobilenet.json's content."""
    started = time.time()
    keras = digits.reproducible_keras(seed)
    pixels, labels = load_images()
    parts = split_indices(labels, seed)
    train = np.array(parts["calibration"])
    x_train = np.concatenate([pixels[train], pixels[train][:, :, ::-1]])  # and the mirror images
    y_train = np.concatenate([labels[train], labels[train]])
    order = np.random.RandomState(seed).permutation(len(y_train))
    faces = float(np.mean(y_train))
    weights = {0: 0.5 / (1.0 - faces), 1: 0.5 / faces}
    model = build(keras, seed)
    model.compile(optimizer=keras.optimizers.Adam(lr=0.003), loss="categorical_crossentropy", metrics=["accuracy"])
    model.fit(preprocess(x_train[order]), keras.utils.to_categorical(y_train[order], len(CLASSES)), epochs=epochs,
              batch_size=BATCH, verbose=0, shuffle=True, class_weight=weights)
    trained_seconds = time.time() - started

    def top1(name):
        indices = np.array(parts[name])
        predicted = np.argmax(model.predict(preprocess(pixels[indices]), batch_size=64), axis=1)
        return 100.0 * float(np.mean(predicted == labels[indices])), predicted

    eval_top1, _ = top1("eval")
    probe_top1, probe_predicted = top1("probe")
    train_top1, _ = top1("calibration")
    if not os.path.isdir(out):
        os.makedirs(out)
    with runfolder.atomic_path(os.path.join(out, "model.h5")) as temporary:
        model.save(temporary)
    for name, indices in (("calib.npy", parts["calibration"]), ("probe.npy", parts["probe"])):
        with runfolder.atomic_path(os.path.join(out, name)) as temporary:
            with open(temporary, "wb") as handle:
                np.save(handle, pixels[np.array(indices)])
    held_out = np.array(parts["eval"])
    runfolder.write_arrays(os.path.join(out, "eval.npz"), {"x": pixels[held_out], "y": labels[held_out]})
    probe_faces = float(np.mean(labels[np.array(parts["probe"])]))
    info = {"model": "model.h5", "calib": "calib.npy", "probe": "probe.npy", "eval": "eval.npz",
            "preprocess": "tf", "input_range": [0.0, 255.0], "classes": CLASSES,
            "architecture": "keras.applications.MobileNet (keras %s), alpha %s, %dx%dx3, ReLU6, 2 classes" % (
                keras.__version__, ALPHA, SIZE, SIZE),
            "data": "skimage.data.lfw_subset (first 100 faces, last 100 non-faces), resized to %dx%d, gray "
                    "replicated to 3 channels" % (SIZE, SIZE),
            "split": dict((name, len(indices)) for name, indices in parts.items()),
            "indices": parts, "probe_dominant_class": "face", "probe_dominant_share": probe_faces,
            "calibration_face_share": faces,
            "float_top1_tf1": {"eval": eval_top1, "probe": probe_top1, "train": train_top1},
            "probe_predicted_face_share": float(np.mean(probe_predicted)),
            "epochs": epochs, "seed": seed, "unit": "percent", "parameters": int(model.count_params()),
            "train_seconds": round(trained_seconds, 2), "seconds": round(time.time() - started, 2)}
    runfolder.write_json(os.path.join(out, "mobilenet.json"), info)
    return info
