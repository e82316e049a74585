"""The report of a run folder: report.json for machines, report.md and a self-contained report.html for people.

For whom: the last step of ``converters.convert`` / ``convert_legacy``; ``tf2`` environment (matplotlib and
jinja2; the HTML has its CSS inline and its plots as base64 PNG, so it can be mailed as one file).

Reads whatever the run folder holds and reports what is missing rather than failing: manifest.json
(model, origin, timings of the re-save), parity_*.json (one parity matrix cell each, written by
``converters.shared.parity``), tflite.json / npu.json / layers.json / eval.json (the conversion step).
report.json keys (docs/run-folder.md): model, origin, data, parity, tflite, npu, layers, eval
(with ``--eval``), timings {step: seconds}.

``data``: ``{"calibration": {"source", "count", ...}, "probe": {"source", "count"}, "overlap"}``, the sets
the conversion step actually used; ``overlap`` is the number of calibration samples equal to a probe
sample by content hash, counted in that step (``converters.tf2.tflite_convert.data_section``).
``eval``: ``converters.tf2.evaluate`` (samples, float_top1, int8_top1, drop_points, drop_ci95, flipped,
top-5, per-environment float figures, the classes that lose most).

What can go wrong: ``InputFileError`` when the folder has no manifest.json (nothing to report on).
"""

import base64
import datetime
import glob
import io
import os
import sys

from converters import runfolder
from converters.errors import InputFileError

TEMPLATE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")
TFLITE_KEYS = ("path", "input_dtype", "output_dtype", "size_bytes", "status", "cosine", "top1_agreement",
               "max_abs_lsb", "sqnr_db", "sqnr_centered_db", "correlation")


def _read(path):
    return runfolder.read_json(path) if os.path.exists(path) else None


def hazard_lines(parity):
    """The known upgrade hazards of the mismatching cells, in words (``converters.shared.hazards``)."""
    lines = []
    for cell in parity:
        for hazard in cell.get("hazards") or []:
            lines += ["", "**%s: known hazard `%s` at layer `%s`** (%s). %s" % (
                cell.get("env"), hazard["id"], hazard["layer"], hazard.get("matched", ""), hazard["explanation"]),
                "", "What to do: %s" % hazard["fix"]]
        if cell.get("hazard_note"):
            lines += ["", "**%s**: %s." % (cell.get("env"), cell["hazard_note"])]
    return lines


def migration_lines(migration):
    """What the Keras 3 migration (model.keras) did, in words."""
    if not migration:
        return []
    if migration.get("status") != "migrated":
        return ["", "Keras 3 migration: not written (%s)." % migration.get("error")]
    lines = ["", "Keras 3 migration: `%s` (Keras %s; load it with `keras.saving.load_model(\"model.keras\")`, "
                 "no custom objects)." % (migration.get("path"), migration.get("keras"))]
    if migration.get("renamed"):
        lines.append("Renamed layers (Keras 3 refuses '/'): %d, e.g. %s." % (len(migration["renamed"]), ", ".join(
            "`%s` -> `%s`" % item for item in sorted(migration["renamed"].items())[:5])))
    for fix in migration.get("fixes") or []:
        lines.append("- `%s` (%s): %s" % (fix["layer"], fix["hazard"], fix["how"]))
    return lines


