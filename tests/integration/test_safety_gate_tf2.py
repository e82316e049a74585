"""The Lambda gate for TF 2.x model files: a Lambda's code never runs without --trust-model.

Runs inside tf2. Each trap is a real model saved by real tf_keras (``.h5``) or Keras 3 (``.keras``) with a
Lambda whose function creates a marker file when it runs; the marker is removed after saving (building the
model ran it once). ``python -m converters.convert`` (the host command, run with the host interpreter as
a user would) must refuse the file without ``--trust-model`` (exit >= 2, the Lambda named, no marker) and
convert it with ``--trust-model`` (the marker proves the trap is live, so the refusal is not vacuous).
The marker lies in the trusted run's ``--out`` folder: trusted code still runs in the step's file-system
box (docs/safety.md, "File-system box and network sandbox"), which lets it write in its run folder only.
"""

import os
import subprocess

import numpy as np
import pytest

pytestmark = pytest.mark.tf2

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHAPE = (8, 8, 3)


def trap_function(marker):
    """A Python lambda that touches ``marker`` (the path is a constant of its code object)."""
    return eval("lambda t: (__import__('pathlib').Path(%r).touch(), t)[1]" % str(marker))


def save_tf_keras_trap(folder, nested=False, marker_dir=None):
    import tf_keras

    marker = (marker_dir or folder) / "marker_h5"
    layers = tf_keras.layers
    tf_keras.utils.set_random_seed(0)
    inputs = layers.Input(SHAPE)
    x = layers.Conv2D(4, 3, activation="relu")(inputs)
    if nested:  # the Lambda inside a TimeDistributed wrapper over the rows
        x = layers.TimeDistributed(layers.Lambda(trap_function(marker), name="touch"), name="rows")(x)
    else:
        x = layers.Lambda(trap_function(marker), name="touch")(x)
    outputs = layers.Dense(3, activation="softmax")(layers.Flatten()(x))
    path = folder / ("nested.h5" if nested else "trap.h5")
    tf_keras.Model(inputs, outputs).save(str(path))
    assert marker.exists(), "building the model runs the Lambda: the trap is live"
    marker.unlink()
    return str(path), marker


def save_keras3_trap(folder, marker_dir=None):
    import keras  # Keras 3 (TF_USE_LEGACY_KERAS only changes tf.keras)

    marker = (marker_dir or folder) / "marker_keras3"
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input(SHAPE), keras.layers.Conv2D(4, 3, activation="relu"),
                              keras.layers.Lambda(trap_function(marker), name="touch"),
                              keras.layers.Flatten(), keras.layers.Dense(3, activation="softmax")])
    path = folder / "trap.keras"
    model.save(str(path))
    assert marker.exists(), "building the model runs the Lambda: the trap is live"
    marker.unlink()
    return str(path), marker


def host_convert(model, out, calib, *extra):
    """``python -m converters.convert`` with the host interpreter and a host process environment."""
    from envs import venvs

    environ = {k: v for k, v in os.environ.items()
               if k not in ("TFBRIDGE_ENV", "VIRTUAL_ENV", "TF_USE_LEGACY_KERAS", "PYTHONHOME")}
    environ["PYTHONPATH"] = REPO_ROOT
    python = venvs.python_of("host")
    argv = [python, "-m", "converters.convert", model, "--calib", calib, "--out", out,
            "--calib-samples", "8", "--probe-samples", "4", "--no-layer-debug"] + list(extra)
    return subprocess.run(argv, cwd=REPO_ROOT, env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, timeout=600)


@pytest.fixture(scope="module")
def calib(tmp_path_factory):
    path = tmp_path_factory.mktemp("calib") / "calib.npy"
    # 12 samples: the probe (4) and calibration (8) never share one (converters.shared.calibration.split)
    np.save(str(path), np.random.RandomState(0).uniform(0, 1, (12,) + SHAPE).astype(np.float32))
    return str(path)


@pytest.mark.parametrize("kind", ["h5", "keras3"])
def test_convert_refuses_a_lambda_without_trust_model_and_converts_with_it(kind, tmp_path, calib):
    trusted_out = tmp_path / "trusted"  # the box lets trusted code write in its run folder only
    trusted_out.mkdir()
    path, marker = save_tf_keras_trap(tmp_path, marker_dir=trusted_out) if kind == "h5" else \
        save_keras3_trap(tmp_path, marker_dir=trusted_out)

    refused = host_convert(path, str(tmp_path / "refused"), calib)
    assert refused.returncode == 7, refused.stdout[-2000:]  # UntrustedModelError
    assert "touch" in refused.stdout and "Lambda" in refused.stdout, refused.stdout[-2000:]
    assert "--trust-model" in refused.stdout
    assert not marker.exists(), "the Lambda's code ran without --trust-model"
    assert not os.path.exists(os.path.join(str(tmp_path / "refused"), "model_int8.tflite"))

    trusted = host_convert(path, str(tmp_path / "trusted"), calib, "--trust-model")
    assert trusted.returncode == 0, trusted.stdout[-3000:]
    assert marker.exists(), "with --trust-model the model is loaded (its Lambda ran)"
    assert os.path.getsize(str(tmp_path / "trusted" / "model_int8.tflite")) > 0


def test_lambda_nested_in_a_wrapper_is_refused_by_the_loader(tmp_path):
    from converters.errors import UntrustedModelError
    from converters.tf2 import sources

    path, marker = save_tf_keras_trap(tmp_path, nested=True)
    with pytest.raises(UntrustedModelError, match="rows > touch"):
        sources.load_source(path, str(tmp_path))
    assert not marker.exists(), "the nested Lambda's code ran without trust_model"
    source = sources.load_source(path, str(tmp_path), trust_model=True)
    assert source.kind == "keras_h5" and marker.exists()


def test_keras3_config_is_read_from_the_zip_before_keras_loads(tmp_path):
    """The gate reads config.json itself: it names the Lambda (Keras's own safe_mode error would not)."""
    from converters import safety
    from converters.errors import UntrustedModelError
    from converters.tf2 import sources

    path, marker = save_keras3_trap(tmp_path)
    config = sources.keras3_config(path)
    assert safety.lambda_paths(safety.check_config(config, where=path, trust_model=True)) == ["touch"]
    with pytest.raises(UntrustedModelError, match="touch"):
        sources.load_source(path, str(tmp_path))
    assert not marker.exists()
