"""``verify_upgrade``: is it safe to upgrade TensorFlow for this legacy model? (host side, stdlib only)

For whom: ``nox -s verify_upgrade -- MODEL ...`` and the lead's ``convert_legacy`` (``verify(options)``).
Runs on the host interpreter (Python 3.11, no numpy, no TensorFlow); every step that needs TF or numpy
runs inside an environment as a subprocess (``envs.venvs``) and talks through the run folder::

    python -m converters.verify MODEL [options]      (the options: converters/options.py, README.md)

Before any step, ``converters.preflight.check`` checks every option and ``runfolder.check_out`` the run
folder. Steps: ``preflight`` (tf1.15: the ``.h5``'s root attributes read with h5py alone, no TensorFlow
or Keras import: the Lambda gate, a weights-only file without ``--arch``, and the origin, inferred from
the file's ``keras_version`` unless ``--origin`` is given; "2.2.4-tf" is ambiguous and maps to tf1.13;
see ``inspect_model``), ``resave`` in the origin environment,
one ``parity`` cell per newer runtime (tf1.15 when the origin is tf1.13; tf2 with tf-keras; ``tf2-graph``,
the frozen graph in tf2; tf2 with Keras 3 reading model.h5 as it is), ``migrate`` (tf2: ``model.keras``,
the model migrated to Keras 3, see ``converters.tf2.migrate``; skipped with ``--no-keras3``) and its cell
``tf2-keras3-migrated``, and for every ``mismatch`` of a Keras cell the first-divergent-layer search
(per-layer activations in the origin and in that runtime, compared in layer order inside the runtime's
environment), whose layer is looked up in the table of known upgrade hazards (``converters.shared.hazards``:
the cell's ``hazards``).

The cells run side by side, ``--jobs`` at a time (``run_side_by_side``); the tf2 ones (tf-keras, the graph,
Keras 3, the migration and its cell) in one process, so that TensorFlow is imported once (``together``):
what that process does not finish runs again a process per step, as each would alone.

Cell ``tf2-graph`` runs the re-save's frozen graph (``model.pb``) in tf2 through ``tf.compat.v1`` (no
Keras, no Python code of the model): the route the int8 converter takes. On its mismatch the first
divergent *node* is searched: every node's tensor of ``model.pb`` in the origin environment and in tf2,
compared in topological order (``first_divergent_node``).

A TF 1.x graph (a frozen GraphDef ``.pb``/``.pbtxt``, a TF1 SavedModel folder, a checkpoint) goes the same
way with graph cells only: its preflight read is ``inspect_graph`` (``python -m legacy_tf1 inspect-graph`` in
tf1.15: the origin from ``meta_info_def.tensorflow_version`` or ``versions.producer``, the inputs and
outputs, what will be fixed to inference), the re-save (``legacy_tf1.graph_resave``) writes ``model.pb`` (no
``model.h5``), and the cells are the graph run in tf1.15 (when the origin is tf1.13) and in tf2
(``tf2-graph``), each with the first-divergent-node search. The Keras cells (tf2 with tf-keras, Keras 3, the
migrated ``model.keras``) do not exist for a graph: the report's ``skipped_cells`` says so.

``--tf VERSION[,...]`` adds the cells of more TF releases (``extra_cells``: the ``.h5`` in that TF's own Keras,
the frozen graph), each in an environment made from the rule of ``envs.registry`` (``tf_environment``) and
checked by ``envs.registry.tf_environments`` before any step; a ``--tf`` environment's cells run one after the
other in one chain. Every cell records its environment, TF version and Python (``read_cell``). ``--bisect``
then searches for the first release that differs (``converters.bisect``), after the divergence searches.

Exit status and tolerances (one policy, ``POLICY``; also report.json's ``policy`` and README "Verdicts and
tolerances"): 0 when every cell matches or its failure is tolerated; 1 when any cell is ``mismatch`` or
``load_error`` and not tolerated. Tolerated, reported honestly but not a regression of the user's model:

1. ``tf2-keras3`` (``model.h5`` as it is, in Keras 3): a ``load_error`` always (Keras 3 is documented not to
   read every Keras 2 ``.h5``); a ``mismatch`` when ``tf2-keras3-migrated`` matches.
2. A model whose Lambda layers hold Python 3.7 bytecode: a ``load_error`` of the Keras cells in Python 3.11
   (tf2, tf2-keras3, tf2-keras3-migrated; the cell's ``cause`` is ``lambda_bytecode`` and its
   ``explanation`` says why) when ``tf2-graph`` matches: the graph is portable, the ``.h5`` is not, and the
   converter takes the graph.
3. ``tf2-graph``: a ``load_error`` (no frozen graph, or one that does not run) when ``tf2`` matches: the
   converter then falls back to ``model.h5``.

Every other ``load_error`` or ``mismatch`` fails the run, the migrated model's included (tfbridge wrote
that file to load and match). Any other failure is a typed error with one paragraph (the failing step's
own message) and its exit status (>= 2, one per error class: converters/errors.py).

Per-layer activations (``activations_<env>.npz``) are deleted once compared, unless ``--debug``.

Run-folder safety: ``--out`` is checked before any step (``runfolder.check_out``: a non-empty folder
tfbridge did not make, or one holding the model or data, is refused). The run is built in a temporary
sibling folder (``.<name>.partial-XXXX`` next to ``--out``) and swapped into place only when every step
completed (a parity mismatch is a completed run with a negative answer), carrying over every file of the
old run folder that tfbridge did not write (``runfolder.publish_run``). A failed or interrupted run
removes its temporary folder (kept with ``--debug`` for inspection) and leaves an existing ``--out``
untouched. Steps run through ``converters.steps.StepRunner``, in bubblewrap's file-system box and without
network where the OS allows it; the report's ``sandbox`` says how.
"""

import errno
import json
import os
import shutil
import sys
import threading
import time

from converters import (cli, errors, preflight, preflight_data, preflight_model, preflight_options, runfolder, safety,
                        steps)
from converters import options as declared
from converters.options import VERIFY_UPGRADE
from envs import registry, venvs
from envs import report as report_tables
from envs.errors import EnvError

