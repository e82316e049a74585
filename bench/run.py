"""``nox -s bench``: tfbridge measured against the by-hand recipes; writes BENCHMARKS.md and BENCHMARKS.json.

Host side, standard library only. Every measured command runs in its own process: timed from the outside
(wall, and that process tree's largest peak RSS, ``bench/measure.py``) and, for conversions, from the
inside (the window from the model on disk to the int8 file written, reported by the process itself).
Sides are alternated (A B B A ...); medians are quoted; ratios are taken within one invocation.

Sections (``--only 2,4`` picks some; the others are kept as BENCHMARKS.json has them, and the whole
BENCHMARKS.md is re-rendered from it, ``bench/render.py``):

1. environment provisioning: cold / warm / reuse, uv and pip alternated;
2. conversion: keras-vggface ResNet50 and SENet50 without top (made in tf1.13), 100 real calibration
   images, vggface2 preprocessing: tfbridge's conversion step, the by-hand ``from_keras_model`` recipe,
   and the by-hand ``from_frozen_graph`` on tfbridge's own frozen graph (same route); plus ``--jobs 1``
   (sequential calibration) to check the sharded int8 file is byte-identical;
3. calibration time and peak memory for N = 50, 100, 300, 1000;
4. end to end: the demo (cold, warm, rerun) and the whole ``convert_legacy`` on ResNet50 against the
   by-hand conversion alone, an unchanged rerun, and the per-stage breakdown;
5. accuracy on held-out real data (scikit-learn's digits, the demo's LFW faces), per-channel and
   per-tensor, and int8 / float32 latency and size;
6. NPU estimates from Arm's Vela for the demo, ResNet50 and SENet50, per-channel and per-tensor;
7. int8 accuracy recovery (``--quantize``): the ablation on the separable digits CNN and its rescaled
   twin (``python -m legacy_tf1 separable``) and on section 5's digits CNN, per-channel and per-tensor,
   held-out top-1 of every candidate; and what ``auto`` costs: the whole ``convert_legacy`` on ResNet50
   and on the demo with ``--quantize plain`` against ``--quantize auto``, alternated.
8. speed (issue 31): the whole ``convert_legacy`` with ``--quantize plain`` and ``auto`` and the by-hand
   ``from_keras_model`` recipe, alternated in one invocation, on ResNet50-vggface and on the demo: the
   conversion step (its window, model on disk to int8 file, and its whole process), the whole run, peak
   RSS, ratios, and where the time goes (the run's timeline, ``converters.timeline``).

8. a fleet (``tfbridge fleet``): four small legacy CNNs (the zoo's standalone-Keras and tf.keras CNNs, two
   seeds each) from one manifest, ``--jobs 1`` against ``--jobs 2`` on one machine (alternated, fresh
   folders), an unchanged rerun of the whole fleet, and the time of ``fleet-report``'s merge.

``--quick``: a small model (zoo ``keras-cnn``, 32x32), few samples, one environment provisioned, to test
the machinery in minutes; it writes into the scratch folder unless ``--out`` is given.
"""

import argparse
import datetime
import hashlib
import json
import os
import platform
import re
import shutil
import sys
import tempfile
import time

from bench import provisioning, render
from bench.measure import run_measured
from envs import registry, venvs

NPU_TARGETS = ("ethos-u55-128", "ethos-u65-256", "imx8mp")
# section 7's ablation: every rewrite alone and combined (auto's four, and the range choice auto leaves out)
ABLATION = "bias,cle,cle+bias,cle+bias+mse"
from bench.fidelity_section import FidelitySection  # noqa: E402
from bench.fleet_section import FleetSection  # noqa: E402
from bench.speed_section import SpeedSection  # noqa: E402


