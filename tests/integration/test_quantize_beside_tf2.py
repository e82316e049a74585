"""The quantizer's second process (``converters.tf2.beside.Worker``, issue 31) writes the same bytes as the
quantizer in the converting process, the search makes the same choice and files with it, and a worker that
fails costs nothing but time.

Runs inside tf2 with real TF 2.21 (its converter extension in the worker, ``lite._mlir_quantize`` here) on
test_requantize_tf2's small CNN and scikit-image patches. The worker is used for models of at least
``beside.MIN_MODEL_BYTES`` (16 MiB); these tests lower that bound to reach it with a small model.
Tolerance: none (byte for byte, figures equal).
"""

import os

import pytest

from tests.integration.test_requantize_tf2 import _model, _patches, _quantizer, setup  # noqa: F401 - fixture

pytestmark = pytest.mark.tf2

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")


def _arguments(per_tensor=False):
    import tensorflow as tf

    from converters.tf2 import beside

    class Converter(object):
        _experimental_disable_per_channel = per_tensor
        _experimental_disable_per_channel_quantization_for_dense_layers = False

    return beside.arguments(Converter(), tf.int8, tf.int8, False, None)


def test_the_worker_writes_the_quantizers_bytes_in_any_order_asked(setup):  # noqa: F811
    from converters.tf2 import beside, tflite_model

    samples = setup["samples"]
    folds = [setup["calibrate"](samples[k::3]) for k in range(3)]
    ranges = [tflite_model.tensor_ranges(c) for c in folds]
    models = [tflite_model.merge_ranges(folds[k], [ranges[(k + 1) % 3]]) for k in range(3)]
    for per_tensor in (False, True):
        worker = beside.Worker(_arguments(per_tensor))
        try:
            for content in models[:2]:
                worker.submit(content)
            assert worker.take(models[2]) is None  # never submitted: the caller quantizes it itself
            quantize = _quantizer(per_tensor)
            assert worker.take(models[1]) == quantize(models[1])  # answered after models[0]'s: kept for it
            assert worker.take(models[0]) == quantize(models[0])
            assert worker.record == {"submitted": 2, "taken": 2}
        finally:
            worker.close()
        assert not os.path.exists(worker.folder)


def test_a_failing_worker_returns_nothing_and_says_why(setup):  # noqa: F811
    from converters.tf2 import beside

    worker = beside.Worker(_arguments())
    try:
        broken = b"TFL3 but not a model" * 10  # the quantizer's call raises in the worker
        content = setup["calibrate"](setup["samples"][:6])
        worker.submit(broken)
        worker.submit(content)
        assert worker.take(broken) is None and worker.record["error"]
        assert worker.take(content) == _quantizer(False)(content)  # the worker goes on
    finally:
        worker.close()


def _convert(tf, model, samples, monkeypatch, worker):
    from converters.tf2 import beside, calibrate
    from converters.tf2.recovery import search

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([x] for x in samples)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    monkeypatch.setattr(beside, "MIN_MODEL_BYTES", 0)
    monkeypatch.setenv("TFBRIDGE_QUANTIZE_WORKER", "1" if worker else "0")
    hook = calibrate.install(converter, jobs=2, recovery=search.parse("bias,cle,cle+bias"))
    content = converter.convert()
    return content, hook


def test_the_search_chooses_the_same_files_with_the_worker(monkeypatch):
    import tensorflow as tf
    import tf_keras

    model = _model(tf_keras)
    samples = [p[0] for p in _patches(36)]
    with_worker, hook = _convert(tf, model, samples, monkeypatch, True)
    without, hook_alone = _convert(tf, model, samples, monkeypatch, False)
    record = hook.quantization["quantize_worker"]
    # plain's fold 0 (the template's check) and cle's fold 0 came from the worker
    assert record["submitted"] == 2 and record["taken"] == 2 and "error" not in record, record
    assert "quantize_worker" not in hook_alone.quantization
    assert with_worker == without
    assert hook.plain_model == hook_alone.plain_model
    keys = ("name", "sqnr_db", "score_db", "correlation", "stopped_early")
    assert [dict((k, c.get(k)) for k in keys) for c in hook.quantization["candidates"]] == \
        [dict((k, c.get(k)) for k in keys) for c in hook_alone.quantization["candidates"]]


def test_a_conversion_step_with_the_worker_writes_the_same_files_and_layers(tmp_path, monkeypatch):
    """The whole conversion step (``tflite_convert.run_step``: search, files, layer debugger, figures) with the
    worker forced on and off: the same int8 files and per-layer figures; the worker made plain's and cle's
    fold-0 models and is gone afterwards with its folder."""
    import glob
    import json
    import tempfile

    import tf_keras

    from converters.tf2 import beside, tflite_convert

    h5 = str(tmp_path / "cnn.h5")
    _model(tf_keras).save(h5)
    monkeypatch.setattr(beside, "MIN_MODEL_BYTES", 0)
    folders = os.path.join(tempfile.gettempdir(), "tfbridge-quantize-*")
    before = set(glob.glob(folders))
    seen = {}
    for worker in ("1", "0"):
        monkeypatch.setenv("TFBRIDGE_QUANTIZE_WORKER", worker)
        folder = tmp_path / ("run_" + worker)
        folder.mkdir()
        assert tflite_convert.run_step([str(folder), "--model", h5, "--calib", "skimage", "--preprocess", "unit",
                                        "--calib-samples", "36", "--probe-samples", "8", "--jobs", "2"]) == 0
        with open(str(folder / "tflite.json")) as handle:
            result = json.load(handle)
        with open(str(folder / "layers.json")) as handle:
            layers = json.load(handle)
        files = {}
        for path in glob.glob(str(folder / "*.tflite")):
            with open(path, "rb") as handle:
                files[os.path.basename(path)] = handle.read()
        seen[worker] = (result, layers, files)
    result, layers, files = seen["1"]
    assert result["quantization"]["quantize_worker"] == {"submitted": 2, "taken": 2}, result["quantization"]
    assert "quantize_worker" not in seen["0"][0]["quantization"]
    assert files == seen["0"][2] and "model_int8_plain.tflite" in files
    assert layers["layers"] and [x["rmse_over_scale"] for x in layers["layers"]] == \
        [x["rmse_over_scale"] for x in seen["0"][1]["layers"]]
    assert set(glob.glob(folders)) <= before  # the worker's folder went with it
