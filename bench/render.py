"""BENCHMARKS.md from BENCHMARKS.json: merging a run's sections into the stored ones, and rendering.

Pure functions on plain data (no TensorFlow, no subprocess, no clock): ``bench/run.py`` measures and
calls ``merge`` then ``render``; ``tests/unit/test_bench_render.py`` checks them.

The JSON document is the record: every section keeps the raw samples it was computed from and the
invocation that measured it, so a partial run (``--only 2,4``) replaces only its own sections and the
whole Markdown file is re-rendered from the document (nothing in BENCHMARKS.md is written by hand).

    {"schema": 1,
     "invocations": {"<id>": {"date", "command", "minutes", "runs", "quick", "only", "machine", "versions"}},
     "sections": {"1": {"invocation": "<id>", "data": {...}}, ...}}
"""

import copy

from bench import speed_section
from bench.measure import fmt, median, ratio
from converters import timeline

SCHEMA = 1

TITLES = {
    "1": "Environment provisioning",
    "2": "Conversion: tfbridge's step against the by-hand recipes",
    "3": "Calibration samples",
    "4": "End to end `convert_legacy`",
    "5": "Accuracy on held-out real data, latency and size",
    "6": "NPU estimates from Arm's Vela (`--npu-target`)",
    "7": "Int8 accuracy recovery (`--quantize`)",
    "8": "Speed: plain, auto and the by-hand recipe side by side, and where the time goes",
    "9": "Int8 fidelity on a real ReLU6 MobileNet with a skewed probe (issue 30)",
    "10": "A fleet of models (`tfbridge fleet`): `--jobs 1` against `--jobs 2`, and the merge",
}

TARGETS = {  # issue 13's table: figure -> target
    "convert_ratio": 0.5,
    "whole_ratio": 1.2,
    "rss_ratio": 1.0,
    "rerun_ratio": 0.05,
}


def empty_document():
    return {"schema": SCHEMA, "invocations": {}, "sections": {}}


def merge(document, invocation_id, invocation, sections):
    """A new document: ``document`` with ``sections`` ({number: data}) measured by ``invocation``.

    Sections not in ``sections`` are kept as they were (with their own invocation); invocations no
    section refers to any more are dropped. ``document`` is not modified.
    """
    merged = copy.deepcopy(document) if document else empty_document()
    merged.setdefault("invocations", {})
    merged.setdefault("sections", {})
    merged["schema"] = SCHEMA
    merged["invocations"][invocation_id] = copy.deepcopy(invocation)
    for number, data in sections.items():
        merged["sections"][str(number)] = {"invocation": invocation_id, "data": copy.deepcopy(data)}
    used = set(section["invocation"] for section in merged["sections"].values())
    merged["invocations"] = dict((key, value) for key, value in merged["invocations"].items() if key in used)
    return merged


def _verdict(value, target):
    if value is None:
        return "-"
    return "yes" if value <= target else "**no**"


def _mb(value):
    return fmt(value, " MB", 0)


def _s(value, digits=1):
    return fmt(value, " s", digits)


# -- section data -> figures --------------------------------------------------------------------------

def conversion_figures(row):
    """Medians and ratios of one model of section 2 (raw samples in ``row['samples']``)."""
    samples = row["samples"]

    def side(name, key):
        return median([s.get(key) for s in samples.get(name, [])])

    figures = {}
    for name in ("tfbridge", "keras", "frozen_graph"):
        figures[name] = {"window": side(name, "window_s"), "wall": side(name, "wall_s"),
                         "rss": side(name, "peak_rss_mb"), "rss_total": side(name, "rss_total_mb"),
                         "cosine": side(name, "cosine"), "runs": len(samples.get(name, []))}
    figures["ratio_keras"] = ratio(figures["tfbridge"]["window"], figures["keras"]["window"])
    figures["ratio_graph"] = ratio(figures["tfbridge"]["window"], figures["frozen_graph"]["window"])
    figures["ratio_wall_keras"] = ratio(figures["tfbridge"]["wall"], figures["keras"]["wall"])
    tfbridge_rss = figures["tfbridge"]["rss_total"] or figures["tfbridge"]["rss"]
    figures["ratio_rss"] = ratio(tfbridge_rss, figures["keras"]["rss"])
    # TFLite's calibrator forced (TFBRIDGE_CALIBRATION_ROUTE=calibrator): in one process (--jobs 1) and in
    # shards; the default route's file must equal both
    sequential = row.get("sequential") or {}
    sharded = row.get("sharded") or {}
    first = (samples.get("tfbridge") or [{}])[0]
    default_sha = row.get("default_sha256", row.get("sharded_sha256"))
    figures["sequential"] = sequential
    figures["sharded_run"] = sharded
    figures["sharded"] = (sharded.get("shards") or 0) > 1  # says something only if that run did shard
    figures["identical"] = (sequential.get("sha256") is not None
                            and sequential.get("sha256") == sharded.get("sha256"))
    figures["default_identical"] = default_sha is not None and default_sha == sequential.get("sha256")
    figures["calibration"] = "%s, %s shard(s)" % (first.get("calibration_route") or "?", first.get("shards") or "?")
    figures["sequential_calibration"] = "%s, %s shard(s)" % (sequential.get("calibration_route") or "?",
                                                            sequential.get("shards") or "?")
    figures["sharded_calibration"] = "%s, %s shard(s)" % (sharded.get("calibration_route") or "?",
                                                         sharded.get("shards") or "?")
    by_hand = [s.get("sha256") for s in samples.get("frozen_graph", [])]
    figures["same_as_same_route"] = bool(by_hand) and first.get("sha256") in by_hand
    return figures


