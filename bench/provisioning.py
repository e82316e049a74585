"""Benchmark 1: creating each environment, uv against pip, cold and warm, and reusing it.

cold: an empty package cache (uv: a fresh UV_CACHE_DIR; pip: PIP_NO_CACHE_DIR=1), so every wheel is
downloaded. warm: the cache already holds the wheels (what a second machine setup or a lock change
costs). reuse: the environment is ready and its lock unchanged (every `nox -s ...` after the first).
"""

import os
import shutil
import sys
import tempfile

from bench.measure import fmt, median, run_measured
from envs import registry, venvs

INSTALLERS = ("uv", "pip")


def _ensure_argv(name):
    return [sys.executable, "-c", "from envs.venvs import ensure; ensure(%r)" % name]


def measure(runs, log):
    rows = []
    scratch = tempfile.mkdtemp(prefix="tfbridge-bench-envs-")
    try:
        for installer in INSTALLERS:
            if installer == "uv" and shutil.which("uv") is None:
                log("provisioning: uv not on PATH, skipped")
                continue
            warm_cache = os.path.join(scratch, "cache-%s" % installer)
            for name in registry.TF_ENVIRONMENTS:
                samples = {"cold": [], "warm": [], "reuse": []}
                for run in range(runs):
                    for kind in ("cold", "warm"):
                        home = os.path.join(scratch, "home")
                        shutil.rmtree(home, ignore_errors=True)
                        environ = dict(os.environ, TFBRIDGE_HOME=home, TFBRIDGE_INSTALLER=installer,
                                       PYTHONPATH=venvs.REPO_ROOT)
                        if kind == "cold":
                            cold_cache = os.path.join(scratch, "cold-cache")
                            shutil.rmtree(cold_cache, ignore_errors=True)
                            if installer == "uv":
                                environ["UV_CACHE_DIR"] = cold_cache
                            else:
                                environ["PIP_NO_CACHE_DIR"] = "1"
                        else:
                            if installer == "uv":
                                environ["UV_CACHE_DIR"] = warm_cache
                            else:
                                environ["PIP_CACHE_DIR"] = warm_cache
                            if run == 0:  # fill the warm cache once, unmeasured
                                run_measured(_ensure_argv(name), env=environ)
                                shutil.rmtree(home, ignore_errors=True)
                        result = run_measured(_ensure_argv(name), env=environ)
                        if result["exit"] != 0:
                            raise RuntimeError("creating %s with %s failed" % (name, installer))
                        samples[kind].append(result["seconds"])
                        if kind == "warm":
                            again = run_measured(_ensure_argv(name), env=environ)
                            samples["reuse"].append(again["seconds"])
                        shutil.rmtree(os.path.join(scratch, "cold-cache"), ignore_errors=True)
                row = (name, installer, median(samples["cold"]), median(samples["warm"]), median(samples["reuse"]))
                log("provisioning %s with %s: cold %s, warm %s, reuse %s"
                    % (name, installer, fmt(row[2], " s"), fmt(row[3], " s"), fmt(row[4], " s", 2)))
                rows.append(row)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return rows


def markdown(rows, runs):
    lines = [
        "## 1. Environment provisioning (median of %d)" % runs,
        "",
        "cold: empty package cache, every wheel downloaded; warm: wheels in the cache; reuse: environment "
        "ready and lock unchanged (what every later `nox -s ...` pays).",
        "",
        "| environment | installer | cold | warm | reuse | cold uv / pip |",
        "|---|---|---:|---:|---:|---:|",
    ]
    by_key = {(row[0], row[1]): row for row in rows}
    for row in rows:
        ratio = "-"
        uv, pip = by_key.get((row[0], "uv")), by_key.get((row[0], "pip"))
        if row[1] == "uv" and uv and pip and pip[2]:
            ratio = "%.2f" % (uv[2] / pip[2])
        lines.append("| %s | %s | %s | %s | %s | %s |" % (row[0], row[1], fmt(row[2], " s"), fmt(row[3], " s"),
                                                         fmt(row[4], " s", 2), ratio))
    return "\n".join(lines) + "\n"
