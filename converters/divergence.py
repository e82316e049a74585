"""The divergence search of a mismatching parity cell: where the model first computes something else.

A Keras cell is compared layer by layer (per-layer activations in the origin, Keras of the origin TF, and in
the cell's runtime), a graph cell node by node (``model.pb`` in both, in topological order); the
environment writes the answer into the cell's ``parity_<label>.json`` (``first_divergent_layer`` or
``first_divergent_node``, and the known upgrade hazards of that layer). For whom: ``converters.verify``
(``finish_verify``, and ``--bisect``'s probes). Host side, standard library only.
"""

import os

from converters.parity_matrix import GRAPH_FLAVOUR, read_cell


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
    drop_activations(run_dir, label, debug)
    return read_cell(run_dir, label, env, flavour)


def drop_activations(run_dir, label, debug):
    # per-layer activations of a deep net are hundreds of MB; the verdict is in parity_<label>.json.
    # --debug keeps them for a closer look.
    if not debug:
        path = os.path.join(run_dir, "activations_%s.npz" % label)
        if os.path.exists(path):
            os.remove(path)
