"""Plain's template (``converters.tf2.recovery.requantize``, issue 31) writes each fold's int8 model byte
for byte as TensorFlow's quantizer does, and the search makes the same choice with the same figures with it.

Runs inside tf2 with real TF 2.21: TensorFlow's own calibrator and ``mlir_quantize`` (int8 I/O) on a small
CNN of the ops whose scales the quantizer ties together or fixes (batch norm folded into a conv, residual
add, max and average pooling, depthwise, concatenation, zero padding, global mean, dense, sigmoid gate,
multiply, flatten, softmax and tanh outputs), fed 32x32 patches of scikit-image's photographs (real data;
the three folds are interleaved patches of different images). Tolerance: none; the files are compared
byte for byte, the search's figures for equality.
"""

import os

import numpy as np
import pytest

pytestmark = pytest.mark.tf2

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

SIZE = 32


def _patches(count, offset=0):
    """``count`` 32x32 RGB patches in [0, 1] from scikit-image's photographs, taken in turn from each."""
    from skimage import data

    images = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    patches = []
    for k in range(offset, offset + count):
        image = images[k % len(images)]
        step = k // len(images)
        y = (step * 37) % (image.shape[0] - SIZE)
        x = (step * 53) % (image.shape[1] - SIZE)
        patches.append([(image[y:y + SIZE, x:x + SIZE, :3] / 255.0).astype(np.float32)[None]])
    return patches


def _model(tf_keras):
    tf_keras.utils.set_random_seed(0)
    layers = tf_keras.layers
    inputs = layers.Input((SIZE, SIZE, 3))
    x = layers.ReLU()(layers.BatchNormalization()(layers.Conv2D(8, 3, padding="same")(inputs)))
    x = layers.Add()([x, layers.Conv2D(8, 3, padding="same", activation="relu")(x)])
    x = layers.MaxPooling2D(2)(x)
    x = layers.Concatenate()([layers.DepthwiseConv2D(3, padding="same", activation="relu6")(x),
                              layers.Conv2D(4, 1)(x)])
    x = layers.Conv2D(6, 3, strides=2)(layers.ZeroPadding2D(1)(x))
    x = layers.AveragePooling2D(2)(x)
    gate = layers.Dense(6, activation="sigmoid")(layers.GlobalAveragePooling2D()(x))
    x = layers.Multiply()([x, layers.Reshape((1, 1, 6))(gate)])
    logits = layers.Dense(10)(layers.Flatten()(x))
    model = tf_keras.Model(inputs, [layers.Softmax()(logits), layers.Activation("tanh")(logits)])
    train = np.concatenate([p[0] for p in _patches(64, 1000)])
    model.compile("adam", "mse")  # a few steps: batch norm's statistics and the weights move off their init
    model.fit(train, [np.eye(10)[np.arange(64) % 10], np.zeros((64, 10))], epochs=2, verbose=0)
    return model


@pytest.fixture(scope="module")
def setup():
    import tensorflow as tf
    import tf_keras
    from tensorflow.lite.python.optimize import calibrator

    content = tf.lite.TFLiteConverter.from_keras_model(_model(tf_keras)).convert()
    samples = _patches(36)
    with_intermediates = calibrator.add_intermediate_tensors(content)

    def calibrate(train, collector=None):
        return calibrator.Calibrator(with_intermediates).calibrate(lambda: iter(train))

    return {"float": content, "samples": samples, "calibrate": calibrate}


def _quantizer(per_tensor):
    import tensorflow as tf
    from tensorflow.lite.python import lite

    def quantize(calibrated):
        return lite._mlir_quantize(calibrated, per_tensor, input_data_type=tf.int8, output_data_type=tf.int8)
    return quantize


