"""Keras 3 migration (``converters.tf2.migrate``): legacy models made in TF 1.13 become a ``model.keras`` that a
fresh Keras 3 process loads without tfbridge and that matches the origin's references; known upgrade
hazards are named.

Models (tests/integration/data/build_keras3_models.py, all built and re-saved in one tf1.13 process):
keras-vggface VGG16, ResNet50 and SENet50 (no top, random weights, smallest inputs), a tf.keras 1.13 CNN
with PReLU, keras 2.2.4 LSTM and GRU, Bidirectional(LSTM) and ConvLSTM2D, and one model per hazard (hard_sigmoid activations, bilinear
UpSampling2D, BatchNormalization epsilon below 1.001e-5), plus '/' in layer names.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from converters.shared import metrics
from envs import venvs

pytestmark = pytest.mark.crossenv

HERE = os.path.dirname(os.path.abspath(__file__))
BUILDER = os.path.join(HERE, "data", "build_keras3_models.py")
ZOO = ["vggface-vgg16", "vggface-resnet50", "vggface-senet50"]
SMALL = ["tfkeras-prelu", "keras-lstm", "keras-gru", "keras-rnn-wrappers", "keras-hard-sigmoid", "keras-upsampling-bilinear",
         "keras-bn-epsilon", "keras-slash-names"]
MODELS = ZOO + SMALL
# the hazard each model reproduces: the file as it is differs in these cells
HAZARD_OF = {"keras-lstm": "keras3-hard-sigmoid", "keras-gru": "keras3-hard-sigmoid",
             "keras-hard-sigmoid": "keras3-hard-sigmoid", "keras-upsampling-bilinear": "tf1-resize-bilinear",
             "keras-bn-epsilon": "tf1-bn-epsilon"}


def run_in(env, args, cwd=None, clean=False, timeout=900):
    environ = venvs.run_environ(env)  # what a step gets
    environ.pop("TF_USE_LEGACY_KERAS", None)
    if clean:  # a user's process: no repository on the path, nothing of tfbridge importable
        environ.pop("PYTHONPATH", None)
    result = subprocess.run([venvs.python_of(env)] + list(args), cwd=cwd or venvs.REPO_ROOT, env=environ, timeout=timeout,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result.stdout


MIGRATE_AND_CELLS = """
import json, sys
from converters.tf2 import migrate
from converters.shared import parity
out = {}
for run in sys.argv[1:]:
    record = migrate.migrate(run)
    as_is = parity.parity_cell(run, "tf2-keras3", "keras3")
    tf_keras = parity.parity_cell(run, "tf2", "tf_keras")
    out[run] = {"migration": record, "as_is": as_is["status"], "tf2": tf_keras["status"]}
print("RESULT " + json.dumps(out))
"""

# Runs in the tf2 venv with a clean PYTHONPATH, from a folder outside the repository: what a user does.
USER_LOAD = """
import json, os, sys
import numpy as np
import keras
out = {}
for run in sys.argv[1:]:
    model = keras.saving.load_model(os.path.join(run, "model.keras"))  # safe_mode=True by default
    manifest = json.load(open(os.path.join(run, "manifest.json")))
    probe = np.load(os.path.join(run, "probe.npz"))
    feed = [probe[spec["name"]] for spec in manifest["model"]["inputs"]]
    values = model.predict(feed if len(feed) > 1 else feed[0], verbose=0)
    values = values if isinstance(values, list) else [values]
    np.savez(os.path.join(run, "user_outputs.npz"),
             **dict((spec["name"], v) for spec, v in zip(manifest["model"]["outputs"], values)))
    out[run] = model.name
try:
    import converters  # noqa: F401
    importable = True
except ImportError:
    importable = False
print("RESULT " + json.dumps({"runs": out, "tfbridge_importable": importable,
                              "tfbridge_loaded": [m for m in sys.modules if m.startswith("converters")]}))
