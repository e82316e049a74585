"""The check that a reused environment still holds what its lock pins (envs.health), on hand-made
dist-info folders (no TensorFlow, milliseconds), and the broken-environment error across processes."""

import base64
import hashlib
import json
import os
import shutil

import pytest

from converters import cli, errors
from envs import health, venvs

pytestmark = pytest.mark.unit

LOCK = """# Lock of a test environment.
Keras==2.3.1 \\
    --hash=sha256:0000000000000000000000000000000000000000000000000000000000000000
    # via -r envs/registry.py
tensorflow-cpu==2.21.0 \\
    --hash=sha256:1111111111111111111111111111111111111111111111111111111111111111
tensorflow==2.21.0 \\
    --hash=sha256:2222222222222222222222222222222222222222222222222222222222222222
pyyaml==6.0.1 \\
    --hash=sha256:3333333333333333333333333333333333333333333333333333333333333333
"""


def _field(data):
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode("ascii")


def install(site, folder, files):
    """A distribution as a wheel installer leaves it: its files and a dist-info with RECORD."""
    dist_info = os.path.join(site, folder)
    os.makedirs(dist_info)
    rows = []
    for path, data in files.items():
        full = os.path.join(site, path)
        if not os.path.isdir(os.path.dirname(full)):
            os.makedirs(os.path.dirname(full))
        with open(full, "wb") as handle:
            handle.write(data)
        rows.append("%s,%s,%d" % (path, _field(data), len(data)))
    rows.append("%s/RECORD,," % folder)
    with open(os.path.join(dist_info, "RECORD"), "w") as handle:
        handle.write("\n".join(rows) + "\n")


@pytest.fixture
def venv(tmp_path):
    """A venv-shaped folder holding exactly what LOCK pins (tensorflow and tensorflow-cpu overlap, as
    in tf2), plus a seeded pip that the lock does not pin."""
    root = tmp_path / "venv"
    site = str(root / "lib" / "python3.7" / "site-packages")
    os.makedirs(site)
    install(site, "Keras-2.3.1.dist-info", {"keras/__init__.py": b"__version__ = '2.3.1'\n",
                                             "keras/engine/network.py": b"x = 1\n" * 50})
    install(site, "tensorflow_cpu-2.21.0.dist-info", {"tensorflow/__init__.py": b"# cpu build\n",
                                                      "tensorflow/_ops.so": b"\0" * 100})
    install(site, "tensorflow-2.21.0.dist-info", {"tensorflow/__init__.py": b"# full build\n",
                                                  "tensorflow/_ops.so": b"\0" * 120})  # written last, wins
    install(site, "PyYAML-6.0.1.dist-info", {"yaml/__init__.py": b"# yaml\n"})
    install(site, "pip-24.0.dist-info", {"pip/__init__.py": b"# not pinned\n"})
    lock = tmp_path / "lock.txt"
    lock.write_text(LOCK)
    return str(root), site, str(lock)


def test_lock_pins_are_read_and_names_normalised(venv):
    _, site, lock = venv
    pins = health.lock_pins(lock)
    assert pins == {"keras": ("Keras", "2.3.1"), "tensorflow-cpu": ("tensorflow-cpu", "2.21.0"),
                    "tensorflow": ("tensorflow", "2.21.0"), "pyyaml": ("pyyaml", "6.0.1")}
    installed = health.installed_distributions(site)
    assert installed["keras"][0] == "2.3.1" and installed["tensorflow-cpu"][0] == "2.21.0"


def test_an_intact_environment_has_no_problems_even_with_overlapping_distributions(venv):
    root, _, lock = venv
    assert health.problems(root, lock) == []


def test_a_removed_locked_package_is_named_with_its_pinned_version(venv):
    root, site, lock = venv
    shutil.rmtree(os.path.join(site, "Keras-2.3.1.dist-info"))
    shutil.rmtree(os.path.join(site, "keras"))
    assert health.problems(root, lock) == ["Keras 2.3.1 is missing (the lock pins it)"]


def test_another_version_is_a_problem(venv):
    root, site, lock = venv
    os.rename(os.path.join(site, "PyYAML-6.0.1.dist-info"), os.path.join(site, "PyYAML-5.4.dist-info"))
    assert health.problems(root, lock) == ["pyyaml is 5.4, the lock pins 6.0.1"]


def test_a_package_folder_deleted_by_hand_is_found_through_its_record(venv):
    root, site, lock = venv
    shutil.rmtree(os.path.join(site, "keras", "engine"))
    assert health.problems(root, lock) == ["Keras 2.3.1 is incomplete: keras/engine/network.py is missing"]


def test_a_truncated_file_is_found_by_its_size(venv):
    root, site, lock = venv
    with open(os.path.join(site, "keras", "engine", "network.py"), "r+b") as handle:
        handle.truncate(10)
    assert health.problems(root, lock) == [
        "Keras 2.3.1 is damaged: keras/engine/network.py has 10 bytes, its RECORD says 300"]