def collect(run_dir):
    """Gather the run folder's results into the report.json dict (docs/run-folder.md's keys plus details)."""
    manifest = _read(os.path.join(run_dir, runfolder.MANIFEST))
    if manifest is None:
        raise InputFileError("%s has no manifest.json: nothing to report." % run_dir, step="report",
                             hint="Run the conversion (or the re-save step) into this folder first.")
    model = dict(manifest.get("model") or {})
    parity = []
    for path in sorted(glob.glob(os.path.join(run_dir, "parity_*.json"))):
        cell = runfolder.read_json(path)
        if isinstance(cell, dict):
            parity.append(cell)
    migration = _read(os.path.join(run_dir, "migration.json"))  # converters.tf2.migrate (model.keras)
    tflite_raw = _read(os.path.join(run_dir, "tflite.json")) or {}
    tflite = {key: tflite_raw.get(key) for key in TFLITE_KEYS}
    for key, value in tflite_raw.items():
        if key not in tflite and key not in ("timings", "phases"):  # phases: the host's timeline (report.json's timings)
            tflite[key] = value
    if tflite.get("path"):
        tflite["path"] = os.path.relpath(tflite["path"], run_dir) if os.path.isabs(tflite["path"]) else tflite["path"]
    npu = _read(os.path.join(run_dir, "npu.json")) or {}
    layers_raw = _read(os.path.join(run_dir, "layers.json")) or {}
    layers = [dict(layer) for layer in layers_raw.get("layers", [])]
    timings = {}
    for key, value in (manifest.get("timings") or {}).items():
        timings["resave_" + key[:-2] if key.endswith("_s") else key] = value
    for key, value in (tflite_raw.get("timings") or {}).items():
        timings[key] = value
    data = tflite_raw.get("data")
    if data is None:  # a failed conversion: at least the probe the run folder holds
        probe = manifest.get("probe") or {}
        data = {"calibration": None, "overlap": None,
                "probe": {"source": probe.get("path") or probe.get("source"), "count": probe.get("samples")}}
    tflite.pop("data", None)
    evaluation = _read(os.path.join(run_dir, "eval.json"))
    quantization = tflite.pop("quantization", None)  # issue 22: how the int8 model was made (--quantize)
    if quantization:
        evaluated = (evaluation or {}).get("candidates_top1") or {}
        for candidate in quantization.get("candidates") or []:
            candidate["eval_top1"] = evaluated.get(candidate["name"])
    report = {
        "schema_version": runfolder.SCHEMA_VERSION,
        "generated": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "run_dir": os.path.abspath(run_dir),
        "model": {"path": model.get("path"), "sha256": model.get("sha256"), "inputs": model.get("inputs") or [],
                  "outputs": model.get("outputs") or [], "parameters": model.get("parameters"),
                  "route": model.get("route"), "frozen_graph": bool(model.get("frozen_graph")),
                  # a TF 1.x graph source (legacy_tf1.graphs): its kind and what was fixed to inference
                  "source_kind": model.get("source_kind"), "transforms": model.get("transforms") or []},
        "origin": manifest.get("origin") or {},
        "probe": _probe_summary(manifest.get("probe") or {}),
        "data": data,
        "parity": parity,
        "migration": migration,
        "tflite": tflite,
        "npu": npu,
        "layers": layers,
        "layers_info": {k: v for k, v in layers_raw.items() if k != "layers"},
        "quantization": quantization,
        "eval": evaluation,
        "timings": timings,
        # whether the steps ran without network (converters.steps.StepRunner.sandbox, written by the host)
        "sandbox": _read(os.path.join(run_dir, "sandbox.json")),
    }
    return report


def _probe_summary(probe):
    """manifest.json's probe without its per-sample lists (indices, hashes: they stay in the manifest)."""
    return {k: v for k, v in probe.items() if k not in ("indices", "source_sha256", "sample_sha256")}


# ---------------------------------------------------------------------------------------------- plots

def _png(figure):
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def layer_plot(layers, flag_above=0.7, top=40):
    """Bar plot of rmse/scale per layer (the ``top`` worst, in graph order), threshold line; data URI."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers
    import matplotlib.pyplot as plt

    rows = [layer for layer in layers if layer.get("rmse_over_scale") is not None]
    if not rows:
        return None
    if len(rows) > top:
        keep = sorted(rows, key=lambda r: r["rmse_over_scale"], reverse=True)[:top]
        keep_ids = set(id(r) for r in keep)
        rows = [r for r in rows if id(r) in keep_ids]
    values = [r["rmse_over_scale"] for r in rows]
    labels = ["%s %s" % (r.get("op", ""), _short(r["name"])) for r in rows]
    figure, axis = plt.subplots(figsize=(9.5, max(2.6, 0.24 * len(rows) + 1.0)))
    colours = ["#d9534f" if v > flag_above else "#3b7dd8" for v in values]
    positions = list(range(len(rows)))
    axis.barh(positions, values, color=colours, height=0.7)
    axis.set_yticks(positions)
    axis.set_yticklabels(labels, fontsize=7.5)
    axis.invert_yaxis()
    axis.axvline(flag_above, color="#d9534f", linestyle="--", linewidth=1)
    axis.axvline(0.2887, color="#888888", linestyle=":", linewidth=1)
    axis.text(flag_above, -0.8, " flag > %.1f" % flag_above, color="#d9534f", fontsize=8, va="bottom")
    axis.set_xlabel("RMSE / scale (LSB)  -  dotted: ideal rounding 0.29")
    axis.spines["top"].set_visible(False)
    axis.spines["right"].set_visible(False)
    axis.grid(axis="x", alpha=0.25)
    uri = _png(figure)
    plt.close(figure)
    return uri


def quantization_plot(section, top=40):
    """Issue 22: the per-layer int8 error of the plain model and of the chosen one (accumulated error at
    each layer's output, RMSE / scale in LSB, on validation samples), side by side; data URI or None."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = (section or {}).get("chosen")
    rows = [row for row in (section or {}).get("layers") or [] if row.get("plain") is not None]
    if not rows or not chosen or chosen == "plain":
        return None
    rows = rows[-top:] if len(rows) > top else rows
    figure, axis = plt.subplots(figsize=(9.5, max(2.6, 0.32 * len(rows) + 1.0)))
    positions = list(range(len(rows)))
    axis.barh([p - 0.2 for p in positions], [r["plain"] for r in rows], height=0.38, color="#d98b5f",
              label="plain (TFLite min/max)")
    axis.barh([p + 0.2 for p in positions], [r.get(chosen) or 0.0 for r in rows], height=0.38, color="#2e9d6a",
              label="chosen: %s" % chosen)
    axis.set_yticks(positions)
    axis.set_yticklabels(["%s %s" % (r.get("op", ""), _short(r["name"])) for r in rows], fontsize=7.5)
    axis.invert_yaxis()
    axis.set_xscale("log")
    axis.axvline(0.2887, color="#888888", linestyle=":", linewidth=1)
    axis.set_xlabel("accumulated error at the layer's output, RMSE / scale (LSB, log)  -  dotted: ideal rounding 0.29")
    axis.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=2, fontsize=8, frameon=False)
    for side in ("top", "right"):
        axis.spines[side].set_visible(False)
    uri = _png(figure)
    plt.close(figure)
    return uri


