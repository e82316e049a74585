"""Calibration and probe data for inputs of any rank and for several inputs (issue 11), inside tf1.13
(numpy 1.16, Python 3.7: the code the legacy re-save step runs)."""

import numpy as np
import pytest

from converters.errors import CalibrationDataError
from converters.shared import calibration

pytestmark = pytest.mark.tf1_13


def test_a_batch_first_sequence_shape_takes_an_npy_of_sequences(tmp_path):
    path = str(tmp_path / "seq.npy")
    np.save(path, np.random.RandomState(0).normal(size=(30, 20, 8)).astype(np.float32))
    # (1, 20, 8) is batch first: one sample is (20, 8), not an "image" of (1, 20, 8)
    source = calibration.CalibrationSource(path, (1, 20, 8), samples=10, progress=False, batch_first=True)
    samples = list(source.iter_samples())
    assert len(samples) == 10 and all(sample.shape == (1, 20, 8) for sample in samples)
    assert calibration.sample_shape((1, 20, 8), batch_first=True) == (20, 8)
    assert calibration.sample_shape((None, 20, 8)) == (None, 20, 8)  # without the caller saying: as before


def write_two(path, image_count=40, meta_count=40):
    rng = np.random.RandomState(1)
    np.savez(path, image=rng.uniform(0, 255, size=(image_count, 6, 6, 3)).astype(np.float32),
             meta=rng.normal(size=(meta_count, 4)).astype(np.float32))


INPUTS = [("image", (1, 6, 6, 3)), ("meta", (1, 4))]


def test_an_npz_per_input_name_yields_one_array_per_input_and_preprocesses_images_only(tmp_path):
    path = str(tmp_path / "two.npz")
    write_two(path)
    source = calibration.make_source(path, INPUTS, "unit", samples=8, progress=False)
    assert isinstance(source, calibration.MultiSource)
    batches = list(source.representative_dataset()())
    assert len(batches) == 8
    with np.load(path) as archive:
        raw_image, raw_meta = archive["image"], archive["meta"]
    for index, (image, meta) in zip(source.indices, batches):
        assert image.shape == (1, 6, 6, 3) and meta.shape == (1, 4)
        np.testing.assert_allclose(image[0], raw_image[index] / 255.0, rtol=1e-6)  # "unit" on the image
        np.testing.assert_array_equal(meta[0], raw_meta[index])  # the vector as it is


def test_probe_and_calibration_of_several_inputs_never_share_a_sample(tmp_path):
    path = str(tmp_path / "two.npz")
    write_two(path, 120, 120)
    probe = calibration.draw_probe(path, None, "raw", 20, 0, shared=True, inputs=INPUTS)
    assert sorted(probe.arrays) == ["image", "meta"] and probe.arrays["meta"].shape == (20, 4)
    keys = calibration.probe_keys([probe.arrays["image"], probe.arrays["meta"]], probe.describe()["source_sha256"])
    assert [key[1] for key in keys] == [key[1] for key in probe.keys]  # read back, the same content keys
    source = calibration.make_source(path, INPUTS, samples=60, progress=False, reserve_probe=20, exclude=keys)
    list(source.iter_samples())
    assert calibration.count_overlap(source.yielded_keys, keys) == 0
    assert not set(source.indices) & set(probe.indices)


def test_an_npz_missing_an_input_or_with_uneven_counts_is_refused_by_name(tmp_path):
    missing = str(tmp_path / "image_only.npz")
    np.savez(missing, image=np.zeros((10, 6, 6, 3), np.float32))
    with pytest.raises(CalibrationDataError) as error:
        calibration.make_source(missing, INPUTS, progress=False)
    assert "meta" in error.value.message and "numpy.savez" in error.value.hint
    uneven = str(tmp_path / "uneven.npz")
    write_two(uneven, 10, 12)
    with pytest.raises(CalibrationDataError) as error:
        calibration.make_source(uneven, INPUTS, progress=False)
    assert "image: 10" in error.value.message and "meta: 12" in error.value.message
    npy = str(tmp_path / "one.npy")
    np.save(npy, np.zeros((10, 4), np.float32))
    with pytest.raises(CalibrationDataError) as error:
        calibration.make_source(npy, INPUTS, progress=False)
    assert "the model has 2" in error.value.message
