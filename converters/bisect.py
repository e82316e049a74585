"""``--bisect``: the first TensorFlow release that changed the model's outputs (host side, standard library only).

For whom: ``converters.verify.finish_verify`` (``verify_upgrade`` and ``convert_legacy`` with ``--bisect``).
docs/tf-releases.md, "Any TensorFlow release", says what the user sees.

The parity cells fall into *lines*, one per way of running the model as TensorFlow moves on:

- ``tf.keras``: the ``.h5`` in the Keras each TF ships as ``tf.keras`` (TF 1.x: the model's own Keras; 2.0 to
  2.15: Keras 2; from 2.16: Keras 3): what a user gets who upgrades TF and changes nothing else;
- ``keras2``: the ``.h5`` in Keras 2 kept (tf.keras up to 2.15, the tf-keras package from 2.16: cell ``tf2``);
- ``graph``: the frozen graph (``model.pb``).

The origin matches every line at its own release. A line whose newest cell mismatches while an older one
matches is searched: bisection over the TF minors between the newest match and the oldest mismatch above it
(``envs.registry.TF_RELEASES``), then over the patch releases of the first minor that differs. Each probe
is that line's cell in the release's environment (``envs.registry.env_name``: made from the rule and built
when first needed, one at a time); a release whose cell does not load, or whose environment cannot be made
here, is skipped and said so. The first differing release's cell gets its divergence search (first
divergent layer or node, hazards named).
"""

import time

from converters import errors
from envs import registry, venvs

LINES = (
    ("tf.keras", "the .h5 in the Keras each TF ships as tf.keras (Keras 2 before 2.16, Keras 3 from 2.16)"),
    ("keras2", "the .h5 in Keras 2 (tf.keras before 2.16, the tf-keras package from 2.16)"),
    ("graph", "the frozen graph (model.pb)"),
)
GRAPH = "graph"
MIGRATED_LABEL = "tf2-keras3-migrated"  # converters.verify.MIGRATED_LABEL (a different file: not on any line)


def lines_of(cell):
    """The lines a cell lies on (none for the migrated Keras 3 model, a different file)."""
    flavour = cell.get("keras")
    if cell.get("env") == MIGRATED_LABEL or not cell.get("tf_version"):
        return ()
    if flavour == GRAPH:
        return ("graph",)
    if flavour == "keras3":
        return ("tf.keras",)
    if flavour == "tf_keras":
        return ("keras2",)
    return ("tf.keras", "keras2")  # TF 1.x's own Keras, tf.keras of TF 2.0 ... 2.15


def probe_cell(line, version):
    """``(label, env, flavour)`` of ``line``'s cell at TF ``version`` (``"2.16"``: its newest release)."""
    env = registry.env_name(version)
    if line == GRAPH:
        return (env + "-graph", env, GRAPH)
    kind = registry.keras_default(version)
    if kind == "standalone":
        return (env, env, "auto")
    if kind == "tf.keras":
        return (env, env, "tf.keras")
    return (env + "-keras3", env, "keras3") if line == "tf.keras" else (env, env, "tf_keras")


def key(version):
    return registry.tf_version_key(version)


def bisect_all(cells, origin, graph, run_cell, divergent, log=print):
    """Search every line whose newest cell mismatches (module docstring). ``cells``: the run's cells (each
    with ``tf_version``, ``keras``, ``environment``), extended here with the probes' cells and updated with
    the divergence search; ``origin``: the manifest's ``origin`` (``tensorflow``: its release);
    ``run_cell(label, env, flavour)`` runs a cell and returns it; ``divergent(cell)`` runs its divergence
    search and returns it. Returns one record per line (``report.json`` ``bisect``)."""
    searches = []
    for line, what in LINES:
        if graph and line != GRAPH:
            continue
        search = Search(line, what, cells, origin, run_cell, divergent, log)
        searches.append(search.run())
    return searches


