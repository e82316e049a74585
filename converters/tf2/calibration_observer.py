"""The fast calibration route: TFLite's interpreter observes the float model as TFLite's calibrator would.

For whom: ``converters.tf2.calibrate.calibrate_samples`` (which decides the route and checks this one
against TensorFlow's calibrator on the first sample); ``tf2`` environment only. What it records and why
it is exact is in ``converters.tf2.calibrate``'s module docstring ("the fast route").
"""

import time

import numpy as np

from converters.tf2 import tflite_model
from converters.tf2.tflite_model import merge_ranges, set_ranges, tensor_ranges

MEMORY_SHARE = 0.5  # at most this share of the available memory for calibration's workers and tensors

FAST_MIN_THREADS = 2  # TFLite's calibrator runs the multi-threaded float kernels; one thread rounds otherwise


def observation_plan(model_content):
    """What TFLite's calibrator logs, when the interpreter can see all of it: ({tensors, operators}, None),
    or (None, why not).

    The calibrator (``tensorflow/lite/tools/optimize/calibration/calibrator.cc``) logs, for every operator
    of the one subgraph, its float32 inputs and outputs that have no constant buffer ("loggable"), and the
    inputs once more after the kernel ran. The interpreter with ``experimental_preserve_all_tensors``
    shows every such tensor after ``invoke``, except what no tensor holds: tensors of other subgraphs
    (control flow runs them once per iteration), intermediates that the calibrator's LSTM logging kernel
    records inside the op, and custom ops (registered in the converter's process only).
    """
    schema = tflite_model.schema()
    model = schema.Model.GetRootAsModel(model_content, 0)
    if model.SubgraphsLength() != 1:
        return None, "the model has %d subgraphs (control flow)" % model.SubgraphsLength()
    graph = model.Subgraphs(0)
    buffers = model.Buffers

    def loggable(index):
        if index < 0:
            return False
        tensor = graph.Tensors(index)
        buffer = buffers(tensor.Buffer())
        return tensor.Type() == schema.TensorType.FLOAT32 and (buffer is None or buffer.DataLength() == 0)

    operators = []
    tensors = set()
    for o in range(graph.OperatorsLength()):
        operator = graph.Operators(o)
        name = tflite_model.operator_name(schema, model, operator.OpcodeIndex())
        if model.OperatorCodes(operator.OpcodeIndex()).CustomCode():
            return None, "custom op %s" % name
        if operator.IntermediatesLength() or operator.InputsLength() == 24:  # the LSTM logging kernel
            return None, "op %s records intermediate tensors inside its kernel" % name
        inputs = [int(i) for i in operator.InputsAsNumpy() if loggable(int(i))] if operator.InputsLength() else []
        outputs = [int(i) for i in operator.OutputsAsNumpy()] if operator.OutputsLength() else []
        operators.append({"name": name, "inputs": inputs, "outputs": outputs})
        tensors.update(inputs)
        tensors.update(i for i in outputs if loggable(i))
    return {"tensors": sorted(tensors), "operators": operators}, None


def in_place_inputs(model_content, plan, shapes):
    """[(input, output)] of the operators that TFLite runs in place (the output written over the input's
    buffer), and the bytes of every non-constant tensor of one sample, from an interpreter planned as the
    calibrator's is (no tensor preserved; nothing is run).

    Why it matters: the calibrator logs an operator's inputs once more after the kernel ran; when the kernel
    ran in place (TF 2.21: ADD, MUL, ... whose input is not read afterwards), that second look sees the
    operator's output, so the input's recorded range also covers the output's (ResNet50: the 16 residual
    ADDs). Raises ValueError when an output overlaps an input without being the same buffer.
    """
    interpreter = tflite_model.interpreter(model_content, shapes)
    pairs = []
    for operator in plan["operators"]:
        for i in operator["inputs"]:
            start, size = tflite_model.data_span(interpreter, i)
            for o in operator["outputs"]:
                other, other_size = tflite_model.data_span(interpreter, o)
                if (start, size) == (other, other_size):
                    pairs.append((i, o))
                elif size and other_size and start < other + other_size and other < start + size:
                    raise ValueError("op %s writes its output over part of its input" % operator["name"])
    total = sum(tflite_model.data_span(interpreter, i)[1] for i in plan["tensors"])
    del interpreter
    return pairs, total


