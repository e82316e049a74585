"""Mutation smoke test of reading a ``.tflite`` (issue 5): ``python -m converters.npu FILE`` on damaged files.

A valid full-int8 model (a tiny CNN converted here with the TFLite converter) is mutated with a fixed seed:
random byte flips, flips in the first 64 bytes (root table, identifier, offsets), truncation and zeroed
blocks. Each mutant goes through ``converters.npu.check`` (what the command runs) in a forked child with a
time limit, so TensorFlow is imported once. The outcome must be success or a ``TfbridgeError`` subclass:
never another exception, a signal, or a hang. The command itself is run once on a good and a damaged file.
"""

import collections
import multiprocessing
import os
import random
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.tf2

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PER_KIND = 12  # x 4 kinds = 48 mutants
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


def _check(path, queue):
    from converters import npu
    from converters.errors import TfbridgeError

    try:
        npu.check(path)
        queue.send(("handled", ""))
    except TfbridgeError as error:
        queue.send(("refused", "%s: %s" % (type(error).__name__, error.message[:160])))
    except BaseException as error:  # noqa: BLE001 - exactly what this test hunts for
        queue.send(("unclassified", "%s: %s" % (type(error).__name__, str(error)[:160])))


def run_mutant(context, path):
    # a pipe, not a Queue: Queue.put starts a feeder thread, and threads in a child forked from a process
    # that imported TensorFlow can crash on their own (not the code under test)
    receiver, queue = context.Pipe(duplex=False)
    child = context.Process(target=_check, args=(path, queue))
    child.start()
    child.join(TIME_LIMIT)
    if child.is_alive():
        child.kill()
        child.join()
        return "hang", path
    if child.exitcode != 0:
        return "crash", "exit %s" % child.exitcode
    if not receiver.poll(5):
        return "crash", "no result"
    return receiver.recv()


def campaign(valid_path, workdir):
    """Run every mutant of ``valid_path`` (in ``workdir``); print {"outcomes": {...}, "bad": [...]} as JSON.

    Runs in a fresh interpreter (see the test): a child forked from a process that has already run a
    TensorFlow session (an earlier test in the same pytest) can hang or crash on its own.
    """
    import json

    from tensorflow.lite.tools import flatbuffer_utils  # noqa: F401 - imported once, inherited by each child

    with open(valid_path, "rb") as handle:
        original = handle.read()
    context = multiprocessing.get_context("fork")
    rng = random.Random(7)
    outcomes = collections.Counter()
    bad = []
    unmutated = run_mutant(context, valid_path)
    if unmutated[0] != "handled":
        bad.append(("unmutated", 0) + tuple(unmutated))
    for kind in ("flip", "header", "truncate", "zero"):
        for number in range(PER_KIND):
            path = os.path.join(workdir, "%s_%02d.tflite" % (kind, number))
            with open(path, "wb") as handle:
                handle.write(mutate(original, kind, rng))
            outcome, detail = run_mutant(context, path)
            outcomes[outcome] += 1
            if outcome not in ("handled", "refused"):
                bad.append((kind, number, outcome, detail))  # the file is kept to reproduce it
            else:
                os.remove(path)
    print(json.dumps({"outcomes": dict(outcomes), "bad": bad}))


def test_mutated_tflite_files_are_handled_or_refused_never_crash(valid_tflite, tmp_path):
    import json

    script = ("import sys; from tests.integration.test_mutations_tf2 import campaign; "
              "campaign(sys.argv[1], sys.argv[2])")
    result = subprocess.run([sys.executable, "-c", script, valid_tflite, str(tmp_path)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                            timeout=4 * PER_KIND * TIME_LIMIT)
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    outcomes = found["outcomes"]
    sys.stderr.write("tflite mutations: %s\n" % outcomes)
    assert sum(outcomes.values()) == 4 * PER_KIND
    assert not found["bad"], found["bad"]
    assert outcomes.get("refused", 0) > 0, "the mutations did damage files"


def test_npu_command_reads_a_tflite_and_refuses_a_damaged_one_in_one_paragraph(valid_tflite, tmp_path):
    command = [sys.executable, "-m", "converters.npu"]
    good = subprocess.run(command + [valid_tflite], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True)
    assert good.returncode == 0, good.stderr[-2000:]
    assert "NPU ready (fully int8)" in good.stdout and "CONV_2D" in good.stdout
    damaged = tmp_path / "damaged.tflite"
    with open(valid_tflite, "rb") as handle:
        damaged.write_bytes(handle.read()[:200])
    bad = subprocess.run(command + [str(damaged)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         universal_newlines=True)
    assert bad.returncode == 2
    assert "npu failed: cannot read" in bad.stderr and "damaged" in bad.stderr
    assert "Traceback" not in bad.stderr
