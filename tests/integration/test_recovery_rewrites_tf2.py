"""The layer-by-layer recovery rewrites of issue 30 (``empirical``: ebias, ``rounding``: gptq) keep what they
promise and pay where plain is bad, on real TFLite models.

Runs inside tf2 with real TF 2.21. The model is test_quantization_recovery_tf2's depthwise-separable CNN
(ReLU, ReLU6, zero padding, global pooling) with its channels rescaled across each ReLU boundary by factors
10^U(-1, 1): the same float function (positive factors commute with ReLU; checked to 1e-5 of the output),
with channel ranges 100x apart inside one per-tensor activation scale, as trained MobileNets have them.
Plain int8 loses it (measured: 14 dB per-channel, 3 dB per-tensor on fresh inputs). Quantized by
TensorFlow's own calibrator and ``mlir_quantize`` with int8 I/O.

Tolerances: the fast ebias schedule must give the naive schedule's file byte for byte (TFLite's int8
kernels are deterministic); gains are asserted on 40 fresh inputs (not calibrated on) as "better than
plain by at least 1 dB" where the measured gain is 3-6 dB; GPTQ's per-layer objective is asserted on fresh
inputs as a sum over layers (it is a least-squares fit: it may lose on a layer of few weights, not overall).
"""

import os

import numpy as np
import pytest

from tests.integration.test_quantization_recovery_tf2 import _float_tflite, _inputs, _model

pytestmark = pytest.mark.tf2

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

SPREAD = 1.0  # decades each side: channel factors 10^U(-1, 1)
GAIN_DB = 1.0


def _rescaled(tf_keras, model, seed=1):
    """``model`` with channels rescaled across its ReLU boundaries: conv0 -> dw1, conv2 -> (pad) -> dw3,
    dw3 -> conv4, conv4 -> (global mean) -> dense. dw1 -> ReLU6 -> conv2 is left alone (ReLU6's clip does
    not commute with a factor)."""
    layers = tf_keras.layers
    linear = [layer for layer in model.layers
              if isinstance(layer, (layers.Conv2D, layers.DepthwiseConv2D, layers.Dense))]
    rng = np.random.RandomState(seed)
    for a, b in ((0, 1), (2, 3), (3, 4), (4, 5)):
        first, second = linear[a], linear[b]
        wa, wb = first.get_weights(), second.get_weights()
        depthwise_first = isinstance(first, layers.DepthwiseConv2D)
        count = wa[0].shape[2] if depthwise_first else wa[0].shape[-1]
        factors = (10 ** rng.uniform(-SPREAD, SPREAD, count)).astype(np.float32)
        wa = [wa[0] * (factors.reshape(1, 1, -1, 1) if depthwise_first else factors)] + [w * factors for w in wa[1:]]
        if isinstance(second, layers.DepthwiseConv2D):
            wb[0] = wb[0] / factors.reshape(1, 1, -1, 1)
        elif isinstance(second, layers.Dense):
            wb[0] = wb[0] / factors.reshape(-1, 1)
        else:
            wb[0] = wb[0] / factors.reshape(1, 1, -1, 1)
        first.set_weights(wa)
        second.set_weights(wb)
    return model


@pytest.fixture(scope="module")
def models():
    import tensorflow as tf
    import tf_keras
    from tensorflow.lite.python import lite
    from tensorflow.lite.python.optimize import calibrator

    from converters.tf2.recovery import statistics

    model = _model(tf_keras)
    fresh = _inputs(40, 5000)
    batch = np.concatenate([sample[0] for sample in fresh])
    before = model.predict(batch, verbose=0)
    content = _float_tflite(tf, _rescaled(tf_keras, model))
    reference = statistics.run(content, fresh)[0][0]
    assert np.max(np.abs(reference - before)) <= 1e-5 * np.max(np.abs(before))  # the same float function
    calibration = _inputs(40, 0)
    calibrated = calibrator.Calibrator(calibrator.add_intermediate_tensors(content)).calibrate(
        lambda: iter(calibration))
    quantized = dict((mode, lite._mlir_quantize(calibrated, mode == "per_tensor", input_data_type=tf.int8,
                                                output_data_type=tf.int8))
                     for mode in ("per_channel", "per_tensor"))
    return {"float": content, "calibration": calibration, "fresh": fresh, "reference": reference,
            "int8": quantized, "calibrated": calibrated}


def _sqnr(outputs, reference):
    return 10 * np.log10(np.sum(reference ** 2) / np.sum((outputs - reference) ** 2))


