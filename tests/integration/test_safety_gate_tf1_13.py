"""The Lambda gate inside tf1.13 (issue 16): real keras 2.2.4 trap models, refused wherever the Lambda sits.

Each trap (``data/build_traps.py``) holds a Lambda whose function creates a marker file when it runs;
the builder checks the trap is armed and deletes the marker after saving. ``python -m legacy_tf1
resave`` must refuse every trap without ``--trust-model`` (exit >= 2, the Lambda's path named, no marker,
no model.h5) and process it with ``--trust-model`` (where the marker then appears: trusting runs the
code). The same for an ``--arch`` JSON/YAML config and for the parity step, which loads the re-saved
``model.h5`` of a run folder.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.tf1_13

import tensorflow  # noqa: E402,F401 - a tf1.13 group that cannot import its TensorFlow fails, not skips

from legacy_tf1 import inspection  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data")
REPO = os.path.dirname(os.path.dirname(HERE))
CASES = ("top", "time_distributed", "bidirectional", "sequential_in_model", "model_in_wrapper",
         "output_shape_fn")


@pytest.fixture(scope="session")
def traps(tmp_path_factory):
    root = tmp_path_factory.mktemp("traps")
    output = subprocess.check_output([sys.executable, os.path.join(DATA, "build_traps.py"), str(root)],
                                     stderr=subprocess.DEVNULL, cwd=REPO)
    made = json.loads(output.decode("utf-8").strip().splitlines()[-1])
    assert sorted(made) == sorted(CASES)
    for trap in made.values():
        assert os.path.isfile(trap["model"]) and not os.path.exists(trap["marker"])
    return made


def legacy(*args):
    environ = dict(os.environ, PYTHONPATH=REPO, TFBRIDGE_ENV="tf1.13")
    return subprocess.run([sys.executable, "-m", "legacy_tf1"] + [str(a) for a in args], cwd=REPO, env=environ,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)


def paragraph(result):
    lines = [line for line in result.stderr.splitlines() if line.startswith("tfbridge: ")]
    assert lines, result.stderr[-3000:]
    return lines[-1]


def custom_options(trap):
    return ["--custom-objects", trap["custom_objects"]] if trap["custom_objects"] else []


def test_inspect_names_the_full_path_of_every_trap(traps):
    for case, trap in sorted(traps.items()):
        info = inspection.inspect_file(trap["model"])
        assert info["lambda_layers"] == [trap["path"]], case
        assert [(f["kind"], f["path"]) for f in info["unsafe"]] == [("lambda", trap["path"])], case
    assert not [t for t in traps.values() if os.path.exists(t["marker"])]


@pytest.mark.parametrize("case", CASES)
def test_resave_refuses_the_trap_without_trust_and_processes_it_with_trust(traps, tmp_path, case):
    trap = traps[case]
    refused = legacy("resave", trap["model"], "--out", tmp_path / "refused", *custom_options(trap))
    assert refused.returncode == 7, refused.stderr[-3000:]  # UntrustedModelError
    text = paragraph(refused)
    assert "load failed" in text and "contains Lambda layer(s) %s;" % trap["path"] in text, text
    assert "--trust-model" in text and "Traceback" not in refused.stderr
    assert not os.path.exists(trap["marker"]), "the Lambda's code ran without --trust-model"
    assert not os.path.exists(str(tmp_path / "refused" / "model.h5"))

    run = tmp_path / "trusted"
    trusted = legacy("resave", trap["model"], "--out", run, "--trust-model", *custom_options(trap))
    assert trusted.returncode == 0, trusted.stderr[-3000:]
    manifest = json.load(open(str(run / "manifest.json")))
    assert manifest["model"]["trusted"] is True
    assert manifest["model"]["lambda_layers"] == [trap["path"]]
    assert os.path.isfile(str(run / "model.h5"))
    assert os.path.exists(trap["marker"]), "with --trust-model the stored code runs (the trap is real)"
    os.remove(trap["marker"])


def _weights_only(trap, folder):
    """A weights-only copy of a trap (model_config attribute removed) and its config as JSON and YAML."""
    import h5py
    import yaml

    weights = os.path.join(str(folder), "weights.h5")
    shutil.copy(trap["model"], weights)
    with h5py.File(weights, "r+") as handle:
        config = handle.attrs["model_config"]
        del handle.attrs["model_config"]
    config = json.loads(config.decode("utf-8") if isinstance(config, bytes) else config)
    arch_json = os.path.join(str(folder), "arch.json")
    with open(arch_json, "w") as handle:
        json.dump(config, handle)
    arch_yaml = os.path.join(str(folder), "arch.yaml")
    with open(arch_yaml, "w") as handle:
        yaml.safe_dump(config, handle)
    return weights, arch_json, arch_yaml


@pytest.mark.parametrize("case", ["model_in_wrapper", "sequential_in_model"])
def test_arch_config_is_gated_like_the_file(traps, tmp_path, case):
    trap = traps[case]
    weights, arch_json, arch_yaml = _weights_only(trap, tmp_path)
    for arch in (arch_json, arch_yaml):
        refused = legacy("resave", weights, "--arch", arch, "--out", tmp_path / "refused")
        assert refused.returncode == 7, refused.stderr[-3000:]  # UntrustedModelError
        text = paragraph(refused)
        assert "the architecture %s contains Lambda layer(s) %s;" % (arch, trap["path"]) in text, text
        assert not os.path.exists(trap["marker"])
    trusted = legacy("resave", weights, "--arch", arch_json, "--out", tmp_path / "trusted", "--trust-model")
    assert trusted.returncode == 0, trusted.stderr[-3000:]
    assert os.path.exists(trap["marker"])
    os.remove(trap["marker"])


def test_unparsable_arch_is_refused_without_trust(traps, tmp_path):
    weights, _, _ = _weights_only(traps["top"], tmp_path)
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps({"layers": [{"class_name": "Lambda"}]}))  # JSON, but not a model config
    refused = legacy("resave", weights, "--arch", arch, "--out", tmp_path / "refused")
    assert refused.returncode == 7  # UntrustedModelError: unparsable, so not known to be free of code
    assert "cannot be checked for stored code" in paragraph(refused)
    trusted = legacy("resave", weights, "--arch", arch, "--out", tmp_path / "trusted", "--trust-model")
    assert trusted.returncode >= 2 and "cannot be checked" not in trusted.stderr  # Keras's own error now


def test_parity_step_refuses_a_run_folder_lambda_not_recorded_as_trusted(traps, tmp_path):
    trap = traps["model_in_wrapper"]
    run = tmp_path / "run"
    made = legacy("resave", trap["model"], "--out", run, "--trust-model")
    assert made.returncode == 0, made.stderr[-3000:]
    os.remove(trap["marker"])
    manifest_path = str(run / "manifest.json")
    manifest = json.load(open(manifest_path))

    environ = dict(os.environ, PYTHONPATH=REPO, TFBRIDGE_ENV="tf1.13")

    def parity():
        return subprocess.run([sys.executable, "-m", "converters.shared.parity", str(run), "--label", "again"],
                              cwd=REPO, env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True)

    manifest["model"]["trusted"] = False  # a run folder whose model.h5 holds a Lambda nobody trusted
    with open(manifest_path, "w") as handle:
        json.dump(manifest, handle)
    refused = parity()
    assert refused.returncode == 7, refused.stderr[-3000:]  # UntrustedModelError
    assert "contains Lambda layer(s) %s;" % trap["path"] in paragraph(refused)
    assert not os.path.exists(trap["marker"])
    assert not os.path.exists(str(run / "parity_again.json")), "a refusal, not a load_error cell"

    manifest["model"]["trusted"] = True
    with open(manifest_path, "w") as handle:
        json.dump(manifest, handle)
    allowed = parity()
    assert allowed.returncode == 0, allowed.stderr[-3000:]
    assert json.load(open(str(run / "parity_again.json")))["status"] == "match"
    assert os.path.exists(trap["marker"])
    os.remove(trap["marker"])
