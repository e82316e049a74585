"""Calibration on every core: the float model observed by TFLite's interpreter, or the samples in shards; exact.

For whom: ``converters.tf2.quantize`` (the int8 conversion step) and the tests; ``tf2`` environment only.

How: ``install(converter, jobs)`` replaces the converter's quantization stage (``_quantize``, TF 2.21's
``TFLiteConverterBase``; feature-detected, the converter's own path stays when it is missing or when the
request is not full-integer MLIR quantization). TensorFlow still converts the graph to a float TFLite
model once. Then one of two routes computes the statistics TensorFlow's ``Calibrator`` would record
(``info["route"]`` says which, ``info["route_reason"]`` why not the fast one):

- **the fast route** (``observe_fast``, "interpreter"): TFLite's interpreter runs the float model with the
  same builtin kernels on ``jobs`` threads (at least 2), keeps every tensor, and numpy reads each logged
  tensor's min/max once per sample; an operator that TFLite runs in place (its output written over an
  input's buffer: the residual ADDs of ResNet50) widens that input's range by its output's, as the
  calibrator's second look at the inputs after the kernel does. It is taken per model only when it can
  see everything the calibrator logs (one subgraph, no custom op, no op with kernel intermediates such
  as LSTM) and when, on the first sample, it records exactly what TensorFlow's calibrator recorded, tensor
  for tensor and value for value; the statistics then go into TensorFlow's own calibrated model of that
  first sample (``merge_ranges``). The same kernels on the same shapes round the same way for every
  sample, so equality on the first sample is equality on all (the merged statistics are still checked
  for NaN). ResNet50 (vggface, 100 samples, 2 cores): 8.4 s instead of 12.2 s for two calibrator shards
  (0.073 s per sample: the float model's own speed), calibrated model and int8 file byte-identical; SENet50
  too (tests/integration/test_fast_calibration_tf2.py checks it on a small residual CNN).
- **the calibrator's route** ("calibrator", the fallback, or ``route="calibrator"``): instead of its
  one-core ``Calibrator.calibrate`` over every sample, this module

1. writes the samples once to a scratch file (they are streamed from the representative data set, so
   memory does not grow with their number),
2. calibrates the first sample in this process and times it; from that time, the number of samples,
   ``jobs`` (default: the number of cores) and the free memory it decides the number of shards (one =
   no other process: a small model or a few samples are not worth a process start),
3. starts one worker process per other shard (``python -m converters.tf2.calibrate``) and calibrates its
   own shard meanwhile. Each process runs TensorFlow's own calibration wrapper (the same
   ``_pywrap_tensorflow_lite_calibration_wrapper.so`` that ``tf.lite`` uses, loaded without the rest of
   TensorFlow: a worker starts in about a second and holds ~50 MB plus the model, instead of ~600 MB),
4. merges the statistics: TFLite's calibrator records plain min/max per tensor over all samples (no
   moving average), so the minimum of the shards' minimums and the maximum of their maximums are exactly
   what one calibrator would have recorded over all samples. They are written in place into this
   process's calibrated model (the min/max vectors of the flatbuffer; nothing else changes),
5. and hands that calibrated model to TensorFlow's own ``mlir_quantize`` with the converter's own
   arguments, so the rest of ``convert()`` (buffer de-duplication, metadata) is TensorFlow's.

The result is byte-identical to TensorFlow's sequential conversion (tests/integration/
test_calibration_shards_tf2.py checks it for 1, 2 and 3 shards). ``install`` also keeps the float model
the converter made (``float_model()``): the same graph as a float conversion (same ops and tensors, the
same outputs), so the step does not convert the graph a second time for the float comparison model.

Memory bound: a worker holds the float model (the bytes it read, which the wrapper uses in place), the
interpreter's tensors, its part of the samples (memory-mapped) and ~60 MB of Python, numpy and the
wrapper; its peak is at the end, when ``Calibrate()`` writes the model anew with the statistics (an
unpacked copy, the builder and the returned bytes). Estimate: ``WORKER_BASE_BYTES + 6 x model + its
samples`` (ResNet50, 94 MB float, 50 samples: 0.72 GB estimated, 0.71 GB measured as VmHWM). Shards are
limited so that the workers together take at most ``MEMORY_SHARE`` (half) of the available memory
(``MemAvailable`` of /proc/meminfo). Before starting workers the parent returns the free heap pages of the
graph conversion to the system (``release_free_memory``: ~340 MB on ResNet50), so parent + worker
(1.17 + 0.71 GB on ResNet50) stay below the by-hand recipe's peak (2.09 GB, same machine).

What can go wrong: a worker that fails (killed, out of memory) makes the calibration fall back to this
process alone for its shard, recorded in ``info["fallback"]``; samples of different shapes raise
``CalibrationDataError`` (TensorFlow's calibrator fails on them too); errors of the representative data
set propagate unchanged.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from converters.tf2 import beside
from converters.tf2.calibration_observer import (  # noqa: F401 - the fast route; tests use these names here
    FAST_MIN_THREADS, MEMORY_SHARE, InterpreterObserver, differences, in_place_inputs, observation_plan, observe_fast)
from converters.tf2.tflite_model import calibration_wrapper, merge_ranges, tensor_ranges  # noqa: F401 - callers' names

MIN_SAMPLES_PER_SHARD = 4
WORKER_START_SECONDS = 1.5  # interpreter + numpy + the wrapper + reading the model (measured: ~1.2 s)
WORKER_BASE_BYTES = 64 << 20


# (TensorFlow's own pieces, the flatbuffer's min/max: converters.tf2.tflite_model)

# ------------------------------------------------------------------------------------ the sample spool

class SampleSpool(object):
    """The calibration samples on disk: one raw float file per model input, (N, *shape) once complete.

    Written as the representative data set yields (one sample in memory at a time); read back memory-
    mapped by every shard.
    """

    def __init__(self, folder):
        self.folder = folder
        self.count = 0
        self.inputs = None  # [{path, shape, dtype}]
        self._handles = []

    def add(self, sample):
        arrays = [np.asarray(x) for x in _as_input_list(sample)]
        if self.inputs is None:
            self.inputs = []
            for i, array in enumerate(arrays):
                path = os.path.join(self.folder, "input%d.raw" % i)
                self.inputs.append({"path": path, "shape": list(array.shape), "dtype": array.dtype.str})
                self._handles.append(open(path, "wb"))
        if len(arrays) != len(self.inputs) or any(
                list(a.shape) != d["shape"] or a.dtype.str != d["dtype"] for a, d in zip(arrays, self.inputs)):
            from converters.errors import CalibrationDataError

            raise CalibrationDataError(
                "calibration sample %d has inputs of shape/dtype %s, the first had %s." % (
                    self.count, [(list(a.shape), a.dtype.str) for a in arrays],
                    [(d["shape"], d["dtype"]) for d in self.inputs]),
                step="calibrate", hint="Every calibration sample must have the model's input shapes.")
        for handle, array in zip(self._handles, arrays):
            handle.write(np.ascontiguousarray(array).tobytes())
        self.count += 1

    def close(self):
        for handle in self._handles:
            handle.close()
        self._handles = []

    def describe(self):
        return {"count": self.count, "inputs": self.inputs}

    def nbytes(self):
        if not self.inputs:
            return 0
        return self.count * sum(int(np.prod(d["shape"])) * np.dtype(d["dtype"]).itemsize for d in self.inputs)


class UnsupportedSamples(Exception):
    """Samples this module does not shard (signature-keyed dicts): TensorFlow's calibrator takes them."""


