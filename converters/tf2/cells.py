"""Several parity cells of the tf2 environment in one process: TensorFlow imported once.

For whom: ``converters.verify`` (``together``) runs ``python -m converters.tf2.cells RUN ITEM ...`` in tf2
instead of one process per cell (tf2 with tf-keras, the graph, Keras 3 reading model.h5 as it is, the
Keras 3 migration and the migrated model's cell). Each cell is ``converters.shared.parity.parity_cell`` and
writes its own ``parity_<LABEL>.json`` as in a process of its own; a cell that raises is left unfinished
and the host runs it in a process of its own, so one bad cell cannot take the others' verdict.

tf2 only (Python 3.11): it imports ``converters.tf2.migrate``; ``converters.shared`` must not (it also
runs in TF 1.x, Python 3.7).
"""

import argparse
import gc
import os
import sys

from converters import cli, runfolder
from converters.errors import UsageError
from converters.shared import keras_compat
from converters.shared.parity import MIGRATED_LABEL, parity_cell, summarize_error

MIGRATE = "migrate"  # the ``cells`` item that runs converters.tf2.migrate (writes model.keras, migration.json)


def run_cells(run, items, debug=False, samples=None):
    """Several cells of this environment in one process, one TensorFlow import (``cells`` command), in
    order. ``items``: ``LABEL:FLAVOUR`` (a parity cell, as ``parity_cell``) or ``migrate`` (the Keras 3
    migration, ``converters.tf2.migrate``, before the migrated model's cell). Each cell writes its own
    ``parity_<LABEL>.json`` as in a process of its own. A cell that raises (anything but the load failure
    that is its ``load_error``) is left unfinished: no file, a line here, and the host runs it in a process
    of its own (``converters.verify``), as it would without this command; the migrated cell is skipped
    when the migration raised. The cells compare their outputs with the origin's references after every
    cell has run (``parity_cell(compare=False)``), so that a process started beside the re-save does all its
    own work before it waits for them. Returns ``{label: "done"|"left"}``."""
    flavours = [item.partition(":")[2] for item in items]
    if MIGRATE in items or "tf_keras" in flavours or "auto" in flavours:
        keras_compat.prepare("tf_keras")  # before TensorFlow is imported (tf.keras = tf_keras)
    if debug:
        os.environ["TFBRIDGE_DEBUG"] = "1"
    runfolder.await_file(run, runfolder.MANIFEST, before=keras_compat.import_tensorflow)  # started beside the re-save
    outcome = {}
    pending = []  # (label, compare): cells whose outputs are written, compared once every cell has run
    for item in items:
        label, _, flavour = item.partition(":")
        if label == MIGRATED_LABEL and outcome.get(MIGRATE) == "left":
            outcome[label] = "left"
            continue
        try:
            if label == MIGRATE:
                from converters.tf2 import migrate

                record = migrate.migrate(run)
                print("migrate: %s" % record["status"])
            else:
                # compared after the others have run: the origin's references may still be on their way
                cell = parity_cell(run, label, flavour or "auto", samples, compare=False)
                if callable(cell):
                    pending.append((label, cell))
                    continue
                print("%s: %s (max_abs %s)" % (label, cell["status"], cell["max_abs"]))
            outcome[label] = "done"
        except Exception as exc:  # noqa: BLE001 - left for a process of its own, which reports it as ever
            outcome[label] = "left"
            print("%s: not finished in this process (%s: %s); it runs again in a process of its own"
                  % (label, type(exc).__name__, summarize_error(exc, 200)))
        finally:
            if label == MIGRATED_LABEL or flavour == "keras3":
                keras_compat.prepare("tf_keras")  # the next tf_keras cell: tf.keras as at import time
            for name in ("tf_keras", "keras"):
                module = sys.modules.get(name)
                if module is not None and hasattr(module, "backend"):
                    try:
                        module.backend.clear_session()
                    except Exception:  # noqa: BLE001 - freeing memory only
                        pass
            gc.collect()
    for label, compare in pending:
        try:
            cell = compare()
            print("%s: %s (max_abs %s)" % (label, cell["status"], cell["max_abs"]))
            outcome[label] = "done"
        except Exception as exc:  # noqa: BLE001 - left for a process of its own, as above
            outcome[label] = "left"
            print("%s: not finished in this process (%s: %s); it runs again in a process of its own"
                  % (label, type(exc).__name__, summarize_error(exc, 200)))
    return outcome


def run(argv):
    parser = argparse.ArgumentParser(prog="python -m converters.tf2.cells", description=__doc__.split("\n\n")[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("run", help="run folder made by legacy_tf1 resave")
    parser.add_argument("items", nargs="+", help="LABEL:FLAVOUR (a parity cell) or migrate, run in order")
    parser.add_argument("--samples", type=int, default=0, help="the probe's first N samples (--parity-samples; 0: all)")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.run):
        raise UsageError("run folder %s does not exist." % args.run, step="parity")
    run_cells(args.run, args.items, debug=args.debug, samples=args.samples)
    return 0


if __name__ == "__main__":
    raise SystemExit(cli.main(run, step="parity"))