class InterpreterObserver(object):
    """The fast route: per-tensor min/max of every tensor TFLite's calibrator logs, recorded by running the
    float model in TFLite's interpreter (the same builtin kernels, ``threads`` threads, every tensor kept)
    and reading each tensor once per sample with numpy.

    Why faster: the calibrator runs on one core (ResNet50: 0.21 s of CPU per 0.21 s per sample) and its
    logging kernel scans every logged tensor three times per op with scalar loops (a NaN check and
    ``minmax_element`` for the inputs before and after the kernel, then for the outputs); here the kernels
    run on ``threads`` threads and numpy's min and max are vectorised: ResNet50 (72 tensors, 2 cores)
    0.073 s per sample, 0.12 s of CPU.

    Why at least 2 threads: with 1 thread the interpreter's float kernels take another code path than the
    calibrator's and round differently (ResNet50: 51 of 72 tensors' ranges differ in the last bits; measured,
    TF 2.21); with 2 or 4 threads they record the calibrator's values bit for bit.

    Folds (issue 31): with ``fold_of`` (the fold of each sample index), the min/max are also kept per fold,
    so that one pass gives what a calibration of each fold alone would record (``ranges(fold)``), and
    with ``keep_outputs`` the model's float outputs of every sample are kept (the search's references).
    A ``collector`` may be a ``statistics.FoldCollectors``: each sample's tensors go to its fold's.
    """

    def __init__(self, model_content, plan, shapes, threads, pairs, collector=None, fold_of=None,
                 keep_outputs=False):
        self.tensors = plan["tensors"]
        self.pairs = pairs
        self.collector = collector  # issue 22: per-channel statistics (converters.tf2.recovery.statistics)
        if collector is not None:  # an input overwritten in place holds its op's output after the run
            collector.excluded = set(i for i, _ in pairs)
        self.interpreter = tflite_model.interpreter(model_content, shapes, threads=threads, preserve=True)
        self.inputs = [d["index"] for d in self.interpreter.get_input_details()]
        self.dtypes = [d["dtype"] for d in self.interpreter.get_input_details()]
        self.fold_of = fold_of
        # self.bounds[None]: every sample; self.bounds[k]: fold k's; each {tensor: [min, max]}
        self.bounds = dict((key, dict((t, [np.float32(np.inf), np.float32(-np.inf)]) for t in self.tensors))
                           for key in [None] + sorted(set(fold_of or [])))
        self.output_indices = [d["index"] for d in self.interpreter.get_output_details()] if keep_outputs else []
        self.outputs = [[] for _ in self.output_indices]

    def feed(self, arrays, start, stop):
        interpreter = self.interpreter
        for k in range(start, stop):
            for index, dtype, array in zip(self.inputs, self.dtypes, arrays):
                interpreter.set_tensor(index, np.asarray(array[k], dtype=dtype))
            interpreter.invoke()
            kept = [self.bounds[None]] + ([self.bounds[self.fold_of[k]]] if self.fold_of is not None else [])
            collector = self.collector.for_sample(k) if self.collector is not None else None
            for t in self.tensors:
                view = interpreter.tensor(t)()
                if view.size:
                    low, high = view.min(), view.max()
                    for bounds in kept:
                        pair = bounds[t]
                        if low < pair[0] or low != low:
                            pair[0] = low
                        if high > pair[1] or high != high:
                            pair[1] = high
                    if collector is not None:
                        collector.add(t, view)
                del view
            for index, outputs in zip(self.output_indices, self.outputs):
                outputs.append(interpreter.get_tensor(index))
            if collector is not None:
                collector.sample_done(k)

    def ranges(self, fold=None):
        """{(0, tensor): (mins, maxs)} as ``tensor_ranges`` gives them (what the calibrator would record), over
        every sample, or over fold ``fold``'s."""
        bounds = self.bounds[fold]
        mins = dict((t, b[0]) for t, b in bounds.items())
        maxs = dict((t, b[1]) for t, b in bounds.items())
        for i, o in self.pairs:  # the calibrator's second look at an input, after an in-place kernel
            if o in bounds:
                mins[i] = min(mins[i], bounds[o][0])
                maxs[i] = max(maxs[i], bounds[o][1])
        return dict(((0, t), (np.array([mins[t]], np.float32), np.array([maxs[t]], np.float32)))
                    for t in self.tensors if mins[t] <= maxs[t] or mins[t] != mins[t] or maxs[t] != maxs[t])