def quantization_rows(report):
    """The ablation table's rows: each candidate's validation figures, its --eval top-1 when given."""
    section = report.get("quantization") or {}
    return [dict(candidate, chosen=candidate["name"] == section.get("chosen"))
            for candidate in section.get("candidates") or []]


def quantization_lines(report):
    """report.md's "How the int8 model was made" (issue 22)."""
    section = report.get("quantization")
    if not section:
        return []
    lines = ["", "## How the int8 model was made (--quantize)", "",
             "Chosen: **%s**: %s." % (section.get("chosen"), section.get("why")),
             "", "Candidates scored on %s." % (section.get("validation") or {}).get("split", "?"), ""]
    rows = quantization_rows(report)
    if rows:
        lines += ["| candidate | centered SQNR dB | correlation | SQNR dB | cosine | top-1 agreement | max LSB | "
                  "eval top-1 % | seconds |", "|---|---|---|---|---|---|---|---|---|"]
        for row in rows:
            lines.append("| %s%s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                row["name"], " (chosen)" if row["chosen"] else " (stopped after the first fold)"
                if row.get("stopped_early") else "", fmt(row.get("sqnr_centered_db"), 2),
                fmt(row.get("correlation"), 3), fmt(row.get("sqnr_db"), 2), fmt(row.get("cosine"), 5), fmt(row.get("top1_agreement"), 3), fmt(row.get("max_abs_lsb"), 1),
                fmt(row.get("eval_top1"), 2), fmt(row.get("seconds"), 2)))
        stopped = ["%s: %s (its row: those %d samples)." % (row["name"], row["stopped_early"], row["scored_samples"])
                   for row in rows if row.get("stopped_early")]
        lines += [""] + stopped if stopped else []
    plain = section.get("plain_probe")
    if plain:
        lines += ["", "On the probe (held out): plain `%s` centered SQNR %s dB, correlation %s, SQNR %s dB, top-1 "
                  "agreement %s; chosen centered SQNR %s dB, correlation %s, SQNR %s dB, top-1 agreement %s." % (
                      section.get("plain_path"), fmt(plain.get("sqnr_centered_db"), 2), fmt(plain.get("correlation"), 3),
                      fmt(plain.get("sqnr_db"), 2), fmt(plain.get("top1_agreement"), 3),
                      fmt(report["tflite"].get("sqnr_centered_db"), 2), fmt(report["tflite"].get("correlation"), 3),
                      fmt(report["tflite"].get("sqnr_db"), 2), fmt(report["tflite"].get("top1_agreement"), 3))]
    cle = section.get("cle")
    if cle:
        lines.append("Cross-layer equalization: %s pairs (%s with ReLU6, %s ReLU6 channels kept at scale 1); "
                     "the equalized float model against the float model on %s calibration samples: centered SQNR "
                     "%s dB, max |diff| %s; %s." % (
                         cle.get("pairs"), cle.get("relu6_pairs"), cle.get("relu6_channels_kept"),
                         (cle.get("float_check") or {}).get("samples", "the"),
                         fmt((cle.get("float_check") or {}).get("sqnr_centered_db"), 1),
                         fmt((cle.get("float_check") or {}).get("max_abs")),
                         cle.get("judged") or "no equalized candidate scored"))
    moved = section.get("bias_float_moved")
    if moved:
        lines.append("Bias correction moved the float model it amounts to by max |diff| %s (cosine %s)." % (
            fmt(moved.get("max_abs")), fmt(moved.get("cosine"), 6)))
    return lines


