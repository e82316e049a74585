"""Everything about a command's options that can be checked before the first environment step.

For whom: the three host commands (``converters.verify``, ``converters.pipeline``, ``converters.convert``)
call ``check(command, values)`` right after parsing; a bad input fails here, in well under a second,
with the paragraph of the error it would otherwise have met minutes later inside a step.

Host side: standard library only, Python 3.7 compatible. What it reads from the disk:

- the model: that it exists and what it is, by content, not by name: an HDF5 file by its signature (at
  offset 0, 512, 1024, ... as the HDF5 format allows), a Keras 3 ``.keras`` zip (``config.json``
  inside), a SavedModel folder (``saved_model.pb``/``.pbtxt``), a TFLite flatbuffer (``TFL3``), a TF
  GraphDef / checkpoint by its name; each command says which kinds it takes and names the one it got;
- ``--arch``: a config file that exists (a JSON one is also scanned by the Lambda gate here), or the
  ``module:function(key=literal, ...)`` syntax;
- ``--custom-objects``: a ``.py`` file that exists;
- ``--calib``: present when the command converts, and yielding at least one sample: an image folder
  with at least one file whose first bytes are a JPEG/PNG/BMP signature, an image, an ``.npy`` whose
  header (read with the standard library) gives at least one numeric sample, an ``.npz`` with such a
  member, or ``skimage``;
- ``--probe``: as ``--calib``; without it, when ``--calib`` feeds both the probe and calibration and its
  count is known here (folders, arrays), that it holds enough samples for both (``split_fits``);
- a model of several inputs (``check_inputs_data``, called by ``converters.verify`` once the preflight read
  of the ``.h5`` has named its inputs): ``--calib`` / ``--probe`` an ``.npz`` with one array per input
  name, each with the same number of samples;
- ``--eval``: a folder whose class subfolders each hold at least one image (matching ``--eval-classes``
  when given), or an ``.npz`` whose ``x`` (or per-input arrays) and integer ``y`` headers agree
  (``eval_samples``); ``--eval-classes``: a readable list of distinct names;
- ``--preprocess``: a preset name or ``module:function`` syntax; ``--input-range``, sample counts;
- ``--npu-target``: known target names (made canonical: ``ethos_U65_256`` -> ``ethos-u65-256``);
- ``--out``: see ``converters.runfolder.check_out`` (never a folder tfbridge did not make, never one that
  holds the model or the data).

What it cannot read without an HDF5 library (whether an ``.h5`` holds a model config, Lambda layers,
its ``keras_version``) is read by ``inspect_h5`` with h5py alone, in the ``tf1.15`` environment's
interpreter (no TensorFlow, no Keras import), before any step that loads the model.
"""

import ast
import json
import os
import re
import struct
import zipfile

from converters import options as declared
from converters.errors import CalibrationDataError, InputFileError, UsageError
from envs import registry

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
IMAGE_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"BM")
NPY_MAGIC = b"\x93NUMPY"
BUILTIN_SKIMAGE = "skimage"
# How many candidate image files are opened to find a readable one before giving up.
IMAGE_PROBES = 64

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
                             hint="Check the path. %s" % _accepts(command))
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
        hint = _accepts(command)
        if command in (declared.CONVERT_LEGACY, declared.VERIFY_UPGRADE) and kind == "keras":
            hint += " A TF 2.x model is not legacy: convert it directly with `nox -s convert -- MODEL`."
        elif command == declared.CONVERT and kind in ("h5", "frozen_graph", "checkpoint"):
            hint += " A legacy (TF 1.x) model goes through `nox -s convert_legacy -- MODEL`."
        elif kind == "saved_model_file":
            hint = "Give the SavedModel's folder (the one holding saved_model.pb and variables/), not the file."
        raise InputFileError("%s is %s, which %s does not take." % (path, KIND_WORDS[kind], command),
                             step="preflight", hint=hint)
    return kind


GRAPH_KINDS = ("frozen_graph", "saved_model", "checkpoint")
_TENSOR_NAME = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.\-/]*(:[0-9]+)?$")