def _constants(content):
    """{tensor index: (dtype, values copy, quantization)} of every constant tensor, and the op signature."""
    from converters.tf2.recovery.graph import Graph

    graph = Graph(bytearray(content))
    found = {}
    for t in range(len(graph.tensor_names)):
        quant = graph.quantization(t)
        found[t] = (graph.dtypes[t], graph.values(t).copy() if graph.is_constant(t) else None,
                    None if quant is None else (list(quant[0]), list(quant[1]), quant[2]))
    return found, graph.op_signature(), graph


def _changed(before, after):
    """Tensors whose values changed; asserts that types, scales and zero points did not."""
    changed = set()
    assert sorted(before) == sorted(after)
    for t in before:
        assert before[t][0] == after[t][0] and before[t][2] == after[t][2], t
        if before[t][1] is not None and not np.array_equal(before[t][1], after[t][1]):
            changed.add(t)
    return changed


def _roles(graph):
    from converters.tf2.recovery.graph import LINEAR_OPS

    weights, biases = set(), set()
    for op in graph.ops:
        if op.name in LINEAR_OPS:
            w, b = LINEAR_OPS[op.name][:2]
            weights.add(op.inputs[w])
            if len(op.inputs) > b and op.inputs[b] >= 0:
                biases.add(op.inputs[b])
    return weights, biases


@pytest.mark.parametrize("mode", ["per_channel", "per_tensor"])
def test_ebias_fast_schedule_is_the_naive_one_and_changes_only_biases(models, mode):
    from converters.tf2.recovery import bias, empirical, statistics
    from converters.tf2.recovery.graph import Graph, unshare

    plain = models["int8"][mode]
    fast, details = empirical.correct(plain, models["float"], models["calibration"])
    naive, naive_details = empirical.correct(plain, models["float"], models["calibration"], full=True)
    assert fast == naive  # the same values in every kernel: the same corrections, byte for byte
    one_by_one, _ = empirical.correct(plain, models["float"], models["calibration"], batch=False)
    assert fast == one_by_one  # sub-models run on a batch of samples: each row as one sample alone
    assert details["int8_runs_batched"] >= details["int8_runs"] - 1  # (a sub-model ending in a fixed RESHAPE: one by one)
    assert details["layers"] == naive_details["layers"] == 5  # every conv and depthwise (the dense has no bias)
    assert details["int8_ops_run"] < naive_details["int8_ops_run"]
    # invariant: the same ops, tensors, types, scales; only the int32 biases of linear ops changed
    own = unshare(plain, bias.bias_tensors(Graph(bytearray(plain))))  # the all-zero biases' shared buffer split
    before, signature, graph = _constants(own)
    after, new_signature, _ = _constants(fast)
    assert new_signature == signature == Graph(bytearray(plain)).op_signature()
    changed = _changed(before, after)
    weights, biases = _roles(graph)
    assert changed and changed <= biases
    # it pays on inputs it was not fitted on, at the output and at every corrected layer's output
    fresh, reference = models["fresh"], models["reference"]
    gain = _sqnr(statistics.run(fast, fresh)[0][0], reference) - _sqnr(statistics.run(plain, fresh)[0][0], reference)
    assert gain >= GAIN_DB, gain
    float_graph = Graph(bytearray(models["float"]))
    from converters.tf2.recovery.graph import linear_pairs

    pairs = linear_pairs(float_graph, graph)
    tensors = [q.outputs[0] for _, q in pairs]
    float_values = statistics.run(models["float"], fresh, tensors=[f.outputs[0] for f, _ in pairs])[1]
    plain_values = statistics.run(plain, fresh, tensors=tensors)[1]
    fast_values = statistics.run(fast, fresh, tensors=tensors)[1]
    for float_op, op in pairs[:-1]:  # the dense layer has no bias to correct
        expected = np.stack(float_values[float_op.outputs[0]])
        quant = graph.quantization(op.outputs[0])
        error = []
        for values in (plain_values, fast_values):
            raw = np.round(np.stack(values[op.outputs[0]]) / quant[0][0] + quant[1][0])
            error.append(np.abs(empirical.mean_error(raw, expected, quant, op.activation)[0]).mean() / quant[0][0])
        # what the correction targets (the mean error per channel where no clip hides it, in output LSB)
        # shrinks at every corrected layer, on fresh inputs
        assert error[1] < error[0], (op, error)


