"""The parity matrix of ``verify_upgrade``: which cells a model gets (the built-in ones, a ``--tf`` release's,
a graph's), the chains of steps that run them (the re-save first; the tf2 cells in one process,
``together``), running chains side by side ``--jobs`` at a time (``run_side_by_side``), and reading a
cell's result (``read_cell``).

For whom: ``converters.verify`` (``begin_verify`` / ``finish_verify``) and ``converters.pipeline``, which
runs the conversion as one more chain. Host side, standard library only; every step is a process in its
environment (``converters.steps.StepRunner``). What can go wrong: the first failing step's typed error,
raised after the other chains have finished.
"""

import os
import threading

from converters import errors, runfolder, steps
from envs import registry, venvs
from envs.errors import EnvError


MIGRATED_LABEL = "tf2-keras3-migrated"  # converters.shared.parity.MIGRATED_LABEL (the host imports no numpy)


GRAPH_LABEL = "tf2-graph"  # converters.shared.parity.GRAPH_LABEL: model.pb in tf2 (tf.compat.v1)


MIGRATION = "migration.json"


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


def run_step(name, env, module, args, log, run_dir):
    """Run one in-environment step (``converters.steps.StepRunner``: log in ``run_dir/logs``, typed error on
    failure); return its stdout."""
    return steps.StepRunner(run_dir, log=log).step(name, env, module, args)