INSPECT_ENV = "tf1.15"
# Cells whose load_error is informative, not a failure (see the module docstring). The migrated Keras 3
# model's cell (MIGRATED_LABEL) is not among them: tfbridge wrote that file, so it must load and match.
LOAD_ERROR_TOLERATED = ("tf2-keras3",)
MIGRATED_LABEL = "tf2-keras3-migrated"  # converters.shared.parity.MIGRATED_LABEL (the host imports no numpy)
GRAPH_LABEL = "tf2-graph"  # converters.shared.parity.GRAPH_LABEL: model.pb in tf2 (tf.compat.v1)
# The Keras cells of Python 3.11, whose load_error caused by Lambda bytecode (cause "lambda_bytecode") is
# tolerated when GRAPH_LABEL matches.
PY3_11_KERAS_CELLS = ("tf2", "tf2-keras3", MIGRATED_LABEL)
POLICY = ("exit 1 on any mismatch or load_error, except: %s (a load_error; a mismatch too when %s matches); "
          "for a model with Lambda layers of Python 3.7 bytecode, a load_error of %s (cause lambda_bytecode) when "
          "%s matches; a load_error of %s when tf2 matches; the cells of a --tf environment E alike (E-keras3 as "
          "tf2-keras3, E-graph as tf2-graph, E's Keras cells' lambda_bytecode when E-graph matches)"
          % (", ".join(LOAD_ERROR_TOLERATED), MIGRATED_LABEL, ", ".join(PY3_11_KERAS_CELLS), GRAPH_LABEL,
             GRAPH_LABEL))
MIGRATION = "migration.json"


class Options(object):
    """What ``verify`` needs: every declared option (``converters.options``) at its default unless given,
    plus ``log`` (a callable taking one line, default stderr). Unknown names are refused."""

    def __init__(self, log=None, **given):
        for option in declared.OPTIONS:
            setattr(self, option.dest, False if option.flag else option.default)
        unknown = sorted(set(given) - set(declared.BY_DEST))
        if unknown:
            raise TypeError("unknown verify options: %s" % ", ".join(unknown))
        for key, value in given.items():
            setattr(self, key, value)
        self.log = log

    def values(self):
        return dict((option.dest, getattr(self, option.dest)) for option in declared.OPTIONS)


GRAPH_FLAVOUR = "graph"  # converters.shared.parity.GRAPH
SKIPPED_FOR_GRAPHS = {"cells": ["tf2", "tf2-keras3", MIGRATED_LABEL],
                      "why": "a TF 1.x graph has no Keras model (no model.h5): the Keras cells and the Keras 3 "
                             "migration do not apply; the graph itself runs in every environment"}


def cells_for(origin_env, keras3=True, graph=False, extra=()):
    """The parity cells to check for a model from ``origin_env``: (label, env, keras flavour).
    ``keras3``: also the cell of the migrated Keras 3 model (``model.keras``; off with ``--no-keras3``).
    ``graph``: a TF 1.x graph source: the graph in tf1.15 (origin tf1.13) and in tf2 only.
    ``extra``: the environments of ``--tf`` (``extra_cells``), after the built-in ones."""
    cells = _builtin_cells(origin_env, keras3, graph)
    for env in extra:
        cells += extra_cells(env, graph)
    return cells


def extra_cells(env, graph=False):
    """The cells of a ``--tf`` environment (``tf2.12``): the ``.h5`` in the Keras that TF ships as tf.keras
    (TF 1.x: the model's own Keras, as in tf1.15; 2.0 ... 2.15: tf.keras, Keras 2; from 2.16: tf-keras, label
    ``<env>``, and Keras 3, label ``<env>-keras3``), and the frozen graph (``<env>-graph``). A graph source:
    the graph only."""
    graph_cell = [(env + "-graph", env, GRAPH_FLAVOUR)]
    if graph:
        return graph_cell
    kind = registry.keras_default(env[2:])
    if kind == "standalone":
        return [(env, env, "auto")] + graph_cell
    if kind == "tf.keras":
        return [(env, env, "tf.keras")] + graph_cell
    return [(env, env, "tf_keras"), (env + KERAS3_SUFFIX, env, "keras3")] + graph_cell


KERAS3_SUFFIX = "-keras3"


def _builtin_cells(origin_env, keras3=True, graph=False):
    if graph:
        cells = [("tf1.15", "tf1.15", GRAPH_FLAVOUR)] if origin_env == "tf1.13" else []
        return cells + [(GRAPH_LABEL, "tf2", GRAPH_FLAVOUR)]
    cells = []
    if origin_env == "tf1.13":
        cells.append(("tf1.15", "tf1.15", "auto"))
    cells.append(("tf2", "tf2", "tf_keras"))
    cells.append((GRAPH_LABEL, "tf2", "graph"))
    cells.append(("tf2-keras3", "tf2", "keras3"))
    if keras3:
        cells.append((MIGRATED_LABEL, "tf2", "keras3"))
    return cells


def default_out(model):
    name = os.path.basename(os.path.normpath(model))
    for suffix in (".meta", ".pbtxt", ".pb", ".h5", ".hdf5", ".index"):
        if name.endswith(suffix):
            return os.path.join("runs", name[:-len(suffix)])
    return os.path.join("runs", os.path.splitext(name)[0] if "." in name and not name.startswith(".") else name)


check_origin = preflight_options.check_origin
# Keras from this version on is TF 2.x era (tf.keras / tf_keras of TF 2.x, Keras 3): no TF 1.x Keras reads
# its configs ("batch_shape", "ragged", ...); legacy_tf1.loading refuses the same files in the origin.
TF2_ERA_KERAS = (2, 4)


def _version(text):
    parts = []
    for piece in str(text).split("-")[0].split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts + [0] * (2 - len(parts)))


