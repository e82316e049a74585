"""converters.shared.metrics: the one comparison helper (numpy only)."""

import math

import numpy as np
import pytest

from converters.shared import metrics

pytestmark = pytest.mark.unit


def _features(seed=0, shape=(4, 7, 7, 16), scale=10.0):
    return (np.random.RandomState(seed).standard_normal(shape) * scale).astype(np.float32)


def test_identical_arrays_match_with_zero_error():
    ref = _features()
    result = metrics.compare(ref, ref.copy())
    assert result["verdict"] == "match"
    assert result["max_abs"] == 0.0 and result["max_rel"] == 0.0
    assert result["cosine"] == pytest.approx(1.0)
    assert result["top1_agreement"] is None  # 4-D: not classification-like


def test_float32_reassociation_noise_matches():
    ref = _features()
    # ~1e-5 relative noise: what deep nets accumulate between TF versions (SENet50: 1.8e-5 max_rel)
    noisy = ref * (1 + np.random.RandomState(1).uniform(-1e-5, 1e-5, ref.shape)).astype(np.float32)
    result = metrics.compare(ref, noisy)
    assert result["verdict"] == "match", result["reasons"]
    assert 0 < result["max_abs"] < result["allowed_abs"]


def test_single_element_perturbation_is_caught_and_named():
    ref = _features()
    bad = ref.copy()
    bad[2, 3, 4, 5] += 0.5  # 0.5 on outputs of magnitude ~40: 1.2 % of the range, in one element
    result = metrics.compare(ref, bad, name="features")
    assert result["verdict"] == "mismatch"
    assert result["max_abs"] == pytest.approx(0.5, rel=1e-5)
    assert any(reason.startswith("max_abs") for reason in result["reasons"])
    assert result["name"] == "features"


def test_allowance_scales_with_output_magnitude():
    small = _features(scale=0.01)
    large = _features(scale=1000.0)
    shift = 5e-3
    # the same absolute shift is a mismatch on small outputs and noise on large ones
    assert metrics.compare(small, small + shift)["verdict"] == "mismatch"
    assert metrics.compare(large, large + shift)["verdict"] == "match"


def test_cosine_catches_spread_out_change_within_max_abs():
    ref = _features(scale=1.0)
    tolerances = metrics.Tolerances(atol=10.0)  # max_abs alone would accept anything
    flipped = -ref
    result = metrics.compare(ref, flipped, tolerances=tolerances)
    assert result["verdict"] == "mismatch"
    assert any(reason.startswith("cosine") for reason in result["reasons"])


def test_shape_mismatch_and_non_finite_are_mismatches():
    ref = _features()
    assert metrics.compare(ref, ref[:2])["verdict"] == "mismatch"
    bad = ref.copy()
    bad[0, 0, 0, 0] = np.nan
    result = metrics.compare(ref, bad)
    assert result["verdict"] == "mismatch" and "non-finite" in result["reasons"][0]


def test_top1_only_for_classification_like_outputs():
    assert metrics.is_classification_like(np.zeros((8, 10)))
    assert not metrics.is_classification_like(np.zeros((8, 1)))  # a single score: argmax is always 0
    assert not metrics.is_classification_like(np.zeros((8, 4, 4, 3)))
    assert not metrics.is_classification_like(np.zeros((10,)))
    probs = np.eye(5, dtype=np.float32)[[0, 1, 2, 3, 4, 0, 1, 2]]
    assert metrics.compare(probs, probs)["top1_agreement"] == 1.0
    assert metrics.compare(probs[:, :1], probs[:, :1])["top1_agreement"] is None


def test_clear_top1_flip_is_named_as_a_top1_failure():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.52, 0.48]], dtype=np.float32)
    flipped = probs.copy()
    flipped[2] = [0.48, 0.52]  # margin 0.04: far above float noise, so a real flip
    result = metrics.compare(probs, flipped, tolerances=metrics.Tolerances(min_cosine=0.0))
    assert result["top1_agreement"] == pytest.approx(2.0 / 3.0)
    assert result["verdict"] == "mismatch"
    assert any("top-1" in reason and "1 clear flips" in reason for reason in result["reasons"])


def test_near_tie_flip_is_reported_but_tolerated():
    probs = np.array([[0.5 + 1e-7, 0.5 - 1e-7], [0.1, 0.9]], dtype=np.float64)
    flipped = probs.copy()
    flipped[0] = [0.5 - 1e-7, 0.5 + 1e-7]
    result = metrics.compare(probs, flipped)
    assert result["top1_agreement"] == 0.5  # the raw fraction is honest
    assert result["verdict"] == "match"  # but a tie within float noise is not a regression


