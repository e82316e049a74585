"""Run a .tflite on float inputs and measure it against the float references.

For whom: the conversion step (tflite.json) and the tests; ``tf2`` environment. The model runs in LiteRT
(``ai_edge_litert.interpreter``; ``tf.lite.Interpreter`` is deprecated and only the fallback). Inputs are
quantized and outputs dequantized with each tensor's own scale and zero point, so an int8, uint8 or
float32 I/O model is compared on the same float scale as the reference.

Verdict ("match" / "mismatch"), justified:

- ``cosine >= 0.99`` (``MIN_COSINE``) on every output, flattened over the probe batch. Int8 PTQ of a
  healthy CNN typically lands at 0.995-0.9999 against its float model (ResNet50-class: ~0.998, measured
  in this project); 0.99 means the error energy is below ~2 % of the signal (SQNR ~ 17 dB), the level
  where the embedding/ranking of a face model still holds. Below it, something is off: wrong
  preprocessing of the calibration data, a clipped input range, or a layer that does not quantize well
  (see layers.json).
- ``top1_decisive >= 0.9`` (``MIN_TOP1``) for classification-like outputs ``(N, classes)``: the top-1
  agreement over the *decisive* samples, those whose reference top-2 margin is at least
  ``DECISIVE_MARGIN_LSB = 2`` output LSBs. An int8 output cannot resolve scores closer than one step, and
  a healthy model's output error is 0.5-1 LSB, so a flip inside 2 LSBs is rounding, not damage. This
  matters for untrained or nearly-uniform classifiers (measured: a random 10-class softmax has top-2
  margins of ~0.1 LSB and 44 % raw agreement at 0.51 LSB max error). 0.9 allows one flip in ten
  decisive samples. The raw ``top1_agreement`` is reported as well. With no decisive sample,
  top-1 is not judged.
- ``sqnr_centered_db >= 3`` (``MIN_CENTERED_SQNR_DB``) and ``correlation >= 0.7`` (``MIN_CORRELATION``) on
  every output whose variation across the probe an int8 output can resolve (``spread_lsb >= 2``;
  ``converters.shared.metrics.fidelity``). Cosine and raw top-1 are passed by a CONSTANT output on a
  probe dominated by one class (measured on a real 2-class MobileNet: cosine 0.986, top-1 0.98); these two
  are not. 0 dB centered is what the best constant scores: 3 dB means the int8 error carries at most half
  the energy of the signal that varies from sample to sample. r = 0.7 means the int8 output explains half
  the variance of the float one (r^2 = 0.49); independent noise at 3 dB alone gives r ~ 0.82, so the
  correlation bar fails models whose error is structured (a flipped or unrelated output), the centered
  bar fails flattened ones (shrunk towards the mean: r stays 1, the centered SQNR falls).
- ``max_abs_lsb`` (max |error| in units of the output scale; 0.5 is the rounding floor) and ``sqnr_db``
  are reported, not judged: they are the numbers to compare across options (per-tensor vs per-channel,
  more calibration data). Computed by ``converters.shared.metrics.compare_quantized`` (the shared helper).

What can go wrong: ``InputFileError`` (no such model), ``CalibrationDataError`` (probe does not fit the
model input shape).
"""

import os

import numpy as np

from converters.errors import CalibrationDataError, InputFileError

MIN_COSINE = 0.99
MIN_TOP1 = 0.9
MIN_CENTERED_SQNR_DB = 3.0
MIN_CORRELATION = 0.7
DECISIVE_MARGIN_LSB = 2.0


def make_interpreter(path, threads=2):
    """A LiteRT interpreter for ``path`` (``tf.lite.Interpreter`` if LiteRT is missing); tensors allocated."""
    if not os.path.exists(path):
        raise InputFileError("%s does not exist." % path, step="run")
    try:
        from ai_edge_litert.interpreter import Interpreter
        runtime = "ai_edge_litert"
    except ImportError:  # LiteRT not installed: the deprecated TF interpreter still works
        import tensorflow as tf
        Interpreter = tf.lite.Interpreter
        runtime = "tf.lite"
    interpreter = Interpreter(model_path=path, num_threads=threads)
    interpreter.allocate_tensors()
    interpreter.runtime_name = runtime
    return interpreter


def quantize(x, detail):
    """Float array -> the tensor's dtype with its scale/zero point (identity for float tensors)."""
    dtype = np.dtype(detail["dtype"])
    scale, zero_point = detail["quantization"]
    if dtype.kind == "f" or not scale:
        return np.asarray(x, dtype=dtype)
    info = np.iinfo(dtype)
    q = np.round(np.asarray(x, np.float64) / scale + zero_point)
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(q, detail):
    scale, zero_point = detail["quantization"]
    if np.dtype(detail["dtype"]).kind == "f" or not scale:
        return np.asarray(q, dtype=np.float32)
    return ((np.asarray(q, np.float64) - zero_point) * scale).astype(np.float32)


