"""Method 1 (``tfbridge.inprocess.to_int8``) in this test's own TF 2.21 process, against ``tfbridge convert``.

A small CNN is trained here (tf_keras, and a Keras 3 one); ``to_int8`` writes its int8 file from the live
model, and ``python -m tfbridge convert`` (the installed command's entry point, run as a subprocess with
the same calibration samples as an .npy) writes one from the saved model: the two files must be the same
byte for byte (the same conversion path: ``converters.tf2.quantize.convert``). Also: a user's own module
named ``envs`` is still theirs afterwards, and bad data is a ``CalibrationDataError`` before any
conversion; docs/api.md's method-1 example runs as written. Each ``tfbridge convert`` runs the tf2
environment once (~10 s).
"""

import os
import subprocess
import sys
import types

import numpy as np
import pytest

pytestmark = pytest.mark.tf2

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHAPE = (12, 12, 3)
CALIB = 32


def data(seed, count):
    """Images with structure (a bright square on noise) and the square's quadrant as the label."""
    rng = np.random.RandomState(seed)
    x = rng.uniform(0.0, 0.3, (count,) + SHAPE).astype(np.float32)
    y = rng.randint(0, 4, count)
    for image, label in zip(x, y):
        row, col = divmod(int(label), 2)
        image[row * 6:row * 6 + 5, col * 6:col * 6 + 5, :] += 0.7
    return x, y


