"""The Lambda gate: does a stored Keras model config hold Python code that loading it would run?

For whom: every step that hands a model config to Keras (``legacy_tf1.loading`` for a legacy ``.h5`` and
an ``--arch`` config, ``converters.shared.parity`` / ``keras_compat`` for the re-saved ``model.h5``, the
tf2 loader for TF 2.x ``.h5`` / ``.keras`` files). Standard library only, Python 3.7 compatible: it runs
on the host, in tf1.13 / tf1.15 and in tf2, and it never imports Keras (the scan must not run the code
it looks for).

A Keras ``Lambda`` layer stores its function as marshalled Python bytecode (``function_type``
"lambda"); deserializing the layer rebuilds the function and building the model calls it, so loading an
untrusted file runs the file's code. ``scan_config`` walks *every* dict and list of the parsed config
(not a list of known container classes), so a Lambda is found wherever Keras or a custom class nests
it: ``TimeDistributed`` / ``Bidirectional`` (``layer``, ``forward_layer``, ``backward_layer``), RNN
``cell`` / ``cells``, nested ``Model`` / ``Sequential`` / ``Functional`` configs at any depth, and any
other key. Findings (dicts ``{kind, path, class_name, detail}``):

- ``lambda``: a layer whose class is ``Lambda`` (also namespaced: ``keras.layers.Lambda``,
  ``Custom>Lambda``; ``TFOpLambda`` and ``SlicingOpLambda`` of tf.keras store no code and are not);
- ``marshalled``: stored code outside a Lambda layer (fail closed: a custom class that wraps bytecode):
  any ``*_type`` key equal to "lambda" (``function_type``, ``output_shape_type``, ``mask_type``,
  Keras 1 ``mode_type``...), a Keras 3 ``__lambda__`` object, a ``function`` / ``mode`` /
  ``output_shape`` / ``mask`` value holding marshalled bytecode (a ``(code, defaults, closure)`` list),
  or a long string anywhere that is a marshalled Python 3 code object (raw or base64);
- ``unparsable``: the text is not JSON, or the JSON is not a Keras model config, so it cannot be
  checked (fail closed).

``path`` names the layers from the outermost one inside the model down to the finding, e.g.
``time_distributed_1 > mid > inner > lambda_1`` (the root model's own name is left out).
``check_config`` raises ``UntrustedModelError`` for any finding unless ``trust_model`` is set.
This gate cannot make Keras loading a sandbox: with ``--trust-model`` the file's code runs with the
user's rights.
"""

import base64
import binascii
import json

from converters.errors import UntrustedModelError

SEPARATOR = " > "
# keys whose value Keras fills with func_dump() output (code, defaults, closure) for a Python lambda
CODE_KEYS = ("function", "mode", "output_shape", "mask", "output_mask", "code")
# first byte of marshal.dumps(code object): TYPE_CODE "c", with FLAG_REF (Python >= 3.4) 0xe3
MARSHAL_CODE_BYTES = (0x63, 0xE3)
# a string under any other key counts as code only if it is at least this long and starts with 0xe3 (raw
# or base64): the smallest marshalled lambda is ~90 bytes, and a short name must never match by chance
STRICT_MIN_LENGTH = 48


def _short_class(class_name):
    """"Lambda" for "Lambda", "keras.layers.Lambda", "Custom>Lambda", "keras.layers>Lambda"."""
    return class_name.replace(">", ".").split(".")[-1]


def _is_lambda_class(node):
    for key in ("class_name", "registered_name"):
        value = node.get(key)
        if isinstance(value, str) and _short_class(value) == "Lambda":
            return True
    return False


def _is_layer(node):
    return isinstance(node.get("class_name"), str) and "config" in node


def _layer_name(node):
    config = node.get("config")
    name = config.get("name") if isinstance(config, dict) else None
    if not isinstance(name, str) or not name:
        name = node.get("name")
    if not isinstance(name, str) or not name:
        name = "<%s>" % node.get("class_name")
    return name