def _refuse_newer_keras(opts, info):
    written = info.get("keras_version")
    if not written or _version(written) < TF2_ERA_KERAS:
        return
    what = "Keras %s (Keras 3)" % written if _version(written) >= (3, 0) else \
        "Keras %s (tf.keras / tf_keras of TF 2.x)" % written
    envs = [check_origin(opts.origin)] if opts.origin else ["tf1.13", "tf1.15"]
    has = ", ".join("%s has keras %s" % (env, registry.pinned_version(registry.get(env), "keras")) for env in envs)
    raise errors.ModelLoadError(
        "%s was written by %s, newer than the legacy environments read (%s)." % (opts.model, what, has),
        step="preflight",
        hint="A model saved by TF 2.x is not legacy: convert it directly with `nox -s convert -- MODEL`; or give "
             "--origin the TF version that really saved the file.")


def inspect_model(opts, runner):
    """The preflight read of a legacy ``.h5``: ``python -m legacy_tf1 inspect`` in tf1.15 reads the file's
    root attributes with h5py alone (no TensorFlow, no Keras: the file's code cannot run), in a forked child
    with a time limit (a damaged file can crash or hang HDF5). Then, before any step loads the model:
    the Lambda gate (``converters.safety``, every nesting of the stored config), a weights-only file
    without ``--arch``, and the origin (``--origin``, else inferred from ``keras_version``).

    Returns ``(origin env, how it was chosen, the inspection dict)``. A TF 1.x graph: ``inspect_graph``.
    """
    if preflight_model.model_kind(opts.model) in preflight_model.GRAPH_KINDS:
        return inspect_graph(opts, runner)
    info = _preflight_read(opts, runner, ["inspect", opts.model])
    _refuse_newer_keras(opts, info)
    preflight_data.check_inputs_data(opts.values(), info.get("input_names"))  # several inputs: .npz per input
    if info.get("unsafe") and not opts.trust_model:
        raise errors.UntrustedModelError(safety.describe(info["unsafe"], opts.model), step="preflight",
                                         hint=safety.HINT)
    if info.get("weights_only") and not opts.arch:
        raise errors.ModelLoadError(
            "%s holds weights only (no model config), so the architecture is unknown." % opts.model,
            step="preflight",
            hint="Give --arch CONFIG.json|CONFIG.yaml or --arch module:function(...) that builds the model.")
    if opts.origin:
        return check_origin(opts.origin), "given with --origin", info
    if not info.get("inferred_origin"):
        raise errors.UsageError("cannot infer the origin TF version: %s." % info.get("origin_reason"),
                                step="preflight", hint="Give --origin 1.13 or --origin 1.15.")
    return info["inferred_origin"], info.get("origin_reason"), info