def sharding_verdict(figures):
    """(value, met) of issue 13's "sharded vs sequential" row."""
    if not figures["sharded"]:
        return ("not tested: the calibrator run did not shard (%s)" % figures["sharded_calibration"], "-")
    both = figures["identical"] and figures["default_identical"]
    return ("identical (%s; the default route's file too: %s)" % (
        figures["sharded_calibration"], "yes" if figures["default_identical"] else "no")
        if figures["identical"] else "differ", "yes" if both else "**no**")


def whole_figures(data):
    """Ratios of section 4's big-model rows: whole convert_legacy / by-hand, rerun / cold."""
    big = data.get("big") or {}
    whole = median([s["wall_s"] for s in big.get("convert_legacy", [])])
    by_hand_wall = median([s["wall_s"] for s in big.get("by_hand", [])])
    by_hand_window = median([s["window_s"] for s in big.get("by_hand", [])])
    rerun = (big.get("rerun") or {}).get("wall_s")
    return {"whole": whole, "by_hand_wall": by_hand_wall, "by_hand_window": by_hand_window,
            "ratio": ratio(whole, by_hand_wall), "ratio_window": ratio(whole, by_hand_window),
            "rerun": rerun, "rerun_ratio": ratio(rerun, whole)}


# -- rendering ------------------------------------------------------------------------------------------

def render(document):
    """The whole BENCHMARKS.md (a string) from ``document``."""
    sections = document.get("sections") or {}
    invocations = document.get("invocations") or {}
    lines = ["# tfbridge benchmarks", "",
             "Written by `nox -s bench` (bench/run.py) from BENCHMARKS.json, which holds the raw samples of every "
             "figure below; do not edit by hand. A partial run (`nox -s bench -- --only 2,4`) re-measures those "
             "sections and keeps the others as they were.", ""]
    if any(invocations[key].get("quick") for key in invocations):
        lines += ["**QUICK MODE** (`--quick`): a small model and few samples, to test the benchmark's machinery. "
                  "These figures say nothing about tfbridge's speed.", ""]
    lines += ["Invocations:", ""]
    for key in sorted(invocations, key=lambda k: invocations[k].get("date", "")):
        inv = invocations[key]
        numbers = sorted(n for n, s in sections.items() if s["invocation"] == key)
        lines.append("- `%s`: %s, %s min, `%s`, runs %s%s; sections %s. Machine: %s." % (
            key, inv.get("date"), fmt(inv.get("minutes"), "", 0), inv.get("command"), inv.get("runs"),
            ", quick" if inv.get("quick") else "", ", ".join(numbers), inv.get("machine")))
    versions = [invocations[k].get("versions") for k in invocations if invocations[k].get("versions")]
    if versions:
        lines += ["", "Versions: %s." % versions[-1]]
    lines += ["", "Each process is timed from the outside (wall: start to exit, and its peak RSS from `os.wait4`: "
              "the largest process of its tree) and from the inside (the window from the model on disk to the "
              "int8 file written, after `import tensorflow`, measured in the process itself). Sides are run "
              "alternately (A B B A ...); figures are medians; ratios compare samples of one invocation. The machine "
              "has 2 cores and may have been shared with other work: absolute times are noisy, the alternation "
              "keeps the ratios fair.", ""]
    lines += render_issue13(sections, invocations)
    renderers = {"1": render_provisioning, "2": render_conversion, "3": render_calibration,
                 "4": render_end_to_end, "5": render_accuracy, "6": render_npu, "7": render_recovery,
                 "8": render_speed, "9": render_fidelity, "10": render_fleet}
    for number in sorted(TITLES, key=int):
        lines.append("## %s. %s" % (number, TITLES[number]))
        lines.append("")
        section = sections.get(number)
        if section is None:
            lines += ["Not measured yet: `nox -s bench -- --only %s`." % number, ""]
            continue
        lines.append("Measured by invocation `%s` (%s)." % (
            section["invocation"], (invocations.get(section["invocation"]) or {}).get("date")))
        lines.append("")
        lines += renderers[number](section["data"])
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def render_issue13(sections, invocations):
    """Issue 13's table, computed from sections 2 and 4 (the invocation of each figure named)."""
    lines = ["## Issue 13's figures", "",
             "| figure | value | target | met | from |", "|---|---:|---:|---|---|"]
    conversion = sections.get("2")
    if conversion:
        for row in conversion["data"].get("models", []):
            figures = conversion_figures(row)
            lines.append("| int8 conversion (model on disk to int8 file) / by-hand `from_keras_model`, %s | %s | "
                         "<= %.1f | %s | section 2, `%s` |" % (
                             row["model"], fmt(figures["ratio_keras"], "", 2), TARGETS["convert_ratio"],
                             _verdict(figures["ratio_keras"], TARGETS["convert_ratio"]), conversion["invocation"]))
        for row in conversion["data"].get("models", []):
            figures = conversion_figures(row)
            lines.append("| peak RSS of conversion / by-hand, %s | %s | <= %.1f | %s | section 2, `%s` |" % (
                row["model"], fmt(figures["ratio_rss"], "", 2), TARGETS["rss_ratio"],
                _verdict(figures["ratio_rss"], TARGETS["rss_ratio"]), conversion["invocation"]))
        for row in conversion["data"].get("models", []):
            figures = conversion_figures(row)
            value, met = sharding_verdict(figures)
            lines.append("| sharded vs sequential calibration (TFLite's calibrator), %s | %s | byte-identical | %s | "
                         "section 2, `%s` |" % (row["model"], value, met, conversion["invocation"]))
    end_to_end = sections.get("4")
    if end_to_end and end_to_end["data"].get("big"):
        figures = whole_figures(end_to_end["data"])
        model = end_to_end["data"]["big"].get("model")
        lines.append("| whole `convert_legacy` (envs ready, empty run folder) / by-hand conversion alone (process), "
                     "%s | %s | <= %.1f | %s | section 4, `%s` |" % (
                         model, fmt(figures["ratio"], "", 2), TARGETS["whole_ratio"],
                         _verdict(figures["ratio"], TARGETS["whole_ratio"]), end_to_end["invocation"]))
        lines.append("| unchanged rerun / cold run, %s | %s | <= %.2f | %s | section 4, `%s` |" % (
            model, fmt(figures["rerun_ratio"], "", 3), TARGETS["rerun_ratio"],
            _verdict(figures["rerun_ratio"], TARGETS["rerun_ratio"]), end_to_end["invocation"]))
    if len(lines) == 4:
        lines.append("| (sections 2 and 4 not measured yet) | - | - | - | - |")
    used = set(s["invocation"] for n, s in sections.items() if n in ("2", "4"))
    if len(used) > 1:
        lines += ["", "Sections 2 and 4 come from different invocations: each ratio is still taken within one."]
    return lines + [""]


