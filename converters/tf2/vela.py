"""Compiling a .tflite for an Arm Ethos-U NPU with Vela, and reading what Vela says about it.

For whom: ``converters.tf2.npu`` (targets ``ethos-u55-*``, ``ethos-u65-*``, ``ethos-u85-*``); tf2
environment, where ``ethos-u-vela`` is pinned (envs/registry.py: it needs only numpy and flatbuffers, which
TF pins compatibly).

Vela runs in a child process (``python -c 'from ethosu.vela.vela import main'``, the interpreter of this
environment): its C++ core cannot take this process down, it prints freely, and a timeout bounds it. It
is called with ``--accelerator-config TARGET --show-cpu-operations --output-dir SCRATCH`` and no system
config: Vela then uses its default system configuration and memory mode for the accelerator (Vela 5.2.0's
own ``Arm/vela.ini`` has no i.MX 93 configuration; NXP's is not public in Vela's package) and names them in
its summary CSV, which is where this module reads them from.

What is read back (``parse_*`` are pure functions of Vela's text, unit-tested):

- stdout: ``Warning (supported operators) operator: OP, ofm: 'NAME'`` followed by ``Reason: ...`` lines,
  one block per op Vela leaves on the CPU (the op's TFLite name and its output tensor), and the
  ``CPU: <op> = NAME (outputs [...])`` lines of ``--show-cpu-operations``;
- ``<model>_summary_<system config>.csv``: inference_time (s), sram/dram/flash memory used (KiB),
  nn_macs, cycles_total, core_clock (Hz), system_config, memory_mode, accelerator_configuration;
- ``<model>_vela.tflite``: the compiled model, moved to ``model_int8_vela_<target>.tflite`` next to the
  int8 model.

What can go wrong: Vela missing from the environment, Vela failing on the model (exit status, or no
summary written), a timeout: ``compile_model`` returns an entry with ``status: "error"`` and the reason;
the caller decides (``--strict-npu`` makes it an error).
"""

import csv
import os
import re
import shutil
import subprocess
import sys
import tempfile

COMPILER = "Arm Vela"
TIMEOUT_S = 900
_RUN_VELA = "import sys; from ethosu.vela.vela import main; sys.exit(main())"
_WARNING = re.compile(r"^Warning \(supported operators\) operator: (?P<op>[^,]+), ofm: '(?P<name>.*)'\s*$")
_REASON = re.compile(r"^Reason: (?P<reason>.*\S)\s*$")
_CPU_LINE = re.compile(r"^\s*CPU: (?P<op>\S+) = (?P<name>.*?)(?: \(outputs \[[^\]]*\]\))?\s*$")


def version():
    """Vela's version in this environment, or None when it is not installed."""
    try:
        from importlib import metadata
    except ImportError:  # pragma: no cover - Python < 3.8 has no tf2 environment
        return None
    try:
        return metadata.version("ethos-u-vela")
    except metadata.PackageNotFoundError:
        return None


def parse_cpu_reasons(text):
    """``{ofm name: {"op": TFLite op name, "reasons": [...]}}`` from Vela's supported-operator warnings."""
    found = {}
    current = None
    for line in text.splitlines():
        match = _WARNING.match(line)
        if match:
            current = found.setdefault(match.group("name"), {"op": match.group("op").strip(), "reasons": []})
            continue
        match = _REASON.match(line)
        if match and current is not None:
            if match.group("reason") not in current["reasons"]:
                current["reasons"].append(match.group("reason"))
            continue
        if line.strip() and not line.startswith(" "):
            current = None
    return found


def parse_cpu_lines(text):
    """Output tensor names of the ops ``--show-cpu-operations`` lists as ``CPU:``."""
    names = []
    for line in text.splitlines():
        match = _CPU_LINE.match(line)
        if match and match.group("name") not in names:
            names.append(match.group("name"))
    return names


def parse_summary(path):
    """Vela's summary CSV as numbers and names (the first row; Vela writes one per network)."""
    with open(path) as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise ValueError("empty summary %s" % path)
    row = rows[0]

    def number(key):
        try:
            return float(row[key])
        except (KeyError, TypeError, ValueError):
            return None

    def kib(key):
        value = number(key)
        return int(round(value * 1024)) if value is not None else None

    flash = [kib("on_chip_flash_memory_used"), kib("off_chip_flash_memory_used")]
    seconds = number("inference_time")
    return {
        "accelerator": row.get("accelerator_configuration"),
        "system_config": row.get("system_config"),
        "memory_mode": row.get("memory_mode"),
        "clock_hz": number("core_clock"),
        "estimated_ms": round(seconds * 1000.0, 4) if seconds is not None else None,
        "sram_bytes": kib("sram_memory_used"),
        "dram_bytes": kib("dram_memory_used"),
        "flash_bytes": sum(v for v in flash if v is not None) if any(v is not None for v in flash) else None,
        "macs": int(number("nn_macs")) if number("nn_macs") is not None else None,
        "cycles": int(number("cycles_total")) if number("cycles_total") is not None else None,
    }


def compile_model(path, accelerator, out_dir, compiled_name):
    """Compile ``path`` for ``accelerator`` (a Vela ``--accelerator-config``); return a dict with
    ``status`` ("ok" or "error"), ``summary`` (``parse_summary``), ``cpu_reasons``, ``cpu_names``,
    ``compiled`` (the compiled model's file name in ``out_dir``), ``seconds`` and ``error``."""
    import time

    result = {"status": "error", "summary": None, "cpu_reasons": {}, "cpu_names": [], "compiled": None,
              "seconds": None, "error": None, "version": version()}
    if result["version"] is None:
        result["error"] = "Vela (ethos-u-vela) is not installed in this environment"
        return result
    scratch = tempfile.mkdtemp(prefix="vela-")
    started = time.perf_counter()
    try:
        command = [sys.executable, "-c", _RUN_VELA, os.path.abspath(path), "--accelerator-config", accelerator,
                   "--show-cpu-operations", "--output-dir", scratch]
        try:
            done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  universal_newlines=True, timeout=TIMEOUT_S, cwd=scratch)
        except subprocess.TimeoutExpired:
            result["error"] = "Vela did not finish within %d s" % TIMEOUT_S
            return result
        result["seconds"] = round(time.perf_counter() - started, 2)
        text = done.stdout or ""
        stem = os.path.splitext(os.path.basename(path))[0]
        summaries = [name for name in os.listdir(scratch) if name.startswith(stem + "_summary_")]
        if done.returncode != 0 or not summaries:
            tail = " | ".join(line for line in text.strip().splitlines()[-4:])
            result["error"] = "Vela exited with status %d%s: %s" % (
                done.returncode, "" if summaries else " without a summary", tail[-600:] or "no output")
            return result
        result["summary"] = parse_summary(os.path.join(scratch, summaries[0]))
        result["cpu_reasons"] = parse_cpu_reasons(text)
        result["cpu_names"] = parse_cpu_lines(text)
        compiled = os.path.join(scratch, stem + "_vela.tflite")
        if os.path.exists(compiled):
            temporary = os.path.join(out_dir, "." + compiled_name + ".tmp")
            shutil.copyfile(compiled, temporary)
            os.replace(temporary, os.path.join(out_dir, compiled_name))
            result["compiled"] = compiled_name
        result["status"] = "ok"
        return result
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
