"""The verdict of the parity matrix: which failed cells fail a run (one policy, ``POLICY``; ``tolerate``).

Every ``mismatch`` or ``load_error`` fails ``verify_upgrade`` (exit 1), except, reported honestly but not a
regression of the user's model:

1. ``tf2-keras3`` (``model.h5`` as it is, in Keras 3): a ``load_error`` always; a ``mismatch`` when
   ``tf2-keras3-migrated`` matches.
2. A model whose Lambda layers hold Python 3.7 bytecode: a ``load_error`` of the Keras cells in Python 3.11
   (cause ``lambda_bytecode``) when ``tf2-graph`` matches: the graph is portable, the ``.h5`` is not.
3. ``tf2-graph``: a ``load_error`` when ``tf2`` matches: the converter then takes ``model.h5``.

A ``--tf`` environment's cells follow tf2's of the same kind. For whom: ``converters.verify`` (and
report.json's ``policy``, docs/parity.md). Host side, standard library only.
"""

from converters.parity_matrix import GRAPH_FLAVOUR, GRAPH_LABEL, KERAS3_SUFFIX, MIGRATED_LABEL, TOGETHER_ENV


# Cells whose load_error is informative, not a failure (see the module docstring). The migrated Keras 3
# model's cell (MIGRATED_LABEL) is not among them: tfbridge wrote that file, so it must load and match.
LOAD_ERROR_TOLERATED = ("tf2-keras3",)


# The Keras cells of Python 3.11, whose load_error caused by Lambda bytecode (cause "lambda_bytecode") is
# tolerated when GRAPH_LABEL matches.
PY3_11_KERAS_CELLS = ("tf2", "tf2-keras3", MIGRATED_LABEL)


POLICY = ("exit 1 on any mismatch or load_error, except: %s (a load_error; a mismatch too when %s matches); "
          "for a model with Lambda layers of Python 3.7 bytecode, a load_error of %s (cause lambda_bytecode) when "
          "%s matches; a load_error of %s when tf2 matches; the cells of a --tf environment E alike (E-keras3 as "
          "tf2-keras3, E-graph as tf2-graph, E's Keras cells' lambda_bytecode when E-graph matches)"
          % (", ".join(LOAD_ERROR_TOLERATED), MIGRATED_LABEL, ", ".join(PY3_11_KERAS_CELLS), GRAPH_LABEL,
             GRAPH_LABEL))


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
