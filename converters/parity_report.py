"""What ``verify_upgrade`` tells a person: the parity matrix as a table (terminal and ``report.md``), the matrix
by TF release, ``--bisect``'s answer, a graph source's transforms, the known upgrade hazards and the Keras 3
migration, in words.

For whom: ``converters.verify`` (``write_report``, ``run``) and ``converters.pipeline`` (the table it
prints). Host side, standard library only; reads only the report dict.
"""

import json
import os

from converters import runfolder
from converters.parity_matrix import GRAPH_LABEL, MIGRATED_LABEL
from envs import report as report_tables


def public_cell(cell):
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
                      "custom objects; docs/keras3.md)." % migration.get("keras")]
        if migration.get("renamed"):
            lines.append("Renamed (Keras 3 refuses '/'): %d layers, e.g. %s; all in migration.json." % (
                len(migration["renamed"]),
                ", ".join("`%s` -> `%s`" % item for item in sorted(migration["renamed"].items())[:3])))
        for fix in migration.get("fixes") or []:
            lines.append("- `%s` (%s): %s" % (fix["layer"], fix["hazard"], fix["how"]))
    elif migration:
        lines += ["", "Keras 3 migration failed: %s" % migration.get("error")]
    return lines


def write_report(run_dir, report):
    runfolder.write_json(os.path.join(run_dir, "report.json"), report)
    runfolder.write_text(os.path.join(run_dir, "report.md"), markdown(report))