def parse_tensor_list(text, what="--inputs", shapes=True):
    """``--inputs NAME[:SHAPE],...`` / ``--outputs NAME,...`` into ``[(name, shape or None)]``.

    NAME is an op or tensor name of the graph (``input``, ``scope/x``, ``split:1``) or a signature key;
    SHAPE is dimensions joined by ``x``, ``?`` for a dynamic one: ``1x224x224x3``, ``?x20x8``. A part after
    the last ``:`` that holds an ``x`` or ``?`` is a shape; digits alone are a tensor index.
    """
    hint = ("Give %s as NAME[:SHAPE],... e.g. %s input:1x224x224x3 or %s image:?x64x64x3,meta:?x4 (a SHAPE is "
            "dimensions joined by x, ? for the batch)." % (what, what, what)) if shapes else \
        "Give %s as NAME,... e.g. %s scores,boxes." % (what, what)
    items = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            raise UsageError("%s %r has an empty name." % (what, text), step="preflight", hint=hint)
        name, shape = part, None
        if ":" in part:
            head, tail = part.rsplit(":", 1)
            if tail and ("x" in tail.lower() or "?" in tail):
                if not shapes:
                    raise UsageError("%s %r: %s takes names, not shapes." % (what, text, what), step="preflight",
                                     hint=hint)
                name, shape = head, _parse_shape(tail, part, what, hint)
            elif not tail.isdigit():
                raise UsageError("%s %r: %r is neither a shape (1x224x224x3, ?x20x8) nor a tensor index."
                                 % (what, text, tail), step="preflight", hint=hint)
        if not _TENSOR_NAME.match(name):
            raise UsageError("%s %r: %r is not a tensor name." % (what, text, name), step="preflight", hint=hint)
        if name in [n for n, _ in items]:
            raise UsageError("%s %r names %s twice." % (what, text, name), step="preflight", hint=hint)
        items.append((name, shape))
    return items


def _parse_shape(text, part, what, hint):
    dims = []
    for piece in text.lower().split("x"):
        piece = piece.strip()
        if piece in ("?", "-1", "none"):
            dims.append(None)
        elif piece.isdigit() and int(piece) > 0:
            dims.append(int(piece))
        else:
            raise UsageError("%s %r: shape %r has a dimension %r that is neither a positive number nor ?."
                             % (what, part, text, piece), step="preflight", hint=hint)
    if any(d is None for d in dims[1:]):
        raise UsageError("%s %r: only the first (batch) dimension may be ? in shape %r." % (what, part, text),
                         step="preflight", hint=hint)
    return dims


def check_graph_options(values, kind):
    """``--inputs``, ``--outputs`` (syntax), ``--tags`` and ``--signature`` (a SavedModel's only): a Keras
    file has named inputs already, so they are refused for one."""
    graph_only = [("--inputs", "inputs"), ("--outputs", "outputs"), ("--tags", "tags"), ("--signature", "signature")]
    given = [flag for flag, key in graph_only if values.get(key)]
    if kind not in GRAPH_KINDS and given:
        raise UsageError("%s only apply to a TF 1.x graph (GraphDef, SavedModel, checkpoint); %s is %s."
                         % (", ".join(given), values.get("model"), KIND_WORDS.get(kind, kind)), step="preflight",
                         hint="Leave them out: a Keras model names its inputs and outputs itself.")
    saved_only = [flag for flag, key in graph_only[2:] if values.get(key)]
    if saved_only and kind != "saved_model":
        raise UsageError("%s only apply to a SavedModel folder; %s is %s." % (
            ", ".join(saved_only), values.get("model"), KIND_WORDS.get(kind, kind)), step="preflight",
            hint="Leave them out, or give the SavedModel folder.")
    if values.get("inputs"):
        parse_tensor_list(values["inputs"], "--inputs")
    if values.get("outputs"):
        parse_tensor_list(values["outputs"], "--outputs", shapes=False)


def _accepts(command):
    kinds = ACCEPTED_KINDS[command]
    return "%s takes %s." % (command, " or ".join(KIND_WORDS[kind] for kind in kinds))


