"""The run folder: the only channel between environments, and atomic writes into it.

Layout (docs/run-folder.md)::

    runs/<model-stem>/            (or --out DIR)
      manifest.json               schema_version, model {path, sha256, inputs, outputs}, origin {env, python,
                                  tensorflow, keras, h5py, numpy, keras_flavour}, probe {source, ...}
      model.h5                    the re-saved model (origin environment)
      model.pb                    its frozen inference graph, when made
      model.keras, migration.json the model migrated to Keras 3 and how (tf2, converters.tf2.migrate)
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


# Steps that start beside the re-save (``converters.parity_matrix.run_side_by_side``: their TensorFlow import
# overlaps it) wait for its files: the host sets AWAIT_ENV in their environment, and writes RESAVE_FAILED
# into the run folder when the re-save fails, so that they stop at once. Every file of a run folder is
# written atomically (``atomic_path``): a name that exists is complete.
AWAIT_ENV = "TFBRIDGE_AWAIT_RESAVE"
RESAVE_FAILED = ".resave-failed"
# the origin's --eval step (``convert_legacy``), which the conversion step awaits the same way (issue 31)
EVAL_FAILED = ".eval-failed"
AWAIT_POLL_SECONDS = 0.05


def await_file(run_dir, name, before=None, failed=RESAVE_FAILED, waited_for="the re-save"):
    """``run_dir/name``, once it exists, for a step the host started beside the re-save (``AWAIT_ENV`` set;
    otherwise at once, exist or not). ``before``: called once before waiting (e.g. importing TensorFlow,
    which is what the wait is for). Raises ``Interrupted`` when the re-save failed (``RESAVE_FAILED``; or
    the marker ``failed`` of the step ``waited_for`` that writes ``name``) or after ``AWAIT_ENV`` seconds."""
    import time

    from converters.errors import Interrupted

    path = os.path.join(run_dir, name)
    limit = os.environ.get(AWAIT_ENV)
    if not limit or os.path.exists(path):
        return path
    if before is not None:
        before()
    deadline = time.time() + float(limit)
    while not os.path.exists(path):
        if not os.path.isdir(run_dir):  # the host removed the run's folder (a failed or interrupted run)
            raise Interrupted("stopped: its run folder %s was removed." % run_dir, step="await")
        for marker in set([RESAVE_FAILED, failed]):
            if os.path.exists(os.path.join(run_dir, marker)):
                raise Interrupted("stopped before its work: %s it waited for failed (its error is the one "
                                  "reported)." % ("the re-save" if marker == RESAVE_FAILED else waited_for),
                                  step="await")
        if time.time() > deadline:
            raise Interrupted("%s did not appear within %s s of waiting for %s." % (name, limit, waited_for),
                              step="await")
        time.sleep(AWAIT_POLL_SECONDS)
    return path


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


def read_json_if_valid(path):
    """``read_json``, or None when the file is missing, unreadable or not JSON (a result a run may not have
    written: the caller treats it as absent)."""
    try:
        return read_json(path)
    except (OSError, ValueError):
        return None


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


# ----------------------------------------------------------------------------- whose files a run folder holds
#
# A run folder carries RUN_MARKER, written by tfbridge when it publishes a run: it says tfbridge made the
# folder and lists (relative paths) every file tfbridge wrote there. A run never deletes what it did not
# write: ``check_out`` refuses an ``--out`` that would put a user's files or the inputs at risk, before any
# step starts; ``publish_run`` carries every file tfbridge did not write into the new run folder.

RUN_MARKER = ".tfbridge-run.json"
# Where tfbridge writes inside a run folder (see the layout above); a user's file at one of these paths
# would be overwritten by a run, so such a folder is refused instead.
OWNED_NAMES = frozenset((
    MANIFEST, MODEL_H5, MODEL_PB, PROBE, TFLITE, "model_float.tflite", "tflite.json", "npu.json", "layers.json",
    "report.json", "report.md", "report.html", "verify.json", "steps.json", "sandbox.json", "custom_objects.py",
    "eval.json", "model.keras", "migration.json",
    "model_int8_plain.tflite", "model_float_cle.tflite",  # issue 22 (--quantize)
    "logs", "last_failure", RUN_MARKER))
VELA_PREFIX = "model_int8_vela_"  # model_int8_vela_<target>.tflite: the int8 model compiled by Vela (--npu-target)
OWNED_PREFIXES = ("reference_", "parity_", "activations_", "eval_", ".stage-", VELA_PREFIX)


def read_marker(folder):
    """The marker of a tfbridge run folder, or None when ``folder`` is not one."""
    try:
        data = read_json(os.path.join(folder, RUN_MARKER))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("tfbridge") == "run" else None


def is_run_folder(folder):
    return os.path.isdir(folder) and read_marker(folder) is not None


def files_in(folder):
    """Relative paths of every file (and symbolic link) under ``folder``, sorted."""
    found = []
    for root, dirs, files in os.walk(folder):
        for name in dirs:  # links to folders are not followed: they are files of the user's
            if os.path.islink(os.path.join(root, name)):
                files.append(name)
        for name in files:
            found.append(os.path.relpath(os.path.join(root, name), folder))
    return sorted(found)


def user_files(folder):
    """Files under ``folder`` that tfbridge did not write (every file when there is no marker)."""
    marker = read_marker(folder) or {}
    written = set(marker.get("files") or ()) | {RUN_MARKER}
    return [path for path in files_in(folder) if path not in written]


def _owned(relative):
    top = relative.replace(os.sep, "/").split("/", 1)[0]
    return top in OWNED_NAMES or top.startswith(OWNED_PREFIXES)


def _inside(path, folder):
    """True when ``path`` is ``folder`` or inside it (both real, absolute)."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


