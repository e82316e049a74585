"""The candidates of the int8 model, judged on every calibration sample by cross-fitting; the best one,
fitted on all of them, is written.

For whom: the calibration hook (``converters.tf2.calibrate.ShardedCalibration``), which calls
``search`` in place of TensorFlow's calibrate + quantize; ``tf2`` environment only. docs/recovery.md says
what a user sees; this module's functions say how.

How: the calibration samples are dealt into ``folds_for(count)`` folds (sample i to fold i mod K). Each
fold is calibrated on its own (TFLite's min/max) and observed per channel (``statistics``), once: all in
the calibration's one pass over the samples when its fast route runs (``calibrate_folds``, which also
gives the float outputs the candidates are scored against), else fold by fold; since
TFLite's calibrator records plain min/max, the calibration of "every fold but k" and of "all" is the
merge of the folds' (``tflite_model.merge_ranges``: byte for byte what one calibration over those
samples gives), and so are the statistics (``statistics.merge``). Each candidate is built K times, from
every fold but k, and run on fold k: every sample judges it once, on a model not fitted on it. Each
candidate is a combination of rewrites, none of which changes an op, a tensor, a type or the int8 I/O:

- ``cle`` (``equalize``): cross-layer equalization of the float weights, ranges rescaled accordingly;
- ``bias`` (``bias``): the int8 layers' expected weight error removed from their int32 biases;
- ``mse`` / ``percentile`` (``ranges``): activation ranges chosen instead of min/max;
- ``gptq`` (``rounding``): each int8 weight rounded down or up to minimise its layer's output error;
- ``ebias`` (``empirical``): the int8 model's own mean error removed from each layer's bias, layer by layer.

How the candidates are scored and one is chosen (the worst output's centered SQNR, the bootstrap rule, the
sequential rule that stops a candidate after its first fold when it cannot be preferred) is
``converters.tf2.recovery.choice``'s. The winner and plain (and every candidate for ``--eval``) are then fitted on all
samples. The probe and ``--eval`` never take part: they judge the winner afterwards.
"""

import time

import numpy as np

from converters.tf2.recovery import bias as bias_correction
from converters.tf2.recovery import choice, equalize, ranges, requantize, statistics
from converters.tf2.recovery.graph import LINEAR_OPS, Graph, unshare

# auto: the candidates that paid for themselves in BENCHMARKS.md section 7; a range choice (mse, percentile)
# never beat min/max on held-out data there (ResNet50: 26.2 dB against 33.0; FACTS.md: two real models) and
# costs a quantization, so it is built only when asked for (--quantize cle+bias+mse, ...)
AUTO = ("plain", "bias", "cle", "cle+bias")
# auto's second stage (issue 30): the layer-wise rewrites, on top of the first stage's winner's equalization
# (cle or not). They run the int8 and float models layer by layer on every fold, so their cost grows with the
# model's multiply-accumulates times the calibration samples: they are built when that product is at most
# ``LAYERWISE_MAX_GMAC_SAMPLES`` (a deterministic rule: the same model and data always build the same candidates,
# whatever the machine's load). MobileNetV1 at 224x224 (0.57 GMAC) with 100 samples is 57: built; ResNet50
# (3.9 GMAC) with 100 samples is 390: the report says how to ask for them (--quantize ebias,gptq+ebias)
AUTO_LAYERWISE = ("ebias", "gptq+ebias")
LAYERWISE_MAX_GMAC_SAMPLES = 80.0
FLOOR_MARGIN_DB = 1.0
FOLDS = 3
MIN_FOLD = 8  # samples per fold: fewer and a fold's min/max and scores say little
LAYER_SAMPLES = 3
DIAGNOSTIC_SAMPLES = 16  # calibration samples the float-side checks run on (cle's float deviation, bias's move)


def parse(spec):
    """``--quantize`` -> the candidates to build: "auto" -> AUTO, "plain" -> ("plain",), "bias+cle" ->
    ("plain", "cle+bias"), "bias,cle+bias+mse" -> ("plain", "bias", "cle+bias+mse") (plain is always built:
    it is the baseline every figure is compared with, and the file users compare). ValueError on a bad
    value (``converters.options.quantize_candidates``, the host's check, is the one rule)."""
    from converters import options

    names = options.quantize_candidates(spec)
    return AUTO if names is None else tuple(names)


