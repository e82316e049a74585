"""converters.shared.parity inside tf2: match, mismatch and load_error cells, and the divergence search (real TF)."""

import os

import numpy as np
import pytest

from converters.shared import parity
from converters import runfolder

pytestmark = pytest.mark.tf2


@pytest.fixture(autouse=True)
def restore_keras_switch(monkeypatch):
    # parity_cell sets TF_USE_LEGACY_KERAS for its own process (python -m converters.shared.parity); in a shared
    # pytest process, undo it so that other tf2 tests see the environment they started with
    monkeypatch.setenv("TF_USE_LEGACY_KERAS", os.environ.get("TF_USE_LEGACY_KERAS", ""))
    if not os.environ["TF_USE_LEGACY_KERAS"]:
        monkeypatch.delenv("TF_USE_LEGACY_KERAS")


def numpy_forward(weights, x):
    """The fixture's model computed with numpy alone (conv 3x3 same + relu, conv 3x3 same, global average
    pooling, dense): the reference, made elsewhere than in the Keras the parity cell runs."""
    def conv_same(x, kernel, bias):
        padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        out = np.zeros(x.shape[:3] + (kernel.shape[3],), np.float64)
        for dy in range(3):
            for dx in range(3):
                out += np.einsum("nhwc,co->nhwo", padded[:, dy:dy + x.shape[1], dx:dx + x.shape[2], :], kernel[dy, dx])
        return out + bias

    k1, b1, k2, b2, w, b = [np.asarray(v, np.float64) for v in weights]
    hidden = np.maximum(conv_same(np.asarray(x, np.float64), k1, b1), 0.0)
    pooled = conv_same(hidden, k2, b2).mean(axis=(1, 2))
    return (pooled @ w + b).astype(np.float32)


