"""The run folder: the only channel between environments, and atomic writes into it.

Layout (see shared/DESIGN.md, "Data contract")::

    runs/<model-stem>/            (or --out DIR)
      manifest.json               schema_version, model {path, sha256, inputs, outputs}, origin {env, python,
                                  tensorflow, keras, h5py, numpy, keras_flavour}, probe {source, ...}
      model.h5                    the re-saved model (origin environment)
      model.pb                    its frozen inference graph, when made
      probe.npz                   probe inputs, one array per model input, keyed by input name
      reference_<env>.npz         outputs on the probe in <env> (e.g. reference_tf1.13.npz), keyed by output name
      parity_<env>.json           one parity matrix cell (written by the environment that made it)
      model_int8.tflite           the converted model
      tflite.json, npu.json, layers.json   conversion results (tf2)
      report.json, report.md, report.html

Every file is written to a temporary name in the same folder and renamed into place, so a crash never
leaves a half file that a later step would trust. Python 3.7 compatible; numpy only where arrays are
written (imported lazily so the host can use the rest).
"""

import contextlib
import hashlib
import io
import json
import os
import tempfile

SCHEMA_VERSION = 1

MANIFEST = "manifest.json"
MODEL_H5 = "model.h5"
MODEL_PB = "model.pb"
PROBE = "probe.npz"
TFLITE = "model_int8.tflite"


def reference_name(env_label):
    return "reference_%s.npz" % env_label


def parity_name(env_label):
    return "parity_%s.json" % env_label


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if the block succeeds.

    For writers that want a file name (h5py, the TFLite converter, np.savez). On any exception the
    temporary file is removed and ``path`` is untouched.
    """
    directory = os.path.dirname(os.path.abspath(path)) or "."
    os.makedirs(directory, exist_ok=True)
    base = os.path.basename(path)
    stem, ext = os.path.splitext(base)
    fd, temporary = tempfile.mkstemp(prefix=".%s." % stem, suffix=".partial" + ext, dir=directory)
    os.close(fd)
    try:
        yield temporary
        _fsync_file(temporary)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        raise


def write_bytes(path, data):
    with atomic_path(path) as temporary:
        with open(temporary, "wb") as handle:
            handle.write(data)


def write_text(path, text):
    write_bytes(path, text.encode("utf-8"))


def write_json(path, data):
    write_text(path, json.dumps(data, indent=2, sort_keys=True, default=_json_default) + "\n")


def read_json(path):
    with open(path) as handle:
        return json.load(handle)


def write_arrays(path, arrays):
    """Write a dict of numpy arrays as ``.npz`` atomically (keys may contain ':' and '/')."""
    import numpy as np

    buffer = io.BytesIO()
    np.savez(buffer, **{str(key): np.asarray(value) for key, value in arrays.items()})
    write_bytes(path, buffer.getvalue())


def read_arrays(path):
    import numpy as np

    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def sha256_file(path, chunk=1 << 20):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while True:
            block = handle.read(chunk)
            if not block:
                break
            digest.update(block)
    return digest.hexdigest()


def _fsync_file(path):
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _json_default(value):
    # numpy scalars and arrays, without importing numpy on the host
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    raise TypeError("not JSON serialisable: %r" % (value,))