def render_provisioning(data):
    rows = data.get("rows", [])
    lines = ["cold: empty package cache, every wheel downloaded; warm: wheels in the cache; reuse: environment "
             "ready and lock unchanged (what every later `nox -s ...` pays). uv and pip alternate per run "
             "(uv, pip, pip, uv, ...).", "",
             "| environment | installer | cold | warm | reuse | cold uv / pip | runs |",
             "|---|---|---:|---:|---:|---:|---:|"]
    by_key = dict(((row["env"], row["installer"]), row) for row in rows)
    for row in rows:
        cold = median(row["cold"])
        uv, pip = by_key.get((row["env"], "uv")), by_key.get((row["env"], "pip"))
        share = "-"
        if row["installer"] == "uv" and uv and pip:
            share = fmt(ratio(median(uv["cold"]), median(pip["cold"])), "", 2)
        lines.append("| %s | %s | %s | %s | %s | %s | %d |" % (
            row["env"], row["installer"], _s(cold), _s(median(row["warm"])), _s(median(row["reuse"]), 2), share,
            len(row["cold"])))
    return lines


def render_conversion(data):
    lines = ["%s calibration samples (%s), %s preprocessing, int8 I/O, the same samples on every side. Sides: "
             "**tfbridge** (its conversion step `converters.tf2.tflite_convert` on the run folder of `verify_upgrade`; "
             "route: the frozen graph `model.pb` re-saved in tf1.13; calibration by the route `tflite.json` "
             "`calibration_run` names: the interpreter recording TFLite's calibrator statistics on the cores, or "
             "the calibrator itself in shards); "
             "**by hand, keras** (`bench/recipe_tf2.py --route keras`: tf-keras loads `model.h5`, "
             "`TFLiteConverter.from_keras_model`: the article's recipe); **by hand, same route** (`--route "
             "frozen_graph`: `tf.compat.v1.lite.TFLiteConverter.from_frozen_graph` on tfbridge's own `model.pb`, "
             "one process). *window*: model on disk to int8 file written, timed inside the process "
             "(tfbridge: `timings.model_to_int8`); *wall*: the whole process, TF import included (tfbridge's also "
             "checks the int8 model on the probe, and runs the per-layer analysis unless `--no-layer-debug`: %s). "
             "Run order per repetition: tfbridge, keras, same route, then reversed." % (
                 data.get("samples"), data.get("images"), data.get("preprocess"),
                 "skipped here" if data.get("no_layer_debug") else "included"), "",
             "| model | side | route | window | wall | peak RSS (largest process) | peak RSS (all processes) | "
             "cosine vs origin | runs |", "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for row in data.get("models", []):
        figures = conversion_figures(row)
        for name, label in (("tfbridge", "tfbridge"), ("keras", "by hand"), ("frozen_graph", "by hand, same route")):
            side = figures[name]
            route = row.get("routes", {}).get(name, name)
            lines.append("| %s | %s | %s | %s | %s | %s | %s | %s | %d |" % (
                row["model"], label, route, _s(side["window"]), _s(side["wall"]), _mb(side["rss"]),
                _mb(side["rss_total"] or side["rss"]), fmt(side["cosine"], "", 4), side["runs"]))
    lines += ["", "| model | tfbridge / by hand (window) | tfbridge / same route (window) | "
              "tfbridge / by hand (wall) | peak RSS tfbridge (all) / by hand | tfbridge calibration | "
              "calibrator, one process: window | calibrator, shards: window | calibrator: shards = one process | "
              "default route = calibrator | same bytes as by hand, same route |",
              "|---|---:|---:|---:|---:|---|---|---|---|---|---|"]
    for row in data.get("models", []):
        figures = conversion_figures(row)
        lines.append("| %s | %s | %s | %s | %s | %s | %s, %s | %s, %s | %s | %s | %s |" % (
            row["model"], fmt(figures["ratio_keras"], "", 2), fmt(figures["ratio_graph"], "", 2),
            fmt(figures["ratio_wall_keras"], "", 2), fmt(figures["ratio_rss"], "", 2), figures["calibration"],
            figures["sequential_calibration"], _s(figures["sequential"].get("window_s")),
            figures["sharded_calibration"], _s(figures["sharded_run"].get("window_s")),
            "yes" if figures["identical"] else "**no**", "yes" if figures["default_identical"] else "**no**",
            "yes" if figures["same_as_same_route"] else "no"))
    lines += ["", "The same-route row separates the route's share of the speed-up (graph instead of Keras model) "
              "from tfbridge's own (its calibration, float model reused). *tfbridge calibration*: `tflite.json` "
              "`calibration_run` (route and shards). *calibrator*: tfbridge's step with TFLite's own calibrator forced "
              "(`TFBRIDGE_CALIBRATION_ROUTE=calibrator`), once with `--jobs 1` (one process) and once in shards over "
              "the cores; sharding is tested only when that run did shard. *same bytes as by hand, same route*: whether tfbridge's int8 file equals the one TFLite's "
              "own calibrator makes from the same graph and samples (if not, the cosines above say how close they "
              "are). Peak RSS (all processes): the step's own peak plus each calibration shard's peak (an upper bound "
              "of what runs at once)."]
    return lines


def render_calibration(data):
    rows = data.get("rows", [])
    lines = ["tfbridge's conversion step on %s, one run each." % data.get("model"), "",
             "| N | window | step wall | peak RSS |", "|---:|---:|---:|---:|"]
    for row in rows:
        lines.append("| %d | %s | %s | %s |" % (row["samples"], _s(row.get("window_s")), _s(row["wall_s"]),
                                               _mb(row["peak_rss_mb"])))
    by_n = dict((row["samples"], row) for row in rows)
    if len(rows) >= 2:
        low, high = by_n[min(by_n)], by_n[max(by_n)]
        growth = ratio(high["peak_rss_mb"], low["peak_rss_mb"])
        if growth:
            lines += ["", "Peak RSS growth from N = %d to %d: %+.1f %% (calibration streams its samples)." % (
                low["samples"], high["samples"], 100 * (growth - 1))]
    return lines


def render_end_to_end(data):
    lines = []
    demo = data.get("demo") or []
    if demo:
        lines += ["The demo (`nox -s convert_legacy` with no model). cold: no demo model yet (trained in tf1.13), "
                  "environments ready; warm: demo model made, new run folder; rerun: unchanged inputs.", "",
                  "| run | wall |", "|---|---:|"]
        for row in demo:
            lines.append("| %s | %s |" % (row["kind"], _s(row["wall_s"])))
        lines.append("")
    big = data.get("big")
    if big:
        figures = whole_figures(data)
        lines += ["%s: the whole `convert_legacy` (environments ready, empty run folder: re-save, parity cells, "
                  "conversion, per-layer analysis, report; `%s`) against the by-hand conversion alone "
                  "(`bench/recipe_tf2.py --route keras`, one process), alternated (convert_legacy, by hand, by hand, "
                  "convert_legacy, ...); then one unchanged rerun into the same folder." % (
                      big.get("model"), " ".join(big.get("args", []))), "",
                  "| figure | value |", "|---|---:|",
                  "| convert_legacy, whole process (median of %d) | %s |" % (len(big.get("convert_legacy", [])),
                                                                           _s(figures["whole"])),
                  "| by hand, whole process (median of %d) | %s |" % (len(big.get("by_hand", [])),
                                                                     _s(figures["by_hand_wall"])),
                  "| by hand, window (model on disk to int8 file) | %s |" % _s(figures["by_hand_window"]),
                  "| convert_legacy / by hand (process) | %s |" % fmt(figures["ratio"], "", 2),
                  "| convert_legacy / by hand (window) | %s |" % fmt(figures["ratio_window"], "", 2),
                  "| unchanged rerun | %s |" % _s(figures["rerun"], 2),
                  "| rerun / cold | %s |" % fmt(figures["rerun_ratio"], "", 3), ""]
        breakdown = big.get("breakdown") or {}
        steps = breakdown.get("steps") or []
        if steps:
            lines += ["Per-stage breakdown of the last convert_legacy run (each step is a process in its "
                      "environment; steps of one stage may run side by side, `--jobs`):", "",
                      "| step | environment | seconds |", "|---|---|---:|"]
            for step in steps:
                lines.append("| %s | %s | %s |" % (step["step"], step["env"], fmt(step["seconds"], "", 1)))
            lines.append("")
        for label, key in (("Stages (`steps.json`)", "stages"), ("Inside the steps (`report.json` `timings`)",
                                                                 "timings")):
            values = breakdown.get(key) or {}
            if values:
                lines.append("%s: %s." % (label, ", ".join("%s %s" % (k, _s(v, 2)) for k, v in sorted(values.items()))))
        calibration = breakdown.get("calibration_run") or {}
        if calibration:
            lines.append("Calibration (`tflite.json` `calibration_run`): %s." % ", ".join(
                "%s %s" % (k, v) for k, v in sorted(calibration.items()) if not isinstance(v, (list, dict))))
    return lines


def render_accuracy(data):
    lines = ["Each model converted by `convert_legacy` per-channel and with `--per-tensor`, and evaluated with "
             "`--eval` on labelled samples it was neither trained nor calibrated on (`report.json` `eval`): top-1 "
             "in percent, the int8 drop in points with its 95 % interval (Newcombe, paired), predictions that "
             "flipped, and the largest per-layer quantization error (`report.json` `layers`: RMSE in LSBs of the "
             "tensor's scale; above 0.7 is flagged). Target: int8 within 1 point of float.", "",
             "| model | data | weights | samples | float top-1 | int8 top-1 | drop | 95 % interval | flipped | "
             "within 1 point | largest per-layer error |", "|---|---|---|---:|---:|---:|---:|---|---:|---|---|"]
    notes = []
    for row in data.get("models", []):
        low, high = row.get("drop_ci95") or (None, None)
        within = row.get("drop_points") is not None and abs(row["drop_points"]) <= 1.0
        worst = (row.get("layers") or [None])[0]
        lines.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            row["model"], row["data"], row["weights"], row.get("samples"), fmt(row.get("float_top1"), "", 2),
            fmt(row.get("int8_top1"), "", 2), fmt(row.get("drop_points"), "", 2),
            "[%s, %s]" % (fmt(low, "", 2), fmt(high, "", 2)), row.get("flipped"), "yes" if within else "**no**",
            "%.2f LSB (%s)" % (worst["rmse_over_scale"], worst["op"]) if worst else "-"))
        if not within and row.get("layers"):
            notes.append("%s, %s: %.2f points lost; the per-layer analysis (`report.json` `layers`, RMSE in LSBs of "
                         "each tensor's scale) ranks %s highest." % (
                             row["model"], row["weights"], row["drop_points"], ", ".join(
                                 "`%s` (%s, %.2f LSB)" % (layer["name"], layer["op"], layer["rmse_over_scale"])
                                 for layer in row["layers"][:3])))
    lines += [""] + notes + ([""] if notes else [])
    for row in data.get("models", []):
        if row.get("note"):
            lines.append("%s: %s" % (row["model"], row["note"]))
    latency = data.get("latency") or []
    if latency:
        lines += ["", "| model | format | median latency (2 threads, %s invocations) | size |" % latency[0].get("runs"),
                  "|---|---|---:|---:|"]
        for row in latency:
            lines.append("| %s | %s | %s | %s |" % (row["model"], row["format"], "%.3g ms" % row["median_ms"],
                                                     "%.2f MB" % (row["size_bytes"] / 1e6)))
    return lines