def check_origin(origin):
    """The environment name of ``--origin`` (None when not given); ``UsageError`` for an unknown one."""
    if not origin:
        return None
    env = declared.ORIGINS.get(str(origin))
    if env is None:
        raise UsageError(
            "--origin %r is not a TF version tfbridge has a legacy environment for." % origin, step="preflight",
            hint="Give --origin 1.13 or --origin 1.15 (the TF version that saved the model), or leave it out "
                 "to infer it from the file; a model saved by TF 2.x is converted directly with "
                 "`nox -s convert -- MODEL`.")
    return env


def parse_arch_call(text):
    """(module, function, kwargs) from ``module:function`` or ``module:function(k=literal, ...)``.

    Keyword values are parsed with ``ast.literal_eval``: literals only, so the string cannot run code
    beyond importing ``module`` and calling ``function`` (in the origin environment, by the re-save step).
    """
    if ":" not in text:
        raise UsageError("--arch %r is neither a file nor module:function." % text, step="preflight",
                         hint="Give a JSON/YAML model config file or e.g. "
                              "keras_vggface.vggface:VGGFace(model=\"senet50\").")
    module, call = text.split(":", 1)
    module, call = module.strip(), call.strip()
    if not module or not all(part.isidentifier() for part in module.split(".")):
        raise UsageError("--arch %r: %r is not a module name." % (text, module), step="preflight")
    kwargs = {}
    if "(" in call:
        try:
            node = ast.parse(call, mode="eval").body
        except SyntaxError as exc:
            raise UsageError("--arch %r is not a valid call (%s)." % (text, exc.msg), step="preflight")
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name) or node.args:
            raise UsageError("--arch %r: only function(key=literal, ...) with keyword arguments is accepted."
                             % text, step="preflight")
        for keyword in node.keywords:
            if keyword.arg is None:
                raise UsageError("--arch %r: **kwargs is not accepted." % text, step="preflight")
            try:
                kwargs[keyword.arg] = ast.literal_eval(keyword.value)
            except ValueError:
                raise UsageError("--arch %r: the value of %s is not a literal." % (text, keyword.arg),
                                 step="preflight",
                                 hint="Only strings, numbers, tuples, lists, dicts, True/False/None are allowed.")
        call = node.func.id
    if not call.isidentifier():
        raise UsageError("--arch %r: %r is not a function name." % (text, call), step="preflight")
    return module, call, kwargs


def check_arch(arch, trust_model=False):
    """``--arch``: an existing JSON/YAML config (a JSON one passes the Lambda gate here) or a call."""
    if os.path.exists(arch):
        if not os.path.isfile(arch) or not arch.lower().endswith((".json", ".yaml", ".yml")):
            raise UsageError("--arch %s is not a .json/.yaml model config file." % arch, step="preflight",
                             hint="Give model.to_json() / model.to_yaml() saved to a file, or module:function(...).")
        if arch.lower().endswith(".json"):
            try:
                with open(arch) as handle:
                    text = handle.read()
                json.loads(text)
            except (OSError, ValueError) as exc:
                raise InputFileError("--arch %s is not valid JSON (%s)." % (arch, exc), step="preflight")
            _gate(text, "the architecture %s" % arch, trust_model)
        return "file"
    parse_arch_call(arch)
    return "call"


def _gate(config_text, where, trust_model):
    try:
        from converters import safety
    except ImportError:  # pragma: no cover - converters/safety.py is part of tfbridge
        return []
    return safety.check_config(config_text, where=where, trust_model=trust_model, step="preflight")


def check_custom_objects(path):
    if not os.path.isfile(path):
        raise InputFileError("--custom-objects %s does not exist." % path, step="preflight",
                             hint="Give a .py file defining CUSTOM_OBJECTS = {...} or the custom layer classes.")
    if not path.endswith(".py"):
        raise UsageError("--custom-objects %s is not a .py file." % path, step="preflight",
                         hint="Give a .py file defining CUSTOM_OBJECTS = {...} or the custom layer classes.")


_MODULE_FUNCTION = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def check_preprocess(name):
    if name in declared.PREPROCESS_PRESETS or _MODULE_FUNCTION.match(name or ""):
        return
    raise UsageError("--preprocess %r is neither a preset nor module:function." % name, step="preflight",
                     hint="Presets: %s; or your own function as module:function (importable from the current "
                          "folder)." % ", ".join(declared.PREPROCESS_PRESETS))


