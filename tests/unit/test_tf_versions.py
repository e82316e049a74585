"""Issue 24: any TF release as an environment from one rule (envs/registry.py), its cells and its locks; the
bisection's search order (converters/bisect.py) on a table of cell verdicts (the real search, with real
environments, is tests/integration/test_tf_matrix_crossenv.py)."""

import glob
import os

import pytest

from converters import bisect, verify
from converters.errors import UsageError
from envs import locking, paths, registry, venvs
from envs.errors import InterpreterNotFound

pytestmark = pytest.mark.unit

UNFINDABLE = {"PATH": "/usr/bin:/bin", "PYENV_ROOT": "/nonexistent-pyenv", "HOME": "/nonexistent-home"}


def test_the_rule_gives_each_release_its_keras_and_the_pins_its_tf_forgot():
    assert registry.tf_requirements("2.4") == ("tensorflow-cpu==2.4.*", "h5py<3", "numpy<1.24", "protobuf<3.21")
    assert registry.tf_requirements("2.12.0")[:2] == ("tensorflow-cpu==2.12.0", "keras>=2.12,<2.13")
    assert registry.tf_requirements("2.16") == ("tensorflow==2.16.*", "tf-keras==2.16.*", "keras>=3,<4", "h5py",
                                               "numpy<2")
    assert registry.tf_requirements("1.14")[:2] == ("tensorflow==1.14.*", "keras==2.2.5")
    assert [registry.keras_default(v) for v in ("1.14", "2.0", "2.15.1", "2.16", "2.21")] == [
        "standalone", "tf.keras", "tf.keras", "keras3", "keras3"]


def test_a_version_that_is_a_builtin_environment_is_that_environment():
    assert [registry.env_name(v) for v in ("1.13", "1.15.5", "2.21", "2.21.0", "2.12", "2.16.1", "tf1.14")] == [
        "tf1.13", "tf1.15", "tf2", "tf2", "tf2.12", "tf2.16.1", "tf1.14"]
    assert registry.is_derived("tf2.12") and registry.is_derived("tf2.16.1")
    assert not registry.is_derived("tf2") and not registry.is_derived("host")


@pytest.mark.parametrize("value, says", [("1.12", "older than tfbridge's oldest"), ("2.12.7", "never released"),
                                         ("two", "not a TensorFlow version"), ("2", "not a TensorFlow version")])
def test_a_version_that_cannot_be_is_refused_saying_why(value, says):
    with pytest.raises(ValueError, match=says):
        registry.check_tf_version(value)
    with pytest.raises(UsageError, match="--tf"):
        registry.tf_environments(value)


def test_the_python_is_the_preferred_one_its_wheels_are_for():
    assert registry.choose_python("2.4") == "3.8"  # 3.6 ... 3.8: the newest one
    assert registry.choose_python("2.12") == "3.11"  # the host's own, as tf2's
    assert registry.choose_python("1.14") == "3.7"
    assert registry.get("tf2.4").python == "3.8"


def test_no_interpreter_for_a_release_is_one_paragraph_naming_the_pythons_and_how_to_get_one():
    with pytest.raises(InterpreterNotFound) as caught:
        registry.choose_python("2.4", environ=UNFINDABLE)
    message = str(caught.value)
    assert "TensorFlow 2.4 has wheels only for Python 3.6, 3.7, 3.8" in message
    assert "pyenv install 3.8" in message and "TFBRIDGE_PYTHON_3_8" in message
    assert "\n" not in message


def test_tf_option_lists_the_new_environments_oldest_first_and_refuses_docker():
    assert registry.tf_environments("2.12, 2.4,2.21,2.4,1.15") == ["tf2.4", "tf2.12"]
    with pytest.raises(UsageError, match="local venvs only"):
        registry.tf_environments("2.4", backend="docker")


def test_each_extra_release_has_the_cells_of_its_keras_and_the_graph():
    cells = verify.cells_for("tf1.13", keras3=False, extra=["tf1.14", "tf2.4", "tf2.17"])
    extra = [cell for cell in cells if cell[1] not in registry.ENVIRONMENTS]
    assert extra == [("tf1.14", "tf1.14", "auto"), ("tf1.14-graph", "tf1.14", "graph"),
                     ("tf2.4", "tf2.4", "tf.keras"), ("tf2.4-graph", "tf2.4", "graph"),
                     ("tf2.17", "tf2.17", "tf_keras"), ("tf2.17-keras3", "tf2.17", "keras3"),
                     ("tf2.17-graph", "tf2.17", "graph")]
    assert verify.extra_cells("tf2.17", graph=True) == [("tf2.17-graph", "tf2.17", "graph")]


def test_extra_cells_follow_the_policy_of_tf2_cells_of_the_same_kind():
    cells = verify.tolerate([
        {"env": "tf2-keras3-migrated", "status": "match"},
        {"env": "tf2.17-keras3", "status": "mismatch"},  # Keras 3 reading the .h5 as it is: as tf2-keras3
        {"env": "tf2.12", "status": "match", "environment": "tf2.12"},
        {"env": "tf2.12-graph", "status": "load_error", "environment": "tf2.12"},  # as tf2-graph
        {"env": "tf2.4", "status": "mismatch", "environment": "tf2.4"},  # a real regression in 2.4
        {"env": "tf2.4-graph", "status": "match", "environment": "tf2.4"},
        {"env": "tf2.8", "status": "load_error", "cause": "lambda_bytecode", "environment": "tf2.8"},
        {"env": "tf2.8-graph", "status": "match", "environment": "tf2.8"},
    ])
    assert [cell["tolerated"] for cell in cells] == [False, True, False, True, False, False, True, False]