def render_npu(data):
    lines = [data.get("how", ""), "",
             "| model | weights | target | ops on NPU | estimated ms | SRAM | off-chip | Vela system config, memory "
             "mode, NPU clock | MACs (Vela) | Vela compile |", "|---|---|---|---:|---:|---:|---:|---|---:|---:|"]
    spread = {}
    for entry in data.get("entries", []):
        for target in entry.get("targets", []):
            ops = "%s/%s" % (target.get("ops_on_npu"), target.get("ops_total"))
            if target.get("estimated_ms") is None:  # an op table (imx8mp), not a compiler: ops only
                lines.append("| %s | %s | %s | %s | - | - | - | %s | - | - |" % (
                    entry["model"], entry["weights"], target["target"], ops, target.get("compiler")))
                continue
            flash, dram = target.get("flash_bytes") or 0, target.get("dram_bytes") or 0
            off_chip = "%.2f MiB %s" % ((flash or dram) / 1048576.0, "flash" if flash else "DRAM")
            clock = target.get("clock_hz")
            lines.append("| %s | %s | %s | %s | %.4g | %.1f KiB | %s | %s, %s, %s MHz | %s | %s |" % (
                entry["model"], entry["weights"], target["target"], ops, target["estimated_ms"],
                (target.get("sram_bytes") or 0) / 1024.0, off_chip, target.get("system_config"),
                target.get("memory_mode"), "%.0f" % (clock / 1e6) if clock else "-", _macs(target.get("macs")),
                _s(target.get("compile_seconds"), 2)))
            spread.setdefault((entry["model"], target["target"]), []).append(target["estimated_ms"])
    by_model = {}
    for (model, _), values in spread.items():
        if len(values) == 2 and max(values) > 0:
            by_model[model] = max(by_model.get(model, 0.0), abs(values[0] - values[1]) / max(values))
    if by_model:
        lines += ["", "Per-channel against per-tensor weights, largest difference of Vela's estimate over the "
                  "targets: %s. Ethos-U requantizes per output channel in hardware either way; the per-tensor "
                  "speed-up `--per-tensor` is meant for is VeriSilicon's (i.MX 8M Plus), which Vela cannot "
                  "estimate." % ", ".join("%s %.1f %%" % (model, 100 * value) for model, value in by_model.items())]
    if data.get("note"):
        lines += ["", data["note"]]
    return lines


