"""Calibration on every core (converters.tf2.calibrate): shards merge exactly, the int8 file is the same.

Runs inside tf2 with real TF 2.21 on a small CNN built here (conv, BN, depthwise, pooling, dense). The
reference is TensorFlow's own converter, untouched (one process, its own ``Calibrator``); the sharded
conversions run the same converter with ``converters.tf2.calibrate`` in its quantization stage and real
worker processes. The samples are built so that every shard sees different activation ranges (sample i
is scaled by a factor that grows with i, and one in the middle is a large negative outlier): a merge that dropped or mixed up a
shard's statistics would change the file, and ``test_shards_see_different_ranges`` checks that premise.
"""

import os

import numpy as np
import pytest

pytestmark = pytest.mark.tf2

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

SHAPE = (20, 20, 3)
SAMPLES = 40


@pytest.fixture(scope="module")
def tf_bits():
    import tensorflow as tf
    import tf_keras

    from converters.tf2 import calibrate, quant_debug, quantize
    return tf, tf_keras, calibrate, quantize, quant_debug


@pytest.fixture(scope="module")
def model(tf_bits):
    tf_keras = tf_bits[1]
    tf_keras.utils.set_random_seed(0)
    layers = tf_keras.layers
    inputs = layers.Input(SHAPE)
    x = layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    x = layers.BatchNormalization()(x)
    x = layers.DepthwiseConv2D(3, padding="same")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(12, 3, activation="relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(5)(x)
    built = tf_keras.Model(inputs, outputs)
    bn = built.layers[2]
    rng = np.random.RandomState(1)
    bn.set_weights([w + rng.uniform(0.1, 0.5, w.shape).astype(np.float32) for w in bn.get_weights()])
    return built


@pytest.fixture(scope="module")
def samples():
    rng = np.random.RandomState(0)
    data = rng.uniform(-1, 1, (SAMPLES, 1) + SHAPE).astype(np.float32)
    scale = np.linspace(0.5, 3.0, SAMPLES).astype(np.float32)  # later shards see wider ranges
    data *= scale[:, None, None, None, None]
    data[20] = -4.0 * np.abs(data[20])  # a negative outlier in a worker's shard: minimums must merge too
    return data


def _converter(tf, model, samples):
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([s] for s in samples)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    return converter


@pytest.fixture(scope="module")
def sequential(tf_bits, model, samples):
    """TensorFlow's own conversion, one process, no hook."""
    return _converter(tf_bits[0], model, samples).convert()


def _sharded(tf_bits, model, samples, jobs, monkeypatch):
    tf, _, calibrate, _, _ = tf_bits
    # the model is tiny: without this the planner rightly decides that a process start does not pay
    monkeypatch.setattr(calibrate, "WORKER_START_SECONDS", 0.0)
    converter = _converter(tf, model, samples)
    # the calibrator's own route, in shards (the fast route has its own test: test_fast_calibration_tf2.py)
    hook = calibrate.install(converter, jobs=jobs, route="calibrator")
    assert hook is not None, "TF 2.21's converter has a _quantize stage to replace"
    return converter.convert(), hook


@pytest.mark.parametrize("jobs", [1, 2, 3])
def test_sharded_int8_model_is_byte_identical(tf_bits, model, samples, sequential, jobs, monkeypatch):
    content, hook = _sharded(tf_bits, model, samples, jobs, monkeypatch)
    assert hook.info["shards"] == jobs, hook.info
    assert hook.info["samples"] == SAMPLES
    assert not hook.info.get("fallback"), hook.info
    if jobs > 1:
        assert len(hook.info["worker_seconds"]) == jobs - 1  # real worker processes ran
    assert content == sequential, "the %d-shard int8 model differs from TensorFlow's sequential one" % jobs


def test_shards_see_different_ranges(tf_bits, model, samples, monkeypatch):
    """The premise of the byte-identity test: each shard alone calibrates differently, so only a
    correct merge of all shards reproduces the sequential statistics."""
    tf, _, calibrate, _, _ = tf_bits
    from tensorflow.lite.python.optimize import calibrator

    converter = _converter(tf, model, samples)
    hook = calibrate.install(converter, jobs=1, route="calibrator")
    converter.convert()
    model_content = calibrator.add_intermediate_tensors(hook.float_model)
    full = calibrate.tensor_ranges(hook.calibrated_model)
    wrapper = calibrate.calibration_wrapper()
    thirds = np.array_split(np.arange(SAMPLES), 3)
    partial = []
    for part in thirds:
        one = wrapper.CalibrationWrapper(model_content, [], [])
        one.Prepare([list(samples[0].shape)])
        for i in part:
            one.FeedTensor([samples[i]])
        partial.append(calibrate.tensor_ranges(bytes(one.Calibrate())))
    for ranges in partial:
        assert set(ranges) == set(full)
        assert any(not np.array_equal(ranges[k][0], full[k][0]) or not np.array_equal(ranges[k][1], full[k][1])
                   for k in full), "one shard alone gives the full statistics: the test would not catch a bad merge"
    # and the merge of the three is exactly the sequential calibration, value for value
    first = wrapper.CalibrationWrapper(model_content, [], [])
    first.Prepare([list(samples[0].shape)])
    for i in thirds[0]:
        first.FeedTensor([samples[i]])
    calibrated = calibrate.merge_ranges(bytes(first.Calibrate()), partial[1:])
    assert calibrated == hook.calibrated_model


def test_plan_shards():
    from converters.tf2 import calibrate

    assert calibrate.plan_shards(99, 0.4, 1, 10 << 20, 99 << 20)[0] == 1  # one job
    assert calibrate.plan_shards(3, 0.4, 4, 10 << 20, 3 << 20)[0] == 1  # too few samples
    assert calibrate.plan_shards(99, 0.001, 4, 10 << 20, 99 << 20)[0] == 1  # tiny model: not worth a process
    assert calibrate.plan_shards(99, 0.4, 2, 10 << 20, 99 << 20, memory=8 << 30)[0] == 2
    assert calibrate.plan_shards(99, 0.4, 8, 10 << 20, 99 << 20, memory=8 << 30)[0] == 8
    # 100 MB model: a worker is ~0.7 GB; with 2 GB available only one fits in half of it
    shards, reason = calibrate.plan_shards(99, 0.4, 8, 100 << 20, 99 << 20, memory=2 << 30)
    assert shards == 2, reason
    assert calibrate.plan_shards(99, 0.4, 8, 100 << 20, 99 << 20, memory=1 << 30)[0] == 1


def test_failed_worker_falls_back_to_this_process(tf_bits, model, samples, sequential, monkeypatch):
    """A worker that dies (here: a worker command that exits 1) costs time, never correctness."""
    _, _, calibrate, _, _ = tf_bits
    import sys

    monkeypatch.setattr(calibrate, "_worker_command",
                        lambda *args: [sys.executable, "-c", "import sys; sys.exit(1)"])
    content, hook = _sharded(tf_bits, model, samples, 2, monkeypatch)
    assert hook.info["fallback"], hook.info
    assert content == sequential


def test_step_reuses_float_model_and_calibration(tf_bits, model, samples, tmp_path, monkeypatch):
    """quantize.convert writes the float model of the int8 conversion (no second graph conversion), with
    the outputs of a separate float conversion, and hands the calibrated model to the layer debugger."""
    tf, _, calibrate, quantize, quant_debug = tf_bits
    from converters.tf2 import sources

    monkeypatch.setattr(calibrate, "WORKER_START_SECONDS", 0.0)
    source = sources.from_keras_model(model)
    artifacts = {"keep_samples": 4}
    result, _ = quantize.convert(source, str(tmp_path / "m.tflite"), lambda: ([s] for s in samples),
                                 quantize.ConversionOptions(jobs=2), float_output_path=str(tmp_path / "f.tflite"),
                                 artifacts=artifacts)
    assert result["float_reused"] and result["calibration_run"]["route"] in ("interpreter", "calibrator")
    separate = source.build().convert()
    outputs = []
    for content in (open(tmp_path / "f.tflite", "rb").read(), separate):
        interpreter = tf.lite.Interpreter(model_content=content)
        interpreter.allocate_tensors()
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], samples[3])
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]))
    np.testing.assert_array_equal(outputs[0], outputs[1])
    # the debugger's samples are the first calibration samples, kept as they passed (not read again)
    kept = artifacts["calibration_samples"]
    assert len(kept) == 4
    for sample, expected in zip(kept, samples[:4]):
        np.testing.assert_array_equal(sample[0], expected)
    layers = quant_debug.debug_layers(None, lambda: (list(sample) for sample in kept),
                                      calibrated_model=artifacts["calibrated_model"])
    assert layers.get("reused_calibration") and layers["layers"], layers
