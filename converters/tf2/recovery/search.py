"""The candidates of the int8 model, each scored on a validation split of the calibration data; the best
one is written.

For whom: the calibration hook (``converters.tf2.calibrate.ShardedCalibration``), which calls
``search`` in place of TensorFlow's calibrate + quantize; ``tf2`` environment only. README's "Int8
accuracy recovery" says what a user sees; this module's functions say how.

How: the calibration samples are split (one fixed cut: the last ``validation_count`` samples score, the
others calibrate and measure); the float model is calibrated once (TFLite's own min/max, the ``plain``
candidate's ranges) and observed once per channel (``statistics``). Each candidate is a combination of
rewrites, none of which changes an op, a tensor, a type or the int8 I/O:

- ``cle`` (``equalize``): cross-layer equalization of the float weights, ranges rescaled accordingly;
- ``bias`` (``bias``): the int8 layers' expected weight error removed from their int32 biases;
- ``mse`` / ``percentile`` (``ranges``): activation ranges chosen instead of min/max;
- ``gptq`` (``rounding``): each int8 weight rounded down or up to minimise its layer's output error;
- ``ebias`` (``empirical``): the int8 model's own mean error removed from each layer's bias, layer by layer.

Every candidate is quantized by TensorFlow's own ``mlir_quantize`` (one call per distinct calibrated
model: bias correction edits the int8 file afterwards) and run on the validation samples against the
float model. The score is the worst output's SQNR; a candidate other than ``plain`` wins only when it
beats ``plain`` by ``MARGIN_DB``, and among candidates within ``MARGIN_DB`` of the best the one with
fewer rewrites wins. The probe and ``--eval`` never take part: they judge the winner afterwards.
"""

import time

import numpy as np

from converters.tf2.recovery import bias as bias_correction
from converters.tf2.recovery import equalize, ranges, statistics
from converters.tf2.recovery.graph import LINEAR_OPS, Graph, unshare

# auto: the candidates that paid for themselves in BENCHMARKS.md section 7; a range choice (mse, percentile)
# never beat min/max on held-out data there (ResNet50: 26.2 dB against 33.0; FACTS.md: two real models) and
# costs a quantization, so it is built only when asked for (--quantize cle+bias+mse, ...)
AUTO = ("plain", "bias", "cle", "cle+bias")
MARGIN_DB = 0.2
BOOTSTRAP = 500
FLOOR_MARGIN_DB = 1.0
MIN_VALIDATION = 8
MAX_VALIDATION = 50
LAYER_SAMPLES = 3


def parse(spec):
    """``--quantize`` -> the candidates to build: "auto" -> AUTO, "plain" -> ("plain",), "bias+cle" ->
    ("plain", "cle+bias"), "bias,cle+bias+mse" -> ("plain", "bias", "cle+bias+mse") (plain is always built:
    it is the baseline every figure is compared with, and the file users compare). ValueError on a bad
    value (``converters.options.quantize_candidates``, the host's check, is the one rule)."""
    from converters import options

    names = options.quantize_candidates(spec)
    return AUTO if names is None else tuple(names)