class Config(object):
    """What is measured: the full benchmark, or ``--quick``'s small stand-ins."""

    def __init__(self, quick):
        self.quick = quick
        if quick:
            self.models = (("keras-cnn", "keras-cnn (quick)"),)
            self.size, self.preprocess, self.samples, self.probe = 32, "unit", 20, 10
            self.calibration_counts = (10, 20)
            self.environments = ("tf1.13",)
            self.pipeline_extra = ["--no-keras3"]
        else:
            self.models = (("vggface-resnet50", "ResNet50-vggface, no top"),
                           ("vggface-senet50", "SENet50-vggface, no top"))
            self.size, self.preprocess, self.samples, self.probe = 224, "vggface2", 100, 100
            self.calibration_counts = (50, 100, 300, 1000)
            self.environments = registry.TF_ENVIRONMENTS
            self.pipeline_extra = []


class Bench(SpeedSection, FidelitySection, FleetSection):
    def __init__(self, work, runs, config, log):
        self.work = work
        self.runs = runs
        self.config = config
        self.log = log
        self.logs = os.path.join(work, "logs")
        os.makedirs(self.logs, exist_ok=True)
        self.counter = 0

    # -- processes -------------------------------------------------------------------------------
    def _log_path(self, module):
        self.counter += 1
        return os.path.join(self.logs, "%03d-%s.log" % (self.counter, module.replace(".", "_")))

    def in_env(self, env_name, module, args, check=True, environ=None):
        """Run ``python -m module args`` in an environment, measured; its last JSON line as ``json``.
        ``environ``: variables added to the step's environment."""
        venvs.ensure(env_name, log=lambda *_: None)
        log_path = self._log_path(module)
        result = run_measured(venvs.module_command(env_name, module, args),
                              env=dict(venvs.run_environ(env_name), **(environ or {})),
                              cwd=venvs.REPO_ROOT, log_path=log_path)
        result["log"] = log_path
        if check and result["exit"] != 0:
            raise RuntimeError("%s %s failed (exit %d); see %s" % (env_name, module, result["exit"], log_path))
        with open(log_path) as handle:
            lines = [line for line in handle.read().splitlines() if line.startswith("{")]
        result["json"] = json.loads(lines[-1]) if lines else None
        return result

    def on_host(self, module, args, cwd=None, check=True, extra_env=None):
        log_path = self._log_path(module)
        environ = dict(os.environ, PYTHONPATH=venvs.REPO_ROOT, **(extra_env or {}))
        result = run_measured([sys.executable, "-m", module] + list(args), env=environ,
                              cwd=cwd or venvs.REPO_ROOT, log_path=log_path, tree=True)
        result["log"] = log_path
        with open(log_path) as handle:
            result["output"] = handle.read()
        if check and result["exit"] != 0:
            raise RuntimeError("%s %s failed (exit %d); see %s" % (module, " ".join(args), result["exit"], log_path))
        return result

    # -- shared inputs ---------------------------------------------------------------------------
    def images(self, count, seed):
        """``count`` real images (augmented scikit-image photographs) at the model size; seed 0: calibration,
        seed 1: the probe (disjoint by content)."""
        path = os.path.join(self.work, "images_%d_%d_seed%d.npy" % (count, self.config.size, seed))
        if not os.path.exists(path):
            self.in_env("tf2", "bench.steps_tf2", ["images", path, "--count", str(count),
                                                   "--size", str(self.config.size), "--seed", str(seed)])
        return path

    def calib(self, count=None):
        return self.images(count or self.config.samples, 0)

    def probe(self):
        return self.images(self.config.probe, 1)

    def zoo_model(self, name):
        model = os.path.join(self.work, "%s.h5" % name)
        if not os.path.exists(model):
            self.in_env("tf1.13", "legacy_tf1", ["zoo", name, "--out", model])
        return model

    def legacy_run(self, name):
        """A zoo model made in tf1.13 and re-saved / checked by ``verify_upgrade`` (a run folder)."""
        run = os.path.join(self.work, "run_%s" % name)
        if os.path.exists(os.path.join(run, "manifest.json")):
            return run
        self.on_host("converters.verify", [self.zoo_model(name), "--origin", "1.13", "--out", run, "--calib",
                                           self.calib(), "--probe", self.probe(), "--probe-samples",
                                           str(self.config.probe), "--preprocess", self.config.preprocess,
                                           "--no-keras3"])
        return run

    def demo_run(self):
        """The demo's run folder and its calibration folder (``convert_legacy`` with no model)."""
        cwd = os.path.join(self.work, "demo")
        run = os.path.join(cwd, "runs", "demo_face")
        if not os.path.exists(os.path.join(run, "model_int8.tflite")):
            os.makedirs(cwd, exist_ok=True)
            self.on_host("converters.pipeline", [], cwd=cwd)
        return cwd, run, os.path.join(cwd, "runs", ".demo-source", "calibration")

    # -- conversions -----------------------------------------------------------------------------
    def tfbridge_step(self, run, calib, samples, tag, extra=(), preprocess=None, environ=None):
        """tfbridge's conversion step on ``run``; the sample carries the in-process window and the files."""
        stage = os.path.join(self.work, "stage_%s" % tag)
        shutil.rmtree(stage, ignore_errors=True)
        # --quantize plain: the by-hand recipes calibrate with TFLite's min/max on every sample; the accuracy
        # recovery's cost is section 7's
        result = self.in_env("tf2", "converters.tf2.tflite_convert",
                             [run, "--out", stage, "--calib", calib, "--preprocess",
                              preprocess or self.config.preprocess, "--calib-samples", str(samples),
                              "--quantize", "plain"] + list(extra),
                             environ=environ)
        with open(os.path.join(stage, "tflite.json")) as handle:
            tflite = json.load(handle)
        timings = tflite.get("timings") or {}
        calibration = tflite.get("calibration_run") or {}
        total = None
        if calibration.get("peak_rss_mb") is not None:
            total = calibration["peak_rss_mb"] + sum(calibration.get("worker_peak_rss_mb") or [])
            total = max(total, result["peak_rss_mb"])
        return {"window_s": timings.get("model_to_int8"), "wall_s": result["seconds"],
                "peak_rss_mb": result["peak_rss_mb"], "rss_total_mb": total, "cosine": tflite.get("cosine"),
                "route": tflite.get("route"), "sha256": _sha256(os.path.join(stage, "model_int8.tflite")),
                "calibration_route": calibration.get("route"), "shards": calibration.get("shards"),
                "timings": timings, "stage": stage, "tflite": tflite}

    def by_hand(self, run, route, tag, evaluate=False, calib=None, preprocess=None, samples=None):
        out = os.path.join(self.work, "by_hand_%s.tflite" % tag)
        samples = samples or self.config.samples
        result = self.in_env("tf2", "bench.recipe_tf2", [run, out, "--route", route, "--calib", calib or self.calib(),
                                                         "--preprocess", preprocess or self.config.preprocess,
                                                         "--samples", str(samples)])
        if result["json"]["samples"] != samples:  # like with like: tfbridge calibrates on these
            raise RuntimeError("the by-hand recipe calibrated on %s samples, not %d" % (
                result["json"]["samples"], samples))
        sample = {"window_s": result["json"]["window_s"], "wall_s": result["seconds"],
                  "peak_rss_mb": result["peak_rss_mb"], "sha256": result["json"]["sha256"], "route": route,
                  "samples": result["json"]["samples"]}
        if evaluate:  # its int8 model against the origin's references on the run's probe (not timed)
            sample["cosine"] = self.in_env("tf2", "bench.steps_tf2", ["evaluate", out, run])["json"].get("cosine")
        return sample

    # -- 2. conversion ---------------------------------------------------------------------------
    def conversion(self):
        rows = []
        samples = self.config.samples
        for name, label in self.config.models:
            run = self.legacy_run(name)
            taken = {"tfbridge": [], "keras": [], "frozen_graph": []}
            for index in range(self.runs):
                order = ("tfbridge", "keras", "frozen_graph")
                for side in (order if index % 2 == 0 else tuple(reversed(order))):  # A B C, C B A, ...
                    tag = "%s_%s_%d" % (name, side, index)
                    if side == "tfbridge":
                        sample = self.tfbridge_step(run, self.calib(), samples, tag, ["--no-layer-debug"])
                        for key in ("tflite", "stage", "timings"):
                            sample.pop(key)
                    else:
                        sample = self.by_hand(run, side, tag, evaluate=(index == 0))
                    taken[side].append(sample)
                    self.log("conversion %s %s run %d: window %.1f s, wall %.1f s, %.0f MB" % (
                        name, side, index + 1, sample["window_s"] or -1, sample["wall_s"], sample["peak_rss_mb"]))
            # TFLite's own calibrator (the route tfbridge falls back to), in one process and in shards over
            # the cores: both files must equal the default route's
            calibrator = {"TFBRIDGE_CALIBRATION_ROUTE": "calibrator"}
            sequential = self.tfbridge_step(run, self.calib(), samples, "%s_jobs1" % name,
                                            ["--no-layer-debug", "--jobs", "1"], environ=calibrator)
            sharded = self.tfbridge_step(run, self.calib(), samples, "%s_sharded" % name,
                                         ["--no-layer-debug", "--jobs", str(max(2, os.cpu_count() or 2))],
                                         environ=calibrator)
            for checked in (sequential, sharded):
                for key in ("tflite", "stage", "timings"):
                    checked.pop(key)
            shas = set(sample["sha256"] for sample in taken["tfbridge"])
            self.log("conversion %s: the calibrator in one process %s the calibrator in %s shards; the default "
                     "route's file %s" % (name, "equals" if sequential["sha256"] == sharded["sha256"] else "DIFFERS from",
                                          sharded.get("shards"),
                                          "equals both" if shas == {sequential["sha256"], sharded["sha256"]}
                                          else "DIFFERS"))
            rows.append({"model": label, "zoo": name, "samples": taken,
                         "default_sha256": taken["tfbridge"][0]["sha256"] if len(shas) == 1 else None,
                         "sequential": sequential, "sharded": sharded,
                         "routes": {"tfbridge": taken["tfbridge"][0]["route"],
                                    "keras": "keras .h5, from_keras_model",
                                    "frozen_graph": "frozen_graph (tfbridge's model.pb), from_frozen_graph"}})
        return {"samples": samples, "images": "real photographs from scikit-image, augmented (bench/steps_tf2.py)",
                "preprocess": self.config.preprocess, "no_layer_debug": True, "models": rows}

    # -- 3. calibration --------------------------------------------------------------------------
    def calibration(self):
        name, label = self.config.models[0]
        run = self.legacy_run(name)
        counts = self.config.calibration_counts
        calib = self.calib(max(counts))
        rows = []
        for samples in counts:
            sample = self.tfbridge_step(run, calib, samples, "calib_%d" % samples, ["--no-layer-debug"])
            rows.append({"samples": samples, "window_s": sample["window_s"], "wall_s": sample["wall_s"],
                         "peak_rss_mb": sample["peak_rss_mb"]})
            self.log("calibration N=%d: window %.1f s, %.0f MB" % (samples, sample["window_s"] or -1,
                                                                   sample["peak_rss_mb"]))
        return {"model": label, "rows": rows}

    # -- 4. end to end ---------------------------------------------------------------------------
    def end_to_end(self):
        cwd = os.path.join(self.work, "e2e")
        shutil.rmtree(cwd, ignore_errors=True)
        os.makedirs(cwd)
        demo = []
        for kind in ("cold", "warm", "rerun"):
            if kind == "warm":
                shutil.rmtree(os.path.join(cwd, "runs", "demo_face"), ignore_errors=True)
            result = self.on_host("converters.pipeline", [], cwd=cwd)
            demo.append({"kind": kind, "wall_s": result["seconds"], "peak_rss_mb": result["peak_rss_mb"]})
            self.log("end to end demo %s: %.1f s" % (kind, result["seconds"]))
        name, label = self.config.models[0]
        model = self.zoo_model(name)
        run = self.legacy_run(name)  # only for the by-hand side's model.h5 (the same file re-saved)
        args = [model, "--origin", "1.13", "--calib", self.calib(), "--probe", self.probe(), "--probe-samples",
                str(self.config.probe), "--preprocess", self.config.preprocess, "--calib-samples",
                str(self.config.samples)] + self.config.pipeline_extra
        whole, by_hand, last = [], [], None
        for index in range(self.runs):
            for side in (("whole", "hand") if index % 2 == 0 else ("hand", "whole")):
                if side == "whole":
                    out = os.path.join(self.work, "e2e_%s_%d" % (name, index))
                    shutil.rmtree(out, ignore_errors=True)
                    result = self.on_host("converters.pipeline", args + ["--out", out], cwd=self.work)
                    whole.append({"wall_s": result["seconds"], "peak_rss_mb": result["peak_rss_mb"]})
                    last = (out, result["output"])
                    self.log("end to end %s convert_legacy run %d: %.1f s" % (name, index + 1, result["seconds"]))
                else:
                    sample = self.by_hand(run, "keras", "e2e_%s_%d" % (name, index))
                    by_hand.append(sample)
                    self.log("end to end %s by hand run %d: %.1f s" % (name, index + 1, sample["wall_s"]))
        rerun = self.on_host("converters.pipeline", args + ["--out", last[0]], cwd=self.work)
        self.log("end to end %s unchanged rerun: %.2f s" % (name, rerun["seconds"]))
        return {"demo": demo,
                "big": {"model": label, "args": ["MODEL.h5"] + args[1:], "convert_legacy": whole, "by_hand": by_hand,
                        "rerun": {"wall_s": rerun["seconds"], "peak_rss_mb": rerun["peak_rss_mb"]},
                        "breakdown": breakdown(last[0], last[1])}}

    # -- 5. accuracy -----------------------------------------------------------------------------
    def accuracy(self):
        models = []
        digits = os.path.join(self.work, "digits")
        made = self.in_env("tf1.13", "legacy_tf1", ["digits", digits])["json"]
        for weights, extra in (("per-channel", []), ("per-tensor", ["--per-tensor"])):
            out = os.path.join(self.work, "acc_digits_%s" % weights)
            shutil.rmtree(out, ignore_errors=True)
            self.on_host("converters.pipeline",
                         [os.path.join(digits, "model.h5"), "--origin", "1.13", "--calib",
                          os.path.join(digits, "calib.npy"), "--preprocess", "raw", "--eval",
                          os.path.join(digits, "eval.npz"), "--out", out] + extra + self.config.pipeline_extra,
                         cwd=self.work)
            models.append(accuracy_row("digits CNN (tf1.13, keras 2.2.4)",
                                       "scikit-learn digits, test split (%d of %d)" % (
                                           made["split"]["test"], made["split"]["test"] + made["split"]["train"]),
                                       weights, out))
        cwd = os.path.join(self.work, "acc_demo")
        shutil.rmtree(cwd, ignore_errors=True)
        os.makedirs(cwd)
        for weights, extra in (("per-channel", []), ("per-tensor", ["--per-tensor"])):
            out = os.path.join(cwd, "runs", "demo_face" + ("_pt" if extra else ""))
            self.on_host("converters.pipeline", ["--out", out] + extra, cwd=cwd)
            models.append(accuracy_row("demo face / non-face (tf1.13)", "LFW subset (scikit-image), eval folder",
                                       weights, out))
        for row in models:
            self.log("accuracy %s %s: float %.2f, int8 %.2f" % (row["model"], row["weights"], row["float_top1"],
                                                               row["int8_top1"]))
        latency = []
        demo_run = os.path.join(cwd, "runs", "demo_face")
        candidates = [("demo", demo_run)]
        stage = os.path.join(self.work, "stage_%s_tfbridge_0" % self.config.models[0][0])
        if os.path.isdir(stage):  # section 2 ran in this invocation: its int8 and float models
            candidates.append((self.config.models[0][1], stage))
        for model, folder in candidates:
            for kind, name in (("float32", "model_float.tflite"), ("int8", "model_int8.tflite")):
                path = os.path.join(folder, name)
                if os.path.exists(path):
                    measured = self.in_env("tf2", "bench.steps_tf2", ["latency", path])["json"]
                    latency.append(dict(measured, model=model, format=kind))
        return {"models": models, "latency": latency}

    # -- 7. int8 accuracy recovery ----------------------------------------------------------------
    def recovery(self):
        rows = []
        separable = os.path.join(self.work, "separable")
        self.in_env("tf1.13", "legacy_tf1", ["separable", separable])
        digits = os.path.join(self.work, "digits")
        if not os.path.exists(os.path.join(digits, "model.h5")):
            self.in_env("tf1.13", "legacy_tf1", ["digits", digits])
        models = (("separable CNN (tf1.13)", separable, "model.h5"),
                  ("separable CNN, channels rescaled (same float function)", separable, "model_rescaled.h5"),
                  ("digits CNN (tf1.13, section 5)", digits, "model.h5"))
        for label, folder, name in models:
            for weights, extra in (("per-channel", []), ("per-tensor", ["--per-tensor"])):
                out = os.path.join(self.work, "recovery_%s_%s_%s" % (os.path.basename(folder), name[:-3], weights))
                shutil.rmtree(out, ignore_errors=True)
                result = self.on_host("converters.pipeline", [
                    os.path.join(folder, name), "--origin", "1.13", "--calib", os.path.join(folder, "calib.npy"),
                    "--preprocess", "raw", "--eval", os.path.join(folder, "eval.npz"), "--no-keras3",
                    "--quantize", ABLATION, "--out", out] + extra, cwd=self.work)
                with open(os.path.join(out, "report.json")) as handle:
                    report = json.load(handle)
                quantization = report.get("quantization") or {}
                evaluation = report.get("eval") or {}
                rows.append({"model": label, "weights": weights, "float_top1": evaluation.get("float_top1"),
                             "int8_top1": evaluation.get("int8_top1"), "chosen": quantization.get("chosen"),
                             "why": quantization.get("why"), "candidates": quantization.get("candidates"),
                             "candidates_top1": evaluation.get("candidates_top1"),
                             "probe_sqnr_db": report["tflite"].get("sqnr_db"),
                             "probe_top1_agreement": report["tflite"].get("top1_agreement"),
                             "plain_probe": quantization.get("plain_probe"),
                             "search_s": (quantization.get("timings") or {}).get("total"),
                             "wall_s": result["seconds"]})
                self.log("recovery %s %s: plain %s %%, %s %s %%" % (
                    label, weights, (evaluation.get("candidates_top1") or {}).get("plain"), quantization.get("chosen"),
                    evaluation.get("int8_top1")))
        cost = []
        name, label = self.config.models[0]
        model = self.zoo_model(name)
        big = [model, "--origin", "1.13", "--calib", self.calib(), "--probe", self.probe(), "--probe-samples",
               str(self.config.probe), "--preprocess", self.config.preprocess, "--calib-samples",
               str(self.config.samples)] + self.config.pipeline_extra
        cwd = os.path.join(self.work, "recovery_demo")
        os.makedirs(cwd, exist_ok=True)
        for model_label, args in ((label, big), ("demo (face / non-face)", [])):
            samples = {"plain": [], "auto": []}
            for index in range(self.runs):
                for mode in (("plain", "auto") if index % 2 == 0 else ("auto", "plain")):
                    out = os.path.join(cwd if not args else self.work, "cost_%d_%s_%d" % (len(args), mode, index))
                    shutil.rmtree(out, ignore_errors=True)
                    result = self.on_host("converters.pipeline", args + ["--quantize", mode, "--out", out], cwd=cwd)
                    with open(os.path.join(out, "report.json")) as handle:
                        report = json.load(handle)
                    samples[mode].append({"wall_s": result["seconds"], "peak_rss_mb": result["peak_rss_mb"],
                                          "sqnr_db": report["tflite"].get("sqnr_db"),
                                          "chosen": (report.get("quantization") or {}).get("chosen"),
                                          "search_s": ((report.get("quantization") or {}).get(
                                              "timings") or {}).get("total")})
                    self.log("recovery cost %s --quantize %s run %d: %.1f s" % (
                        model_label, mode, index + 1, result["seconds"]))
            cost.append({"model": model_label, "samples": samples})
        return {"models": rows, "cost": cost}

    # -- 6. NPU estimates ------------------------------------------------------------------------
    def npu(self):
        _, demo_run, demo_calib = self.demo_run()
        sources = [("demo (face/non-face)", demo_run, demo_calib, "unit", 30)]
        for name, label in self.config.models:
            sources.append((label, self.legacy_run(name), self.calib(), self.config.preprocess, self.config.samples))
        entries = []
        for label, run, calib, preprocess, samples in sources:
            for weights, extra in (("per-channel", []), ("per-tensor", ["--per-tensor"])):
                targets = []
                for target in NPU_TARGETS:
                    targets += ["--npu-target", target]
                tag = "npu_%s_%s" % (re.sub(r"[^a-z0-9]+", "_", label.lower()), weights)
                sample = self.tfbridge_step(run, calib, samples, tag, ["--no-layer-debug"] + targets + extra,
                                            preprocess=preprocess)
                with open(os.path.join(sample["stage"], "npu.json")) as handle:
                    readiness = json.load(handle)
                entries.append({"model": label, "weights": weights, "targets": readiness.get("targets") or [],
                                "fully_int8": readiness.get("fully_int8"), "int8_cosine": sample["cosine"],
                                "size_bytes": sample["tflite"].get("size_bytes"),
                                "weight_granularity": sample["tflite"].get("weights"),
                                "npu_targets_s": sample["timings"].get("npu_targets")})
                self.log("npu %s %s: %s" % (label, weights, ", ".join(
                    "%s %s ms" % (t["target"], t.get("estimated_ms")) for t in entries[-1]["targets"])))
        how = ("tfbridge's conversion step (`converters.tf2.tflite_convert RUN --npu-target %s [--per-tensor] "
               "--no-layer-debug`) on the run folders of sections 2 and 4 (the demo's, and keras-vggface 0.6's models "
               "built with `python -m legacy_tf1 zoo NAME` in tf1.13: random deterministic weights). Vela %s with no "
               "`--system-config`: its default system configuration and memory mode per accelerator, named in each "
               "row. The times are Vela's estimates for that reference system, not measurements on a board. \"ops on "
               "NPU\" counts the `.tflite`'s own ops; imx8mp: each op against the VX delegate's op table (no time "
               "estimate). Off-chip: DRAM for the U65 configuration, flash for the U55 one." % (
                   " --npu-target ".join(NPU_TARGETS), _vela_version(entries)))
        return {"how": how, "entries": entries}


