"""A fleet manifest: many ``convert_legacy`` runs declared in one TOML file, checked before any work.

For whom: ``tfbridge fleet`` (``converters.fleet``) and ``tfbridge fleet-report`` (``converters.fleet_report``).
docs/fleet.md describes the format; in short::

    [defaults]                      # optional: options every model gets unless it gives its own
    calib = "data/faces"
    calib_samples = 100

    [[model]]                       # one table per model, in the order that fixes its index (0, 1, ...)
    path = "models/vgg16.h5"        # required: the model, as convert_legacy's MODEL
    name = "vgg16"                  # optional: its run folder DIR/<name> (default: the file's stem)
    npu_target = ["imx8mp", "ethos-u65-256"]

Every other key is a ``convert_legacy`` option by its command-line name (``calib_samples`` or
``calib-samples``): a switch takes true/false, a repeatable option a string or a list of strings, the
others a string or a number. Relative paths are relative to the manifest's folder, where each model's run
also starts (a ``--preprocess module:function`` is imported from there).

Each entry becomes the argument list of ``convert_legacy`` and is checked by the very rules of the command
line: ``converters.options`` parses it (types, choices) and ``converters.preflight.check`` reads what it
names (model kind, data, targets, ...), then ``converters.runfolder.check_out`` checks its run folder.
Any problem is one ``UsageError`` paragraph (exit 2) naming the entry, raised before anything is run.

Sharding (``--shard I/N``): the model at index ``k`` belongs to shard ``k mod N``. N machines given
I = 0 .. N-1 run every model exactly once; appending models to the manifest never moves the ones before
them to another shard (models inserted in the middle do shift the ones after them).

Host side, standard library only (``tomllib``: Python >= 3.11, else the ``tomli`` package).
"""

import argparse
import difflib
import hashlib
import json
import os
import re

from converters import options, preflight, runfolder, verify
from converters.errors import TfbridgeError, UsageError

STEP = "manifest"
# A fleet folder's own files (manifest.json, outcomes/, logs/, locks/): converters.fleet writes them,
# converters.fleet_report reads them.
FLEET_DIR = ".fleet"
# What a manifest entry may hold beside the options; and the options the fleet decides itself.
ENTRY_KEYS = ("path", "name")
FLEET_DECIDES = {"out": "each model's run folder is DIR/<name> (the fleet's --out and the entry's `name`)",
                 "model": "give the model as `path`"}
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
RESERVED_NAMES = ("fleet.json", "fleet.html")
# options whose value is a path (relative to the manifest's folder); "skimage" is the built-in data
PATH_KEYS = ("calib", "probe", "eval", "eval_classes", "custom_objects")


class Entry(object):
    """One checked ``[[model]]``: its index in the manifest, its run-folder name, its model path and the
    ``convert_legacy`` arguments (without ``--out``), ready to run from ``Manifest.folder``."""

    def __init__(self, index, name, path, argv, values):
        self.index = index
        self.name = name
        self.path = path
        self.argv = list(argv)
        self.values = values  # the checked option values (a dict, paths absolute)

    @property
    def key(self):
        """What the entry asks for (its name, model and arguments): a run recorded with another key is
        not this entry's."""
        return hashlib.sha256(json.dumps([self.name, self.argv]).encode("utf-8")).hexdigest()

    def to_json(self):
        return {"index": self.index, "name": self.name, "path": self.path, "argv": self.argv, "key": self.key}

    def __repr__(self):
        return "Entry(%d, %r)" % (self.index, self.name)


class Manifest(object):
    """A checked manifest: ``entries`` in manifest order; ``path``, ``folder`` (where relative paths start)
    and ``sha256`` of the file."""

    def __init__(self, path, entries, sha256):
        self.path = os.path.abspath(path)
        self.folder = os.path.dirname(self.path)
        self.entries = list(entries)
        self.sha256 = sha256

    def for_shard(self, shard):
        """The entries of ``shard`` (``(I, N)`` or None for all), in manifest order."""
        if shard is None:
            return list(self.entries)
        return [entry for entry in self.entries if shard_of(entry.index, shard[1]) == shard[0]]

    @property
    def key(self):
        """The fleet: every entry's key in order (shards of one fleet agree on it)."""
        return hashlib.sha256(json.dumps([e.key for e in self.entries]).encode("utf-8")).hexdigest()

    def to_json(self):
        return {"tfbridge": "fleet-manifest", "schema_version": 1, "path": self.path, "sha256": self.sha256,
                "key": self.key, "models": [entry.to_json() for entry in self.entries]}



class CommandParser(argparse.ArgumentParser):
    """argparse for ``tfbridge fleet`` and ``fleet-report``: a bad value is one paragraph (``UsageError``),
    as converters.options reports it."""

    def error(self, message):
        raise UsageError("%s: %s." % (self.prog, message), step="options",
                         hint="Run with --help for the options (docs/fleet.md explains them).")

