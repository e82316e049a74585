"""The accuracy-recovery rewrites (converters.tf2.recovery) keep what they promise, on real TFLite models.

Runs inside tf2 with real TF 2.21. A small depthwise-separable CNN with ReLU, ReLU6, zero padding and
global average pooling (MobileNet's pattern) is converted by TensorFlow's own converter; its float TFLite
model is equalized and run against the original on inputs neither saw before; bias correction and range
choice are checked on what they change. The end-to-end figures (held-out accuracy per-tensor and
per-channel, plain against auto) are in test_quantization_recovery_crossenv.py.

Tolerances: equalization is exact in real arithmetic; in float32 each rescaled product is rounded once
more, so outputs agree within 1e-5 relative to the output's scale (measured ~1e-7) - far inside the
parity tolerances (atol 1e-4, rtol 1e-3) that the float-check cell applies.
"""

import os

import numpy as np
import pytest

pytestmark = pytest.mark.tf2

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

SHAPE = (12, 12, 3)


@pytest.fixture(scope="module")
def tf_bits():
    import tensorflow as tf
    import tf_keras

    return tf, tf_keras


def _model(tf_keras, relu6_clip=False):
    tf_keras.utils.set_random_seed(0)
    layers = tf_keras.layers
    inputs = layers.Input(SHAPE)
    x = layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    x = layers.DepthwiseConv2D(3, padding="same")(x)
    x = layers.ReLU(6.0)(x)  # ReLU6: the equalization must not move its clip
    x = layers.Conv2D(16, 1)(x)
    x = layers.ReLU()(x)
    x = layers.ZeroPadding2D(((0, 1), (0, 1)))(x)
    x = layers.DepthwiseConv2D(3, strides=2)(x)
    x = layers.ReLU()(x)
    x = layers.Conv2D(16, 1, activation="relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(5)(x)
    model = tf_keras.Model(inputs, outputs)
    rng = np.random.RandomState(3)
    depthwise = [layer for layer in model.layers if isinstance(layer, layers.DepthwiseConv2D)]
    for layer in model.layers:  # channels of very different ranges, as trained MobileNets have them
        weights = layer.get_weights()
        if weights and weights[0].ndim == 4:
            axis = 2 if layer in depthwise else 3
            shape = [1, 1, 1, 1]
            shape[axis] = -1
            spread = np.exp(rng.uniform(-2.5, 2.5, weights[0].shape[axis])).reshape(shape).astype(np.float32)
            if relu6_clip and layer is depthwise[0]:  # half its channels grow past ReLU6's clip
                spread = spread * np.where(np.arange(spread.size) % 2 == 0, 20.0, 1.0).reshape(shape)
            layer.set_weights([weights[0] * spread] + [w * spread.reshape(-1) for w in weights[1:]])
    return model


def _float_tflite(tf, model):
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    return converter.convert()


def _inputs(count, seed):
    return [[np.random.RandomState(seed + k).uniform(0, 1, (1,) + SHAPE).astype(np.float32)] for k in range(count)]


@pytest.fixture(scope="module")
def converted(tf_bits):
    from converters.tf2.recovery import statistics
    from converters.tf2.recovery.graph import Graph

    tf, tf_keras = tf_bits
    content = _float_tflite(tf, _model(tf_keras))
    graph = Graph(bytearray(content))
    calibration = _inputs(24, 0)
    stats = statistics.collect(content, calibration, _everything(graph))
    return content, graph, stats


def _everything(graph):
    """Every statistic of every activation tensor and input (statistics.TensorStats' kinds)."""
    return dict((graph.tensor_names[t], ("mean", "range", "values"))
                for t in list(graph.inputs) + graph.activation_tensors())


def test_equalization_keeps_the_float_function_on_new_inputs(converted):
    from converters.tf2.recovery import equalize, statistics
    from converters.tf2.recovery.graph import Graph

    content, graph, stats = converted
    pairs, totals, details = equalize.plan(graph, stats)
    equalize.portable(pairs, graph)
    assert details["pairs"] == 5  # conv->dw, dw->(ReLU6)->pw, pw->(PAD)->dw, dw->pw, pw->(MEAN)->dense
    assert details["max_scale"] / details["min_scale"] > 4  # it did rescale
    equalized = bytearray(content)
    equalize.apply(Graph(equalized), pairs, totals)
    fresh = _inputs(16, 1000)
    before = statistics.run(content, fresh)[0][0]
    after = statistics.run(bytes(equalized), fresh)[0][0]
    assert np.max(np.abs(after - before)) <= 1e-5 * np.max(np.abs(before))


def test_equalization_balances_the_weight_ranges_of_each_pair(converted):
    from converters.tf2.recovery import equalize
    from converters.tf2.recovery.graph import Graph

    content, graph, stats = converted
    pairs, totals, _ = equalize.plan(graph, stats)
    equalize.portable(pairs, graph)
    equalized = Graph(bytearray(content))
    equalize.apply(equalized, pairs, totals)
    index = equalized.index_by_name()
    relu6_free = [p for p in pairs if not p["relu6"]]
    assert relu6_free
    for pair in relu6_free:
        first, second = pair["first"], pair["second"]
        r1 = equalize._out_range(equalized.values(index[pair["weight_names"][0]]), first.name)
        r2 = equalize._in_range(equalized.values(index[pair["weight_names"][1]]), second.name,
                                second.depth_multiplier, pair["channels"])
        # a weight shared by two pairs settles between them: balanced within a few percent, not exactly
        ratio = r1 / r2
        assert np.all(np.abs(np.log(ratio[(r1 > 0) & (r2 > 0)])) < 0.35), (first.name, second.name, ratio)


def test_relu6_channels_that_clip_keep_their_scale(tf_bits):
    from converters.tf2.recovery import equalize, statistics
    from converters.tf2.recovery.graph import Graph

    tf, tf_keras = tf_bits
    content = _float_tflite(tf, _model(tf_keras, relu6_clip=True))
    graph = Graph(bytearray(content))
    stats = statistics.collect(content, _inputs(24, 0), _everything(graph))
    pairs, totals, details = equalize.plan(graph, stats)
    relu6 = [(pair, total) for pair, total in zip(pairs, totals) if pair["relu6"]]
    assert len(relu6) == 1
    pair, total = relu6[0]
    top = stats[graph.tensor_names[pair["relu6"][0]]].max
    clipped = top >= 6.0 * (1 - 1e-5)
    assert clipped.any(), "the test model must have ReLU6 channels that clip"
    assert np.all(total[clipped] == 1.0)
    assert np.all(top[~clipped] / total[~clipped] < 6.0)  # unclipped channels stay below the clip
    assert details["relu6_channels_kept"] == int(clipped.sum())
    equalize.portable(pairs, graph)
    equalized = bytearray(content)
    equalize.apply(Graph(equalized), pairs, totals)
    calibration = _inputs(24, 0)  # on the data the rule was derived from, the function is unchanged
    before = statistics.run(content, calibration)[0][0]
    after = statistics.run(bytes(equalized), calibration)[0][0]
    assert np.max(np.abs(after - before)) <= 1e-5 * np.max(np.abs(before))


def test_bias_correction_removes_the_mean_error_of_int8_weights(tf_bits, converted):
    from converters.tf2.recovery import bias, statistics
    from converters.tf2.recovery.graph import Graph, unshare

    tf, _ = tf_bits
    content, graph, stats = converted
    calibration = _inputs(24, 0)
    from tensorflow.lite.python import lite
    from tensorflow.lite.python.optimize import calibrator

    calibrated = calibrator.Calibrator(calibrator.add_intermediate_tensors(content)).calibrate(
        lambda: iter(calibration))
    quantized = lite._mlir_quantize(calibrated, True, input_data_type=tf.float32, output_data_type=tf.float32)
    # the quantizer shares one buffer between equal constants (these all-zero biases): each gets its own
    own = unshare(quantized, bias.bias_tensors(Graph(bytearray(quantized))))
    assert Graph(bytearray(own)).op_signature() == Graph(bytearray(quantized)).op_signature()
    assert np.array_equal(statistics.run(own, calibration[:4])[0][0], statistics.run(quantized, calibration[:4])[0][0])
    corrected = bytearray(own)
    errors = bias.expected_errors(Graph(corrected), Graph(bytearray(calibrated)), stats)
    assert len(errors) == 5  # every conv and depthwise (this float-I/O file keeps the dense bias in float)
    changed = bias.correct(Graph(corrected), errors)
    assert changed["biases"] >= 1
    # only int32 bias values changed: the same ops, tensors and sizes
    assert len(corrected) == len(own)
    assert Graph(corrected).op_signature() == Graph(bytearray(quantized)).op_signature()
    fresh = _inputs(32, 5000)
    reference = statistics.run(content, fresh)[0][0]
    plain = statistics.run(quantized, fresh)[0][0]
    fixed = statistics.run(bytes(corrected), fresh)[0][0]
    # the mean output error per class, on inputs not used to measure it
    assert np.abs((fixed - reference).mean(axis=0)).max() < np.abs((plain - reference).mean(axis=0)).max()


def test_the_search_asks_only_for_the_statistics_its_candidates_read(converted):
    from converters.tf2.recovery import choice, search

    _, graph, _ = converted
    assert search.wanted_statistics(graph, ("plain",)) == {}
    bias_only = search.wanted_statistics(graph, ("plain", "bias"))
    assert set(kind for kinds in bias_only.values() for kind in kinds) == {"mean"}
    assert len(bias_only) == 6  # the input of every conv, depthwise and dense
    automatic = search.wanted_statistics(graph, search.AUTO)  # no range choice in auto: no value samples
    assert set(kind for kinds in automatic.values() for kind in kinds) == {"mean", "range"}
    everything = search.wanted_statistics(graph, search.parse("bias,cle+bias+mse"))
    assert {"mean", "range", "values"} == set(kind for kinds in everything.values() for kind in kinds)


def test_range_choice_takes_the_least_int8_error_and_percentiles_cut_the_tail():
    from converters.tf2.recovery import ranges

    rng = np.random.RandomState(0)
    values = np.abs(rng.standard_t(2, 20000))  # a heavy tail, as post-ReLU activations have
    top = float(values.max())
    low, high = ranges.choose(values, 0.0, top, "mse")
    chosen = ranges._quant_mse(values, low, high)
    # the argmin over the grid: no shrink factor quantizes the samples with less error (min/max included)
    assert all(chosen <= ranges._quant_mse(values, 0.0, top * f) + 1e-12 for f in ranges.SHRINK)
    low, high = ranges.choose(values, 0.0, top, "percentile")
    assert low == 0.0 and high == pytest.approx(np.percentile(values, ranges.PERCENTILE)) and high < top
    signed = rng.normal(0, 1, 20000)
    low, high = ranges.choose(signed, float(signed.min()), float(signed.max()), "percentile")
    assert signed.min() < low < 0 < high < signed.max()


def test_the_search_scores_and_chooses_by_the_margin():
    from converters.tf2.recovery import choice, search

    assert search.parse("auto") == search.AUTO
    assert search.parse("plain") == ("plain",)
    assert search.parse("bias+cle") == ("plain", "cle+bias")
    assert search.parse("bias, cle+bias+mse,plain") == ("plain", "bias", "cle+bias+mse")
    for bad in ("cle+mse+percentile", "cle+magic", "auto+bias"):
        with pytest.raises(ValueError):
            search.parse(bad)
    # every calibration sample judges: folds of at least MIN_FOLD samples, none below 2 * MIN_FOLD
    assert search.folds_for(200) == search.FOLDS and search.folds_for(20) == 2 and search.folds_for(10) == 0
    rng = np.random.RandomState(0)
    base = rng.uniform(1.0, 2.0, 40)

    def entry(name, score, noise, correlation=0.9, reasons=()):
        return {"name": name, "score_db": score, "sqnr_db": score, "noise": noise, "correlation": correlation,
                "verdict_reasons": list(reasons)}

    close = [entry("plain", 30.0, base), entry("bias", 30.1, base * 0.98)]
    assert choice.choose(close)[0] == "plain"  # within the margin: the plain converter's file
    better = [entry("plain", 10.0, base), entry("cle", 20.0, base / 10), entry("cle+bias", 20.1, base / 10.2),
              entry("cle+bias+mse", 19.0, base / 8)]
    name, why = choice.choose(better)
    assert name == "cle" and "+10.00 dB" in why  # the simplest within the margin of the best
    assert better[1]["samples_for_1db"] >= 1
    # a gain that comes from one sample out of 40 does not hold across the samples: plain stays
    lucky = base.copy()
    lucky[0] = 1000.0  # plain's noise is one outlier; the candidate is a little worse everywhere else
    one_sample = [entry("plain", 10.0, lucky), entry("bias", 12.0, base * 1.3)]
    one_sample[1]["noise"][0] = 1.0
    name, why = choice.choose(one_sample)
    assert name == "plain" and "does not hold" in why, why
    # a candidate that scores better by flattening its outputs (its correlation falls) loses to plain
    flat = [entry("plain", 5.0, base, correlation=0.8), entry("bias", 8.0, base / 2, correlation=0.3)]
    name, why = choice.choose(flat)
    assert name == "plain" and "correlation" in why, why
    # ... and so does one that fails a check of the int8 verdict that plain passes
    failing = [entry("plain", 5.0, base), entry("bias", 8.0, base / 2, reasons=["centered SQNR 1.0 dB < 3 dB"])]
    name, why = choice.choose(failing)
    assert name == "plain" and "verdict" in why, why
    # a candidate that gains overall but loses on the samples of one predicted class is refused: a probe (or a
    # deployment) dominated by that class would get a worse file
    classes = np.array([0] * 20 + [1] * 20)
    mixed = base.copy()
    mixed[:20] *= 1.5  # worse than plain on class 0 ...
    mixed[20:] /= 20.0  # ... far better on class 1
    split = [entry("plain", 10.0, base), entry("bias", 14.0, mixed)]
    name, why = choice.choose(split, classes)
    assert name == "plain" and "predicted class 0" in why, why
    assert split[1]["class_gains_db"][0] < -choice.GROUP_SLACK_DB < 0 < split[1]["class_gains_db"][1]
    assert choice.choose([entry("plain", 10.0, base), entry("bias", 14.0, base / 3)], classes)[0] == "bias"
    # the samples a 1 dB gain needs: the interval's half-width shrinks as 1 / sqrt(n)
    assert choice.samples_for_gain(40, (0.0, 2.0)) == 40 and choice.samples_for_gain(40, (0.0, 4.0)) == 160


def test_the_sequential_rule_stops_only_a_candidate_that_cannot_be_preferred(tf_bits):
    """After the first fold, a candidate whose 90 % upper gain over plain (or over a candidate with a strict
    part of its rewrites) there is below the margin is judged no further; a fold too small to say, outputs
    equal to the parent's, or a real gain never stop it; ``choose`` leaves stopped candidates out."""
    from converters.tf2.recovery import choice, search

    rng = np.random.RandomState(5)
    count = 120
    references = [rng.normal(0, 1, (count, 4))]
    held = list(range(0, count, 3))  # fold 0: 40 samples

    def outputs_with(noise):
        return [references[0] + rng.normal(0, noise, references[0].shape)]

    def near(outputs):  # the same errors as ``outputs`` and a little more (as files one rewrite apart)
        return [o + rng.normal(0, 0.01, o.shape) for o in outputs]

    plain_out = outputs_with(0.1)
    judged = {"plain": choice.sample_errors(plain_out, references)}
    no_gain = choice.hopeless("cle", judged, references)(held, near(plain_out))
    assert no_gain and "stopped after the first fold" in no_gain and "over plain" in no_gain
    assert choice.hopeless("cle", judged, references)(held, outputs_with(0.05)) is None  # 6 dB better: goes on
    assert choice.hopeless("cle", judged, references)(held, plain_out) is None  # equal outputs: no evidence
    assert choice.hopeless("cle", judged, references)(held[:choice.MIN_STOP_SAMPLES - 1], near(plain_out)) is None
    # against a parent with a strict part of its rewrites: cle+bias no better than bias stops, though it
    # beats plain
    bias_out = outputs_with(0.05)
    judged["bias"] = choice.sample_errors(bias_out, references)
    reason = choice.hopeless("cle+bias", judged, references)(held, near(bias_out))
    assert reason and "over bias" in reason
    assert choice.hopeless("cle", {"bias": judged["bias"]}, references)(held, near(bias_out)) is None  # not a part
    base = np.ones(40)
    candidates = [{"name": "plain", "score_db": 10.0, "noise": base, "correlation": 0.9, "verdict_reasons": []},
                  {"name": "cle", "score_db": 30.0, "stopped_early": "stopped", "correlation": 0.9,
                   "verdict_reasons": []}]
    assert choice.choose(candidates)[0] == "plain"


def test_a_constant_output_scores_below_plain_in_the_search(tf_bits):
    """The search's score cannot be fooled by a constant: on outputs that vary across the samples, the
    float model's mean output (the best constant) scores 0 dB centered and correlation 0."""
    from converters.tf2.recovery import choice, search

    rng = np.random.RandomState(4)
    reference = np.concatenate([np.tile([[0.97, 0.03]], (38, 1)), np.tile([[0.1, 0.9]], (2, 1))])
    reference = reference + rng.normal(0, 0.01, reference.shape)
    good = reference + rng.normal(0, 0.01, reference.shape)
    constant = np.tile(reference.mean(axis=0), (40, 1))
    plain = dict(choice.score([good], [reference], [1 / 256.0]), name="plain")
    flat = dict(choice.score([constant], [reference], [1 / 256.0]), name="bias")
    assert flat["sqnr_db"] > 10  # raw SQNR: the constant looks fine on this skewed set
    assert flat["score_db"] <= 0.01 and flat["correlation"] == 0.0 and flat["verdict_reasons"]
    assert plain["score_db"] > 10 and not plain["verdict_reasons"]
    assert choice.choose([plain, flat])[0] == "plain"


def _int8_converter(tf, model, samples):
    """TensorFlow's full-int8 converter of ``model`` with int8 I/O, calibrated on ``samples`` (the recipe)."""
    made = tf.lite.TFLiteConverter.from_keras_model(model)
    made.optimizations = [tf.lite.Optimize.DEFAULT]
    made.representative_dataset = lambda: ([x] for x in samples)
    made.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    made.inference_input_type = made.inference_output_type = tf.int8
    return made


def test_the_search_over_folds_quantizes_tflites_own_plain_model(tf_bits):
    """Cross-fitting calibrates each fold once and merges their min/max: plain fitted on all samples must
    still be TensorFlow's own file, and each fold's fit must see no sample of the fold it is judged on."""
    from converters.tf2 import calibrate
    from converters.tf2.recovery import choice, search

    tf, tf_keras = tf_bits
    model = _model(tf_keras)
    samples = [sample[0] for sample in _inputs(30, 0)]

    def converter():
        return _int8_converter(tf, model, samples)

    expected = converter().convert()  # no hook: TensorFlow's calibration over every sample
    searched = converter()
    hook = calibrate.install(searched, recovery=search.parse("plain,bias"))
    searched.convert()
    section = hook.quantization
    assert section["validation"]["folds"] == search.folds_for(30) == 3
    assert [c["name"] for c in section["candidates"]] == ["plain", "bias"]
    for candidate in section["candidates"]:
        assert candidate["sqnr_centered_db"] is not None and candidate["correlation"] is not None
    plain_again = converter()
    calibrate.install(plain_again, recovery=search.parse("plain"))
    assert plain_again.convert() == expected
    # ... and the search over folds (each calibrated alone, min/max merged) quantized plain to that model:
    # every scale, zero point and constant the same (the bytes differ only in TensorFlow's metadata)
    from converters.tf2.recovery.graph import Graph

    ours, theirs = Graph(bytearray(hook.plain_model)), Graph(bytearray(expected))
    assert ours.op_signature() == theirs.op_signature()
    for t in range(len(theirs.tensor_names)):
        a, b = ours.quantization(t), theirs.quantization(t)
        assert (a is None) == (b is None), t
        if a is not None:
            assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]), theirs.tensor_names[t]
        if theirs.is_constant(t):
            assert np.array_equal(ours.values(t), theirs.values(t)), theirs.tensor_names[t]
    folds = search._fold_indices(30, 3)
    assert sorted(i for fold in folds for i in fold) == list(range(30))
    assert all(set(a).isdisjoint(b) for a in folds for b in folds if a is not b)