def test_every_shipped_lock_is_the_rule_resolved_for_the_python_its_header_names():
    shipped = sorted(glob.glob(os.path.join(paths.LOCK_DIR, "extra", "*.txt")))
    assert shipped, "the test versions' locks are shipped (CI does not resolve them again)"
    for path in shipped:
        name = os.path.basename(path)[:-4]
        with open(path) as handle:
            header = handle.readline()
        python = header.split("(Python ")[1].split(",")[0]
        env = registry.tf_environment(name[2:], python)
        assert locking.lock_fingerprint(path) == locking.fingerprint(env), (
            "%s is out of date with the rule: regenerate it with `nox -s lock -- %s`" % (path, name))


# The bisection on a table: TF release -> the status of the tf.keras line's cell there. The change is at
# 2.16.1 (the first release whose tf.keras is Keras 3).
TRUTH = dict([(r, "match") for minor, (_p, releases) in registry.TF_RELEASES.items() for r in releases])
TRUTH.update((r, "mismatch") for r in TRUTH if registry.tf_version_key(r) >= (2, 16, 1))


def search(given, truth=TRUTH, origin="1.13.2"):
    cells = [{"env": "tf" + v, "tf_version": v, "keras": "tf.keras" if registry.tf_version_key(v) < (2, 16)
              else "keras3", "status": truth[v], "environment": "tf" + v} for v in given]
    ran = []

    def run_cell(label, env, flavour):
        minor = env[2:]
        version = minor if minor.count(".") == 2 else registry.releases_of(minor)[-1]
        ran.append(version)
        return {"env": label, "tf_version": version, "keras": flavour, "status": truth[version], "environment": env}

    def divergent(cell):
        return dict(cell, first_divergent_layer="lstm", hazards=[{"id": "keras3-hard-sigmoid"}])

    searches = bisect.bisect_all(cells, {"tensorflow": origin}, False, run_cell, divergent, log=lambda line: None)
    return dict((s["line"], s) for s in searches), ran, cells


def test_bisection_probes_minors_then_patches_and_names_the_first_release_that_differs():
    found, ran, cells = search(["2.4.4", "2.21.0"])
    line = found["tf.keras"]
    assert (line["first_differing"], line["last_matching"]) == ("2.16.1", "2.15.1")
    assert line["first_divergent_layer"] == "lstm" and line["hazards"] == ["keras3-hard-sigmoid"]
    # minors 2.5 ... 2.20 (16): a bisection probes about log2(16) of them, then 2.16's patch 2.16.1
    assert 4 <= len(ran) <= 7 and ran[-1] == "2.16.1" and len(set(ran)) == len(ran)
    assert [p["tf"] for p in line["probed"]] == ran
    assert any(cell.get("role") == "bisect" and cell["tf_version"] == "2.16.1" for cell in cells)
    assert found["keras2"]["searched"] is False  # 2.21's keras2 cell is not in the table: nothing differs


def test_bisection_skips_a_release_without_a_verdict_and_needs_an_older_match():
    found, ran, _ = search(["2.12.1", "2.16.2"], truth=dict(TRUTH, **{"2.14.1": "load_error"}))
    assert ran == ["2.14.1", "2.15.1", "2.16.1"]  # 2.14 says nothing: the search goes on with 2.13 and 2.15
    assert found["tf.keras"]["probed"][0]["status"] == "load_error"
    assert found["tf.keras"]["first_differing"] == "2.16.1"
    truth = dict(TRUTH, **{"2.4.4": "mismatch"})
    found, ran, _ = search(["2.4.4", "2.16.2"], truth=truth, origin=None)
    assert found["tf.keras"]["searched"] is False and "no older cell" in found["tf.keras"]["why"] and not ran


def test_the_matrix_by_release_has_a_column_per_release_checked():
    report = {"origin": {"tensorflow": "1.13.2"}, "parity": [
        {"env": "tf2.4", "tf_version": "2.4.4", "keras": "tf.keras", "status": "match"},
        {"env": "tf2.16-keras3", "tf_version": "2.16.2", "keras": "keras3", "status": "mismatch"},
        {"env": "tf2.16", "tf_version": "2.16.2", "keras": "tf_keras", "status": "match"},
        {"env": "tf2-keras3-migrated", "tf_version": "2.21.0", "keras": "keras3", "status": "match"}]}
    rows = bisect.upgrade_lines(report)
    assert rows == [["line", "1.13.2", "2.4.4", "2.16.2"], ["tf.keras", "origin", "match", "mismatch"],
                    ["keras2", "origin", "match", "match"]]


def test_nox_envs_lists_the_rule_made_environments_that_exist_and_those_asked_for(tmp_path, monkeypatch):
    from envs import report

    monkeypatch.setenv("TFBRIDGE_HOME", str(tmp_path))
    (tmp_path / "envs" / "tf2.12").mkdir(parents=True)
    (tmp_path / "envs" / "scratch").mkdir()
    names = report.environment_names(extra=["tf2.4"])
    assert names == list(registry.ENVIRONMENTS) + ["tf2.4", "tf2.12"]
    assert venvs.lock_path("tf2.12") == str(tmp_path / "locks" / "tf2.12.txt")  # made on first use, per home
