"""``verify_upgrade``: is it safe to upgrade TensorFlow for this legacy model? (host side, stdlib only)

For whom: ``nox -s verify_upgrade -- MODEL ...`` and the lead's ``convert_legacy`` (``verify(options)``).
Runs on the host interpreter (Python 3.11, no numpy, no TensorFlow); every step that needs TF or numpy
runs inside an environment as a subprocess (``envs.venvs``) and talks through the run folder::

    python -m converters.verify MODEL [options]      (the options: converters/options.py, docs/options.md)

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

The work is split by job: which cells a model gets and running their chains side by side
(``converters.parity_matrix``), the first-divergent-layer/node search of a mismatching cell
(``converters.divergence``), the verdict (``converters.parity_verdict``: one policy, ``POLICY``, which failed
cells fail the run; also report.json's ``policy`` and docs/parity.md) and what a person reads
(``converters.parity_report``). Exit status 0 when every cell matches or its failure is tolerated, 1 when
one is not; any other failure is a typed error with one paragraph (the failing step's own message) and its
exit status (>= 2, one per error class: converters/errors.py).

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
import time

from converters import (cli, divergence, errors, parity_matrix, parity_report, parity_verdict, preflight,
                        preflight_data, preflight_model, preflight_options, runfolder, safety)
from converters import options as declared
from converters.options import VERIFY_UPGRADE
from envs import registry
from envs import report as report_tables

INSPECT_ENV = "tf1.15"


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
        parity_report.write_report(temporary, report)
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


class VerifyRun(object):
    """A verify run between its two halves (``begin_verify`` / ``finish_verify``): what the re-save found
    and the parity chains still to run, so that ``convert_legacy`` can run them side by side with the
    conversion in one scheduler (``parity_matrix.run_side_by_side``)."""

    def __init__(self, **fields):
        self.__dict__.update(fields)


def _verify_into(options, run_dir, log):
    run = begin_verify(options, run_dir, log)
    parity_matrix.run_side_by_side(run.runner, run.chains, parity_matrix.jobs_of(options), first=run.first, beside=1)
    return finish_verify(run, options)


def begin_verify(options, run_dir, log):
    """The preflight read into ``run_dir``; returns a ``VerifyRun`` whose ``chains`` are still to run
    (``parity_matrix.run_side_by_side``, ``beside=1``), then ``finish_verify``. The first chain is the re-save;
    the others (the parity cells) start beside it and wait for its model (``runfolder.await_file``), so that their
    TensorFlow import overlaps it."""
    runner = parity_matrix.runner_for(options, run_dir, log)
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
    for label, env, flavour in parity_matrix.cells_for(origin_env, keras3, graph, extra):
        step = ("parity-%s" % label, env, "converters.shared.parity",
                [run_dir, "--label", label, "--keras", flavour, "--samples", samples])
        if env in extra:  # a --tf environment's cells: one chain, one after the other (a process each)
            if env not in by_env:
                by_env[env] = []
                chains.append(by_env[env])
            by_env[env].append(step)
            continue
        chain = [step]
        if label == parity_matrix.MIGRATED_LABEL:  # model.keras: the model migrated to Keras 3 (converters/tf2/migrate.py)
            chain.insert(0, ("migrate", "tf2", "converters.tf2.migrate", [run_dir]))
        chains.append(chain)
    for chain in chains:  # made ready here, in the main thread (the merged chain below is a callable)
        for _name, env, _module, _args in chain:
            runner.prepare(env)
    chains = [[parity_matrix.resave_item(run_dir, args, origin_env)]] + parity_matrix.together(run_dir, chains, samples)
    # the re-save first, then the longest parity chain (the tf2 cells in one process), then the others
    first = [0] + [i for i, chain in enumerate(chains)
                   if getattr(chain[0], "step_name", None) == parity_matrix.TOGETHER_STEP]
    return VerifyRun(runner=runner, run_dir=run_dir, chains=chains, origin_env=origin_env,
                     origin_reason=origin_reason, graph=graph, keras3=keras3, first=first, extra=extra,
                     samples=samples)


def finish_verify(run, options):
    """After the parity chains ran: the first-divergent-layer/node searches of mismatching cells, the
    verdict policy (``parity_verdict.tolerate``, written into each parity_<label>.json too); returns the report dict."""
    runner, run_dir, origin_env, graph, keras3 = run.runner, run.run_dir, run.origin_env, run.graph, run.keras3
    origin_reason = run.origin_reason
    extra = getattr(run, "extra", [])
    manifest = runfolder.read_json(os.path.join(run_dir, runfolder.MANIFEST))
    cells = []
    origin_activations = set()
    for label, env, flavour in parity_matrix.cells_for(origin_env, keras3, graph, extra):
        cell = parity_matrix.read_cell(run_dir, label, env, flavour)
        if cell.get("status") == "mismatch":
            cell = divergence.search_divergence(runner, run_dir, origin_env, label, env, flavour, origin_activations,
                                     options.debug)
        cells.append(cell)
    bisected = None
    if getattr(options, "bisect", False):
        from converters import bisect

        def run_cell(label, env, flavour):
            runner.step("parity-%s" % label, env, "converters.shared.parity",
                        [run_dir, "--label", label, "--keras", flavour, "--samples", getattr(run, "samples", "0")])
            return parity_matrix.read_cell(run_dir, label, env, flavour)

        def divergent(cell):
            return divergence.search_divergence(runner, run_dir, origin_env, cell["env"], cell["environment"],
                                                cell["keras"], origin_activations, options.debug)

        bisected = bisect.bisect_all(cells, manifest["origin"], graph, run_cell, divergent, log=runner.log)
    for origin_label in origin_activations:
        divergence.drop_activations(run_dir, origin_label, options.debug)
    parity_verdict.tolerate(cells)
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
        "parity": [parity_report.public_cell(cell) for cell in cells],
        "verdict": "fail" if failing else "pass",
        "failing": failing,
        "timings": runner.timings,
        "sandbox": runner.sandbox,
        "policy": parity_verdict.POLICY,
        "migration": _migration_summary(run_dir) if keras3 else None,
        "skipped_cells": [parity_matrix.SKIPPED_FOR_GRAPHS] if graph else [],
        "transforms": (manifest["model"].get("transforms") or []) if graph else [],
        "environments": parity_matrix.environments_used(cells),
        "bisect": bisected,
    }


def _migration_summary(run_dir):
    """What the Keras 3 migration did (``migration.json`` of ``converters.tf2.migrate``), for the report."""
    path = os.path.join(run_dir, parity_matrix.MIGRATION)
    if not os.path.isfile(path):
        return None
    record = runfolder.read_json(path)
    keep = ("status", "path", "keras", "renamed", "outputs", "helper_layers", "fixes", "dropped_arguments",
            "custom_objects", "error", "hint")
    return dict((key, record[key]) for key in keep if key in record)


def verify_into(options, run_dir, log):
    """Run every verify step into ``run_dir`` (which the caller owns and swaps into place); return the
    report dict without writing it. For ``convert_legacy``, which converts in the same folder before
    anything is swapped in, so that a failed conversion leaves the previous run untouched."""
    return _verify_into(options, run_dir, log)


def run(argv):
    args = declared.parse(VERIFY_UPGRADE, argv)
    if args.backend:
        os.environ["TFBRIDGE_BACKEND"] = args.backend
    report = verify(Options(**vars(args)))
    print(parity_report.format_table(parity_report.matrix_rows(report)))
    if parity_report.upgrade_line_lines(report):  # the matrix by release, as a plain table
        from converters import bisect

        rows = bisect.upgrade_lines(report)
        print("\nBy TensorFlow release:\n" + report_tables.format_table(rows[0], rows[1:]))
    for line in parity_report.bisect_lines(report):
        print(line.replace("**", "").replace("`", ""))
    print("\nverdict: %s; report: %s" % (report["verdict"], os.path.join(report["run"], "report.md")))
    cli.write_result(report["run"], report["verdict"], report.get("failing") or ())
    return 1 if report["verdict"] == "fail" else 0


if __name__ == "__main__":
    sys.exit(cli.main(run, step="verify"))
