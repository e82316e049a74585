"""Reading a TF 1.x graph source without running it: a frozen GraphDef (``.pb`` / ``.pbtxt``), a TF1
SavedModel folder, a checkpoint; the TF release that made it; the graph loaded into a ``tf.Graph``.

For whom: ``legacy_tf1.graph_signature`` (the preflight read, ``inspect-graph``) and
``legacy_tf1.graph_resave`` (the re-save of a graph), in tf1.13 / tf1.15 (Python 3.7). The Keras ``.h5``
counterpart is ``legacy_tf1.inspection``. What can go wrong: ``InputFileError`` (not a GraphDef / SavedModel /
checkpoint, data files missing), ``UsageError`` (no such ``--tags`` / ``--signature``), ``ModelLoadError``
(an op this TF does not know, a placeholder of an impossible shape).
"""

import os

from converters import runfolder
from converters.errors import InputFileError, ModelLoadError, UsageError
from legacy_tf1 import compat

tf = compat.tf

# TF's GraphDef producer versions (tf.version.GRAPH_DEF_VERSION), measured in the environments.
PRODUCER_TF1_13 = 27
PRODUCER_TF1_15 = 134
GRAPH_KINDS = ("frozen_graph", "saved_model", "checkpoint")
DEFAULT_TAGS = "serve"
DEFAULT_SIGNATURE = "serving_default"


class GraphSource(object):
    """A graph source read from disk (nothing run): ``graph_def``, and for a SavedModel / checkpoint the
    ``meta_graph`` and ``signature`` (a SignatureDef or None), ``prefix`` (checkpoint), ``tf_version``
    (``meta_info_def.tensorflow_version`` or None), ``producer`` (``versions.producer``)."""

    def __init__(self, kind, path, graph_def, meta_graph=None, signature=None, signature_key=None, tags=None,
                 prefix=None, tf_version=None):
        self.kind = kind
        self.path = path
        self.graph_def = graph_def
        self.meta_graph = meta_graph
        self.signature = signature
        self.signature_key = signature_key
        self.tags = tags
        self.prefix = prefix
        self.tf_version = tf_version or None
        self.producer = int(graph_def.versions.producer) if graph_def.HasField("versions") else 0


def graph_kind(path):
    """``frozen_graph``, ``saved_model``, ``checkpoint`` or None (a Keras file), decided like the host's
    preflight (``converters.preflight_model.model_kind``)."""
    from converters import preflight_model

    kind = preflight_model.model_kind(path)
    return kind if kind in GRAPH_KINDS else None


def checkpoint_paths(path):
    """``(meta file, checkpoint prefix)`` of a checkpoint given as its ``.meta``, its prefix or its folder."""
    from converters import preflight_model

    meta = preflight_model.checkpoint_meta(path)
    if meta is None:
        raise InputFileError("%s is not a TF checkpoint: no .meta file found for it." % path, step="preflight",
                             hint="Give the checkpoint's .meta file, its prefix (model.ckpt) or its folder.")
    prefix = meta[:-len(".meta")]
    folder = os.path.dirname(meta)
    state = os.path.join(folder, "checkpoint")
    if os.path.isdir(path) and os.path.isfile(state):  # the folder's latest checkpoint
        latest = tf.train.latest_checkpoint(folder)
        if latest and os.path.isfile(latest + ".meta"):
            meta, prefix = latest + ".meta", latest
    if not (os.path.isfile(prefix + ".index") or os.path.isfile(prefix)):
        raise InputFileError("the checkpoint %s has a graph (.meta) but no variable data (%s.index and "
                             "%s.data-*)." % (meta, prefix, prefix), step="preflight",
                             hint="Copy the checkpoint's .index and .data-* files next to its .meta.")
    return meta, prefix