def _preflight_read(opts, runner, args):
    """The JSON the preflight read (``python -m legacy_tf1 ARGS`` in tf1.15) prints last; the file's own
    errors (damaged, not HDF5, not a GraphDef) belong to step preflight."""
    try:
        output = runner.step("preflight", INSPECT_ENV, "legacy_tf1", args)
    except errors.TfbridgeError as error:
        error.step = "preflight"
        raise
    try:
        return json.loads(output.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise errors.EnvironmentStepError("the preflight read of %s printed no JSON." % opts.model, step="preflight")


def inspect_graph(opts, runner):
    """The preflight read of a TF 1.x graph: ``python -m legacy_tf1 inspect-graph`` in tf1.15 parses the
    GraphDef / SavedModel / ``.meta`` (protobuf, no session, nothing run), infers the origin and finds the
    inputs and outputs (``legacy_tf1.graph_signature.inspect``: its ``UsageError`` paragraphs name the candidate inputs
    or the missing tensor). A file made by TF 2.x is refused here; one that records no version needs
    ``--origin``. Returns ``(origin env, how it was chosen, the inspection dict)``."""
    args = ["inspect-graph", opts.model]
    for key in ("tags", "signature", "inputs", "outputs"):
        if getattr(opts, key, None):
            args += ["--" + key, str(getattr(opts, key))]
    info = _preflight_read(opts, runner, args)
    if info.get("made_by_tf2"):
        raise errors.ModelLoadError(
            "%s was made by TensorFlow 2.x (%s): it is not a legacy TF 1.x graph." % (opts.model, info["origin_reason"]),
            step="preflight",
            hint="Convert it directly with `nox -s convert -- MODEL` (a TF 2.x SavedModel folder; for a TF 2.x "
                 "frozen graph, export a SavedModel from the code that made it).")
    preflight_data.check_inputs_data(opts.values(), info.get("input_names"))  # several inputs: .npz per input
    if opts.origin:
        return check_origin(opts.origin), "given with --origin", info
    if not info.get("inferred_origin"):
        raise errors.UsageError(
            "cannot infer the origin TF version of %s: %s." % (opts.model, info.get("origin_reason")),
            step="preflight",
            hint="Give --origin 1.13 or --origin 1.15: the TensorFlow that made the graph (a graph frozen with "
                 "convert_variables_to_constants keeps no version; its SavedModel or checkpoint would).")
    return info["inferred_origin"], info.get("origin_reason"), info


def verify(options):
    """Run the parity check (see the module docstring) and return the report dict.

    ``options``: an ``Options`` or a dict of its keyword arguments (``model`` is required; ``log`` is a
    callable taking one line, default stderr).

    The report is also written to ``report.json`` / ``report.md`` in ``options.out``. Raises a
    ``TfbridgeError`` subclass when a step fails (the step's own paragraph); a parity mismatch is not an
    exception: see ``report["verdict"]`` ("pass" or "fail").
    """
    if isinstance(options, dict):
        options = Options(**options)
    log = options.log or (lambda message: sys.stderr.write(message + "\n"))
    values = options.values()
    preflight.check(VERIFY_UPGRADE, values)  # every option, before any environment step
    for key, value in values.items():
        setattr(options, key, value)
    model = options.model
    out = runfolder.check_out(options.out or default_out(model), runfolder.protected_inputs(options), step="verify")
    parent = os.path.dirname(out)
    if not os.path.isdir(parent):
        os.makedirs(parent)
    runfolder.recover(out, log)  # what a killed run of this --out left beside it
    temporary = runfolder.partial_folder(out)
    succeeded = False
    started = time.time()
    try:
        report = _verify_into(options, temporary, log)
        report["run"] = out
        _write_report(temporary, report)
        runfolder.publish_run(temporary, out, "verify_upgrade")
        succeeded = True
        report["seconds"] = round(time.time() - started, 2)
        return report
    except OSError as failure:  # a write of the host's own into the partial folder (e.g. publishing it)
        if not errors.says_no_space(str(failure)) and failure.errno != errno.ENOSPC:
            raise
        left = "%s was left as it was before this run." % out if os.path.exists(out) else ""
        raise errors.disk_full(out, "%s: %s" % (type(failure).__name__, failure), step="verify", left=left)
    finally:
        if not succeeded:
            if options.debug:
                log("tfbridge: the partial run folder is kept for inspection: %s" % temporary)
            else:
                shutil.rmtree(temporary, ignore_errors=True)


def runner_for(options, run_dir, log):
    """The step runner of a run with these options (user import paths for module:function options). Its
    steps may start beside the re-save and wait for its files (``runfolder.await_file``, ``AWAIT_SECONDS``)."""
    runner = steps.StepRunner(run_dir, log=log, debug=options.debug,
                              user_paths=steps.user_paths(options.preprocess, options.arch))
    runner.extra_env[runfolder.AWAIT_ENV] = str(AWAIT_SECONDS)
    runner.nice = PARITY_NICE
    return runner


# The short parity chains (tf1.15; a cell run in a process of its own) run at a lower priority than the
# re-save (which every other step waits for), the tf2 cells in one process and, in convert_legacy, the
# conversion (the long chains): on a busy machine they take the cores those leave idle, and the whole run
# ends sooner (ResNet50 on 2 cores, whole convert_legacy: 45.8 s -> 42.2 s); alone, a step at niceness 5
# runs as fast as at 0.
PARITY_NICE = 5

# How long a step started beside the re-save waits for its files before it gives up (the re-save of a big
# model takes minutes; a failed re-save stops the waiting steps at once: ``resave_item``).
AWAIT_SECONDS = 3 * 3600


class VerifyRun(object):
    """A verify run between its two halves (``begin_verify`` / ``finish_verify``): what the re-save found
    and the parity chains still to run, so that ``convert_legacy`` can run them side by side with the
    conversion in one scheduler (``run_side_by_side``)."""

    def __init__(self, **fields):
        self.__dict__.update(fields)


def _verify_into(options, run_dir, log):
    run = begin_verify(options, run_dir, log)
    run_side_by_side(run.runner, run.chains, jobs_of(options), first=run.first, beside=1)
    return finish_verify(run, options)


def resave_item(run_dir, args, origin_env):
    """The re-save as the first item of a chain (``run_side_by_side``): the steps of the other chains start
    beside it and wait for its files; if it fails, ``RESAVE_FAILED`` stops them at once."""

    def resave(runner):
        try:
            runner.step("resave", origin_env, "legacy_tf1", args, nice=0)
        except BaseException:
            resave.failed = True
            runfolder.write_text(os.path.join(run_dir, runfolder.RESAVE_FAILED), "the re-save failed\n")
            raise
        finally:
            resave.done.set()

    resave.step_name = "resave"
    resave.done = threading.Event()  # for a host-side wait (convert_legacy --eval: the origin's evaluation)
    resave.failed = False
    return resave


def begin_verify(options, run_dir, log):
    """The preflight read into ``run_dir``; returns a ``VerifyRun`` whose ``chains`` are still to run
    (``run_side_by_side``, ``beside=1``), then ``finish_verify``. The first chain is the re-save; the others
    (the parity cells) start beside it and wait for its model (``runfolder.await_file``), so that their
    TensorFlow import overlaps it."""
    runner = runner_for(options, run_dir, log)
    log("tfbridge verify_upgrade: %s" % options.model)
    origin_env, origin_reason, inspected = inspect_model(options, runner)
    graph = inspected.get("kind") in preflight_model.GRAPH_KINDS
    log("  origin: %s (%s)" % (origin_env, origin_reason))
    if graph:
        log("  %s: inputs %s; outputs %s%s" % (
            inspected["kind"], ", ".join("%s %s" % (i["name"], i["shape"]) for i in inspected.get("inputs") or []),
            ", ".join(o["name"] for o in inspected.get("outputs") or []),
            "; fixed to inference: %s" % ", ".join(f["node"] for f in inspected["fixed"]) if inspected.get("fixed")
            else ""))
    args = (["resave", os.path.abspath(options.model), "--out", run_dir, "--origin-env", origin_env]
            + declared.step_argv(options.values(), declared.RESAVE))
    runner.prepare(origin_env)
    keras3 = not getattr(options, "no_keras3", False) and not graph  # a graph has no Keras model to migrate

    # The cells do not depend on each other (the migrated model's cell only on the migrate step): they run
    # side by side, --jobs at a time (default: the cores), each step a process of its own.
    samples = str(int(getattr(options, "parity_samples", None) or 0))  # --parity-samples (0: the whole probe)
    extra = registry.tf_environments(getattr(options, "tf", None))  # --tf: checked by preflight.check already
    chains = []
    by_env = {}
    for label, env, flavour in cells_for(origin_env, keras3, graph, extra):
        step = ("parity-%s" % label, env, "converters.shared.parity",
                [run_dir, "--label", label, "--keras", flavour, "--samples", samples])
        if env in extra:  # a --tf environment's cells: one chain, one after the other (a process each)
            if env not in by_env:
                by_env[env] = []
                chains.append(by_env[env])
            by_env[env].append(step)
            continue
        chain = [step]
        if label == MIGRATED_LABEL:  # model.keras: the re-saved model migrated to Keras 3 (converters/tf2/migrate.py)
            chain.insert(0, ("migrate", "tf2", "converters.tf2.migrate", [run_dir]))
        chains.append(chain)
    for chain in chains:  # made ready here, in the main thread (the merged chain below is a callable)
        for _name, env, _module, _args in chain:
            runner.prepare(env)
    chains = [[resave_item(run_dir, args, origin_env)]] + together(run_dir, chains, samples)
    # the re-save first, then the longest parity chain (the tf2 cells in one process), then the others
    first = [0] + [i for i, chain in enumerate(chains) if getattr(chain[0], "step_name", None) == TOGETHER_STEP]
    return VerifyRun(runner=runner, run_dir=run_dir, chains=chains, origin_env=origin_env,
                     origin_reason=origin_reason, graph=graph, keras3=keras3, first=first, extra=extra,
                     samples=samples)


TOGETHER_ENV = "tf2"  # the environment whose cells run in one process (``together``)
TOGETHER_STEP = "parity-tf2-cells"


def together(run_dir, chains, samples="0"):
    """The chains of parity cells with the tf2 ones (2 or more) merged into one chain that runs them in one
    process, importing TensorFlow once (``python -m converters.tf2.cells``: each cell still
    writes its own parity_<label>.json). What that process did not finish (a cell that raised, or the
    process died: a crash, a signal) runs as before, a process per step, so one bad cell cannot take the
    others' verdict, and its failure is reported as it would be alone."""
    mine = [chain for chain in chains if all(not callable(item) and item[1] == TOGETHER_ENV for item in chain)]
    if len(mine) < 2:
        return chains
    items = []
    for chain in mine:
        for name, _env, module, args in chain:
            items.append("migrate" if module == "converters.tf2.migrate" else "%s:%s" % (args[2], args[4]))

    def run_together(runner):
        for name in _outputs_of(mine):  # what tells the host that a cell or the migration is done
            if os.path.exists(os.path.join(run_dir, name)):
                os.remove(os.path.join(run_dir, name))
        try:
            runner.step(TOGETHER_STEP, TOGETHER_ENV, "converters.tf2.cells",
                        [run_dir] + items + ["--samples", samples], nice=0)  # the longest parity chain
        except errors.TfbridgeError:
            if os.path.exists(os.path.join(run_dir, runfolder.RESAVE_FAILED)):
                raise  # stopped because the re-save failed: nothing to run again
            # what it did not finish runs below, a process per step, and fails there as it would alone
        for chain in mine:
            for index, item in enumerate(chain):
                if not os.path.exists(os.path.join(run_dir, _output_of(item))):
                    for step in chain[index:]:
                        runner.step(*step)
                    break

    run_together.step_name = TOGETHER_STEP
    return [chain for chain in chains if chain not in mine] + [[run_together]]


def _output_of(step):
    """The file a parity chain's step writes last: the sign it finished."""
    _name, _env, module, args = step
    return MIGRATION if module == "converters.tf2.migrate" else runfolder.parity_name(args[2])


def _outputs_of(chains):
    return [_output_of(step) for chain in chains for step in chain]


def finish_verify(run, options):
    """After the parity chains ran: the first-divergent-layer/node searches of mismatching cells, the
    verdict policy (``tolerate``, written into each parity_<label>.json too); returns the report dict."""
    runner, run_dir, origin_env, graph, keras3 = run.runner, run.run_dir, run.origin_env, run.graph, run.keras3
    origin_reason = run.origin_reason
    extra = getattr(run, "extra", [])
    manifest = runfolder.read_json(os.path.join(run_dir, runfolder.MANIFEST))
    cells = []
    origin_activations = set()
    for label, env, flavour in cells_for(origin_env, keras3, graph, extra):
        cell = read_cell(run_dir, label, env, flavour)
        if cell.get("status") == "mismatch":
            cell = search_divergence(runner, run_dir, origin_env, label, env, flavour, origin_activations,
                                     options.debug)
        cells.append(cell)
    bisected = None
    if getattr(options, "bisect", False):
        from converters import bisect

        def run_cell(label, env, flavour):
            runner.step("parity-%s" % label, env, "converters.shared.parity",
                        [run_dir, "--label", label, "--keras", flavour, "--samples", getattr(run, "samples", "0")])
            return read_cell(run_dir, label, env, flavour)

        def divergent(cell):
            return search_divergence(runner, run_dir, origin_env, cell["env"], cell["environment"], cell["keras"],
                                     origin_activations, options.debug)

        bisected = bisect.bisect_all(cells, manifest["origin"], graph, run_cell, divergent, log=runner.log)
    for origin_label in origin_activations:
        _drop_activations(run_dir, origin_label, options.debug)
    tolerate(cells)
    for cell in cells:  # the verdict on each cell goes into its file too (the int8 report reads those)
        runfolder.write_json(os.path.join(run_dir, runfolder.parity_name(cell["env"])), cell)
    failing = [c["env"] for c in cells if c["status"] in ("mismatch", "load_error") and not c["tolerated"]]
    model_info = dict(manifest["model"])
    return {
        "schema_version": runfolder.SCHEMA_VERSION,
        "model": model_info,
        "origin": manifest["origin"],
        "origin_reason": origin_reason,
        "probe": manifest.get("probe"),
        "parity": [_public_cell(cell) for cell in cells],
        "verdict": "fail" if failing else "pass",
        "failing": failing,
        "timings": runner.timings,
        "sandbox": runner.sandbox,
        "policy": POLICY,
        "migration": _migration_summary(run_dir) if keras3 else None,
        "skipped_cells": [SKIPPED_FOR_GRAPHS] if graph else [],
        "transforms": (manifest["model"].get("transforms") or []) if graph else [],
        "environments": environments_used(cells),
        "bisect": bisected,
    }


def read_cell(run_dir, label, env, flavour):
    """A cell's ``parity_<label>.json`` with what the host knows of it: the environment it ran in, that
    environment's TensorFlow (from its lock) and Python, and the Keras flavour asked for."""
    cell = runfolder.read_json(os.path.join(run_dir, runfolder.parity_name(label)))
    cell["environment"] = env
    cell.setdefault("keras", flavour)
    cell["tf_version"] = venvs.locked_tf_version(env)
    try:
        cell["python"] = registry.get(env).python
    except (KeyError, EnvError):
        pass
    return cell


def search_divergence(runner, run_dir, origin_env, label, env, flavour, origin_activations, debug):
    """The first divergent layer (Keras cells: layer by layer, Keras in the origin) or node (graph cells:
    ``model.pb`` in the origin) of a mismatching cell; returns the cell as rewritten by the search.
    ``origin_activations``: the origin's activation files made so far (a set, filled here)."""
    origin_label = origin_env if flavour != GRAPH_FLAVOUR else origin_env + "-graph"
    if origin_label not in origin_activations:
        if flavour == GRAPH_FLAVOUR:
            runner.step("activations-%s" % origin_label, origin_env, "converters.shared.parity",
                        ["activations", run_dir, "--label", origin_label, "--keras", GRAPH_FLAVOUR])
        else:
            runner.step("activations-%s" % origin_env, origin_env, "legacy_tf1",
                        ["activations", run_dir, "--label", origin_env])
        origin_activations.add(origin_label)
    runner.step("activations-%s" % label, env, "converters.shared.parity",
                ["activations", run_dir, "--label", label, "--keras", flavour])
    runner.step("divergence-%s" % label, env, "converters.shared.parity",
                ["divergence", run_dir, "--label", label, "--origin-label", origin_label])
    _drop_activations(run_dir, label, debug)
    return read_cell(run_dir, label, env, flavour)


def environments_used(cells):
    """One entry per environment the cells ran in: its TensorFlow, Python, and, from its state file, how
    long it took to install and its size on disk (``report.json`` ``environments``)."""
    seen = []
    for cell in cells:
        env = cell.get("environment")
        if env and env not in [entry["env"] for entry in seen]:
            state = venvs.read_state(env) or {}
            seen.append({"env": env, "tensorflow": cell.get("tf_version"), "python": cell.get("python"),
                         "from_rule": registry.is_derived(env), "install_seconds": state.get("install_seconds"),
                         "size_bytes": state.get("size_bytes")})
    return seen


def tolerate(cells):
    """Set every cell's ``tolerated`` by the one policy (``POLICY``, the module docstring). A ``--tf``
    environment's cells follow the rules of tf2's of the same kind: ``<env>-keras3`` as ``tf2-keras3``,
    ``<env>-graph`` as ``tf2-graph``, its Keras cells' Lambda bytecode as tf2's."""
    status = dict((cell.get("env"), cell.get("status")) for cell in cells)
    for cell in cells:
        cell["tolerated"] = cell.get("status") == "load_error" and _keras3_as_is(cell.get("env"))
    _tolerate_keras3_as_is(cells)
    for cell in cells:
        if cell.get("status") != "load_error":
            continue
        env = _environment_of(cell)
        graph_label = GRAPH_LABEL if env == TOGETHER_ENV else env + "-graph"
        if (cell.get("env") != graph_label and cell.get("keras") != GRAPH_FLAVOUR
                and (cell.get("env") in PY3_11_KERAS_CELLS or env != TOGETHER_ENV)
                and cell.get("cause") == "lambda_bytecode" and status.get(graph_label) == "match"):
            cell["tolerated"] = True
        if cell.get("env") == graph_label and status.get(env) == "match":
            cell["tolerated"] = True
    return cells


def _keras3_as_is(label):
    """Is this the cell of ``model.h5`` read as it is by Keras 3 (``tf2-keras3``, ``tf2.17-keras3``)?"""
    return bool(label) and (label in LOAD_ERROR_TOLERATED or (label.endswith(KERAS3_SUFFIX) and label != MIGRATED_LABEL))


def _environment_of(cell):
    """The environment a cell ran in (``read_cell`` records it; else from its label: ``tf2-keras3`` -> tf2)."""
    if cell.get("environment"):
        return cell["environment"]
    label = cell.get("env") or ""
    for suffix in ("-keras3-migrated", KERAS3_SUFFIX, "-graph"):
        if label.endswith(suffix):
            return label[:-len(suffix)]
    return label


def _tolerate_keras3_as_is(cells):
    """Keras 3 reading ``model.h5`` as it is may also *mismatch* without failing the run, when the migrated
    model (made for Keras 3, with the known behaviour changes undone) matches: the user's Keras 3 route is
    ``model.keras``, and the as-is cell names the hazard that makes the difference."""
    migrated = [c for c in cells if c.get("env") == MIGRATED_LABEL]
    if not migrated or migrated[0].get("status") != "match":
        return
    for cell in cells:
        if _keras3_as_is(cell.get("env")) and cell.get("status") == "mismatch":
            cell["tolerated"] = True


def _migration_summary(run_dir):
    """What the Keras 3 migration did (``migration.json`` of ``converters.tf2.migrate``), for the report."""
    path = os.path.join(run_dir, MIGRATION)
    if not os.path.isfile(path):
        return None
    record = runfolder.read_json(path)
    keep = ("status", "path", "keras", "renamed", "outputs", "helper_layers", "fixes", "dropped_arguments",
            "custom_objects", "error", "hint")
    return dict((key, record[key]) for key in keep if key in record)


def jobs_of(opts):
    """``--jobs``, default the number of cores (at least 1)."""
    jobs = getattr(opts, "jobs", None)
    return max(1, int(jobs) if jobs else (os.cpu_count() or 1))


def run_side_by_side(runner, chains, jobs, first=(), beside=0):
    """Run chains of steps ``jobs`` at a time. A chain is a list run in order; each item is a step
    ``(name, env, module, args)``, or a callable taking the chain's step runner (``convert_legacy``'s
    conversion: its own steps, its own runners, logging through the runner it is given).

    ``beside``: that many more chains run at once, for a first chain whose followers start beside it and
    mostly wait for its files (the re-save, ``resave_item``: meanwhile they import TensorFlow).

    Each step is a process of its own, so threads only wait here. ``first``: indices of chains to start
    before the others (the longest one, so that it starts as soon as a slot is free); the others start in
    ``chains`` order. What the steps print is shown in the order of ``chains`` once all are done, so the
    step table reads the same whatever finished first, and ``runner.timings`` lists them in that order.
    The first failure (in ``chains`` order) is raised after the others have finished, as it would be one
    after another.
    """
    import concurrent.futures

    order = [index for index in first if 0 <= index < len(chains)]
    order += [index for index in range(len(chains)) if index not in order]
    for chain in chains:  # environments are made ready (or their absence reported) before anything runs
        for item in chain:
            if not callable(item):
                runner.prepare(item[1])
    if jobs <= 1 or len(chains) <= 1:
        for index in order:
            for item in chains[index]:
                if callable(item):
                    item(runner)
                else:
                    runner.step(*item)
        return
    runner.log("  %d chains of steps side by side, %d at a time (--jobs)" % (len(chains), jobs))

    def run_chain(chain):
        lines = []
        child = steps.StepRunner(runner.run_dir, log=lines.append, debug=runner.debug, backend=runner.backend,
                                 user_paths=runner.user_paths)
        child.prepared = set(runner.prepared)
        child.extra_env = dict(runner.extra_env)
        child.nice = runner.nice
        try:
            for item in chain:
                if callable(item):
                    item(child)
                else:
                    child.step(*item)
        except errors.TfbridgeError as error:
            return lines, child.timings, error
        return lines, child.timings, None

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=jobs + beside)
    try:
        futures = dict((index, pool.submit(run_chain, chains[index])) for index in order)
        results = [futures[index].result() for index in range(len(chains))]
    except KeyboardInterrupt:  # SIGINT, or SIGTERM via converters.cli, arrives in this thread only:
        steps.stop_running()  # stop the steps the other threads wait for, then report the interrupt
        raise
    finally:
        pool.shutdown(wait=True)
    failure = None
    for lines, timings, error in results:
        for line in lines:
            runner.log(line)
        runner.timings.extend(timings)
        failure = failure or error
    if failure is not None:
        raise failure


