"""A run never deletes what it did not write (issue 16, item 5), for each of the three commands, with real steps.

- a non-empty folder tfbridge did not make, given as ``--out``, is refused before any step and left as it was;
- ``--out`` equal to, or containing, the model's folder is refused (and ``--out`` inside a SavedModel folder);
- a tfbridge run folder holding a user's ``notes.txt`` keeps it through a successful rerun and a failed one.

Models: the small standalone-Keras CNN of ``legacy_tf1.zoo`` saved in tf1.15 (two parity cells, the
quickest legacy run) and a small tf_keras CNN saved in tf2 (for ``convert``). About 4 minutes on 2 cores.
"""

import hashlib
import json
import os
import subprocess
import sys
import time

import pytest

from converters import runfolder
from converters.errors import UsageError
from envs import venvs
from tests.integration.test_convert_crossenv import MAKE_H5

pytestmark = pytest.mark.crossenv

REPO = venvs.REPO_ROOT
NOTES = "my notes, not tfbridge's\n"
MAKE_SAVEDMODEL = r'''
import os, sys
os.environ["TF_USE_LEGACY_KERAS"] = "1"
import tf_keras
L = tf_keras.layers
model = tf_keras.Sequential([L.Input((28, 28, 3)), L.Conv2D(4, 3), L.GlobalAveragePooling2D(), L.Dense(2)])
model.save(sys.argv[1], save_format="tf")
'''


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    models = root / "models"
    models.mkdir()
    (root / "empty_calib").mkdir()
    made = [
        subprocess.Popen([venvs.python_of("tf1.15"), "-m", "legacy_tf1", "zoo", "keras-cnn", "--out",
                          str(models / "cnn.h5"), "--seed", "0"], env=venvs.run_environ("tf1.15"), cwd=REPO,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT),
        subprocess.Popen([venvs.python_of("tf2"), "-c", MAKE_H5, str(models / "tf2model.h5")],
                         env=venvs.run_environ("tf2"), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT),
        subprocess.Popen([venvs.python_of("tf2"), "-c", MAKE_SAVEDMODEL, str(root / "savedmodel")],
                         env=venvs.run_environ("tf2"), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT),
    ]
    for process in made:
        output = process.communicate()[0]
        assert process.returncode == 0, output[-3000:]
    return root


def tfbridge(module, *args):
    environ = dict(os.environ, PYTHONPATH=REPO)
    started = time.time()
    result = subprocess.run([sys.executable, "-m", module] + [str(a) for a in args], cwd=REPO, env=environ,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=900)
    result.seconds = time.time() - started
    return result


# Each command: (module, model name under inputs/models, the options of a quick successful run, an option
# that changes the run, an option that makes it fail in a step)
COMMANDS = {
    "verify_upgrade": ("converters.verify", "cnn.h5", ["--origin", "1.15", "--input-range", "0,1",
                                                       "--probe-samples", "4"], ["--seed", "1"], "calib"),
    "convert_legacy": ("converters.pipeline", "cnn.h5", ["--origin", "1.15", "--calib", "skimage", "--preprocess",
                                                         "unit", "--calib-samples", "8", "--probe-samples", "4",
                                                         "--no-layer-debug"], ["--per-tensor"], "calib"),
    "convert": ("converters.convert", "tf2model.h5", ["--calib", "skimage", "--preprocess", "unit",
                                                      "--calib-samples", "8", "--probe-samples", "4",
                                                      "--no-layer-debug"], ["--per-tensor"], "calib"),
}


def with_calib(options, calib):
    """``options`` with ``--calib`` replaced (or added)."""
    options = list(options)
    if "--calib" in options:
        options[options.index("--calib") + 1] = calib
        return options
    return options + ["--calib", calib]


def hashes(folder):
    found = {}
    for root, _, files in os.walk(str(folder)):
        for name in files:
            with open(os.path.join(root, name), "rb") as handle:
                found[os.path.relpath(os.path.join(root, name), str(folder))] = hashlib.sha256(handle.read()).hexdigest()
    return found


