"""A depthwise-separable CNN trained in tf1.13 on scikit-learn's digits, and the same model with its
channels rescaled: the test models of int8 accuracy recovery (issue 22).

For whom: ``tests/integration/test_quantization_recovery_crossenv.py`` and BENCHMARKS.md (``bench/run.py``);
TF 1.x environments (Python 3.7, standalone Keras 2.2.4).

The model is MobileNet's block in small: conv 3x3 -> [depthwise 3x3 -> pointwise 1x1] x 2 (the second
depthwise with stride 2 after zero padding, as ``keras.applications.MobileNet`` does), each followed by
batch norm and ReLU, then global average pooling and a softmax. Data: ``legacy_tf1.digits``' split (the
1,797 real 8x8 digits shipped in scikit-learn, train / held-out test), the same files.

``model_rescaled.h5`` computes the same function with widely different per-channel ranges, as real
trained MobileNets have them: every batch norm's output channel c is multiplied by k_c (its gamma and
beta), which passes through ReLU unchanged in meaning (ReLU(k x) = k ReLU(x) for k > 0) and through zero
padding, and the next layer's weights of input channel c are divided by k_c (a depthwise or pointwise
kernel, or the dense layer after global average pooling). k_c is log-uniform in [1 / RESCALE, RESCALE],
seeded. Its float top-1 is measured here and must equal the original's.

``python -m legacy_tf1 separable OUT_DIR [--seed 0] [--epochs 20]`` writes model.h5, model_rescaled.h5,
calib.npy, eval.npz and separable.json into OUT_DIR.
"""

import os
import time

import numpy as np

from converters import runfolder
from legacy_tf1 import compat, digits

EPOCHS = 20
RESCALE = 32.0


def build(keras):
    layers = keras.layers
    inputs = layers.Input(shape=(8, 8, 1), name="digit_image")
    x = layers.Conv2D(16, (3, 3), padding="same", use_bias=False, name="conv1")(inputs)
    x = layers.BatchNormalization(name="conv1_bn")(x)
    x = layers.Activation("relu", name="conv1_relu")(x)
    blocks = ((32, 1), (64, 2))
    for k, (filters, stride) in enumerate(blocks, 1):
        if stride == 2:
            x = layers.ZeroPadding2D(((0, 1), (0, 1)), name="pad_%d" % k)(x)
        x = layers.DepthwiseConv2D((3, 3), strides=stride, padding="same" if stride == 1 else "valid",
                                   use_bias=False, name="dw_%d" % k)(x)
        x = layers.BatchNormalization(name="dw_%d_bn" % k)(x)
        x = layers.Activation("relu", name="dw_%d_relu" % k)(x)
        x = layers.Conv2D(filters, (1, 1), use_bias=False, name="pw_%d" % k)(x)
        x = layers.BatchNormalization(name="pw_%d_bn" % k)(x)
        x = layers.Activation("relu", name="pw_%d_relu" % k)(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = layers.Dense(10, activation="softmax", name="digit_probs")(x)
    return keras.models.Model(inputs, outputs, name="separable_digits")


# batch norm -> the layer that reads its (ReLU'd) channels
PAIRS = (("conv1_bn", "dw_1"), ("dw_1_bn", "pw_1"), ("pw_1_bn", "dw_2"), ("dw_2_bn", "pw_2"),
         ("pw_2_bn", "digit_probs"))


def rescale(model, seed=0, spread=RESCALE):
    """Rescale ``model``'s channels in place (module docstring); returns the factors' min and max."""
    rng = np.random.RandomState(seed)
    low, high = np.inf, 0.0
    for bn_name, next_name in PAIRS:
        bn = model.get_layer(bn_name)
        gamma, beta, mean, variance = bn.get_weights()
        factor = np.exp(rng.uniform(-np.log(spread), np.log(spread), size=gamma.shape)).astype(np.float32)
        bn.set_weights([gamma * factor, beta * factor, mean, variance])
        following = model.get_layer(next_name)
        weights = following.get_weights()
        kernel = weights[0]
        if kernel.ndim == 4:  # depthwise (3, 3, C, 1) and pointwise (1, 1, C, F): input channels on axis 2
            kernel = kernel / factor.reshape(1, 1, -1, 1)
        else:  # dense after global average pooling: (C, classes)
            kernel = kernel / factor.reshape(-1, 1)
        following.set_weights([kernel] + weights[1:])
        low, high = min(low, float(factor.min())), max(high, float(factor.max()))
    return low, high


def make_separable(out, seed=0, epochs=EPOCHS):
    """Train, rescale, write the files of the module docstring into ``out``; returns separable.json."""
    started = time.time()
    keras = compat.keras_module("keras")
    np.random.seed(seed)
    compat.set_seed(seed)
    tf = compat.tf  # one thread: reproducible training (see legacy_tf1.digits)
    keras.backend.set_session(tf.Session(graph=tf.get_default_graph(), config=tf.ConfigProto(
        intra_op_parallelism_threads=1, inter_op_parallelism_threads=1)))
    x_train, y_train, x_test, y_test = digits.load(seed)
    model = build(keras)
    model.compile(optimizer=keras.optimizers.Adam(lr=0.003), loss="categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, keras.utils.to_categorical(y_train, 10), epochs=epochs, batch_size=digits.BATCH, verbose=0,
              shuffle=True)
    before = model.predict(x_test, batch_size=256)
    if not os.path.isdir(out):
        os.makedirs(out)
    with runfolder.atomic_path(os.path.join(out, "model.h5")) as temporary:
        model.save(temporary)
    low, high = rescale(model, seed)
    after = model.predict(x_test, batch_size=256)
    with runfolder.atomic_path(os.path.join(out, "model_rescaled.h5")) as temporary:
        model.save(temporary)
    with runfolder.atomic_path(os.path.join(out, "calib.npy")) as temporary:
        with open(temporary, "wb") as handle:
            np.save(handle, x_train)
    runfolder.write_arrays(os.path.join(out, "eval.npz"), {"x": x_test, "y": y_test})
    info = {"model": "model.h5", "rescaled": "model_rescaled.h5", "calib": "calib.npy", "eval": "eval.npz",
            "preprocess": "raw", "epochs": epochs, "seed": seed,
            "float_top1_tf1": 100.0 * float(np.mean(np.argmax(before, 1) == y_test)),
            "rescaled_float_top1_tf1": 100.0 * float(np.mean(np.argmax(after, 1) == y_test)),
            "rescaled_max_abs_difference": float(np.max(np.abs(after - before))),
            "rescale_factors": [low, high], "parameters": int(model.count_params()),
            "split": {"train": int(len(y_train)), "test": int(len(y_test))},
            "train_seconds": round(time.time() - started, 2)}
    runfolder.write_json(os.path.join(out, "separable.json"), info)
    return info