def parse_range(text):
    try:
        low, high = [float(part) for part in text.split(",")]
    except ValueError:
        raise UsageError("--input-range %r must be LO,HI (e.g. 0,255)." % text, step="preflight")
    if not low < high:
        raise UsageError("--input-range %r: LO must be below HI." % text, step="preflight")
    return low, high


# ------------------------------------------------------------------------------------------- data


def npy_header(read):
    """(shape, dtype descr) of an ``.npy`` stream, read with the standard library (format 1.0 - 3.0)."""
    magic = read(6)
    if magic != NPY_MAGIC:
        raise ValueError("not an .npy array (no NUMPY magic)")
    major = bytearray(read(2))[0]
    if major == 1:
        (length,) = struct.unpack("<H", read(2))
    elif major in (2, 3):
        (length,) = struct.unpack("<I", read(4))
    else:
        raise ValueError("unknown .npy format version %d" % major)
    header = ast.literal_eval(read(length).decode("latin1"))
    if not isinstance(header, dict) or "shape" not in header or "descr" not in header:
        raise ValueError("the .npy header has no shape")
    return tuple(header["shape"]), header["descr"]


def _numeric(descr):
    return isinstance(descr, str) and len(descr) >= 2 and descr[1] in "biuf"


def data_samples(path, what="--calib"):
    """A description of the samples ``path`` offers ({"kind", "samples"}), or the paragraph why none.

    Not a full read (that happens in the environment, with the model's shape): enough to know that at
    least one sample will come out of it.
    """
    hint = ("Point %s at representative images (a folder, searched recursively: jpg, png, bmp), an .npy "
            "array with samples along its first axis, an .npz of such arrays, or 'skimage'." % what)
    if path == BUILTIN_SKIMAGE:
        return {"kind": "skimage", "samples": None}
    if not os.path.exists(path):
        raise CalibrationDataError("%s %s does not exist." % (what, path), step="preflight", hint=hint)
    if os.path.isdir(path):
        candidates = []
        for root, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            candidates.extend(os.path.join(root, name) for name in sorted(files)
                              if name.lower().endswith(IMAGE_EXTENSIONS))
        if not candidates:
            raise CalibrationDataError("no image files (jpg, png, bmp) under %s." % path, step="preflight", hint=hint)
        if not any(_is_image(candidate) for candidate in candidates[:IMAGE_PROBES]):
            raise CalibrationDataError(
                "no image under %s could be read: the first %d of %d image files are not JPEG, PNG or BMP."
                % (path, min(IMAGE_PROBES, len(candidates)), len(candidates)), step="preflight", hint=hint)
        return {"kind": "images", "samples": len(candidates)}
    lower = path.lower()
    if lower.endswith(IMAGE_EXTENSIONS):
        if not _is_image(path):
            raise CalibrationDataError("no image in %s could be read (not JPEG, PNG or BMP)." % path,
                                       step="preflight", hint=hint)
        return {"kind": "image", "samples": 1}
    if lower.endswith(".npy"):
        try:
            with open(path, "rb") as handle:
                shape, descr = npy_header(handle.read)
        except (OSError, ValueError, SyntaxError, struct.error, IndexError) as exc:
            raise CalibrationDataError("%s %s is not a readable .npy array (%s)." % (what, path, exc),
                                       step="preflight", hint=hint)
        return {"kind": "npy", "samples": _count(path, shape, descr, what, hint)}
    if lower.endswith(".npz"):
        try:
            with zipfile.ZipFile(path) as archive:
                members = [name for name in archive.namelist() if name.endswith(".npy")]
                if not members:
                    raise CalibrationDataError("%s holds no samples (no arrays in the .npz)." % path,
                                               step="preflight", hint=hint)
                counts = {}
                for name in members:
                    with archive.open(name) as handle:
                        shape, descr = npy_header(handle.read)
                    counts[name[:-4]] = _count(path, shape, descr, what, hint, member=name[:-4])
        except (OSError, ValueError, SyntaxError, struct.error, IndexError, zipfile.BadZipFile) as exc:
            raise CalibrationDataError("%s %s is not a readable .npz archive (%s)." % (what, path, exc),
                                       step="preflight", hint=hint)
        return {"kind": "npz", "samples": min(counts.values()), "arrays": counts}
    raise CalibrationDataError("%s %s is neither an image folder, an image, an .npy nor an .npz." % (what, path),
                               step="preflight", hint=hint)


