"""The environment machinery on the real interpreters (no network, no nox: the tiny real environment and the
nox sessions are in tests/integration/test_envs_crossenv.py)."""

import os
import subprocess

import pytest

from envs import interpreters, paths, registry, testing, venvs
from envs.errors import InterpreterNotFound, LockMissing

pytestmark = pytest.mark.unit

UNFINDABLE = {"PATH": "/usr/bin:/bin", "PYENV_ROOT": "/nonexistent-pyenv", "HOME": "/nonexistent-home"}


def test_every_environment_is_declared_once_with_a_committed_lock():
    assert list(registry.ENVIRONMENTS) == ["host", "tf1.13", "tf1.15", "tf2"]
    for name, env in registry.ENVIRONMENTS.items():
        with open(venvs.lock_path(name)) as handle:
            text = handle.read()
        assert "nox -s lock -- %s" % name in text.splitlines()[2]
        # every pin in the declaration is in the lock, hash-pinned
        for requirement in env.requirements:
            version = registry.pinned_version(env, requirement.split("==")[0])
            if version:
                assert "%s==%s \\\n    --hash=sha256:" % (requirement.split("==")[0], version) in text
    assert registry.pinned_version(registry.get("tf1.13"), "TensorFlow") == "1.13.2"
    assert registry.pinned_version(registry.get("tf1.15"), "keras") == "2.3.1"
    assert registry.pinned_version(registry.get("tf2"), "tensorflow_cpu") == "2.21.0"


def test_markers_and_groups_derive_from_the_registry():
    assert registry.marker_name("tf1.13") == "tf1_13"
    markers = [marker for _, marker, _ in testing.groups()]
    assert markers == ["unit", "tf1_13", "tf1_15", "tf2", "crossenv"]


def test_tests_given_a_path_run_that_path_alone():
    assert testing.test_paths([]) == ["tests"]
    assert testing.test_paths(["-x", "-k", "roundtrip"]) == ["tests"]
    assert testing.test_paths(["tests/unit"]) == []
    assert testing.test_paths(["-x", "tests/unit/test_envs.py::test_markers_and_groups_derive_from_the_registry"]) == []


def test_unknown_environment_names_the_known_ones():
    with pytest.raises(KeyError, match="tf1.13"):
        registry.get("tf9")


def test_python_37_is_found_and_really_is_37():
    path = interpreters.find_python("3.7")
    out = subprocess.check_output([path, "-c", "import sys; print(sys.version_info[:2])"])
    assert out.strip() == b"(3, 7)"


def test_override_variable_wins_and_a_wrong_one_is_an_error():
    real = interpreters.find_python("3.11")
    environ = dict(UNFINDABLE, TFBRIDGE_PYTHON_3_11=real)
    assert interpreters.find_python("3.11", environ) == real
    with pytest.raises(InterpreterNotFound, match="TFBRIDGE_PYTHON_3_7 is set to '/bin/true'"):
        interpreters.find_python("3.7", dict(UNFINDABLE, TFBRIDGE_PYTHON_3_7="/bin/true"))


def test_missing_interpreter_is_one_paragraph_naming_version_places_and_remedies():
    with pytest.raises(InterpreterNotFound) as caught:
        interpreters.find_python("3.7", UNFINDABLE)
    message = str(caught.value)
    assert "\n" not in message
    for needle in ("Python 3.7", "/nonexistent-pyenv/versions", "PATH", "TFBRIDGE_PYTHON_3_7",
                   "pyenv install", "conda", "Docker"):
        assert needle in message


def test_missing_lock_says_how_to_make_it(tmp_path, monkeypatch):
    # declared, never locked: the error comes before any interpreter, installer or network is touched
    monkeypatch.setenv("TFBRIDGE_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(paths, "LOCK_DIR", str(tmp_path / "locks"))
    tiny = registry.Environment("tiny", "3.11", ("iniconfig==2.0.0",), "test", "x86_64-manylinux_2_28")
    monkeypatch.setitem(registry.ENVIRONMENTS, "tiny", tiny)
    with pytest.raises(LockMissing, match="nox -s lock -- tiny"):
        venvs.ensure("tiny", log=lambda *_: None)


def test_run_environ_puts_the_env_bin_first_and_the_repo_on_the_path():
    environ = venvs.run_environ("tf1.15", base={"PATH": "/usr/bin"})
    assert environ["PATH"].split(os.pathsep)[0] == os.path.join(venvs.venv_dir("tf1.15"), "bin")
    assert environ["PYTHONPATH"] == venvs.REPO_ROOT
    assert environ["TFBRIDGE_ENV"] == "tf1.15"


def test_junit_counts(tmp_path):
    path = tmp_path / "r.xml"
    path.write_text('<testsuites><testsuite tests="7" failures="1" errors="1" skipped="2"/></testsuites>')
    assert testing.junit_counts(str(path)) == {"passed": 3, "failed": 2, "skipped": 2}
    assert testing.junit_counts(str(tmp_path / "absent.xml")) == {"passed": 0, "failed": 0, "skipped": 0}


def test_the_faults_summary_adds_up_the_campaigns_by_kind_and_outcome(tmp_path):
    from envs import testing

    log = tmp_path / "faults.jsonl"
    log.write_text('{"label": "h5", "by_kind": {"flip": {"refused (exit 5)": 3, "handled": 1}}}\n'
                   '{"label": "pb", "by_kind": {"node": {"refused (exit 6)": 2}, "zero": {"handled": 2}}}\n')
    summary = testing.mutation_summary(str(log))
    assert summary.splitlines()[-1] == "mutations: 8 mutated inputs in 2 campaigns"
    assert "handled 1, refused (exit 5) 3" in summary and "refused (exit 6) 2" in summary
    assert testing.mutation_summary(str(tmp_path / "none.jsonl")).endswith("mutations: 0 mutated inputs in 0 campaigns")
    assert "mutated" in testing.FAULTS_SELECTION and "killed_run" in testing.FAULTS_SELECTION