INPUT_KEYS = ("model", "calib", "custom_objects", "arch", "probe", "eval", "eval_classes")


def protected_inputs(values):
    """The paths a run reads (``INPUT_KEYS`` of a dict or namespace of option values) that exist: what
    ``check_out`` must never let a run write over."""
    get = values.get if isinstance(values, dict) else (lambda key, default=None: getattr(values, key, default))
    return [get(key) for key in INPUT_KEYS if get(key) and os.path.exists(str(get(key)))]


def check_out(out, protected=(), step="run folder"):
    """Refuse an ``--out`` a run could damage; return its absolute path. Call before any step starts.

    ``protected``: the paths the command reads (the model file or SavedModel folder, ``--calib``/probe/
    eval data, ``--custom-objects``, an ``--arch`` file); entries that are None or do not exist (e.g.
    ``skimage``) are ignored. Raises ``UsageError`` (one paragraph) when ``out``:

    - exists and is not a folder, or is a non-empty folder without tfbridge's marker;
    - is, or contains, a protected path or the current folder; or is inside a protected folder;
    - is a tfbridge run folder holding a user's file where tfbridge writes (it would be overwritten).
    """
    from converters.errors import UsageError

    given = out
    out = os.path.abspath(out)
    real_out = os.path.realpath(out)
    new_folder = "Give --out a new folder (or an empty one), e.g. runs/<model-name>."
    for path in protected:
        if not path or not os.path.exists(str(path)):
            continue
        real = os.path.realpath(str(path))
        if _inside(real, real_out):
            raise UsageError(
                "--out %s %s the input %s; a run replaces its folder, so the input could be lost."
                % (given, "is" if real == real_out else "contains", path), step=step, hint=new_folder)
        if os.path.isdir(real) and _inside(real_out, real):
            raise UsageError(
                "--out %s is inside the input folder %s; tfbridge never writes into its inputs."
                % (given, path), step=step, hint=new_folder)
    if _inside(os.path.realpath(os.getcwd()), real_out):
        raise UsageError("--out %s is (or contains) the current folder; a run replaces its folder as a whole."
                         % given, step=step, hint=new_folder)
    if not os.path.lexists(out):
        return out
    if not os.path.isdir(out):
        raise UsageError("--out %s exists and is not a folder." % given, step=step, hint=new_folder)
    if read_marker(out) is None:
        if os.listdir(out):
            raise UsageError(
                "--out %s is a folder that tfbridge did not make (it has no %s) and it is not empty; a run "
                "replaces its folder, so its files could be lost." % (given, RUN_MARKER), step=step,
                hint=new_folder + " A run folder from a tfbridge older than the marker: remove it yourself.")
        return out
    at_risk = [path for path in user_files(out) if _owned(path)]
    if at_risk:
        raise UsageError(
            "--out %s is a tfbridge run folder, but it holds file(s) tfbridge did not write where a run "
            "writes: %s." % (given, ", ".join(at_risk[:10]) + (" ..." if len(at_risk) > 10 else "")),
            step=step, hint="Move or rename them, or give --out a new folder.")
    return out


def write_marker(folder, command, files=None):
    """Mark ``folder`` as a tfbridge run folder; ``files``: what tfbridge wrote (default: every file now
    in it)."""
    files = files_in(folder) if files is None else files
    write_json(os.path.join(folder, RUN_MARKER), {
        "tfbridge": "run", "command": command,
        "files": sorted(set(path for path in files if path != RUN_MARKER)),
    })


def add_to_marker(folder, command, files):
    """Record more files tfbridge wrote in ``folder`` (those listed before and still present are kept)."""
    marker = read_marker(folder) or {}
    present = set(path for path in marker.get("files") or () if os.path.lexists(os.path.join(folder, path)))
    write_marker(folder, command, sorted(present | set(files)))