def size_plot(float_bytes, int8_bytes):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not float_bytes or not int8_bytes:
        return None
    divisor, unit = (1e6, "MB") if float_bytes >= 1e6 else (1e3, "KB")
    figure, axis = plt.subplots(figsize=(4.6, 1.7))
    axis.barh([0, 1], [float_bytes / divisor, int8_bytes / divisor], color=["#9aa5b1", "#2e9d6a"], height=0.6)
    axis.set_yticks([0, 1])
    axis.set_yticklabels(["float32", "int8"])
    axis.invert_yaxis()
    for y, value in enumerate([float_bytes, int8_bytes]):
        axis.text(value / divisor, y, "  %s" % human_size(value), va="center", fontsize=9)
    axis.set_xlabel(unit)
    axis.set_xlim(0, float_bytes / divisor * 1.35)
    for side in ("top", "right"):
        axis.spines[side].set_visible(False)
    uri = _png(figure)
    plt.close(figure)
    return uri


def _short(name, limit=46):
    name = name.split(";")[0]
    return name if len(name) <= limit else "..." + name[-(limit - 3):]


def human_size(value):
    if value is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if abs(value) < 1024 or unit == "GB":
            return ("%d %s" % (value, unit)) if unit == "B" else ("%.1f %s" % (value, unit))
        value /= 1024.0
    return str(value)


def fmt(value, digits=4):
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value != value:
            return "nan"
        if value in (float("inf"), float("-inf")):
            return "∞" if value > 0 else "-∞"
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
            return "%.3g" % value
        return ("%." + str(digits) + "f") % value
    return str(value)


def layers_source(report):
    """Which model the per-layer debugger's figures are of (report.md and report.html say it)."""
    copied = (report.get("layers_info") or {}).get("values_from_written_file")
    chosen = (report.get("quantization") or {}).get("chosen")
    if copied and (copied.get("error") or not copied.get("copied")):
        return ("Layers of the calibrated model's own quantization, without %s's edits (they could not be put "
                "into the debugger's model: %s)." % (chosen, copied.get("error") or "; ".join(copied["skipped"][:2])))
    if copied:
        return ("Layers of the written file: its %d int8 weight and bias tensors (%s's edits) were put into the "
                "debugger's model." % (copied["copied"], chosen))
    return "Layers of the written file (the debugger quantizes the same calibrated model)." if chosen in (
        None, "plain") or not set(chosen.split("+")) & {"bias", "ebias", "gptq"} else \
        "Layers of the calibrated model's own quantization, without %s's edits." % chosen


# ------------------------------------------------------------------------------------------ rendering