def differences(expected, observed):
    """[(key, expected (min, max), observed (min, max))] where two statistics differ (NaN never equals)."""
    found = []
    for key in sorted(set(expected) | set(observed)):
        a, b = expected.get(key), observed.get(key)
        if a is None or b is None or not (np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])):
            found.append((key, None if a is None else (a[0].tolist(), a[1].tolist()),
                          None if b is None else (b[0].tolist(), b[1].tolist())))
    return found


def observe_fast(model_content, first, arrays, count, threads, memory=None, collector=None, fold_of=None,
                 observed=None):
    """The fast route over samples ``0:count``: (calibrated model bytes, details) or (None, why not).

    ``first()``: TensorFlow's calibrated model after sample 0 (its ``Calibrate()``: the calibrated model's
    layout, TensorFlow's own writer, with sample 0's statistics), called once the route is possible.
    The interpreter observes sample 0 first and must record exactly what the calibrator recorded on it,
    value for value and tensor for tensor; any difference, a NaN (the calibrator stops on it with its
    own error), or an unobservable op leaves the calibration to the calibrator (the caller's fallback).
    Otherwise the statistics of every sample are merged into ``first_calibrated`` (``merge_ranges``).

    Folds (the recovery search's cross-fitting, issue 31): with ``fold_of`` (each sample's fold) and a dict
    ``observed``, the same pass also fills ``observed["folds"]``, each fold's calibrated model (fold k's
    statistics written into ``first_calibrated``'s layout: ``set_ranges``; what calibrating fold k alone
    records, since every sample's statistics are recorded alike), and ``observed["outputs"]``, the float
    model's outputs on every sample ([array (count, ...)] per output, the interpreter's builtin kernels).
    """
    plan, why = observation_plan(model_content)
    if plan is None:
        return None, why
    shapes = [list(a.shape[1:]) for a in arrays]
    try:
        pairs, activation_bytes = in_place_inputs(model_content, plan, shapes)
    except ValueError as exc:
        return None, str(exc)
    if memory and activation_bytes > MEMORY_SHARE * memory:
        return None, "keeping every tensor of a sample takes %d MB" % (activation_bytes >> 20)
    first_calibrated = first()  # before the observer: Calibrate()'s transient copies are freed by then
    observer = InterpreterObserver(model_content, plan, shapes, threads, pairs, collector, fold_of,
                                   keep_outputs=observed is not None)
    observer.feed(arrays, 0, 1)
    expected = tensor_ranges(first_calibrated)
    different = differences(expected, observer.ranges())
    if different:
        key, calibrator_range, observed_range = different[0]
        return None, "on sample 0 the interpreter records %d of %d tensors differently from the calibrator " \
                     "(e.g. tensor %d: %s, not %s)" % (len(different), len(expected), key[1], observed_range,
                                                       calibrator_range)
    started = time.perf_counter()
    observer.feed(arrays, 1, count)
    seconds = time.perf_counter() - started
    ranges = observer.ranges()
    if any(np.isnan(v[0]).any() or np.isnan(v[1]).any() for v in ranges.values()):
        return None, "a tensor has NaN values (the calibrator reports which sample)"
    details = {"threads": threads, "tensors": len(plan["tensors"]), "in_place_inputs": len(pairs),
               "checked": "sample 0: the %d tensors' min/max equal the calibrator's" % len(expected),
               "activation_mb": activation_bytes >> 20, "observe_seconds": round(seconds, 2),
               "seconds_per_sample": round(seconds / max(1, count - 1), 4)}
    if fold_of is not None and observed is not None:
        observed["folds"] = [set_ranges(first_calibrated, observer.ranges(k)) for k in sorted(set(fold_of))]
        observed["outputs"] = [np.concatenate(o) for o in observer.outputs]
    del observer
    return merge_ranges(first_calibrated, [ranges]), details