def _vela_version(entries):
    for entry in entries:
        for target in entry["targets"]:
            if (target.get("compiler") or "").startswith("Arm Vela"):
                return target["compiler"].split()[-1]
    return "?"


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


STEP_LINE = re.compile(r"^\s{2}(\S+)\s+(host|tf[\w.]+)\s+([\d.]+) s\s+(\w+)")


def breakdown(run, output):
    """Where a convert_legacy run's time went: the step table it printed, steps.json, report.json timings."""
    steps = [{"step": m.group(1), "env": m.group(2), "seconds": float(m.group(3)), "status": m.group(4)}
             for m in (STEP_LINE.match(line) for line in output.splitlines()) if m]
    result = {"steps": steps}
    for name, key, field in (("steps.json", "stages", "seconds"), ("report.json", "timings", "timings"),
                             ("tflite.json", "calibration_run", "calibration_run")):
        path = os.path.join(run, name)
        if os.path.exists(path):
            with open(path) as handle:
                result[key] = json.load(handle).get(field) or {}
    return result


def accuracy_row(model, data, weights, run):
    with open(os.path.join(run, "report.json")) as handle:
        report = json.load(handle)
    evaluation = report.get("eval") or {}
    layers = sorted(report.get("layers") or [], key=lambda layer: -(layer.get("rmse_over_scale") or 0))
    return {"model": model, "data": data, "weights": weights, "samples": evaluation.get("samples"),
            "float_top1": evaluation.get("float_top1"), "int8_top1": evaluation.get("int8_top1"),
            "drop_points": evaluation.get("drop_points"), "drop_ci95": evaluation.get("drop_ci95"),
            "flipped": evaluation.get("flipped"), "classes_losing_most": evaluation.get("classes_losing_most"),
            "overlap": (report.get("data") or {}).get("overlap"), "cosine": (report.get("tflite") or {}).get("cosine"),
            "layers": [dict((k, layer.get(k)) for k in ("name", "op", "rmse_over_scale")) for layer in layers[:5]]}