def validation_count(samples):
    """How many of ``samples`` calibration samples score the candidates (0: too few to split)."""
    if samples < 3 * MIN_VALIDATION:
        return 0
    return int(min(MAX_VALIDATION, max(MIN_VALIDATION, samples // 5)))


def _parts(name):
    return [] if name == "plain" else name.split("+")


def score(outputs, references, scales):
    """{sqnr_db, cosine, top1_agreement, max_abs_lsb}: the worst over outputs (as the probe's verdict), and
    ``noise``: each sample's squared error summed over outputs (for ``choose``'s paired bootstrap; not
    written to the report)."""
    from converters.shared import metrics

    noise = np.zeros(len(references[0]))
    for output, reference in zip(outputs, references):
        difference = output.reshape(reference.shape).astype(np.float64) - reference
        noise += np.mean(difference.reshape(len(difference), -1) ** 2, axis=1)
    per_output = []
    for output, reference, scale in zip(outputs, references, scales):
        per_output.append(metrics.compare_quantized(reference, output.reshape(reference.shape), scale or 1.0))
    top1 = [o["top1_agreement"] for o in per_output if o["top1_agreement"] is not None]
    return {"sqnr_db": round(min(o["sqnr_db"] for o in per_output), 2),
            "cosine": round(min(o["cosine"] for o in per_output), 5),
            "top1_agreement": round(min(top1), 4) if top1 else None,
            "max_abs_lsb": round(max(o["max_abs_lsb"] for o in per_output), 1), "noise": noise}


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


def output_scales(model_content):
    """The quantization step of each output of an int8 model (the int8 tensor a float output reads)."""
    graph = Graph(bytearray(model_content))
    scales = []
    for t in graph.outputs:
        quant = graph.quantization(t)
        if quant is None and t in graph.producer and graph.producer[t].name == "DEQUANTIZE":
            quant = graph.quantization(graph.producer[t].inputs[0])
        scales.append(float(quant[0][0]) if quant is not None else None)
    return scales


def layer_errors(float_models, int8_models, samples):
    """Per linear layer, the accumulated error of each int8 model at that layer's output on ``samples``,
    against the float model it was quantized from (``float_models[label]``: equalization rescales
    channels): RMSE over the tensor's quantization step (LSB; ideal rounding ~0.29). Layers are matched
    by position (``graph.linear_pairs``). [{name, op, <label>: lsb}]."""
    from converters.tf2.recovery.graph import linear_pairs

    first = next(iter(float_models.values()))
    float_graph = Graph(bytearray(first))
    names = float_graph.tensor_names
    linear = [op for op in float_graph.ops if op.name in LINEAR_OPS]
    wanted = [op.outputs[0] for op in linear]
    rows = [{"name": names[t].split(";")[0], "op": op.name} for op, t in zip(linear, wanted)]
    computed = {}
    for label, content in int8_models.items():
        float_model = float_models[label]
        if float_model not in computed:
            computed[float_model] = statistics.run(float_model, samples, tensors=wanted)[1]
        float_values = computed[float_model]
        graph = Graph(bytearray(content))
        pairs = linear_pairs(float_graph, graph)
        if pairs is None:
            continue
        tensors = [q.outputs[0] for _, q in pairs]
        _, values = statistics.run(content, samples, tensors=tensors)
        for row, t, q in zip(rows, wanted, tensors):
            quant = graph.quantization(q)
            if quant is None:
                continue
            difference = np.concatenate(values[q]).astype(np.float64) - np.concatenate(float_values[t])
            row[label] = round(float(np.sqrt(np.mean(difference ** 2)) / quant[0][0]), 3)
    return rows


def wanted_statistics(float_graph, requested):
    """{tensor name: kinds} the requested candidates read (``statistics.TensorStats``): the input means of
    every linear op (bias correction), per-channel ranges of the tensors equalization rescales and of its
    ReLU6 outputs, and value samples of every activation when a range choice is requested."""
    parts = set(p for name in requested for p in _parts(name))
    names = float_graph.tensor_names
    wanted = {}

    def want(t, kind):
        wanted.setdefault(names[t], set()).add(kind)

    if "bias" in parts:
        for op in float_graph.ops:
            if op.name in LINEAR_OPS and op.inputs and op.inputs[0] >= 0:
                want(op.inputs[0], "mean")
    if "cle" in parts:
        for pair in equalize.find_pairs(float_graph):
            for t in pair["rescaled"] + pair["relu6"]:
                want(t, "range")
    if parts & set(ranges.METHODS):
        for t in float_graph.activation_tensors():
            want(t, "values")
    return wanted


def search(float_model, samples, requested, calibrate, quantize, log=None, calibration_model=None):
    """Build, score and choose (see the module docstring). ``float_model``: the converter's float model
    (bytes); ``samples``: every calibration sample, each a list of arrays (one per model input);
    ``requested``: the candidate names (``parse``); ``calibrate(samples, collector) -> calibrated bytes``
    and ``quantize(calibrated bytes) -> int8 bytes`` are the hook's own calls; ``calibration_model``: the
    model ``calibrate`` runs (the float model with TFLite's intermediate tensors), whose tensor names the
    statistics gathered during calibration carry.

    Returns (chosen int8 bytes, the chosen candidate's calibrated model, plain int8 bytes, section,
    extras). section: report.json's ``quantization``; extras: {cle_float_model?, bias_float_model?}."""
    log = log or (lambda message: None)
    started = time.perf_counter()
    validation = validation_count(len(samples))
    train = samples[:len(samples) - validation] if validation else samples
    held = samples[len(samples) - validation:] if validation else samples
    section = {"requested": list(requested), "calibration_samples": len(train),
               "validation": {"samples": len(held),
                              "split": ("the last %d of the %d calibration samples (not calibrated on)"
                                        % (validation, len(samples))) if validation else
                              ("too few calibration samples to hold some out (fewer than %d): candidates "
                               "are scored on the samples they were calibrated on" % (3 * MIN_VALIDATION))}}
    timings = {}
    t0 = time.perf_counter()
    float_graph = Graph(bytearray(float_model))
    wanted = wanted_statistics(float_graph, requested)
    collector = statistics.Collector(Graph(bytearray(calibration_model or float_model)).tensor_names, len(train),
                                     wanted)
    calibrated = calibrate(train, collector)
    timings["calibrate"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    if collector.complete():  # gathered by the calibration's own pass over the samples
        stats = collector.stats
        section["statistics"] = "gathered during calibration (the interpreter's pass)"
    else:
        stats = statistics.collect(float_model, train, wanted)
        section["statistics"] = "a pass of their own (the calibration took TFLite's calibrator)"
    timings["statistics"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    references, _ = statistics.run(float_model, held)
    timings["float_reference"] = round(time.perf_counter() - t0, 2)
    log("quantization: %d candidates (%s), scored on %d held-out calibration samples"
        % (len(requested), ", ".join(requested), len(held)))

    pairs, totals, cle_details = equalize.plan(float_graph, stats)
    equalize.portable(pairs, float_graph)
    extras = {}
    if any("cle" in _parts(n) for n in requested):
        cle_float = bytearray(float_model)
        equalize.apply(Graph(cle_float), pairs, totals)
        extras["cle_float_model"] = bytes(cle_float)
        section["cle"] = dict(cle_details)
        section["cle"]["float_check"] = float_check = _float_distance(
            statistics.run(bytes(cle_float), held)[0], references)
        if float_check["verdict"] != "match":  # never an int8 model of another float function
            dropped = [n for n in requested if "cle" in _parts(n)]
            requested = tuple(n for n in requested if n not in dropped)
            section["cle"]["dropped"] = ("the equalized float model does not match the float model on the "
                                         "validation samples (%s): %s not built" % (
                                             float_check["reason"], ", ".join(dropped)))
    bases = {}
    built = {}
    plain_content = None
    for name in requested:
        parts = _parts(name)
        base_key = tuple(p for p in parts if p not in ("bias",) + LAYERWISE)
        t0 = time.perf_counter()
        if base_key not in bases:
            content = bytearray(calibrated)
            graph = Graph(content)
            factors = equalize.apply(graph, pairs, totals, stats) if "cle" in base_key else {}
            narrowed = None
            for method in ranges.METHODS:
                if method in base_key:
                    narrowed = ranges.narrow(graph, stats, method, factors, keep=graph.inputs)
            quantized = quantize(bytes(content))
            bases[base_key] = {"calibrated": bytes(content), "quantized": quantized, "factors": factors,
                               "graph": graph, "narrowed": narrowed,
                               "seconds": time.perf_counter() - t0}
        base = bases[base_key]
        content = base["quantized"]
        entry = {"name": name}
        if "gptq" in parts:
            content = _layerwise(base, "gptq", content, _reference(parts, extras, float_model), train, entry, log)
        if "bias" in parts:
            corrected = bytearray(unshare(content, bias_correction.bias_tensors(Graph(bytearray(content)))))
            errors = bias_correction.expected_errors(Graph(corrected), base["graph"], stats, base["factors"])
            entry["bias"] = bias_correction.correct(Graph(corrected), errors)
            entry["bias"]["layers"] = len(errors)
            content = bytes(corrected)
            base.setdefault("errors", errors)
        if "ebias" in parts:
            content = _layerwise(base, name, content, _reference(parts, extras, float_model), train, entry, log)
        if base["narrowed"] is not None:
            entry["ranges"] = base["narrowed"]
        t1 = time.perf_counter()
        outputs, _ = statistics.run(content, held)
        entry.update(score(outputs, references, output_scales(content)))
        entry["seconds"] = round(time.perf_counter() - t0, 2)
        entry["score_seconds"] = round(time.perf_counter() - t1, 2)
        built[name] = (content, base)
        extras.setdefault("candidates", {})[name] = content
        if name == "plain":
            plain_content = content
        log("quantization: %-22s SQNR %6.2f dB on validation (%.1f s)" % (name, entry["sqnr_db"], entry["seconds"]))
        section.setdefault("candidates", []).append(entry)
        if name == "plain" and tuple(requested) == AUTO:  # an explicit request builds what it names
            floor = rounding_floor(references, output_scales(content))
            section["rounding_floor_db"] = None if floor is None else round(floor, 2)
            if floor is not None and entry["sqnr_db"] >= floor - FLOOR_MARGIN_DB:
                section["stopped"] = ("plain is within %.1f dB of the int8 output's rounding floor (%.2f dB: the "
                                      "SQNR that rounding the output alone allows): nothing left to recover, "
                                      "no other candidate built" % (FLOOR_MARGIN_DB, floor))
                break

    chosen, why = choose(section["candidates"])
    if section.get("stopped"):
        why = section["stopped"]
    for entry in section["candidates"]:
        entry.pop("noise", None)
    content, base = built[chosen]
    section["chosen"] = chosen
    section["why"] = why
    plain_ops = Graph(bytearray(plain_content)).op_signature()
    section["same_ops_as_plain"] = all(Graph(bytearray(c)).op_signature() == plain_ops for c, _ in built.values())
    if "bias" in _parts(chosen) and base.get("errors"):
        moved = bytearray(extras.get("cle_float_model") if "cle" in _parts(chosen) else float_model)
        bias_correction.shift_float(Graph(moved), base["errors"])
        section["bias_float_moved"] = _float_distance(statistics.run(bytes(moved), held)[0], references)
    t0 = time.perf_counter()
    if chosen != "plain":  # plain chosen: nothing to compare (the per-layer debugger's plot shows its layers)
        try:
            models = {"plain": plain_content, chosen: content}
            floats = {"plain": float_model,
                      chosen: extras["cle_float_model"] if "cle" in _parts(chosen) else float_model}
            section["layers"] = layer_errors(floats, models, held[:LAYER_SAMPLES])
            section["layers_samples"] = min(LAYER_SAMPLES, len(held))
        except Exception as exc:  # noqa: BLE001 - a diagnostic: never the reason a conversion fails
            section["layers_error"] = "%s: %s" % (type(exc).__name__, str(exc)[:200])
    timings["layers"] = round(time.perf_counter() - t0, 2)
    timings["total"] = round(time.perf_counter() - started, 2)
    section["timings"] = timings
    calibrated_chosen = base["calibrated"]
    if "bias" in _parts(chosen) and base.get("errors"):
        # the per-layer debugger (converters.tf2.quant_debug) quantizes the calibrated model itself: give it
        # the corrected biases in float, which its quantization rounds to the chosen file's int32 biases
        shifted = bytearray(calibrated_chosen)
        bias_correction.shift_float(Graph(shifted), base["errors"])
        calibrated_chosen = bytes(shifted)
    return content, calibrated_chosen, plain_content, section, extras


LAYERWISE = ("gptq", "ebias")  # rewrites of the int8 file that run it (and the float model) layer by layer


def _layerwise(base, key, content, reference, train, entry, log):
    """Issue 30: the int8 ``content`` after learned rounding (``gptq``) or empirical bias correction
    (``ebias``, the last rewrite of a candidate), fitted on ``train`` against the float model it was
    quantized from (``reference``: the equalized one under ``cle``); remembered in ``base`` under ``key`` so that
    ``gptq`` and ``gptq+ebias`` round once. A model the rewrite does not handle keeps ``content`` (the
    entry says why)."""
    from converters.tf2.recovery import empirical, rounding

    part = "gptq" if key == "gptq" else "ebias"
    if key not in base:
        module = rounding if part == "gptq" else empirical
        try:
            base[key] = module.correct(content, reference, train, log=log)
        except Exception as exc:  # noqa: BLE001 - the candidate is then what came before this rewrite
            base[key] = (content, {"error": "%s: %s" % (type(exc).__name__, str(exc)[:200])})
    fitted, details = base[key]
    entry[part] = dict((k, v) for k, v in details.items() if k != "per_layer")
    return fitted


def _reference(parts, extras, float_model):
    return extras["cle_float_model"] if "cle" in parts else float_model


def gain_interval(plain_noise, noise, resamples=BOOTSTRAP, seed=0):
    """The 90 % paired-bootstrap interval of a candidate's noise reduction against plain, in dB
    (10 log10(plain noise / candidate noise) over resampled validation samples)."""
    rng = np.random.RandomState(seed)
    count = len(noise)
    picks = rng.randint(0, count, size=(resamples, count))
    ours = np.maximum(noise[picks].sum(axis=1), 1e-30)
    theirs = np.maximum(plain_noise[picks].sum(axis=1), 1e-30)
    gains = 10.0 * np.log10(theirs / ours)
    return float(np.percentile(gains, 5)), float(np.percentile(gains, 95))


def choose(candidates):
    """(name, why) from scored candidates (see the module docstring). A candidate other than plain must
    beat it by ``MARGIN_DB`` and its gain must hold on the validation samples as a whole, not on a few:
    the 5th percentile of its paired-bootstrap gain (``gain_interval``) must be above 0 dB."""
    plain = next(c for c in candidates if c["name"] == "plain")
    eligible = []
    for candidate in candidates:
        if candidate["name"] == "plain" or candidate["sqnr_db"] < plain["sqnr_db"] + MARGIN_DB:
            continue
        low, high = gain_interval(plain["noise"], candidate["noise"]) if "noise" in candidate else (0.0, 0.0)
        candidate["gain_db_90"] = [round(low, 2), round(high, 2)]
        if low > 0:
            eligible.append(candidate)
    best = max(candidates, key=lambda c: c["sqnr_db"])
    if not eligible:
        if best["name"] == "plain" or best["sqnr_db"] < plain["sqnr_db"] + MARGIN_DB:
            return "plain", ("no candidate beat plain by %.1f dB on the validation samples (best: %s, %.2f dB vs "
                             "%.2f dB)" % (MARGIN_DB, best["name"], best["sqnr_db"], plain["sqnr_db"]))
        return "plain", ("%s scored %.2f dB against plain's %.2f dB on the validation samples, but the gain does "
                         "not hold across them (90 %% bootstrap interval %s dB): plain kept" % (
                             best["name"], best["sqnr_db"], plain["sqnr_db"], best.get("gain_db_90")))
    best = max(eligible, key=lambda c: c["sqnr_db"])
    close = [c for c in eligible if c["sqnr_db"] >= best["sqnr_db"] - MARGIN_DB]
    pick = min(close, key=lambda c: (len(_parts(c["name"])), -c["sqnr_db"]))
    why = "SQNR %.2f dB on the validation samples against plain's %.2f dB (+%.2f dB, 90 %% bootstrap interval " \
          "%+.2f to %+.2f dB)" % (pick["sqnr_db"], plain["sqnr_db"], pick["sqnr_db"] - plain["sqnr_db"],
                                  pick["gain_db_90"][0], pick["gain_db_90"][1])
    if pick["name"] != best["name"]:
        why += "; %s scored %.2f dB, within %.1f dB, with more rewrites" % (best["name"], best["sqnr_db"], MARGIN_DB)
    return pick["name"], why


def _float_distance(outputs, references):
    """How far a transformed float model's outputs are from the float model's, with the float parity
    verdict (``converters.shared.metrics``' tolerances): {verdict, max_abs, max_rel, cosine, reason}."""
    from converters.shared import metrics

    names = ["output_%d" % k for k in range(len(references))]
    summary = metrics.compare_outputs(dict(zip(names, references)),
                                      dict((n, o.reshape(r.shape)) for n, o, r in zip(names, outputs, references)))
    reasons = [reason for item in summary["per_output"] for reason in item.get("reasons", [])]
    return {"verdict": summary["verdict"], "max_abs": float("%.3g" % (summary["max_abs"] or 0.0)),
            "max_rel": float("%.3g" % (summary["max_rel"] or 0.0)),
            "cosine": round(summary["cosine"], 7) if summary["cosine"] is not None else None,
            "reason": "; ".join(reasons[:2]) or "within the float tolerances"}