def read_source(path, tags=None, signature=None):
    """Read a graph source without running it: the GraphDef (binary or text), the SavedModel's MetaGraphDef
    for ``tags`` (default ``serve``) and its ``signature`` (default ``serving_default``, else the only one),
    or a checkpoint's ``.meta`` (the ``.meta`` path, the checkpoint prefix, or a folder with a ``checkpoint``
    file / one ``.meta``). ``InputFileError`` for a file that is not one."""
    kind = graph_kind(path)
    if kind == "frozen_graph":
        return GraphSource(kind, path, _read_graph_def(path))
    if kind == "saved_model":
        return _read_saved_model(path, tags, signature)
    if kind == "checkpoint":
        meta, prefix = checkpoint_paths(path)
        meta_graph = _parse(meta, _meta_graph_pb2().MetaGraphDef, "a MetaGraphDef (.meta)")
        return GraphSource(kind, meta, meta_graph.graph_def, meta_graph=meta_graph, prefix=prefix,
                           tf_version=meta_graph.meta_info_def.tensorflow_version)
    raise InputFileError("%s is not a TF 1.x graph (.pb/.pbtxt GraphDef, SavedModel folder or checkpoint)." % path,
                         step="preflight")


def _meta_graph_pb2():
    from tensorflow.core.protobuf import meta_graph_pb2

    return meta_graph_pb2


def _parse(path, message_class, what):
    from google.protobuf import message as protobuf_message
    from google.protobuf import text_format

    message = message_class()
    with open(path, "rb") as handle:
        data = handle.read()
    try:
        if path.lower().endswith(".pbtxt"):
            text_format.Merge(data.decode("utf-8"), message)
        else:
            message.ParseFromString(data)
    except (protobuf_message.DecodeError, text_format.ParseError, UnicodeDecodeError, RuntimeWarning,
            ValueError) as exc:
        raise InputFileError("%s is not %s (%s)." % (path, what, str(exc).splitlines()[0][:200] if str(exc) else
                                                      type(exc).__name__), step="preflight",
                             hint="Give a TF 1.x GraphDef (.pb written with SerializeToString(), .pbtxt with "
                                  "tf.train.write_graph(..., as_text=True)), a SavedModel folder or a checkpoint.")
    return message


def _read_graph_def(path):
    graph_def = _parse(path, compat.v1().GraphDef, "a TensorFlow GraphDef")
    if not len(graph_def.node):
        raise InputFileError("%s holds no GraphDef nodes: it is not a TensorFlow graph (or an empty one)." % path,
                             step="preflight",
                             hint="Give a frozen TF 1.x GraphDef (.pb/.pbtxt), a SavedModel folder or a checkpoint.")
    return graph_def


def _read_saved_model(path, tags, signature):
    from tensorflow.core.protobuf import saved_model_pb2

    name = "saved_model.pb" if os.path.isfile(os.path.join(path, "saved_model.pb")) else "saved_model.pbtxt"
    saved = _parse(os.path.join(path, name), saved_model_pb2.SavedModel, "a SavedModel")
    wanted = set(t.strip() for t in (tags or DEFAULT_TAGS).split(",") if t.strip())
    found = [meta for meta in saved.meta_graphs if set(meta.meta_info_def.tags) == wanted]
    if not found:
        available = ["--tags %s" % ",".join(sorted(meta.meta_info_def.tags)) for meta in saved.meta_graphs]
        raise UsageError("the SavedModel %s has no MetaGraph tagged %s (it has: %s)."
                         % (path, ",".join(sorted(wanted)), "; ".join(available) or "none"), step="preflight",
                         hint="Give --tags with one of the tag sets it has.")
    meta = found[0]
    keys = sorted(meta.signature_def)
    if signature:
        key = signature
    elif DEFAULT_SIGNATURE in meta.signature_def:
        key = DEFAULT_SIGNATURE
    elif len(keys) == 1:
        key = keys[0]
    else:
        key = None
    if key is not None and key not in meta.signature_def:
        raise UsageError("the SavedModel %s has no signature %r (it has: %s)." % (path, key, ", ".join(keys) or "none"),
                         step="preflight", hint="Give --signature with one of them.")
    if key is None and keys:
        raise UsageError("the SavedModel %s has several signatures and none is %s: %s."
                         % (path, DEFAULT_SIGNATURE, ", ".join(keys)), step="preflight",
                         hint="Give --signature NAME with the one to convert.")
    return GraphSource("saved_model", path, meta.graph_def, meta_graph=meta,
                       signature=meta.signature_def[key] if key else None, signature_key=key,
                       tags=sorted(wanted), tf_version=meta.meta_info_def.tensorflow_version)