def _drop_activations(run_dir, label, debug):
    # per-layer activations of a deep net are hundreds of MB; the verdict is in parity_<label>.json.
    # --debug keeps them for a closer look.
    if not debug:
        path = os.path.join(run_dir, "activations_%s.npz" % label)
        if os.path.exists(path):
            os.remove(path)


def verify_into(options, run_dir, log):
    """Run every verify step into ``run_dir`` (which the caller owns and swaps into place); return the
    report dict without writing it. For ``convert_legacy``, which converts in the same folder before
    anything is swapped in, so that a failed conversion leaves the previous run untouched."""
    return _verify_into(options, run_dir, log)


def run_step(name, env, module, args, log, run_dir):
    """Run one in-environment step (``converters.steps.StepRunner``: log in ``run_dir/logs``, typed error on
    failure); return its stdout."""
    return steps.StepRunner(run_dir, log=log).step(name, env, module, args)


def _public_cell(cell):
    keep = ("env", "runtime", "keras", "status", "max_abs", "max_rel", "cosine", "top1_agreement", "error",
            "error_class", "hint", "first_divergent_layer", "divergence", "hazards", "hazard_note", "tolerated",
            "warnings", "per_output", "tolerances", "timings", "cause", "explanation", "divergence_note",
            "first_divergent_node", "nodes_compared", "samples", "environment", "tf_version", "python", "role")
    return dict((key, cell[key]) for key in keep if key in cell)


