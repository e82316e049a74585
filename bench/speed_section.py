"""Benchmark section 8 (plain, auto and the by-hand recipe alternated; the timeline).

A mixin of ``bench.run.Bench``, whose processes, inputs and conversions it uses.

For whom: ``nox -s bench`` (``bench/run.py``), host side: standard library only; rendered by ``bench.render.render_speed``.
"""

import hashlib
import json
import os
import shutil

from bench.measure import fmt, median, ratio


class SpeedSection(object):
    # -- 8. speed ---------------------------------------------------------------------------------
    def speed(self):
        """Issue 31: plain, auto and the by-hand recipe alternated (A B C, C B A, ...) on ResNet50-vggface
        (100 real calibration images, the probe 100 others) and on the demo (30 calibration images)."""
        name, label = self.config.models[0]
        model = self.zoo_model(name)
        run = self.legacy_run(name)  # the by-hand side's model.h5 (the same file re-saved)
        big = [model, "--origin", "1.13", "--calib", self.calib(), "--probe", self.probe(), "--probe-samples",
               str(self.config.probe), "--preprocess", self.config.preprocess, "--calib-samples",
               str(self.config.samples)] + self.config.pipeline_extra
        demo_cwd, demo_run, demo_calib = self.demo_run()
        models = [(label, big, self.work, run, self.calib(), self.config.preprocess, self.config.samples),
                  ("demo (face / non-face)", [], demo_cwd, demo_run, demo_calib, "unit", 30)]
        rows = []
        for model_label, args, cwd, hand_run, calib, preprocess, samples in models:
            taken = {"plain": [], "auto": [], "hand": []}
            tag = "speed_%d" % len(rows)
            # ResNet50: auto also with its quantizations in its own process (TFBRIDGE_QUANTIZE_WORKER=0), the
            # second process's share (the demo's model is below the worker's size: it never starts there)
            one = ("auto-one-process",) if not rows else ()
            # and the conversion step alone on the re-saved run folder (the recipe's scope: model on disk to int8
            # file, nothing else running), auto and plain
            alone = ("step-alone-auto", "step-alone-plain") if not rows else ()
            for side in one + alone:
                taken[side] = []
            for index in range(self.runs):
                order = ("auto",) + one + alone + ("plain", "hand")
                for side in (order if index % 2 == 0 else tuple(reversed(order))):
                    if side in alone:
                        quantize = side.rsplit("-", 1)[1]
                        sample = self.tfbridge_step(hand_run, calib, samples, "%s_%s_%d" % (tag, side, index),
                                                    ["--quantize", quantize])
                        taken[side].append({"window_s": sample["window_s"], "wall_s": sample["wall_s"],
                                            "peak_rss_mb": sample["rss_total_mb"] or sample["peak_rss_mb"]})
                        self.log("speed %s conversion step alone, --quantize %s, run %d: window %.1f s, wall %.1f s"
                                 % (model_label, quantize, index + 1, sample["window_s"], sample["wall_s"]))
                        continue
                    if side == "hand":
                        sample = self.by_hand(hand_run, "keras", "%s_%d" % (tag, index), calib=calib,
                                              preprocess=preprocess, samples=samples)
                        taken["hand"].append({"window_s": sample["window_s"], "wall_s": sample["wall_s"],
                                              "peak_rss_mb": sample["peak_rss_mb"]})
                        self.log("speed %s by hand run %d: window %.1f s, wall %.1f s" % (
                            model_label, index + 1, sample["window_s"], sample["wall_s"]))
                        continue
                    out = os.path.join(self.work, "%s_%s_%d" % (tag, side, index))
                    shutil.rmtree(out, ignore_errors=True)
                    quantize = "auto" if side == "auto-one-process" else side
                    result = self.on_host("converters.pipeline", args + ["--quantize", quantize, "--out", out], cwd=cwd,
                                          extra_env={"TFBRIDGE_QUANTIZE_WORKER": "0"} if side != quantize else None)
                    taken[side].append(speed_sample(out, result))
                    self.log("speed %s --quantize %s run %d: whole %.1f s, conversion step %s s" % (
                        model_label, side, index + 1, result["seconds"], taken[side][-1].get("step_s")))
            rows.append({"model": model_label, "samples": taken})
        return {"models": rows, "load_note": "the machine may have been shared with other work while this ran"}


