"""Mutation smoke test of the legacy loader (issue 5): damaged ``.h5`` files are refused, never crash.

A valid legacy model (``legacy_tf1 zoo keras-cnn``, standalone Keras 2.2.4, ~28 kB) is mutated byte by
byte with a fixed seed: random byte flips, flips inside the stored model config (JSON), truncation and
zeroed blocks. Each mutant goes through the loader path of ``resave`` (``inspection.inspect_file`` then
``loading.load``) in a forked child with a time limit, so TensorFlow is imported once (in a fresh
interpreter). The outcome of each
must be success or a ``TfbridgeError`` subclass: never another exception, a signal, or a hang.
"""

import collections
import multiprocessing
import os
import random
import subprocess
import sys

import pytest

pytestmark = pytest.mark.tf1_13

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PER_KIND = 50  # x 4 kinds = 200 mutants (seed 5 once gave a TypeError and an HDF5 endless loop)
READ_CHECK_SECONDS = 10  # instead of 30: a mutant that loops inside HDF5 is stopped sooner
TIME_LIMIT = 60.0


def mutate(data, kind, rng):
    """One seeded mutant of ``data`` (bytes) of the given kind."""
    data = bytearray(data)
    if kind == "flip":
        for _ in range(rng.randint(1, 32)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    elif kind == "config":
        start = data.find(b'{"class_name"')
        end = data.find(b"\x00", start)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(start, end)] = rng.choice(b'{}[]":,0123456789 abcxyz\\\x00\xff')
    elif kind == "truncate":
        data = data[:rng.randrange(len(data))]
    elif kind == "zero":
        start = rng.randrange(len(data))
        size = rng.choice((8, 64, 512, 4096))
        data[start:start + size] = bytes(len(data[start:start + size]))
    return bytes(data)


def _load(path, queue):
    from converters.errors import TfbridgeError
    from legacy_tf1 import inspection, loading

    try:
        info = inspection.inspect_file(path)
        loading.load(path, info=info)  # as resave does: inspect first, then load (no --trust-model)
        queue.send(("handled", ""))
    except TfbridgeError as error:
        queue.send(("refused", "%s: %s" % (type(error).__name__, error.message[:160])))
    except BaseException as error:  # noqa: BLE001 - exactly what this test hunts for
        queue.send(("unclassified", "%s: %s" % (type(error).__name__, str(error)[:160])))


def run_mutant(context, path):
    # a pipe, not a Queue: Queue.put starts a feeder thread, and threads in a child forked from a process
    # that imported TensorFlow can crash on their own (not the code under test)
    receiver, queue = context.Pipe(duplex=False)
    child = context.Process(target=_load, args=(path, queue))
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


@pytest.fixture(scope="module")
def valid_h5(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("valid") / "cnn.h5")
    subprocess.run([sys.executable, "-m", "legacy_tf1", "zoo", "keras-cnn", "--out", path], cwd=REPO,
                   check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return path


def campaign(valid_path, workdir):
    """Run every mutant of ``valid_path`` (in ``workdir``); print {"outcomes": {...}, "bad": [...]} as JSON.

    Runs in a fresh interpreter (see the test): a child forked from a process that has already run a
    TensorFlow session (an earlier test in the same pytest) can hang or crash on its own.
    """
    import json

    import keras  # noqa: F401 - imported once here; every forked child inherits it (no session yet)
    from legacy_tf1 import compat, inspection  # noqa: F401

    inspection.READ_CHECK_SECONDS = READ_CHECK_SECONDS

    with open(valid_path, "rb") as handle:
        original = handle.read()
    context = multiprocessing.get_context("fork")
    rng = random.Random(5)
    outcomes = collections.Counter()
    bad = []
    unmutated = run_mutant(context, valid_path)
    if unmutated[0] != "handled":
        bad.append(("unmutated", 0) + tuple(unmutated))
    for kind in ("flip", "config", "truncate", "zero"):
        for number in range(PER_KIND):
            path = os.path.join(workdir, "%s_%02d.h5" % (kind, number))
            with open(path, "wb") as handle:
                handle.write(mutate(original, kind, rng))
            outcome, detail = run_mutant(context, path)
            outcomes[outcome] += 1
            if outcome not in ("handled", "refused"):
                bad.append((kind, number, outcome, detail))  # the file is kept to reproduce it
            else:
                os.remove(path)
    print(json.dumps({"outcomes": dict(outcomes), "bad": bad}))


def test_mutated_h5_files_are_handled_or_refused_never_crash(valid_h5, tmp_path):
    import json

    script = ("import sys; from tests.integration.test_mutations_tf1_13 import campaign; "
              "campaign(sys.argv[1], sys.argv[2])")
    result = subprocess.run([sys.executable, "-c", script, valid_h5, str(tmp_path)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                            timeout=4 * PER_KIND * TIME_LIMIT)
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    outcomes = found["outcomes"]
    sys.stderr.write("h5 mutations: %s\n" % outcomes)
    assert sum(outcomes.values()) == 4 * PER_KIND
    assert not found["bad"], found["bad"]
    assert outcomes.get("refused", 0) > 0, "the mutations did damage files"