def _number(value, digits=3):
    if value is None:
        return "-"
    if isinstance(value, float):
        return "%.*g" % (digits, value)
    return str(value)


def matrix_rows(report):
    rows = [("env", "tf", "runtime", "status", "max_abs", "cosine", "top1", "note")]
    origin = report["origin"]
    runtime = ("tensorflow %s (graph)" % origin.get("tensorflow") if origin.get("keras_flavour") == "graph" else
               "tensorflow %s + %s %s" % (origin.get("tensorflow"), origin.get("keras_flavour"), origin.get("keras")))
    rows.append((origin["env"], origin.get("tensorflow") or "-", runtime, "origin", "0", "1", "-", "reference"))
    for cell in report["parity"]:
        if cell.get("first_divergent_node"):
            note = "first divergent node: %s" % cell["first_divergent_node"]
        elif cell.get("first_divergent_layer"):
            note = "first divergent layer: %s" % cell["first_divergent_layer"]
            if cell.get("hazards"):
                note += " (known hazard: %s)" % ", ".join(hazard["id"] for hazard in cell["hazards"])
            elif cell.get("hazard_note"):
                note += " (no known hazard)"
        elif cell.get("cause") == "lambda_bytecode":
            note = "Lambda bytecode of Python 3.7 cannot load in 3.11; the graph is portable" + (
                " (tolerated: %s matches)" % GRAPH_LABEL if cell.get("tolerated") else "")
        elif cell.get("error"):
            note = cell["error"][:100] + (" (tolerated)" if cell.get("tolerated") else "")
        elif cell.get("divergence_note"):
            note = cell["divergence_note"][:100]
        else:
            note = ""
        if cell.get("tolerated") and cell.get("status") == "mismatch":
            note += " (tolerated: %s matches)" % MIGRATED_LABEL
        if cell.get("warnings"):
            note = (note + "; " if note else "") + "warning: saturated probe outputs"
        if cell.get("role") == "bisect":
            note = ("bisect probe; " + note.strip()) if note.strip() else "bisect probe"
        rows.append((cell["env"], cell.get("tf_version") or "-", cell.get("runtime", "-"), cell["status"],
                     _number(cell.get("max_abs")),
                     _number(cell.get("cosine"), 7), _number(cell.get("top1_agreement")), note))
    return rows