def _macs(value):
    if not value:
        return "-"
    return "%.2f G" % (value / 1e9) if value >= 1e9 else "%.3g M" % (value / 1e6)


def render_recovery(data):
    """Section 7: the ablation (held-out top-1 of every candidate, validation SQNR) and what auto costs."""
    lines = ["Each model converted once with `--quantize bias,cle,cle+bias,cle+bias+mse --eval` (`convert_legacy`: every "
             "candidate built, auto's four and a range choice; calibrated on the train split, "
             "200 samples: 160 calibrate, the last 40 are the validation split that scores the candidates); top-1 on "
             "the held-out test digits (540, never seen by training, calibration or the choice). \"SQNR\" is on the "
             "validation split; \"probe\" is the held-out probe (plain's file measured on the same probe).", "",
             "| model | weights | float top-1 % | plain | bias | cle | cle+bias | cle+bias+mse | chosen | probe SQNR plain -> chosen (dB) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|---|"]
    for row in data.get("models", []):
        top1 = row.get("candidates_top1") or {}
        sqnr = dict((c["name"], c.get("sqnr_db")) for c in row.get("candidates") or [])

        def cell(name):
            return "%s (%s dB)" % (fmt(top1.get(name), "", 2), fmt(sqnr.get(name), "", 1)) if name in top1 else "-"

        plain = row.get("plain_probe") or {}
        lines.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s -> %s |" % (
            row["model"], row["weights"], fmt(row.get("float_top1"), "", 2), cell("plain"), cell("bias"), cell("cle"),
            cell("cle+bias"), cell("cle+bias+mse"), row.get("chosen"), fmt(plain.get("sqnr_db"), "", 1),
            fmt(row.get("probe_sqnr_db"), "", 1)))
    lines += ["", "Why each was chosen:", ""]
    for row in data.get("models", []):
        lines.append("- %s, %s: **%s**: %s (search %s s)." % (row["model"], row["weights"], row.get("chosen"),
                                                           row.get("why"), fmt(row.get("search_s"), "", 1)))
    lines += ["", "What `--quantize auto` costs: the whole `convert_legacy`, `--quantize plain` and `auto` alternated "
              "(plain auto, auto plain, ...), wall time of the process (medians):", "",
              "| model | plain (s) | auto (s) | auto / plain | search inside auto (s) | chosen | SQNR plain -> auto (dB) |",
              "|---|---:|---:|---:|---:|---|---|"]
    for entry in data.get("cost", []):
        plain, auto = entry["samples"]["plain"], entry["samples"]["auto"]
        median_plain = median([s["wall_s"] for s in plain])
        median_auto = median([s["wall_s"] for s in auto])
        lines.append("| %s | %s | %s | %s | %s | %s | %s -> %s |" % (
            entry["model"], _s(median_plain), _s(median_auto), fmt(ratio(median_auto, median_plain), "", 2),
            _s(median([s["search_s"] for s in auto if s.get("search_s") is not None])),
            ", ".join(sorted(set(str(s.get("chosen")) for s in auto))),
            fmt(median([s["sqnr_db"] for s in plain]), "", 1), fmt(median([s["sqnr_db"] for s in auto]), "", 1)))
    return lines