@pytest.mark.parametrize("mode", ["per_channel", "per_tensor"])
def test_gptq_rounds_each_weight_down_or_up_and_lowers_the_layer_error_on_fresh_inputs(models, mode):
    from converters.tf2.recovery import rounding, statistics
    from converters.tf2.recovery.graph import LINEAR_OPS, Graph, linear_pairs

    plain = models["int8"][mode]
    rounded, details = rounding.correct(plain, models["float"], models["calibration"])
    before, signature, graph = _constants(plain)
    after, new_signature, new_graph = _constants(rounded)
    assert new_signature == signature and len(rounded) == len(plain)
    changed = _changed(before, after)
    weights, _ = _roles(graph)
    assert changed and changed <= weights and details["weights_changed"] > 0
    float_graph = Graph(bytearray(models["float"]))
    pairs = linear_pairs(float_graph, graph)
    for float_op, op in pairs:
        w = op.inputs[LINEAR_OPS[op.name][0]]
        new = after[w][1].astype(np.int64)
        assert new.min() >= -127 and new.max() <= 127
        scales, _, axis = graph.quantization(w)
        shape = [1] * new.ndim
        if scales.size > 1:
            shape[axis] = -1
        exact = float_graph.values(float_op.inputs[LINEAR_OPS[float_op.name][0]]) / scales.reshape(shape)
        assert np.all((new == np.floor(exact)) | (new == np.ceil(exact))), op  # down or up, nothing else
        assert np.max(np.abs(new - before[w][1].astype(np.int64))) <= 1
    # the objective, E||(W - s Q) x||^2 summed over layers, on inputs it was not fitted on
    fresh = rounding._hessians(models["float"], float_graph, [f for f, _ in pairs], models["fresh"], 1)
    totals = [0.0, 0.0]
    for float_op, op in pairs:
        w_index = LINEAR_OPS[op.name][0]
        scales, _, axis = graph.quantization(op.inputs[w_index])
        w_float = float_graph.values(float_op.inputs[w_index]).astype(np.float64)
        for k, source in enumerate((graph, new_graph)):
            rows = rounding._as_rows(op.name, w_float, source.values(op.inputs[w_index]).astype(np.float64),
                                     scales, axis, op.depth_multiplier)
            totals[k] += rounding._error(rows[0], rows[1], rows[2], fresh[float_op.index], op.name,
                                         op.depth_multiplier) / max(1e-30, float(np.mean(w_float ** 2)))
    assert totals[1] < totals[0], totals
    # combined with the empirical correction it pays at the output, on fresh inputs
    from converters.tf2.recovery import empirical

    both, _ = empirical.correct(rounded, models["float"], models["calibration"])
    reference = models["reference"]
    gain = _sqnr(statistics.run(both, models["fresh"])[0][0], reference) - \
        _sqnr(statistics.run(plain, models["fresh"])[0][0], reference)
    assert gain >= GAIN_DB, gain


@pytest.mark.parametrize("mode", ["per_channel", "per_tensor"])
def test_the_layer_debugger_sees_the_written_files_weights_and_biases(models, mode):
    """The per-layer debugger instruments the calibrated model with its own quantization: without the
    written file's values it would show plain's layers when gptq+ebias was chosen."""
    from converters.tf2 import quant_debug
    from converters.tf2.recovery import empirical, rounding
    from converters.tf2.recovery.graph import LINEAR_OPS, Graph, transplant

    plain = models["int8"][mode]
    rounded, _ = rounding.correct(plain, models["float"], models["calibration"])
    written, _ = empirical.correct(rounded, models["float"], models["calibration"])
    instrumented = quant_debug.instrumented_model(models["calibrated"], mode == "per_tensor")

    def linear_values(content):
        graph = Graph(bytearray(content))
        found = []
        for op in graph.ops:
            w = op.inputs[LINEAR_OPS[op.name][0]] if op.name in LINEAR_OPS else -1
            if w >= 0 and graph.dtypes[w] == 9:  # int8 weights: the debug model's float copies left out
                found.append([graph.values(t).copy() for t in op.inputs[1:3] if t >= 0])
        return found

    # the debugger's own quantization is plain's: every value the same, nothing skipped
    same, unchanged = transplant(instrumented, plain)
    assert unchanged["skipped"] == [] and unchanged["changed"] == 0
    assert unchanged["copied"] == sum(len(values) for values in linear_values(plain)) == 11  # 6 weights, 5 biases
    content, report = transplant(instrumented, written)
    assert report["skipped"] == [] and report["copied"] == unchanged["copied"] and report["changed"] > 0
    got, wanted = linear_values(content), linear_values(written)
    assert len(got) == len(wanted) == 6
    assert all(np.array_equal(a, b) for g, w in zip(got, wanted) for a, b in zip(g, w))
    assert not all(np.array_equal(a, b) for g, w in zip(linear_values(instrumented), wanted) for a, b in zip(g, w))
    assert Graph(bytearray(content)).op_signature() == Graph(bytearray(instrumented)).op_signature()
    # the debugger runs on it and its per-layer errors are the written file's, not plain's
    dataset = lambda: (list(sample) for sample in models["calibration"][:8])  # noqa: E731
    seen = quant_debug.debug_layers(None, dataset, calibrated_model=models["calibrated"],
                                    per_tensor=mode == "per_tensor", written_model=written)
    before = quant_debug.debug_layers(None, dataset, calibrated_model=models["calibrated"],
                                      per_tensor=mode == "per_tensor")
    assert "error" not in seen and seen["values_from_written_file"]["changed"] == report["changed"]
    assert "values_from_written_file" not in before
    assert [layer["name"] for layer in seen["layers"]] == [layer["name"] for layer in before["layers"]]
    assert [layer["rmse_over_scale"] for layer in seen["layers"]] != [layer["rmse_over_scale"]
                                                                      for layer in before["layers"]]


