"""The fast calibration route (converters.tf2.calibrate.observe_fast): the interpreter records what TFLite's
calibrator records, so the int8 file is TensorFlow's own, byte for byte.

Runs inside tf2 with real TF 2.21. The model has what made the route subtle on ResNet50: residual ADDs
(and a MUL) that TFLite runs in place, over an input that the calibrator logs a second time after the
kernel ran, so that input's recorded range also covers the op's output. The reference is TensorFlow's own
converter, untouched (one process, its own ``Calibrator``). Samples differ in scale so that every sample
matters to the statistics (a route that dropped samples would change the file).
"""

import os

import numpy as np
import pytest

pytestmark = pytest.mark.tf2

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

SHAPE = (16, 16, 3)
SAMPLES = 24


@pytest.fixture(scope="module")
def tf_bits():
    import tensorflow as tf
    import tf_keras

    from converters.tf2 import calibrate
    return tf, tf_keras, calibrate


@pytest.fixture(scope="module")
def model(tf_bits):
    tf_keras = tf_bits[1]
    tf_keras.utils.set_random_seed(0)
    layers = tf_keras.layers
    inputs = layers.Input(SHAPE)
    x = layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    y = layers.Conv2D(8, 3, padding="same")(x)
    y = layers.BatchNormalization()(y)
    x = layers.Activation("relu")(layers.Add()([x, y]))  # residual ADD (+ fused RELU), run in place
    gate = layers.Conv2D(8, 1, activation="sigmoid")(x)
    x = layers.Multiply()([x, gate])  # MUL, in place too
    x = layers.DepthwiseConv2D(3, padding="same")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(5)(x)
    built = tf_keras.Model(inputs, outputs)
    bn = [layer for layer in built.layers if "batch_normalization" in layer.name][0]
    rng = np.random.RandomState(1)
    bn.set_weights([w + rng.uniform(0.1, 0.5, w.shape).astype(np.float32) for w in bn.get_weights()])
    return built


@pytest.fixture(scope="module")
def samples():
    rng = np.random.RandomState(0)
    data = rng.uniform(-1, 1, (SAMPLES, 1) + SHAPE).astype(np.float32)
    data *= np.linspace(0.5, 3.0, SAMPLES).astype(np.float32)[:, None, None, None, None]
    data[SAMPLES // 2] = -4.0 * np.abs(data[SAMPLES // 2])  # an outlier in the middle
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


def _hooked(tf_bits, model, samples, jobs=2, route="auto", keep=0):
    tf, _, calibrate = tf_bits
    converter = _converter(tf, model, samples)
    hook = calibrate.install(converter, jobs=jobs, route=route, keep_samples=keep)
    return converter.convert(), hook


@pytest.mark.parametrize("jobs", [1, 2])
def test_fast_route_gives_tensorflows_int8_file(tf_bits, model, samples, sequential, jobs):
    content, hook = _hooked(tf_bits, model, samples, jobs=jobs)
    info = hook.info
    assert info["route"] == "interpreter", info.get("route_reason")
    assert info["fast"]["threads"] == max(2, jobs)  # the calibrator's multi-threaded kernels, even for one job
    assert info["fast"]["in_place_inputs"] >= 2, info  # the ADD and the MUL
    assert info["samples"] == SAMPLES
    assert content == sequential, "the fast route's int8 model differs from TensorFlow's"


def test_fast_route_statistics_equal_the_calibrators_for_every_tensor(tf_bits, model, samples):
    """Value for value, tensor for tensor, on the calibrated model itself (not only the int8 file)."""
    _, _, calibrate = tf_bits
    _, fast = _hooked(tf_bits, model, samples)
    _, slow = _hooked(tf_bits, model, samples, route="calibrator")
    assert slow.info["route"] == "calibrator" and slow.info["route_reason"] == "asked for"
    expected = calibrate.tensor_ranges(slow.calibrated_model)
    observed = calibrate.tensor_ranges(fast.calibrated_model)
    assert len(expected) >= 8
    assert calibrate.differences(expected, observed) == []


def test_in_place_inputs_are_what_makes_it_exact(tf_bits, model, samples, sequential, monkeypatch):
    """Without the in-place correction the interpreter records other ranges on the first sample: the route
    sees it, says so and falls back to the calibrator, and the file is still TensorFlow's."""
    _, _, calibrate = tf_bits
    from converters.tf2 import calibration_observer

    original = calibration_observer.in_place_inputs
    monkeypatch.setattr(calibration_observer, "in_place_inputs", lambda *a: ([], original(*a)[1]))
    content, hook = _hooked(tf_bits, model, samples)
    assert hook.info["route"] == "calibrator", hook.info
    assert "differently from the calibrator" in hook.info["route_reason"], hook.info
    assert content == sequential


def test_model_with_intermediates_keeps_the_calibrator(tf_bits):
    """An LSTM: the calibrator's LSTM logging kernel records tensors no interpreter holds."""
    tf, tf_keras, calibrate = tf_bits
    layers = tf_keras.layers
    inputs = layers.Input((5, 3), batch_size=1)
    outputs = layers.Dense(2)(layers.LSTM(4)(inputs))
    lstm = tf_keras.Model(inputs, outputs)
    data = np.random.RandomState(0).uniform(-1, 1, (6, 1, 5, 3)).astype(np.float32)
    converter = _converter(tf, lstm, data)
    hook = calibrate.install(converter, jobs=2)
    content = converter.convert()
    assert hook.info["route"] == "calibrator", hook.info
    assert "intermediate" in hook.info["route_reason"] or "subgraphs" in hook.info["route_reason"], hook.info
    # TensorFlow's own conversion of an LSTM is not byte-stable from one convert() to the next (names of
    # the traced functions), so the outputs are compared: the same int8 outputs as TensorFlow's file
    reference = _converter(tf, lstm, data).convert()
    results = []
    for flatbuffer in (content, reference):
        interpreter = tf.lite.Interpreter(model_content=flatbuffer)
        interpreter.allocate_tensors()
        detail = interpreter.get_input_details()[0]
        scale, zero = detail["quantization"]
        outputs = []
        for sample in data:
            interpreter.set_tensor(detail["index"], np.clip(np.round(sample / scale + zero), -128, 127).astype(np.int8))
            interpreter.invoke()
            outputs.append(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).copy())
        results.append(np.stack(outputs))
    np.testing.assert_array_equal(results[0], results[1])