def speed_sample(out, result):
    """One ``convert_legacy`` run of section 8: wall and peak RSS from the outside; from report.json the
    conversion step's window (model on disk to int8 file) and whole process, and the run's timeline."""
    with open(os.path.join(out, "report.json")) as handle:
        report = json.load(handle)
    timings = report.get("timings") or {}
    line = timings.get("timeline") or []
    step = [item for item in line if item["step"] == "tflite_convert" and item["phase"] == "step"]
    quantization = report.get("quantization") or {}
    with open(os.path.join(out, "model_int8.tflite"), "rb") as handle:
        sha = hashlib.sha256(handle.read()).hexdigest()
    return {"wall_s": result["seconds"], "peak_rss_mb": result["peak_rss_mb"],
            "window_s": timings.get("model_to_int8"), "step_s": round(step[0]["end"] - step[0]["start"], 2) if step else None,
            "sqnr_db": (report.get("tflite") or {}).get("sqnr_db"), "chosen": quantization.get("chosen"),
            "search_s": (quantization.get("timings") or {}).get("total"), "sha256": sha,
            "search_timings": quantization.get("timings"), "quantize_worker": quantization.get("quantize_worker"),
            "candidate_seconds": dict((c["name"], c.get("seconds")) for c in quantization.get("candidates") or []),
            "timeline": line, "critical_path": timings.get("critical_path")}


def _med(samples, key, *inner):
    """The median of ``sample[key][inner...]`` over ``samples`` (a missing value left out)."""
    values = []
    for sample in samples:
        value = sample.get(key)
        for name in inner:
            value = (value or {}).get(name)
        values.append(value)
    return median(values)


def render_inside(row):
    """Section 8: auto against auto with its quantizations in one process (when measured), the conversion step
    alone, and the medians of auto's search phases and candidates (report.json's ``quantization.timings``
    and candidates)."""
    samples = row["samples"]
    auto, one, hand = samples.get("auto") or [], samples.get("auto-one-process") or [], samples.get("hand") or []
    lines = []
    if one:
        lines += ["", "%s: `--quantize auto` with the quantizer's second process (the default) against auto with "
                  "every quantization in the converting process (`TFBRIDGE_QUANTIZE_WORKER=0`), alternated in the same "
                  "invocation: whole %s s against %s s (ratio %s), conversion step %s s against %s s, peak RSS %s MB "
                  "against %s MB; the worker quantized %s of the search's models." % (
                      row["model"], fmt(_med(auto, "wall_s"), "", 1), fmt(_med(one, "wall_s"), "", 1),
                      fmt(ratio(_med(auto, "wall_s"), _med(one, "wall_s")), "", 2),
                      fmt(_med(auto, "step_s"), "", 1), fmt(_med(one, "step_s"), "", 1),
                      fmt(_med(auto, "peak_rss_mb"), "", 0), fmt(_med(one, "peak_rss_mb"), "", 0),
                      fmt(_med(auto, "quantize_worker", "taken"), "", 0))]
    alone = dict((mode, samples.get("step-alone-" + mode) or []) for mode in ("auto", "plain"))
    if alone["auto"] and hand:
        lines += ["", "%s, the conversion step alone (`tflite_convert` on the re-saved run folder, nothing else "
                  "running: the recipe's scope), alternated with the rest: auto window %s s, process %s s (window / "
                  "recipe %s); plain window %s s, process %s s (window / recipe %s)." % tuple(
                      [row["model"]] + [fmt(value, "", digits) for mode in ("auto", "plain") for value, digits in (
                          (_med(alone[mode], "window_s"), 1), (_med(alone[mode], "wall_s"), 1),
                          (ratio(_med(alone[mode], "window_s"), _med(hand, "window_s")), 2))])]
    timed = [x for x in auto if x.get("search_timings")]
    if timed:
        phases = [key for key in ("calibrate", "plain_on_all", "candidates", "fit_all", "layers")
                  if key in timed[0]["search_timings"]]
        names = list(timed[0].get("candidate_seconds") or {})
        lines += ["", "%s, inside auto's search (medians, s): %s; candidates: %s (report.json `quantization.timings`; "
                  "`layers` runs in the report figures' thread)." % (
                      row["model"],
                      ", ".join("%s %s" % (key, fmt(_med(timed, "search_timings", key), "", 2)) for key in phases),
                      ", ".join("%s %s" % (name, fmt(_med(timed, "candidate_seconds", name), "", 2)) for name in names))]
    return lines