def test_the_search_builds_ebias_and_gptq_candidates_with_the_plain_ops(models):
    import tensorflow as tf
    from tensorflow.lite.python import lite
    from tensorflow.lite.python.optimize import calibrator

    from converters.tf2.recovery import search

    assert search.parse("ebias+gptq, ebias+cle") == ("plain", "gptq+ebias", "cle+ebias")
    assert search.parse("bias+ebias+gptq+cle") == ("plain", "cle+gptq+bias+ebias")
    requested = search.parse("ebias,gptq,gptq+ebias")

    def calibrate(train, collector=None):
        return calibrator.Calibrator(calibrator.add_intermediate_tensors(models["float"])).calibrate(
            lambda: iter(train))

    def quantize(calibrated):
        return lite._mlir_quantize(calibrated, True, input_data_type=tf.int8, output_data_type=tf.int8)

    samples = models["calibration"]
    _, _, plain, section, extras = search.search(models["float"], samples, requested, calibrate, quantize)
    entries = dict((entry["name"], entry) for entry in section["candidates"])
    assert set(entries) == {"plain", "ebias", "gptq", "gptq+ebias"}
    assert section["same_ops_as_plain"]
    assert entries["ebias"]["ebias"]["layers"] == 5 and "error" not in entries["ebias"]["ebias"]
    assert entries["gptq"]["gptq"]["weights_changed"] > 0
    assert entries["gptq+ebias"]["gptq"] == entries["gptq"]["gptq"]  # rounded once, shared
    assert extras["candidates"]["gptq+ebias"] not in (extras["candidates"]["gptq"], plain)


def test_auto_adds_the_layerwise_stage_on_a_small_model_and_judges_it_like_the_rest(models):
    """auto's second stage: ebias and gptq+ebias, on top of the first stage's equalization when it won,
    built when their estimated cost fits the budget (a small CNN: always), judged by the same folds."""
    import tensorflow as tf
    from tensorflow.lite.python import lite
    from tensorflow.lite.python.optimize import calibrator

    from converters.tf2.recovery import search

    def calibrate(train, collector=None):
        return calibrator.Calibrator(calibrator.add_intermediate_tensors(models["float"])).calibrate(
            lambda: iter(train))

    def quantize(calibrated):
        return lite._mlir_quantize(calibrated, True, input_data_type=tf.int8, output_data_type=tf.int8)

    _, _, _, section, extras = search.search(models["float"], models["calibration"], search.AUTO, calibrate, quantize)
    stage = section["layerwise"]
    assert "skipped" not in stage, stage
    names = [c["name"] for c in section["candidates"]]
    assert names[:4] == list(search.AUTO) and names[4:] == stage["candidates"]
    prefix = "cle+" if "cle" in stage["first_stage_winner"] else ""
    assert stage["candidates"] == [prefix + "ebias", prefix + "gptq+ebias"]
    for candidate in section["candidates"]:
        assert candidate["sqnr_centered_db"] is not None and candidate["name"] in extras["candidates"]
    assert section["chosen"] in names
