"""The int8 verdict cannot be passed by a constant output (issue 30), on a real TFLite model.

Runs inside tf2 with real TF 2.21. A small CNN whose output carries a large offset (as a skewed probe
makes every output nearly the same vector) is converted to full int8 by TensorFlow's own converter; a
copy of that file whose last layer's int8 weights are zeroed outputs a constant (its bias). On inputs
neither calibration nor training saw, both files are judged by ``tflite_run.evaluate``, the probe's
verdict: the real file matches; the constant file keeps a cosine above the 0.99 bar and a small raw
error, and fails on the figures measured against the outputs' variation (centered SQNR, correlation).
"""

import os

import numpy as np
import pytest

pytestmark = pytest.mark.tf2

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

SHAPE = (10, 10, 3)
OFFSET = 300.0  # every output sits near 300: raw SQNR and cosine barely see the sample-to-sample signal


def _inputs(count, seed):
    """Random images of random brightness (the brightness is what varies the output from sample to sample)."""
    rng = np.random.RandomState(seed)
    return (rng.uniform(0, 1, (count, 1, 1, 1)) * rng.uniform(0, 1, (count,) + SHAPE)).astype(np.float32)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    import tensorflow as tf
    import tf_keras

    from converters.tf2.recovery.graph import LINEAR_OPS, Graph

    tf_keras.utils.set_random_seed(1)
    layers = tf_keras.layers
    inputs = layers.Input(SHAPE)
    x = layers.Conv2D(8, 3, activation="relu")(inputs)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(4, bias_initializer=tf_keras.initializers.Constant(OFFSET))(x * 60.0)
    model = tf_keras.Model(inputs, outputs)
    calibration = _inputs(32, 0)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([calibration[k:k + 1]] for k in range(len(calibration)))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    content = converter.convert()
    folder = tmp_path_factory.mktemp("fidelity")
    real = folder / "model_int8.tflite"
    real.write_bytes(content)
    constant = bytearray(content)
    graph = Graph(constant)
    last = [op for op in graph.ops if op.name in LINEAR_OPS][-1]
    assert last.name == "FULLY_CONNECTED"
    graph.values(last.inputs[LINEAR_OPS[last.name][0]])[...] = 0  # output = its bias, whatever the input
    flat = folder / "model_int8_constant.tflite"
    flat.write_bytes(bytes(constant))
    probe = _inputs(40, 7)  # held out: neither trained nor calibrated on
    return str(real), str(flat), probe, model.predict(probe, verbose=0)


def test_the_real_int8_file_matches(files):
    from converters.tf2 import tflite_run

    real, _, probe, reference = files
    measured = tflite_run.evaluate(real, probe, [reference])
    assert measured["status"] == "match", measured["reasons"]
    assert measured["centered_judged"] and measured["sqnr_centered_db"] > 10 and measured["correlation"] > 0.95


def test_a_constant_output_fails_the_verdict_that_cosine_alone_would_pass(files):
    from converters.tf2 import tflite_run

    _, flat, probe, reference = files
    measured = tflite_run.evaluate(flat, probe, [reference])
    outputs = tflite_run.run(flat, probe)[0][0]
    assert np.ptp(outputs, axis=0).max() == 0.0  # the file really is constant
    assert measured["cosine"] >= tflite_run.MIN_COSINE  # the old bar alone: passed
    assert measured["sqnr_db"] > 25  # raw SQNR flatters it too
    assert measured["status"] == "mismatch"
    assert measured["sqnr_centered_db"] < tflite_run.MIN_CENTERED_SQNR_DB and measured["correlation"] == 0.0
    assert any("centered SQNR" in reason for reason in measured["reasons"])
