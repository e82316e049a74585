"""converters.preflight: what is checked before any environment step (standard library, no TensorFlow).

Each README error class that preflight owns is raised here from a real file on disk, with the paragraph's
key words; the crossenv tests (test_preflight_crossenv.py) check the same through the commands, that no
environment step started, and the time it takes.
"""

import io
import json
import struct
import zipfile

import pytest

from converters import options, preflight, preflight_data, preflight_model, preflight_options
from converters.errors import CalibrationDataError, InputFileError, UntrustedModelError, UsageError

pytestmark = pytest.mark.unit

HDF5 = b"\x89HDF\r\n\x1a\n"
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 32


def npy_bytes(shape, descr="<f4"):
    header = repr({"descr": descr, "fortran_order": False, "shape": tuple(shape)}).encode("latin1")
    header += b" " * (-(10 + len(header) + 1) % 64) + b"\n"
    count = 1
    for dim in shape:
        count *= dim
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + b"\0" * (4 * count)


@pytest.fixture
def h5(tmp_path):
    path = tmp_path / "model.h5"
    path.write_bytes(HDF5 + b"\0" * 100)
    return str(path)


def values(command, **given):
    parsed = vars(options.parse(command, [given.pop("model")] if "model" in given else []))
    parsed.update(given)
    return parsed


def test_model_kind_by_content(tmp_path):
    (tmp_path / "a.h5").write_bytes(HDF5)
    (tmp_path / "ub.h5").write_bytes(b"\0" * 512 + HDF5)  # a user block before the superblock
    (tmp_path / "renamed.bin").write_bytes(HDF5)
    with zipfile.ZipFile(str(tmp_path / "m.keras"), "w") as archive:
        archive.writestr("config.json", "{}")
    (tmp_path / "sm").mkdir()
    (tmp_path / "sm" / "saved_model.pb").write_bytes(b"x")
    (tmp_path / "g.pb").write_bytes(b"\x0a\x07\x0a\x01x\x12\x02Op")  # a GraphDef: one node named x, op Op
    (tmp_path / "m.tflite").write_bytes(b"\x18\0\0\0TFL3" + b"\0" * 8)
    (tmp_path / "empty").mkdir()
    (tmp_path / "text.h5").write_bytes(b"hello")
    kinds = {name: preflight_model.model_kind(str(tmp_path / name))
             for name in ("a.h5", "ub.h5", "renamed.bin", "m.keras", "sm", "g.pb", "m.tflite", "empty", "text.h5")}
    assert kinds == {"a.h5": "h5", "ub.h5": "h5", "renamed.bin": "h5", "m.keras": "keras", "sm": "saved_model",
                     "g.pb": "frozen_graph", "m.tflite": "tflite", "empty": "folder", "text.h5": "unknown"}


def test_each_command_names_the_kind_it_got_and_what_to_do(tmp_path, h5):
    (tmp_path / "sm").mkdir()
    (tmp_path / "sm" / "saved_model.pb").write_bytes(b"x")
    import zipfile

    with zipfile.ZipFile(str(tmp_path / "m.keras"), "w") as archive:
        archive.writestr("config.json", "{}")
    with pytest.raises(InputFileError) as caught:  # used to be "does not exist"
        preflight_model.check_model(options.CONVERT_LEGACY, str(tmp_path / "m.keras"))
    assert "is a Keras 3 .keras file" in caught.value.message and "nox -s convert" in caught.value.hint
    # a SavedModel folder may be TF 1.x: the legacy commands take it (a TF 2.x one is refused by its inspection)
    assert preflight_model.check_model(options.CONVERT_LEGACY, str(tmp_path / "sm")) == "saved_model"
    with pytest.raises(InputFileError, match="does not exist"):
        preflight_model.check_model(options.VERIFY_UPGRADE, str(tmp_path / "missing.h5"))
    (tmp_path / "broken.h5").write_bytes(b"not hdf5 at all")
    with pytest.raises(InputFileError, match="is not a readable HDF5 file"):
        preflight_model.check_model(options.CONVERT_LEGACY, str(tmp_path / "broken.h5"))
    assert preflight_model.check_model(options.CONVERT, str(tmp_path / "sm")) == "saved_model"
    assert preflight_model.check_model(options.VERIFY_UPGRADE, h5) == "h5"


