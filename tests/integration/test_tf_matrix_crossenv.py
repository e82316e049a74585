"""Issue 24: any TF release in the parity matrix (``--tf``), and the release that changed the model (``--bisect``).

A keras 2.2.4 LSTM made in tf1.13 (``data/build_models.py``):

- ``verify_upgrade --tf 2.4,2.15``: TF 2.4 on Python 3.8 and 2.15 on 3.11 (tf.keras, Keras 2) compute what the
  origin computed, and the report has their columns;
- ``verify_upgrade --tf 2.15,2.16 --bisect`` (slow: three environments of 1.2-2 GB, ~4 min to create on a
  fresh machine; it runs with ``TFBRIDGE_SLOW_TESTS=1``): from TF 2.16, tf.keras is Keras 3, whose
  hard_sigmoid (the LSTM's recurrent activation) is another function, so the ``tf.keras`` line differs in
  2.16.2 (and 2.21.0), and the search must build TF 2.16.1's environment, and only it, and name 2.16.1;
- one lock made on first use for a release tfbridge ships no lock for (``uv pip compile``: the package
  registry, as creating any environment needs).

The test releases' locks are shipped (envs/locks/extra/), so no run resolves them again. Real TensorFlow in
every step; driven from the host.
"""

import json
import os
import subprocess
import sys

import pytest

from envs import locking, paths, registry, venvs

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


SLOW = os.environ.get("TFBRIDGE_SLOW_TESTS") == "1"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tf_matrix")
    subprocess.run([venvs.python_of("tf1.13"), "-c", MAKE, DATA, str(folder)], env=venvs.run_environ("tf1.13"),
                   cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=True)
    return folder


def verify(folder, name, *options):
    out = folder / name
    result = subprocess.run([sys.executable, "-m", "converters.verify", str(folder / "lstm.h5"),
                             "--calib", str(folder / "sequences.npy"), "--probe-samples", "16", "--out", str(out)]
                            + list(options),
                            env=dict(os.environ, PYTHONPATH=REPO), cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, universal_newlines=True)
    report = json.load(open(str(out / "report.json"))) if (out / "report.json").exists() else None
    return result, report, out


@pytest.fixture(scope="module")
def matrix(model):
    return verify(model, "matrix", "--tf", "2.4,2.15")


@pytest.fixture(scope="module")
def bisected(model):
    if not SLOW:
        pytest.skip("slow (three TF 2.15/2.16 environments, ~6 GB): run with TFBRIDGE_SLOW_TESTS=1")
    return verify(model, "bisected", "--tf", "2.15,2.16", "--bisect")


def cells_of(report):
    return dict((cell["env"], cell) for cell in report["parity"])


def test_a_tf1_13_model_is_checked_in_tf2_4_on_python_3_8_and_tf2_15_on_python_3_11(matrix):
    result, report, out = matrix
    # tf2-keras3 mismatches (Keras 3's hard_sigmoid), tolerated: the migrated model.keras matches
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    cells = cells_of(report)
    for label, tf, python in (("tf2.4", "2.4.4", "3.8"), ("tf2.15", "2.15.1", "3.11")):
        cell = cells[label]
        assert (cell["tf_version"], cell["python"], cell["keras"], cell["status"]) == (tf, python, "tf.keras",
                                                                                      "match"), cell
        assert cell["runtime"].startswith("tensorflow %s + tf.keras" % tf)
        assert cell["max_abs"] < 1e-4  # Keras 2 in both: the same function, float noise only
        graph = cells[label + "-graph"]
        assert (graph["tf_version"], graph["status"]) == (tf, "match"), graph
    assert [(e["env"], e["python"], e["tensorflow"]) for e in report["environments"] if e["from_rule"]] == [
        ("tf2.4", "3.8", "2.4.4"), ("tf2.15", "3.11", "2.15.1")]
    assert report["bisect"] is None  # not asked for
    markdown = (out / "report.md").read_text()
    assert "| line | 1.13.2 | 1.15.5 | 2.4.4 | 2.15.1 | 2.21.0 |" in markdown
    assert "| tf.keras | origin | match | match | match | mismatch |" in markdown
    assert "| keras2 | origin | match | match | match | match |" in markdown


def test_keras_3_in_tf_2_16_differs_at_the_lstm_and_the_bisection_names_2_16_1(bisected):
    result, report, _out = bisected
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    cells = cells_of(report)
    assert cells["tf2.16"]["status"] == "match" and cells["tf2.16"]["keras"] == "tf_keras"  # Keras 2 kept
    keras3 = cells["tf2.16-keras3"]
    assert keras3["status"] == "mismatch" and keras3["tolerated"] and keras3["tf_version"] == "2.16.2", keras3
    searches = dict((search["line"], search) for search in report["bisect"])
    line = searches["tf.keras"]
    assert (line["first_differing"], line["last_matching"]) == ("2.16.1", "2.15.1"), line
    assert line["first_divergent_layer"] == "lstm" and line["hazards"] == ["keras3-hard-sigmoid"], line
    assert [(p["tf"], p["status"]) for p in line["probed"]] == [("2.16.1", "mismatch")]
    assert set(line["environments_built"]) <= {"tf2.16.1"}  # built only what it probed (if not made before)
    probe = cells["tf2.16.1-keras3"]
    assert probe["role"] == "bisect" and probe["tf_version"] == "2.16.1"
    assert probe["first_divergent_layer"] == "lstm"
    # nothing else differs: the other lines are not searched, and say why
    assert not searches["keras2"]["searched"] and "match" in searches["keras2"]["why"]


def test_a_release_without_a_shipped_lock_is_locked_on_first_use(tmp_path, monkeypatch):
    monkeypatch.setenv("TFBRIDGE_HOME", str(tmp_path))
    env = registry.tf_environment("2.13", registry.choose_python("2.13"))
    assert not os.path.exists(paths.shipped_lock_path(env.name))
    path = locking.ensure_lock(env, log=lambda line: None)
    assert path == str(tmp_path / "locks" / "tf2.13.txt")
    text = open(path).read()
    assert locking.lock_fingerprint(path) == locking.fingerprint(env)
    assert "tensorflow-cpu==2.13.1 \\\n    --hash=sha256:" in text and "nox -s lock -- tf2.13" in text
    assert "keras==2.13." in text
    modified = os.stat(path).st_mtime_ns
    assert locking.ensure_lock(env, log=lambda line: None) == path and os.stat(path).st_mtime_ns == modified