def shard_of(index, count):
    """The shard (0-based) of the model at ``index`` among ``count`` shards: round robin by position."""
    return index % count


def parse_shard(spec):
    """``"I/N"`` -> ``(I, N)`` with 0 <= I < N; None -> None. A bad spec is a ``UsageError``."""
    if spec is None:
        return None
    found = re.match(r"^\s*(\d+)\s*/\s*(\d+)\s*$", str(spec))
    hint = ("Give --shard I/N with 0 <= I < N, I 0-based (a Kubernetes Indexed Job's $JOB_COMPLETION_INDEX, a "
            "SLURM array's $SLURM_ARRAY_TASK_ID from --array=0-(N-1), a CI matrix index from 0): the model at "
            "index k of the manifest runs in shard k mod N.")
    if not found:
        raise UsageError("--shard %r is not of the form I/N." % (spec,), step="options", hint=hint)
    index, count = int(found.group(1)), int(found.group(2))
    if count < 1 or index >= count:
        raise UsageError("--shard %s: I must be at least 0 and below N, and N at least 1." % spec.strip(),
                         step="options", hint=hint)
    return index, count


def _read_toml(path):
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        try:
            import tomli as tomllib
        except ImportError:
            raise UsageError("reading the manifest %s needs Python >= 3.11 (tomllib) or the tomli package." % path,
                             step=STEP, hint="Run tfbridge with Python 3.11 or newer, or `pip install tomli`.")
    if not os.path.isfile(path):
        raise UsageError("the manifest %s %s." % (path, "is a folder" if os.path.isdir(path) else "does not exist"),
                         step=STEP, hint="Give the path of a TOML file with one [[model]] table per model "
                                         "(docs/fleet.md shows one).")
    with open(path, "rb") as handle:
        data = handle.read()
    try:
        return tomllib.loads(data.decode("utf-8")), hashlib.sha256(data).hexdigest()
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsageError("the manifest %s is not valid TOML (%s)." % (path, exc), step=STEP,
                         hint="Fix the line it names (docs/fleet.md shows the format).")


def _known_keys():
    """The option names an entry may use (``calib_samples``), beside ``path`` and ``name``."""
    return [option.dest for option in options.for_command(options.CONVERT_LEGACY)
            if not option.positional and option.dest not in FLEET_DECIDES]


def _fail(where, message, hint=None):
    raise UsageError("%s: %s" % (where, message), step=STEP,
                     hint=hint or "Fix that entry of the manifest (docs/fleet.md lists what an entry may hold).")


def _option_argv(where, key, value):
    """The command-line arguments of one manifest option (``key`` an option's dest), type-checked."""
    option = options.BY_DEST[key]
    if option.flag:
        if not isinstance(value, bool):
            _fail(where, "`%s` is a switch: give true or false, not %r." % (key, value))
        return [option.name] if value else []
    items = value if (option.repeat and isinstance(value, list)) else [value]
    argv = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (str, int, float)):
            kind = "a list" if isinstance(item, list) else "a table" if isinstance(item, dict) else repr(item)
            _fail(where, "`%s` takes %s, not %s." % (
                key, "a string or a list of strings" if option.repeat else
                "a number" if option.type is int else "a string", kind))
        argv += [option.name, str(item)]
    return argv


def _resolve(key, value, folder):
    """A path option's value made absolute against the manifest's folder (``skimage`` and ``--arch``'s
    ``module:function`` calls stay as they are)."""
    if not isinstance(value, str) or not value or os.path.isabs(value):
        return value
    if key in PATH_KEYS and value != preflight.BUILTIN_SKIMAGE:
        return os.path.join(folder, value)
    if key == "arch" and (value.lower().endswith((".json", ".yaml", ".yml"))
                          or os.path.exists(os.path.join(folder, value))):
        return os.path.join(folder, value)
    return value


def _describe(index, table):
    label = table.get("name") or table.get("path") if isinstance(table, dict) else None
    return "[[model]] at index %d%s" % (index, " (%s)" % json.dumps(label) if isinstance(label, str) else "")


def _normalise(where, table, known):
    """``table``'s keys as option dests (``calib-samples`` -> ``calib_samples``), unknown keys refused."""
    result = {}
    for raw, value in table.items():
        key = raw.replace("-", "_")
        if key in FLEET_DECIDES:
            _fail(where, "`%s` is not an entry key: %s." % (raw, FLEET_DECIDES[key]))
        if key not in known and key not in ENTRY_KEYS:
            close = difflib.get_close_matches(key, list(known) + list(ENTRY_KEYS), n=1)
            _fail(where, "unknown key `%s`%s." % (raw, " (did you mean `%s`?)" % close[0] if close else ""),
                  hint="An entry holds `path`, an optional `name` and convert_legacy options by their "
                       "command-line names: %s." % ", ".join(sorted(known)))
        if key in result:
            _fail(where, "`%s` is given twice (as %s and with the other spelling)." % (key, raw))
        result[key] = value
    return result