def test_origin_arch_custom_objects_preprocess_range(tmp_path, h5):
    with pytest.raises(UsageError, match="--origin 'tf2'"):
        preflight.check(options.VERIFY_UPGRADE, values(options.VERIFY_UPGRADE, model=h5, origin="tf2"))
    for arch in ("no_colon", "mod:fn(1, 2)", "mod:fn(x=open('f'))", "mod:fn(**k)", "1mod:fn"):
        with pytest.raises(UsageError, match="--arch"):
            preflight.check(options.VERIFY_UPGRADE, values(options.VERIFY_UPGRADE, model=h5, arch=arch))
    assert preflight_options.parse_arch_call('keras_vggface.vggface:VGGFace(model="senet50", include_top=False)') == (
        "keras_vggface.vggface", "VGGFace", {"model": "senet50", "include_top": False})
    with pytest.raises(InputFileError, match="--custom-objects"):
        preflight.check(options.VERIFY_UPGRADE, values(options.VERIFY_UPGRADE, model=h5,
                                                       custom_objects=str(tmp_path / "none.py")))
    for name in ("vggface3", "module:", "a b:c"):
        with pytest.raises(UsageError, match="--preprocess"):
            preflight.check(options.VERIFY_UPGRADE, values(options.VERIFY_UPGRADE, model=h5, preprocess=name))
    preflight_options.check_preprocess("my_pre.processing:scale")
    for text in ("0;255", "5,1", "a,b"):
        with pytest.raises(UsageError, match="--input-range"):
            preflight.check(options.VERIFY_UPGRADE, values(options.VERIFY_UPGRADE, model=h5, input_range=text))


def test_a_lambda_in_an_arch_json_is_refused_on_the_host(tmp_path, h5):
    config = {"class_name": "Sequential", "config": {"name": "s", "layers": [
        {"class_name": "TimeDistributed", "config": {"name": "td", "layer": {
            "class_name": "Lambda", "config": {"name": "lam", "function": ["4wEA", None, None],
                                               "function_type": "lambda"}}}}]}}
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps(config))
    with pytest.raises(UntrustedModelError, match="lam"):
        preflight.check(options.VERIFY_UPGRADE, values(options.VERIFY_UPGRADE, model=h5, arch=str(arch)))
    preflight.check(options.VERIFY_UPGRADE, values(options.VERIFY_UPGRADE, model=h5, arch=str(arch),
                                                   trust_model=True))


def test_converting_commands_need_calibration_data_up_front(h5):
    for command in options.CONVERTING:
        with pytest.raises(UsageError, match="--calib"):
            preflight.check(command, values(command, model=h5))
    preflight.check(options.VERIFY_UPGRADE, values(options.VERIFY_UPGRADE, model=h5))  # the probe is random
    preflight.check(options.CONVERT_LEGACY, values(options.CONVERT_LEGACY), demo=True)


def test_calibration_sources(tmp_path):
    images = tmp_path / "images" / "sub"
    images.mkdir(parents=True)
    (images / "a.png").write_bytes(PNG)
    (images / "b.jpg").write_bytes(b"not a jpeg")
    assert preflight_data.data_samples(str(tmp_path / "images")) == {"kind": "images", "samples": 2}
    (tmp_path / "empty").mkdir()
    with pytest.raises(CalibrationDataError, match="no image files"):
        preflight_data.data_samples(str(tmp_path / "empty"))
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x.jpg").write_bytes(b"text, not an image")
    with pytest.raises(CalibrationDataError, match="could be read"):
        preflight_data.data_samples(str(tmp_path / "junk"))
    (tmp_path / "x.npy").write_bytes(npy_bytes((200, 20, 8)))
    assert preflight_data.data_samples(str(tmp_path / "x.npy")) == {"kind": "npy", "samples": 200}
    (tmp_path / "none.npy").write_bytes(npy_bytes((0, 32, 32, 3)))
    with pytest.raises(CalibrationDataError, match="holds no samples"):
        preflight_data.data_samples(str(tmp_path / "none.npy"))
    (tmp_path / "text.npy").write_bytes(npy_bytes((4,), descr="|O"))
    with pytest.raises(CalibrationDataError, match="not numbers"):
        preflight_data.data_samples(str(tmp_path / "text.npy"))
    (tmp_path / "bad.npy").write_bytes(b"hello")
    with pytest.raises(CalibrationDataError, match="not a readable .npy"):
        preflight_data.data_samples(str(tmp_path / "bad.npy"))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("image.npy", npy_bytes((10, 4, 4, 3)))
        archive.writestr("meta.npy", npy_bytes((7, 5)))
    (tmp_path / "x.npz").write_bytes(buffer.getvalue())
    assert preflight_data.data_samples(str(tmp_path / "x.npz")) == {"kind": "npz", "samples": 7,
                                                                 "arrays": {"image": 10, "meta": 7}}
    with pytest.raises(CalibrationDataError, match="does not exist"):
        preflight_data.data_samples(str(tmp_path / "nowhere"))
    assert preflight_data.data_samples("skimage")["kind"] == "skimage"


def test_check_makes_paths_absolute_for_the_steps(tmp_path, monkeypatch, h5):
    monkeypatch.chdir(str(tmp_path))
    (tmp_path / "x.npy").write_bytes(npy_bytes((3, 2)))
    given = values(options.CONVERT, model="model.h5", calib="x.npy", calib_samples=2, probe_samples=1)
    found = preflight.check(options.CONVERT, given)
    assert given["model"] == h5 and given["calib"] == str(tmp_path / "x.npy")
    assert found["model_kind"] == "h5" and found["calib"]["samples"] == 3
