"""The legacy re-save's probe (tf1.13, Python 3.7) is the probe the tf2 step draws, and tf2 calibrates beside it.

The re-save step draws its probe here with ``legacy_tf1.resave.make_probe``; the tf2 step's side runs in the
real tf2 environment (Python 3.11, numpy 2, a newer Pillow) as a subprocess: ``draw_probe`` as
``converters.tf2.prepare.for_tf2_model`` calls it, and the calibration stream that
``converters.tf2.tflite_convert`` builds from ``prepare.from_run_folder``'s answer for this run folder.
"""

import json
import os
import subprocess

import numpy as np
import pytest

from converters import runfolder
from envs import venvs
from legacy_tf1 import resave

pytestmark = pytest.mark.tf1_13

SHAPE = [None, 8, 8, 3]
SAMPLES, SEED = 12, 4

TF2_SIDE = r"""
import json, os, sys
import numpy as np
from converters.shared import calibration
from converters.tf2 import prepare

folder, run = sys.argv[1], sys.argv[2]
drawn = calibration.draw_probe(folder, (None, 8, 8, 3), "unit", %(n)d, %(seed)d, shared=True)
np.save(os.path.join(run, "tf2_probe.npy"), drawn.array)
prepared = prepare.from_run_folder(run, None, None)  # --calib defaults to the probe's own folder
source = calibration.CalibrationSource(
    prepared.calib, (None, 8, 8, 3), prepared.preprocess, 28,
    prepared.calib_seed if prepared.reserve_probe else 0, progress=False,
    reserve_probe=prepared.reserve_probe, exclude=prepared.probe_keys)
list(source.iter_samples())
print(json.dumps({"indices": drawn.indices, "calibration": source.indices,
                  "overlap": calibration.count_overlap(source.yielded_keys, prepared.probe_keys),
                  "reserve": prepared.reserve_probe}))
""" % {"n": SAMPLES, "seed": SEED}


@pytest.fixture
def images(tmp_path):
    from PIL import Image

    folder = tmp_path / "calib"
    folder.mkdir()
    rng = np.random.RandomState(0)
    for index in range(40):  # already 8x8: no resize, so both Pillows decode the same pixels
        Image.fromarray(rng.randint(0, 255, (8, 8, 3)).astype(np.uint8)).save(str(folder / ("%02d.png" % index)))
    return str(folder)


def test_resave_probe_equals_the_tf2_steps_probe_and_tf2_calibrates_beside_it(images, tmp_path):
    inputs = [{"name": "image", "shape": SHAPE}]
    arrays, info = resave.make_probe(inputs, SAMPLES, SEED, calib=images, preprocess="unit")
    probe = arrays["image"]
    assert probe.shape == (SAMPLES, 8, 8, 3) and info["source"] == "calibration"
    assert len(info["indices"]) == SAMPLES and len(info["source_sha256"]) == SAMPLES
    # a run folder as the re-save step leaves it (the parts prepare.from_run_folder reads)
    run = tmp_path / "run"
    run.mkdir()
    runfolder.write_arrays(str(run / "probe.npz"), arrays)
    runfolder.write_arrays(str(run / "reference_tf1.13.npz"), {"scores": np.zeros((SAMPLES, 2), np.float32)})
    runfolder.write_json(str(run / "manifest.json"), {
        "model": {"inputs": [{"name": "image", "shape": SHAPE, "dtype": "float32"}],
                  "outputs": [{"name": "scores", "shape": [None, 2], "dtype": "float32"}]},
        "origin": {"env": "tf1.13"}, "probe": info})
    environ = venvs.run_environ("tf2")
    environ["PYTHONPATH"] = venvs.REPO_ROOT
    done = subprocess.run([venvs.python_of("tf2"), "-c", TF2_SIDE, images, str(run)], env=environ,
                          cwd=venvs.REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    tf2 = json.loads(done.stdout.strip().splitlines()[-1])
    assert tf2["indices"] == info["indices"], "tf1.13 and tf2 chose different probe samples"
    assert np.array_equal(np.load(str(run / "tf2_probe.npy")), probe)
    # tf2 calibrates on the rest of the same permutation, and counts no overlap by content
    assert tf2["reserve"] == SAMPLES
    assert not set(tf2["calibration"]) & set(info["indices"])
    assert len(tf2["calibration"]) == 40 - SAMPLES and tf2["overlap"] == 0


def test_separate_probe_source_is_a_seeded_choice_from_it(images, tmp_path):
    inputs = [{"name": "image", "shape": SHAPE}]
    arrays, info = resave.make_probe(inputs, 5, SEED, calib=str(tmp_path / "not-read"), preprocess="unit",
                                     probe=images)
    assert info["source"] == "probe" and info["samples"] == 5
    assert info["indices"] == sorted(int(i) for i in np.random.RandomState(SEED).permutation(40)[:5])
    assert os.path.samefile(info["path"], images)