def folds_for(samples):
    """How many folds ``samples`` calibration samples are dealt into (0: too few to hold any out; the
    candidates are then scored on the samples they were fitted on, and the report says so)."""
    if samples >= FOLDS * MIN_FOLD:
        return FOLDS
    return 2 if samples >= 2 * MIN_FOLD else 0


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
    parts = set(p for name in requested for p in choice.parts(name))
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


def _fold_indices(count, folds):
    """[[sample indices of fold k]]: sample i goes to fold i mod K (interleaved: a data set sorted by class
    or by source gives every fold its share)."""
    return [list(range(k, count, folds)) for k in range(folds)]


class _Fit(object):
    """One fitting of the candidates: a calibrated model, the statistics and the samples it saw."""

    def __init__(self, label, calibrated, stats, samples):
        self.label = label
        self.calibrated = calibrated
        self.stats = stats
        self.samples = samples
        self.plan = None
        self.contents = {}  # base key -> its calibrated model (_base_content)
        self.bases = {}
        self.cle_float = None


def _fits(float_model, samples, folds, calibrate, wanted, names, timings, section, calibrate_folds=None):
    """The fit on all samples and, with folds, one per fold k on every fold but k: (whole fit, [(fit,
    held-out indices)], the float outputs on every sample or None). Every fold is calibrated once: in one
    pass over all samples with ``calibrate_folds`` when the calibration's fast route can (it also gives
    the float outputs), else fold by fold; the rest is merged (module docstring)."""
    from converters.tf2 import tflite_model

    t0 = time.perf_counter()
    if not folds:
        collector = statistics.Collector(names, len(samples), wanted)
        calibrated = calibrate(samples, collector)
        stats = collector.stats if collector.complete() else statistics.collect(float_model, samples, wanted)
        timings["calibrate"] = round(time.perf_counter() - t0, 2)
        whole = _Fit("all", calibrated, stats, samples)
        return whole, [(whole, list(range(len(samples))))], None
    groups = _fold_indices(len(samples), folds)
    fold_of = [i % folds for i in range(len(samples))]
    calibrated, outputs, everything = None, None, None
    collectors = statistics.FoldCollectors(names, wanted, fold_of)
    if calibrate_folds is not None:
        everything, calibrated, outputs = calibrate_folds(samples, fold_of, collectors)
    if calibrated is not None:
        section["calibration_passes"] = "one: every fold's min/max and statistics and the float outputs"
        gathered = [part.complete() for part in collectors.parts]
        stats = [part.stats if done else statistics.collect(float_model, [samples[i] for i in group], wanted)
                 for part, done, group in zip(collectors.parts, gathered, groups)]
    else:
        section["calibration_passes"] = ("%d: one per fold (the calibrator's route)" % folds if everything is None
                                         else "%d: every sample, then one per fold (the calibrator's route)"
                                         % (folds + 1))
        stats, gathered, calibrated = [], [], []
        for group in groups:
            part = [samples[i] for i in group]
            collector = statistics.Collector(names, len(part), wanted)
            calibrated.append(calibrate(part, collector))
            complete = collector.complete()
            gathered.append(complete)
            stats.append(collector.stats if complete else statistics.collect(float_model, part, wanted))
    timings["calibrate"] = round(time.perf_counter() - t0, 2)
    section["statistics"] = ("gathered during calibration (the interpreter's pass)" if all(gathered) else
                             "a pass of their own (the calibration took TFLite's calibrator)")
    ranges = [tflite_model.tensor_ranges(c) for c in calibrated]

    def merged(keep):
        first = keep[0]
        try:
            content = tflite_model.merge_ranges(calibrated[first], [ranges[k] for k in keep[1:]])
        except ValueError:  # the folds recorded different tensors (control flow): calibrate those samples
            content = calibrate([samples[i] for k in keep for i in groups[k]], None)
        return content, statistics.merge([stats[k] for k in keep])

    content, merged_stats = merged(list(range(folds)))
    whole = _Fit("all", content if everything is None else everything, merged_stats, samples)
    fits = []
    for k, group in enumerate(groups):
        keep = [j for j in range(folds) if j != k]
        content, merged_stats = merged(keep)
        fits.append((_Fit("fold %d" % k, content, merged_stats, [samples[i] for j in keep for i in groups[j]]),
                     group))
    return whole, fits, outputs