def publish_run(temporary, out, command):
    """Put the complete run ``temporary`` (a sibling of ``out``) in place of ``out``.

    ``temporary`` gets the marker (listing its files), then every file of the old ``out`` that tfbridge did
    not write (hard-linked, or copied, so that the old folder stays complete until the swap), then the old
    folder is renamed aside, the new one renamed in, and the old one removed: at every instant either the
    old or the new run is complete. ``UsageError`` (nothing changed) if the old folder is no longer one a
    run may replace.
    """
    from converters.errors import UsageError

    write_marker(temporary, command)
    if os.path.lexists(out):
        if not os.path.isdir(out) or (read_marker(out) is None and os.listdir(out)):
            raise UsageError("--out %s changed during the run: it is no longer empty nor a tfbridge run folder; "
                             "it was left as it is." % out, step=command,
                             hint="Give --out a new folder (or an empty one).")
        kept = user_files(out)
        clash = [path for path in kept if os.path.lexists(os.path.join(temporary, path))]
        if clash:
            raise UsageError("%s holds file(s) tfbridge did not write at paths this run writes: %s; nothing was "
                             "replaced." % (out, ", ".join(clash)), step=command,
                             hint="Move or rename them, or give --out a new folder.")
        for path in kept:
            _carry(os.path.join(out, path), os.path.join(temporary, path))
        _carry_empty_folders(out, temporary)
    _swap(temporary, out)


def _carry(source, target):
    parent = os.path.dirname(target)
    if not os.path.isdir(parent):
        os.makedirs(parent)
    if os.path.islink(source):
        os.symlink(os.readlink(source), target)
        return
    try:
        os.link(source, target)
    except OSError:
        import shutil

        shutil.copy2(source, target)


def _carry_empty_folders(source, target):
    for root, dirs, files in os.walk(source):
        if not dirs and not files:
            relative = os.path.relpath(root, source)
            if relative != "." and not _owned(relative) and not os.path.exists(os.path.join(target, relative)):
                os.makedirs(os.path.join(target, relative))


def _swap(temporary, out):
    # rename the old run aside first, so that at every instant either the old or the new run is complete
    import shutil

    old = None
    if os.path.lexists(out):
        old = tempfile.mkdtemp(prefix=".%s.old-%d-" % (os.path.basename(out), os.getpid()), dir=os.path.dirname(out))
        os.rmdir(old)
        os.rename(out, old)
    try:
        os.rename(temporary, out)
    except OSError:
        if old is not None:
            os.rename(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# ----------------------------------------------------------------------------- what a killed run left behind
#
# A run builds in ``.<name>.partial-<pid>-XXXX`` beside ``--out`` and, when publishing, renames the old run to
# ``.<name>.old-<pid>-XXXX`` for an instant. A run killed with SIGKILL (or a power cut) cleans up neither.
# Nothing ever reads them (a run trusts only a published folder), and the next run of the same ``--out``
# removes those whose process is gone; an ``.old-`` folder whose run died between the two renames is the
# complete earlier run, and is put back when ``--out`` is missing.


def partial_folder(out):
    """A new, empty partial folder for a run into ``out`` (its sibling, named with this process's id)."""
    return tempfile.mkdtemp(prefix=".%s.partial-%d-" % (os.path.basename(out), os.getpid()),
                            dir=os.path.dirname(out))


def _owner(name, out):
    """The process id in a partial / old folder name of ``out``, or None for another name."""
    import re

    found = re.match(r"^\.%s\.(partial|old)-(\d+)-[^/]+$" % re.escape(os.path.basename(out)), name)
    return (found.group(1), int(found.group(2))) if found else None


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive
        return True
    return True


def recover(out, log=None):
    """Clean what killed runs into ``out`` left beside it (see above); return the names removed or restored."""
    import shutil

    parent = os.path.dirname(os.path.abspath(out))
    try:
        names = sorted(os.listdir(parent))
    except OSError:
        return []
    done = []
    for name in names:
        owner = _owner(name, out)
        if owner is None or owner[1] == os.getpid() or _alive(owner[1]):
            continue
        path = os.path.join(parent, name)
        if owner[0] == "old" and not os.path.lexists(out) and read_marker(path) is not None:
            os.rename(path, out)  # the complete earlier run, renamed aside by a run killed while publishing
            done.append("restored " + name)
        else:
            shutil.rmtree(path, ignore_errors=True)
            done.append("removed " + name)
    if done and log is not None:
        log("%s: cleaned what an interrupted run left: %s" % (os.path.basename(out), ", ".join(done)))
    return done
