"""Full-int8 conversion from each kind of source, each I/O type, per-tensor vs per-channel, float ops.

Runs inside tf2 with real TF 2.21 on a small real CNN (conv, BN, depthwise, pooling, dense, softmax),
calibrated on real photographs (scikit-image). Each test checks the *written file*: tensor dtypes,
scales, ops, and the int8 outputs against the float model.
"""

import os

import numpy as np
import pytest

pytestmark = pytest.mark.tf2

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

SHAPE = (24, 24, 3)
CALIB = 24


class Tf2:
    """The conversion pieces: sources (loading), quantize (converting, checking), reference (float)."""

    def __init__(self, sources, quantize, reference):
        self.sources, self.quantize, self.reference = sources, quantize, reference


@pytest.fixture(scope="module")
def tf_modules():
    import tensorflow as tf
    import tf_keras

    from converters.shared import calibration
    from converters.tf2 import npu, quantize, reference, sources, tflite_run
    return tf, tf_keras, calibration, npu, Tf2(sources, quantize, reference), tflite_run


def build_keras2(tf_keras):
    tf_keras.utils.set_random_seed(0)
    layers = tf_keras.layers
    inputs = layers.Input(SHAPE)
    x = layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    x = layers.BatchNormalization()(x)
    x = layers.DepthwiseConv2D(3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(16, 3, activation="relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(6, activation="softmax")(layers.Dense(16, activation="relu")(x))
    model = tf_keras.Model(inputs, outputs)
    # move BN off its identity init so it matters
    bn = model.layers[2]
    rng = np.random.RandomState(0)
    bn.set_weights([w + rng.uniform(0.1, 0.5, w.shape).astype(np.float32) for w in bn.get_weights()])
    return model


@pytest.fixture(scope="module")
def keras2_model(tf_modules):
    return build_keras2(tf_modules[1])


@pytest.fixture(scope="module")
def probe(tf_modules):
    calibration = tf_modules[2]
    return calibration.load_probe("skimage", (None,) + SHAPE, "unit", n=12, seed=5)


def calib_dataset(tf_modules):
    calibration = tf_modules[2]
    source = calibration.CalibrationSource("skimage", (None,) + SHAPE, "unit", samples=CALIB, seed=0,
                                           progress=False)
    return source.representative_dataset()


def convert(tf_modules, model_or_path, out, **options):
    tf2 = tf_modules[4]
    with tf2.sources.scratch_dir() as workdir:
        source = tf2.sources.load_source(model_or_path, workdir)
        result, used = tf2.quantize.convert(source, out, calib_dataset(tf_modules),
                                            tf2.quantize.ConversionOptions(**options))
        reference = tf2.reference.float_reference(used if used.keras_model is not None else source,
                                                  PROBE_CACHE["probe"])
    return result, source, reference


PROBE_CACHE = {}


@pytest.fixture(autouse=True)
def _probe_cache(probe):
    PROBE_CACHE["probe"] = probe


def check_int8_file(tf_modules, path, reference, io="int8", output_io=None):
    npu, tflite_run = tf_modules[3], tf_modules[5]
    output_io = output_io or io
    interpreter = tflite_run.make_interpreter(path)
    assert interpreter.runtime_name == "ai_edge_litert"
    detail_in = interpreter.get_input_details()[0]
    detail_out = interpreter.get_output_details()[0]
    assert np.dtype(detail_in["dtype"]).name == io
    assert np.dtype(detail_out["dtype"]).name == output_io
    assert list(detail_in["shape"]) == [1] + list(SHAPE), "batch fixed to 1 for the NPU"
    measured = tflite_run.evaluate(path, PROBE_CACHE["probe"], [list(reference.values())[0]])
    assert measured["cosine"] >= 0.99, measured
    assert measured["status"] == "match", measured
    return measured, npu.check(path)


@pytest.mark.parametrize("kind", ["keras", "h5", "saved_model", "keras3"])
def test_each_source_kind_converts_to_full_int8(tf_modules, keras2_model, tmp_path, kind):
    tf, tf_keras = tf_modules[0], tf_modules[1]
    if kind == "keras":
        source = keras2_model
    elif kind == "h5":
        source = str(tmp_path / "m.h5")
        keras2_model.save(source)
    elif kind == "saved_model":
        source = str(tmp_path / "saved")
        tf.saved_model.save(keras2_model, source)
    else:
        import keras  # Keras 3, a model of its own

        keras.utils.set_random_seed(0)
        k3 = keras.Sequential([keras.Input(SHAPE), keras.layers.Conv2D(8, 3, activation="relu"),
                               keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(6, activation="softmax")])
        source = str(tmp_path / "m.keras")
        k3.save(source)
    out = str(tmp_path / "m_int8.tflite")
    result, loaded, reference = convert(tf_modules, source, out)
    expected_route = {"keras": "keras", "h5": "keras_h5", "saved_model": "saved_model", "keras3": "keras3"}[kind]
    assert result["route"] == expected_route and result["attempts"][-1]["status"] == "ok"
    assert result["seconds"] > 0 and os.path.getsize(out) == result["size_bytes"]
    measured, readiness = check_int8_file(tf_modules, out, reference)
    assert readiness["verdict"] == "ready" and readiness["fully_int8"], readiness["problems"]
    assert readiness["ops"].get("CONV_2D")
    assert "QUANTIZE" not in readiness["ops"] and "DEQUANTIZE" not in readiness["ops"]
    assert measured["max_abs_lsb"] is not None and measured["max_abs_lsb"] < 8


@pytest.mark.parametrize("io, output_io, verdict", [
    ("int8", None, "ready"),
    ("uint8", None, "partial"),
    ("float32", None, "partial"),
    ("int8", "float32", "partial"),
])
def test_io_types_are_in_the_written_file(tf_modules, keras2_model, tmp_path, io, output_io, verdict):
    out = str(tmp_path / "io.tflite")
    result, _, reference = convert(tf_modules, keras2_model, out, io=io, output_io=output_io)
    assert result["io"]["inputs"][0]["dtype"] == io
    assert result["io"]["outputs"][0]["dtype"] == (output_io or io)
    measured, readiness = check_int8_file(tf_modules, out, reference, io, output_io)
    assert readiness["verdict"] == verdict, readiness["problems"]
    if (output_io or io) == "float32":
        # LSBs are still stated in the int8 step the DEQUANTIZE reads
        assert measured["outputs"][0]["scale"] and measured["max_abs_lsb"] < 8


def test_per_tensor_versus_per_channel_weights(tf_modules, keras2_model, tmp_path):
    npu = tf_modules[3]
    channel = str(tmp_path / "channel.tflite")
    tensor = str(tmp_path / "tensor.tflite")
    result_c, _, _ = convert(tf_modules, keras2_model, channel)
    result_t, _, reference = convert(tf_modules, keras2_model, tensor, per_tensor=True)
    assert result_c["weights"]["per_channel"] >= 3 and result_c["weights"]["per_tensor"] == 0
    assert result_t["weights"]["per_channel"] == 0 and result_t["weights"]["per_tensor"] >= 3
    # the conv kernel itself: 8 output channels -> 8 scales, or 1
    conv_scales = {}
    for path in (channel, tensor):
        summary = npu.read_model(path)
        kernels = [t for t in summary["tensors"] if t["is_constant"] and t["dtype"] == "int8" and len(t["shape"]) == 4
                   and t["shape"][0] == 8]
        conv_scales[path] = len(kernels[0]["scales"])
    assert conv_scales == {channel: 8, tensor: 1}
    check_int8_file(tf_modules, tensor, reference)


def sin_model(tf, tf_keras):
    tf_keras.utils.set_random_seed(0)
    layers = tf_keras.layers
    inputs = layers.Input((8, 8, 3))
    x = layers.Conv2D(4, 3)(inputs)
    x = layers.Lambda(tf.sin, name="sine")(x)  # SIN has no int8 kernel in TFLite (TF 2.21)
    outputs = layers.Dense(3)(layers.Flatten()(x))
    return tf_keras.Model(inputs, outputs)


def test_op_without_int8_kernel_is_refused_without_allow_float_ops(tf_modules, tmp_path):
    tf, tf_keras, calibration, _, tf2, _ = tf_modules
    from converters.errors import ConversionError

    model = sin_model(tf, tf_keras)
    out = tmp_path / "sin.tflite"
    out.write_bytes(b"previous good model")
    data = calibration.CalibrationSource("skimage", (None, 8, 8, 3), "unit", samples=10, progress=False)
    with tf2.sources.scratch_dir() as workdir:
        source = tf2.sources.load_source(model, workdir)
        with pytest.raises(ConversionError, match="SIN") as caught:
            tf2.quantize.convert(source, str(out), data.representative_dataset(),
                                 tf2.quantize.ConversionOptions())
    assert out.read_bytes() == b"previous good model", "a refused model never replaces the old file"
    assert caught.value.npu["verdict"] == "not_ready" and caught.value.npu["float_ops"] == ["SIN"]
    assert [p.name for p in tmp_path.iterdir()] == ["sin.tflite"], "no partial file left behind"


def test_allow_float_ops_writes_a_not_ready_model_naming_the_op(tf_modules, tmp_path):
    tf, tf_keras, calibration, npu, tf2, _ = tf_modules
    from converters.errors import NotInt8Error

    model = sin_model(tf, tf_keras)
    out = str(tmp_path / "sin.tflite")
    data = calibration.CalibrationSource("skimage", (None, 8, 8, 3), "unit", samples=10, progress=False)
    with tf2.sources.scratch_dir() as workdir:
        source = tf2.sources.load_source(model, workdir)
        result, _ = tf2.quantize.convert(source, out, data.representative_dataset(),
                                         tf2.quantize.ConversionOptions(allow_float_ops=True))
    readiness = result["npu"]
    assert readiness["verdict"] == "not_ready" and not readiness["fully_int8"]
    assert readiness["float_ops"] == ["SIN"]
    assert readiness["ops"]["DEQUANTIZE"] >= 1 and readiness["ops"]["QUANTIZE"] >= 1
    assert any("SIN" in p for p in readiness["problems"])
    with pytest.raises(NotInt8Error, match="not ready"):
        npu.check(out, strict=True)


def test_missing_and_unknown_sources_are_typed_errors(tf_modules, tmp_path):
    tf2 = tf_modules[4]
    from converters.errors import InputFileError, ModelLoadError

    with pytest.raises(InputFileError):
        tf2.sources.load_source(str(tmp_path / "none.h5"), str(tmp_path))
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(ModelLoadError, match="tf_keras could not load"):
        tf2.sources.load_source(str(bad), str(tmp_path))
    (tmp_path / "folder").mkdir()
    with pytest.raises(InputFileError, match="neither a SavedModel"):
        tf2.sources.load_source(str(tmp_path / "folder"), str(tmp_path))


def test_lambda_in_h5_is_refused_unless_trusted(tf_modules, tmp_path):
    tf, tf_keras, calibration, npu, tf2, _ = tf_modules
    from converters import safety
    from converters.errors import UntrustedModelError

    tf_keras.utils.set_random_seed(0)
    layers = tf_keras.layers
    inputs = layers.Input((8, 8, 3))
    x = layers.Lambda(lambda t: t * 2.0 - 1.0, name="rescale")(inputs)  # stored as Python bytecode
    outputs = layers.Dense(3)(layers.Flatten()(layers.Conv2D(4, 3)(x)))
    path = str(tmp_path / "lambda.h5")
    tf_keras.Model(inputs, outputs).save(path)
    config = tf2.sources.h5_model_config(path)
    assert safety.lambda_paths(safety.check_config(config, where=path, trust_model=True)) == ["rescale"]
    with pytest.raises(UntrustedModelError, match="rescale"):
        tf2.sources.load_source(path, str(tmp_path))
    source = tf2.sources.load_source(path, str(tmp_path), trust_model=True)
    data = calibration.CalibrationSource("skimage", (None, 8, 8, 3), "unit", samples=10, progress=False)
    result, _ = tf2.quantize.convert(source, str(tmp_path / "l.tflite"), data.representative_dataset(),
                                     tf2.quantize.ConversionOptions())
    assert result["npu"]["verdict"] == "ready"