def assert_refused(result, *words):
    assert result.returncode == UsageError.exit_code, (result.returncode, result.stderr[-3000:])
    assert "Traceback" not in result.stderr
    paragraphs = [line for line in result.stderr.splitlines() if line.startswith("tfbridge: ")]
    assert len(paragraphs) == 1, result.stderr  # one paragraph, printed once
    for word in words:
        assert word in paragraphs[0], (word, paragraphs[0])
    assert result.seconds < 5, "refused before any environment step (%.1f s)" % result.seconds
    assert "ok" not in [line.split()[-1] for line in result.stderr.splitlines() if line.startswith("  ")]


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_foreign_non_empty_out_is_refused_and_untouched(inputs, tmp_path, command):
    module, model, options, _, _ = COMMANDS[command]
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text(NOTES)
    result = tfbridge(module, inputs / "models" / model, "--out", mine, *options)
    assert_refused(result, str(mine), "not empty", "new folder")
    assert os.listdir(str(mine)) == ["notes.txt"] and (mine / "notes.txt").read_text() == NOTES
    assert sorted(os.listdir(str(tmp_path))) == ["mine"], "no partial folder"


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("where", ["model_folder", "its_parent"])
def test_out_equal_to_or_containing_the_models_folder_is_refused(inputs, command, where):
    module, model, options, _, _ = COMMANDS[command]
    models = inputs / "models"
    out = models if where == "model_folder" else inputs
    before = hashes(inputs)
    result = tfbridge(module, models / model, "--out", out, *options)
    assert_refused(result, "contains the input", model)
    assert hashes(inputs) == before


def test_out_inside_a_savedmodel_folder_is_refused(inputs):
    before = hashes(inputs / "savedmodel")
    result = tfbridge("converters.convert", inputs / "savedmodel", "--out", inputs / "savedmodel" / "run",
                      *COMMANDS["convert"][2])
    assert_refused(result, "inside the input folder")
    assert hashes(inputs / "savedmodel") == before


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_users_file_in_a_run_folder_survives_a_rerun_and_a_failed_rerun(inputs, tmp_path, command):
    module, model, options, change, _ = COMMANDS[command]
    out = tmp_path / "run"
    first = tfbridge(module, inputs / "models" / model, "--out", out, *options)
    assert first.returncode == 0, first.stderr[-3000:]
    marker = runfolder.read_marker(str(out))
    assert marker and "report.json" in marker["files"], marker
    (out / "notes.txt").write_text(NOTES)
    (out / "mine").mkdir()
    (out / "mine" / "data.csv").write_text("1,2\n")

    # a successful rerun (the run folder is replaced: verify_upgrade, convert_legacy; or updated: convert)
    report_before = (out / "report.json").read_bytes()
    second = tfbridge(module, inputs / "models" / model, "--out", out, *(options + change))
    assert second.returncode == 0, second.stderr[-3000:]
    assert (out / "report.json").read_bytes() != report_before, "the rerun did write a new report"
    assert (out / "notes.txt").read_text() == NOTES and (out / "mine" / "data.csv").read_text() == "1,2\n"
    assert "notes.txt" not in runfolder.read_marker(str(out))["files"]
    assert runfolder.user_files(str(out)) == [os.path.join("mine", "data.csv"), "notes.txt"]
    if command == "verify_upgrade":
        assert json.loads((out / "report.json").read_text())["sandbox"]["network"] in ("isolated", "not_isolated")
    else:
        assert json.loads((out / "sandbox.json").read_text())["network"] in ("isolated", "not_isolated")

    # a failed rerun (no usable calibration data) changes nothing
    before = hashes(out)
    failed = tfbridge(module, inputs / "models" / model, "--out", out,
                      *with_calib(options + change, str(inputs / "empty_calib")))
    assert failed.returncode == 8, failed.stderr[-3000:]  # CalibrationDataError
    assert "Traceback" not in failed.stderr
    paragraphs = [line for line in failed.stderr.splitlines() if line.startswith("tfbridge: ")]
    assert len(paragraphs) == 1, failed.stderr[-3000:]  # printed once
    for path in ("/" + part for part in paragraphs[0].split(" /")[1:]):
        path = path.split()[0].rstrip(".;,)")
        assert os.path.exists(path), "the paragraph names %s, which does not exist" % path
    after = hashes(out)
    # convert keeps the failed attempt in last_failure/ (and lists it in the marker); nothing else changes
    ignored = [name for name in after if name.startswith("last_failure" + os.sep)]
    if command == "convert":
        ignored.append(runfolder.RUN_MARKER)
        assert not ignored[:-1] or os.path.isdir(str(out / "last_failure"))
    assert {k: v for k, v in after.items() if k not in ignored} == {k: v for k, v in before.items()
                                                                     if k not in ignored}
    assert (out / "notes.txt").read_text() == NOTES
    assert not [n for n in os.listdir(str(tmp_path)) if n != "run"], "no partial folder left"
