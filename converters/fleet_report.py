"""``tfbridge fleet-report DIR... --out DIR``: the shards of one fleet merged into fleet.json and fleet.html.

For whom: whoever collects the shards of a ``tfbridge fleet`` run (docs/fleet.md). Host side, standard
library only::

    python -m converters.fleet_report DIR [DIR ...] --out DIR

Each DIR is a fleet folder (``converters.fleet``: ``.fleet/manifest.json``, ``.fleet/outcomes/``, one run
folder per model); all must come from the same manifest. Every model of the manifest appears once in
``fleet.json``, in manifest order: its last finished attempt found in any DIR (recorded with the entry's
current options: an attempt with other options is not this entry's), with the run folder's figures; a
model that no shard finished is listed with verdict ``missing``, never dropped.

``fleet.json``::

    tfbridge: "fleet", schema_version, generated, manifest {path, sha256, key, models}, folders,
    counts {pass, fail, error, missing}, environments [parity cell labels], targets [NPU targets],
    models: [{index, name, path, verdict: pass|fail|error|missing, failing, exit_code, error {class, step,
              message, hint, paragraph}, origin, parity {env: {status, max_abs, cosine, top1_agreement,
              first_divergent_layer?, tolerated, error?}}, first_divergent_layer {env, layer},
              int8 {status, sqnr_db, cosine, top1_agreement, sqnr_centered_db?, correlation?, max_abs_lsb,
              size_bytes, input_dtype, output_dtype, quantization}, npu {verdict, fully_int8,
              targets {name: {ops_on_npu, ops_on_cpu, npu_ops_fraction, estimated_ms}}},
              run_dir, report_html, log, seconds, reused, finished, shard, host, folder, note?}]

Both files are written atomically; ``--out`` is a new or empty folder, a fleet folder, or one holding an
earlier fleet report (``fleet.json`` / ``fleet.html`` are replaced, nothing else is touched).
"""

import datetime
import os
import sys

from converters import cli, fleet_html, fleet_manifest, runfolder
from converters.errors import UsageError

FLEET_DIR = fleet_manifest.FLEET_DIR
SCHEMA_VERSION = 1
VERDICTS = ("pass", "fail", "error", "missing")
# the parity cells in the order convert_legacy's matrix shows them; others (--tf releases) after, as found
ENV_ORDER = ("tf1.13", "tf1.15", "tf2", "tf2-graph", "tf2-keras3", "tf2-keras3-migrated")
INT8_KEYS = ("status", "sqnr_db", "sqnr_centered_db", "cosine", "correlation", "top1_agreement", "max_abs_lsb",
             "size_bytes", "input_dtype", "output_dtype")
OPTIONAL_INT8_KEYS = ("sqnr_centered_db", "correlation")  # present in newer report.json files only


def read_manifest(folder):
    """The checked manifest a fleet wrote into ``folder``, or a ``UsageError`` saying it is no fleet folder."""
    data = runfolder.read_json_if_valid(os.path.join(folder, FLEET_DIR, "manifest.json"))
    if not isinstance(data, dict) or data.get("tfbridge") != "fleet-manifest":
        raise UsageError("%s is not a fleet folder (no readable %s/manifest.json)." % (folder, FLEET_DIR),
                         step="fleet-report", hint="Give the --out folders of `tfbridge fleet` runs (one per shard, "
                                                   "or one folder the shards shared).")
    return data


def _first(values):
    return next((value for value in values if value is not None), None)


def parity_of(report):
    """{env label: figures} of a report's parity matrix."""
    cells = {}
    for cell in report.get("parity") or []:
        label = cell.get("label") or cell.get("env")
        figures = dict((key, cell.get(key)) for key in ("status", "max_abs", "cosine", "top1_agreement"))
        figures["tolerated"] = bool(cell.get("tolerated"))
        for key in ("first_divergent_layer", "error"):
            if cell.get(key):
                figures[key] = cell[key]
        cells[label] = figures
    return cells


def int8_of(report):
    tflite = report.get("tflite")
    if not tflite:
        return None
    figures = dict((key, tflite.get(key)) for key in INT8_KEYS if key in tflite or key not in OPTIONAL_INT8_KEYS)
    quantization = report.get("quantization") or {}
    figures["quantization"] = quantization.get("chosen")
    return figures