def _as_input_list(sample):
    if isinstance(sample, dict) or (isinstance(sample, tuple) and len(sample) == 2 and isinstance(sample[1], dict)):
        raise UnsupportedSamples("signature-keyed samples are calibrated in one process")
    if isinstance(sample, (list, tuple)):
        return list(sample)
    return [sample]


def open_samples(described):
    """The spool's arrays (memory-mapped), one (N, *shape) array per input."""
    arrays = []
    for entry in described["inputs"]:
        shape = [described["count"]] + list(entry["shape"])
        arrays.append(np.memmap(entry["path"], dtype=np.dtype(entry["dtype"]), mode="r", shape=tuple(shape)))
    return arrays


def calibrate_range(wrapper_module, model_content, arrays, start, stop, calibrator=None):
    """Feed samples ``start:stop`` to a calibration wrapper (a new one unless ``calibrator`` is given),
    as ``Calibrator._feed_tensors`` does (Prepare with the sample shapes once, then FeedTensor)."""
    if calibrator is None:
        calibrator = wrapper_module.CalibrationWrapper(model_content, [], [])
        calibrator.Prepare([list(a.shape[1:]) for a in arrays])
    for i in range(start, stop):
        calibrator.FeedTensor([np.array(a[i]) for a in arrays])
    return calibrator


