"""The mutation-campaign harness shared by the mutation tests: ``.h5`` (tf1.13), ``.pb`` (tf1.15),
``.tflite`` and calibration data (``.npy``/``.npz``/images, tf2).

Python 3.7 compatible; no TensorFlow import here (each test module warms up its own before forking).
Each mutant is handed to ``target(path)`` in a forked child with a time limit: returning is "handled",
a ``TfbridgeError`` is "refused" with its class's exit code (the paragraph the command would print ends
with that code); anything else, a signal or a hang is what the tests hunt for.

Size: ``per_kind(ci, full)`` gives the CI sample, or the full campaign under ``nox -s faults``
(``TFBRIDGE_FAULTS=full``). The outcome of every campaign is appended as one JSON line to
``$TFBRIDGE_FAULTS_LOG`` when that is set (what ``nox -s faults`` sums up by kind and exit code).
"""

import collections
import json
import multiprocessing
import os
import random
import subprocess
import sys


FULL = os.environ.get("TFBRIDGE_FAULTS") == "full"


def per_kind(ci, full):
    """Mutants of each kind: the seeded CI sample, or the full campaign (``nox -s faults``)."""
    return full if FULL else ci


def _classify(target, path, sender):
    from converters.errors import TfbridgeError

    try:
        target(path)
        sender.send(("handled", ""))
    except TfbridgeError as error:
        paragraph = error.paragraph()
        if not paragraph.startswith("tfbridge: ") or "\n" in paragraph.strip():
            sender.send(("unclassified", "not one paragraph: %r" % paragraph[:200]))
        else:
            sender.send(("refused (exit %d)" % error.exit_code, "%s: %s" % (type(error).__name__,
                                                                         error.message[:160])))
    except BaseException as error:  # noqa: BLE001 - exactly what these tests hunt for
        sender.send(("unclassified", "%s: %s" % (type(error).__name__, str(error)[:160])))


def run_mutant(context, target, path, time_limit):
    # a pipe, not a Queue: Queue.put starts a feeder thread, and threads in a child forked from a process
    # that imported TensorFlow can crash on their own (not the code under test)
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_classify, args=(target, path, sender))
    child.start()
    child.join(time_limit)
    if child.is_alive():
        child.kill()
        child.join()
        return "hang", path
    if child.exitcode != 0:
        return "crash", "exit %s" % child.exitcode
    if not receiver.poll(5):
        return "crash", "no result"
    return receiver.recv()


def campaign(valid_path, workdir, target, mutate, kinds, seed, per_kind, time_limit, label=None):
    """Run ``per_kind`` seeded mutants of each kind; print {"outcomes": {...}, "by_kind": {kind: {outcome:
    count}}, "bad": [...]} as JSON. ``mutate(data, kind, rng)`` returns the mutant's bytes, or None after
    editing the file at ``mutate.path`` itself (set before each call: a copy of the valid file), e.g. with
    h5py or a protobuf/flatbuffer parser.

    Meant to run in a fresh interpreter (``run_fresh``): a child forked from a process that has already
    run a TensorFlow session (an earlier test in the same pytest) can hang or crash on its own.
    """
    with open(valid_path, "rb") as handle:
        original = handle.read()
    suffix = os.path.splitext(valid_path)[1]
    context = multiprocessing.get_context("fork")
    rng = random.Random(seed)
    outcomes = collections.Counter()
    by_kind = collections.OrderedDict()
    bad = []
    unmutated = run_mutant(context, target, valid_path, time_limit)
    if unmutated[0] != "handled":
        bad.append(("unmutated", 0) + tuple(unmutated))
    for kind in kinds:
        by_kind[kind] = collections.Counter()
        for number in range(per_kind):
            path = os.path.join(workdir, "%s_%02d%s" % (kind, number, suffix))
            with open(path, "wb") as handle:
                handle.write(original)
            mutate.path = path
            data = mutate(original, kind, rng)
            if data is not None:
                with open(path, "wb") as handle:
                    handle.write(data)
            outcome, detail = run_mutant(context, target, path, time_limit)
            outcomes[outcome] += 1
            by_kind[kind][outcome] += 1
            if not outcome.startswith(("handled", "refused")):
                bad.append((kind, number, outcome, detail))  # the file is kept to reproduce it
            else:
                os.remove(path)
    result = {"label": label or suffix, "outcomes": dict(outcomes), "bad": bad,
              "by_kind": dict((kind, dict(counts)) for kind, counts in by_kind.items())}
    if os.environ.get("TFBRIDGE_FAULTS_LOG"):
        with open(os.environ["TFBRIDGE_FAULTS_LOG"], "a") as handle:
            handle.write(json.dumps(result, sort_keys=True) + "\n")
    print(json.dumps(result))


def refused(outcomes):
    """How many mutants were refused (with any exit code)."""
    return sum(count for outcome, count in outcomes.items() if outcome.startswith("refused"))


def run_fresh(module, valid_path, workdir, cwd, timeout):
    """Run ``module.campaign(valid_path, workdir)`` in a fresh interpreter; return its JSON result."""
    script = "import sys; from %s import campaign; campaign(sys.argv[1], sys.argv[2])" % module
    result = subprocess.run([sys.executable, "-c", script, valid_path, str(workdir)], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                            timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])