"""


def result_of(stdout):
    return json.loads([line for line in stdout.splitlines() if line.startswith("RESULT ")][-1][len("RESULT "):])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("keras3"))
    run_in("tf1.13", [BUILDER, "--resave-all", folder] + MODELS)
    paths = [os.path.join(folder, name) for name in MODELS]
    cells = result_of(run_in("tf2", ["-c", MIGRATE_AND_CELLS] + paths))
    user = result_of(run_in("tf2", ["-c", USER_LOAD] + paths, cwd=str(tmp_path_factory.mktemp("user")), clean=True))
    return folder, dict((os.path.basename(run), value) for run, value in cells.items()), user


@pytest.mark.parametrize("name", MODELS)
def test_migrated_model_loads_in_a_plain_keras3_process_and_matches_the_origin(runs, name):
    folder, cells, user = runs
    assert cells[name]["migration"]["status"] == "migrated", cells[name]["migration"].get("error")
    assert os.path.join(folder, name) in user["runs"]
    reference = dict(np.load(os.path.join(folder, name, "reference_tf1.13.npz")))
    outputs = dict(np.load(os.path.join(folder, name, "user_outputs.npz")))
    summary = metrics.compare_outputs(reference, outputs)
    print("%s: max_abs %.3g, cosine %.9f" % (name, summary["max_abs"], summary["cosine"]))
    assert summary["verdict"] == "match", summary


def test_the_user_process_had_no_tfbridge(runs):
    _, _, user = runs
    assert user["tfbridge_importable"] is False and user["tfbridge_loaded"] == []


@pytest.mark.parametrize("name", sorted(HAZARD_OF))
def test_each_hazard_model_reproduces_its_hazard_and_the_migration_fixes_it(runs, name):
    _, cells, _ = runs
    cell = cells[name]
    hazard = HAZARD_OF[name]
    if hazard.startswith("keras3-"):
        assert cell["as_is"] == "mismatch" and cell["tf2"] == "match", cell
    else:  # TF 1 behaviour: TF 2 differs with tf-keras and with Keras 3
        assert cell["tf2"] == "mismatch" and cell["as_is"] == "mismatch", cell
    assert hazard in [fix["hazard"] for fix in cell["migration"]["fixes"]]


def test_gates_inside_bidirectional_and_conv_lstm_are_migrated(runs):
    _, cells, _ = runs
    fixes = cells["keras-rnn-wrappers"]["migration"]["fixes"]
    assert sorted(fix["layer"] for fix in fixes if fix["hazard"] == "keras3-hard-sigmoid") == ["bi_lstm", "conv_lstm"]
    assert cells["keras-rnn-wrappers"]["tf2"] == "match"


def test_names_keras3_refuses_are_renamed_and_recorded(runs):
    folder, cells, _ = runs
    for name in ("vggface-resnet50", "vggface-senet50", "keras-slash-names"):
        renamed = cells[name]["migration"]["renamed"]
        assert renamed and all("/" in old and "/" not in new for old, new in renamed.items()), name
        manifest = json.load(open(os.path.join(folder, name, "manifest.json")))
        assert manifest["migration"]["renamed"] == renamed and manifest["migration"]["path"] == "model.keras"
    assert cells["vggface-resnet50"]["as_is"] == "load_error"  # Keras 3 refuses the file as it is
    assert cells["tfkeras-prelu"]["as_is"] == "load_error"     # tf.keras 1.13 config: TypeError in Keras 3


ORIGIN_ACTIVATIONS = """
import sys
from converters.shared import parity
for run in sys.argv[1:]:
    parity.activations(run, "tf1.13", run + "/activations_tf1.13.npz", "keras")
"""

CELL_DIVERGENCE = """
import json, sys
from converters.shared import parity
out = {}
for run, label, flavour in json.loads(sys.argv[1]):
    parity.activations(run, label, run + "/" + parity.activations_name(label), flavour)
    parity.divergence(run, label, "tf1.13")
    out[run] = json.load(open(run + "/parity_%s.json" % label))
print("RESULT " + json.dumps(out))
"""

# the cell where each hazard shows: (model, cell label, Keras flavour of that cell)
DIVERGING = [("keras-upsampling-bilinear", "tf2", "tf_keras"), ("keras-bn-epsilon", "tf2", "tf_keras"),
             ("keras-gru", "tf2-keras3", "keras3")]


@pytest.fixture(scope="module")
def divergences(runs):
    """The first-divergent-layer search of the parity step (``python -m ... activations`` / ``divergence``,
    here called in one process per environment) on the cells where each hazard shows."""
    folder, _, _ = runs
    paths = [os.path.join(folder, name) for name, _, _ in DIVERGING]
    run_in("tf1.13", ["-c", ORIGIN_ACTIVATIONS] + paths)
    jobs = [[os.path.join(folder, name), label, flavour] for name, label, flavour in DIVERGING]
    cells = result_of(run_in("tf2", ["-c", CELL_DIVERGENCE, json.dumps(jobs)]))
    return dict((os.path.basename(run), cell) for run, cell in cells.items())


@pytest.mark.parametrize("name,label,flavour", DIVERGING)
def test_the_first_divergent_layer_is_named_with_its_known_hazard(divergences, name, label, flavour):
    cell = divergences[name]
    assert cell["status"] == "mismatch" and cell["env"] == label
    assert cell["first_divergent_layer"] == {"keras-upsampling-bilinear": "up", "keras-bn-epsilon": "bn1",
                                             "keras-gru": "rnn1"}[name]
    assert [hazard["id"] for hazard in cell["hazards"]] == [HAZARD_OF[name]]
    hazard = cell["hazards"][0]
    assert hazard["layer"] == cell["first_divergent_layer"] and hazard["explanation"] and hazard["fix"]
    assert "hazard_note" not in cell


def verify(tmp_path, model, *args):
    environ = dict(os.environ, PYTHONPATH=venvs.REPO_ROOT)
    out = str(tmp_path / "run")
    result = subprocess.run([sys.executable, "-m", "converters.verify", model, "--out", out, "--probe-samples", "8"]
                            + list(args), cwd=str(tmp_path), env=environ, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, universal_newlines=True, timeout=900)
    report = json.load(open(os.path.join(out, "report.json"))) if os.path.exists(os.path.join(out, "report.json")) \
        else None
    return result, report, out


def test_verify_upgrade_names_the_keras3_hazard_and_the_migrated_cell_passes(runs, tmp_path):
    folder, _, _ = runs
    result, report, out = verify(tmp_path, os.path.join(folder, "keras-lstm.h5"))
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    cells = dict((cell["env"], cell) for cell in report["parity"])
    assert cells["tf2-keras3-migrated"]["status"] == "match"
    as_is = cells["tf2-keras3"]
    assert as_is["status"] == "mismatch" and as_is["tolerated"] is True
    assert as_is["first_divergent_layer"] == "rnn1"
    assert [h["id"] for h in as_is["hazards"]] == ["keras3-hard-sigmoid"]
    assert "clip(0.2 x + 0.5" in as_is["hazards"][0]["explanation"] and as_is["hazards"][0]["fix"]
    assert os.path.isfile(os.path.join(out, "model.keras")) and report["migration"]["status"] == "migrated"
    assert "known hazard: keras3-hard-sigmoid" in result.stdout
    assert "keras3-hard-sigmoid" in open(os.path.join(out, "report.md")).read()
