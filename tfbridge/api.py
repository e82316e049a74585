"""tfbridge's Python API on the host: the commands as functions that return a typed ``Report``.

For a user's script or notebook on any Python >= 3.7; standard library only, no TensorFlow import. Each
function runs the very command ``tfbridge SUBCOMMAND`` runs (a subprocess with tfbridge's own tree on
PYTHONPATH, steps in tfbridge's environments), so options, defaults and checks are the command line's.

Options are keyword arguments named like the command-line options (``--calib-samples N`` ->
``calib_samples=N``, ``--per-tensor`` -> ``per_tensor=True``, a repeatable option takes a list:
``npu_target=["imx8mp", "ethos-u65-256"]``); ``converters/options.py`` declares them once and checks them.

What can go wrong: every failure raises its ``tfbridge.errors`` class (``UsageError`` for a bad option,
``InputFileError``, ``ModelLoadError``, ``CalibrationDataError``, ``EnvError``... each with ``message``,
``step``, ``hint`` and ``exit_code``). A parity or int8 mismatch is a verdict, not an error: the
``Report`` says ``verdict == "fail"`` and ``failing`` names what failed.
"""

import json
import os
import shutil
import subprocess
import tempfile

from tfbridge import _layout, errors
from tfbridge.report import FleetReport, NpuReadiness, Report


def _argv(options):
    """Command-line arguments for keyword ``options`` (None and False are left out)."""
    argv = []
    for key, value in options.items():
        name = "--" + key.replace("_", "-")
        if value is None or value is False:
            continue
        if value is True:
            argv.append(name)
        elif isinstance(value, (list, tuple)):
            for item in value:
                argv += [name, os.fspath(item) if hasattr(item, "__fspath__") else str(item)]
        else:
            argv += [name, os.fspath(value) if hasattr(value, "__fspath__") else str(value)]
    return argv


def _run(command, argv, quiet=False, capture=False):
    """Run ``tfbridge command argv``; return (exit status, the result file's data or None, stdout when
    ``capture``). Raises the command's typed error for every status but 0 (pass) and 1 (a mismatch)."""
    scratch = tempfile.mkdtemp(prefix="tfbridge-api-")
    try:
        error_file = os.path.join(scratch, "error.json")
        result_file = os.path.join(scratch, "result.json")
        environ = _layout.host_environ(command)
        environ.update(TFBRIDGE_ERROR_FILE=error_file, TFBRIDGE_RESULT_FILE=result_file)
        quiet_stream = subprocess.DEVNULL if quiet else None
        process = subprocess.Popen(_layout.command_argv(command, argv), env=environ,
                                   stdout=subprocess.PIPE if capture else quiet_stream, stderr=quiet_stream,
                                   universal_newlines=True)
        code, output = _layout.wait(process)  # a SIGINT: the child cleans up, exits 130: Interrupted
        if code not in (0, 1):
            raise errors.from_dict(_read(error_file), code)
        return code, _read(result_file), output
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _read(path):
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def _report(command, argv, quiet):
    code, result, _ = _run(command, argv, quiet=quiet)
    if not result:
        raise errors.TfbridgeError("%s finished (status %d) without saying where its run folder is." % (command, code),
                                   step=command, hint="This is a bug in tfbridge; report it with the call you made.")
    return Report.read(result["run_dir"], command=command, verdict=result.get("verdict"),
                       failing=result.get("failing"))


def convert_legacy(model=None, calib=None, quiet=False, **options):
    """``tfbridge convert-legacy``: a legacy Keras model (TF 1.13 / 1.15 ``.h5`` or TF 1.x graph) re-saved
    in its own TF, checked in every newer TF, converted to full int8; ``model=None`` runs the demo.
    Returns the ``Report``; ``quiet``: no progress on stdout/stderr."""
    argv = ([os.fspath(model)] if model is not None else []) + _argv(dict(options, calib=calib))
    return _report("convert-legacy", argv, quiet)


def verify_upgrade(model, quiet=False, **options):
    """``tfbridge verify-upgrade``: parity of a legacy model across TF 1.13 / 1.15 / 2.x only (no int8)."""
    return _report("verify-upgrade", [os.fspath(model)] + _argv(options), quiet)


def convert(model, calib=None, quiet=False, **options):
    """``tfbridge convert``: a TF 2.x model (``.h5``, ``.keras``, SavedModel folder) to full int8 with
    its checks and report."""
    return _report("convert", [os.fspath(model)] + _argv(dict(options, calib=calib)), quiet)


def npu_check(path, targets=("imx8mp",), strict=False, out_dir=None, quiet=False):
    """``tfbridge npu``: NPU readiness of an existing ``.tflite`` on each target (Arm Vela for Ethos-U,
    the VX delegate's op rules for the i.MX 8M Plus). Returns ``NpuReadiness``; ``strict=True`` raises
    ``NotInt8Error`` unless the model is fully int8 and every op of every target runs on the NPU."""
    argv = [os.fspath(path), "--json"] + _argv({"target": list(targets), "strict": strict, "out_dir": out_dir})
    code, _, output = _run("npu", argv, quiet=quiet, capture=True)
    lines = [line for line in (output or "").splitlines() if line.startswith("{")]
    if not lines:
        raise errors.TfbridgeError("tfbridge npu printed no assessment (status %d)." % code, step="npu")
    return NpuReadiness.from_json(json.loads(lines[-1]))


def fleet(manifest, out, shard=None, jobs=None, quiet=False):
    """``tfbridge fleet``: every model of the TOML ``manifest`` (docs/fleet.md) through convert_legacy, one
    run folder each under ``out``; ``shard="I/N"`` (or ``(I, N)``) runs the models whose index mod N is I,
    ``jobs`` models at once. Returns a ``FleetReport`` of the whole manifest as ``out`` holds it (models no
    run of ``out`` finished are ``missing``). A model that fails is a verdict in the report, not an
    exception; a bad manifest raises ``UsageError`` before anything runs."""
    if isinstance(shard, (tuple, list)):
        shard = "%d/%d" % tuple(shard)
    argv = [os.fspath(manifest), "--out", os.fspath(out)] + _argv({"shard": shard, "jobs": jobs})
    _run("fleet", argv, quiet=quiet)
    if shard is None:
        return FleetReport.from_json(_read(os.path.join(os.fspath(out), "fleet.json")) or {}, os.fspath(out))
    from tfbridge._private import tree_imports

    with tree_imports():  # the shard's view of the fleet, merged in memory (nothing written)
        from converters import fleet_report

        return FleetReport.from_json(fleet_report.merge([os.fspath(out)]), os.fspath(out), written=False)


__all__ = ["convert_legacy", "verify_upgrade", "convert", "npu_check", "fleet", "Report", "NpuReadiness",
           "FleetReport"]