def npu_of(report):
    npu = report.get("npu")
    if not npu:
        return None
    targets = {}
    for target in npu.get("targets") or []:
        targets[target.get("target")] = {
            "ops_on_npu": target.get("ops_on_npu"), "ops_on_cpu": len(target.get("ops_on_cpu") or []),
            "npu_ops_fraction": target.get("npu_ops_fraction"), "estimated_ms": target.get("estimated_ms")}
    return {"verdict": npu.get("verdict"), "fully_int8": npu.get("fully_int8"), "targets": targets}


def first_divergent(parity):
    for env, cell in parity.items():
        if cell.get("first_divergent_layer"):
            layer = cell["first_divergent_layer"]
            return {"env": env, "layer": layer.get("name") if isinstance(layer, dict) else layer}
    return None


def _latest(found):
    """The outcome finished last among ``(folder, outcome)`` pairs (ISO times sort as text)."""
    return max(found, key=lambda pair: pair[1].get("finished") or "") if found else None


def model_record(entry, folders):
    """One manifest entry's line of fleet.json from what ``folders`` hold."""
    record = {"index": entry["index"], "name": entry["name"], "path": entry["path"], "verdict": "missing",
              "failing": [], "exit_code": None, "error": None, "origin": None, "parity": {},
              "first_divergent_layer": None, "int8": None, "npu": None, "run_dir": None, "report_html": None,
              "log": None, "seconds": None, "reused": None, "finished": None, "shard": None, "host": None,
              "folder": None}
    found, other = [], []
    for folder in folders:
        outcome = runfolder.read_json_if_valid(os.path.join(folder, FLEET_DIR, "outcomes", entry["name"] + ".json"))
        if isinstance(outcome, dict) and outcome.get("tfbridge") == "fleet-outcome":
            (found if outcome.get("key") == entry["key"] else other).append((folder, outcome))
    chosen = _latest(found)
    if chosen is None:
        record["note"] = ("no shard finished this model" + (
            "; an attempt with other options (an earlier manifest) is in %s" % _latest(other)[0] if other else ""))
        return record
    folder, outcome = chosen
    run_dir = os.path.join(folder, entry["name"])  # where it is now (the shard's folder may have been moved)
    record.update(verdict=outcome.get("verdict"), failing=list(outcome.get("failing") or []),
                  exit_code=outcome.get("exit_code"), error=outcome.get("error"), seconds=outcome.get("seconds"),
                  reused=outcome.get("reused"), finished=outcome.get("finished"), shard=outcome.get("shard"),
                  host=outcome.get("host"), folder=folder,
                  log=os.path.join(folder, FLEET_DIR, "logs", entry["name"] + ".log"))
    report = runfolder.read_json_if_valid(os.path.join(run_dir, "report.json"))
    if record["verdict"] in ("pass", "fail") and not isinstance(report, dict):
        record.update(verdict="missing", note="its outcome says %s, but its run folder %s has no report.json "
                                              "(removed?)" % (outcome.get("verdict"), run_dir))
        return record
    if isinstance(report, dict):
        record["run_dir"] = run_dir
        if os.path.exists(os.path.join(run_dir, "report.html")):
            record["report_html"] = os.path.join(run_dir, "report.html")
        record["origin"] = (report.get("origin") or {}).get("env")
        record["parity"] = parity_of(report)
        record["first_divergent_layer"] = first_divergent(record["parity"])
        record["int8"] = int8_of(report)
        record["npu"] = npu_of(report)
        if record["verdict"] == "error":
            record["note"] = "this attempt failed; the run folder holds an earlier complete run"
    return record