def render_speed(data):
    """Section 8 (issue 31): plain, auto and the by-hand recipe, medians and ratios; the timeline of a run."""
    lines = ["The whole `convert_legacy` with `--quantize plain` and `--quantize auto` (the default) and the by-hand "
             "recipe (`bench/recipe_tf2.py`: `from_keras_model` + representative data set on the re-saved `.h5`), "
             "alternated in one invocation (auto plain hand, hand plain auto, ...); medians. \"window\": the model on "
             "disk to the int8 file written, measured inside the process (the conversion step's "
             "`timings.model_to_int8`, the recipe's own); \"step\": the conversion step's whole process "
             "(`tflite_convert`: the window plus the checks, the layer debugger, `--eval`); \"whole\": "
             "`convert_legacy` from start to exit (for the recipe, its process). Peak RSS: the recipe's process; for "
             "plain and auto, the largest sum over `convert_legacy` and all its steps' processes at once (sampled "
             "every 0.2 s from /proc: `bench/measure.py`). Issue 31's targets: auto's step "
             "window <= 0.5x and whole <= 1.0x the recipe, auto <= 1.3x plain.", ""]
    if data.get("load_note"):
        lines += ["Note: %s." % data["load_note"], ""]
    lines += ["| model | recipe window / wall (s) | plain window / step / whole (s) | auto window / step / whole (s) | "
              "auto window / recipe | auto whole / recipe | auto / plain (whole) | peak RSS recipe / plain / auto (MB) "
              "| runs |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in data.get("models", []):
        taken = row["samples"]
        hand, plain, auto = taken.get("hand") or [], taken.get("plain") or [], taken.get("auto") or []

        def med(samples, key):
            return median([sample.get(key) for sample in samples])

        def n(value, digits=1):  # the column headers carry the units
            return fmt(value, "", digits)

        lines.append("| %s | %s / %s | %s / %s / %s | %s / %s / %s | %s | %s | %s | %s / %s / %s | %d |" % (
            row["model"], n(med(hand, "window_s")), n(med(hand, "wall_s")),
            n(med(plain, "window_s")), n(med(plain, "step_s")), n(med(plain, "wall_s")),
            n(med(auto, "window_s")), n(med(auto, "step_s")), n(med(auto, "wall_s")),
            fmt(ratio(med(auto, "window_s"), med(hand, "window_s")), "", 2),
            fmt(ratio(med(auto, "wall_s"), med(hand, "wall_s")), "", 2),
            fmt(ratio(med(auto, "wall_s"), med(plain, "wall_s")), "", 2),
            n(med(hand, "peak_rss_mb"), 0), n(med(plain, "peak_rss_mb"), 0), n(med(auto, "peak_rss_mb"), 0),
            min(len(hand), len(plain), len(auto))))
    for row in data.get("models", []):
        lines += speed_section.render_inside(row)
    for row in data.get("models", []):
        for mode in ("auto", "plain"):
            samples = [sample for sample in row["samples"].get(mode) or [] if sample.get("timeline")]
            if not samples:
                continue
            ordered = sorted(samples, key=lambda sample: sample["wall_s"])
            sample = ordered[len(ordered) // 2]  # the median run
            lines += ["", "Timeline of a median `--quantize %s` run, %s (%.1f s whole; seconds since the run "
                      "started; `#` a step's process, `=` a phase inside it):" % (mode, row["model"], sample["wall_s"]),
                      "", "```", timeline.gantt(sample["timeline"]), "```", ""]
            path = sample.get("critical_path") or timeline.critical_path(sample["timeline"])
            if path:
                lines.append("Critical path: %s." % " -> ".join(
                    "%s (%s-%s s)" % (entry["step"], fmt(entry.get("waited_until", entry["start"]), "", 1),
                                      fmt(entry["end"], "", 1)) for entry in path))
                lines += ["", "Where the time goes on it: each step of the critical path from when it could start "
                          "(it was started, or what it waited for was there) to its end, and its longest phases "
                          "(waits left out):", ""]
                for entry in path:
                    ready = entry.get("waited_until", entry["start"])
                    lines.append("- %s: %s s" % (entry["step"], fmt(entry["end"] - ready, "", 1)))
                    own = sorted((item for item in sample["timeline"] if item["step"] == entry["step"]
                                  and item["phase"] != "step" and not item.get("waits_on")),
                                 key=lambda item: item["start"] - item["end"])
                    for item in own[:4]:
                        lines.append("  - %s: %s s" % (item["phase"], fmt(item["end"] - item["start"], "", 1)))
    return lines


def _marked(row, key, digits):
    """A figure of section 9; '*' when the benchmark measured it because the report lacked the key."""
    value = row.get(key)
    if value is None:
        return "-"
    return fmt(value, "", digits) + ("*" if row.get(key + "_from") == "bench" and row.get("candidate") !=
                                     "constant output" else "")


def render_fidelity(data):
    """Section 8: every candidate (forced) and auto on the MobileNet's probe, per-channel and per-tensor."""
    info = data.get("model") or {}
    split = info.get("split") or {}
    top1 = info.get("float_top1_tf1") or {}
    lines = ["%s (`python -m legacy_tf1 mobilenet`), trained in tf1.13 on %s: %s training / calibration images, "
             "a probe of %s that is %s %% %s, %s labelled held-out images for `--eval` (disjoint; float top-1 in "
             "tf1.13: held out %s %%, probe %s %%; training %s s). Preprocessing `%s`." % (
                 info.get("architecture", "MobileNetV1"), info.get("data", "real images"), split.get("calibration"),
                 split.get("probe"), fmt(100.0 * info["probe_dominant_share"] if info.get("probe_dominant_share")
                                         is not None else None, "", 0),
                 "faces" if info.get("probe_dominant_class") == "face" else info.get("probe_dominant_class"),
                 split.get("eval"), fmt(top1.get("eval"), "", 1), fmt(top1.get("probe"), "", 1),
                 fmt(info.get("train_seconds"), "", 0), info.get("preprocess")), "",
             "Per mode: one `convert_legacy --quantize auto` (the *auto* row: the file the search chose), then "
             "each candidate through tfbridge's conversion step on that run folder with the search's choice "
             "forced to it (`bench/forced_tf2.py`: the candidate's own file, whatever the search would have "
             "kept). Figures on the probe against the tf1.13 references, worst output: raw SQNR, **centered "
             "SQNR** (10 log10(sum (ref - mean_ref)^2 / sum (int8 - ref)^2), mean_ref: each output's mean over "
             "the probe), **correlation** (Pearson, of the centered outputs), cosine, top-1 agreement; `--eval` "
             "top-1 of float (tf2) and int8 on the held-out images; *convert*: the step's model-to-int8 window "
             "(`timings.model_to_int8`, the candidates' search included); *search score*: what the search ranked the "
             "candidate by on the calibration samples that judged it (`quantization.candidates[*].score_db`: "
             "centered SQNR where the output's variation is resolvable, else raw). *constant output*: a file whose "
             "output is the references' mean, for every sample: the score a flattened model gets. "
             "* = measured by the benchmark (`bench/steps_tf2.py fidelity`) because the report had no such key.",
             "",
             "| weights | candidate | raw SQNR (dB) | centered SQNR (dB) | correlation | cosine | top-1 agr. | "
             "float / int8 top-1 % | convert (s) | search score (dB) | note |",
             "|---|---|---:|---:|---:|---:|---:|---|---:|---:|---|"]
    # a candidate's validation SQNR: from its own run, else as auto's search scored it (--quantize plain alone
    # holds out no validation samples)
    searched = dict((row["weights"], row.get("validation") or {}) for row in data.get("rows", [])
                    if row.get("candidate") == "auto")
    for row in data.get("rows", []):
        name = row.get("candidate")
        if row.get("note") and row.get("sqnr_db") is None:
            lines.append("| %s | %s | - | - | - | - | - | - | - | - | %s |" % (row["weights"], name, row["note"]))
            continue
        note = ""
        validation = (row.get("validation") or {}).get(name, searched.get(row["weights"], {}).get(name))
        if name == "auto":
            note = "chose **%s**" % row.get("chosen")
            validation = (row.get("validation") or {}).get(row.get("chosen"))
        elif name != "constant output" and row.get("chosen") not in (None, name):
            note = "not built (%s written)" % row.get("chosen") + ("; cle dropped" if row.get("cle_dropped") else "")
        elif name not in ("constant output", "plain", "auto"):
            note = "forced" if "forced by the benchmark" in (row.get("why") or "") else "chosen by the search too"
        evaluation = "-" if row.get("float_top1") is None else "%s / %s" % (fmt(row.get("float_top1"), "", 1),
                                                                           fmt(row.get("int8_top1"), "", 1))
        lines.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            row["weights"], "**%s**" % name if name == "auto" else name, fmt(row.get("sqnr_db"), "", 1),
            _marked(row, "sqnr_centered_db", 1), _marked(row, "correlation", 4), fmt(row.get("cosine"), "", 4),
            fmt(row.get("top1_agreement"), "", 3), evaluation, fmt(row.get("convert_s"), "", 1),
            fmt(validation, "", 1), note))
    lines += ["", "What auto chose and why:", ""]
    for row in data.get("rows", []):
        if row.get("candidate") == "auto":
            lines.append("- %s: **%s**: %s%s" % (row["weights"], row.get("chosen"), row.get("why"),
                                                 (" (cle: %s)" % row["cle_dropped"]) if row.get("cle_dropped") else ""))
    for note in data.get("notes") or []:
        lines.append("- " + note)
    return lines


