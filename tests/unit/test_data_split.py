"""Calibration and probe never overlap; accuracy on labelled data and its paired interval (numpy only).

converters.shared.calibration (the split, content hashes, the calibration stream skipping probe samples),
converters.shared.accuracy (tallies, Newcombe's paired interval), converters.shared.labelled (an .npz read in
batches) and converters.preflight's host checks of --calib/--probe sizes and --eval.
"""

import os

import numpy as np
import pytest

from converters import preflight, preflight_data, preflight_model
from converters.errors import CalibrationDataError, UsageError
from converters.shared import accuracy, calibration, labelled

pytestmark = pytest.mark.unit


# ------------------------------------------------------------------------------------------- split

@pytest.mark.parametrize("count,calib,probe", [(300, 200, 100), (106, 40, 12), (60, 30, 20), (51, None, 50)])
def test_split_is_disjoint_and_takes_what_was_asked(count, calib, probe):
    calibration_indices, probe_indices = calibration.split(count, calib, probe, seed=3)
    assert not set(calibration_indices) & set(probe_indices)
    assert len(probe_indices) == probe
    assert len(calibration_indices) == (count - probe if calib is None else min(calib, count - probe))
    assert set(calibration_indices) | set(probe_indices) <= set(range(count))


def test_split_is_one_permutation_calibration_first_probe_last():
    order = list(calibration.permutation(300, 7))
    calibration_indices, probe_indices = calibration.split(300, 120, 100, seed=7)
    assert calibration_indices == sorted(order[:120])
    assert probe_indices == sorted(order[200:])
    # calibration is what the old seeded choice took: runs made before the split calibrate as before
    assert calibration_indices == calibration.choose(300, 120, 7)


def test_split_is_deterministic_and_seeded():
    assert calibration.split(500, 200, 100, 0) == calibration.split(500, 200, 100, 0)
    assert calibration.split(500, 200, 100, 0)[1] != calibration.split(500, 200, 100, 1)[1]


def test_probe_does_not_depend_on_the_calibration_size():
    # verify_upgrade (no --calib-samples) and convert with any --calib-samples must draw the same probe
    probes = [calibration.split(400, samples, 100, 0)[1] for samples in (50, 200, 300)]
    assert probes[0] == probes[1] == probes[2] == calibration.probe_indices(400, 100, 0)


@pytest.mark.parametrize("count,calib,probe", [(106, 200, 100), (100, 200, 100), (20, 8, 16), (10, None, 10)])
def test_a_source_too_small_for_both_is_refused_with_what_to_do(count, calib, probe):
    with pytest.raises(CalibrationDataError) as caught:
        calibration.split(count, calib, probe, 0, path="data/")
    error = caught.value
    assert "%d samples" % count in error.message and "never share" in error.message
    assert "--probe PATH" in error.hint and "--probe-samples" in error.hint


def test_calibration_may_take_less_than_asked_down_to_the_floor_only():
    assert len(calibration.split(160, 200, 100, 0)[0]) == 60  # >= MIN_SPLIT_CALIB: allowed, said so
    with pytest.raises(CalibrationDataError):
        calibration.split(140, 200, 100, 0)  # 40 < 50
    assert len(calibration.split(40, 8, 30, 0)[0]) == 8  # fewer asked for than the floor: that many


def test_calibration_stream_leaves_out_the_probe_and_its_duplicates(tmp_path):
    data = np.random.RandomState(0).uniform(0, 255, (40, 4, 4, 3)).astype(np.float32)
    data[5] = data[30]  # a duplicate in the data: whichever lands in the probe, the other must not calibrate
    path = str(tmp_path / "data.npy")
    np.save(path, data)
    probe = calibration.draw_probe(path, (None, 4, 4, 3), "raw", n=10, seed=2)
    assert probe.indices == calibration.probe_indices(40, 10, 2)
    source = calibration.CalibrationSource(path, (None, 4, 4, 3), "raw", samples=None, seed=2, progress=False,
                                           reserve_probe=10, exclude=probe.keys)
    samples = list(source.iter_samples())
    assert not set(source.indices) & set(probe.indices)
    assert calibration.count_overlap(source.yielded_keys, probe.keys) == 0
    duplicated = {5, 30} & set(probe.indices)
    assert len(source.excluded) == (1 if len(duplicated) == 1 else 0)
    assert len(samples) == 30 - len(source.excluded)
    # without the exclusion the same stream does overlap: the count is real, not assumed
    unguarded = calibration.CalibrationSource(path, (None, 4, 4, 3), "raw", samples=None, seed=2, progress=False)
    list(unguarded.iter_samples())
    assert calibration.count_overlap(unguarded.yielded_keys, probe.keys) == 10 + len(duplicated and {5, 30} - duplicated)