def _plan(fit, float_graph):
    """``fit``'s equalization plan (pairs, totals, details), made once from its statistics."""
    if fit.plan is None:
        pairs, totals, details = equalize.plan(float_graph, fit.stats)
        equalize.portable(pairs, float_graph)
        fit.plan = (pairs, totals, details)
    return fit.plan


def _base_key(name):
    """The rewrites of candidate ``name`` made before quantizing (cle, a range method): its base's key."""
    return tuple(p for p in choice.parts(name) if p not in ("bias",) + LAYERWISE)


def _base_content(fit, base_key, float_graph):
    """The calibrated model of base ``base_key`` fitted on ``fit`` (equalized, ranges narrowed), made once:
    {calibrated, factors, graph, narrowed}."""
    if base_key not in fit.contents:
        if "cle" in base_key:
            _plan(fit, float_graph)
        content = bytearray(fit.calibrated)
        graph = Graph(content)
        factors = equalize.apply(graph, fit.plan[0], fit.plan[1], fit.stats) if "cle" in base_key else {}
        narrowed = None
        for method in ranges.METHODS:
            if method in base_key:
                narrowed = ranges.narrow(graph, fit.stats, method, factors, keep=graph.inputs)
        fit.contents[base_key] = {"calibrated": bytes(content), "factors": factors, "graph": graph,
                                  "narrowed": narrowed}
    return fit.contents[base_key]


def _build(name, fit, float_model, float_graph, quantize):
    """The int8 model of candidate ``name`` fitted on ``fit``: (bytes, details). Rewrites of the float or
    calibrated model first (cle, a range method), quantized once per distinct base; then the int8 model's
    own rewrites (bias)."""
    parts = choice.parts(name)
    base_key = _base_key(name)
    if base_key not in fit.bases:
        base = dict(_base_content(fit, base_key, float_graph))
        base["quantized"] = quantize(base["calibrated"], base_key)
        fit.bases[base_key] = base
    base = fit.bases[base_key]
    content = base["quantized"]
    details = {}
    if "gptq" in parts:
        content = _layerwise(base, "gptq", content, _reference(parts, fit, float_model), fit.samples, details)
    if "bias" in parts:
        corrected = bytearray(unshare(content, bias_correction.bias_tensors(Graph(bytearray(content)))))
        errors = bias_correction.expected_errors(Graph(corrected), base["graph"], fit.stats, base["factors"])
        details["bias"] = bias_correction.correct(Graph(corrected), errors)
        details["bias"]["layers"] = len(errors)
        details["bias_errors"] = errors
        content = bytes(corrected)
    if "ebias" in parts:
        content = _layerwise(base, name, content, _reference(parts, fit, float_model), fit.samples, details)
    if base["narrowed"] is not None:
        details["ranges"] = base["narrowed"]
    return content, details, base


def _out_of_fold(name, fits, samples, float_model, float_graph, quantize, stop=None):
    """Candidate ``name``'s outputs on every sample, each from the candidate fitted without that sample's
    fold: ([array (count, ...)] per output, the last fold's int8 bytes, its details, the stop's reason or
    None). ``stop(held, outputs)``, asked after the first fold when there are several: a reason to judge
    this candidate no further (the sequential rule: ``choice.hopeless``), or None."""
    outputs = None
    content = details = None
    for k, (fit, held) in enumerate(fits):
        content, details, _ = _build(name, fit, float_model, float_graph, quantize)
        part, _ = statistics.run(content, [samples[i] for i in held])
        if outputs is None:
            outputs = [np.zeros((len(samples),) + tuple(p.shape[1:]), p.dtype) for p in part]
        for o, p in zip(outputs, part):
            o[held] = p
        if k == 0 and len(fits) > 1 and stop is not None:
            reason = stop(held, outputs)
            if reason:
                return outputs, content, details, reason
    return outputs, content, details, None