@pytest.mark.parametrize("per_tensor", [False, True], ids=["per_channel", "per_tensor"])
def test_the_template_writes_every_folds_model_byte_for_byte_as_the_quantizer(setup, per_tensor):
    from converters.tf2 import tflite_model
    from converters.tf2.recovery import requantize

    quantize = _quantizer(per_tensor)
    samples = setup["samples"]
    folds = [setup["calibrate"](samples[k::3]) for k in range(3)]
    ranges = [tflite_model.tensor_ranges(c) for c in folds]
    everything = tflite_model.merge_ranges(folds[0], ranges[1:])
    learned_from = quantize(everything)
    template = requantize.Template(everything, learned_from)
    assert any(source is None for _, source in template.activations)  # softmax, tanh, sigmoid: fixed scales
    assert len(template.biases) == 7  # five convolutions, two dense layers
    for k in range(3):
        keep = [j for j in range(3) if j != k]
        calibrated = tflite_model.merge_ranges(folds[keep[0]], [ranges[keep[1]]])
        expected = quantize(calibrated)
        assert expected != learned_from  # the folds' ranges differ, and so do their int8 models
        assert template.apply(learned_from, calibrated) == expected, "fold %d" % k


def _search(setup, monkeypatch=None):
    from converters.tf2.recovery import requantize, search

    if monkeypatch is not None:
        def refuse(self, quantized, calibrated):
            raise requantize.Unexplained("switched off by the test")
        monkeypatch.setattr(requantize.Template, "apply", refuse)
    return search.search(setup["float"], setup["samples"], search.parse("bias,cle,cle+bias,mse"),
                         setup["calibrate"], _quantizer(False))


def test_the_search_chooses_the_same_with_the_same_figures_with_or_without_the_template(setup, monkeypatch):
    chosen, _, plain, section, extras = _search(setup)
    record = section["requantize"]
    # plain on all samples teaches the template, fold 0 checks it, folds 1 and 2 are written by it; cle (its
    # own weights) and mse (ranges that are not min/max) take the quantizer
    assert record["checked"].startswith("the second fit quantized both ways")
    assert record["templated"] == 2 and "refused" not in record, record
    with monkeypatch.context() as patch:
        chosen_off, _, plain_off, section_off, extras_off = _search(setup, patch)
    assert section_off["requantize"]["templated"] == 0
    assert section_off["requantize"]["quantizer_calls"] == record["quantizer_calls"] + record["templated"]
    assert (chosen, plain) == (chosen_off, plain_off)
    assert extras["candidates"] == extras_off["candidates"]
    keys = ("name", "sqnr_db", "score_db", "correlation", "top1_agreement", "stopped_early")
    assert [dict((k, c.get(k)) for k in keys) for c in section["candidates"]] == \
        [dict((k, c.get(k)) for k in keys) for c in section_off["candidates"]]
    assert (section["chosen"], section["why"]) == (section_off["chosen"], section_off["why"])


def test_a_template_that_does_not_reproduce_the_quantizer_is_never_used(setup):
    from converters.tf2 import tflite_model
    from converters.tf2.recovery import requantize
    from converters.tf2.recovery.graph import Graph

    quantize = _quantizer(False)
    calls = []

    def tampering(calibrated):  # the second model the "quantizer" makes has one zero point moved
        quantized = quantize(calibrated)
        calls.append(len(calls))
        if len(calls) == 2:
            graph = Graph(bytearray(quantized))
            t = graph.outputs[0]
            graph._graph.Tensors(t).Quantization().ZeroPointAsNumpy()[0] += 1
            quantized = bytes(graph.content)
        return quantized

    samples = setup["samples"]
    folds = [setup["calibrate"](samples[k::3]) for k in range(3)]
    ranges = [tflite_model.tensor_ranges(c) for c in folds]
    requantizer = requantize.Requantizer(tampering)
    requantizer(tflite_model.merge_ranges(folds[0], ranges[1:]))
    requantizer(tflite_model.merge_ranges(folds[1], [ranges[2]]))
    assert "differs" in requantizer.record["refused"]
    third = tflite_model.merge_ranges(folds[0], [ranges[2]])
    assert requantizer(third) == quantize(third)
    assert requantizer.record["quantizer_calls"] == 3 and requantizer.record["templated"] == 0