def test_a_search_that_fails_on_a_model_keeps_the_plain_conversion(tf_bits, monkeypatch):
    """A model the rewrites do not expect must never cost the user the conversion: plain is kept, and
    the report says why."""
    from converters.tf2 import calibrate
    from converters.tf2.recovery import equalize, search

    tf, tf_keras = tf_bits
    model = _model(tf_keras)
    samples = [sample[0] for sample in _inputs(30, 0)]

    def converter():
        return _int8_converter(tf, model, samples)

    plain = converter()
    calibrate.install(plain, recovery=search.parse("plain"))
    expected = plain.convert()

    def broken(graph, stats):
        raise IndexError("an op layout the rewrites do not know")

    monkeypatch.setattr(equalize, "plan", broken)
    monkeypatch.delenv("TFBRIDGE_DEBUG", raising=False)
    failing = converter()
    hook = calibrate.install(failing, recovery=search.parse("auto"))
    content = failing.convert()
    assert hook.quantization["chosen"] == "plain"
    assert "IndexError" in hook.quantization["why"] and "plain" in hook.quantization["why"]
    assert content == expected  # TFLite's own plain conversion, on every calibration sample


def test_report_marks_a_stopped_candidate_and_says_why_below_the_table(tf_bits):
    from converters.tf2 import report

    section = {"chosen": "bias", "why": "it gained", "validation": {"split": "cross-fitting"},
               "candidates": [{"name": "plain", "sqnr_centered_db": 22.9}, {"name": "bias", "sqnr_centered_db": 23.2},
                              {"name": "cle", "sqnr_centered_db": 23.1, "scored_samples": 34,
                               "stopped_early": "stopped after the first fold: its gain over plain there is -0.07 to "
                                                "+0.02 dB"}]}
    lines = report.quantization_lines({"quantization": section, "tflite": {}})
    rows = [line for line in lines if line.startswith("| cle")]
    assert rows and "(stopped after the first fold)" in rows[0]
    reason = [k for k, line in enumerate(lines) if line.startswith("cle: stopped after the first fold")]
    assert reason and lines[reason[0] - 1] == "" and "34 samples" in lines[reason[0]]
