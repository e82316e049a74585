"""Issue 24: any TF release in the parity matrix (``--tf``), and the release that changed the model (``--bisect``).

A keras 2.2.4 LSTM made in tf1.13 (``data/build_models.py``), checked with ``verify_upgrade --tf 2.4,2.15,2.16
--bisect``: TF 2.4 on Python 3.8 and 2.15 on 3.11 (tf.keras, Keras 2) compute what the origin computed; from
TF 2.16, tf.keras is Keras 3, whose hard_sigmoid (the LSTM's recurrent activation) is another function, so
the ``tf.keras`` line differs in 2.16.2 (and 2.21.0), and the search must build TF 2.16.1's environment and
name 2.16.1. One run (the environments: ~40-80 s each to create on a fresh machine; their locks are shipped
in envs/locks/extra/, so CI does not resolve them). And one lock made on first use for a release tfbridge
ships no lock for (``uv pip compile``, needs the package registry, as creating any environment does).

Real TensorFlow in every step; driven from the host.
"""

import json
import os
import subprocess
import sys

import pytest

from envs import locking, registry, venvs

pytestmark = pytest.mark.crossenv

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data")
REPO = os.path.dirname(os.path.dirname(HERE))

MAKE = r'''
import sys
import numpy as np
sys.path.insert(0, sys.argv[1])
import build_models
build_models.main("lstm", sys.argv[2] + "/lstm.h5")
np.save(sys.argv[2] + "/sequences.npy", np.random.RandomState(1).normal(size=(40, 20, 8)).astype("float32"))
'''


@pytest.fixture(scope="module")
def matrix(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tf_matrix")
    subprocess.run([venvs.python_of("tf1.13"), "-c", MAKE, DATA, str(folder)], env=venvs.run_environ("tf1.13"),
                   cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=True)
    out = folder / "run"
    result = subprocess.run([sys.executable, "-m", "converters.verify", str(folder / "lstm.h5"), "--tf", "2.4,2.15,2.16",
                             "--bisect", "--calib", str(folder / "sequences.npy"), "--probe-samples", "16",
                             "--out", str(out)],
                            env=dict(os.environ, PYTHONPATH=REPO), cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, universal_newlines=True)
    report = json.load(open(str(out / "report.json"))) if (out / "report.json").exists() else None
    return result, report, out


def cells_of(report):
    return dict((cell["env"], cell) for cell in report["parity"])


def test_a_tf1_13_model_is_checked_in_tf2_4_on_python_3_8_and_tf2_15_on_python_3_11(matrix):
    result, report, out = matrix
    # tf2-keras3 (and tf2.16-keras3) mismatch, tolerated: the migrated model.keras matches
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    cells = cells_of(report)
    for label, tf, python, keras in (("tf2.4", "2.4.4", "3.8", "tf.keras"), ("tf2.15", "2.15.1", "3.11", "tf.keras"),
                                     ("tf2.16", "2.16.2", "3.11", "tf_keras")):
        cell = cells[label]
        assert (cell["tf_version"], cell["python"], cell["keras"], cell["status"]) == (tf, python, keras, "match"), cell
        assert cell["runtime"].startswith("tensorflow %s + %s" % (tf, keras))
        assert cells[label + "-graph"]["status"] == "match" and cells[label + "-graph"]["tf_version"] == tf
        assert cell["max_abs"] < 1e-4  # Keras 2 everywhere: the same function, float noise only
    assert [(e["env"], e["python"]) for e in report["environments"] if e["from_rule"]][:3] == [
        ("tf2.4", "3.8"), ("tf2.15", "3.11"), ("tf2.16", "3.11")]
    markdown = (out / "report.md").read_text()
    assert "| line | 1.13.2 | 1.15.5 | 2.4.4 | 2.15.1 | 2.16.1 | 2.16.2 | 2.21.0 |" in markdown
    assert "| keras2 | origin | match | match | match | - | match | match |" in markdown


def test_keras_3_in_tf_2_16_differs_at_the_lstm_and_the_bisection_names_2_16_1(matrix):
    _result, report, _out = matrix
    keras3 = cells_of(report)["tf2.16-keras3"]
    assert keras3["status"] == "mismatch" and keras3["tolerated"], keras3
    searches = dict((search["line"], search) for search in report["bisect"])
    line = searches["tf.keras"]
    assert (line["first_differing"], line["last_matching"]) == ("2.16.1", "2.15.1"), line
    assert line["first_divergent_layer"] == "lstm" and line["hazards"] == ["keras3-hard-sigmoid"], line
    assert [(p["tf"], p["status"]) for p in line["probed"]] == [("2.16.1", "mismatch")]
    probe = cells_of(report)["tf2.16.1-keras3"]
    assert probe["role"] == "bisect" and probe["tf_version"] == "2.16.1"
    assert probe["first_divergent_layer"] == "lstm"
    # nothing else differs: the other lines are not searched, and say why
    assert not searches["keras2"]["searched"] and "match" in searches["keras2"]["why"]


def test_a_release_without_a_shipped_lock_is_locked_on_first_use(tmp_path, monkeypatch):
    monkeypatch.setenv("TFBRIDGE_HOME", str(tmp_path))
    env = registry.tf_environment("2.13", registry.choose_python("2.13"))
    assert not os.path.exists(venvs.shipped_lock_path(env.name))
    path = locking.ensure_lock(env, log=lambda line: None)
    assert path == str(tmp_path / "locks" / "tf2.13.txt")
    text = open(path).read()
    assert locking.lock_fingerprint(path) == locking.fingerprint(env)
    assert "tensorflow-cpu==2.13.1 \\\n    --hash=sha256:" in text and "nox -s lock -- tf2.13" in text
    assert "keras==2.13." in text
    modified = os.stat(path).st_mtime_ns
    assert locking.ensure_lock(env, log=lambda line: None) == path and os.stat(path).st_mtime_ns == modified
