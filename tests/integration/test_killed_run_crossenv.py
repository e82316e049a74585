"""A run killed with SIGKILL at seeded moments never leaves a folder a later run trusts (issue 26).

``convert_legacy`` (the embedded demo) runs once cleanly; its ``steps.json`` says when each step ran. Then,
for each seeded kill point (a step of the clean run, and a moment inside it: up to half its clean
duration, at most ``MAX_DELAY`` s in), the same command runs in its own process group, and once that step has started (its log
appeared) and that moment passed, the whole group (the orchestrator, bwrap and every step) gets SIGKILL. Half the points kill a first run (``--out`` absent), half a ``--force`` rerun over a complete run.
After each kill:

- ``--out`` is absent (a first run) or byte for byte the complete run it was (a rerun);
- the next run of the same command (no kill) exits 0, cleans what the killed run left beside ``--out``
  (``runfolder.recover``), either reuses the complete run ("nothing to do") or redoes every step, and its
  result (the int8 model, the parity cells, the int8 metrics) equals the clean run's.

CI runs ``CI_POINTS`` points; ``nox -s faults`` (``TFBRIDGE_FAULTS=full``) runs all ``FULL_POINTS``.
"""

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from tests.integration import _folders

pytestmark = pytest.mark.crossenv

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SEED = 26
FULL_POINTS = 10
CI_POINTS = 2
MAX_DELAY = 5.0
FULL = os.environ.get("TFBRIDGE_FAULTS") == "full"


def command(out, *extra):
    return [sys.executable, "-m", "converters.pipeline", "--out", str(out)] + list(extra)


def environ():
    variables = dict(os.environ, PYTHONPATH=REPO)
    variables.pop("TFBRIDGE_DEBUG", None)
    return variables


def run(out, *extra):
    return subprocess.run(command(out, *extra), cwd=REPO, env=environ(), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=900)


contents = _folders.file_hashes  # {relative path: sha256} of a folder's files


def result_of(out):
    """What a run computed: the int8 model's bytes, every parity cell's verdict and figures, the int8
    model's figures against the references."""
    report = json.load(open(os.path.join(str(out), "report.json")))
    with open(os.path.join(str(out), "model_int8.tflite"), "rb") as handle:
        model = hashlib.sha256(handle.read()).hexdigest()
    cells = sorted((cell["env"], cell["status"], cell.get("max_abs")) for cell in report.get("parity") or [])
    tflite = report["tflite"]
    return {"model_int8": model, "cells": cells,
            "tflite": [tflite.get(key) for key in ("status", "cosine", "sqnr_db", "top1_agreement", "max_abs_lsb")]}


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    out = tmp_path_factory.mktemp("clean") / "run"
    started = time.time()
    made = run(out)
    assert made.returncode == 0, made.stderr[-3000:]
    steps = json.load(open(str(out / "steps.json")))["steps"]
    # each step's start and end relative to the command's start (the kill points are drawn from these)
    offsets = [(s["step"], s["started"] - started, s["ended"] - started) for s in steps]
    return out, result_of(out), offsets


def kill_points(offsets, count):
    """(number, step, seconds into that step, mode) for each seeded point."""
    rng = random.Random(SEED)
    points = []
    for number in range(count):
        step, start, end = rng.choice(offsets)
        # within the first half of the step's clean duration (at most 5 s in): a loaded machine runs a step
        # at another speed than the clean run did, and the kill must still land in (or right after) it
        delay = rng.random() * min(0.5 * (end - start), MAX_DELAY)
        points.append((number, step, round(delay, 2), "rerun" if number % 2 else "first"))
    return points


def started(out, step):
    """Has ``step`` started in a partial folder of ``out``? (its log exists: ``logs/`` or a stage's
    ``.stage-*/logs/``; glob would skip the hidden stage folders)"""
    parent, prefix = os.path.dirname(str(out)), ".%s.partial-" % os.path.basename(str(out))
    for name in os.listdir(parent):
        if name.startswith(prefix):
            for root, _, files in os.walk(os.path.join(parent, name)):
                if os.path.basename(root) == "logs" and step + ".log" in files:
                    return True
    return False


def kill_at(out, step, seconds, *extra):
    """Run the command; once ``step`` has started (its log appeared in the partial folder), wait ``seconds``
    and SIGKILL the whole process group. Returns what happened."""
    process = subprocess.Popen(command(out, *extra), cwd=REPO, env=environ(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        while process.poll() is None and not started(out, step):
            time.sleep(0.05)
        process.wait(timeout=seconds)
        return "finished before the kill"
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the whole run: the orchestrator and every step
        process.wait()
        return "killed"


def leftovers(out):
    parent = os.path.dirname(str(out))
    return sorted(name for name in os.listdir(parent) if name.startswith(".%s." % os.path.basename(str(out))))


@pytest.mark.parametrize("point", range(FULL_POINTS if FULL else CI_POINTS))
def test_a_killed_run_leaves_nothing_a_later_run_trusts(clean, tmp_path, point):
    clean_out, expected, offsets = clean
    number, step, seconds, mode = kill_points(offsets, FULL_POINTS)[point]
    out = tmp_path / "run"
    extra = ()
    before = None
    if mode == "rerun":  # a complete run in --out, redone with --force and killed
        made = run(out)
        assert made.returncode == 0, made.stderr[-3000:]
        before = contents(out)
        extra = ("--force",)
    what = kill_at(out, step, seconds, *extra)
    assert what == "killed", "the kill point fell after the run's end"
    left = leftovers(out)
    if before is None:
        assert not out.exists() or step in ("report",), "a killed first run published a folder"
    else:
        assert contents(out) == before, "the complete run in --out changed under a killed rerun"
    again = run(out)
    assert again.returncode == 0, again.stderr[-3000:]
    reused = "nothing to do" in again.stderr
    assert result_of(out) == expected, "the next run's result differs from a clean run's"
    assert leftovers(out) == [], "the next run cleaned what the killed one left"
    sys.stderr.write("kill point %d (%s run, %.1f s into step %s): %s; left %d folder(s) beside --out; next run %s\n"
                     % (number, mode, seconds, step, what, len(left), "reused it" if reused else "redid it"))
    if mode == "rerun":
        assert reused, "the complete run was reused"