def _count(path, shape, descr, what, hint, member=None):
    where = "%s[%s]" % (path, member) if member else path
    if not _numeric(descr):
        raise CalibrationDataError("%s %s has dtype %s, not numbers." % (what, where, descr), step="preflight",
                                   hint=hint)
    if not shape or shape[0] < 1:
        raise CalibrationDataError("%s holds no samples (shape %s)." % (where, tuple(shape)), step="preflight",
                                   hint=hint)
    return int(shape[0])


def _is_image(path):
    head = _head(path, 8)
    return any(head.startswith(signature) for signature in IMAGE_SIGNATURES)


def check_inputs_data(values, input_names):
    """A model of several inputs (``input_names``, from the preflight read of the file) needs one array
    per input in ``--calib`` / ``--probe``: an ``.npz`` whose arrays are named like the inputs and hold
    the same number of samples. Checked from the archive's headers (standard library), before any step."""
    if not input_names or len(input_names) < 2:
        return
    example = "numpy.savez(PATH, %s)" % ", ".join("%s=..." % name for name in input_names)
    for option in ("calib", "probe"):
        path = values.get(option)
        if not path:
            continue
        what = "--%s %s" % (option, path)
        if not str(path).lower().endswith(".npz"):
            raise CalibrationDataError(
                "%s gives data for one input; the model has %d (%s)." % (what, len(input_names),
                                                                       ", ".join(input_names)),
                step="preflight", hint="Give an .npz holding one array per model input, named like the input: %s."
                                       % example)
        arrays = data_samples(path, "--" + option).get("arrays") or {}
        missing = [name for name in input_names if name not in arrays]
        if missing:
            raise CalibrationDataError(
                "%s has no array for model input(s) %s (it holds: %s)." % (what, ", ".join(missing),
                                                                         ", ".join(sorted(arrays)) or "nothing"),
                step="preflight", hint="Save one array per model input, named like the input: %s." % example)
        counts = dict((name, arrays[name]) for name in input_names)
        if len(set(counts.values())) != 1:
            raise CalibrationDataError(
                "%s: the inputs' arrays hold different numbers of samples (%s); row i of every array is one "
                "sample." % (what, ", ".join("%s: %d" % (name, counts[name]) for name in input_names)),
                step="preflight", hint="Give the same number of samples for every input, in the same order.")


MIN_SPLIT_CALIB = declared.MIN_SPLIT_CALIB


def split_fits(found, calib, calib_samples, probe_samples):
    """Refuse a ``--calib`` source (its ``data_samples`` description) too small for the probe and a
    calibration set disjoint from it (``converters.shared.calibration.split`` decides the same in the
    environment, where it also sees counts unknown here: ``skimage``)."""
    count = found.get("samples")
    if count is None:
        return
    probe_samples = declared.probe_size(probe_samples, count)
    needed = max(1, min(int(calib_samples or declared.DEFAULT_CALIB_SAMPLES), MIN_SPLIT_CALIB))
    if count - probe_samples < needed:
        raise CalibrationDataError(
            "--calib %s has %d samples: too few for a probe of %d samples and at least %d calibration samples "
            "that are not in the probe (calibration and probe never share a sample)."
            % (calib, count, probe_samples, needed), step="preflight",
            hint="Give more data, a separate probe source with --probe PATH, or fewer samples: e.g. "
                 "--probe-samples %d or --calib-samples %d." % (max(1, count - needed), max(1, count - probe_samples)))


def read_classes(path):
    """The names of an ``--eval-classes`` file (one per line; blank lines and ``#`` comments ignored)."""
    hint = "Give a text file naming the --eval class subfolders in the model's output order, one per line."
    try:
        with open(path) as handle:
            names = [line.strip() for line in handle if line.strip() and not line.strip().startswith("#")]
    except (OSError, UnicodeDecodeError) as exc:
        raise InputFileError("--eval-classes %s cannot be read (%s)." % (path, exc), step="preflight", hint=hint)
    if not names:
        raise CalibrationDataError("--eval-classes %s names no class." % path, step="preflight", hint=hint)
    if len(set(names)) != len(names):
        raise CalibrationDataError("--eval-classes %s names a class twice." % path, step="preflight", hint=hint)
    return names