def train(layers, model_class, keras_module):
    keras_module.utils.set_random_seed(0)
    inputs = layers.Input(SHAPE)
    x = layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(8, 3, activation="relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(4, activation="softmax")(x)
    model = model_class(inputs, outputs)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x, y = data(1, 256)
    model.fit(x, y, epochs=3, batch_size=32, verbose=0)
    return model


def tfbridge_convert(model_path, calib, probe, out):
    """``tfbridge convert`` as its console script runs it (``python -m tfbridge``), from this clone."""
    environ = dict(os.environ, PYTHONPATH=REPO_ROOT)
    # --quantize plain: TFLite's min/max, the same whatever the order of the samples (the command takes a
    # seeded permutation of its --calib source; auto's search scores on the last samples of that order)
    command = [sys.executable, "-m", "tfbridge", "convert", str(model_path), "--calib", str(calib), "--probe",
               str(probe), "--calib-samples", str(CALIB), "--probe-samples", "16", "--no-layer-debug",
               "--quantize", "plain", "--out", str(out)]
    result = subprocess.run(command, env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            universal_newlines=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:]
    return out / "model_int8.tflite"


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    calib, _ = data(2, CALIB)
    probe, _ = data(3, 16)
    np.save(folder / "calib.npy", calib)
    np.save(folder / "probe.npy", probe)
    return calib, probe, folder / "calib.npy", folder / "probe.npy"


def test_to_int8_of_a_live_tf_keras_model_equals_tfbridge_convert_of_its_h5(samples, tmp_path):
    import tf_keras

    from tfbridge.inprocess import to_int8

    calib, probe, calib_path, probe_path = samples
    model = train(tf_keras.layers, tf_keras.Model, tf_keras)
    legacy_keras = os.environ.get("TF_USE_LEGACY_KERAS")  # the tree's modules set it for their own processes
    theirs = types.ModuleType("envs")  # a user's own module named like one of tfbridge's
    mine = sys.modules.get("envs")
    sys.modules["envs"] = theirs
    try:
        report = to_int8(model, calib, tmp_path / "live_int8.tflite", probe=probe, quantize="plain")
        assert sys.modules["envs"] is theirs, "to_int8 took the user's module named envs"
        assert os.environ.get("TF_USE_LEGACY_KERAS") == legacy_keras, "to_int8 changed the user's environment"
    finally:
        if mine is not None:
            sys.modules["envs"] = mine
    assert report.verdict == "pass" and report.int8.status == "match", report.raw["tflite"]
    assert report.int8.input_dtype == report.int8.output_dtype == "int8"
    assert report.int8.cosine >= 0.99 and report.npu.fully_int8 and report.npu.targets[0].target == "imx8mp"
    assert (tmp_path / "live_int8.report.json").exists()

    model.save(str(tmp_path / "trained.h5"))
    converted = tfbridge_convert(tmp_path / "trained.h5", calib_path, probe_path, tmp_path / "run")
    assert (tmp_path / "live_int8.tflite").read_bytes() == converted.read_bytes(), \
        "method 1 and tfbridge convert wrote different int8 files from the same model and samples"


def test_to_int8_of_a_live_keras3_model_equals_tfbridge_convert_of_its_keras_file(samples, tmp_path):
    import keras

    from tfbridge.inprocess import to_int8

    calib, probe, calib_path, probe_path = samples
    model = train(keras.layers, keras.Model, keras)
    # a tf.data.Dataset of batches, as a training script has it
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices(calib).batch(8)
    report = to_int8(model, dataset, tmp_path / "live_int8.tflite", per_tensor=True,
                     npu_targets=["imx8mp", "ethos-u55-128"])  # the commands' default --quantize: auto
    assert report.int8.status == "not_measured" and report.raw["tflite"]["route"] == "keras3"
    quantization = report.raw["tflite"]["quantization"]
    assert quantization["chosen"] and (tmp_path / "live_int8_plain.tflite").exists()
    assert sorted(os.listdir(tmp_path)) == ["live_int8.report.json", "live_int8.tflite", "live_int8_plain.tflite"]
    assert report.raw["tflite"]["weights"]["per_channel"] == 0, "per_tensor=True left per-channel weights"
    assert [t.target for t in report.npu.targets] == ["imx8mp", "ethos-u55-128"]
    model.save(str(tmp_path / "trained.keras"))
    converted = tfbridge_convert(tmp_path / "trained.keras", calib_path, probe_path, tmp_path / "run")
    # tfbridge convert was per-channel: the per-tensor file must differ, the per-channel one must not
    assert (tmp_path / "live_int8.tflite").read_bytes() != converted.read_bytes()
    to_int8(model, dataset, tmp_path / "live_pc.tflite", quantize="plain")
    assert (tmp_path / "live_pc.tflite").read_bytes() == converted.read_bytes()


def test_bad_data_or_target_is_refused_before_any_file_is_written(tmp_path):
    import tf_keras

    from tfbridge import errors
    from tfbridge.inprocess import to_int8

    model = tf_keras.Sequential([tf_keras.layers.Input(SHAPE), tf_keras.layers.Flatten(),
                                 tf_keras.layers.Dense(2)])
    with pytest.raises(errors.CalibrationDataError, match="does not fit input"):
        to_int8(model, np.zeros((4, 10, 10, 3), np.float32), tmp_path / "m.tflite")
    with pytest.raises(errors.CalibrationDataError, match="no sample"):
        to_int8(model, (x for x in []), tmp_path / "m.tflite")
    good = np.zeros((4,) + SHAPE, np.float32)
    with pytest.raises(errors.CalibrationDataError, match="probe: a sample of shape"):
        to_int8(model, good, tmp_path / "m.tflite", probe=np.zeros((4, 3), np.float32))
    with pytest.raises(errors.UsageError, match="unknown NPU target"):
        to_int8(model, good, tmp_path / "m.tflite", npu_targets=["imx9000"])
    assert not os.listdir(tmp_path)


def test_the_docs_method_1_example_runs_as_written(tmp_path):
    from tests.integration._doc_examples import example

    code = example("inprocess")
    environ = dict(os.environ, PYTHONPATH=REPO_ROOT)
    result = subprocess.run([sys.executable, "-c", code], cwd=str(tmp_path), env=environ, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, universal_newlines=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    verdict, cosine, sqnr, npu = result.stdout.strip().splitlines()[-1].split()
    assert verdict == "pass" and float(cosine) >= 0.99 and npu == "ready", result.stdout
    assert (tmp_path / "model_int8.tflite").exists() and (tmp_path / "model_int8.report.json").exists()