def test_content_hash_sees_equal_samples_whatever_their_index():
    a = np.arange(48, dtype=np.float32).reshape(1, 4, 4, 3)
    assert calibration.sample_key(a) == calibration.sample_key(a[0]) == calibration.sample_key(a.copy())
    assert calibration.sample_key(a) != calibration.sample_key(a + 1e-3)
    keys = [("s1", "p1"), ("s2", "p2")]
    assert calibration.count_overlap([("s1", "x"), ("y", "p2"), ("z", "q")], keys) == 2


# ------------------------------------------------------------------------------------------- accuracy

def test_newcombe_interval_reproduces_the_published_example():
    # Newcombe (1998), paired example: a=12, b=9, c=2, d=16 -> difference 0.1795, method 10: 0.0214 to 0.3218
    low, high = accuracy.paired_difference_interval(12, 9, 2, 16)
    assert low == pytest.approx(0.0214, abs=1e-4) and high == pytest.approx(0.3218, abs=1e-4)


def test_interval_contains_the_difference_and_narrows_with_more_samples():
    for counts in [(80, 5, 1, 14), (40, 0, 0, 10), (0, 0, 0, 30), (10, 3, 3, 4)]:
        a, b, c, d = counts
        low, high = accuracy.paired_difference_interval(*counts)
        difference = (b - c) / float(a + b + c + d)
        assert -1 <= low <= difference <= high <= 1
    small = accuracy.paired_difference_interval(90, 4, 1, 5)
    large = accuracy.paired_difference_interval(900, 40, 10, 50)
    assert (large[1] - large[0]) < (small[1] - small[0]) / 2
    # paired: the same 5 discordant pairs among 100 give a much narrower interval than unpaired Wilson would
    assert small[1] - small[0] < 0.12


def test_wilson_interval():
    assert accuracy.wilson_interval(0, 100)[0] == pytest.approx(0.0, abs=1e-12)
    low, high = accuracy.wilson_interval(100, 100)
    assert high == 1.0 and low == pytest.approx(0.963, abs=1e-3)  # the "rule of three" neighbourhood


def scores_for(predictions, classes):
    scores = np.zeros((len(predictions), classes), np.float32)
    scores[np.arange(len(predictions)), predictions] = 1.0
    return scores


def test_paired_tally_counts_drop_flips_and_losing_classes_consistently():
    labels = np.array([0, 0, 1, 1, 2, 2, 2, 3, 3, 3])
    float_predictions = np.array([0, 0, 1, 1, 2, 2, 2, 3, 3, 0])
    int8_predictions = np.array([0, 1, 1, 1, 2, 0, 1, 3, 2, 1])  # class 2 loses 2, classes 0 and 3 lose 1
    tally = accuracy.PairedTally(4)
    for start in (0, 4, 7):  # in batches, as streamed
        stop = {0: 4, 4: 7, 7: 10}[start]
        tally.add(labels[start:stop], scores_for(float_predictions[start:stop], 4),
                  scores_for(int8_predictions[start:stop], 4))
    summary = tally.summary(["a", "b", "c", "d"])
    assert summary["samples"] == 10 and summary["float_top1"] == pytest.approx(90.0)
    assert summary["int8_top1"] == pytest.approx(50.0) and summary["drop_points"] == pytest.approx(40.0)
    assert summary["int8_top1"] - summary["float_top1"] == pytest.approx(-summary["drop_points"])
    assert summary["flipped"] == 5  # 1, 5, 6, 8, and 9: wrong in both, but a different class
    assert summary["flipped"] == int(np.sum(float_predictions != int8_predictions))
    assert summary["correctness"] == {"both": 5, "float_only": 4, "int8_only": 0, "neither": 1}
    low, high = summary["drop_ci95"]
    assert low < 40.0 < high
    losing = summary["classes_losing_most"]
    assert [row["class"] for row in losing] == ["c", "a", "d"]
    assert losing[0]["drop_points"] == pytest.approx(200.0 / 3)
    assert "float_top5" not in summary  # 4 classes: no top-5


def test_top5_only_with_more_than_five_classes():
    rng = np.random.RandomState(0)
    labels = rng.randint(0, 10, 50)
    scores = rng.uniform(size=(50, 10))
    tally = accuracy.PairedTally(10)
    tally.add(labels, scores, scores)
    summary = tally.summary()
    expected = np.mean([label in np.argsort(-row)[:5] for label, row in zip(labels, scores)]) * 100
    assert summary["float_top5"] == pytest.approx(expected) == summary["int8_top5"]
    assert summary["drop_points"] == 0 and summary["flipped"] == 0