def check_entry(index, table, defaults, folder, out):
    """One ``[[model]]`` table checked and turned into an ``Entry`` (``UsageError`` naming it)."""
    where = _describe(index, table)
    if not isinstance(table, dict):
        _fail(where, "each [[model]] must be a table, not %r." % (table,))
    known = _known_keys()
    entry = dict(defaults)
    entry.update(_normalise(where, table, known))
    path = entry.pop("path", None)
    if not isinstance(path, str) or not path:
        _fail(where, "no `path`: each [[model]] names its model file or folder with path = \"...\".")
    path = path if os.path.isabs(path) else os.path.join(folder, path)
    name = entry.pop("name", None)
    if name is None:
        name = os.path.basename(verify.default_out(path))  # convert_legacy's own default: runs/<name>
    if not isinstance(name, str) or not NAME_PATTERN.match(name) or name in RESERVED_NAMES:
        _fail(where, "the run-folder name %r is not usable: a name is letters, digits, '.', '_' and '-', "
                     "starting with a letter or digit (not fleet.json / fleet.html)." % (name,),
              hint="Give the entry a `name` = \"...\" of that form.")
    argv = [path]
    for key in sorted(entry):
        argv += _option_argv(where, key, _resolve(key, entry[key], folder))
    try:
        values = options.values_of(options.parse(options.CONVERT_LEGACY, argv, prog="manifest"))
        preflight.check(options.CONVERT_LEGACY, values)
        runfolder.check_out(os.path.join(out, name), runfolder.protected_inputs(values), step=STEP)
    except TfbridgeError as error:
        message = error.message.rstrip()
        if message.startswith("manifest: "):  # argparse's message names the parser: the entry is named instead
            message = message[len("manifest: "):]
        _fail(where, message, hint=error.hint)
    return Entry(index, name, os.path.abspath(path), argv, values)


def load(path, out):
    """Read and check the manifest at ``path`` for a fleet writing into ``out``; return a ``Manifest``.

    Every entry is checked (not only one shard's); the first problem is a ``UsageError`` paragraph
    naming the entry (exit 2). Nothing is written.
    """
    path = os.path.abspath(path)
    data, sha256 = _read_toml(path)
    where = "the manifest %s" % path
    unknown = sorted(set(data) - {"model", "defaults"})
    if unknown:
        raise UsageError("%s has unknown top-level key(s) %s." % (where, ", ".join("`%s`" % k for k in unknown)),
                         step=STEP, hint="A manifest holds [[model]] tables and an optional [defaults] table.")
    models = data.get("model")
    if models is None or (isinstance(models, list) and not models):
        raise UsageError("%s has no [[model]] table: there is nothing to run." % where, step=STEP,
                         hint="Add one [[model]] table per model, each with path = \"...\" (docs/fleet.md).")
    if not isinstance(models, list):
        raise UsageError("%s: `model` must be an array of tables ([[model]]), not a single value or table."
                         % where, step=STEP, hint="Write each model as a [[model]] table (double brackets).")
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise UsageError("%s: `defaults` must be a table ([defaults])." % where, step=STEP)
    defaults = _normalise("[defaults]", defaults, _known_keys())
    for key in ENTRY_KEYS:
        if key in defaults:
            raise UsageError("[defaults] of %s holds `%s`, which each model gives itself." % (path, key), step=STEP,
                             hint="Move it into the [[model]] tables.")
    folder = os.path.dirname(path)
    out = os.path.abspath(out)
    entries, names, runs = [], {}, {}
    for index, table in enumerate(models):
        entry = check_entry(index, table, defaults, folder, out)
        if entry.name in names:
            _fail(_describe(index, table), "duplicate model: its run folder %s is also the one of [[model]] at index "
                  "%d; each model needs its own." % (entry.name, names[entry.name]),
                  hint="Give one of them another `name` (or remove the duplicate).")
        same = runs.get(json.dumps(entry.argv[1:] + [os.path.realpath(entry.path)]))
        if same is not None:
            _fail(_describe(index, table), "duplicate model: the same model with the same options as [[model]] at "
                  "index %d." % same, hint="Remove one of them, or give them different options.")
        names[entry.name] = index
        runs[json.dumps(entry.argv[1:] + [os.path.realpath(entry.path)])] = index
        entries.append(entry)
    return Manifest(path, entries, sha256)
