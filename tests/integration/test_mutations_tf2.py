"""Mutation smoke test of reading a ``.tflite`` (issue 5): ``python -m converters.tf2.npu FILE`` on damaged files.

A valid full-int8 model (a tiny CNN converted here with the TFLite converter) is mutated with a fixed seed:
random byte flips, flips in the first 64 bytes (root table, identifier, offsets), truncation and zeroed
blocks; and, through TFLite's flatbuffer tools, tensors that lie about their shape or type and operators
with unknown or wrong op codes. Each mutant goes through ``converters.tf2.npu.check`` (what the command runs) in a forked child with a
time limit, so TensorFlow is imported once. The outcome must be success or a ``TfbridgeError`` subclass:
never another exception, a signal, or a hang. The command itself is run once on a good and a damaged file.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

from converters.errors import InputFileError
from tests.integration import _mutation

pytestmark = pytest.mark.tf2

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KINDS = ("flip", "header", "truncate", "zero", "shape", "opcode")
PER_KIND = _mutation.per_kind(8, 30)  # CI: 8 x 6 = 48 mutants; nox -s faults: 30 x 6 = 180
TIME_LIMIT = 60.0


@pytest.fixture(scope="module")
def valid_tflite(tmp_path_factory):
    import tensorflow as tf
    import tf_keras

    tf_keras.utils.set_random_seed(0)
    layers = tf_keras.layers
    model = tf_keras.Sequential([layers.Input((8, 8, 3), batch_size=1), layers.Conv2D(4, 3, activation="relu"),
                                 layers.Flatten(), layers.Dense(3)])
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    rng = np.random.RandomState(0)
    converter.representative_dataset = lambda: ([rng.rand(1, 8, 8, 3).astype(np.float32)] for _ in range(8))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    path = str(tmp_path_factory.mktemp("valid") / "tiny_int8.tflite")
    with open(path, "wb") as handle:
        handle.write(converter.convert())
    return path


def mutate(data, kind, rng):
    if kind in ("shape", "opcode"):
        return _edit_model(data, kind, rng)
    data = bytearray(data)
    if kind == "flip":
        for _ in range(rng.randint(1, 32)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    elif kind == "header":
        for _ in range(rng.randint(1, 3)):
            data[rng.randrange(64)] = rng.randrange(256)
    elif kind == "truncate":
        data = data[:rng.randrange(len(data))]
    elif kind == "zero":
        start = rng.randrange(len(data))
        size = rng.choice((4, 16, 64, 256))
        data[start:start + size] = bytes(len(data[start:start + size]))
    return bytes(data)


def _edit_model(data, kind, rng):
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(data))
    if kind == "shape":
        tensors = model.subgraphs[0].tensors
        tensor = tensors[rng.randrange(len(tensors))]
        choice = rng.choice(("shape", "rank", "empty", "type"))
        if choice == "shape":
            tensor.shape = np.array([rng.choice((0, 1, 3, 1000, -1, 2 ** 30)) for _ in range(len(tensor.shape))],
                                    np.int32)
        elif choice == "rank":
            tensor.shape = np.array([1] * rng.choice((0, 1, 2, 5, 8)), np.int32)
        elif choice == "empty":
            tensor.shape = None
        else:
            tensor.type = rng.randrange(0, 20)
    else:
        codes = model.operatorCodes
        code = codes[rng.randrange(len(codes))]
        value = rng.choice((0, 3, 9, 127, 200, 255))
        code.builtinCode = value
        code.deprecatedBuiltinCode = min(value, 127)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _check(path):
    from converters.tf2 import npu

    npu.check(path)  # what `python -m converters.tf2.npu FILE` runs


def campaign(valid_path, workdir):
    """Every mutant of ``valid_path``, in a fresh interpreter (see tests/integration/_mutation.py)."""
    from tensorflow.lite.tools import flatbuffer_utils  # noqa: F401 - imported once, inherited by each child

    _mutation.campaign(valid_path, workdir, _check, mutate, KINDS, seed=7, per_kind=PER_KIND,
                       time_limit=TIME_LIMIT, label="tflite")


def test_mutated_tflite_files_are_handled_or_refused_never_crash(valid_tflite, tmp_path):
    found = _mutation.run_fresh("tests.integration.test_mutations_tf2", valid_tflite, tmp_path, REPO,
                                timeout=len(KINDS) * PER_KIND * TIME_LIMIT)
    outcomes = found["outcomes"]
    sys.stderr.write("tflite mutations: %s\n" % found["by_kind"])
    assert sum(outcomes.values()) == len(KINDS) * PER_KIND
    assert not found["bad"], found["bad"]
    assert _mutation.refused(outcomes) > 0, "the mutations did damage files"


def test_npu_command_reads_a_tflite_and_refuses_a_damaged_one_in_one_paragraph(valid_tflite, tmp_path):
    command = [sys.executable, "-m", "converters.tf2.npu"]
    good = subprocess.run(command + [valid_tflite], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True)
    assert good.returncode == 0, good.stderr[-2000:]
    assert "NPU ready (fully int8)" in good.stdout and "CONV_2D" in good.stdout
    damaged = tmp_path / "damaged.tflite"
    with open(valid_tflite, "rb") as handle:
        damaged.write_bytes(handle.read()[:200])
    bad = subprocess.run(command + [str(damaged)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         universal_newlines=True)
    assert bad.returncode == InputFileError.exit_code  # 5: a damaged file (converters/errors.py)
    assert "npu failed: cannot read" in bad.stderr and "damaged" in bad.stderr
    assert "Traceback" not in bad.stderr