def test_hook_keeps_the_first_samples_for_the_layer_debugger(tf_bits, model, samples):
    _, hook = _hooked(tf_bits, model, samples, keep=3)
    assert len(hook.samples) == 3
    for kept, sample in zip(hook.samples, samples[:3]):
        np.testing.assert_array_equal(kept[0], sample)


def test_one_pass_gives_each_folds_own_calibration_statistics_and_outputs(tf_bits, model, samples):
    """Issue 31: the search's folds calibrated in the fast route's one pass (``fold_of``) are, byte for byte,
    the calibrated models of each fold calibrated alone; each fold's per-channel statistics (value samples
    included) are those of a pass over that fold alone; the float outputs kept are the model's on every
    sample (the interpreter's builtin kernels, as the statistics pass)."""
    tf, _, calibrate = tf_bits
    from tensorflow.lite.python.optimize import calibrator

    from converters.tf2.recovery import statistics
    from converters.tf2.recovery.graph import Graph

    float_model = _converter(tf, model, samples)
    float_model.optimizations = []
    float_model.representative_dataset = None
    float_model.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    float_model.inference_input_type = float_model.inference_output_type = tf.float32
    content = calibrator.add_intermediate_tensors(float_model.convert())
    folds = 3
    fold_of = [i % folds for i in range(SAMPLES)]
    names = Graph(bytearray(content)).tensor_names
    wanted = dict((name, {"mean", "range", "values"}) for name in names)
    collectors = statistics.FoldCollectors(names, wanted, fold_of)
    observed = {}
    whole, info = calibrate.calibrate_samples(content, lambda: iter([s] for s in samples), jobs=2,
                                              collector=collectors, fold_of=fold_of, observed=observed)
    assert info["route"] == "interpreter", info.get("route_reason")
    assert len(observed["folds"]) == folds
    for k in range(folds):
        part = [samples[i] for i in range(SAMPLES) if fold_of[i] == k]
        own = statistics.Collector(names, len(part), wanted)
        alone, alone_info = calibrate.calibrate_samples(content, lambda: iter([s] for s in part), jobs=2,
                                                        collector=own)
        assert alone_info["route"] == "interpreter"
        assert observed["folds"][k] == alone, "fold %d's one-pass calibration differs from its own" % k
        assert calibrate.differences(calibrate.tensor_ranges(alone), calibrate.tensor_ranges(whole)) != [], \
            "a fold's ranges equal every sample's: the check would not see a fold mix-up"
        separate = own.stats
        ours = collectors.parts[k].stats
        assert collectors.parts[k].complete() and own.complete() and len(ours) >= 5 and set(ours) == set(separate)
        for name, stats in ours.items():
            np.testing.assert_array_equal(stats.mean, separate[name].mean)
            np.testing.assert_array_equal(stats.max, separate[name].max)
            np.testing.assert_array_equal(stats.samples(), separate[name].samples())
    outputs, _ = statistics.run(content, [[s] for s in samples], tensors=[0])
    np.testing.assert_allclose(observed["outputs"][0], outputs[0], rtol=1e-5, atol=1e-6)
    assert observed["outputs"][0].shape == (SAMPLES, 5)


def test_search_on_a_model_the_fast_route_cannot_see_calibrates_fold_by_fold(tf_bits):
    """auto on an LSTM: the one pass falls back to TensorFlow's calibrator, so the search calibrates every
    sample once and each fold on its own (and says so), and still chooses a file."""
    tf, tf_keras, calibrate = tf_bits
    layers = tf_keras.layers
    inputs = layers.Input((5, 3), batch_size=1)
    lstm = tf_keras.Model(inputs, layers.Dense(2)(layers.LSTM(4)(inputs)))
    data = np.random.RandomState(0).uniform(-1, 1, (30, 1, 5, 3)).astype(np.float32)
    converter = _converter(tf, lstm, data)
    hook = calibrate.install(converter, jobs=2, recovery=("plain", "bias", "cle", "cle+bias"))
    content = converter.convert()
    section = hook.quantization
    assert hook.info["route"] == "calibrator", hook.info
    assert section["calibration_passes"].startswith("4: every sample, then one per fold"), section
    assert section["validation"]["folds"] == 3 and section["chosen"] in [c["name"] for c in section["candidates"]]
    assert len(content) > 1000
