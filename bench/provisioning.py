"""Benchmark 1: creating each environment, uv against pip, cold and warm, and reusing it (rendered by
bench/render.py).

cold: an empty package cache (uv: a fresh UV_CACHE_DIR; pip: PIP_NO_CACHE_DIR=1), so every wheel is
downloaded. warm: the cache already holds the wheels (what a second machine setup or a lock change
costs). reuse: the environment is ready and its lock unchanged (every `nox -s ...` after the first).
"""

import os
import shutil
import sys
import tempfile

from bench.measure import fmt, run_measured
from envs import registry, venvs

INSTALLERS = ("uv", "pip")


def _ensure_argv(name):
    return [sys.executable, "-c", "from envs.venvs import ensure; ensure(%r)" % name]


def _environ(scratch, installer, kind, warm_cache):
    environ = dict(os.environ, TFBRIDGE_HOME=os.path.join(scratch, "home"), TFBRIDGE_INSTALLER=installer,
                   PYTHONPATH=venvs.REPO_ROOT)
    if kind == "cold":
        cold_cache = os.path.join(scratch, "cold-cache")
        if installer == "uv":
            environ["UV_CACHE_DIR"] = cold_cache
        else:
            environ["PIP_NO_CACHE_DIR"] = "1"
    elif installer == "uv":
        environ["UV_CACHE_DIR"] = warm_cache
    else:
        environ["PIP_CACHE_DIR"] = warm_cache
    return environ


def _measure_one(scratch, name, installer, kind, warm_cache):
    shutil.rmtree(os.path.join(scratch, "home"), ignore_errors=True)
    shutil.rmtree(os.path.join(scratch, "cold-cache"), ignore_errors=True)
    environ = _environ(scratch, installer, kind, warm_cache)
    result = run_measured(_ensure_argv(name), env=environ)
    if result["exit"] != 0:
        raise RuntimeError("creating %s with %s (%s) failed" % (name, installer, kind))
    return result["seconds"], environ


def measure(runs, log, environments=None):
    """Rows {env, installer, cold: [s], warm: [s], reuse: [s]}: uv and pip alternate per run (uv, pip, pip,
    uv, ...), so that drift of the machine or of the registry hits both alike."""
    installers = [name for name in INSTALLERS if name != "uv" or shutil.which("uv")]
    if len(installers) < len(INSTALLERS):
        log("provisioning: uv not on PATH, measuring pip only")
    rows = []
    scratch = tempfile.mkdtemp(prefix="tfbridge-bench-envs-")
    try:
        for name in environments or registry.TF_ENVIRONMENTS:
            samples = dict((installer, {"cold": [], "warm": [], "reuse": []}) for installer in installers)
            for installer in installers:  # fill each warm cache once, unmeasured
                _measure_one(scratch, name, installer, "warm", os.path.join(scratch, "cache-%s" % installer))
            for run in range(runs):
                order = installers if run % 2 == 0 else list(reversed(installers))
                for installer in order:
                    warm_cache = os.path.join(scratch, "cache-%s" % installer)
                    for kind in ("cold", "warm"):
                        seconds, environ = _measure_one(scratch, name, installer, kind, warm_cache)
                        samples[installer][kind].append(seconds)
                    again = run_measured(_ensure_argv(name), env=environ)  # ready, lock unchanged: reused
                    samples[installer]["reuse"].append(again["seconds"])
                    log("provisioning %s with %s run %d: cold %s, warm %s, reuse %s" % (
                        name, installer, run + 1, fmt(samples[installer]["cold"][-1], " s"),
                        fmt(samples[installer]["warm"][-1], " s"), fmt(again["seconds"], " s", 2)))
            for installer in installers:
                rows.append(dict(samples[installer], env=name, installer=installer))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {"rows": rows}