def search(float_model, samples, requested, calibrate, quantize, log=None, calibration_model=None,
           calibrate_folds=None, every_candidate=True, defer_report=False):
    """Build, judge and choose (see the module docstring). ``float_model``: the converter's float model
    (bytes); ``samples``: every calibration sample, each a list of arrays (one per model input);
    ``requested``: the candidate names (``parse``); ``calibrate(samples, collector) -> calibrated bytes``
    and ``quantize(calibrated bytes) -> int8 bytes`` are the hook's own calls; ``calibration_model``: the
    model ``calibrate`` runs (the float model with TFLite's intermediate tensors), whose tensor names the
    statistics gathered during calibration carry; ``calibrate_folds(samples, fold_of, collectors) ->
    (calibrated, [fold calibrated] or None, [float outputs] or None)``: the hook's one pass for the folds
    (``_fits``), when it has one; ``every_candidate``: fit every judged candidate on all samples (``--eval``
    evaluates each), not only the chosen one and plain.

    Returns (chosen int8 bytes, the chosen candidate's calibrated model, plain int8 bytes, section,
    extras). section: report.json's ``quantization``; extras: {cle_float_model? (when cle was chosen),
    candidates: {name: int8 bytes fitted on all samples} (the chosen one and plain, or every one),
    report_work? (with ``defer_report``: a function returning the figures only the report reads, for
    ``merge_report_work``; without it they are in the section already)}."""
    log = log or (lambda message: None)
    started = time.perf_counter()
    # plain alone has nothing to be chosen against: one calibration on every sample, no judging
    folds = folds_for(len(samples)) if tuple(requested) != ("plain",) else 0
    section = {"requested": list(requested), "calibration_samples": len(samples),
               "validation": {"samples": len(samples), "folds": folds,
                              "split": ("cross-fitting: the %d calibration samples dealt into %d folds; each "
                                        "candidate is fitted on %d of them and scored on the other, so every "
                                        "sample judges it once, on a model not fitted on it"
                                        % (len(samples), folds, folds - 1)) if folds else
                              ("too few calibration samples to hold some out (fewer than %d): candidates are "
                               "scored on the samples they were fitted on" % (2 * MIN_FOLD)) if len(requested) > 1
                              else "plain only: nothing to choose, scored on the samples it was calibrated on"}}
    timings = {}
    float_graph = Graph(bytearray(float_model))
    wanted = wanted_statistics(float_graph, requested)
    names = Graph(bytearray(calibration_model or float_model)).tensor_names
    whole, fits, references = _fits(float_model, samples, folds, calibrate, wanted, names, timings, section,
                                    calibrate_folds)
    section.setdefault("statistics", "gathered during calibration (the interpreter's pass)")
    t0 = time.perf_counter()
    if references is None and len(requested) > 1:
        references = statistics.run(float_model, samples)[0]
    timings["float_reference"] = round(time.perf_counter() - t0, 2)
    log("quantization: %d candidates (%s), each judged on all %d calibration samples (%s)"
        % (len(requested), ", ".join(requested), len(samples),
           "%d folds" % folds if folds else "not held out: too few"))
    requested_cle = any("cle" in choice.parts(n) for n in requested)
    auto = tuple(requested) == AUTO
    prefetch = getattr(quantize, "prefetch", None)  # the hook's second process (converters.tf2.beside)
    if prefetch is not None and folds and len(requested) > 1:  # told now what it will quantize: fold 0's
        early = [fits[0][0].calibrated]  # plain (the template's check) and, when asked for, its equalized base
        if requested_cle:
            early.append(_base_content(fits[0][0], ("cle",), float_graph)["calibrated"])
        prefetch(early)
    quantize = requantize.Requantizer(quantize)
    if len(requested) > 1:  # plain on all samples first (its file is written): it teaches the folds' template
        t0 = time.perf_counter()
        _build("plain", whole, float_model, float_graph, quantize)
        timings["plain_on_all"] = round(time.perf_counter() - t0, 2)
    groups = choice.predicted_classes(references)
    scales = None
    t0 = time.perf_counter()
    queue = list(requested)
    judged = {}  # {name: sample_errors} of the candidates judged on every fold (the sequential rule's parents)
    fold_details = {}  # each candidate's rewrites' details as the last fold it was built on gave them
    while queue:
        name = queue.pop(0)
        t1 = time.perf_counter()
        if len(requested) == 1:  # --quantize plain: the by-hand recipe's file, nothing to judge it against
            section["candidates"] = [{"name": name, "seconds": 0.0}]
            break
        outputs, content, details, stopped = _out_of_fold(name, fits, samples, float_model, float_graph, quantize,
                                                          choice.hopeless(name, judged, references))
        if scales is None:
            scales = output_scales(content)
        entry = {"name": name}
        if stopped:
            held = fits[0][1]
            entry.update(choice.score([o[held] for o in outputs], [np.asarray(r)[held] for r in references], scales))
            entry.update(stopped_early=stopped, scored_samples=len(held))
        else:
            entry.update(choice.score(outputs, references, scales))
            judged[name] = choice.sample_errors(outputs, references)
        fold_details[name] = details
        entry["seconds"] = round(time.perf_counter() - t1, 2)
        section.setdefault("candidates", []).append(entry)
        log("quantization: %-22s SQNR %6.2f dB, centered %6.2f dB, r %s (%.1f s)%s" % (
            name, entry["sqnr_db"], entry["score_db"], entry["correlation"], entry["seconds"],
            " - stopped after the first fold" if stopped else ""))
        if auto and name == "plain":  # nothing left to recover? then no other candidate is built
            queue = _below_floor(section, entry, references, scales, queue)
        if auto and not queue and name in AUTO and not section.get("stopped"):  # the first stage is judged: the layer-wise second stage
            queue = _second_stage(section, float_graph, len(samples), log, groups)
    timings["candidates"] = round(time.perf_counter() - t0, 2)
    section["requantize"] = quantize.record
    del fits  # the folds' calibrated and quantized models: only the fit on all samples is used from here

    if len(requested) == 1:
        chosen, why = requested[0], "asked for alone (--quantize %s): TFLite's calibration on every sample" % requested[0]
    else:
        chosen, why = choice.choose(section["candidates"], groups)
    if section.get("stopped"):
        why = section["stopped"]
    for entry in section["candidates"]:
        entry.pop("noise", None)
    section["chosen"] = chosen
    section["why"] = why

    # fitted on all samples: the chosen file and plain (TFLite's own), and with every_candidate (--eval) the rest
    t0 = time.perf_counter()
    built = {}
    for entry in section["candidates"]:
        name = entry["name"]
        if every_candidate or name in (chosen, "plain"):
            content, details, base = _build(name, whole, float_model, float_graph, quantize)
            built[name] = (content, details, base)
        else:  # its rewrites as its last fold's fit made them
            details = fold_details.get(name) or {}
            entry["details_from"] = "a fold's fit (only the chosen candidate and plain are fitted on all samples)"
        for key in ("bias", "ranges", "gptq", "ebias"):
            if key in details:
                entry[key] = details[key]
    timings["fit_all"] = round(time.perf_counter() - t0, 2)
    content, details, base = built[chosen]
    plain_content = built["plain"][0]
    extras = {"candidates": dict((name, value[0]) for name, value in built.items())}
    plain_ops = Graph(bytearray(plain_content)).op_signature()
    section["same_ops_as_plain"] = all(Graph(bytearray(c)).op_signature() == plain_ops for c, _, _ in built.values())
    cle_float = None
    if requested_cle:
        _plan(whole, float_graph)
        cle_float = _equalized_float(section, whole, float_model, extras, chosen)
    errors = details.get("bias_errors")
    report_work = _report_work(section["candidates"], float_model, samples, cle_float, chosen, errors,
                               plain_content, content)
    section["timings"] = timings
    if defer_report:  # run by the caller beside what follows the written file (tflite_convert), then merged
        extras["report_work"] = report_work
    else:
        merge_report_work(section, report_work())
    timings["total"] = round(time.perf_counter() - started, 2)
    calibrated_chosen = base["calibrated"]
    if errors:
        # the per-layer debugger (converters.tf2.quant_debug) quantizes the calibrated model itself: give it
        # the corrected biases in float, which its quantization rounds to the chosen file's int32 biases
        shifted = bytearray(calibrated_chosen)
        bias_correction.shift_float(Graph(shifted), errors)
        calibrated_chosen = bytes(shifted)
    return content, calibrated_chosen, plain_content, section, extras