def run(path, inputs, threads=2, input_names=None):
    """Run the model one sample at a time on float ``inputs`` (N, ...) or a list of arrays, one per input
    (in the order of ``input_names`` when given, else of the model's inputs).

    Returns (dequantized outputs [array (N, ...)] in the model's output order, raw outputs, interpreter).
    """
    interpreter = make_interpreter(path, threads)
    dequantized, raw = run_batch(interpreter, inputs, input_names=input_names)
    return dequantized, raw, interpreter


def ordered_input_details(interpreter, input_names=None):
    """The interpreter's input details in the order of ``input_names`` (the model's input names), matched
    by tensor name ("image", "serving_default_image:0"); the interpreter's own order when any name is
    not found exactly once."""
    details = interpreter.get_input_details()
    if not input_names or len(input_names) != len(details) or len(details) == 1:
        return details

    def plain(name):
        name = name.split(":")[0]
        return name[len("serving_default_"):] if name.startswith("serving_default_") else name

    ordered = []
    for name in input_names:
        found = [d for d in details if plain(d["name"]) == name]
        if len(found) != 1:
            return details
        ordered.append(found[0])
    return ordered


def run_batch(interpreter, inputs, what="probe", input_names=None):
    """Run an allocated interpreter on float ``inputs`` (N, ...) or a list of arrays, one sample at a time.

    Returns (dequantized outputs, raw outputs), each a list in the model's output order. For batches of
    any data (the probe, ``--eval`` batches) with one interpreter kept across them.
    """
    input_details = ordered_input_details(interpreter, input_names)
    output_details = interpreter.get_output_details()
    if not isinstance(inputs, (list, tuple)):
        inputs = [inputs]
    if len(inputs) != len(input_details):
        raise CalibrationDataError("the model has %d inputs, the %s %d." % (len(input_details), what, len(inputs)),
                                   step="run")
    count = len(inputs[0])
    dequantized = [[] for _ in output_details]
    raw = [[] for _ in output_details]
    for index in range(count):
        for array, detail in zip(inputs, input_details):
            sample = np.asarray(array[index:index + 1], np.float32)
            if tuple(sample.shape) != tuple(detail["shape"]):
                raise CalibrationDataError(
                    "%s sample shape %s does not fit the model input %s."
                    % (what, sample.shape, list(detail["shape"])), step="run")
            interpreter.set_tensor(detail["index"], quantize(sample, detail))
        interpreter.invoke()
        for k, detail in enumerate(output_details):
            value = interpreter.get_tensor(detail["index"]).copy()
            raw[k].append(value)
            dequantized[k].append(dequantize(value, detail))
    return [np.concatenate(d) for d in dequantized], [np.concatenate(r) for r in raw]


def output_scale(detail, summary=None):
    """The quantization step of an output: its own scale, or for a float output the scale of the int8
    tensor that its DEQUANTIZE reads (so LSBs mean the same thing for every --output-io)."""
    scale = detail["quantization"][0]
    if scale:
        return float(scale)
    if summary is None:
        return None
    for op in summary["ops"]:
        if op["name"] == "DEQUANTIZE" and detail["index"] in op["outputs"]:
            scales = summary["tensors"][op["inputs"][0]].get("scales") or []
            return float(scales[0]) if scales else None
    return None


