"""The options that are neither the model file nor data, checked for their syntax and values on the host:
``--inputs`` / ``--outputs`` / ``--tags`` / ``--signature`` (a graph's), ``--origin``, ``--arch`` (a config file,
which passes the Lambda gate here, or ``module:function(key=literal, ...)``), ``--custom-objects``,
``--preprocess``, ``--input-range`` and ``--npu-target``.

For whom: ``converters.preflight.check``; ``legacy_tf1`` parses ``--inputs``/``--outputs``, ``--arch`` and
``--input-range`` with the same functions, so the host and the step read one syntax. Host side: standard
library only, Python 3.7 compatible. What can go wrong: ``UsageError`` (``InputFileError`` for a file that is
missing or unreadable), each a paragraph with a hint.
"""

import ast
import json
import os
import re

from converters import options as declared
from converters.errors import InputFileError, UsageError
from converters.preflight_model import GRAPH_KINDS, KIND_WORDS

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