def _report_work(candidates, float_model, samples, cle_float, chosen, errors, plain_content, content):
    """A function that computes the report's figures the choice does not use (issue 31: off the path to the
    int8 file): the float-side checks on the first ``DIAGNOSTIC_SAMPLES`` samples (equalization's float
    deviation and int8 gain, the float model moved by bias correction) and the per-layer errors of plain
    and the chosen file (``cle_float``: the equalized float model when cle was requested, else None). The
    function returns {key: value} for ``merge_report_work`` and reads nothing that the search's caller
    changes, so it may run in a thread while the section is read and written elsewhere."""
    requested_cle = cle_float is not None
    candidates = [dict(c) for c in candidates]

    def work():
        figures, timings = {}, {}
        diagnostic = samples[:DIAGNOSTIC_SAMPLES]
        references = statistics.run(float_model, diagnostic)[0] if (errors or requested_cle) else None
        if requested_cle:
            figures["cle"] = _judge_cle(cle_float, candidates, diagnostic, references)
        if errors:
            moved = bytearray(cle_float if "cle" in choice.parts(chosen) else float_model)
            bias_correction.shift_float(Graph(moved), errors)
            figures["bias_float_moved"] = _float_distance(statistics.run(bytes(moved), diagnostic)[0], references)
            figures["bias_float_moved"]["samples"] = len(diagnostic)
        t0 = time.perf_counter()
        if chosen != "plain":  # plain chosen: nothing to compare (the per-layer debugger's plot shows its layers)
            try:
                models = {"plain": plain_content, chosen: content}
                floats = {"plain": float_model, chosen: cle_float if "cle" in choice.parts(chosen) else float_model}
                figures["layers"] = layer_errors(floats, models, samples[:LAYER_SAMPLES])
                figures["layers_samples"] = min(LAYER_SAMPLES, len(samples))
            except Exception as exc:  # noqa: BLE001 - a diagnostic: never the reason a conversion fails
                figures["layers_error"] = "%s: %s" % (type(exc).__name__, str(exc)[:200])
        timings["layers"] = round(time.perf_counter() - t0, 2)
        figures["timings"] = timings
        return figures
    return work