def evaluate(path, probe_inputs, reference_outputs, threads=2, input_names=None):
    """Run ``path`` on the probe and compare with ``reference_outputs`` (list in output order).

    Returns {status, runtime, outputs: [{name, dtype, scale, zero_point, cosine, top1_agreement,
    max_abs, max_abs_lsb, sqnr_db, ...}], cosine, top1_agreement, max_abs_lsb, sqnr_db (worst over
    outputs), thresholds, latency_ms}.
    """
    import time

    from converters.shared import metrics
    from converters.tf2 import npu

    started = time.perf_counter()
    outputs, _, interpreter = run(path, probe_inputs, threads, input_names)
    latency_ms = 1000.0 * (time.perf_counter() - started) / max(1, len(probe_inputs[0]
                                                                       if isinstance(probe_inputs, list)
                                                                       else probe_inputs))
    summary = npu.read_model(path)
    per_output = []
    for detail, dequantized, reference in zip(interpreter.get_output_details(), outputs, reference_outputs):
        reference = np.asarray(reference, np.float32).reshape(dequantized.shape)
        scale = output_scale(detail, summary)
        if scale:
            measured = metrics.compare_quantized(reference, dequantized, scale)
        else:  # no quantization step anywhere (a float model): same numbers, LSBs undefined
            measured = metrics.compare_quantized(reference, dequantized, 1.0)
            measured["max_abs_lsb"] = measured["mean_abs_lsb"] = measured["rmse_lsb"] = None
        measured["top1_decisive"], measured["decisive_samples"] = decisive_top1(reference, dequantized, scale)
        measured.update({"name": detail["name"], "dtype": np.dtype(detail["dtype"]).name, "scale": scale,
                         "zero_point": int(detail["quantization"][1])})
        per_output.append(measured)
    for o in per_output:
        o["reasons"] = verdict_reasons(o)
    ok = not any(o["reasons"] for o in per_output)
    decisive = [o["top1_decisive"] for o in per_output if o["top1_decisive"] is not None]
    top1 = [o["top1_agreement"] for o in per_output if o["top1_agreement"] is not None]
    lsbs = [o["max_abs_lsb"] for o in per_output if o["max_abs_lsb"] is not None]
    return {
        "status": "match" if ok else "mismatch",
        "runtime": getattr(interpreter, "runtime_name", "?"),
        "outputs": per_output,
        "cosine": min(o["cosine"] for o in per_output),
        "top1_agreement": min(top1) if top1 else None,
        "top1_decisive": min(decisive) if decisive else None,
        "decisive_samples": min((o["decisive_samples"] for o in per_output), default=0),
        "max_abs_lsb": max(lsbs) if lsbs else None,
        "sqnr_db": min(o["sqnr_db"] for o in per_output),
        "sqnr_centered_db": _worst(per_output, "sqnr_centered_db"),
        "correlation": _worst(per_output, "correlation"),
        "centered_judged": any(o["centered_judged"] for o in per_output),
        "reasons": ["%s: %s" % (o["name"], reason) for o in per_output for reason in o["reasons"]],
        "probe_samples": int(len(reference_outputs[0])),
        "latency_ms": round(latency_ms, 2),
        "thresholds": {"min_cosine": MIN_COSINE, "min_top1": MIN_TOP1,
                       "decisive_margin_lsb": DECISIVE_MARGIN_LSB, "min_sqnr_centered_db": MIN_CENTERED_SQNR_DB,
                       "min_correlation": MIN_CORRELATION, "min_spread_lsb": metrics.MIN_SPREAD_LSB},
    }


def _worst(per_output, key):
    values = [o[key] for o in per_output if o.get(key) is not None]
    return min(values) if values else None


def verdict_reasons(measured):
    """Why one output of an int8 model is a mismatch (empty: it matches), from ``compare_quantized``'s
    figures plus ``top1_decisive``: the thresholds of the module docstring. Shared by the probe's verdict
    and the candidate search, so that a candidate the verdict would fail is never chosen over plain."""
    reasons = []
    if measured["cosine"] < MIN_COSINE:
        reasons.append("cosine %.4f < %.2f" % (measured["cosine"], MIN_COSINE))
    if measured.get("top1_decisive") is not None and measured["top1_decisive"] < MIN_TOP1:
        reasons.append("top-1 agreement on decisive samples %.2f < %.2f" % (measured["top1_decisive"], MIN_TOP1))
    if measured.get("centered_judged"):
        if measured["sqnr_centered_db"] < MIN_CENTERED_SQNR_DB:
            reasons.append("centered SQNR %.1f dB < %.0f dB (error against the output's variation across the "
                           "probe; a constant output scores <= 0 dB)" % (measured["sqnr_centered_db"],
                                                                        MIN_CENTERED_SQNR_DB))
        if measured["correlation"] < MIN_CORRELATION:
            reasons.append("correlation with the float output %.2f < %.2f" % (measured["correlation"],
                                                                              MIN_CORRELATION))
    return reasons


def decisive_top1(reference, dequantized, scale):
    """(top-1 agreement over samples whose reference top-2 margin >= DECISIVE_MARGIN_LSB steps, count).

    (None, 0) for outputs that are not ``(N, classes)`` or when no sample is decisive.
    """
    reference = np.asarray(reference, np.float64)
    if reference.ndim != 2 or reference.shape[1] < 2 or not scale:
        return None, 0
    ordered = np.sort(reference, axis=1)
    margin = (ordered[:, -1] - ordered[:, -2]) / scale
    decisive = margin >= DECISIVE_MARGIN_LSB
    if not np.any(decisive):
        return None, 0
    agree = np.argmax(reference, axis=1) == np.argmax(np.asarray(dequantized), axis=1)
    return float(np.mean(agree[decisive])), int(np.sum(decisive))
