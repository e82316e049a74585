"""How the search's candidates are scored and one is chosen: the figures, the rule, the sequential stop.

For whom: ``converters.tf2.recovery.search`` (which builds the candidates and calls these), the benchmark's
forced choice (``bench/forced_tf2.py`` replaces ``choose``) and the tests; ``tf2`` environment (numpy).
docs/recovery.md says the rule in words; ``choose``'s docstring says it exactly.
"""

import numpy as np

MARGIN_DB = 0.2
BOOTSTRAP = 500
CORRELATION_SLACK = 0.02  # a candidate's worst correlation may not fall below plain's by more
GROUP_SLACK_DB = 0.5  # ... nor its gain on any predicted class fall below -0.5 dB (rounding noise between files)
MIN_GROUP = 8  # samples a predicted class needs before its gain is judged
MIN_STOP_SAMPLES = 30  # the first fold's samples the sequential rule needs to stop a candidate (``hopeless``)


def parts(name):
    return [] if name == "plain" else name.split("+")


def score(outputs, references, scales):
    """The figures of one candidate on the samples that judge it, worst over outputs (as the probe's verdict):
    {sqnr_db, sqnr_centered_db, correlation, cosine, top1_agreement, max_abs_lsb, score_db, verdict_reasons},
    and ``noise``: each sample's squared error, per output divided by that output's variation over the
    samples (so outputs weigh alike), summed over outputs (``choose``'s paired bootstrap; not written to the
    report). ``score_db``, what candidates are ranked by: each output's centered SQNR where its variation
    is resolvable (``metrics.fidelity``), else its raw SQNR; the worst output's."""
    from converters.shared import metrics
    from converters.tf2 import tflite_run

    noise = noise_on(sample_errors(outputs, references), references, np.arange(len(references[0])))
    per_output = []
    for output, reference, scale in zip(outputs, references, scales):
        reference = np.asarray(reference, np.float64)
        output = output.reshape(reference.shape).astype(np.float64)
        measured = metrics.compare_quantized(reference, output, scale or 1.0)
        measured["top1_decisive"] = tflite_run.decisive_top1(reference, output, scale)[0]
        measured["reasons"] = tflite_run.verdict_reasons(measured)
        measured["score_db"] = measured["sqnr_centered_db"] if measured["centered_judged"] else measured["sqnr_db"]
        per_output.append(measured)
    top1 = [o["top1_agreement"] for o in per_output if o["top1_agreement"] is not None]
    centered = [o["sqnr_centered_db"] for o in per_output if o["sqnr_centered_db"] is not None]
    correlations = [o["correlation"] for o in per_output if o["correlation"] is not None]
    return {"sqnr_db": db(min(o["sqnr_db"] for o in per_output)),
            "sqnr_centered_db": db(min(centered)) if centered else None,
            "correlation": round(min(correlations), 4) if correlations else None,
            "cosine": round(min(o["cosine"] for o in per_output), 5),
            "top1_agreement": round(min(top1), 4) if top1 else None,
            "max_abs_lsb": round(max(o["max_abs_lsb"] for o in per_output), 1),
            "score_db": db(min(o["score_db"] for o in per_output)),
            "verdict_reasons": [r for o in per_output for r in o["reasons"]], "noise": noise}


def db(value):
    """dB rounded for the report; +-inf kept as +-999 (JSON has no infinity; an exact output is rare)."""
    return round(max(-999.0, min(999.0, float(value))), 2)


def rounding_floor(references, scales):
    """The SQNR (dB) that rounding each output to its int8 step alone allows, worst output: signal power
    over scale^2 / 12 (the power of a uniform rounding error). None when an output has no step."""
    floors = []
    for reference, scale in zip(references, scales):
        if not scale:
            return None
        power = float(np.mean(np.asarray(reference, np.float64) ** 2))
        if power <= 0:
            return None
        floors.append(10.0 * np.log10(power / (scale ** 2 / 12.0)))
    return min(floors) if floors else None


def sample_errors(outputs, references):
    """(samples, outputs) array: each sample's mean squared error on each output (``score``'s noise before
    it is weighed by the outputs' variation)."""
    columns = []
    for output, reference in zip(outputs, references):
        reference = np.asarray(reference, np.float64)
        flat = (output.reshape(reference.shape).astype(np.float64) - reference).reshape(len(reference), -1)
        columns.append(np.mean(flat ** 2, axis=1))
    return np.stack(columns, axis=1)