def merge_report_work(section, figures):
    """``section`` (report.json's ``quantization``) with ``_report_work``'s figures merged in."""
    figures = dict(figures)
    section.setdefault("timings", {}).update(figures.pop("timings", {}))
    if "cle" in figures:
        section.setdefault("cle", {}).update(figures.pop("cle"))
    section.update(figures)
    return section


def model_macs(graph):
    """Multiply-accumulates of one sample through the linear ops of ``graph`` (conv, depthwise, dense)."""
    total = 0
    for op in graph.ops:
        if op.name not in LINEAR_OPS or len(op.inputs) < 2 or op.inputs[1] < 0:
            continue
        weights = graph.shapes[op.inputs[1]]
        outputs = int(np.prod(graph.shapes[op.outputs[0]] or [0]))
        if op.name == "CONV_2D" and len(weights) == 4:
            total += outputs * weights[1] * weights[2] * weights[3]
        elif op.name == "DEPTHWISE_CONV_2D" and len(weights) == 4:
            total += outputs * weights[1] * weights[2]
        elif op.name == "FULLY_CONNECTED" and len(weights) == 2:
            total += outputs * weights[1]
    return total


def _below_floor(section, plain, references, scales, queue):
    """auto's rounding-floor check, on plain's held-out scores: ``queue`` as it was, or [] (with the
    reason in ``section["stopped"]``) when plain is within ``FLOOR_MARGIN_DB`` of the SQNR that rounding the
    output to its int8 step alone allows (``rounding_floor``): no rewrite can gain there."""
    floor = choice.rounding_floor(references, scales)
    section["rounding_floor_db"] = None if floor is None else round(floor, 2)
    if floor is None or plain["sqnr_db"] < floor - FLOOR_MARGIN_DB:
        return queue
    section["stopped"] = ("plain is within %.1f dB of the int8 output's rounding floor on the held-out calibration "
                          "samples (%.2f dB against %.2f dB: the SQNR that rounding the output alone allows): "
                          "nothing left to recover, no other candidate built" % (
                              FLOOR_MARGIN_DB, plain["sqnr_db"], floor))
    return []


