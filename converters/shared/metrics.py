"""The one comparison helper for model outputs: float parity across TF versions, and int8 error.

For whom: the parity matrix (``converters.shared.parity``), the first-divergent-layer search, the tests, and the
int8 checks of the conversion step (``compare_quantized``). numpy only, Python 3.7 compatible.

Float parity (``compare``), per output:

- ``max_abs``  = max |ref - new|
- ``max_rel``  = max |ref - new| / max(|ref|, floor), floor = ``rel_floor`` * max|ref| (so elements near
  zero, where relative error means nothing, do not dominate)
- ``cosine``   of the flattened arrays (1.0 when both are all zero)
- ``top1_agreement``: fraction of samples whose argmax agrees; only for classification-like outputs
  (2-D ``(batch, classes)`` with more than one class), else ``None``.

Verdict "match" needs all of:

- ``max_abs <= atol + rtol * max|ref|``  with ``atol = 1e-4``, ``rtol = 1e-3``. Why: the same float32
  model in TF 1.13 and 1.15 already differs (3e-8 on a small CNN, measured) because
  kernels reassociate sums differently; over tens of layers that error grows to ~1e-5 of the output
  magnitude. 1e-3 of the magnitude leaves two orders of margin for that, while a real change (a layer
  behaving differently, a wrong weight, a changed default such as BN epsilon) moves outputs by far more.
  ``atol`` only matters for outputs that are all near zero.
- ``cosine >= 0.9999``: a scale-free check that catches changes spread thinly over many elements.
- top-1 agreement of 100 %, except on near-ties: a sample whose reference top-2 margin is below the
  ``max_abs`` allowance can legitimately flip, so it is not counted as a disagreement (it is still
  reported in ``top1_agreement``, which is the raw fraction).
- same shape; non-finite values anywhere (in either array) are a mismatch.

A classification output whose every probe sample is a saturated softmax (top probability > 1 - 1e-6)
gets a warning: random probes in [0, 255] often saturate small classifiers, and then a real upstream
change can stay below float noise at the output. The verdict is unchanged; the report shows the warning.

Int8 (``compare_quantized``): error in units of the output's quantization step (LSBs) and the SQNR in dB,
so that int8 tolerances are stated in LSBs, not absolute floats. Raw SQNR and cosine measure the error
against the output's whole power, which a skewed probe (97 % one class: every sample's output nearly the
same vector) makes large: a CONSTANT int8 output then scores like a good one (FACTS.md, 2026-12-07: 15.3 dB,
cosine 0.986). So beside them (``fidelity``), measured against the outputs' variation across the probe:

- ``sqnr_centered_db`` = 10 log10(sum((ref - mean_ref)^2) / sum((int8 - ref)^2)), ``mean_ref`` each output
  element's mean over the probe samples: 0 dB is what the best constant (the mean) scores, any other
  constant less; it is the error in units of the signal the model carries from sample to sample.
- ``correlation``: Pearson's r between ``ref - mean_ref`` and ``int8 - mean_int8`` over every element
  (0 for a constant int8 output): does the int8 output move with the float one, whatever its scale (a
  flattened output, shrunk towards the mean, keeps some SQNR but loses correlation).
- ``spread_lsb``: the reference's RMS variation across the probe, in output LSBs. Below
  ``MIN_SPREAD_LSB`` (2 LSB: a healthy int8 output's own rounding error is 0.3-1 LSB) the variation is
  too small for an int8 output to resolve, and the two figures are reported but not judged
  (``centered_judged`` False): an untrained classifier, or a probe of identical samples.
"""

import math

import numpy as np

ATOL = 1e-4
RTOL = 1e-3
MIN_COSINE = 0.9999
MIN_TOP1 = 1.0
REL_FLOOR = 1e-3
SATURATION = 1e-6
MIN_SPREAD_LSB = 2.0


class Tolerances(object):
    """The thresholds of a "match" verdict (defaults justified in the module docstring)."""

    def __init__(self, atol=ATOL, rtol=RTOL, min_cosine=MIN_COSINE, min_top1=MIN_TOP1, rel_floor=REL_FLOOR):
        self.atol = float(atol)
        self.rtol = float(rtol)
        self.min_cosine = float(min_cosine)
        self.min_top1 = float(min_top1)
        self.rel_floor = float(rel_floor)

    def to_dict(self):
        return {"atol": self.atol, "rtol": self.rtol, "min_cosine": self.min_cosine,
                "min_top1": self.min_top1, "rel_floor": self.rel_floor}


DEFAULT = Tolerances()


def is_classification_like(array):
    """True for ``(batch, classes)`` outputs with more than one class (where argmax means something)."""
    return array.ndim == 2 and array.shape[1] > 1


def cosine_similarity(a, b):
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0.0 and nb == 0.0:
        return 1.0
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


