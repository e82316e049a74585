"""What a model path is, read from its bytes on the host: a Keras ``.h5`` (the HDF5 signature at offset 0,
512, 1024, ... as the format allows), a Keras 3 ``.keras`` zip (``config.json`` inside), a SavedModel folder,
a TF GraphDef (``.pb`` whose bytes walk as a GraphDef protobuf, ``.pbtxt`` with ``node {`` blocks), a
checkpoint (``.meta``, prefix or folder), a TFLite flatbuffer (``TFL3``); and whether a command takes it.

For whom: ``converters.preflight.check`` (``check_model``), the host commands that hash or route a model
(``model_kind``, ``model_files``, ``checkpoint_meta``), and ``legacy_tf1``'s graph reading, which decides
the same way. Host side: standard library only, Python 3.7 compatible. What can go wrong:
``InputFileError`` (no such model, or a kind this command does not take), one paragraph naming both.
"""

import os
import re
import zipfile

from converters import options as declared
from converters.errors import InputFileError

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
GRAPH_KINDS = ("frozen_graph", "saved_model", "checkpoint")
KIND_WORDS = {
    "h5": "a Keras HDF5 file (.h5)",
    "keras": "a Keras 3 .keras file",
    "saved_model": "a SavedModel folder",
    "frozen_graph": "a TensorFlow GraphDef (.pb/.pbtxt)",
    "checkpoint": "a TensorFlow checkpoint (.meta + data files)",
    "saved_model_file": "a SavedModel's saved_model.pb (give its folder)",
    "tflite": "a TFLite model",
    "folder": "a folder that is not a SavedModel (no saved_model.pb in it)",
    "unknown": "not a model file tfbridge can read",
}
ACCEPTED_KINDS = {
    declared.CONVERT_LEGACY: ("h5", "frozen_graph", "saved_model", "checkpoint"),
    declared.VERIFY_UPGRADE: ("h5", "frozen_graph", "saved_model", "checkpoint"),
    declared.CONVERT: ("h5", "keras", "saved_model"),
}


def model_kind(path):
    """What ``path`` is, by content where the format has a signature: one of ``KIND_WORDS``.

    A ``.pb`` is a ``frozen_graph`` only when its bytes walk as a GraphDef protobuf (``_graph_def_like``; a
    SavedModel's own ``saved_model.pb`` is ``saved_model_file``); a ``.pbtxt`` when its text has GraphDef
    nodes; a checkpoint is its ``.meta`` (a MetaGraphDef protobuf), its prefix (``model.ckpt`` with
    ``model.ckpt.meta`` beside it) or a folder holding a ``checkpoint`` file or one ``.meta``.
    """
    if os.path.isdir(path):
        if any(os.path.isfile(os.path.join(path, name)) for name in ("saved_model.pb", "saved_model.pbtxt")):
            return "saved_model"
        if checkpoint_meta(path):
            return "checkpoint"
        return "folder"
    if not os.path.exists(path) and checkpoint_meta(path):
        return "checkpoint"
    head = _head(path, 8)
    if _is_hdf5(path):
        return "h5"
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as archive:
                if "config.json" in archive.namelist():
                    return "keras"
        except (zipfile.BadZipFile, OSError):
            pass
        return "unknown"
    if head[4:8] == b"TFL3":
        return "tflite"
    lower = path.lower()
    if lower.endswith(".pbtxt"):
        return "frozen_graph" if _graph_text_like(path) else "unknown"
    if lower.endswith(".pb"):
        shape = protobuf_shape(path)
        if shape == "graph_def":
            return "frozen_graph"
        if shape == "saved_model":
            return "saved_model_file"
        return "unknown"
    if lower.endswith(".meta"):
        return "checkpoint" if protobuf_shape(path) == "meta_graph" else "unknown"
    if lower.endswith(".index") or ".data-" in os.path.basename(lower):
        return "checkpoint" if checkpoint_meta(path) else "unknown"
    return "unknown"