def _second_stage(section, float_graph, samples, log, groups=None):
    """auto's layer-wise candidates (``AUTO_LAYERWISE``), with cle when the first stage's winner equalized,
    or [] with the reason in ``section["layerwise"]`` when the model's MACs times the samples exceed
    ``LAYERWISE_MAX_GMAC_SAMPLES``."""
    from converters import options

    first, _ = choice.choose([dict(c) for c in section["candidates"]], groups)
    names = []
    for name in AUTO_LAYERWISE:
        parts = set(choice.parts(name)) | (set(["cle"]) if "cle" in choice.parts(first) else set())
        names.append("+".join(sorted(parts, key=options.QUANTIZE_REWRITES.index)))
    gmacs = model_macs(float_graph) / 1e9
    size = gmacs * samples
    record = {"candidates": list(names), "first_stage_winner": first, "gmac_per_sample": round(gmacs, 3),
              "gmac_samples": round(size, 1), "limit_gmac_samples": LAYERWISE_MAX_GMAC_SAMPLES}
    section["layerwise"] = record
    if size > LAYERWISE_MAX_GMAC_SAMPLES:
        record["skipped"] = ("the layer-wise candidates (%s) run the model layer by layer on every fold: %.2f GMAC "
                             "per sample x %d calibration samples = %.0f, above auto's limit of %.0f: not built; ask "
                             "for them with --quantize %s" % (", ".join(names), gmacs, samples, size,
                                                              LAYERWISE_MAX_GMAC_SAMPLES, ",".join(names)))
        log("quantization: %s" % record["skipped"])
        return []
    return names


def _equalized_float(section, whole, float_model, extras, chosen):
    """The equalized float model of ``whole``'s plan (bytes), also ``extras["cle_float_model"]`` when the
    chosen candidate equalized (its file is written and checked on the probe); the plan's details in
    ``section["cle"]``."""
    pairs, totals, details = whole.plan
    cle_float = bytearray(float_model)
    equalize.apply(Graph(cle_float), pairs, totals)
    section["cle"] = dict(details)
    if "cle" in choice.parts(chosen):
        extras["cle_float_model"] = bytes(cle_float)
    return bytes(cle_float)


def _judge_cle(cle_float, candidates, samples, references):
    """Equalization judged end to end: how far the equalized float model (``cle_float``) is from the float
    model on ``samples`` (the float model's outputs there: ``references``; its own cost, which the
    candidates' scores already include, since they are measured against the float model), beside the int8
    error it removes (the best cle candidate's score against plain's). {float_check, int8_gain_db?,
    judged}, merged into ``section["cle"]``; never a parity cell and never a reason to fail a run."""
    from converters.shared import metrics

    outputs = statistics.run(cle_float, samples)[0]
    check = _float_distance(outputs, references)
    own = [metrics.fidelity(r, o.reshape(np.shape(r))) for r, o in zip(references, outputs)]
    check["sqnr_centered_db"] = choice.db(min(f["sqnr_centered_db"] for f in own))
    check["samples"] = len(samples)
    figures = {"float_check": check}
    by_name = dict((c["name"], c) for c in candidates)
    with_cle = [c for c in candidates if "cle" in choice.parts(c["name"]) and not c.get("stopped_early")]
    if with_cle and "plain" in by_name:
        best = max(with_cle, key=lambda c: c["score_db"])
        figures["int8_gain_db"] = round(best["score_db"] - by_name["plain"]["score_db"], 2)
        figures["judged"] = (
            "the equalized float model is %.1f dB (centered) from the float model; the best equalized "
            "candidate (%s) scores %+.2f dB against plain, float deviation included" % (
                check["sqnr_centered_db"], best["name"], figures["int8_gain_db"]))
    elif any("cle" in choice.parts(c["name"]) for c in candidates):
        figures["judged"] = (
            "the equalized float model is %.1f dB (centered) from the float model; every equalized candidate was "
            "stopped after the first fold (no gain it could be preferred for)" % check["sqnr_centered_db"])
    return figures


LAYERWISE = ("gptq", "ebias")  # rewrites of the int8 file that run it (and the float model) layer by layer


def _layerwise(base, key, content, reference, train, entry, log=None):
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


def _reference(parts, fit, float_model):
    """The float model a candidate of ``fit`` was quantized from: equalized with ``fit``'s plan under cle."""
    if "cle" not in parts:
        return float_model
    if fit.cle_float is None:
        content = bytearray(float_model)
        equalize.apply(Graph(content), fit.plan[0], fit.plan[1])
        fit.cle_float = bytes(content)
    return fit.cle_float


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