def noise_on(errors, references, held):
    """``score``'s noise of the samples ``held``, from ``sample_errors``, each output weighed by its
    variation over those samples."""
    noise = np.zeros(len(held))
    for k, reference in enumerate(references):
        part = np.asarray(reference, np.float64)[held]
        variation = float(np.mean((part - part.mean(axis=0)) ** 2)) or float(np.mean(part ** 2)) or 1.0
        noise += errors[held, k] / variation
    return noise


def hopeless(name, judged, references):
    """The sequential rule: ``stop(held, outputs)`` for ``_out_of_fold``. After the first fold, candidate
    ``name`` is judged no further when, against plain or against a judged candidate whose rewrites are a
    strict part of its own (``judged``: {name: sample_errors}), the upper end of its 90 % paired-bootstrap
    gain on that fold is below ``MARGIN_DB``: it cannot be preferred to that candidate (``choose`` prefers
    the candidate with fewer rewrites within ``MARGIN_DB``), so its other folds would be built for nothing.
    Only a fold of at least ``MIN_STOP_SAMPLES`` samples, on which the two differ, can stop it: fewer, or
    outputs equal on every one of them (saturated), say too little about the other folds."""
    own = set(parts(name))

    def stop(held, outputs):
        if len(held) < MIN_STOP_SAMPLES:
            return None
        mine = noise_on(sample_errors(outputs, references), references, held)
        for parent, parent_errors in judged.items():
            if not set(parts(parent)) < own:
                continue
            theirs = noise_on(parent_errors, references, held)
            if np.array_equal(theirs, mine):  # the same outputs on this fold (e.g. saturated): no evidence
                continue
            low, high = gain_interval(theirs, mine)
            if high < MARGIN_DB:
                return ("stopped after the first fold: its gain over %s there is %+.2f to %+.2f dB (90 %% bootstrap "
                        "interval on %d samples), below the %.1f dB it needs to be preferred to it" % (
                            parent, low, high, len(held), MARGIN_DB))
        return None
    return stop


def gain_interval(plain_noise, noise, resamples=BOOTSTRAP, seed=0):
    """The 90 % paired-bootstrap interval of a candidate's noise reduction against plain, in dB
    (10 log10(plain noise / candidate noise) over resampled samples)."""
    rng = np.random.RandomState(seed)
    count = len(noise)
    picks = rng.randint(0, count, size=(resamples, count))
    ours = np.maximum(noise[picks].sum(axis=1), 1e-30)
    theirs = np.maximum(plain_noise[picks].sum(axis=1), 1e-30)
    gains = 10.0 * np.log10(theirs / ours)
    return float(np.percentile(gains, 5)), float(np.percentile(gains, 95))


def samples_for_gain(count, interval, gain_db=1.0):
    """How many samples the bootstrap rule needs to see a gain of ``gain_db`` as holding, estimated from
    the interval ``count`` samples gave: its half-width shrinks as 1 / sqrt(samples), and a gain holds
    when the lower end is above 0, i.e. when the half-width is below the gain."""
    half = (interval[1] - interval[0]) / 2.0
    if half <= 0:
        return 1
    return int(np.ceil(count * (half / gain_db) ** 2))


def predicted_classes(references):
    """The class the float model predicts for each sample, from its first classification-like output
    ((samples, classes), classes >= 2), or None (no such output: no per-class rule)."""
    for reference in references or []:
        reference = np.asarray(reference)
        if reference.ndim == 2 and reference.shape[1] >= 2:
            return np.argmax(reference, axis=1)
    return None


def group_gains(plain_noise, noise, groups):
    """{group: gain in dB against plain} over the samples of each group (``groups``: one label per sample,
    the class the float model predicts) that has at least ``MIN_GROUP`` samples."""
    gains = {}
    for label in sorted(set(int(g) for g in groups)):
        members = np.asarray(groups) == label
        if members.sum() < MIN_GROUP:
            continue
        ours = max(float(noise[members].sum()), 1e-30)
        theirs = max(float(plain_noise[members].sum()), 1e-30)
        gains[label] = round(10.0 * np.log10(theirs / ours), 2)
    return gains