def eval_samples(path, classes_file=None):
    """A description of ``--eval`` ({"kind", "samples", "classes"}), or the paragraph why it cannot serve."""
    hint = ("Give --eval a folder with one subfolder of images per class (Keras's image_dataset_from_directory "
            "layout), or an .npz with x (or one array per model input) and integer labels y.")
    if not os.path.exists(path):
        raise CalibrationDataError("--eval %s does not exist." % path, step="preflight", hint=hint)
    if os.path.isdir(path):
        found = sorted(name for name in os.listdir(path)
                       if os.path.isdir(os.path.join(path, name)) and not name.startswith("."))
        names = read_classes(classes_file) if classes_file else found
        if not found:
            raise CalibrationDataError("--eval %s has no class subfolders." % path, step="preflight", hint=hint)
        missing = [name for name in names if name not in found]
        unlisted = [name for name in found if name not in names]
        if missing or unlisted:
            raise CalibrationDataError(
                "--eval-classes %s does not match the subfolders of %s (%s)." % (classes_file, path, "; ".join(
                    part for part in ("not a subfolder: %s" % ", ".join(missing) if missing else "",
                                      "not listed: %s" % ", ".join(unlisted) if unlisted else "") if part)),
                step="preflight", hint="List every class subfolder once, in the model's output order.")
        total = 0
        for name in names:
            try:
                total += data_samples(os.path.join(path, name), what="--eval class")["samples"]
            except CalibrationDataError as error:
                error.hint = hint
                raise
        return {"kind": "folder", "samples": total, "classes": len(names)}
    if classes_file:
        read_classes(classes_file)
    if not path.lower().endswith(".npz"):
        raise CalibrationDataError("--eval %s is neither a folder of class subfolders nor an .npz." % path,
                                   step="preflight", hint=hint)
    try:
        with zipfile.ZipFile(path) as archive:
            headers = {}
            for name in archive.namelist():
                if name.endswith(".npy"):
                    with archive.open(name) as handle:
                        headers[name[:-4]] = npy_header(handle.read)
    except (OSError, ValueError, SyntaxError, struct.error, IndexError, zipfile.BadZipFile) as exc:
        raise CalibrationDataError("--eval %s is not a readable .npz archive (%s)." % (path, exc), step="preflight",
                                   hint=hint)
    if "y" not in headers:
        raise CalibrationDataError("--eval %s has no y (integer labels); it has %s." % (
            path, ", ".join(sorted(headers)) or "no arrays"), step="preflight", hint=hint)
    shape, descr = headers["y"]
    if len(shape) != 1 or not (isinstance(descr, str) and len(descr) >= 2 and descr[1] in "iu"):
        raise CalibrationDataError("--eval %s: y has shape %s and dtype %s; it must be integer labels of shape (N,)."
                                   % (path, tuple(shape), descr), step="preflight", hint=hint)
    inputs = dict((k, v) for k, v in headers.items() if k != "y")
    if not inputs:
        raise CalibrationDataError("--eval %s has y but no x." % path, step="preflight", hint=hint)
    for key, (x_shape, x_descr) in sorted(inputs.items()):
        if not _numeric(x_descr) or not x_shape or x_shape[0] != shape[0]:
            raise CalibrationDataError("--eval %s: %s has shape %s and dtype %s; it needs %d numeric samples like y."
                                       % (path, key, tuple(x_shape), x_descr, shape[0]), step="preflight", hint=hint)
    if shape[0] < 1:
        raise CalibrationDataError("--eval %s holds no samples." % path, step="preflight", hint=hint)
    return {"kind": "npz", "samples": int(shape[0]), "classes": None}


# ------------------------------------------------------------------------------------------- all


