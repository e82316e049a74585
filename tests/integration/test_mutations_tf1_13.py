"""Mutation smoke test of the legacy loader (issue 5): damaged ``.h5`` files are refused, never crash.

A valid legacy model (``legacy_tf1 zoo keras-cnn``, standalone Keras 2.2.4, ~28 kB) is mutated with a
fixed seed: random byte flips, flips inside the stored model config (JSON), truncation and zeroed blocks;
and, through h5py, HDF5 attribute edits (``keras_version``, ``backend``, ``model_config``,
``training_config``, ``layer_names``, ``weight_names``), JSON config edits that stay valid JSON (unknown
classes, missing keys, wrong sizes, shape lies in ``batch_input_shape``, dangling inbound nodes, bad
dtypes and activations) and weight datasets that lie about their shape or dtype, or are missing. Each mutant goes through the loader path of ``resave`` (``inspection.inspect_file`` then
``loading.load``) in a forked child with a time limit, so TensorFlow is imported once (in a fresh
interpreter). The outcome of each
must be success or a ``TfbridgeError`` subclass: never another exception, a signal, or a hang.
"""

import json
import os
import subprocess
import sys

import pytest

from tests.integration import _mutation

pytestmark = pytest.mark.tf1_13

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KINDS = ("flip", "config", "truncate", "zero", "attr", "json", "weights")
# seed 5 once gave a TypeError and an HDF5 endless loop; CI: 20 x 7 = 140, nox -s faults: 100 x 7 = 700
PER_KIND = _mutation.per_kind(20, 100)
READ_CHECK_SECONDS = 10  # instead of 30: a mutant that loops inside HDF5 is stopped sooner
TIME_LIMIT = 60.0


def mutate(data, kind, rng):
    """One seeded mutant of ``data`` (bytes) of the given kind; the h5py kinds edit ``mutate.path``."""
    if kind in ("attr", "json", "weights"):
        import h5py

        with h5py.File(mutate.path, "r+") as handle:
            {"attr": _edit_attribute, "json": _edit_config, "weights": _edit_weights}[kind](handle, rng)
        return None
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


ODD_TEXT = ("", "9.9.9", "2.2.4 x", "theano", "{", "[]", "null", "\u00ff" * 3, "1" * 300)


def _edit_attribute(handle, rng):
    import numpy as np

    choice = rng.choice(("keras_version", "backend", "model_config", "training_config", "delete_config",
                         "layer_names", "weight_names"))
    if choice in ("keras_version", "backend", "training_config"):
        handle.attrs[choice] = rng.choice(ODD_TEXT).encode("utf-8")
    elif choice == "model_config":
        text = handle.attrs["model_config"]
        text = text.decode("utf-8") if isinstance(text, bytes) else text
        handle.attrs["model_config"] = rng.choice(ODD_TEXT + (text[:rng.randrange(len(text))],)).encode("utf-8")
    elif choice == "delete_config":
        del handle.attrs["model_config"]
    elif choice == "layer_names":
        names = list(handle["model_weights"].attrs["layer_names"])
        if rng.random() < 0.5 and names:
            names.pop(rng.randrange(len(names)))
        else:
            names.insert(rng.randrange(len(names) + 1), b"no_such_layer")
        handle["model_weights"].attrs["layer_names"] = np.array(names, dtype="S")
    else:
        layers = [name for name in handle["model_weights"] if len(handle["model_weights"][name].attrs["weight_names"])]
        group = handle["model_weights"][rng.choice(layers)]
        names = list(group.attrs["weight_names"])
        names[rng.randrange(len(names))] = rng.choice((b"ghost:0", b"", names[0]))
        group.attrs["weight_names"] = np.array(names, dtype="S")


def _walk_layers(config, found):
    if isinstance(config, dict):
        if "class_name" in config and isinstance(config.get("config"), dict):
            found.append(config)
        for value in config.values():
            _walk_layers(value, found)
    elif isinstance(config, list):
        for value in config:
            _walk_layers(value, found)
    return found