def _major_minor(text):
    parts = []
    for piece in str(text).split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts + [0] * (2 - len(parts)))


def infer_origin(source):
    """``(env or None, reason, made_by_tf2)`` from what the file records: the SavedModel's / ``.meta``'s
    ``meta_info_def.tensorflow_version``, else the GraphDef's ``versions.producer`` mapped conservatively:
    producer <= 27 (TF 1.13's) -> tf1.13, <= 134 (TF 1.15's) -> tf1.15, above -> made by TF 2.x (refused:
    ``convert`` takes TF 2.x models). No record (producer 0, no version string): ``--origin`` is required."""
    if source.tf_version:
        version = _major_minor(source.tf_version)
        where = "meta_info_def.tensorflow_version %s" % source.tf_version
        if version >= (2, 0):
            return None, "%s: made by TensorFlow 2.x" % where, True
        if version <= (1, 13):
            return "tf1.13", "%s (TF <= 1.13 -> tf1.13)" % where, False
        return "tf1.15", "%s (TF 1.14/1.15 -> tf1.15)" % where, False
    producer = source.producer
    where = "GraphDef versions.producer %d" % producer
    if producer <= 0:
        return None, "the graph records no TensorFlow version (no meta_info_def.tensorflow_version, " \
                     "GraphDef versions.producer 0)", False
    if producer <= PRODUCER_TF1_13:
        return "tf1.13", "%s (TF 1.13 writes %d; <= %d -> tf1.13)" % (where, PRODUCER_TF1_13, PRODUCER_TF1_13), False
    if producer <= PRODUCER_TF1_15:
        return "tf1.15", "%s (TF 1.14-1.15 write %d-%d -> tf1.15)" % (where, PRODUCER_TF1_13 + 1, PRODUCER_TF1_15), \
            False
    return None, "%s: above TF 1.15's %d, made by TensorFlow 2.x" % (where, PRODUCER_TF1_15), True


def import_graph(graph_def, step="preflight"):
    """A ``tf.Graph`` holding ``graph_def`` (names unchanged); an op this TF does not know is a paragraph."""
    _check_placeholder_shapes(graph_def, step)
    graph = tf.Graph()
    try:
        with graph.as_default():
            compat.v1().import_graph_def(graph_def, name="")
    except (ValueError, TypeError, tf.errors.NotFoundError) as exc:
        text = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        raise ModelLoadError("the graph does not load in TensorFlow %s: %s." % (tf.__version__, text), step=step,
                             hint="An op unknown to this TF (a graph from a newer TF, or a custom op) cannot run "
                                  "here; give --origin the TF version that made the graph.")
    return graph


def _check_placeholder_shapes(graph_def, step):
    """Refuse a placeholder whose declared shape has a dimension of size 0 or below -1: TF 1.x's shape
    inference divides by such a size when the graph is imported (SIGFPE: the process dies without a word).
    Found by the .pb mutation campaign (tests/integration/test_mutations_tf1_15.py)."""
    for node in graph_def.node:
        if not node.op.startswith("Placeholder") or "shape" not in node.attr:
            continue
        shape = node.attr["shape"].shape
        sizes = [dim.size for dim in shape.dim]
        if not shape.unknown_rank and any(size == 0 or size < -1 for size in sizes):
            raise ModelLoadError(
                "placeholder %s declares the shape (%s): a dimension of size %d cannot hold an input (a damaged "
                "or hand-edited graph)." % (node.name, ", ".join("?" if size == -1 else str(size) for size in sizes),
                                            [size for size in sizes if size == 0 or size < -1][0]),
                step=step, hint="Export the graph again from the code that made it.")


def source_sha256(path):
    """sha256 of a graph source: the file, or every file of a SavedModel folder / checkpoint (by name)."""
    import hashlib

    from converters import preflight_model

    files = preflight_model.model_files(path)
    if len(files) == 1 and files[0] == path:
        return runfolder.sha256_file(path)
    digest = hashlib.sha256()
    for name in files:
        digest.update(os.path.basename(name).encode("utf-8") + b"\0")
        digest.update(runfolder.sha256_file(name).encode("ascii"))
    return digest.hexdigest()
