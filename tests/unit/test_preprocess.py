"""Preprocessing presets and calibration data (numpy only on the host; images and keras_vggface in tf1.13)."""

import os

import numpy as np
import pytest

from converters.shared import calibration, preprocess
from converters.errors import CalibrationDataError, UsageError

RGB = np.arange(2 * 3 * 4 * 3, dtype=np.float32).reshape(2, 3, 4, 3) * 2.0


@pytest.mark.unit
@pytest.mark.parametrize("name, expected", [
    ("raw", lambda x: x),
    ("unit", lambda x: x / 255.0),
    ("tf", lambda x: x / 127.5 - 1.0),
    ("caffe", lambda x: x[..., ::-1] - np.array([103.939, 116.779, 123.68])),
    ("vggface1", lambda x: x[..., ::-1] - np.array([93.5940, 104.7624, 129.1863])),
    ("vggface2", lambda x: x[..., ::-1] - np.array([91.4953, 103.8827, 131.0912])),
    ("torch", lambda x: (x / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])),
])
def test_presets_compute_the_documented_formula(name, expected):
    out = preprocess.apply(name, RGB)
    assert out.dtype == np.float32 and out.shape == RGB.shape
    np.testing.assert_allclose(out, expected(RGB.astype(np.float64)), rtol=1e-5, atol=1e-4)


@pytest.mark.unit
def test_vggface_reverses_channels_before_subtracting():
    pixel = np.array([[[[10.0, 20.0, 30.0]]]], np.float32)  # R=10 G=20 B=30
    out = preprocess.apply("vggface1", pixel)[0, 0, 0]
    # first channel is blue (30) minus the first constant
    np.testing.assert_allclose(out, [30 - 93.5940, 20 - 104.7624, 10 - 129.1863], rtol=1e-6)


@pytest.mark.unit
def test_input_is_not_modified_in_place():
    data = RGB.copy()
    preprocess.apply("caffe", data)
    np.testing.assert_array_equal(data, RGB)


@pytest.mark.unit
def test_colour_preset_on_grayscale_is_a_calibration_error():
    with pytest.raises(CalibrationDataError, match="3 colour channels"):
        preprocess.apply("vggface2", np.zeros((1, 4, 4, 1), np.float32))


@pytest.mark.unit
def test_unknown_preset_and_bad_module_function_are_usage_errors():
    with pytest.raises(UsageError, match="unknown preprocessing"):
        preprocess.get("imagenet")
    with pytest.raises(UsageError, match="cannot import"):
        preprocess.get("no_such_module_xyz:fn")


@pytest.mark.unit
def test_module_function_is_imported_and_used():
    function = preprocess.get("numpy:negative")
    np.testing.assert_array_equal(preprocess.apply("numpy:negative", RGB), -RGB)
    assert function is np.negative


@pytest.mark.unit
def test_preset_that_changes_shape_is_rejected():
    with pytest.raises(CalibrationDataError, match="changed the shape"):
        preprocess.apply(lambda x: x[..., :1], RGB)


# ------------------------------------------------------------------------------------ calibration (arrays)

@pytest.mark.unit
def test_npy_samples_stream_one_at_a_time_with_seeded_choice(tmp_path):
    data = np.random.RandomState(1).uniform(0, 255, size=(50, 8, 8, 3)).astype(np.float32)
    path = str(tmp_path / "calib.npy")
    np.save(path, data)
    source = calibration.CalibrationSource(path, (None, 8, 8, 3), "unit", samples=10, seed=3, progress=False)
    iterator = source.iter_samples()
    first = next(iterator)
    assert first.shape == (1, 8, 8, 3) and first.dtype == np.float32
    rest = list(iterator)
    assert len(rest) == 9
    again = calibration.CalibrationSource(path, (None, 8, 8, 3), "unit", samples=10, seed=3, progress=False)
    assert again.indices == source.indices
    other = calibration.CalibrationSource(path, (None, 8, 8, 3), "unit", samples=10, seed=4, progress=False)
    assert other.indices != source.indices
    np.testing.assert_allclose(first[0], data[source.indices[0]] / 255.0, rtol=1e-6)
    assert source.describe()["used"] == 10


@pytest.mark.unit
def test_representative_dataset_yields_lists(tmp_path):
    path = str(tmp_path / "c.npz")
    np.savez(path, input_1=np.ones((3, 4, 4, 1), np.float32))
    source = calibration.CalibrationSource(path, (None, 4, 4, 1), samples=200, progress=False,
                                           input_name="input_1")
    batches = list(source.representative_dataset()())
    assert len(batches) == 3 and isinstance(batches[0], list) and batches[0][0].shape == (1, 4, 4, 1)


@pytest.mark.unit
def test_load_probe_stacks_float32(tmp_path):
    path = str(tmp_path / "p.npy")
    np.save(path, np.arange(5 * 6, dtype=np.int64).reshape(5, 6))
    # a separate probe source (--probe): all of it when it holds fewer than asked
    probe = calibration.load_probe(path, (None, 6), "raw", n=16, seed=0, shared=False)
    assert probe.shape == (5, 6) and probe.dtype == np.float32
    # a source shared with calibration keeps samples for calibration: the last 3 of its permutation
    probe = calibration.load_probe(path, (None, 6), "raw", n=3, seed=0)
    assert probe.shape == (3, 6) and probe.dtype == np.float32
    with pytest.raises(CalibrationDataError, match="too few"):
        calibration.load_probe(path, (None, 6), "raw", n=16, seed=0)


@pytest.mark.unit
@pytest.mark.parametrize("array, message", [
    (np.zeros((4, 8, 8, 1), np.float32), "has shape"),
    (np.zeros((4, 8, 8, 3), np.bool_), "dtype bool"),
    (np.full((2, 8, 8, 3), np.nan, np.float32), "NaN or Inf"),
    (np.zeros((0, 8, 8, 3), np.float32), "holds no samples"),
])
def test_bad_arrays_are_calibration_errors(tmp_path, array, message):
    path = str(tmp_path / "bad.npy")
    np.save(path, array)
    with pytest.raises(CalibrationDataError, match=message):
        source = calibration.CalibrationSource(path, (None, 8, 8, 3), progress=False)
        list(source.iter_samples())


@pytest.mark.unit
def test_missing_path_empty_folder_and_unknown_file(tmp_path):
    with pytest.raises(CalibrationDataError, match="does not exist"):
        calibration.CalibrationSource(str(tmp_path / "nope"), (None, 8, 8, 3))
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "notes.txt").write_text("x")
    with pytest.raises(CalibrationDataError, match="no image files"):
        calibration.CalibrationSource(str(empty), (None, 8, 8, 3))
    other = tmp_path / "model.bin"
    other.write_bytes(b"x")
    with pytest.raises(CalibrationDataError, match="neither a folder"):
        calibration.CalibrationSource(str(other), (None, 8, 8, 3))


@pytest.mark.unit
def test_images_need_a_fixed_image_shaped_input(tmp_path):
    (tmp_path / "a.png").write_bytes(b"not really")
    with pytest.raises(CalibrationDataError, match="cannot feed"):
        calibration.CalibrationSource(str(tmp_path), (None, 10))
    with pytest.raises(CalibrationDataError, match="no fixed height"):
        calibration.CalibrationSource(str(tmp_path), (None, None, None, 3))


@pytest.mark.unit
def test_default_calibration_samples_is_documented_range():
    assert 100 <= calibration.DEFAULT_CALIB_SAMPLES <= 500
