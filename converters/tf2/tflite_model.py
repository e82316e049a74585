"""TensorFlow Lite's own pieces, loaded once, for every module that reads or runs a TFLite flatbuffer.

For whom: calibration (``converters.tf2.calibrate``) and the recovery rewrites (``converters.tf2.recovery``),
which both sit above this module; ``tf2`` environment only. It holds the flatbuffer schema, the
calibration wrapper, operator names and a float interpreter whose tensors can be read: nothing here
knows about calibration or candidates.

What can go wrong: ``schema()`` and ``calibration_wrapper()`` load files of the installed TensorFlow;
without TensorFlow they raise ``ImportError``/``AttributeError`` from ``importlib``.
"""

import importlib.util
import os
import sys

import numpy as np


def load_tf_module(name, relative_path):
    """A module file of the installed TensorFlow, loaded without importing the ``tensorflow`` package.

    Used in workers: TensorFlow's calibration wrapper and flatbuffer schema are self-contained (the .so
    links only libpywrap_tflite_common.so), and importing all of TensorFlow would cost seconds and
    ~600 MB per worker. In a process that has imported TensorFlow, its own module is used instead.
    """
    root = importlib.util.find_spec("tensorflow").submodule_search_locations[0]
    spec = importlib.util.spec_from_file_location(name, os.path.join(root, relative_path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def calibration_wrapper():
    """TensorFlow's ``_pywrap_tensorflow_lite_calibration_wrapper`` (the module ``Calibrator`` drives)."""
    if "tensorflow" in sys.modules:
        from tensorflow.lite.python.optimize import calibrator

        return calibrator._calibration_wrapper
    return load_tf_module("_pywrap_tensorflow_lite_calibration_wrapper",
                           os.path.join("lite", "python", "_pywrap_tensorflow_lite_calibration_wrapper.so"))


def schema():
    """TensorFlow's generated flatbuffer schema module (``schema_py_generated``)."""
    if "tensorflow" in sys.modules:
        from tensorflow.lite.python import schema_py_generated

        return schema_py_generated
    return load_tf_module("tfbridge_tflite_schema", os.path.join("lite", "python", "schema_py_generated.py"))


def operator_name(schema, model, code):
    """The builtin (or custom) name of operator code ``code`` of ``model``."""
    operator_code = model.OperatorCodes(code)
    if operator_code.CustomCode():
        return operator_code.CustomCode().decode("utf-8", "replace")
    names = dict((v, k) for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_"))
    builtin = max(operator_code.BuiltinCode(), operator_code.DeprecatedBuiltinCode())
    return names.get(builtin, str(builtin))


def interpreter(model_content, shapes, threads=None, preserve=False):
    """A float TFLite interpreter without default delegates, inputs resized to ``shapes`` and allocated;
    ``preserve`` keeps every tensor readable after ``invoke``."""
    from tensorflow.lite.python import interpreter as interpreter_module

    import warnings

    with warnings.catch_warnings():  # tf.lite.Interpreter warns that it is deprecated (LiteRT)
        warnings.simplefilter("ignore")
        interpreter = interpreter_module.Interpreter(
            model_content=model_content, num_threads=threads, experimental_preserve_all_tensors=preserve,
            # no XNNPACK: it fuses the graph into one node whose inner tensors no one can read, and its
            # kernels round differently from the calibrator's
            experimental_op_resolver_type=interpreter_module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    inputs = interpreter.get_input_details()
    if len(inputs) != len(shapes):
        raise ValueError("the model has %d inputs, the samples %d" % (len(inputs), len(shapes)))
    for detail, shape in zip(inputs, shapes):
        if list(detail["shape"]) != list(shape):
            interpreter.resize_tensor_input(detail["index"], list(shape))
    interpreter.allocate_tensors()
    return interpreter


def data_span(interpreter, index):
    """(address, bytes) of tensor ``index``'s buffer in ``interpreter``."""
    view = interpreter.tensor(index)()
    span = (view.__array_interface__["data"][0], view.nbytes)
    del view  # the interpreter refuses to run while a view into it is held
    return span


def tensor_ranges(model_content):
    """{(subgraph, tensor): (mins, maxs)} of every tensor whose quantization parameters carry min/max.

    The arrays are views into ``model_content``: when it is a bytearray, writing them edits the model.
    """
    module = schema()
    model = module.Model.GetRootAsModel(model_content, 0)
    ranges = {}
    for s in range(model.SubgraphsLength()):
        graph = model.Subgraphs(s)
        for t in range(graph.TensorsLength()):
            quant = graph.Tensors(t).Quantization()
            if quant is None or not quant.MinLength() or not quant.MaxLength():
                continue
            ranges[(s, t)] = (quant.MinAsNumpy(), quant.MaxAsNumpy())
    return ranges


def merge_ranges(calibrated, others):
    """``calibrated`` (bytes of a calibrated model) with each tensor's range widened to cover ``others``
    ({(subgraph, tensor): (mins, maxs)} of other shards). Returns new bytes; only min/max values change.

    Raises ValueError when the shards recorded different tensors (a model with control flow that one
    shard's samples never entered): the caller then calibrates without shards.
    """
    merged = bytearray(calibrated)
    ranges = tensor_ranges(merged)
    for shard in others:
        if set(shard) != set(ranges):
            raise ValueError("the shards recorded statistics for different tensors")
        for key, (mins, maxs) in ranges.items():
            other_mins, other_maxs = shard[key]
            np.minimum(mins, other_mins, out=mins)
            np.maximum(maxs, other_maxs, out=maxs)
    return bytes(merged)


def set_ranges(calibrated, ranges):
    """``calibrated`` (bytes of a calibrated model) with each tensor's range replaced by ``ranges``'
    ({(subgraph, tensor): (mins, maxs)}, the same tensors). Returns new bytes; only min/max values change.
    Raises ValueError when ``ranges`` names other tensors or other lengths."""
    written = bytearray(calibrated)
    current = tensor_ranges(written)
    if set(current) != set(ranges):
        raise ValueError("the statistics name different tensors from the calibrated model's")
    for key, (mins, maxs) in current.items():
        new_mins, new_maxs = ranges[key]
        if len(new_mins) != len(mins) or len(new_maxs) != len(maxs):
            raise ValueError("tensor %s has %d ranges in the model, %d given" % (key, len(mins), len(new_mins)))
        mins[:] = new_mins
        maxs[:] = new_maxs
    return bytes(written)