def machine():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    memory = ""
    try:
        with open("/proc/meminfo") as handle:
            memory = "%.0f GiB" % (int(handle.readline().split()[1]) / 1024.0 / 1024.0)
    except (OSError, ValueError, IndexError):
        pass
    return "%s, %d cores, %s, %s" % (cpu, os.cpu_count() or 0, memory, platform.platform())


def versions():
    return "; ".join("%s: %s" % (name, ", ".join(env.requirements[:2]))
                     for name, env in registry.ENVIRONMENTS.items() if name != "host")


def read_document(path):
    if not os.path.exists(path):
        return render.empty_document()
    with open(path) as handle:
        return json.load(handle)


def write_atomic(path, text):
    temporary = path + ".tmp"
    with open(temporary, "w") as handle:
        handle.write(text)
    os.replace(temporary, path)


def main(argv):
    parser = argparse.ArgumentParser(prog="nox -s bench --")
    parser.add_argument("--runs", type=int, default=3, help="repetitions of each alternated measurement (default 3)")
    parser.add_argument("--only", default="1,2,3,4,5,6,7,8,9,10", help="sections to run, e.g. 2,4 (default: all)")
    parser.add_argument("--quick", action="store_true",
                        help="small model, few samples: tests the machinery (writes into --work unless --out)")
    parser.add_argument("--out", default=None, help="BENCHMARKS.md to write (default: the repository's)")
    parser.add_argument("--json", default=None, help="the raw samples (default: --out with .json)")
    parser.add_argument("--work", default=None, help="scratch folder (default: a temporary one, removed)")
    parser.add_argument("--render", action="store_true",
                        help="measure nothing: rewrite --out from --json (after a change of bench/render.py)")
    args = parser.parse_args(argv)
    if args.render:
        out = os.path.abspath(args.out or os.path.join(venvs.REPO_ROOT, "BENCHMARKS.md"))
        json_path = os.path.abspath(args.json or os.path.splitext(out)[0] + ".json")
        write_atomic(out, render.render(read_document(json_path)))
        return 0
    only = [number.strip() for number in args.only.split(",") if number.strip()]
    unknown = [number for number in only if number not in render.TITLES]
    if unknown:
        parser.error("unknown section(s) %s; known: %s" % (", ".join(unknown), ", ".join(sorted(render.TITLES, key=int))))
    log = lambda message: print("bench: " + message, flush=True)  # noqa: E731
    work = os.path.abspath(args.work or tempfile.mkdtemp(prefix="tfbridge-bench-"))
    os.makedirs(work, exist_ok=True)
    out = os.path.abspath(args.out or (os.path.join(work, "BENCHMARKS.md") if args.quick
                                       else os.path.join(venvs.REPO_ROOT, "BENCHMARKS.md")))
    json_path = os.path.abspath(args.json or os.path.splitext(out)[0] + ".json")
    config = Config(args.quick)
    bench = Bench(work, args.runs, config, log)
    started = time.time()
    now = datetime.datetime.now(datetime.timezone.utc)
    invocation_id = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    invocation = {"date": now.strftime("%Y-%m-%d %H:%M UTC"), "command": "nox -s bench -- " + " ".join(argv),
                  "runs": args.runs, "quick": args.quick, "only": only, "machine": machine(),
                  "versions": versions()}
    functions = {"1": lambda: provisioning.measure(args.runs, log, config.environments), "2": bench.conversion,
                 "3": bench.calibration, "4": bench.end_to_end, "5": bench.accuracy, "6": bench.npu,
                 "7": bench.recovery, "8": bench.speed, "9": bench.fidelity, "10": bench.fleet}
    document = read_document(json_path)
    measured = {}
    for number in sorted(only, key=int):
        log("section %s: %s" % (number, render.TITLES[number]))
        measured[number] = functions[number]()
        invocation["minutes"] = (time.time() - started) / 60.0
        document = render.merge(read_document(json_path), invocation_id, invocation, measured)
        write_atomic(json_path, json.dumps(document, indent=1, sort_keys=True) + "\n")  # progress is kept
        write_atomic(out, render.render(document))
    log("wrote %s and %s in %.0f min" % (out, json_path, (time.time() - started) / 60.0))
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
