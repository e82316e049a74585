"""Benchmark section 10 (a fleet of models: --jobs 1 against --jobs 2, the merge).

A mixin of ``bench.run.Bench``, whose processes, inputs and conversions it uses.

For whom: ``nox -s bench`` (``bench/run.py``), host side: standard library only; the figures are rendered by ``bench.render.render_fleet``.
"""

import json
import os
import shutil


class FleetSection(object):
    # -- 10. a fleet ------------------------------------------------------------------------------
    def fleet(self):
        """Section 8: one manifest of four small legacy CNNs, the fleet with --jobs 1 and --jobs 2."""
        size = self.config.size
        models = []
        for name in ("keras-cnn", "tfkeras-cnn"):
            for seed in (0, 1):
                path = os.path.join(self.work, "fleet_%s_%d.h5" % (name, seed))
                if not os.path.exists(path):
                    self.in_env("tf1.13", "legacy_tf1", ["zoo", name, "--out", path, "--seed", str(seed),
                                                         "--input-shape", "%dx%dx3" % (size, size)])
                models.append(path)
        manifest = os.path.join(self.work, "fleet.toml")
        defaults = {"origin": "1.13", "calib": self.calib(), "probe": self.probe(),
                    "probe_samples": self.config.probe, "calib_samples": self.config.samples,
                    "preprocess": self.config.preprocess}
        lines = ["[defaults]"] + ["%s = %s" % (key, json.dumps(value)) for key, value in sorted(defaults.items())]
        lines += ["%s = true" % flag.lstrip("-").replace("-", "_") for flag in self.config.pipeline_extra]
        for path in models:
            lines += ["", "[[model]]", "path = %s" % json.dumps(path)]
        with open(manifest, "w") as handle:
            handle.write("\n".join(lines) + "\n")
        samples = {"1": [], "2": []}
        out = None
        for index in range(self.runs):
            for jobs in (("1", "2") if index % 2 == 0 else ("2", "1")):
                out = os.path.join(self.work, "fleet_out_%s_%d" % (jobs, index))
                shutil.rmtree(out, ignore_errors=True)
                result = self.on_host("converters.fleet", [manifest, "--out", out, "--jobs", jobs], check=False)
                if result["exit"] not in (0, 1):
                    raise RuntimeError("fleet --jobs %s failed (exit %d); see %s" % (jobs, result["exit"], result["log"]))
                fleet = json.load(open(os.path.join(out, "fleet.json")))
                samples[jobs].append({"wall_s": result["seconds"], "peak_rss_mb": result["peak_rss_mb"],
                                      "verdicts": [m["verdict"] for m in fleet["models"]],
                                      "model_s": [m["seconds"] for m in fleet["models"]]})
                self.log("fleet --jobs %s run %d: %.1f s" % (jobs, index + 1, result["seconds"]))
        rerun = self.on_host("converters.fleet", [manifest, "--out", out, "--jobs", "2"], check=False)
        self.log("fleet unchanged rerun: %.1f s" % rerun["seconds"])
        merges = []
        for index in range(self.runs):
            merged = os.path.join(self.work, "fleet_merged_%d" % index)
            shutil.rmtree(merged, ignore_errors=True)
            result = self.on_host("converters.fleet_report", [out, "--out", merged], check=False)
            merges.append({"wall_s": result["seconds"], "exit": result["exit"]})
        self.log("fleet-report merge: %.2f s" % merges[-1]["wall_s"])
        return {"models": [os.path.basename(path) for path in models], "size": size, "samples": self.config.samples,
                "jobs": samples, "rerun": {"wall_s": rerun["seconds"], "exit": rerun["exit"]}, "merge": merges}