def checkpoint_meta(path):
    """The ``.meta`` file of a TF checkpoint given as its ``.meta``, its prefix, one of its data files or its
    folder (the ``checkpoint`` file's latest, else the only ``.meta``), or None."""
    if os.path.isdir(path):
        state = os.path.join(path, "checkpoint")
        if os.path.isfile(state):
            try:
                with open(state) as handle:
                    for line in handle:
                        if line.startswith("model_checkpoint_path:"):
                            name = line.split(":", 1)[1].strip().strip('"')
                            meta = os.path.join(path, name) + ".meta" if not os.path.isabs(name) else name + ".meta"
                            if os.path.isfile(meta):
                                return meta
            except (OSError, UnicodeDecodeError):
                pass
        metas = sorted(name for name in os.listdir(path) if name.endswith(".meta"))
        return os.path.join(path, metas[-1]) if len(metas) == 1 else None
    if path.endswith(".meta"):
        return path if os.path.isfile(path) else None
    base = os.path.basename(path)
    if base.endswith(".index"):
        path = path[:-len(".index")]
    elif ".data-" in base:
        path = path[:path.rindex(".data-")]
    return path + ".meta" if os.path.isfile(path + ".meta") else None


def model_files(path):
    """The files that make up a model (for hashing): the file, a folder's files, or a checkpoint's
    ``.meta``, ``.index`` and ``.data-*`` files."""
    kind = model_kind(path) if os.path.exists(path) or checkpoint_meta(path) else "unknown"
    if kind == "checkpoint":
        meta = checkpoint_meta(path)
        prefix = meta[:-len(".meta")]
        folder = os.path.dirname(meta) or "."
        stem = os.path.basename(prefix)
        return sorted(os.path.join(folder, name) for name in os.listdir(folder)
                      if name == stem or name.startswith(stem + ".index") or name.startswith(stem + ".data-")
                      or name == stem + ".meta")
    if os.path.isdir(path):
        found = []
        for root, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            found.extend(os.path.join(root, name) for name in sorted(files))
        return found
    return [path]


# GraphDef: node=1, library=2, version=3 (varint), versions=4; NodeDef: name=1, op=2 (strings).
_GRAPH_DEF_FIELDS = {1: 2, 2: 2, 3: 0, 4: 2}
_SAVED_MODEL_FIELDS = {1: 0, 2: 2}
_META_GRAPH_FIELDS = dict((number, 2) for number in range(1, 8))


def _varint(data, position):
    result = shift = 0
    while True:
        if position >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
        shift += 7


def _fields(data, start=0, end=None, limit=None):
    """The top-level ``(field number, wire type, value start, value end)`` of a protobuf message in
    ``data[start:end]``; ``ValueError`` when the bytes are not a well-formed message."""
    end = len(data) if end is None else end
    position = start
    count = 0
    while position < end:
        key, position = _varint(data, position)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ValueError("field number 0")
        if wire == 0:
            _, after = _varint(data, position)
        elif wire == 1:
            after = position + 8
        elif wire == 2:
            length, position = _varint(data, position)
            after = position + length
        elif wire == 5:
            after = position + 4
        else:
            raise ValueError("wire type %d" % wire)
        if after > end:
            raise ValueError("field %d runs past the end" % number)
        yield number, wire, position, after
        position = after
        count += 1
        if limit and count >= limit:
            return


def protobuf_shape(path):
    """``graph_def``, ``saved_model``, ``meta_graph`` or None: which TensorFlow message the file's bytes walk
    as (every top-level field of the expected number and wire type, and for a GraphDef, a first node with a
    name and an op). The standard library only: the real parse happens in the environment."""
    import mmap

    try:
        with open(path, "rb") as handle:
            if os.path.getsize(path) == 0:
                return None
            data = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
            try:
                return _shape_of(data)
            finally:
                data.close()
    except (OSError, ValueError):
        return None


