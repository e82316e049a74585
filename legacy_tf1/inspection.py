"""What a Keras ``.h5`` file is, read from its HDF5 attributes *without* loading the model.

For whom: ``resave`` (to refuse Lambda layers before any stored bytecode could run, and to pick the
Keras flavour) and the host orchestrator (``python -m legacy_tf1 inspect MODEL`` prints this as JSON,
from which ``converters.verify`` infers the origin environment; the host has no h5py).

Keras writes, at the root of the file: ``keras_version`` ("2.2.4" standalone, "2.2.4-tf" tf.keras in
both TF 1.13 and 1.15), ``backend``, ``model_config`` (JSON; absent in weights-only files, which have
``layer_names`` instead) and ``training_config`` (when compiled). What can go wrong: a file that is not
HDF5 or has none of these attributes raises ``InputFileError``.

``lambda_layers`` lists the path of every Lambda layer anywhere in the stored config (inside wrappers and
nested models too, e.g. ``time_distributed_1 > lambda_1``) and ``unsafe`` every finding of the Lambda
gate (``converters.safety.scan_config``: Lambda layers, marshalled code elsewhere). Nothing here refuses
a file: ``legacy_tf1.loading`` does, through ``converters.safety.check_config``.
"""

import json
import os
import signal
import subprocess
import sys
import time

from converters import safety
from converters.errors import InputFileError

# Reading every attribute and dataset of a healthy .h5 runs at disk speed (~1 s per GB): the bound on the
# read check only stops a damaged file that loops inside HDF5.
READ_CHECK_SECONDS = 30
READ_CHECK_SECONDS_PER_GB = 60

# Keras versions (standalone) and the TF 1.x environment whose pins saved them.
ORIGIN_BY_KERAS = (
    ((2, 3, 0), "tf1.15"),   # keras 2.3.x shipped for TF 1.14/1.15
    ((0, 0, 0), "tf1.13"),   # keras <= 2.2.5: the TF 1.13 era (rcmalli keras-vggface)
)


def _text(value):
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if hasattr(value, "tolist") and not isinstance(value, str):
        value = value.tolist()
        if isinstance(value, bytes):
            return value.decode("utf-8")
    return value


def read_attributes(path):
    """The root attributes of a Keras ``.h5`` file as str (h5py 2 returns bytes, h5py 3 str).

    The file is first read in full (every attribute and dataset) in a child process: the HDF5
    library of h5py 2.10 can crash (SIGSEGV) on a damaged file, which no ``except`` catches. A file the
    child read without crashing is then safe to hand to Keras; one that crashed it is an ``InputFileError``.
    """
    if not os.path.isfile(path):
        raise InputFileError("model file %s does not exist." % path, step="inspect",
                             hint="Check the path; MODEL must be a Keras .h5 file.")
    _check_readable_in_child(path)
    return _read_attributes(path)


# Run by a fresh interpreter (see _check_readable_in_child): read every attribute and dataset, exit 0.
_WALK = """
import sys
import h5py

def visit(name, item):
    for key in item.attrs.keys():
        item.attrs[key]
    if isinstance(item, h5py.Dataset):
        item[()]

with h5py.File(sys.argv[1], "r") as handle:
    for key in handle.attrs.keys():
        handle.attrs[key]
    handle.visititems(visit)
"""


