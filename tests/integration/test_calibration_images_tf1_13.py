"""Calibration images and the vggface presets, inside tf1.13 (Pillow, keras_vggface, Python 3.7)."""

import os

import numpy as np
import pytest

from converters.shared import calibration, preprocess
from converters.errors import CalibrationDataError

pytestmark = pytest.mark.tf1_13


# --------------------------------------------------------------------------- images (Pillow: tf1.13, py3.7)

def _write_images(folder):
    from PIL import Image

    rng = np.random.RandomState(0)
    (folder / "nested" / "deeper").mkdir(parents=True)
    Image.fromarray(rng.randint(0, 255, (40, 30, 3)).astype(np.uint8)).save(str(folder / "a.JPG"))
    Image.fromarray(rng.randint(0, 255, (20, 20)).astype(np.uint8)).save(str(folder / "nested" / "b.png"))
    Image.fromarray(rng.randint(0, 255, (10, 50, 3)).astype(np.uint8)).save(str(folder / "nested" / "deeper" / "c.bmp"))
    Image.fromarray(rng.randint(0, 255, (16, 16, 4)).astype(np.uint8)).save(str(folder / "d.png"))  # RGBA
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 truncated")


@pytest.mark.parametrize("channels", [1, 3])
def test_image_folder_recursive_resized_and_channel_converted(tmp_path, channels):
    _write_images(tmp_path)
    source = calibration.CalibrationSource(str(tmp_path), (None, 12, 9, channels), "unit", progress=True)
    samples = list(source.iter_samples())
    assert source.available == 5
    assert len(samples) == 4, "the broken file is skipped, the other four read"
    assert [os.path.basename(name) for name, _ in source.skipped] == ["broken.jpg"]
    for sample in samples:
        assert sample.shape == (1, 12, 9, channels) and sample.dtype == np.float32
        assert 0.0 <= sample.min() and sample.max() <= 1.0


def test_folder_without_a_readable_image_is_an_error(tmp_path):
    (tmp_path / "x.png").write_bytes(b"garbage")
    source = calibration.CalibrationSource(str(tmp_path), (None, 8, 8, 3), progress=False)
    with pytest.raises(CalibrationDataError, match="could be read"):
        list(source.iter_samples())


def test_builtin_skimage_photos_make_a_vggface_probe():
    probe = calibration.load_probe("skimage", (None, 224, 224, 3), "vggface1", n=4, seed=0)
    assert probe.shape == (4, 224, 224, 3) and probe.dtype == np.float32
    assert probe.std() > 10, "real photographs, not a constant"


@pytest.mark.parametrize("version, preset", [(1, "vggface1"), (2, "vggface2")])
def test_vggface_presets_equal_keras_vggface_preprocess_input(version, preset):
    from keras_vggface import utils

    x = np.random.RandomState(version).uniform(0, 255, size=(3, 5, 6, 3)).astype(np.float32)
    expected = utils.preprocess_input(x.copy(), data_format="channels_last", version=version)
    np.testing.assert_allclose(preprocess.apply(preset, x), expected, rtol=1e-6, atol=1e-4)
