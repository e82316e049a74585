"""The host orchestrator's option handling (standard library only; no environment is started)."""

import argparse
import ast
import os

import pytest

from converters import convert
from converters.errors import UsageError

pytestmark = pytest.mark.unit


def parse(argv):
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    convert.add_options(parser)
    return parser.parse_args(argv)


def test_step_arguments_forward_every_option():
    args = parse(["m.h5", "--calib", "imgs", "--preprocess", "vggface2", "--calib-samples", "150", "--io", "uint8",
                  "--output-io", "float32", "--per-tensor", "--allow-float-ops", "--strict-npu", "--no-layer-debug"])
    forwarded = convert.step_arguments(args)
    assert forwarded[forwarded.index("--calib") + 1] == "imgs"
    assert forwarded[forwarded.index("--preprocess") + 1] == "vggface2"
    assert forwarded[forwarded.index("--calib-samples") + 1] == "150"
    assert forwarded[forwarded.index("--io") + 1] == "uint8"
    assert forwarded[forwarded.index("--output-io") + 1] == "float32"
    for flag in ("--per-tensor", "--allow-float-ops", "--strict-npu", "--no-layer-debug"):
        assert flag in forwarded
    assert "--debug" not in forwarded


def test_defaults_and_dict_options():
    forwarded = convert.step_arguments({"calib_samples": 40})
    assert forwarded == ["--calib-samples", "40"]
    defaults = convert.step_arguments(parse(["m.h5"]))
    assert defaults[defaults.index("--calib-samples") + 1] == str(convert.DEFAULT_CALIB_SAMPLES)
    assert 100 <= convert.DEFAULT_CALIB_SAMPLES <= 500
    with pytest.raises(UsageError):
        convert.step_arguments({"calib_samples": 0})


def test_missing_calibration_and_model_fail_before_any_environment_starts(tmp_path):
    from converters.errors import InputFileError

    with pytest.raises(InputFileError):
        convert.convert_model(str(tmp_path / "none.h5"), {"calib": "x"}, out=str(tmp_path / "o"))
    model = tmp_path / "m.h5"
    model.write_bytes(b"x")
    with pytest.raises(UsageError, match="--calib"):
        convert.convert_model(str(model), {}, out=str(tmp_path / "o"))
    assert not (tmp_path / "o").exists()
    with pytest.raises(InputFileError, match="manifest.json"):
        convert.convert_run(str(tmp_path), {})


def test_orchestrator_imports_only_the_standard_library():
    path = os.path.join(os.path.dirname(convert.__file__), "convert.py")
    with open(path) as handle:
        tree = ast.parse(handle.read())
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            modules.add((node.module or "").split(".")[0])
    assert not modules & {"numpy", "tensorflow", "keras", "tf_keras", "h5py"}