def summary(report):
    """The headline cards: (title, value, detail, tone) with tone good|warn|bad|none."""
    cards = []
    parity = report["parity"]
    if parity:
        matched = sum(1 for p in parity if p.get("status") == "match")
        tolerated = sum(1 for p in parity if p.get("status") != "match" and p.get("tolerated"))
        tone = "good" if matched + tolerated == len(parity) else "bad"
        cards.append(("TF upgrade parity", "%d / %d match%s" % (matched, len(parity),
                                                                 ", %d tolerated" % tolerated if tolerated else ""),
                      ", ".join("%s: %s" % (p.get("env"), p.get("status")) for p in parity), tone))
    else:
        cards.append(("TF upgrade parity", "not run", "no parity_*.json in the run folder", "none"))
    tflite = report["tflite"]
    if tflite.get("status") in ("match", "mismatch"):
        cards.append(("Int8 fidelity", "centered SQNR %s dB, r %s" % (fmt(tflite.get("sqnr_centered_db"), 1),
                                                                     fmt(tflite.get("correlation"), 3)),
                      "%s vs %s reference; SQNR %s dB, cosine %s%s" % (
                          tflite.get("status"), tflite.get("reference_env", "float"), fmt(tflite.get("sqnr_db"), 1),
                          fmt(tflite.get("cosine"), 5),
                          "; " + "; ".join(tflite.get("reasons")) if tflite.get("reasons") else ""),
                      "good" if tflite.get("status") == "match" else "bad"))
    else:
        cards.append(("Int8 conversion", tflite.get("status") or "not run", tflite.get("error") or "", "bad"))
    evaluation = report.get("eval")
    if evaluation:
        low, high = evaluation.get("drop_ci95") or (None, None)
        cards.append(("Held-out accuracy", "%s %% → %s %%" % (fmt(evaluation.get("float_top1"), 1),
                                                           fmt(evaluation.get("int8_top1"), 1)),
                      "top-1 float → int8 on %d samples; drop %s points (95 %% CI %s to %s); %d flipped"
                      % (evaluation.get("samples"), fmt(evaluation.get("drop_points"), 2), fmt(low, 2), fmt(high, 2),
                         evaluation.get("flipped")),
                      "good" if (high is not None and high <= 1.0) else "warn"))
    npu = report["npu"]
    if npu:
        tone = {"ready": "good", "partial": "warn"}.get(npu.get("verdict"), "bad")
        cards.append(("NPU readiness", (npu.get("verdict") or "-").replace("_", " "),
                      "%d problem(s)" % len(npu.get("problems") or []) if npu.get("problems") else "every tensor int8",
                      tone))
        for entry in npu.get("targets") or []:
            cards.append(target_card(entry))
    if tflite.get("size_bytes"):
        detail = ""
        if tflite.get("float_size_bytes"):
            detail = "float32 %s (%.1fx smaller)" % (human_size(tflite["float_size_bytes"]),
                                                     tflite["float_size_bytes"] / float(tflite["size_bytes"]))
        cards.append(("Int8 model size", human_size(tflite["size_bytes"]), detail, "none"))
    return cards


def target_card(entry):
    """The summary card of one --npu-target entry: share of ops on the NPU, estimated time."""
    title = "NPU %s" % entry.get("target")
    if entry.get("status") != "ok":
        return title, "not compiled", entry.get("error") or "", "bad"
    value = "%d/%d ops on NPU" % (entry.get("ops_on_npu") or 0, entry.get("ops_total") or 0)
    detail = entry.get("compiler") or ""
    if entry.get("estimated_ms") is not None:
        detail = "~%s ms (Vela estimate, %s)" % (fmt(entry["estimated_ms"], 3), entry.get("system_config"))
    tone = "good" if not entry.get("ops_on_cpu") and not entry.get("ops_unknown") else (
        "bad" if entry.get("ops_on_cpu") else "warn")
    return title, value, detail, tone


def target_markdown(entry):
    """report.md's lines for one --npu-target entry."""
    lines = ["", "### %s — %s" % (entry.get("target"), entry.get("compiler")), ""]
    if entry.get("description"):
        lines.append(entry["description"] + ".")
        lines.append("")
    if entry.get("status") != "ok":
        lines.append("Not compiled: %s" % entry.get("error"))
        return lines
    lines += ["| key | value |", "|---|---|"]
    lines.append("| ops on the NPU | %s of %s (%s %%) |" % (
        entry.get("ops_on_npu"), entry.get("ops_total"), fmt(100.0 * (entry.get("npu_ops_fraction") or 0.0), 1)))
    if entry.get("npu_macs_fraction") is not None:
        lines.append("| MACs on the NPU | %s %% of %s |" % (fmt(100.0 * entry["npu_macs_fraction"], 1),
                                                          fmt(entry.get("model_macs"))))
    for key, label in (("estimated_ms", "estimated time (ms)"), ("system_config", "system config"),
                       ("memory_mode", "memory mode"), ("clock_hz", "NPU clock (Hz)"), ("sram_bytes", "SRAM (bytes)"),
                       ("dram_bytes", "DRAM (bytes)"), ("flash_bytes", "flash (bytes)"),
                       ("compiled_model", "compiled model")):
        if entry.get(key) is not None:
            lines.append("| %s | %s |" % (label, fmt(entry[key])))
    rows = [("CPU", o) for o in entry.get("ops_on_cpu") or []] + [("unknown", o) for o in entry.get("ops_unknown") or []]
    if rows:
        lines += ["", "| runs on | op | output tensor | reason |", "|---|---|---|---|"]
        for where, op in rows:
            lines.append("| %s | %s | %s | %s |" % (where, op.get("op"), str(op.get("name")).replace("|", "/"),
                                                     str(op.get("reason")).replace("|", "/")))
    else:
        lines += ["", "Every op runs on the NPU."]
    for note in entry.get("notes") or []:
        lines.append("")
        lines.append("> %s" % note)
    return lines