def test_compare_outputs_reports_worst_and_missing_outputs():
    ref = {"a": _features(0), "b": _features(1, shape=(4, 3))}
    new = {"a": ref["a"].copy(), "b": ref["b"] + 1.0}
    summary = metrics.compare_outputs(ref, new)
    assert summary["verdict"] == "mismatch"
    assert summary["max_abs"] == pytest.approx(1.0)
    assert [item["verdict"] for item in summary["per_output"]] == ["match", "mismatch"]
    missing = metrics.compare_outputs(ref, {"a": ref["a"]})
    assert missing["verdict"] == "mismatch"
    assert missing["per_output"][1]["reasons"] == ["missing in candidate"]
    assert metrics.compare_outputs(ref, dict(ref))["verdict"] == "match"


def test_compare_quantized_in_lsbs_and_sqnr():
    rng = np.random.RandomState(0)
    reference = rng.uniform(-1, 1, size=(16, 10)).astype(np.float32)
    scale = 2.0 / 255
    dequantized = np.round(reference / scale) * scale  # a perfect int8 round trip
    result = metrics.compare_quantized(reference, dequantized, scale)
    assert result["max_abs_lsb"] <= 0.5 + 1e-6
    assert result["sqnr_db"] > 40  # ~6 dB per bit, uniform full-range signal
    assert result["top1_agreement"] is not None
    worse = metrics.compare_quantized(reference, dequantized + 3 * scale, scale)
    assert worse["max_abs_lsb"] == pytest.approx(3.5, abs=0.05)
    assert worse["sqnr_db"] < result["sqnr_db"]
    exact = metrics.compare_quantized(reference, reference, scale)
    assert exact["max_abs_lsb"] == 0.0 and math.isinf(exact["sqnr_db"])
    with pytest.raises(ValueError):
        metrics.compare_quantized(reference, reference[:2], scale)
    with pytest.raises(ValueError):
        metrics.compare_quantized(reference, reference, 0.0)


def test_saturated_softmax_probe_is_flagged_but_not_failed():
    saturated = np.array([[1.0 - 1e-9, 1e-9], [1e-12, 1.0 - 1e-12]])
    result = metrics.compare(saturated, saturated)
    assert result["verdict"] == "match" and result["warnings"]
    assert metrics.compare_outputs({"p": saturated}, {"p": saturated})["warnings"]
    informative = np.array([[0.7, 0.3], [0.4, 0.6]])
    assert "warnings" not in metrics.compare(informative, informative)
    logits = np.array([[30.0, -30.0], [-30.0, 30.0]])  # not probabilities: nothing to say
    assert "warnings" not in metrics.compare(logits, logits)


def _skewed_probe(rng, samples=50, minority=2):
    """Softmax outputs of a 2-class model on a probe that is 96 % one class (FACTS.md, 2026-12-07)."""
    logits = np.stack([rng.normal(3.0, 0.6, samples), rng.normal(0.0, 0.6, samples)], axis=1)
    logits[:minority] = logits[:minority, ::-1]
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def test_a_constant_output_fails_centered_figures_that_raw_ones_pass():
    rng = np.random.RandomState(1)
    reference = _skewed_probe(rng)
    scale = 1.0 / 256
    good = np.round((reference + rng.normal(0, 0.01, reference.shape)) / scale) * scale
    constant = np.repeat(np.round(reference.mean(axis=0) / scale)[None] * scale, len(reference), axis=0)
    flattened = reference.mean(axis=0) + 0.2 * (good - reference.mean(axis=0))
    g = metrics.compare_quantized(reference, good, scale)
    c = metrics.compare_quantized(reference, constant, scale)
    f = metrics.compare_quantized(reference, flattened, scale)
    # the raw figures cannot tell the constant from a good model on this probe ...
    assert c["sqnr_db"] > 10 and c["cosine"] > 0.95 and c["top1_agreement"] >= 0.95
    # ... the centered ones can: the best constant scores 0 dB and r = 0, a good model far more
    assert c["centered_judged"] and g["centered_judged"]
    assert c["sqnr_centered_db"] <= 0.01 and c["correlation"] == 0.0
    assert g["sqnr_centered_db"] > 10 and g["correlation"] > 0.95
    # a flattened output keeps some centered SQNR but its error shows; it cannot beat the good one
    assert f["sqnr_centered_db"] < g["sqnr_centered_db"]


def test_centered_figures_not_judged_below_the_output_step():
    reference = np.full((20, 3), 0.33) + np.random.RandomState(2).normal(0, 1e-4, (20, 3))
    result = metrics.fidelity(reference, reference + 1e-5, scale=1.0 / 256)
    assert result["spread_lsb"] < metrics.MIN_SPREAD_LSB and not result["centered_judged"]
    exact = metrics.fidelity(reference, reference, scale=1.0 / 256)
    assert math.isinf(exact["sqnr_centered_db"]) and exact["correlation"] == pytest.approx(1.0)
    assert metrics.fidelity(reference[:1], reference[:1])["centered_judged"] is False
