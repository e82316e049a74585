"""Mutation smoke test of the legacy loader (issue 5): damaged ``.h5`` files are refused, never crash.

A valid legacy model (``legacy_tf1 zoo keras-cnn``, standalone Keras 2.2.4, ~28 kB) is mutated byte by
byte with a fixed seed: random byte flips, flips inside the stored model config (JSON), truncation and
zeroed blocks. Each mutant goes through the loader path of ``resave`` (``inspection.inspect_file`` then
``loading.load``) in a forked child with a time limit, so TensorFlow is imported once (in a fresh
interpreter). The outcome of each
must be success or a ``TfbridgeError`` subclass: never another exception, a signal, or a hang.
"""

import os
import subprocess
import sys

import pytest

from tests.integration import _mutation

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


def _load(path):
    from legacy_tf1 import inspection, loading

    info = inspection.inspect_file(path)
    loading.load(path, info=info)  # as resave does: inspect first, then load (no --trust-model)


@pytest.fixture(scope="module")
def valid_h5(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("valid") / "cnn.h5")
    subprocess.run([sys.executable, "-m", "legacy_tf1", "zoo", "keras-cnn", "--out", path], cwd=REPO,
                   check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return path


def campaign(valid_path, workdir):
    """Every mutant of ``valid_path``, in a fresh interpreter (see tests/integration/_mutation.py)."""
    import keras  # noqa: F401 - imported once here; every forked child inherits it (no session yet)
    from legacy_tf1 import compat, inspection  # noqa: F401

    inspection.READ_CHECK_SECONDS = READ_CHECK_SECONDS
    _mutation.campaign(valid_path, workdir, _load, mutate, ("flip", "config", "truncate", "zero"), seed=5,
                       per_kind=PER_KIND, time_limit=TIME_LIMIT)


def test_mutated_h5_files_are_handled_or_refused_never_crash(valid_h5, tmp_path):
    found = _mutation.run_fresh("tests.integration.test_mutations_tf1_13", valid_h5, tmp_path, REPO,
                                timeout=4 * PER_KIND * TIME_LIMIT)
    outcomes = found["outcomes"]
    sys.stderr.write("h5 mutations: %s\n" % outcomes)
    assert sum(outcomes.values()) == 4 * PER_KIND
    assert not found["bad"], found["bad"]
    assert outcomes.get("refused", 0) > 0, "the mutations did damage files"