def io_rows(tflite):
    """Rows of the I/O tensor table with the float range each integer type can represent."""
    rows = []
    limits = {"int8": (-128, 127), "uint8": (0, 255)}
    for kind in ("inputs", "outputs"):
        for tensor in (tflite.get("io") or {}).get(kind) or []:
            row = {"kind": kind[:-1], "name": tensor.get("name"), "dtype": tensor.get("dtype"),
                   "shape": "×".join(str(d) for d in tensor.get("shape") or []),
                   "scale": tensor.get("scale"), "zero_point": tensor.get("zero_point"), "range": "float"}
            if tensor.get("scale") and tensor.get("dtype") in limits:
                low, high = limits[tensor["dtype"]]
                row["range"] = "[%s, %s]" % (fmt((low - tensor["zero_point"]) * tensor["scale"], 3),
                                             fmt((high - tensor["zero_point"]) * tensor["scale"], 3))
            rows.append(row)
    return rows


def render_markdown(report):
    model_name = os.path.basename(str(report["model"].get("path") or report["run_dir"]))
    lines = ["# tfbridge report: %s" % model_name, "", "Generated %s." % report["generated"], ""]
    for title, value, detail, _ in summary(report):
        lines.append("- **%s**: %s%s" % (title, value, (" (%s)" % detail) if detail else ""))
    if report["model"].get("source_kind") not in (None, "h5"):  # a TF 1.x graph: what was fixed to inference
        lines += ["", "## Graph source", "", "%s; fixed to inference before conversion:" % report["model"]["source_kind"]]
        lines += ["- %s" % t.get("what") for t in report["model"].get("transforms") or []] or ["- nothing"]
    lines += ["", "## Data", ""] + data_lines(report.get("data"))
    lines += ["", "## Parity across TensorFlow versions", ""]
    if report["parity"]:
        counts = sorted(set(p["samples"] for p in report["parity"] if p.get("samples")))
        if counts:  # --parity-samples: the cells compare the probe's first N samples; the int8 model all of it
            lines += ["Each cell ran the probe's first %s samples in its TensorFlow and compared every output "
                      "value with the origin's (`--parity-samples`; the int8 model below is judged on the whole "
                      "probe)." % " / ".join(str(c) for c in counts), ""]
        lines += ["| env | runtime | status | max abs | cosine | top-1 | note |", "|---|---|---|---|---|---|---|"]
        for p in report["parity"]:
            note = p.get("explanation") or p.get("error") or p.get("hint") or (
                "first divergent layer: %s" % p["first_divergent_layer"] if p.get("first_divergent_layer") else
                "first divergent node: %s" % p["first_divergent_node"] if p.get("first_divergent_node") else "")
            if p.get("tolerated"):
                note = "%s (tolerated)" % note
            lines.append("| %s | %s | %s | %s | %s | %s | %s |" % (
                p.get("env"), p.get("runtime", "-"), p.get("status"), fmt(p.get("max_abs")), fmt(p.get("cosine"), 6),
                fmt(p.get("top1_agreement"), 3), str(note).replace("|", "/")))
        lines += hazard_lines(report["parity"]) + migration_lines(report.get("migration"))
    else:
        lines.append("Not run for this model.")
    t = report["tflite"]
    lines += ["", "## Int8 TFLite", ""]
    lines += ["| key | value |", "|---|---|"]
    for key in ("path", "route", "input_dtype", "output_dtype", "status", "cosine", "top1_agreement",
                "top1_decisive", "max_abs_lsb", "sqnr_db", "size_bytes", "float_size_bytes", "runtime"):
        if key in t:
            lines.append("| %s | %s |" % (key, fmt(t.get(key))))
    if t.get("error"):
        lines += ["", "**Conversion error:** %s" % t["error"]]
    lines += quantization_lines(report)
    lines += ["", "## Accuracy on held-out data (--eval)", ""] + eval_lines(report.get("eval"))
    npu = report["npu"]
    lines += ["", "## NPU readiness", ""]
    if npu:
        lines.append("Verdict: **%s** (fully int8: %s)" % (npu.get("verdict"), fmt(npu.get("fully_int8"))))
        for problem in npu.get("problems") or []:
            lines.append("- %s" % problem)
        lines += ["", "| op | count |", "|---|---|"]
        for name, count in sorted((npu.get("ops") or {}).items()):
            lines.append("| %s | %d |" % (name, count))
        for entry in npu.get("targets") or []:
            lines += target_markdown(entry)
    else:
        lines.append("Not assessed.")
    lines += ["", "## Per-layer quantization error (RMSE / scale, LSB)", ""]
    layers = [layer for layer in report["layers"] if layer.get("rmse_over_scale") is not None]
    if layers:
        worst = sorted(layers, key=lambda r: r["rmse_over_scale"], reverse=True)[:10]
        lines += ["| layer | op | rmse/scale |", "|---|---|---|"]
        for layer in worst:
            lines.append("| %s | %s | %s%s |" % (layer["name"], layer.get("op", ""), fmt(layer["rmse_over_scale"], 3),
                                                 " ⚠" if layer.get("flagged") else ""))
        lines += ["", layers_source(report)]
    else:
        lines.append(report["layers_info"].get("error") or "Not computed.")
    lines += ["", "## Timings (s)", "", "| step | seconds |", "|---|---|"]
    for key, value in report["timings"].items():
        lines.append("| %s | %s |" % (key, fmt(value, 2)))
    sandbox = report.get("sandbox")
    if sandbox:
        lines += ["", "Steps ran %s (%s)." % (
            "without network" if sandbox.get("network") == "isolated" else "with network access",
            sandbox.get("method") or sandbox.get("reason") or "no sandbox")]
        if sandbox.get("filesystem") == "boxed":
            lines.append("Each step saw the file system read-only but for its run folder, with no home folder "
                         "(%s)." % sandbox.get("filesystem_method"))
        elif sandbox.get("filesystem"):
            lines.append("Steps ran with your user's file access (no file-system box: %s)."
                         % sandbox.get("filesystem_reason"))
    return "\n".join(lines) + "\n"