def _threads():
    """How many OS threads this process has (Linux /proc; None where unknown)."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("Threads:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def _check_readable_in_child(path):
    """Read the whole file in a child process with a time limit; a crash or a hang there is the file's.

    A forked child when this process has one thread (``python -m legacy_tf1 inspect``: fast), else a fresh
    interpreter: a forked child of a multi-threaded process (the re-save step has TensorFlow's thread pools)
    can deadlock on a lock another thread held at the fork; that showed here as a healthy 60 kB file
    "looping" for 30 s under load. The fresh interpreter costs ~0.3 s (the h5py import).
    """
    limit = READ_CHECK_SECONDS + READ_CHECK_SECONDS_PER_GB * os.path.getsize(path) / 1e9
    if hasattr(os, "fork") and _threads() == 1:
        status = _read_in_fork(path, limit)
    else:
        environ = dict(os.environ)
        environ.pop("PYTHONFAULTHANDLER", None)  # the crash is expected and reported here, not dumped
        try:
            status = subprocess.run([sys.executable, "-c", _WALK, path], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, timeout=limit, env=environ).returncode
        except subprocess.TimeoutExpired:
            status = None
    if status is None:
        raise InputFileError(
            "%s is damaged: reading it did not finish within %d s (the HDF5 library loops on it)."
            % (path, limit), step="inspect",
            hint="Give an intact Keras .h5 file (re-copy or re-save it from the original code).")
    if status < 0:
        raise InputFileError(
            "%s is damaged: reading it crashed the HDF5 library (signal %d)." % (path, -status),
            step="inspect", hint="Give an intact Keras .h5 file (re-copy or re-save it from the original code).")
    # a Python error in the child (status > 0) is classified by the caller's own read (_read_attributes)


def _read_in_fork(path, limit):
    """The forked reader's status like ``subprocess``'s: 0, > 0 a Python error, -N signal N, None timeout."""
    pid = os.fork()
    if pid == 0:  # the child: read everything, exit 0; a Python error is reported by the parent's read
        code = 0
        try:
            import faulthandler

            faulthandler.disable()  # the crash is expected here and reported by the parent, not dumped
            exec(compile(_WALK.replace("sys.argv[1]", "PATH"), "<walk>", "exec"), {"PATH": path})
        except BaseException:  # noqa: BLE001 - the parent re-reads and classifies it
            code = 3
        finally:
            os._exit(code)
    deadline = time.time() + limit
    try:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
            if time.time() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return None
            time.sleep(0.02)
    except BaseException:  # interrupted: never leave the reader running
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except OSError:
            pass
        raise


def _read_attributes(path):
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            attrs = dict((key, _text(handle.attrs[key])) for key in handle.attrs.keys())
            if "layer_names" in attrs and not isinstance(attrs["layer_names"], (list, str)):
                attrs["layer_names"] = [_text(name) for name in attrs["layer_names"]]
            attrs["_groups"] = sorted(handle.keys())
    except Exception as exc:  # noqa: BLE001 - OSError usually; a damaged file can fail anywhere inside h5py
        raise InputFileError("%s is not a readable HDF5 file (%s)." % (path, str(exc)[:300] or type(exc).__name__),
                             step="inspect",
                             hint="Give a Keras .h5 file saved with model.save() or model.save_weights().")
    return attrs


def stored_model_config(path):
    """The ``model_config`` attribute of ``path`` as text (None in a weights-only file), read with h5py
    only (call ``read_attributes`` / ``inspect_file`` first: that read is the crash-safe one)."""
    return _read_attributes(path).get("model_config")


def iter_layer_configs(config):
    """Every layer config in a model config, depth first, including layers of nested models (for the
    names and classes ``inspect_file`` lists; not for safety: layers inside wrappers such as
    ``TimeDistributed`` are not visited here, ``converters.safety.scan_config`` walks everything)."""
    inner = config.get("config", config)
    layers = inner.get("layers") if isinstance(inner, dict) else inner
    if isinstance(inner, list):  # Sequential of keras <= 2.2.2 stored a bare list of layers
        layers = inner
    for layer in layers or []:
        yield layer
        if layer.get("class_name") in ("Model", "Sequential", "Functional"):
            for sub in iter_layer_configs(layer):
                yield sub


def flavour_of(keras_version):
    """"tf.keras" when Keras wrote a "-tf" version (tf.keras), else "keras" (standalone)."""
    return "tf.keras" if str(keras_version or "").endswith("-tf") else "keras"


def infer_origin(keras_version):
    """(env name, explanation) of the TF 1.x environment most likely to have saved the file.

    "2.2.4-tf" is written by tf.keras of TF 1.13 *and* 1.15 (and later), so it maps to tf1.13 (the
    oldest, whose loader accepts both) with a note; ``--origin`` overrides any inference.
    """
    version = str(keras_version or "")
    if not version:
        return "tf1.13", "the file records no keras_version; assumed tf1.13 (override with --origin)"
    from legacy_tf1.compat_versions import version_tuple

    numbers = version_tuple(version)
    if version.endswith("-tf"):
        return "tf1.13", ("keras_version %s is tf.keras, written by TF 1.13 and 1.15 alike; assumed tf1.13 "
                          "(override with --origin 1.15)" % version)
    if numbers >= (2, 4, 0):
        return None, ("keras_version %s is TF 2.x era Keras, not a legacy TF 1.x model; convert it directly "
                      "(nox -s convert) or give --origin" % version)
    for minimum, env in ORIGIN_BY_KERAS:
        if numbers >= minimum:
            return env, "standalone keras %s -> %s (override with --origin)" % (version, env)
    return "tf1.13", "assumed tf1.13"  # pragma: no cover - the table ends at (0, 0, 0)


def inspect_file(path, known_classes=None):
    """A JSON-able description of the file (see the module docstring).

    ``known_classes``: layer class names the loading Keras knows; anything else in the config is listed
    under ``custom_classes`` (it needs ``--custom-objects``).
    """
    attrs = read_attributes(path)
    model_config = attrs.get("model_config")
    weights_only = model_config is None
    if weights_only and "layer_names" not in attrs and "model_weights" not in attrs["_groups"]:
        raise InputFileError(
            "%s has neither a model config nor Keras weights (root attributes: %s)."
            % (path, ", ".join(sorted(k for k in attrs if not k.startswith("_"))) or "none"),
            step="inspect", hint="Give a Keras .h5 file saved with model.save() or model.save_weights().")
    classes, names, unsafe = [], [], []
    if model_config is not None:
        try:
            config = json.loads(model_config)
        except (ValueError, RecursionError) as exc:
            raise InputFileError("the model config in %s is not valid JSON (%s)." % (path, exc),
                                 step="inspect", hint="The file is damaged; re-save it from the original code.")
        try:
            for layer in iter_layer_configs(config):
                class_name = layer.get("class_name")
                name = layer.get("config", {}).get("name") or layer.get("name")
                if not isinstance(class_name, str):
                    raise ValueError("a layer without a class name")
                classes.append(class_name)
                names.append(name)
            model_class = config.get("class_name")
            inputs = (config.get("config") or {}).get("input_layers") if isinstance(config.get("config"), dict) \
                else None
            input_names = [item[0] for item in inputs if isinstance(item, list) and item] if inputs else None
        except (AttributeError, TypeError, ValueError, RecursionError) as exc:  # valid JSON, not a model config
            raise InputFileError("the model config in %s is not a Keras model config (%s)." % (path, exc),
                                 step="inspect", hint="The file is damaged; re-save it from the original code.")
        # the Lambda gate's findings over the whole stored config (wrappers, nested models, any key)
        unsafe = safety.scan_config(config)
    else:
        model_class = None
        input_names = None
    keras_version = attrs.get("keras_version")
    origin, reason = infer_origin(keras_version)
    custom = []
    if known_classes is not None:
        custom = sorted(set(c for c in classes if c not in known_classes and
                            c not in ("Model", "Sequential", "Functional", "InputLayer")))
    return {
        "path": os.path.abspath(path),
        "keras_version": keras_version,
        "backend": attrs.get("backend"),
        "keras_flavour": flavour_of(keras_version),
        "weights_only": weights_only,
        "has_training_config": attrs.get("training_config") is not None,
        "model_class": model_class,
        "input_names": input_names,  # a functional model's inputs, in order (None: Sequential or unknown)
        "layer_classes": sorted(set(classes)),
        "layer_names": names if names else [_text(name) for name in attrs.get("layer_names") or []],
        "lambda_layers": safety.lambda_paths(unsafe),
        "unsafe": unsafe,
        "custom_classes": custom,
        "inferred_origin": origin,
        "origin_reason": reason,
    }