def compare(reference, candidate, name="output", tolerances=DEFAULT):
    """Compare one output array with its reference; return a JSON-able dict with a ``verdict``.

    ``verdict`` is "match" or "mismatch"; ``reasons`` lists every failed criterion with the numbers, so
    the message says *which* check failed (shape, non-finite, max_abs, cosine, top-1).
    """
    ref = np.asarray(reference)
    new = np.asarray(candidate)
    result = {"name": name, "shape": list(ref.shape), "candidate_shape": list(new.shape),
              "max_abs": None, "max_rel": None, "cosine": None, "top1_agreement": None,
              "allowed_abs": None, "reasons": []}
    if ref.shape != new.shape:
        result["reasons"].append("shape %s != reference %s" % (tuple(new.shape), tuple(ref.shape)))
        result["verdict"] = "mismatch"
        return result
    ref64 = ref.astype(np.float64)
    new64 = new.astype(np.float64)
    finite = bool(np.all(np.isfinite(ref64)) and np.all(np.isfinite(new64)))
    if not finite:
        result["reasons"].append("non-finite values (reference %d, candidate %d)"
                                 % (int(np.sum(~np.isfinite(ref64))), int(np.sum(~np.isfinite(new64)))))
        result["verdict"] = "mismatch"
        return result
    if ref.size == 0:
        result.update(max_abs=0.0, max_rel=0.0, cosine=1.0, allowed_abs=tolerances.atol, verdict="match")
        return result
    diff = np.abs(ref64 - new64)
    magnitude = float(np.max(np.abs(ref64)))
    floor = max(tolerances.rel_floor * magnitude, np.finfo(np.float32).tiny)
    allowed = tolerances.atol + tolerances.rtol * magnitude
    result["max_abs"] = float(np.max(diff))
    result["max_rel"] = float(np.max(diff / np.maximum(np.abs(ref64), floor)))
    result["cosine"] = cosine_similarity(ref64, new64)
    result["allowed_abs"] = allowed
    result["reference_max_abs"] = magnitude
    if result["max_abs"] > allowed:
        result["reasons"].append("max_abs %.3g > %.3g (atol %g + rtol %g * max|ref| %.3g)"
                                 % (result["max_abs"], allowed, tolerances.atol, tolerances.rtol, magnitude))
    if result["cosine"] < tolerances.min_cosine:
        result["reasons"].append("cosine %.6f < %.6f" % (result["cosine"], tolerances.min_cosine))
    if is_classification_like(ref64) and ref.shape[0] > 0:
        ref_top = np.argmax(ref64, axis=1)
        new_top = np.argmax(new64, axis=1)
        agree = ref_top == new_top
        result["top1_agreement"] = float(np.mean(agree))
        # a flip is only a disagreement when the reference was not a near-tie
        ordered = np.sort(ref64, axis=1)
        margin = ordered[:, -1] - ordered[:, -2]
        real_flips = (~agree) & (margin > 2.0 * allowed)
        effective = 1.0 - float(np.mean(real_flips))
        result["top1_effective"] = effective
        if effective < tolerances.min_top1:
            result["reasons"].append("top-1 agreement %.1f %% (%d clear flips) < %.1f %%"
                                     % (100.0 * effective, int(np.sum(real_flips)), 100.0 * tolerances.min_top1))
        if saturated(ref64):
            result["warnings"] = ["every probe sample is saturated (top probability > %g): upstream differences "
                                  "may not reach this output; probe with --input-range or --calib data "
                                  "closer to real inputs" % (1.0 - SATURATION)]
    result["verdict"] = "mismatch" if result["reasons"] else "match"
    return result


def saturated(probabilities):
    """True when every row looks like a probability vector with one class at ~1 (a saturated softmax):
    parity on such an output says little, because small logit differences vanish in it."""
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] == 0 or np.min(p) < 0.0 or np.max(p) > 1.0 + 1e-6:
        return False
    if not np.allclose(np.sum(p, axis=1), 1.0, atol=1e-3):
        return False
    return bool(np.all(np.max(p, axis=1) > 1.0 - SATURATION))


def compare_outputs(references, candidates, tolerances=DEFAULT):
    """Compare dicts of named outputs; return ``{verdict, max_abs, max_rel, cosine, top1_agreement,
    per_output}`` where the summary numbers are the worst over outputs (``None`` where not applicable).

    An output missing from ``candidates`` (or extra in it) is a mismatch with a reason.
    """
    per_output = []
    for name in references:
        if name not in candidates:
            per_output.append({"name": name, "verdict": "mismatch", "reasons": ["missing in candidate"],
                               "max_abs": None, "max_rel": None, "cosine": None, "top1_agreement": None})
            continue
        per_output.append(compare(references[name], candidates[name], name=name, tolerances=tolerances))
    for name in candidates:
        if name not in references:
            per_output.append({"name": name, "verdict": "mismatch", "reasons": ["not in the reference"],
                               "max_abs": None, "max_rel": None, "cosine": None, "top1_agreement": None})
    return summarize(per_output, tolerances)