def merge(folders):
    """fleet.json's content for the fleet folders ``folders`` (module docstring)."""
    folders = [os.path.abspath(folder) for folder in folders]
    if not folders:
        raise UsageError("no fleet folder given.", step="fleet-report", hint="Give one DIR per shard.")
    manifests = [(folder, read_manifest(folder)) for folder in folders]
    keys = sorted(set(manifest.get("key") for _, manifest in manifests))
    if len(keys) > 1:
        raise UsageError(
            "the folders come from different manifests (or different versions of one): %s." % "; ".join(
                "%s: %s (%d models)" % (folder, manifest.get("path"), len(manifest.get("models") or []))
                for folder, manifest in manifests), step="fleet-report",
            hint="Merge the shards of one manifest; rerun the shards whose manifest is older (finished models "
                 "are reused).")
    manifest = manifests[0][1]
    models = [model_record(entry, folders) for entry in manifest.get("models") or []]
    environments, targets = [], []
    for model in models:
        environments += [env for env in model["parity"] if env not in environments]
        targets += [t for t in ((model["npu"] or {}).get("targets") or {}) if t not in targets]
    found = list(environments)  # sorted by a copy: list.sort empties the list while it sorts
    environments = sorted(found, key=lambda env: (ENV_ORDER.index(env) if env in ENV_ORDER else len(ENV_ORDER),
                                                  found.index(env)))
    counts = dict((verdict, sum(1 for m in models if m["verdict"] == verdict)) for verdict in VERDICTS)
    return {"tfbridge": "fleet", "schema_version": SCHEMA_VERSION,
            "generated": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "manifest": {"path": manifest.get("path"), "sha256": manifest.get("sha256"), "key": manifest.get("key"),
                         "models": len(models)},
            "folders": folders, "counts": counts, "environments": environments, "targets": targets,
            "models": models}


def check_report_out(out):
    """``--out`` of fleet-report: new, empty, a fleet folder or one holding a fleet report."""
    given, out = out, os.path.abspath(out)
    if not os.path.lexists(out):
        return out
    earlier = runfolder.read_json_if_valid(os.path.join(out, "fleet.json"))
    if os.path.isdir(out) and (not os.listdir(out) or os.path.isdir(os.path.join(out, FLEET_DIR))
                               or (isinstance(earlier, dict) and earlier.get("tfbridge") == "fleet")):
        return out
    raise UsageError("--out %s is %s." % (given, "not a folder" if not os.path.isdir(out) else
                                          "a non-empty folder that holds no fleet (no %s/, no fleet.json)" % FLEET_DIR),
                     step="fleet-report", hint="Give --out a new or empty folder, or a fleet folder.")


def write(folders, out, log=None):
    """Merge ``folders`` and write ``out``/fleet.json and ``out``/fleet.html; return the merged dict."""
    out = check_report_out(out)
    fleet = merge(folders)
    os.makedirs(out, exist_ok=True)
    runfolder.write_json(os.path.join(out, "fleet.json"), fleet)
    runfolder.write_text(os.path.join(out, "fleet.html"), fleet_html.render(fleet, out))
    if log is not None:
        log("fleet-report: %d model(s): %s; %s" % (len(fleet["models"]), ", ".join(
            "%d %s" % (fleet["counts"][v], v) for v in VERDICTS if fleet["counts"][v]),
            os.path.join(out, "fleet.html")))
    return fleet


def parser(prog=None):
    result = fleet_manifest.CommandParser(prog=prog or os.environ.get("TFBRIDGE_PROG") or "tfbridge fleet-report",
                     description="Merge the shard folders of one fleet into fleet.json and fleet.html.")
    result.add_argument("folders", nargs="+", metavar="DIR", help="fleet folders (the --out of each shard)")
    result.add_argument("--out", required=True, metavar="DIR", help="where fleet.json and fleet.html go")
    result.add_argument("--debug", action="store_true", help="tracebacks")
    return result


def run(argv):
    args = parser().parse_args(list(argv))
    fleet = write(args.folders, args.out, log=lambda message: sys.stderr.write(message + "\n"))
    for model in fleet["models"]:
        print("%-4d %-24s %-8s %s" % (model["index"], model["name"], model["verdict"],
                                      ", ".join(model["failing"]) or (model.get("note") or "")))
    print("report: %s" % os.path.join(os.path.abspath(args.out), "fleet.html"))
    return 0 if all(model["verdict"] == "pass" for model in fleet["models"]) else 1


if __name__ == "__main__":
    sys.exit(cli.main(run, step="fleet-report"))