def data_lines(data):
    """report.md's data section: where calibration and probe came from, how many, their overlap."""
    if not data:
        return ["Not recorded."]
    calibration, probe = data.get("calibration") or {}, data.get("probe") or {}
    lines = ["| set | source | samples |", "|---|---|---|",
             "| calibration | `%s` | %s |" % (calibration.get("source", "-"), fmt(calibration.get("count"))),
             "| probe | `%s` | %s |" % (probe.get("source", "-"), fmt(probe.get("count")))]
    lines += ["", "Overlap (calibration samples equal to a probe sample, by content hash): **%s**."
              % fmt(data.get("overlap"))]
    if data.get("split"):
        lines.append("Split: %s." % data["split"])
    if calibration.get("note"):
        lines.append("Note: %s" % calibration["note"])
    return lines


def eval_rows(evaluation):
    """(model, environment, top-1, top-5) rows of the eval table: the origin's float, tf2's float, int8."""
    rows = []
    by_env = evaluation.get("float_by_env") or {}
    origin = evaluation.get("origin_env")
    if origin and origin != "tf2" and origin in by_env:
        rows.append(("float", "%s (origin)" % origin, by_env[origin].get("top1"), by_env[origin].get("top5")))
    rows.append(("float", "tf2" + (" (origin)" if origin in (None, "tf2") else ""), evaluation.get("float_top1"),
                 evaluation.get("float_top5")))
    rows.append(("int8", "tf2, %s" % evaluation.get("int8_runtime", "LiteRT"), evaluation.get("int8_top1"),
                 evaluation.get("int8_top5")))
    return rows