def test_a_same_size_edit_of_a_key_package_entry_point_is_found_by_its_hash(venv):
    root, site, lock = venv
    path = os.path.join(site, "keras", "__init__.py")
    with open(path, "rb") as handle:
        data = handle.read()
    with open(path, "wb") as handle:
        handle.write(data.replace(b"2.3.1", b"9.9.9"))
    assert health.problems(root, lock) == ["Keras 2.3.1 is damaged: keras/__init__.py differs from its RECORD (sha256)"]


def test_a_file_two_distributions_list_must_match_one_of_them(venv):
    root, site, lock = venv
    with open(os.path.join(site, "tensorflow", "_ops.so"), "wb") as handle:
        handle.write(b"\0" * 7)
    (problem,) = health.problems(root, lock)
    assert "tensorflow/_ops.so has 7 bytes, its RECORD says 100 or 120" in problem


def test_a_legacy_egg_info_install_counts_and_its_lost_files_are_found(venv):
    # pip without the wheel package installs an sdist (TF 1.x's gast 0.2.2) with setup.py install: an
    # egg-info with installed-files.txt (paths relative to it, no size, no hash) instead of a dist-info
    root, site, lock = venv
    with open(lock, "a") as handle:
        handle.write("gast==0.2.2 \\\n    --hash=sha256:%s\n" % ("4" * 64))
    egg_info = os.path.join(site, "gast-0.2.2-py3.7.egg-info")
    os.makedirs(os.path.join(site, "gast"))
    os.makedirs(egg_info)
    for name in ("__init__.py", "gast.py"):
        with open(os.path.join(site, "gast", name), "w") as handle:
            handle.write("# gast\n")
    with open(os.path.join(egg_info, "installed-files.txt"), "w") as handle:
        handle.write("../gast/__init__.py\n../gast/gast.py\n../gast/__pycache__/gast.cpython-37.pyc\nPKG-INFO\n")
    with open(os.path.join(egg_info, "PKG-INFO"), "w") as handle:
        handle.write("Name: gast\nVersion: 0.2.2\n")
    assert health.installed_distributions(site)["gast"] == ("0.2.2", egg_info)
    assert health.problems(root, lock) == []  # a .pyc not yet written is not a loss
    os.remove(os.path.join(site, "gast", "gast.py"))
    assert health.problems(root, lock) == ["gast 0.2.2 is incomplete: gast/gast.py is missing"]


def test_an_unpinned_package_is_not_checked_and_no_site_packages_is_a_problem(venv, tmp_path):
    root, site, lock = venv
    shutil.rmtree(os.path.join(site, "pip"))
    assert health.problems(root, lock) == []
    assert "site-packages folder is missing" in health.problems(str(tmp_path / "nothing"), lock)[0]


def test_import_names_map_to_the_distribution_the_lock_pins(venv):
    _, _, lock = venv
    assert health.pinned_distribution(lock, "keras.engine") == ("Keras", "2.3.1")
    assert health.pinned_distribution(lock, "yaml") == ("pyyaml", "6.0.1")
    assert health.pinned_distribution(lock, "tensorflow") in (("tensorflow", "2.21.0"), ("tensorflow-cpu", "2.21.0"))
    assert health.pinned_distribution(lock, "tf_keras") is None
    assert health.pinned_distribution(lock + ".absent", "keras") is None


def test_every_locked_environment_maps_its_keras():
    assert venvs.locked_distribution("tf1.15", "keras") == ("keras", "2.3.1")
    assert venvs.locked_distribution("tf1.13", "keras") == ("keras", "2.2.4")
    assert venvs.locked_distribution("tf2", "tf_keras") == ("tf-keras", "2.21.0")
    assert venvs.locked_distribution("tf1.15", "tf_keras") is None
    assert venvs.locked_distribution("no-such-env", "keras") is None


def test_a_failed_import_of_a_locked_package_is_an_environment_error_across_processes(tmp_path, monkeypatch):
    monkeypatch.setenv("TFBRIDGE_ENV", "tf1.15")
    exc = ModuleNotFoundError("No module named 'keras'", name="keras")
    error = venvs.broken_by_import(exc, "keras", step="parity")
    assert isinstance(error, errors.EnvironmentBroken) and error.exit_code == 12
    text = error.paragraph()
    assert "\n" not in text
    for needle in ("environment tf1.15", "keras 2.3.1", "nox -s envs -- --rebuild tf1.15", "nothing about the model"):
        assert needle in text
    # a flavour this environment does not pin stays the step's usual error
    assert venvs.broken_by_import(ModuleNotFoundError("x", name="tf_keras"), "tf_keras") is None
    # the step writes it to its error file; the host reads it back with its class, env and package
    error_file = str(tmp_path / "step.error.json")
    monkeypatch.setenv("TFBRIDGE_ERROR_FILE", error_file)

    def step(argv):
        raise error

    assert cli.main(step, [], step="parity") == 12
    with open(error_file) as handle:
        assert json.load(handle)["package"] == "keras"
    back = cli.read_step_error(error_file)
    assert isinstance(back, errors.EnvironmentBroken)
    assert (back.env, back.package, back.exit_code) == ("tf1.15", "keras", 12)