# ------------------------------------------------------------------------------------- shard decision

def _proc_kib(path, field):
    """A "Field:  N kB" value of a /proc status file, in bytes; None where there is no such file or field."""
    try:
        with open(path) as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def available_memory():
    """Bytes of MemAvailable (/proc/meminfo), or None where there is no such file."""
    return _proc_kib("/proc/meminfo", "MemAvailable")


def worker_bytes(model_size, shard_sample_bytes):
    """The estimated peak memory of one worker (see the module docstring)."""
    return WORKER_BASE_BYTES + 6 * model_size + shard_sample_bytes


def plan_shards(samples, seconds_per_sample, jobs, model_size, sample_bytes, memory=None):
    """How many shards (1 = this process alone) and why.

    ``samples``: the samples left after the timed first one. Sharding pays when the calibration left
    takes longer than starting a worker; shards are at most ``jobs``, at least ``MIN_SAMPLES_PER_SHARD``
    samples each, and the workers' estimated memory must fit in ``MEMORY_SHARE`` of ``memory``.
    """
    jobs = max(1, int(jobs or 1))
    if jobs == 1:
        return 1, "one job"
    by_samples = max(1, samples // MIN_SAMPLES_PER_SHARD)
    if by_samples == 1:
        return 1, "too few samples (%d)" % samples
    if samples * seconds_per_sample < 2 * WORKER_START_SECONDS:
        return 1, "calibration takes %.1f s: less than starting a process" % (samples * seconds_per_sample)
    shards = min(jobs, by_samples)
    if memory:
        per_sample = sample_bytes / max(1, samples)
        while shards > 1:
            workers = (shards - 1) * worker_bytes(model_size, per_sample * samples / shards)
            if workers <= MEMORY_SHARE * memory:
                break
            shards -= 1
        if shards == 1:
            return 1, "not enough memory for a worker"
    return shards, "%d jobs" % jobs


def default_jobs():
    """The number of cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


# --------------------------------------------------------------------------------------- the shards

def _worker_command(model_path, spool, start, stop, out_path):
    return [sys.executable, "-m", "converters.tf2.calibrate", model_path, json.dumps(spool.describe()),
            str(start), str(stop), out_path]


def peak_rss_bytes():
    """This process's peak resident memory so far (bytes): VmHWM of /proc/self/status (unlike ru_maxrss,
    it starts afresh at exec, so a worker forked from a large parent reports its own peak), 0 elsewhere."""
    return _proc_kib("/proc/self/status", "VmHWM") or 0


def release_free_memory():
    """Give the heap's free pages back to the system (glibc ``malloc_trim``) before workers start.

    The graph conversion that precedes calibration peaks high and frees most of it, but glibc keeps the
    freed pages mapped; returned, they leave room for the workers within the by-hand recipe's peak.
    """
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _read_worker_ranges(path):
    with np.load(path) as data:
        keys = [tuple(int(v) for v in k) for k in data["keys"]]
        lengths = data["lengths"]
        mins, maxs = data["mins"], data["maxs"]
        peak = int(data["peak_rss"])
    ranges = {}
    offset = 0
    for key, length in zip(keys, lengths):
        ranges[key] = (mins[offset:offset + length], maxs[offset:offset + length])
        offset += length
    return ranges, peak


def _write_worker_ranges(path, ranges):
    keys = sorted(ranges)
    lengths = [len(ranges[k][0]) for k in keys]
    mins = np.concatenate([np.asarray(ranges[k][0], np.float32) for k in keys]) if keys else np.zeros(0, np.float32)
    maxs = np.concatenate([np.asarray(ranges[k][1], np.float32) for k in keys]) if keys else np.zeros(0, np.float32)
    temporary = path + ".partial.npz"
    np.savez(temporary, keys=np.array(keys, dtype=np.int64).reshape(-1, 2), lengths=np.array(lengths, np.int64),
             mins=mins, maxs=maxs, peak_rss=np.int64(peak_rss_bytes()))
    os.replace(temporary, path)


ROUTES = ("auto", "calibrator")


def calibrate_samples(model_content, dataset_gen, jobs=None, custom_ops=False, route="auto", collector=None,
                      fold_of=None, observed=None):
    """Calibrate ``model_content`` (a float TFLite model with intermediate tensors) on the samples of
    ``dataset_gen``; returns (calibrated model bytes, info).

    ``route``: "auto" takes the fast route (``observe_fast``: the interpreter on ``jobs`` threads, at least
    two) when the model allows it and the interpreter records exactly the calibrator's statistics on the
    first sample, else TensorFlow's calibrator in up to ``jobs`` processes; "calibrator" forces the latter.
    info: {route, route_reason, samples, shards, reason, seconds_per_sample, spool_seconds,
    calibrate_seconds, merge_seconds, worker_seconds: [...], fallback?, fast?}. ``custom_ops``: the
    converter registers custom ops (only this process can), so neither the fast route nor shards.
    ``collector``: a ``converters.tf2.recovery.statistics.Collector`` the fast route feeds as it runs
    (left incomplete by the calibrator's route). ``fold_of`` and ``observed``: the recovery search's folds,
    calibrated in the same pass when the fast route is taken (``observe_fast``; ``observed`` is left
    empty by the calibrator's route).
    """
    if route not in ROUTES:
        raise ValueError("unknown calibration route %r (one of %s)" % (route, ", ".join(ROUTES)))
    wrapper = calibration_wrapper()
    jobs = default_jobs() if jobs is None else jobs
    info = {"jobs": jobs}
    with tempfile.TemporaryDirectory(prefix="tfbridge-calib-") as folder:
        started = time.perf_counter()
        spool = SampleSpool(folder)
        try:
            for sample in dataset_gen():
                spool.add(sample)
        finally:
            spool.close()
        info["samples"] = spool.count
        info["spool_seconds"] = round(time.perf_counter() - started, 2)
        if spool.count == 0:
            raise ValueError("the representative data set yielded no sample")
        arrays = open_samples(spool.describe())
        started = time.perf_counter()
        own = calibrate_range(wrapper, model_content, arrays, 0, 1)
        first = time.perf_counter() - started
        info["seconds_per_sample"] = round(first, 3)
        if route == "calibrator":
            why = "asked for"
        elif custom_ops:
            why = "custom ops are registered in the converter's process only"
        else:
            release_free_memory()  # the graph conversion's freed heap: Calibrate() and the interpreter fit in it
            holder = [own]
            own = None

            def first_calibrated():
                calibrated = holder[0].Calibrate()
                holder[0] = None  # the wrapper's interpreter and model go: the fast route does not need them
                release_free_memory()
                return calibrated

            try:
                calibrated, why = observe_fast(model_content, first_calibrated, arrays, spool.count,
                                               max(FAST_MIN_THREADS, jobs), available_memory(), collector,
                                               fold_of, observed)
            except Exception as exc:  # noqa: BLE001 - e.g. an op the interpreter cannot prepare: the calibrator
                if os.environ.get("TFBRIDGE_DEBUG"):
                    raise
                calibrated, why = None, "the interpreter failed: %s: %s" % (type(exc).__name__, str(exc)[:200])
            release_free_memory()
            if calibrated is not None:
                info.update({"route": "interpreter", "fast": why, "shards": 1,
                             "reason": "the interpreter on %d threads" % why["threads"],
                             "calibrate_seconds": round(time.perf_counter() - started, 2),
                             "peak_rss_mb": peak_rss_bytes() >> 20})
                del arrays
                return bytes(calibrated), info
            own = holder[0] or calibrate_range(wrapper, model_content, arrays, 0, 1)  # sample 0 again if used
            if collector is not None:
                collector.reset()
        info["route"], info["route_reason"] = "calibrator", why
        left = spool.count - 1
        if custom_ops:
            shards, reason = 1, "custom ops are registered in this process only"
        else:
            shards, reason = plan_shards(left, first, jobs, len(model_content), spool.nbytes() * left // spool.count,
                                         available_memory())
        info["shards"], info["reason"] = shards, reason
        bounds = [1 + (left * k) // shards for k in range(shards + 1)]
        workers = []
        if shards > 1:
            release_free_memory()
            model_path = os.path.join(folder, "model.tflite")
            with open(model_path, "wb") as handle:
                handle.write(model_content)
            env = beside.worker_env()
            for k in range(1, shards):
                out_path = os.path.join(folder, "ranges%d.npz" % k)
                log_path = os.path.join(folder, "worker%d.log" % k)
                log = open(log_path, "wb")
                process = subprocess.Popen(_worker_command(model_path, spool, bounds[k], bounds[k + 1], out_path),
                                           env=env, stdout=log, stderr=subprocess.STDOUT)
                workers.append({"process": process, "out": out_path, "log": log, "log_path": log_path,
                                "range": (bounds[k], bounds[k + 1]), "started": time.perf_counter()})
        try:
            calibrate_range(wrapper, model_content, arrays, 1, bounds[1], calibrator=own)
            info["own_seconds"] = round(time.perf_counter() - started, 2)
            others = []
            failed = []
            info["worker_seconds"] = []
            for worker in workers:
                code = worker["process"].wait()
                worker["log"].close()
                info["worker_seconds"].append(round(time.perf_counter() - worker["started"], 2))
                if code == 0 and os.path.exists(worker["out"]):
                    ranges, peak = _read_worker_ranges(worker["out"])
                    others.append(ranges)
                    info.setdefault("worker_peak_rss_mb", []).append(peak >> 20)
                else:
                    failed.append(worker)
            for worker in failed:  # redo a failed worker's samples here: slower, never wrong
                with open(worker["log_path"], "rb") as handle:
                    tail = handle.read()[-300:].decode("utf-8", "replace")
                info.setdefault("fallback", []).append("worker for samples %d-%d failed (exit %s): %s" % (
                    worker["range"][0], worker["range"][1], worker["process"].returncode, tail.strip()))
                calibrate_range(wrapper, model_content, arrays, worker["range"][0], worker["range"][1],
                                calibrator=own)
        finally:
            for worker in workers:
                if worker["process"].poll() is None:
                    worker["process"].kill()
                    worker["process"].wait()
                if not worker["log"].closed:
                    worker["log"].close()
        calibrated = own.Calibrate()
        info["calibrate_seconds"] = round(time.perf_counter() - started, 2)
        started = time.perf_counter()
        if others:
            try:
                calibrated = merge_ranges(calibrated, others)
            except ValueError as exc:  # control flow: redo everything here
                info.setdefault("fallback", []).append(str(exc))
                calibrated = calibrate_range(wrapper, model_content, arrays, 0, spool.count).Calibrate()
        info["merge_seconds"] = round(time.perf_counter() - started, 3)
        info["peak_rss_mb"] = peak_rss_bytes() >> 20  # this process, so far
        del arrays
    return bytes(calibrated), info


# ------------------------------------------------------------------------ the converter's quant stage

class ShardedCalibration(object):
    """Replaces a converter's ``_quantize`` (see the module docstring); keeps the float model and the
    calibration's figures (``info``, ``float_model``, ``quantize_seconds``)."""

    def __init__(self, converter, jobs=None, route="auto", keep_samples=0, recovery=None, every_candidate=False):
        self.converter = converter
        self.every_candidate = every_candidate  # fit every judged candidate on all samples (--eval), not two
        self.recovery = recovery  # candidate names (converters.tf2.recovery.search.parse) or None: plain
        self.quantization = None  # report.json's ``quantization`` when the candidates were searched
        self.plain_model = None  # the plain candidate's int8 model (model_int8_plain.tflite)
        self.extras = {}  # the transformed float models (converters.tf2.recovery.search)
        self.jobs = jobs
        self.route = route
        self.keep_samples = keep_samples
        self.original = converter._quantize
        self.float_model = None
        self.calibrated_model = None
        self.samples = []  # the first ``keep_samples`` calibration samples, for the per-layer debugger
        self.info = None
        self.quantize_seconds = None
        self.phases = []  # [{phase, start, end}] on the monotonic clock, for the run's timeline (issue 31)
        self.entered = None  # when the converter handed over its float model (the graph's conversion ended)

    def _phase(self, name, start):
        self.phases.append({"phase": name, "start": round(start, 3), "end": round(time.monotonic(), 3)})

    def _keeping(self, dataset_gen):
        """``dataset_gen`` that also keeps a copy of its first ``keep_samples`` samples."""
        def generate():
            self.samples = []
            for sample in dataset_gen():
                if len(self.samples) < self.keep_samples:
                    self.samples.append([np.array(x) for x in _as_input_list(sample)])
                yield sample
        return generate

    def __call__(self, result, input_type, output_type, activations_type, bias_type, allow_float,
                 enable_variable_quantization, debug_options):
        import tensorflow as tf
        from tensorflow.lite.python import lite
        from tensorflow.lite.python.optimize import calibrator

        converter = self.converter
        self.float_model = bytes(result)
        registerers = converter.target_spec._experimental_custom_op_registerers
        if not converter.experimental_new_quantizer or activations_type == tf.int16 or \
                converter._experimental_calibrate_only:
            return self.original(result, input_type, output_type, activations_type, bias_type, allow_float,
                                 enable_variable_quantization, debug_options)
        if not isinstance(converter.representative_dataset, lite.RepresentativeDataset):
            converter.representative_dataset = lite.RepresentativeDataset(converter.representative_dataset)
        self.entered = time.monotonic()  # the graph's conversion to a float TFLite model ends here
        model = calibrator.add_intermediate_tensors(result)
        if self.recovery and tuple(self.recovery) != ("plain",) and not registerers:
            searched = self._search(model, result, input_type, output_type, enable_variable_quantization,
                                    debug_options)
            if searched is not None:
                return searched
        mono = time.monotonic()
        if registerers:  # custom ops: TensorFlow's own calibrator, in this process
            started = time.perf_counter()
            calibrated = calibrator.Calibrator(
                model, [x for x in registerers if isinstance(x, str)],
                [x for x in registerers if not isinstance(x, str)]).calibrate(
                    converter.representative_dataset.input_gen)
            self.info = {"shards": 1, "reason": "custom ops",
                         "calibrate_seconds": round(time.perf_counter() - started, 2)}
        else:
            try:
                calibrated, self.info = calibrate_samples(
                    model, self._keeping(converter.representative_dataset.input_gen), self.jobs, route=self.route)
            except UnsupportedSamples as exc:  # signature-keyed samples: TensorFlow's own calibrator
                started = time.perf_counter()
                calibrated = calibrator.Calibrator(model).calibrate(converter.representative_dataset.input_gen)
                self.info = {"shards": 1, "reason": str(exc),
                             "calibrate_seconds": round(time.perf_counter() - started, 2)}
        self.calibrated_model = calibrated
        self._phase("calibrate", mono)
        del model, result  # the float model stays as self.float_model; the copy with intermediates goes
        release_free_memory()  # mlir_quantize's peak is the conversion's highest after the graph's
        started = time.perf_counter()
        mono = time.monotonic()
        quantized = self._quantize_calibrated(calibrated, input_type, output_type, enable_variable_quantization,
                                              debug_options)
        self.quantize_seconds = round(time.perf_counter() - started, 2)
        self._phase("quantize", mono)
        return quantized

    def _quantize_calibrated(self, calibrated, input_type, output_type, enable_variable_quantization,
                             debug_options):
        """TensorFlow's quantization of a calibrated model: the same call, with the same arguments, as
        ``TFLiteConverterBase._quantize`` (TF 2.21)."""
        from tensorflow.lite.python import lite

        converter = self.converter
        return lite._mlir_quantize(
            calibrated,
            converter._experimental_disable_per_channel,
            input_data_type=input_type,
            output_data_type=output_type,
            enable_variable_quantization=enable_variable_quantization,
            disable_per_channel_for_dense_layers=converter._experimental_disable_per_channel_quantization_for_dense_layers,
            debug_options_str=debug_options.SerializeToString(),
        )

    def _search(self, model, result, input_type, output_type, enable_variable_quantization, debug_options):
        """Issue 22: the candidates of ``converters.tf2.recovery.search`` instead of one calibrate +
        quantize. Returns the chosen int8 model, or None (the plain path then runs: samples this module
        cannot hold, recorded in ``quantization``)."""
        from converters.tf2.recovery import search

        started = time.perf_counter()
        mono = time.monotonic()
        try:
            samples = [[np.array(x) for x in _as_input_list(sample)]
                       for sample in self.converter.representative_dataset.input_gen()]
        except UnsupportedSamples as exc:
            self.quantization = {"requested": list(self.recovery), "chosen": "plain",
                                 "why": "no search: %s" % exc}
            return None
        self.samples = samples[:self.keep_samples]
        spool_seconds = round(time.perf_counter() - started, 2)
        self._phase("calibration samples", mono)
        mono = time.monotonic()
        infos = []

        def calibrate(train, collector=None):
            calibrated, info = calibrate_samples(model, lambda: iter(train), self.jobs, route=self.route,
                                                 collector=collector)
            infos.append(info)
            return calibrated

        def calibrate_folds(train, fold_of, collector):
            """Every sample and each fold calibrated in one pass, with the float outputs: (calibrated,
            [fold calibrated], [outputs]); the last two None when the fast route was not taken (the
            search then calibrates each fold with ``calibrate``)."""
            observed = {}
            calibrated, info = calibrate_samples(model, lambda: iter(train), self.jobs, route=self.route,
                                                 collector=collector, fold_of=fold_of, observed=observed)
            infos.append(info)
            return calibrated, observed.get("folds"), observed.get("outputs")

        workers = []  # issue 31: the second process that quantizes beside the search, once told what to

        def quantize(calibrated):
            made = workers[0].take(calibrated) if workers else None
            if made is not None:
                return made
            return self._quantize_calibrated(calibrated, input_type, output_type, enable_variable_quantization,
                                             debug_options)

        def prefetch(models):
            if not workers:
                release_free_memory()  # the calibration's freed pages back to the system before a process starts
                try:
                    workers.append(beside.Worker(beside.arguments(
                        self.converter, input_type, output_type, enable_variable_quantization, debug_options)))
                except Exception as exc:  # noqa: BLE001 - a TensorFlow without these names: quantize here
                    sys.stderr.write("note: the quantizer's second process was not started (%s: %s)\n"
                                     % (type(exc).__name__, str(exc)[:200]))
                    return
            for content in models:
                workers[0].submit(content)

        if beside.quantize_beside(model, default_jobs() if self.jobs is None else self.jobs):
            quantize.prefetch = prefetch
        try:
            chosen, calibrated, plain, section, extras = search.search(
                bytes(result), samples, self.recovery, calibrate, quantize, calibration_model=model,
                calibrate_folds=calibrate_folds, every_candidate=self.every_candidate, defer_report=True,
                log=lambda message: sys.stderr.write(message + "\n"))
        except Exception as exc:  # noqa: BLE001 - a model the rewrites do not expect: never worse than plain
            if os.environ.get("TFBRIDGE_DEBUG"):
                raise
            self.quantization = {"requested": list(self.recovery), "chosen": "plain",
                                 "why": "the search failed on this model (%s: %s); TFLite's plain calibration "
                                        "was kept. Please report it." % (type(exc).__name__, str(exc)[:300])}
            sys.stderr.write("note: %s\n" % self.quantization["why"])
            self.samples = samples[:self.keep_samples]
            return None
        finally:
            for worker in workers:
                worker.close()
        if workers:
            section["quantize_worker"] = workers[0].record
        self._phase("search: calibrate, candidates, choose", mono)
        if extras.get("report_work") is not None:  # started now: it overlaps the writing of the files
            extras["report_work"] = beside.Background(extras["report_work"])
        self.info = dict(infos[0]) if infos else {}
        self.info["spool_seconds"] = spool_seconds
        self.info["calibrate_seconds"] = section["timings"]["calibrate"]
        self.quantize_seconds = round(time.perf_counter() - started - spool_seconds
                                      - section["timings"]["calibrate"], 2)
        self.calibrated_model = calibrated
        self.plain_model = plain
        self.quantization = section
        self.extras = extras
        return chosen

    def float_tflite(self):
        """The float model the converter made before calibration, as a .tflite (read-only buffers
        de-duplicated as TensorFlow does; without the conversion-metadata entry), or None."""
        if self.float_model is None:
            return None
        from tensorflow.lite.python import lite

        return lite._deduplicate_readonly_buffers(self.float_model)


ROUTE_VARIABLE = "TFBRIDGE_CALIBRATION_ROUTE"  # bench/run.py: the calibrator's route, to test its shards


def install(converter, jobs=None, route=None, keep_samples=0, recovery=None, every_candidate=False):
    """Make ``converter.convert()`` calibrate on every core; returns the ``ShardedCalibration`` (or None
    when this TensorFlow has no such stage: the converter then stays as it is). ``route``: see
    ``calibrate_samples``; None: the environment variable ``TFBRIDGE_CALIBRATION_ROUTE`` when set (the
    benchmark forces the calibrator's route with it, to compare its shards with one process), else "auto";
    ``keep_samples``: how many of the first calibration samples the hook keeps (``hook.samples``, for the
    per-layer debugger); ``every_candidate``: the search fits every judged candidate on all samples (for
    ``--eval``), not only the chosen one and plain."""
    if not callable(getattr(converter, "_quantize", None)):
        return None
    route = route or os.environ.get(ROUTE_VARIABLE) or "auto"
    hook = ShardedCalibration(converter, jobs, route, keep_samples, recovery, every_candidate)
    converter._quantize = hook
    return hook


# ------------------------------------------------------------------------------------------ a worker

def _worker_main(argv):
    """python -m converters.tf2.calibrate MODEL SPOOL_JSON START STOP OUT: one shard's min/max."""
    model_path, spool_json, start, stop, out_path = argv
    with open(model_path, "rb") as handle:
        model_content = handle.read()
    arrays = open_samples(json.loads(spool_json))
    wrapper = calibration_wrapper()
    calibrated = calibrate_range(wrapper, model_content, arrays, int(start), int(stop)).Calibrate()
    ranges = tensor_ranges(bytes(calibrated))
    _write_worker_ranges(out_path, ranges)
    return 0


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