def check_npu_targets(names):
    """The canonical names of ``--npu-target`` values (lower case, '_' for '-', aliases such as ``imx93``
    resolved, duplicates dropped); an unknown name is a ``UsageError`` that lists the known ones."""
    import difflib

    known = declared.NPU_TARGETS
    canonical = []
    for name in names or [declared.DEFAULT_NPU_TARGET]:
        key = declared.canonical_npu_target(name)
        if key is None:
            typed = str(name).strip().lower().replace("_", "-")
            close = difflib.get_close_matches(typed, list(known) + list(declared.NPU_TARGET_ALIASES), n=1)
            raise UsageError("unknown --npu-target %r%s." % (name, " (did you mean %s?)" % close[0] if close else ""),
                             step="preflight",
                             hint="Known targets: %s; imx93 stands for ethos-u65-256 (the i.MX 93's NPU)."
                                  % ", ".join(known))
        if key not in canonical:
            canonical.append(key)
    return canonical


def check(command, values, demo=False):
    """Check every option of ``command`` (a dict of declared option values, changed in place: paths made
    absolute); return a dict of what was learnt (``model_kind``, ``origin_env``, ``calib``).

    ``demo``: convert_legacy's embedded demo, whose model and data tfbridge makes itself.
    """
    found = {}
    model = values.get("model")
    if model is None and not demo:
        raise UsageError("no MODEL given.", step="preflight", hint=_accepts(command))
    found["origin_env"] = check_origin(values.get("origin"))
    if values.get("preprocess"):
        check_preprocess(values["preprocess"])
    if values.get("input_range"):
        parse_range(values["input_range"])
    if command in declared.CONVERTING:
        values["npu_target"] = check_npu_targets(values.get("npu_target"))
    for name in ("calib_samples", "probe_samples"):
        if values.get(name) is not None and int(values[name]) < 1:
            raise UsageError("--%s must be at least 1 (got %s)." % (name.replace("_", "-"), values[name]),
                             step="preflight")
    if values.get("parity_samples") is not None and int(values["parity_samples"]) < 0:
        raise UsageError("--parity-samples must be 0 (the whole probe) or more (got %s)." % values["parity_samples"],
                         step="preflight")
    if command in declared.CONVERTING and values.get("quantize") is not None:
        try:
            declared.quantize_candidates(values["quantize"])
        except ValueError as exc:
            raise UsageError("%s." % exc, step="preflight",
                             hint="See README.md, \"Int8 accuracy recovery\" (e.g. --quantize cle+bias).")
    if values.get("tf") or values.get("bisect"):
        found["tf_environments"] = registry.tf_environments(values.get("tf"), values.get("backend"))
    if values.get("custom_objects"):
        check_custom_objects(values["custom_objects"])
        values["custom_objects"] = os.path.abspath(values["custom_objects"])
    if values.get("arch"):
        if check_arch(values["arch"], bool(values.get("trust_model"))) == "file":
            values["arch"] = os.path.abspath(values["arch"])
    if not demo:
        found["model_kind"] = check_model(command, model)
        values["model"] = os.path.abspath(model)
        if command in declared.LEGACY:
            check_graph_options(values, found["model_kind"])
    calib = values.get("calib")
    probe = values.get("probe")
    if probe:
        found["probe"] = data_samples(probe, what="--probe")
        if probe != BUILTIN_SKIMAGE:
            values["probe"] = os.path.abspath(probe)
    if calib:
        found["calib"] = data_samples(calib)
        if calib != BUILTIN_SKIMAGE:
            values["calib"] = os.path.abspath(calib)
        if command in declared.CONVERTING and not probe:
            split_fits(found["calib"], calib, values.get("calib_samples"), values.get("probe_samples"))
    elif command in declared.CONVERTING and not demo:
        raise UsageError("no calibration data (--calib).", step="preflight",
                         hint="%s converts to int8, which needs representative data: give --calib with a folder "
                              "of representative images (and --preprocess as in training), an .npy file, or "
                              "'skimage' for the built-in sample photos (a demo, not your data)." % command)
    if values.get("eval_classes") and not values.get("eval"):
        raise UsageError("--eval-classes needs --eval.", step="preflight",
                         hint="Give --eval with the labelled folder whose class order the file lists.")
    if values.get("eval"):
        found["eval"] = eval_samples(values["eval"], values.get("eval_classes"))
        values["eval"] = os.path.abspath(values["eval"])
        if values.get("eval_classes"):
            values["eval_classes"] = os.path.abspath(values["eval_classes"])
    return found