def _edit_config(handle, rng):
    text = handle.attrs["model_config"]
    config = json.loads(text.decode("utf-8") if isinstance(text, bytes) else text)
    layers = [layer for layer in _walk_layers(config, []) if layer is not config] or [config]
    layer = rng.choice(layers)
    inner = layer["config"]
    choice = rng.choice(("class", "drop_config", "size", "shape", "inbound", "dtype", "activation", "drop_key",
                         "layers"))
    if choice == "class":
        layer["class_name"] = rng.choice(("NoSuchLayer", "Lambda", "", "Model", "InputLayer"))
    elif choice == "drop_config":
        del layer["config"]
    elif choice == "size":
        key = rng.choice([k for k in ("units", "filters", "kernel_size", "strides", "pool_size", "rate", "axis")
                          if k in inner] or ["units"])
        inner[key] = rng.choice((0, -1, 3, 10 ** 6, [0, 0], [9, 9], "x", None, 0.5))
    elif choice == "shape":  # a lie about the input: other sizes, other rank, no dims
        shape = rng.choice(([None, 3, 3, 1], [None, 40, 40, 7], [None, 28], [None], [], [None, 0, 0, 1],
                            [None, -5, 28, 1], "28x28", [None, 28, 28, 1, 1]))
        for found in _walk_layers(config, []):
            if "batch_input_shape" in found["config"]:
                found["config"]["batch_input_shape"] = shape
                break
    elif choice == "inbound":
        for found in _walk_layers(config, []):
            if found.get("inbound_nodes"):
                found["inbound_nodes"] = rng.choice(([[["ghost", 0, 0, {}]]], [[["ghost"]]], "x", [[]], [[[]]]))
                break
        else:
            inner["name"] = rng.choice(("", "a/b", None))
    elif choice == "dtype":
        inner["dtype"] = rng.choice(("float99", "string", "object", 7))
    elif choice == "activation":
        inner["activation"] = rng.choice(("no_such_activation", "", None, {"class_name": "x"}))
    elif choice == "drop_key":
        if inner:
            del inner[rng.choice(sorted(inner))]
    else:
        if isinstance(config.get("config"), dict) and "layers" in config["config"]:
            config["config"]["layers"] = rng.choice(([], [config["config"]["layers"][0]] * 2, {}))
        elif isinstance(config.get("config"), list):
            config["config"] = config["config"][:rng.randrange(len(config["config"]) + 1)]
    handle.attrs["model_config"] = json.dumps(config).encode("utf-8")


def _edit_weights(handle, rng):
    import numpy as np

    datasets = []
    handle["model_weights"].visititems(lambda name, obj: datasets.append(name) if hasattr(obj, "shape") else None)
    name = "model_weights/" + rng.choice(datasets)
    shape = handle[name].shape
    choice = rng.choice(("shape", "dtype", "delete", "scalar", "nan"))
    del handle[name]
    if choice == "shape":
        lie = tuple(max(1, d + rng.choice((-1, 1, 5))) for d in shape) or (2,)
        handle.create_dataset(name, data=np.zeros(lie, np.float32))
    elif choice == "dtype":
        handle.create_dataset(name, data=np.zeros(shape, rng.choice((np.int8, np.float64, "S3", np.bool_))))
    elif choice == "scalar":
        handle.create_dataset(name, data=np.float32(1))
    elif choice == "nan":
        handle.create_dataset(name, data=np.full(shape, np.nan, np.float32))
    # "delete": the dataset stays missing


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
    _mutation.campaign(valid_path, workdir, _load, mutate, KINDS, seed=5, per_kind=PER_KIND,
                       time_limit=TIME_LIMIT, label="h5")


def test_mutated_h5_files_are_handled_or_refused_never_crash(valid_h5, tmp_path):
    found = _mutation.run_fresh("tests.integration.test_mutations_tf1_13", valid_h5, tmp_path, REPO,
                                timeout=len(KINDS) * PER_KIND * TIME_LIMIT)
    outcomes = found["outcomes"]
    sys.stderr.write("h5 mutations: %s\n" % found["by_kind"])
    assert sum(outcomes.values()) == len(KINDS) * PER_KIND
    assert not found["bad"], found["bad"]
    for kind, counts in found["by_kind"].items():
        assert _mutation.refused(counts) > 0, "the %s mutations did damage files: %s" % (kind, counts)