def render_fleet(data):
    """Section 10: the same fleet with --jobs 1 and --jobs 2 on one machine, an unchanged rerun, the merge."""
    import statistics

    one = [sample["wall_s"] for sample in data["jobs"].get("1", [])]
    two = [sample["wall_s"] for sample in data["jobs"].get("2", [])]
    median_one = statistics.median(one) if one else None
    median_two = statistics.median(two) if two else None
    merge = [sample["wall_s"] for sample in data.get("merge", [])]
    verdicts = sorted(set(v for sample in data["jobs"].get("1", []) + data["jobs"].get("2", [])
                          for v in sample.get("verdicts", [])))
    lines = ["`tfbridge fleet` of one manifest of %d small legacy CNNs (%s; %dx%d inputs, %s calibration samples), "
             "into a fresh folder each time, `--jobs 1` and `--jobs 2` alternated (each model then runs "
             "`convert_legacy --jobs 2` and `--jobs 1`: the machine's 2 cores shared among the models at once). "
             "Verdicts: %s. Wall time of the whole fleet process (it prepares the environments once, runs the "
             "models, writes fleet.json and fleet.html)." % (
                 len(data["models"]), ", ".join(data["models"]), data["size"], data["size"], data["samples"],
                 ", ".join(verdicts) or "-"), "",
             "| | wall (median) | runs | per model (median) |", "|---|---:|---|---:|"]
    for jobs, values in (("1", one), ("2", two)):
        per_model = [s for sample in data["jobs"].get(jobs, []) for s in sample.get("model_s", []) if s is not None]
        lines.append("| `--jobs %s` | %s | %s | %s |" % (
            jobs, _s(statistics.median(values)) if values else "-", ", ".join(_s(v) for v in values),
            _s(statistics.median(per_model)) if per_model else "-"))
    lines += ["", "- `--jobs 2` / `--jobs 1`: **%s** of the time." % (
        fmt(ratio(median_two, median_one), "", 2) if median_one and median_two else "-"),
        "- unchanged rerun of the whole fleet (every model reused by `convert_legacy`'s own rule): %s." % _s(
            (data.get("rerun") or {}).get("wall_s")),
        "- `fleet-report` merging the fleet folder into fleet.json and fleet.html: %s (median of %s)." % (
            _s(statistics.median(merge), 2) if merge else "-", ", ".join(_s(v, 2) for v in merge))]
    return lines
