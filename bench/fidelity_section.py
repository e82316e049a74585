"""Benchmark section 9 (int8 fidelity on the ReLU6 MobileNet with a skewed probe).

A mixin of ``bench.run.Bench``, whose processes, inputs and conversions it uses.

For whom: ``nox -s bench`` (``bench/run.py``), host side: standard library only; rendered by ``bench.render.render_fidelity``.
"""

import json
import os
import shutil

# section 9: every candidate measured on its own (forced), in this order; a name this code's --quantize refuses
# (converters.options.quantize_candidates) is skipped with a note, so the list can name rewrites still on branches
FIDELITY_CANDIDATES = ("plain", "bias", "cle", "cle+bias", "ebias", "gptq", "gptq+ebias")
# the report keys of issue 30's fidelity measures (worst output); computed here when a report lacks them
FIDELITY_KEYS = ("sqnr_centered_db", "correlation")


class FidelitySection(object):
    # -- 9. int8 fidelity on a real ReLU6 MobileNet, skewed probe ----------------------------------------
    def fidelity(self):
        from converters import options

        data = os.path.join(self.work, "mobilenet")
        if not os.path.exists(os.path.join(data, "mobilenet.json")):
            self.in_env("tf1.13", "legacy_tf1", ["mobilenet", data])
        with open(os.path.join(data, "mobilenet.json")) as handle:
            info = json.load(handle)
        inputs = ["--calib", os.path.join(data, "calib.npy"), "--probe", os.path.join(data, "probe.npy"),
                  "--preprocess", info["preprocess"], "--eval", os.path.join(data, "eval.npz")]
        rows, notes = [], []
        for weights, extra in (("per-channel", []), ("per-tensor", ["--per-tensor"])):
            run = os.path.join(self.work, "fidelity_%s_auto" % weights)
            shutil.rmtree(run, ignore_errors=True)
            # the whole convert_legacy with the default search: the auto row, and the run folder (re-saved
            # model, probe, origin references and origin eval) every forced conversion below starts from
            result = self.on_host("converters.pipeline", [os.path.join(data, info["model"]), "--origin", "1.13",
                                                          "--no-keras3", "--quantize", "auto", "--out", run]
                                  + inputs + extra, cwd=self.work, check=False)
            if not os.path.exists(os.path.join(run, "report.json")):
                raise RuntimeError("convert_legacy on the MobileNet failed (exit %d); see %s" % (
                    result["exit"], result["log"]))
            with open(os.path.join(run, "report.json")) as handle:
                report = json.load(handle)
            row = self._fidelity_row(weights, "auto", run, report["tflite"], report.get("eval") or {},
                                     report.get("quantization") or {}, report.get("timings") or {})
            row["exit"] = result["exit"]
            rows.append(row)
            rows.append(dict(self._constant_row(weights, run, row.pop("constant")), candidate="constant output"))
            for name in FIDELITY_CANDIDATES:
                try:
                    name = options.quantize_candidates(name)[-1]  # its canonical spelling (rewrites' order)
                except ValueError as exc:
                    if weights == "per-channel":
                        notes.append("%s: not measured, this code's `--quantize` refuses it (%s)." % (name, exc))
                    continue
                stage = os.path.join(self.work, "fidelity_%s_%s" % (weights, name.replace("+", "_")))
                shutil.rmtree(stage, ignore_errors=True)
                step = self.in_env("tf2", "bench.forced_tf2", [name, run, "--out", stage, "--quantize", name]
                                   + inputs + extra, check=False)
                if step["exit"] != 0 or not os.path.exists(os.path.join(stage, "tflite.json")):
                    rows.append({"weights": weights, "candidate": name, "note": "conversion failed (exit %d)" %
                                 step["exit"]})
                    continue
                with open(os.path.join(stage, "tflite.json")) as handle:
                    tflite = json.load(handle)
                evaluation = {}
                if os.path.exists(os.path.join(stage, "eval.json")):
                    with open(os.path.join(stage, "eval.json")) as handle:
                        evaluation = json.load(handle)
                row = self._fidelity_row(weights, name, stage, tflite, evaluation, tflite.get("quantization") or {},
                                         tflite.get("timings") or {}, run=run)
                row.pop("constant", None)
                rows.append(row)
                self.log("fidelity %s %s: raw %s dB, centered %s dB, r %s" % (
                    weights, name, row.get("sqnr_db"), row.get("sqnr_centered_db"), row.get("correlation")))
        return {"model": info, "rows": rows, "notes": notes, "candidates": list(FIDELITY_CANDIDATES)}

    def _fidelity_row(self, weights, name, folder, tflite, evaluation, quantization, timings, run=None):
        """One row of section 9 from a run's report (``tflite``, ``eval``, ``quantization``, ``timings``); the
        centered SQNR and correlation from the report when it has them, else measured here on the probe."""
        measured = self.in_env("tf2", "bench.steps_tf2", ["fidelity", os.path.join(folder, "model_int8.tflite"),
                                                          run or folder])["json"]
        row = {"weights": weights, "candidate": name, "chosen": quantization.get("chosen"),
               "why": quantization.get("why"), "cle_dropped": (quantization.get("cle") or {}).get("dropped"),
               "sqnr_db": tflite.get("sqnr_db"), "cosine": tflite.get("cosine"),
               "top1_agreement": tflite.get("top1_agreement"), "status": tflite.get("status"),
               "float_top1": evaluation.get("float_top1"), "int8_top1": evaluation.get("int8_top1"),
               "eval_samples": evaluation.get("samples"), "probe_samples": tflite.get("probe_samples"),
               "convert_s": timings.get("model_to_int8"), "search_s": (quantization.get("timings") or {}).get("total"),
               # what the search ranks candidates by, on the calibration samples that judge them (score_db:
               # centered SQNR where resolvable; older reports: raw SQNR on a validation split)
               "validation": dict((c["name"], c.get("score_db", c.get("sqnr_db")))
                                  for c in quantization.get("candidates") or []),
               "constant": measured.get("constant"), "measured_here": measured}
        for key in FIDELITY_KEYS:
            if tflite.get(key) is not None:
                row[key], row[key + "_from"] = tflite[key], "report"
            else:
                row[key], row[key + "_from"] = measured.get(key), "bench"
        return row

    @staticmethod
    def _constant_row(weights, run, constant):
        """What an int8 file whose output is constant (the references' mean over the probe) would score."""
        constant = dict(constant or {})
        constant.pop("outputs", None)
        return dict(constant, weights=weights, run=run, sqnr_centered_db_from="bench", correlation_from="bench")