class Search(object):
    """The bisection of one line (``bisect_all``)."""

    def __init__(self, line, what, cells, origin, run_cell, divergent, log):
        self.line, self.what, self.cells, self.origin = line, what, cells, origin
        self.run_cell, self.divergent, self.log = run_cell, divergent, log
        self.probed, self.skipped, self.built = [], [], []

    def points(self):
        """``[(version key, status, cell)]`` of the line's cells, the origin first (a match)."""
        found = [(key(self.origin["tensorflow"]), "match", None)] if self.origin.get("tensorflow") else []
        for cell in self.cells:
            if self.line in lines_of(cell):
                found.append((key(cell["tf_version"]), cell.get("status"), cell))
        return sorted(found, key=lambda point: point[0])

    def record(self, **fields):
        record = {"line": self.line, "what": self.what, "probed": self.probed, "skipped": self.skipped,
                  "environments_built": self.built}
        record.update(fields)
        return record

    def run(self):
        started = time.time()
        points = self.points()
        if not points or points[-1][1] != "mismatch":
            return self.record(searched=False, why="the newest cell of this line %s" % (
                "is %s" % points[-1][1] if points else "does not exist"))
        newest = points[-1]
        matches = [point for point in points if point[1] == "match" and point[0] < newest[0]]
        if not matches:
            return self.record(searched=False, why="no older cell of this line matches: give an older release with "
                                                   "--tf to search from")
        good = matches[-1]
        bad = [point for point in points if point[1] == "mismatch" and point[0] > good[0]][0]
        minors = [minor for minor in registry.TF_RELEASES if good[0][:2] < key(minor) < bad[0][:2]]
        self.log("  bisect %s: %s matches, %s differs; %d minor release(s) between them: about %d probe(s), then "
                 "the first differing minor's patch releases (an environment each, made when first needed)"
                 % (self.line, _text(good[0]), _text(bad[0]), len(minors), _probes(len(minors))))
        good, bad = self.narrow(minors, good, bad)
        patches = [release for release in registry.releases_of(_text(bad[0][:2]))
                   if good[0] < key(release) < bad[0]]
        good, bad = self.narrow(patches, good, bad)
        cell = bad[2]
        if cell is not None and not (cell.get("first_divergent_layer") or cell.get("first_divergent_node")):
            cell = self.replace(cell, self.divergent(cell))
        self.log("  bisect %s: first release that differs: %s (last that matches: %s)"
                 % (self.line, _text(bad[0]), _text(good[0])))
        return self.record(
            searched=True, first_differing=_text(bad[0]), last_matching=_text(good[0]),
            cell=cell.get("env") if cell else None,
            first_divergent_layer=cell.get("first_divergent_layer") if cell else None,
            first_divergent_node=cell.get("first_divergent_node") if cell else None,
            hazards=[hazard["id"] for hazard in (cell.get("hazards") or [])] if cell else [],
            seconds=round(time.time() - started, 1))

    def narrow(self, candidates, good, bad):
        """Bisect ``candidates`` (releases or minors, oldest first, all between ``good`` and ``bad``)."""
        candidates = list(candidates)
        while candidates:
            middle = candidates[len(candidates) // 2]
            point = self.probe(middle)
            if point is None or point[1] not in ("match", "mismatch"):
                candidates.remove(middle)  # no verdict there: the search goes on without it
                continue
            if point[1] == "match":
                good = point
                candidates = [c for c in candidates if key(c) > key(middle)]
            else:
                bad = point
                candidates = [c for c in candidates if key(c) < key(middle)]
        return good, bad

    def probe(self, version):
        """The line's cell at ``version`` (run unless the run has it): ``(key, status, cell)`` or None."""
        try:
            label, env, flavour = probe_cell(self.line, version)
        except ValueError as error:
            self.skipped.append({"tf": version, "why": str(error)})
            return None
        cell = self.find(label)
        if cell is None:
            try:
                fresh = venvs.status(env) != "ready" if registry.is_derived(env) else False
                cell = self.run_cell(label, env, flavour)
            except errors.TfbridgeError as error:  # no Python for it, a lock that does not resolve, a step failed
                self.skipped.append({"tf": version, "env": env, "why": str(error).strip().splitlines()[0][:300]})
                self.log("  bisect %s: TF %s skipped: %s" % (self.line, version, self.skipped[-1]["why"]))
                return None
            if fresh:
                self.built.append(env)
            cell["role"] = "bisect"
            self.cells.append(cell)
        self.probed.append({"tf": cell.get("tf_version"), "env": env, "cell": label, "status": cell.get("status")})
        self.log("  bisect %s: TF %s (%s): %s" % (self.line, cell.get("tf_version"), label, cell.get("status")))
        if not cell.get("tf_version"):
            return None
        return (key(cell["tf_version"]), cell.get("status"), cell)

    def find(self, label):
        for cell in self.cells:
            if cell.get("env") == label:
                return cell
        return None

    def replace(self, old, new):
        if old.get("role"):
            new["role"] = old["role"]
        for index, cell in enumerate(self.cells):
            if cell is old:
                self.cells[index] = new
        return new


def _probes(count):
    """How many probes a bisection of ``count`` candidates takes (at most)."""
    probes = 0
    while count:
        count //= 2
        probes += 1
    return probes


def _text(version_key):
    return ".".join(str(part) for part in version_key)


def upgrade_lines(report):
    """The matrix by TF release: one row per line, one column per TF release the run checked (the origin
    first), each holding that line's status there. ``[header, row, ...]`` (plain strings)."""
    origin = report.get("origin") or {}
    columns = sorted(set([origin.get("tensorflow")] + [cell.get("tf_version") for cell in report.get("parity") or []
                                                       if lines_of(cell)]) - set([None]), key=key)
    rows = [["line"] + columns]
    for line, _what in LINES:
        row = [line]
        used = False
        for column in columns:
            statuses = [cell.get("status") for cell in report["parity"]
                        if cell.get("tf_version") == column and line in lines_of(cell)]
            if column == origin.get("tensorflow") and not statuses:
                statuses = ["origin"]
            used = used or bool(statuses) and column != origin.get("tensorflow")
            row.append("/".join(sorted(set(statuses))) if statuses else "-")
        if used:
            rows.append(row)
    return rows