def summarize(per_output, tolerances=DEFAULT):
    def worst(key, pick):
        values = [item[key] for item in per_output if item.get(key) is not None]
        return pick(values) if values else None

    return {
        "verdict": "match" if per_output and all(item["verdict"] == "match" for item in per_output) else "mismatch",
        "max_abs": worst("max_abs", max),
        "max_rel": worst("max_rel", max),
        "cosine": worst("cosine", min),
        "top1_agreement": worst("top1_agreement", min),
        "warnings": [warning for item in per_output for warning in item.get("warnings", [])],
        "per_output": per_output,
        "tolerances": tolerances.to_dict(),
    }


def decibels(signal, noise):
    """10 log10(signal / noise): ``inf`` for no noise, ``-inf`` for noise and no signal."""
    if noise == 0.0:
        return float("inf")
    if signal == 0.0:
        return float("-inf")
    return 10.0 * math.log10(signal / noise)


def compare_quantized(reference, dequantized, scale):
    """Error of an int8 model's dequantized output against the float reference, in quantization steps.

    For the conversion step: ``scale`` is the output tensor's quantization scale (float per tensor, or an
    array broadcastable along the last axis for per-channel). Returns ``max_abs``, ``max_abs_lsb``
    (max |Δ| / scale: 0.5 is the rounding floor of a perfect int8 model), ``mean_abs_lsb``, ``rmse_lsb``,
    ``sqnr_db`` (10 log10(signal power / noise power); ``inf`` when exact), ``cosine`` and, for
    classification-like outputs, ``top1_agreement``. Raises ``ValueError`` on shape mismatch or a
    non-positive scale.
    """
    ref = np.asarray(reference, dtype=np.float64)
    deq = np.asarray(dequantized, dtype=np.float64)
    if ref.shape != deq.shape:
        raise ValueError("shape %s != reference %s" % (deq.shape, ref.shape))
    scale = np.asarray(scale, dtype=np.float64)
    if np.any(scale <= 0):
        raise ValueError("quantization scale must be positive, got %r" % (scale,))
    noise = ref - deq
    lsb = np.abs(noise) / scale
    signal_power = float(np.mean(ref ** 2)) if ref.size else 0.0
    noise_power = float(np.mean(noise ** 2)) if ref.size else 0.0
    sqnr = decibels(signal_power, noise_power)
    result = {
        "max_abs": float(np.max(np.abs(noise))) if ref.size else 0.0,
        "max_abs_lsb": float(np.max(lsb)) if ref.size else 0.0,
        "mean_abs_lsb": float(np.mean(lsb)) if ref.size else 0.0,
        "rmse_lsb": float(np.sqrt(np.mean(lsb ** 2))) if ref.size else 0.0,
        "sqnr_db": sqnr,
        "cosine": cosine_similarity(ref, deq),
        "top1_agreement": None,
    }
    if is_classification_like(ref):
        result["top1_agreement"] = float(np.mean(np.argmax(ref, axis=1) == np.argmax(deq, axis=1)))
    result.update(fidelity(ref, deq, scale))
    return result


def fidelity(reference, dequantized, scale=None):
    """The figures a constant output cannot pass (module docstring): {sqnr_centered_db, correlation,
    spread_lsb, centered_judged}. ``reference``/``dequantized``: (samples, ...) arrays of one output;
    ``scale``: its quantization step (None: ``spread_lsb`` None and the figures judged whenever the
    reference varies at all). ``sqnr_centered_db`` is ``inf`` for an exact output, ``-inf`` when the
    reference does not vary but the output is off."""
    ref = np.asarray(reference, dtype=np.float64)
    deq = np.asarray(dequantized, dtype=np.float64)
    if ref.ndim == 0 or len(ref) < 2:
        return {"sqnr_centered_db": None, "correlation": None, "spread_lsb": None, "centered_judged": False}
    ref = ref.reshape(len(ref), -1)
    deq = deq.reshape(len(deq), -1)
    centered_ref = ref - ref.mean(axis=0)
    centered_deq = deq - deq.mean(axis=0)
    variation = float(np.sum(centered_ref ** 2))
    noise = float(np.sum((deq - ref) ** 2))
    sqnr = decibels(variation, noise)
    norms = math.sqrt(variation) * math.sqrt(float(np.sum(centered_deq ** 2)))
    correlation = float(np.sum(centered_ref * centered_deq) / norms) if norms > 0 else 0.0
    rms = math.sqrt(variation / centered_ref.size)
    step = None if scale is None else float(np.max(np.asarray(scale, dtype=np.float64)))
    spread = None if not step else rms / step
    judged = rms > 0 if spread is None else spread >= MIN_SPREAD_LSB
    return {"sqnr_centered_db": sqnr, "correlation": max(-1.0, min(1.0, correlation)),
            "spread_lsb": spread, "centered_judged": bool(judged)}