def _shape_of(data):
    try:
        fields = list(_fields(data))
    except ValueError:
        return None
    if not fields:
        return None
    numbers = [(number, wire) for number, wire, _, _ in fields]
    if all(_SAVED_MODEL_FIELDS.get(number) == wire for number, wire in numbers) and (2, 2) in numbers \
            and data[0] == 0x08:
        return "saved_model"
    if all(_GRAPH_DEF_FIELDS.get(number) == wire for number, wire in numbers):
        nodes = [(start, end) for number, _, start, end in fields if number == 1]
        if nodes:
            try:
                inner = dict((number, (start, end)) for number, _, start, end in _fields(data, *nodes[0]))
            except ValueError:
                inner = {}
            if 1 in inner and 2 in inner:
                try:
                    for start, end in (inner[1], inner[2]):
                        bytes(data[start:end]).decode("utf-8")
                    return "graph_def"
                except UnicodeDecodeError:
                    pass
    if all(_META_GRAPH_FIELDS.get(number) == wire for number, wire in numbers) and any(
            number == 2 for number, _ in numbers):
        return "meta_graph"
    return None


def _graph_text_like(path):
    """A GraphDef in protobuf text format: ``node {`` blocks with ``op:`` lines in its first 64 KiB."""
    try:
        with open(path, "rb") as handle:
            text = handle.read(1 << 16).decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    return bool(re.search(r"(^|\n)\s*node\s*\{", text)) and bool(re.search(r"\bop\s*:\s*\"", text))


def _head(path, size):
    try:
        with open(path, "rb") as handle:
            return handle.read(size)
    except OSError:
        return b""


def _is_hdf5(path):
    """The HDF5 signature at offset 0, 512, 1024, 2048, ... (a user block may precede the superblock)."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as handle:
            offset = 0
            while offset + len(HDF5_SIGNATURE) <= size:
                handle.seek(offset)
                if handle.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE:
                    return True
                offset = 512 if offset == 0 else offset * 2
    except OSError:
        return False
    return False


def check_model(command, path):
    """The model's kind, or the paragraph saying why this command cannot take it."""
    if not path or not (os.path.exists(path) or checkpoint_meta(path)):
        raise InputFileError("model file %s does not exist." % path, step="preflight",
                             hint="Check the path. %s" % accepts(command))
    kind = model_kind(path)
    if kind not in ACCEPTED_KINDS[command]:
        if kind == "unknown" and path.lower().endswith((".h5", ".hdf5")):
            raise InputFileError(
                "%s is not a readable HDF5 file (it does not start with the HDF5 signature: truncated, "
                "damaged, or not HDF5)." % path, step="preflight",
                hint="Give a Keras .h5 file saved with model.save() or model.save_weights(); re-copy or re-save "
                     "it from the original code.")
        if kind == "unknown" and path.lower().endswith((".pb", ".pbtxt", ".meta")):
            what = {".pb": "a TensorFlow GraphDef (its bytes do not read as a GraphDef protobuf: truncated, "
                           "damaged, or another format)",
                    ".pbtxt": "a TensorFlow GraphDef in text format (no `node { ... op: ... }` blocks)",
                    ".meta": "a TensorFlow checkpoint graph (its bytes do not read as a MetaGraphDef)"}[
                os.path.splitext(path.lower())[1]]
            raise InputFileError("%s is not %s." % (path, what), step="preflight",
                                 hint="Give a frozen TF 1.x GraphDef (.pb written with graph_def.SerializeToString() "
                                      "or .pbtxt with tf.train.write_graph), a SavedModel folder, a checkpoint "
                                      "(.meta + data files), or a Keras .h5.")
        hint = accepts(command)
        if command in (declared.CONVERT_LEGACY, declared.VERIFY_UPGRADE) and kind == "keras":
            hint += " A TF 2.x model is not legacy: convert it directly with `nox -s convert -- MODEL`."
        elif command == declared.CONVERT and kind in ("h5", "frozen_graph", "checkpoint"):
            hint += " A legacy (TF 1.x) model goes through `nox -s convert_legacy -- MODEL`."
        elif kind == "saved_model_file":
            hint = "Give the SavedModel's folder (the one holding saved_model.pb and variables/), not the file."
        raise InputFileError("%s is %s, which %s does not take." % (path, KIND_WORDS[kind], command),
                             step="preflight", hint=hint)
    return kind


def accepts(command):
    """What ``command`` takes, as the sentence its hints end with."""
    kinds = ACCEPTED_KINDS[command]
    return "%s takes %s." % (command, " or ".join(KIND_WORDS[kind] for kind in kinds))
