"""converters.options: one declaration of every option (standard library; no environment is started)."""

import argparse
import os
import re

import pytest

from converters import options
from converters.errors import UsageError

pytestmark = pytest.mark.unit

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
README = os.path.join(REPO, "README.md")
OPTIONS_PAGE = os.path.join(REPO, "docs", "options.md")


def test_every_option_is_declared_once():
    names = [option.name for option in options.OPTIONS]
    assert len(names) == len(set(names))
    assert sorted(options.BY_DEST) == sorted(option.dest for option in options.OPTIONS)


def test_the_three_commands_parse_from_the_declaration():
    for command in options.COMMANDS:
        parser = options.parser_for(command)
        dests = {action.dest for action in parser._actions if action.dest != "help"}
        assert dests == {option.dest for option in options.for_command(command)}


def test_defaults_exist_once_and_every_parser_uses_them():
    values = options.parse(options.CONVERT, ["m.h5"])
    assert values.calib_samples == options.DEFAULT_CALIB_SAMPLES
    # the probe size is decided in one place (probe_size), where the size of a shared source is known
    assert values.probe_samples is None
    legacy = options.parse(options.VERIFY_UPGRADE, ["m.h5"])
    assert legacy.probe_samples is None
    step = argparse.ArgumentParser()
    options.add_step_options(step, options.RESAVE)
    assert step.parse_args([]).probe_samples is None
    assert options.probe_size(None) == options.DEFAULT_PROBE_SAMPLES == 100
    assert options.probe_size(None, shared_count=106) == 53  # skimage: calibration keeps the other half
    assert options.probe_size(None, shared_count=1000) == 100
    assert options.probe_size(7, shared_count=1000) == 7


def test_a_bad_value_is_a_usage_paragraph_not_an_argparse_dump():
    with pytest.raises(UsageError, match="--io"):
        options.parse(options.CONVERT, ["m.h5", "--io", "int4"])
    with pytest.raises(UsageError, match="MODEL|model"):
        options.parse(options.CONVERT, [])
    assert options.parse(options.CONVERT_LEGACY, []).model is None  # the demo


def test_options_a_command_does_not_take_are_refused():
    with pytest.raises(UsageError, match="--force"):
        options.parse(options.VERIFY_UPGRADE, ["m.h5", "--force"])
    with pytest.raises(UsageError, match="--per-tensor"):
        options.parse(options.VERIFY_UPGRADE, ["m.h5", "--per-tensor"])


def test_step_argv_round_trips_through_the_steps_own_parser():
    values = options.parse(options.CONVERT_LEGACY, ["m.h5", "--calib", "imgs", "--preprocess", "vggface2",
                                                    "--calib-samples", "150", "--io", "uint8", "--output-io",
                                                    "float32", "--per-tensor", "--trust-model"])
    for step in options.STEPS:
        parser = argparse.ArgumentParser()
        options.add_step_options(parser, step)
        parsed = vars(parser.parse_args(options.step_argv(values, step)))
        for dest, value in parsed.items():
            assert value == getattr(values, dest), (step, dest)
    assert "--calib-samples" not in options.step_argv(values, options.RESAVE)
    assert options.step_argv(values, options.TFLITE)[-2:] != ["--force"]


def test_preprocess_presets_match_the_arithmetic_module():
    from converters.shared import preprocess

    assert set(options.PREPROCESS_PRESETS) == set(preprocess.PRESETS)


def test_the_docs_option_tables_are_the_declaration():
    with open(OPTIONS_PAGE) as handle:
        text = handle.read()
    found = re.search(r"<!-- options:begin[^>]*-->\n(.*?)<!-- options:end -->", text, re.S)
    assert found, "docs/options.md has no options:begin/options:end markers"
    assert found.group(1).strip() == options.markdown_tables().strip(), (
        "docs/options.md's option tables differ from converters/options.py: run `python -m converters.options --write`")


def test_readme_exit_status_table_is_the_error_classes():
    from converters import errors
    from envs import docker
    from envs.errors import EnvError

    with open(README) as handle:
        text = handle.read()
    found = re.search(r"<!-- exit-status:begin[^>]*-->\n(.*?)<!-- exit-status:end -->", text, re.S)
    assert found, "README.md has no exit-status table"
    documented = {}
    for line in found.group(1).splitlines()[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if cells[1]:
            documented[cells[1].strip("`")] = int(cells[0])
    classes = [cls for cls in vars(errors).values() if isinstance(cls, type) and issubclass(cls, errors.TfbridgeError)
               and cls is not errors.TfbridgeError] + [EnvError, docker.DockerUnavailable]
    assert documented == {cls.__name__: cls.exit_code for cls in classes}
    assert issubclass(EnvError, errors.TfbridgeError)  # one base class
    codes = [cls.exit_code for cls in classes]
    assert len(codes) == len(set(codes)), "two error classes share an exit status"