def choose(candidates, groups=None):
    """(name, why) from scored candidates (see the module docstring). A candidate other than plain must:
    beat it by ``MARGIN_DB`` on ``score_db``; hold that gain over the samples as a whole, not on a few (the
    5th percentile of its paired-bootstrap gain, ``gain_interval``, above 0 dB); not lose more than
    ``GROUP_SLACK_DB`` against plain on any class the float model predicts (``groups``, classification-like
    outputs: a probe or a deployment dominated by one class must not get a file that is worse on that class,
    whatever it gains on the others); keep its worst correlation with the float outputs within
    ``CORRELATION_SLACK`` of plain's (a flattened output must lose); and not fail a check of the int8 verdict
    that plain passes."""
    candidates = [c for c in candidates if not c.get("stopped_early")]  # the sequential rule's: out of the running
    plain = next(c for c in candidates if c["name"] == "plain")
    eligible = []
    refused = {}
    for candidate in candidates:
        if candidate["name"] == "plain":
            continue
        losing = {}
        if "noise" in candidate:
            low, high = gain_interval(plain["noise"], candidate["noise"])
            candidate["gain_db_90"] = [round(low, 2), round(high, 2)]
            candidate["samples_for_1db"] = samples_for_gain(len(candidate["noise"]), (low, high))
            if groups is not None:
                candidate["class_gains_db"] = gains = group_gains(plain["noise"], candidate["noise"], groups)
                losing = dict((k, v) for k, v in gains.items() if v < -GROUP_SLACK_DB)
        else:
            low = 0.0
        if candidate["score_db"] < plain["score_db"] + MARGIN_DB:
            continue
        if losing:
            refused[candidate["name"]] = "it is worse than plain on the samples of predicted class %s (%s dB)" % (
                ", ".join(str(k) for k in losing), ", ".join("%+.2f" % v for v in losing.values()))
        elif low <= 0:
            refused[candidate["name"]] = "the gain does not hold across the samples (90 %% bootstrap interval " \
                                         "%s dB)" % candidate.get("gain_db_90")
        elif candidate.get("correlation") is not None and plain.get("correlation") is not None and \
                candidate["correlation"] < plain["correlation"] - CORRELATION_SLACK:
            refused[candidate["name"]] = "its correlation with the float outputs (%.3f) is below plain's (%.3f)" % (
                candidate["correlation"], plain["correlation"])
        elif candidate.get("verdict_reasons") and not plain.get("verdict_reasons"):
            refused[candidate["name"]] = "it fails the int8 verdict that plain passes (%s)" % (
                "; ".join(candidate["verdict_reasons"][:2]))
        else:
            eligible.append(candidate)
    best = max(candidates, key=lambda c: c["score_db"])
    if not eligible:
        if best["name"] == "plain" or best["score_db"] < plain["score_db"] + MARGIN_DB:
            return "plain", ("no candidate beat plain by %.1f dB (best: %s, %.2f dB vs %.2f dB, centered SQNR on "
                             "the calibration samples held out by cross-fitting)" % (
                                 MARGIN_DB, best["name"], best["score_db"], plain["score_db"]))
        return "plain", ("%s scored %.2f dB against plain's %.2f dB, but %s: plain kept" % (
            best["name"], best["score_db"], plain["score_db"], refused.get(best["name"], "it was refused")))
    best = max(eligible, key=lambda c: c["score_db"])
    close = [c for c in eligible if c["score_db"] >= best["score_db"] - MARGIN_DB]
    pick = min(close, key=lambda c: (len(parts(c["name"])), -c["score_db"]))
    why = "centered SQNR %.2f dB on the held-out calibration samples against plain's %.2f dB (+%.2f dB, 90 %% " \
          "bootstrap interval %+.2f to %+.2f dB), correlation %s against %s" % (
              pick["score_db"], plain["score_db"], pick["score_db"] - plain["score_db"],
              pick["gain_db_90"][0], pick["gain_db_90"][1], pick.get("correlation"), plain.get("correlation"))
    if pick["name"] != best["name"]:
        why += "; %s scored %.2f dB, within %.1f dB, with more rewrites" % (best["name"], best["score_db"], MARGIN_DB)
    return pick["name"], why