def _looks_marshalled(value, strict=False):
    """True for a string holding a marshalled code object: raw (keras 2.2.4 writes the marshal bytes
    decoded as raw_unicode_escape) or base64 (tf.keras, Keras 3). ``strict``: for strings under keys
    that do not normally hold code (long, and only the 0xe3 start of Python 3 code objects)."""
    minimum = STRICT_MIN_LENGTH if strict else 8
    if not isinstance(value, str) or len(value) < minimum:
        return False
    if ord(value[0]) == 0xE3:
        return True
    compact = "".join(value.split())
    if len(compact) < minimum or len(compact) % 4:
        return False
    try:
        raw = base64.b64decode(compact.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return False
    return bool(raw) and (raw[0] == 0xE3 or (not strict and raw[0] in MARSHAL_CODE_BYTES))


def _stored_code(node):
    """Why ``node`` (a dict) holds marshalled code, or None."""
    if node.get("class_name") == "__lambda__":
        return "a Keras 3 __lambda__ object (marshalled Python code)"
    for key, value in node.items():
        if isinstance(key, str) and key.endswith("_type") and value == "lambda":
            return "%s is \"lambda\" (marshalled Python code)" % key
    for key in CODE_KEYS:
        value = node.get(key)
        if isinstance(value, (list, tuple)) and value:
            if (key in ("function", "mode") and isinstance(value[0], str)) or _looks_marshalled(value[0]):
                return "%s holds marshalled Python code" % key
        elif _looks_marshalled(value):
            return "%s holds marshalled Python code" % key
    for key, value in node.items():  # any other key (a custom class storing code under its own name)
        if _looks_marshalled(value, strict=True) or (
                isinstance(value, (list, tuple)) and any(_looks_marshalled(v, strict=True) for v in value)):
            return "%s holds marshalled Python code" % key
    return None


def _not_a_model(config):
    """Why ``config`` is not a Keras model config, or None."""
    if isinstance(config, dict):
        if not isinstance(config.get("class_name"), str):
            return "the top level has no class_name"
        if "config" not in config:
            return "the top level has no config"
        return None
    if isinstance(config, (list, tuple)):  # a bare list of layers (Sequential of keras <= 2.2.2)
        if config and all(isinstance(layer, dict) and _is_layer(layer) for layer in config):
            return None
        return "a list that is not a list of layer configs"
    return "a JSON %s, not a model config" % type(config).__name__


def scan_config(config):
    """Every Lambda layer and every piece of stored code in ``config`` (see the module docstring).

    ``config``: a parsed model config (dict or list). Returns a list of finding dicts, in the order a
    depth-first walk meets them. Never raises for odd shapes: what is not a model config is an
    ``unparsable`` finding.
    """
    reason = _not_a_model(config)
    if reason:
        return [{"kind": "unparsable", "path": "", "class_name": None, "detail": reason}]
    findings = []
    # an explicit stack instead of recursion: a hostile config may nest deeper than Python's stack
    stack = [(config, (), True, None, False)]  # (node, path, is root, enclosing layer class, code found above)
    while stack:
        node, path, is_root, owner, covered = stack.pop()
        if isinstance(node, dict):
            child_path, child_owner = path, owner
            if _is_lambda_class(node):
                findings.append({"kind": "lambda", "path": SEPARATOR.join(path + (_layer_name(node),)),
                                 "class_name": node.get("class_name") or node.get("registered_name"),
                                 "detail": "Lambda layer (its function is stored Python code)"})
                continue  # whatever it holds is covered by this finding
            if _is_layer(node):
                child_owner = node["class_name"]
                if not is_root:
                    child_path = path + (_layer_name(node),)
            why = None if covered else _stored_code(node)
            if why:
                findings.append({"kind": "marshalled",
                                 "path": SEPARATOR.join(child_path) or "(top level)",
                                 "class_name": child_owner,
                                 "detail": why})
                covered = True  # one finding per piece of code; a Lambda further down is still named
            children = [value for value in node.values() if isinstance(value, (dict, list, tuple))]
        elif isinstance(node, (list, tuple)):
            child_path, child_owner = path, owner
            if not covered and any(_looks_marshalled(value, strict=True) for value in node):
                findings.append({"kind": "marshalled", "path": SEPARATOR.join(path) or "(top level)",
                                 "class_name": owner, "detail": "a list holds marshalled Python code"})
                covered = True
            children = [value for value in node if isinstance(value, (dict, list, tuple))]
        else:
            continue
        for child in reversed(children):  # keep the depth-first order of the stored config
            stack.append((child, child_path, False, child_owner, covered))
    return findings


def parse(config_or_text):
    """(config, None) for a parsed config or JSON text, else (None, reason)."""
    if isinstance(config_or_text, bytes):
        try:
            config_or_text = config_or_text.decode("utf-8")
        except UnicodeDecodeError as exc:
            return None, "the stored config is not UTF-8 text (%s)" % exc
    if isinstance(config_or_text, str):
        try:
            return json.loads(config_or_text), None
        except (ValueError, RecursionError) as exc:
            return None, "the stored config is not valid JSON (%s)" % str(exc)[:200]
    return config_or_text, None


def lambda_paths(findings):
    return [f["path"] for f in findings if f["kind"] == "lambda"]


def describe(findings, where):
    """One sentence naming every finding (the start of the refusal paragraph)."""
    lambdas = lambda_paths(findings)
    marshalled = ["%s (%s%s)" % (f["path"], ("class %s: " % f["class_name"]) if f["class_name"] else "",
                                 f["detail"]) for f in findings if f["kind"] == "marshalled"]
    unparsable = [f["detail"] for f in findings if f["kind"] == "unparsable"]
    parts = []
    if lambdas:
        parts.append("%s contains Lambda layer(s) %s" % (where, ", ".join(lambdas)))
    if marshalled:
        parts.append("%s stored Python code outside a Lambda layer at %s"
                     % ("and" if parts else "%s contains" % where, "; ".join(marshalled)))
    if lambdas or marshalled:
        sentence = " ".join(parts) + "; loading them runs Python bytecode stored in the file."
    else:
        sentence = ""
    if unparsable:
        sentence = (sentence + " " if sentence else "") + (
            "the model config of %s cannot be checked for stored code: %s; loading it might run code "
            "stored in the file." % (where, "; ".join(unparsable)))
    return sentence


HINT = ("Only if you trust where the file came from, rerun with --trust-model (Keras loading is not a "
        "sandbox: the file's code then runs with your user's rights); or rebuild the model with the "
        "function written as a custom layer class and pass that class with --custom-objects FILE.py.")


def check_config(config_or_text, where, trust_model, step="gate"):
    """Scan ``config_or_text`` (parsed config, JSON text or bytes) and return the findings; raise
    ``UntrustedModelError`` (one paragraph naming every path) when there are any and ``trust_model`` is
    not set. With ``trust_model`` nothing is refused, not even a config that does not parse (the loader
    then reports its own error)."""
    config, reason = parse(config_or_text)
    if reason:
        findings = [{"kind": "unparsable", "path": "", "class_name": None, "detail": reason}]
    else:
        findings = scan_config(config)
    if findings and not trust_model:
        raise UntrustedModelError(describe(findings, where), step=step, hint=HINT)
    return findings
