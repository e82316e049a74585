"""legacy_tf1 inside tf1.13: inspect, re-save, freeze, probe, references, the zoo and the demo (real TF)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.tf1_13

# a tf1.13 group that cannot import its TensorFlow must fail (collection error), not skip
import tensorflow as tf  # noqa: E402

from converters.shared import metrics
from converters import options, runfolder  # noqa: E402
from converters.errors import ModelLoadError, UntrustedModelError, UsageError  # noqa: E402
from legacy_tf1 import compat, inspection, loading, resave, zoo  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data")


@pytest.fixture(autouse=True)
def fresh_session():
    for flavour in compat.FLAVOURS:
        compat.reset(flavour)
    yield
    for flavour in compat.FLAVOURS:
        compat.reset(flavour)


def _build(kind, out):
    subprocess.check_call([sys.executable, os.path.join(DATA, "build_models.py"), kind, str(out)],
                          stderr=subprocess.DEVNULL)
    return str(out)


def _run_frozen(pb_path, frozen, probe):
    graph_def = tf.GraphDef()
    with open(pb_path, "rb") as handle:
        graph_def.ParseFromString(handle.read())
    graph = tf.Graph()
    with graph.as_default():
        tf.import_graph_def(graph_def, name="")
    with tf.Session(graph=graph) as sess:
        feed = dict((graph.get_tensor_by_name(name + ":0"), probe[index])
                    for index, name in enumerate(frozen["input_arrays"]))
        fetches = [graph.get_tensor_by_name(name + ":0") for name in frozen["output_arrays"]]
        return sess.run(fetches, feed)


def test_resave_writes_manifest_references_and_a_frozen_graph_that_reproduces_them(tmp_path):
    source = str(tmp_path / "cnn.h5")
    zoo.save("keras-cnn", source)
    compat.reset("keras")
    run = str(tmp_path / "run")
    manifest = resave.resave(source, run, "tf1.13")

    on_disk = runfolder.read_json(os.path.join(run, "manifest.json"))
    assert on_disk == json.loads(json.dumps(manifest))
    assert manifest["schema_version"] == runfolder.SCHEMA_VERSION
    assert manifest["model"]["sha256"] == runfolder.sha256_file(source)
    assert manifest["model"]["resaved_sha256"] == runfolder.sha256_file(os.path.join(run, "model.h5"))
    assert manifest["model"]["keras_flavour"] == "keras"
    assert manifest["origin"]["env"] == "tf1.13"
    assert manifest["origin"]["tensorflow"] == tf.__version__
    assert manifest["origin"]["keras"] == "2.2.4"
    assert manifest["model"]["inputs"] == [{"name": "image", "shape": [None, 32, 32, 3], "dtype": "float32"}]
    assert manifest["model"]["outputs"][0]["name"] == "probs"
    assert manifest["layers"] == ["conv1", "bn1", "pool1", "conv2", "gap", "drop", "probs"]
    assert manifest["probe"]["range"] == [0.0, 255.0] and manifest["probe"]["samples"] == options.DEFAULT_PROBE_SAMPLES
    assert not [name for name in os.listdir(run) if ".partial" in name]  # atomic writes left nothing behind

    probe = runfolder.read_arrays(os.path.join(run, "probe.npz"))
    assert probe["image"].shape == (options.DEFAULT_PROBE_SAMPLES, 32, 32, 3) and probe["image"].dtype == np.float32
    assert 0.0 <= probe["image"].min() and probe["image"].max() <= 255.0
    references = runfolder.read_arrays(os.path.join(run, "reference_tf1.13.npz"))
    assert references["probs"].shape == (options.DEFAULT_PROBE_SAMPLES, 4)

    # the re-saved file is a clean model: no optimizer state
    import h5py

    with h5py.File(os.path.join(run, "model.h5"), "r") as handle:
        assert "optimizer_weights" not in handle

    frozen = manifest["model"]["frozen_graph"]
    assert frozen["input_arrays"] == ["image"] and frozen["output_arrays"] == ["probs/Softmax"]
    outputs = _run_frozen(os.path.join(run, "model.pb"), frozen, [probe["image"]])
    # the frozen graph is the inference graph: Dropout off, BN on moving statistics
    assert metrics.compare(references["probs"], outputs[0])["verdict"] == "match"
    assert np.max(np.abs(references["probs"] - outputs[0])) < 1e-6


def test_same_seed_same_probe_and_explicit_range(tmp_path):
    inputs = [{"name": "x", "shape": [None, 4, 4, 1]}, {"name": "v", "shape": [None, 3]}]
    a, info = resave.make_probe(inputs, 5, 7)
    b, _ = resave.make_probe(inputs, 5, 7)
    c, _ = resave.make_probe(inputs, 5, 8)
    assert np.array_equal(a["x"], b["x"]) and not np.array_equal(a["x"], c["x"])
    assert info["ranges"] == {"x": [0.0, 255.0], "v": [-1.0, 1.0]}
    d, info = resave.make_probe(inputs, 5, 7, input_range=(0.0, 1.0))
    assert d["x"].max() <= 1.0 and info["range"] == [0.0, 1.0]
    with pytest.raises(UsageError):
        resave.make_probe([{"name": "x", "shape": [None, None, None, 3]}], 2, 0)
    with pytest.raises(UsageError):
        resave.parse_range("5,1")


def test_lambda_model_is_refused_before_loading_unless_trusted(tmp_path):
    source = _build("lambda", tmp_path / "lambda.h5")
    info = inspection.inspect_file(source)
    assert info["lambda_layers"] == ["halve"]
    with pytest.raises(UntrustedModelError) as caught:
        resave.resave(source, str(tmp_path / "refused"), "tf1.13")
    assert "--trust-model" in caught.value.paragraph()
    assert not os.path.exists(str(tmp_path / "refused" / "model.h5"))
    compat.reset("keras")
    manifest = resave.resave(source, str(tmp_path / "trusted"), "tf1.13", trust_model=True)
    assert manifest["model"]["trusted"] and manifest["model"]["lambda_layers"] == ["halve"]


def test_custom_layer_needs_custom_objects_and_is_copied_into_the_run(tmp_path):
    source = _build("drifting", tmp_path / "drift.h5")
    with pytest.raises(ModelLoadError) as caught:
        resave.resave(source, str(tmp_path / "no_objects"), "tf1.13")
    assert "--custom-objects" in caught.value.paragraph()
    compat.reset("keras")
    run = str(tmp_path / "run")
    manifest = resave.resave(source, run, "tf1.13", custom_objects=os.path.join(DATA, "drifting_layer.py"),
                             input_range=(0.0, 1.0))
    assert manifest["model"]["custom_objects"] == "custom_objects.py"
    assert os.path.isfile(os.path.join(run, "custom_objects.py"))
    assert "scale_shift" in manifest["layers"]


def test_tf_keras_file_is_detected_and_loaded_with_tf_keras(tmp_path):
    source = str(tmp_path / "tfk.h5")
    zoo.save("tfkeras-cnn", source)
    info = inspection.inspect_file(source)
    assert info["keras_version"].endswith("-tf") and info["keras_flavour"] == "tf.keras"
    assert info["inferred_origin"] == "tf1.13" and "1.15" in info["origin_reason"]  # says it is ambiguous
    compat.reset("tf.keras")
    manifest = resave.resave(source, str(tmp_path / "run"), "tf1.13")
    assert manifest["model"]["keras_flavour"] == "tf.keras"
    assert manifest["origin"]["keras"].endswith("-tf")
    assert manifest["model"]["frozen_graph"] is not None


def test_weights_only_file_with_module_function_arch(tmp_path):
    source = str(tmp_path / "vgg16_weights.h5")
    described = zoo.save("vggface-vgg16", source, input_shape=(48, 48, 3), weights_only=True)
    original_parameters = described["parameters"]
    compat.reset("keras")
    with pytest.raises(ModelLoadError) as caught:
        resave.resave(source, str(tmp_path / "no_arch"), "tf1.13")
    assert "--arch" in caught.value.paragraph()
    compat.reset("keras")
    arch = 'keras_vggface.vggface:VGGFace(model="vgg16", include_top=False, weights=None, input_shape=(48, 48, 3))'
    manifest = resave.resave(source, str(tmp_path / "run"), "tf1.13", arch=arch, samples=2)
    assert manifest["model"]["weights_only"] is True
    assert manifest["model"]["parameters"] == original_parameters
    assert manifest["model"]["keras_flavour"] == "keras"
    # the weights really were loaded: a fresh random build gives different outputs
    references = runfolder.read_arrays(os.path.join(str(tmp_path / "run"), "reference_tf1.13.npz"))
    compat.reset("keras")
    fresh, _ = zoo.build("vggface-vgg16", seed=123, input_shape=(48, 48, 3))
    probe = runfolder.read_arrays(os.path.join(str(tmp_path / "run"), "probe.npz"))
    other = fresh.predict(list(probe.values())[0])
    assert metrics.compare(list(references.values())[0], other)["verdict"] == "mismatch"


def test_arch_call_parsing_accepts_literals_only():
    assert loading.parse_arch_call("pkg.mod:fn") == ("pkg.mod", "fn", {})
    assert loading.parse_arch_call('m:f(model="senet50", include_top=False, input_shape=(64, 64, 3))') == (
        "m", "f", {"model": "senet50", "include_top": False, "input_shape": (64, 64, 3)})
    for bad in ('m:f(__import__("os"))', "m:f(x=open('/etc/passwd'))", "m:f(**k)", "m:os.system", "nofunction"):
        with pytest.raises(UsageError):
            loading.parse_arch_call(bad)


def test_origin_inference_table():
    assert inspection.infer_origin("2.2.4")[0] == "tf1.13"
    assert inspection.infer_origin("2.1.6")[0] == "tf1.13"
    assert inspection.infer_origin("2.3.1")[0] == "tf1.15"
    assert inspection.infer_origin("2.2.4-tf")[0] == "tf1.13"
    assert inspection.infer_origin("2.6.0")[0] is None


def test_make_demo_trains_a_real_face_classifier(tmp_path):
    from legacy_tf1 import demo

    info = demo.make_demo(str(tmp_path / "demo"))
    assert info["held_out_accuracy"] >= 0.85
    assert info["train_seconds"] < 30
    # three disjoint folders, one subfolder per class, each half faces
    seen = {}
    for name, per_class in (("train", 50), ("calibration", 25), ("eval", 25)):
        for label in ("face", "non_face"):
            files = sorted(os.listdir(str(tmp_path / "demo" / name / label)))
            assert len(files) == per_class, (name, label)
            for file_name in files:
                assert file_name not in seen, "%s is in %s and %s" % (file_name, seen.get(file_name), name)
                seen[file_name] = name
            assert int(files[0][:3]) < 100 if label == "face" else int(files[0][:3]) >= 100  # lfw: faces first
    assert len(seen) == 200 and info["split"] == {"train": 100, "calibration": 50, "eval": 50}
    assert set(info["indices"]["eval"]).isdisjoint(info["indices"]["train"])
    assert open(str(tmp_path / "demo" / "classes.txt")).read().split() == demo.CLASSES
    from PIL import Image

    face = str(tmp_path / "demo" / "eval" / "face")
    image = Image.open(os.path.join(face, sorted(os.listdir(face))[0]))
    assert image.size == (25, 25) and image.mode == "L"
    assert runfolder.read_json(str(tmp_path / "demo" / "demo_face.json")) == json.loads(json.dumps(info))
    assert inspection.inspect_file(str(tmp_path / "demo" / "demo_face.h5"))["keras_version"] == "2.2.4"


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_weights_only_file_with_config_file_arch(tmp_path, fmt):
    model, _ = zoo.build("keras-cnn")
    weights = str(tmp_path / "weights.h5")
    model.save_weights(weights)
    arch = str(tmp_path / ("arch." + fmt))
    with open(arch, "w") as handle:
        handle.write(model.to_json() if fmt == "json" else model.to_yaml())
    probe_input = np.random.RandomState(3).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    expected = model.predict(probe_input)
    compat.reset("keras")
    manifest = resave.resave(weights, str(tmp_path / "run"), "tf1.13", arch=arch, samples=2, seed=3)
    assert manifest["model"]["weights_only"] is True and manifest["model"]["arch"] == arch
    references = runfolder.read_arrays(str(tmp_path / "run" / "reference_tf1.13.npz"))
    # same weights, same probe (seed 3): the re-built model reproduces the original's outputs
    assert metrics.compare(expected, references["probs"])["verdict"] == "match"