def format_table(rows):
    """``rows[0]`` is the header (see ``matrix_rows``)."""
    return report_tables.format_table(rows[0], rows[1:])


def markdown(report):
    rows = matrix_rows(report)
    lines = ["# tfbridge verify_upgrade: %s" % os.path.basename(report["model"]["path"]), "",
             "- model: `%s` (sha256 `%s`)" % (report["model"]["path"], report["model"]["sha256"][:16]),
             "- origin: %s (%s)" % (report["origin"]["env"], report.get("origin_reason")),
             "- probe: %s" % json.dumps(report.get("probe"), sort_keys=True),
             "- compared in each environment: the probe's first %s samples (`--parity-samples`)"
             % (" / ".join(str(c) for c in sorted(set(c["samples"] for c in report["parity"] if c.get("samples"))))
                or "-"),
             "- verdict: **%s**" % report["verdict"], "",
             "| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    for row in rows[1:]:
        lines.append("| " + " | ".join(str(value).replace("|", "\\|") for value in row) + " |")
    lines += upgrade_line_lines(report)
    lines += bisect_lines(report)
    lines += graph_lines(report)
    lines += hazard_lines(report)
    lines += ["", "Tolerances: max_abs <= atol + rtol * max|ref| (atol 1e-4, rtol 1e-3), cosine >= 0.9999, "
              "top-1 agreement 100 % outside near-ties (see converters/shared/metrics.py).",
              "", "Policy: %s." % report["policy"], "", "| step | env | seconds |", "|---|---|---|"]
    for timing in report["timings"]:
        lines.append("| %s | %s | %s |" % (timing["step"], timing["env"], timing["seconds"]))
    return "\n".join(lines) + "\n"


def upgrade_line_lines(report):
    """The matrix by TF release (``converters.bisect.upgrade_lines``: one column per release checked), in
    markdown; nothing when the run checked no more releases than the built-in ones."""
    from converters import bisect

    rows = bisect.upgrade_lines(report)
    if len(rows) < 2 or not any(entry.get("from_rule") for entry in report.get("environments") or []):
        return []
    lines = ["", "By TensorFlow release (%s):" % "; ".join("%s: %s" % item for item in bisect.LINES), "",
             "| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
    return lines


def bisect_lines(report):
    """``--bisect``'s answer in words (markdown): per line, the first release that differs and why."""
    lines = []
    for search in report.get("bisect") or []:
        if search.get("searched"):
            where = search.get("first_divergent_layer") or search.get("first_divergent_node")
            lines += ["", "**Bisect %s**: the first TensorFlow release that differs is **%s** (%s matches)%s%s. "
                          "Probed: %s; environments built: %s." % (
                              search["line"], search["first_differing"], search["last_matching"],
                              "; first divergent %s: `%s`" % ("layer" if search.get("first_divergent_layer") else
                                                              "node", where) if where else "",
                              " (known hazard: %s)" % ", ".join(search["hazards"]) if search.get("hazards") else "",
                              ", ".join("%s %s" % (p["tf"], p["status"]) for p in search["probed"]) or "none",
                              ", ".join(search["environments_built"]) or "none")]
        elif report.get("bisect") is not None and search.get("why"):
            lines += ["", "Bisect %s: not searched (%s)." % (search["line"], search["why"])]
        for skipped in search.get("skipped") or []:
            lines.append("- TF %s skipped: %s" % (skipped["tf"], skipped["why"]))
    return lines


def graph_lines(report):
    """A TF 1.x graph source in words (markdown): its inputs and outputs, what was fixed to inference
    (``transforms``), and the Keras cells that do not apply."""
    model = report.get("model") or {}
    if not model.get("source_kind") or model.get("source_kind") == "h5":
        return []
    lines = ["", "Graph source: %s; inputs %s; outputs %s." % (
        model["source_kind"], ", ".join("`%s` %s" % (i["name"], i.get("shape")) for i in model.get("inputs") or []),
        ", ".join("`%s` %s" % (o["name"], o.get("shape")) for o in model.get("outputs") or []))]
    transforms = model.get("transforms") or report.get("transforms") or []
    lines += ["", "Fixed to inference before conversion (model.pb; checked against the source graph in the origin):"]
    lines += ["- %s" % t["what"] for t in transforms] or ["- nothing: the graph was an inference graph already"]
    for skipped in report.get("skipped_cells") or []:
        lines += ["", "Not run: %s (%s)." % (", ".join(skipped["cells"]), skipped["why"])]
    return lines


def hazard_lines(report):
    """The known upgrade hazards of the mismatching cells and the Keras 3 migration, in words (markdown)."""
    lines = []
    for cell in report["parity"]:
        for hazard in cell.get("hazards") or []:
            lines += ["", "**%s — known upgrade hazard `%s` at layer `%s`** (%s). %s" % (
                cell["env"], hazard["id"], hazard["layer"], hazard.get("matched", ""), hazard["explanation"]),
                "", "What to do: %s" % hazard["fix"]]
        if cell.get("hazard_note"):
            lines += ["", "**%s**: %s." % (cell["env"], cell["hazard_note"])]
        if cell.get("explanation"):
            lines += ["", "**%s** (load_error%s): %s." % (cell["env"], ", tolerated" if cell.get("tolerated") else "",
                                                        cell["explanation"])]
        if cell.get("divergence_note"):
            lines += ["", "**%s**: %s." % (cell["env"], cell["divergence_note"])]
    migration = report.get("migration")
    if migration and migration.get("status") == "migrated":
        lines += ["", "Keras 3: `model.keras` loads with `keras.saving.load_model(\"model.keras\")` (Keras %s, no "
                      "custom objects; README \"Keras 3\")." % migration.get("keras")]
        if migration.get("renamed"):
            lines.append("Renamed (Keras 3 refuses '/'): %d layers, e.g. %s; all in migration.json." % (
                len(migration["renamed"]),
                ", ".join("`%s` -> `%s`" % item for item in sorted(migration["renamed"].items())[:3])))
        for fix in migration.get("fixes") or []:
            lines.append("- `%s` (%s): %s" % (fix["layer"], fix["hazard"], fix["how"]))
    elif migration:
        lines += ["", "Keras 3 migration failed: %s" % migration.get("error")]
    return lines


def _write_report(run_dir, report):
    runfolder.write_json(os.path.join(run_dir, "report.json"), report)
    runfolder.write_text(os.path.join(run_dir, "report.md"), markdown(report))


def run(argv):
    args = declared.parse(VERIFY_UPGRADE, argv)
    if args.backend:
        os.environ["TFBRIDGE_BACKEND"] = args.backend
    report = verify(Options(**vars(args)))
    print(format_table(matrix_rows(report)))
    if upgrade_line_lines(report):  # the matrix by release, as a plain table
        from converters import bisect

        rows = bisect.upgrade_lines(report)
        print("\nBy TensorFlow release:\n" + report_tables.format_table(rows[0], rows[1:]))
    for line in bisect_lines(report):
        print(line.replace("**", "").replace("`", ""))
    print("\nverdict: %s; report: %s" % (report["verdict"], os.path.join(report["run"], "report.md")))
    cli.write_result(report["run"], report["verdict"], report.get("failing") or ())
    return 1 if report["verdict"] == "fail" else 0


if __name__ == "__main__":
    sys.exit(cli.main(run, step="verify"))