def eval_lines(evaluation):
    """report.md's eval section: the accuracy table, the drop with its interval, flips, losing classes."""
    if not evaluation:
        return ["Not run (give --eval with labelled held-out data)."]
    has_top5 = evaluation.get("float_top5") is not None
    lines = ["%d labelled samples, %d classes, from `%s`." % (evaluation.get("samples"), evaluation.get("classes"),
                                                              evaluation.get("source")), "",
             "| model | environment | top-1 %%%s |" % (" | top-5 %" if has_top5 else ""),
             "|---|---|---|%s" % ("---|" if has_top5 else "")]
    for model, env, top1, top5 in eval_rows(evaluation):
        lines.append("| %s | %s | %s |%s" % (model, env, fmt(top1, 2), (" %s |" % fmt(top5, 2)) if has_top5 else ""))
    low, high = evaluation.get("drop_ci95") or (None, None)
    lines += ["", "Int8 drop: **%s points** (95 %% CI %s to %s; %s), %d flipped top-1 predictions." % (
        fmt(evaluation.get("drop_points"), 2), fmt(low, 2), fmt(high, 2), evaluation.get("ci_method"),
        evaluation.get("flipped"))]
    if evaluation.get("origin_vs_tf2_float_flipped") is not None:
        lines.append("Float top-1 predictions that differ between %s and tf2: %d." % (
            evaluation.get("origin_env"), evaluation["origin_vs_tf2_float_flipped"]))
    overlap = evaluation.get("overlap") or {}
    if overlap.get("calibration") or overlap.get("probe"):
        lines.append("Warning: %d eval samples are calibration samples and %d are probe samples (by content hash)."
                     % (overlap.get("calibration", 0), overlap.get("probe", 0)))
    losing = evaluation.get("classes_losing_most") or []
    if losing:
        lines += ["", "| class that loses | samples | float top-1 % | int8 top-1 % | drop (points) |",
                  "|---|---|---|---|---|"]
        for row in losing:
            lines.append("| %s | %d | %s | %s | %s |" % (row["class"], row["samples"], fmt(row["float_top1"], 1),
                                                         fmt(row["int8_top1"], 1), fmt(row["drop_points"], 1)))
    else:
        lines += ["", "No class loses top-1 accuracy in int8."]
    return lines


def render_html(report):
    import jinja2

    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
                                     autoescape=jinja2.select_autoescape(["html", "j2"]))
    environment.filters["fmt"] = fmt
    environment.filters["size"] = human_size
    environment.filters["short"] = _short
    layers_info = report.get("layers_info") or {}
    tflite = report["tflite"]
    worst = sorted([r for r in report["layers"] if r.get("rmse_over_scale") is not None],
                   key=lambda r: r["rmse_over_scale"], reverse=True)[:8]
    return environment.get_template("report.html.j2").render(
        io_rows=io_rows(tflite),
        eval_rows=eval_rows(report["eval"]) if report.get("eval") else [],
        r=report,
        model_name=os.path.basename(str(report["model"].get("path") or report["run_dir"]).rstrip("/")),
        cards=summary(report),
        layer_plot=layer_plot(report["layers"], layers_info.get("flag_above", 0.7)),
        size_plot=size_plot(tflite.get("float_size_bytes"), tflite.get("size_bytes")),
        worst_layers=worst,
        quantization=report.get("quantization"),
        quantization_rows=quantization_rows(report),
        quantization_plot=quantization_plot(report.get("quantization")),
        flag_above=layers_info.get("flag_above", 0.7),
        layers_source=layers_source(report),
    )


GO = ".report-go"  # written by the host (converters.convert) when the staging folder holds every result
CANCELLED = ".report-cancelled"  # ... or when the run failed and this report is not wanted


def warm_imports():
    """Import what rendering needs (numpy, matplotlib, jinja2), so that a report started early
    (``--await-go``) has only its own work left when the host says go."""
    import jinja2  # noqa: F401
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401
    import numpy  # noqa: F401


def write(run_dir):
    """Write report.json, report.md and report.html into ``run_dir`` (atomically); return the report dict."""
    report = collect(run_dir)
    runfolder.write_json(os.path.join(run_dir, "report.json"), report)
    runfolder.write_text(os.path.join(run_dir, "report.md"), render_markdown(report))
    runfolder.write_text(os.path.join(run_dir, "report.html"), render_html(report))
    return report


def run(argv):
    import argparse

    parser = argparse.ArgumentParser(prog="python -m converters.tf2.report",
                                     description="Write report.json/.md/.html for a run folder (tf2 environment).")
    parser.add_argument("run_dir")
    parser.add_argument("--quiet", action="store_true", help="do not print the report's path")
    parser.add_argument("--debug", action="store_true")
    parser.add_argument("--await-go", action="store_true",
                        help="import first, then wait for the host's go (started before the run's last steps end)")
    args = parser.parse_args(argv)
    if args.await_go:  # issue 31: the imports overlap the run's last steps; the host says when the folder is full
        warm_imports()
        runfolder.await_file(args.run_dir, GO, failed=CANCELLED, waited_for="the run")
        if os.path.exists(os.path.join(args.run_dir, CANCELLED)):
            from converters.errors import Interrupted

            raise Interrupted("not needed: the run failed before its report.", step="report")
    report = write(args.run_dir)
    if not args.quiet:
        sys.stdout.write("report: %s\n" % os.path.join(os.path.abspath(args.run_dir), "report.html"))
    return 0 if report else 1


if __name__ == "__main__":
    from converters.cli import main

    sys.exit(main(run, step="report"))
