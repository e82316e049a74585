"""A broken environment is an environment error, never a verdict about the model (issue 17).

A real tf1.15 environment in a temporary ``TFBRIDGE_HOME`` (created from its lock with uv: with a warm
cache it hard-links the files, a few seconds, then compiles them), then damaged as a user's stray
``pip uninstall`` or a bad disk would: the next ``verify_upgrade`` rebuilds the environment with one line
saying why and no parity cell says ``load_error``; a step that cannot import a locked package fails with
``EnvironmentBroken`` (exit 12) naming the environment, the package and the rebuild command, and writes no
cell. tf1.13 and tf2, which no test here damages, are the session's own, linked into that home (building
them again took a minute of compiling that proved nothing more).

uv hard-links installed files to its cache (and to every other venv made from it): damage is done by
replacing a file (write a copy, rename it over), never by writing into it, which would damage them all.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest

from converters import errors, runfolder, steps
from envs import health, venvs

pytestmark = pytest.mark.crossenv

REPO = venvs.REPO_ROOT

SMALL_MODEL = """
import sys
import numpy as np
import tensorflow as tf
np.random.seed(0); tf.set_random_seed(0)
import keras
i = keras.layers.Input(shape=(16, 16, 3), name="image")
x = keras.layers.Conv2D(4, (3, 3), padding="same", activation="relu", name="conv1")(i)
x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
keras.models.Model(i, keras.layers.Dense(3, name="scores")(x)).save(sys.argv[1])
"""


DAMAGED = "tf1.15"  # the one environment these tests damage and rebuild
LINKED = ("tf1.13", "tf2")  # the session's own, linked in: never damaged here


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A TFBRIDGE_HOME of its own with tf1.15 made from its lock, the session's tf1.13 and tf2 linked in,
    and a small standalone-keras model saved in tf1.13."""
    # uv is locked in the host environment (envs/registry.py HOST_TOOLS): missing is a broken host, not a skip
    assert shutil.which("uv") is not None, "uv is not on PATH (a warm cache makes the environment in seconds)"
    for name in LINKED:
        venvs.ensure(name, log=lambda *_: None)
    linked = dict((name, venvs.venv_dir(name)) for name in LINKED)
    root = tmp_path_factory.mktemp("h17")
    previous = os.environ.get("TFBRIDGE_HOME")
    os.environ["TFBRIDGE_HOME"] = str(root / "home")
    try:
        for name, folder in linked.items():
            os.makedirs(os.path.dirname(venvs.venv_dir(name)), exist_ok=True)
            os.symlink(folder, venvs.venv_dir(name))
        venvs.ensure(DAMAGED, log=lambda *_: None)
        assert [venvs.status(name) for name in ("tf1.13", "tf1.15", "tf2")] == ["ready"] * 3
        model = str(root / "small.h5")
        subprocess.run([venvs.python_of("tf1.13"), "-c", SMALL_MODEL, model], env=venvs.run_environ("tf1.13"),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=True)
        yield {"root": root, "model": model}
    finally:
        if previous is None:
            os.environ.pop("TFBRIDGE_HOME", None)
        else:
            os.environ["TFBRIDGE_HOME"] = previous


def verify(model, out):
    environ = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run([sys.executable, "-m", "converters.verify", model, "--origin", "1.13", "--out", str(out)],
                          env=environ, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True)


def site(name):
    return health.site_packages(venvs.venv_dir(name))


def cells(out):
    with open(os.path.join(str(out), "report.json")) as handle:
        return {cell["env"]: cell for cell in json.load(handle)["parity"]}


def replace_truncated(path, size):
    """Truncate ``path`` by renaming a truncated copy over it (the hard-linked original is untouched)."""
    with open(path, "rb") as handle:
        data = handle.read()
    with open(path + ".tmp", "wb") as handle:
        handle.write(data[:size])
    os.replace(path + ".tmp", path)
    return len(data)


def test_removed_standalone_keras_is_rebuilt_not_reported_as_a_load_error(home):
    result = subprocess.run(["uv", "pip", "uninstall", "--python", venvs.python_of("tf1.15"), "keras"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
    assert result.returncode == 0, result.stdout
    assert venvs.diagnose("tf1.15") == ("broken", ["keras 2.3.1 is missing (the lock pins it)"])

    out = home["root"] / "removed"
    result = verify(home["model"], out)
    assert "environment tf1.15: keras 2.3.1 is missing (the lock pins it); rebuilding with uv" in result.stdout
    assert result.returncode == 0, result.stdout
    found = cells(out)
    assert found["tf1.15"]["status"] == "match", found["tf1.15"]
    assert not [cell for cell in found.values() if cell["status"] == "load_error"]
    assert venvs.status("tf1.15") == "ready"


def test_truncated_keras_file_is_found_by_the_check_and_rebuilt(home):
    path = os.path.join(site("tf1.15"), "keras", "__init__.py")
    full = replace_truncated(path, 40)
    assert venvs.diagnose("tf1.15") == ("broken", [
        "keras 2.3.1 is damaged: keras/__init__.py has 40 bytes, its RECORD says %d" % full])

    out = home["root"] / "truncated"
    result = verify(home["model"], out)
    assert ("environment tf1.15: keras 2.3.1 is damaged: keras/__init__.py has 40 bytes, its RECORD says %d; "
            "rebuilding" % full) in result.stdout
    assert result.returncode == 0, result.stdout
    assert not [cell for cell in cells(out).values() if cell["status"] == "load_error"]


def test_step_that_cannot_import_a_locked_package_is_an_environment_error_not_a_cell(home):
    # a healthy run folder first, then keras goes away after the host's check (as when the environment
    # breaks during a run, or on a backend the host cannot look into)
    out = home["root"] / "run"
    assert verify(home["model"], out).returncode == 0
    os.remove(os.path.join(str(out), runfolder.parity_name("tf1.15")))
    shutil.rmtree(os.path.join(site("tf1.15"), "keras"))
    runner = steps.StepRunner(str(home["root"] / "work"), log=lambda *_: None)
    runner.prepared.add("tf1.15")  # already checked in this run: no rebuild before the step
    with pytest.raises(errors.EnvironmentBroken) as caught:
        runner.step("parity-tf1.15", "tf1.15", "converters.shared.parity", [str(out), "--label", "tf1.15"])
    error = caught.value
    assert error.exit_code == 12 and (error.env, error.package) == ("tf1.15", "keras")
    text = error.paragraph()
    assert "\n" not in text
    for needle in ("environment tf1.15 is broken", "`import keras` failed", "keras 2.3.1",
                   "nox -s envs -- --rebuild tf1.15", "The host's check of the environment: keras 2.3.1 is "
                   "incomplete: keras/__init__.py is missing"):
        assert needle in text
    assert not os.path.exists(os.path.join(str(out), runfolder.parity_name("tf1.15")))  # no load_error cell
    # tf1.15 stays broken: the module's last test, and its temporary home goes with it