def test_scores_of_the_wrong_width_are_refused():
    with pytest.raises(ValueError, match="3 classes"):
        accuracy.Tally(3).add([0, 1], np.zeros((2, 4)))


# ------------------------------------------------------------------------------------------- data

def test_npz_eval_data_is_read_in_batches_with_labels_and_preprocessing(tmp_path):
    x = np.random.RandomState(1).randint(0, 256, (70, 5, 5, 1)).astype(np.uint8)
    y = np.arange(70) % 3
    path = str(tmp_path / "eval.npz")
    np.savez_compressed(path, x=x, y=y)
    data = labelled.LabelledData(path, [(None, 5, 5, 1)], ["image"], "unit", batch=32)
    assert data.check_classes(3) == 3 and data.samples == 70
    batches = list(data.batches())
    assert [len(labels) for _, labels, _ in batches] == [32, 32, 6]
    assert np.array_equal(np.concatenate([labels for _, labels, _ in batches]), y)
    assert np.allclose(np.concatenate([inputs[0] for inputs, _, _ in batches]), x / 255.0)
    with pytest.raises(CalibrationDataError, match="label 2"):
        labelled.LabelledData(path, [(None, 5, 5, 1)], ["image"]).check_classes(2)


def test_eval_folder_classes_follow_the_classes_file(tmp_path):
    for name in ("cat", "dog"):
        (tmp_path / "eval" / name).mkdir(parents=True)
    (tmp_path / "order.txt").write_text("dog\ncat\n")
    assert labelled.folder_classes(str(tmp_path / "eval")) == ["cat", "dog"]
    assert labelled.folder_classes(str(tmp_path / "eval"), str(tmp_path / "order.txt")) == ["dog", "cat"]
    (tmp_path / "bad.txt").write_text("dog\nbird\n")
    with pytest.raises(CalibrationDataError, match="bird"):
        labelled.folder_classes(str(tmp_path / "eval"), str(tmp_path / "bad.txt"))


# ------------------------------------------------------------------------------------------- preflight

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 16


def test_preflight_refuses_a_calib_folder_too_small_for_probe_and_calibration(tmp_path):
    folder = tmp_path / "calib"
    folder.mkdir()
    for index in range(120):
        (folder / ("%03d.png" % index)).write_bytes(PNG)
    found = preflight_data.data_samples(str(folder))
    with pytest.raises(CalibrationDataError, match="120 samples"):
        preflight_data.split_fits(found, str(folder), 200, 100)  # 20 left < 50
    preflight_data.split_fits(found, str(folder), 200, 60)  # 60 left: calibration takes 60
    preflight_data.split_fits(found, str(folder), 8, 100)  # 20 left >= the 8 asked for
    preflight_data.split_fits({"kind": "skimage", "samples": None}, "skimage", 200, 100)  # unknown here: in the env


def test_preflight_checks_eval_folders_npz_and_classes_files(tmp_path):
    root = tmp_path / "eval"
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        (root / name / "1.png").write_bytes(PNG)
    assert preflight_data.eval_samples(str(root)) == {"kind": "folder", "samples": 2, "classes": 2}
    (root / "c").mkdir()
    with pytest.raises(CalibrationDataError, match="no image files"):
        preflight_data.eval_samples(str(root))
    (tmp_path / "classes.txt").write_text("b\na\n")
    with pytest.raises(CalibrationDataError, match="not listed: c"):
        preflight_data.eval_samples(str(root), str(tmp_path / "classes.txt"))
    np.savez(str(tmp_path / "ok.npz"), x=np.zeros((4, 2, 2, 1)), y=np.array([0, 1, 0, 1]))
    assert preflight_data.eval_samples(str(tmp_path / "ok.npz"))["samples"] == 4
    np.savez(str(tmp_path / "float_y.npz"), x=np.zeros((4, 2, 2, 1)), y=np.zeros(4))
    with pytest.raises(CalibrationDataError, match="integer labels"):
        preflight_data.eval_samples(str(tmp_path / "float_y.npz"))
    np.savez(str(tmp_path / "short_x.npz"), x=np.zeros((3, 2, 2, 1)), y=np.zeros(4, np.int64))
    with pytest.raises(CalibrationDataError, match="4 numeric samples"):
        preflight_data.eval_samples(str(tmp_path / "short_x.npz"))


def test_eval_classes_without_eval_is_a_usage_error(tmp_path):
    model = tmp_path / "model.h5"
    model.write_bytes(preflight_model.HDF5_SIGNATURE + b"\0" * 64)
    values = {"model": str(model), "calib": "skimage", "eval_classes": str(tmp_path / "c.txt")}
    with pytest.raises(UsageError, match="--eval-classes needs --eval"):
        preflight.check("convert", values)
    assert os.path.isabs(values["model"])
