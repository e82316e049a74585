"""Models shared by the integration tests, built once per test session (Python 3.7 compatible: this file is
collected in every environment, so it imports nothing from TensorFlow and runs its builds as subprocesses).

- ``mobilenet_faces``: ``python -m legacy_tf1 mobilenet`` (``legacy_tf1/mobilenet.py``): keras.applications'
  MobileNetV1 (ReLU6 everywhere) trained in tf1.13 on scikit-image's LFW faces, with its calibration set,
  a probe that is 95 % faces, and a labelled held-out eval set. About a minute of training on 2 cores.
"""

import json
import subprocess

import pytest


@pytest.fixture(scope="session")
def mobilenet_faces(tmp_path_factory):
    """The folder holding model.h5, calib.npy, probe.npy, eval.npz and mobilenet.json (the split, the probe's
    class balance, the float accuracy measured in tf1.13). Use ``--preprocess tf`` with its data."""
    from envs import venvs

    folder = tmp_path_factory.mktemp("mobilenet_faces")
    made = subprocess.run(venvs.module_command("tf1.13", "legacy_tf1", ["mobilenet", str(folder)]),
                          env=venvs.run_environ("tf1.13"), cwd=venvs.REPO_ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, universal_newlines=True, timeout=900)
    assert made.returncode == 0, made.stdout[-3000:]
    info = json.loads((folder / "mobilenet.json").read_text())
    assert info["probe_dominant_share"] >= 0.9, info["split"]  # a skewed probe, as users' real ones are
    assert info["float_top1_tf1"]["eval"] >= 75.0, info["float_top1_tf1"]  # trained, not chance (50 %)
    return folder