@pytest.fixture
def run_folder(tmp_path):
    """A run folder as legacy_tf1 resave would write it: the model saved with tf_keras (Keras 2), and as the
    origin's reference the outputs of the same weights computed with numpy (``numpy_forward``), not by the
    Keras under test, so that a cell comparing tf2 with the reference can fail."""
    import tf_keras as keras

    inputs = keras.layers.Input(shape=(8, 8, 3), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(3, name="scores")(x)
    model = keras.models.Model(inputs, outputs)
    run = str(tmp_path / "run")
    os.makedirs(run)
    model.save(os.path.join(run, "model.h5"), include_optimizer=False)
    probe = np.random.RandomState(0).uniform(0, 1, (4, 8, 8, 3)).astype(np.float32)
    runfolder.write_arrays(os.path.join(run, "probe.npz"), {"image": probe})
    runfolder.write_arrays(os.path.join(run, "reference_tf1.13.npz"), {"scores": numpy_forward(model.get_weights(), probe)})
    runfolder.write_json(os.path.join(run, "manifest.json"), {
        "schema_version": 1,
        "model": {"inputs": [{"name": "image", "shape": [None, 8, 8, 3], "dtype": "float32"}],
                  "outputs": [{"name": "scores", "shape": [None, 3], "dtype": "float32"}],
                  "keras_flavour": "keras", "custom_objects": None, "lambda_layers": []},
        "origin": {"env": "tf1.13", "python": "3.7.16"},
        "layers": ["conv1", "conv2", "gap", "scores"]})
    return run


def test_matching_cell(run_folder):
    cell = parity.parity_cell(run_folder, "tf2", "auto")
    assert cell["status"] == "match" and cell["keras"] == "tf_keras"
    assert cell["max_abs"] is not None and cell["max_abs"] < 1e-5
    on_disk = runfolder.read_json(os.path.join(run_folder, "parity_tf2.json"))
    assert on_disk["status"] == "match" and on_disk["runtime"].startswith("tensorflow 2.")
    # tf2's own outputs, compared with the numpy reference (not with themselves)
    tf2_outputs = runfolder.read_arrays(os.path.join(run_folder, "reference_tf2.npz"))["scores"]
    reference = runfolder.read_arrays(os.path.join(run_folder, "reference_tf1.13.npz"))["scores"]
    assert np.abs(tf2_outputs - reference).max() == pytest.approx(cell["max_abs"], abs=1e-7)


def test_a_model_whose_weights_change_on_loading_is_a_mismatch(run_folder):
    # the saved file's dense kernel scaled: what a loader that mangles weights would compute
    import h5py

    with h5py.File(os.path.join(run_folder, "model.h5"), "r+") as handle:
        group = handle["model_weights"]["scores"]["scores"]
        name = [key for key in group.keys() if key.startswith("kernel")][0]
        group[name][...] = group[name][...] * 1.5
    cell = parity.parity_cell(run_folder, "tf2", "tf_keras")
    assert cell["status"] == "mismatch" and cell["max_abs"] > 1e-3


def test_changed_reference_is_a_mismatch(run_folder):
    path = os.path.join(run_folder, "reference_tf1.13.npz")
    reference = runfolder.read_arrays(path)
    runfolder.write_arrays(path, {"scores": reference["scores"] + 0.1})
    cell = parity.parity_cell(run_folder, "tf2", "tf_keras")
    assert cell["status"] == "mismatch"
    assert cell["max_abs"] == pytest.approx(0.1, rel=1e-3)
    assert cell["per_output"][0]["reasons"]


def test_unloadable_model_is_a_load_error_cell_not_a_crash(run_folder):
    with open(os.path.join(run_folder, "model.h5"), "wb") as handle:
        handle.write(b"not an hdf5 file")
    cell = parity.parity_cell(run_folder, "tf2", "tf_keras")
    assert cell["status"] == "load_error"
    assert cell["error_class"] and cell["error"] and cell["hint"]
    assert runfolder.read_json(os.path.join(run_folder, "parity_tf2.json"))["status"] == "load_error"


def test_activations_and_first_divergence(run_folder):
    out = os.path.join(run_folder, "activations_tf2.npz")
    names = parity.activations(run_folder, "tf2", out, "tf_keras", samples=2)
    assert names == ["conv1", "conv2", "gap", "scores"]
    values = runfolder.read_arrays(out)
    assert values["conv1"].shape == (2, 8, 8, 4)
    changed = dict(values)
    changed["conv2"] = values["conv2"] * 1.01
    changed["gap"] = values["gap"] * 1.01
    layer, compared = parity.first_divergence(values, changed, ["conv1", "conv2", "gap", "scores"])
    assert layer == "conv2"
    assert [item["verdict"] for item in compared] == ["match", "mismatch"]
    assert parity.first_divergence(values, dict(values), ["conv1", "conv2", "gap", "scores"])[0] is None
    # layer names with '/' (keras-vggface) and layers with several outputs ("name/0", "name/1")
    multi = {"conv1/7x7": np.ones(3), "split/0": np.ones(2), "split/1": np.ones(2)}
    bad = dict(multi, **{"split/1": np.zeros(2)})
    assert parity.first_divergence(multi, bad, ["conv1/7x7", "split"])[0] == "split"


def test_error_summary_keeps_the_wrapped_cause():
    error = TypeError("Error when deserializing class 'Conv2D' using config={...}.\n\n"
                      "Exception encountered: Argument `name` must be a string and cannot contain character `/`.")
    text = parity.summarize_error(error)
    assert text.startswith("Error when deserializing") and "cannot contain character" in text
    manifest = {"model": {"lambda_layers": []}, "origin": {}}
    assert "'/'" in parity.load_hint(error, "keras3", manifest)
    lambdas = {"model": {"lambda_layers": ["halve"]}, "origin": {"python": "3.7.16"}}
    assert "halve" in parity.load_hint(EOFError("EOF read where object expected"), "tf_keras", lambdas)
