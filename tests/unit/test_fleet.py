"""Issue 32, the fleet on the host: manifest checks (one paragraph naming the entry, exit 2, nothing run),
the shard rule, merging shard folders into fleet.json (missing models listed, stale attempts ignored),
fleet.html's escaping, and the scheduler examples of docs/fleet.md (their tfbridge command lines parse).

No TensorFlow, no environment: model and data files are stand-ins with the right signatures (the
preflight reads signatures and headers only); run folders are written by hand as a finished run leaves them.
"""

import json
import os
import re
import shlex
import signal
import struct
import subprocess
import sys

import pytest

from converters import cli, fleet, fleet_html, fleet_manifest, fleet_report, runfolder
from converters.errors import UsageError

pytestmark = pytest.mark.unit

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HDF5 = b"\x89HDF\r\n\x1a\n"


def npy_bytes(shape, descr="<f4"):
    header = repr({"descr": descr, "fortran_order": False, "shape": tuple(shape)}).encode("latin1")
    header += b" " * (-(10 + len(header) + 1) % 64) + b"\n"
    count = 1
    for dim in shape:
        count *= dim
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + b"\0" * (4 * count)


@pytest.fixture
def files(tmp_path):
    """A manifest folder: models/a.h5, models/b.h5, data/x.npy (200 samples)."""
    (tmp_path / "models").mkdir()
    (tmp_path / "data").mkdir()
    for name in ("a", "b"):
        (tmp_path / "models" / (name + ".h5")).write_bytes(HDF5 + b"\0" * 100)
    (tmp_path / "data" / "x.npy").write_bytes(npy_bytes((200, 4, 4, 3)))
    return tmp_path


GOOD = """
[defaults]
calib = "data/x.npy"
calib_samples = 40

[[model]]
path = "models/a.h5"
npu-target = ["imx8mp", "ethos_U65_256"]

[[model]]
path = "models/b.h5"
name = "bee"
per_tensor = true
origin = 1.13
"""


def write(folder, text, name="fleet.toml"):
    path = folder / name
    path.write_text(text)
    return str(path)


def test_a_good_manifest_becomes_convert_legacy_argument_lists(files):
    manifest = fleet_manifest.load(write(files, GOOD), str(files / "out"))
    a, b = manifest.entries
    assert (a.index, a.name, b.index, b.name) == (0, "a", 1, "bee")  # default name: convert_legacy's own runs/<stem>
    assert a.argv[0] == str(files / "models" / "a.h5")  # relative to the manifest's folder
    assert a.argv[a.argv.index("--calib") + 1] == str(files / "data" / "x.npy")
    assert a.argv.count("--npu-target") == 2 and a.values["npu_target"] == ["imx8mp", "ethos-u65-256"]
    assert "--per-tensor" in b.argv and b.argv[b.argv.index("--origin") + 1] == "1.13"  # a TOML float, as text
    assert "--per-tensor" not in a.argv and a.values["calib_samples"] == 40
    assert manifest.key != fleet_manifest.load(write(files, GOOD.replace("40", "41")), str(files / "out")).key


BAD = {
    "missing model file": ('[[model]]\npath = "models/nope.h5"\ncalib = "data/x.npy"\n', r"index 0 .*nope\.h5"),
    "missing data file": ('[[model]]\npath = "models/a.h5"\ncalib = "data/none.npy"\n', r"index 0 .*none\.npy"),
    "unknown key": ('[[model]]\npath = "models/a.h5"\ncalib = "data/x.npy"\ncalib_sample = 3\n',
                    r"index 0 .*unknown key `calib_sample` \(did you mean `calib_samples`\?\)"),
    "bad value": ('[[model]]\npath = "models/a.h5"\ncalib = "data/x.npy"\nio = "int4"\n',
                  r"index 0 .*--io.*invalid choice"),
    "bad number": ('[[model]]\npath = "models/a.h5"\ncalib = "data/x.npy"\ncalib_samples = "many"\n',
                   r"index 0 .*--calib-samples.*invalid int"),
    "switch not a bool": ('[[model]]\npath = "models/a.h5"\ncalib = "data/x.npy"\nper_tensor = "yes"\n',
                          r"`per_tensor` is a switch"),
    "unknown npu target": ('[[model]]\npath = "models/a.h5"\ncalib = "data/x.npy"\nnpu_target = "tpu"\n',
                           r"index 0 .*tpu"),
    "duplicate name": ('[[model]]\npath = "models/a.h5"\ncalib = "data/x.npy"\n'
                       '[[model]]\npath = "models/b.h5"\nname = "a"\ncalib = "data/x.npy"\n',
                       r"index 1 .*duplicate model.*index 0"),
    "duplicate model": ('[[model]]\npath = "models/a.h5"\ncalib = "data/x.npy"\n'
                        '[[model]]\npath = "models/a.h5"\nname = "again"\ncalib = "data/x.npy"\n',
                        r"index 1 .*duplicate model: the same model with the same options"),
    "empty manifest": ('[defaults]\ncalib = "data/x.npy"\n', r"no \[\[model\]\] table"),
    "no path": ('[[model]]\nname = "x"\ncalib = "data/x.npy"\n', r"index 0 .*no `path`"),
    "out in an entry": ('[[model]]\npath = "models/a.h5"\ncalib = "data/x.npy"\nout = "elsewhere"\n',
                        r"`out` is not an entry key"),
    "not TOML": ('[[model]\npath = "models/a.h5"\n', r"not valid TOML"),
    "unknown table": ('[[models]]\npath = "models/a.h5"\n', r"unknown top-level key"),
    "no calibration data": ('[[model]]\npath = "models/a.h5"\n', r"index 0 .*no calibration data"),
    "bad name": ('[[model]]\npath = "models/a.h5"\nname = "../up"\ncalib = "data/x.npy"\n',
                 r"run-folder name '\.\./up' is not usable"),
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_a_bad_manifest_is_one_paragraph_naming_the_entry(files, kind):
    text, pattern = BAD[kind]
    with pytest.raises(UsageError) as raised:
        fleet_manifest.load(write(files, text), str(files / "out"))
    error = raised.value
    assert error.exit_code == 2 and error.step == "manifest"
    paragraph = error.paragraph()
    assert "\n" not in paragraph and re.search(pattern, paragraph), paragraph


def run_fleet(args, cwd, capsys=None):
    """The fleet command: in this process through ``converters.cli.main`` (what ``python -m converters.fleet``
    runs: the paragraph on stderr, the exit status), or with ``capsys=None`` as the real ``tfbridge fleet``."""
    if capsys is None:
        environ = dict(os.environ, PYTHONPATH=REPO)
        result = subprocess.run([sys.executable, "-m", "tfbridge", "fleet"] + args, cwd=str(cwd), env=environ,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=60)
        return result.returncode, result.stderr
    previous = signal.getsignal(signal.SIGTERM)  # cli.main turns SIGTERM into KeyboardInterrupt: put it back
    try:
        code = cli.main(fleet.run, args, step="fleet")
    finally:
        signal.signal(signal.SIGTERM, previous)
    return code, capsys.readouterr().err


@pytest.mark.parametrize("kind", ["missing model file", "unknown key", "bad value", "duplicate name",
                                  "empty manifest", "not TOML"])
def test_the_fleet_command_refuses_a_bad_manifest_with_exit_2_and_runs_nothing(files, kind, capsys):
    code, stderr = run_fleet([write(files, BAD[kind][0]), "--out", str(files / "out")], files, capsys)
    assert code == 2, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("tfbridge: manifest failed:"), stderr
    assert "Traceback" not in stderr and not os.path.exists(str(files / "out"))


def test_the_tfbridge_command_refuses_a_bad_manifest_with_exit_2(files):
    code, stderr = run_fleet([write(files, BAD["duplicate name"][0]), "--out", str(files / "out")], files)
    assert code == 2 and stderr.startswith("tfbridge: manifest failed: [[model]] at index 1"), stderr
    assert len(stderr.strip().splitlines()) == 1 and not os.path.exists(str(files / "out"))


@pytest.mark.parametrize("spec", ["2/2", "1", "a/b", "-1/2", "0/0", "1/2/3"])
def test_a_bad_shard_spec_is_refused_before_the_manifest_is_read(files, spec, capsys):
    code, stderr = run_fleet([str(files / "absent.toml"), "--out", str(files / "out"), "--shard", spec], files, capsys)
    assert code == 2 and "--shard" in stderr and "absent.toml" not in stderr


def test_a_folder_that_is_no_fleet_folder_is_refused(files, capsys):
    (files / "busy").mkdir()
    (files / "busy" / "mine.txt").write_text("keep me")
    code, stderr = run_fleet([write(files, GOOD), "--out", str(files / "busy")], files, capsys)
    assert code == 2 and "did not make" in stderr
    assert (files / "busy" / "mine.txt").read_text() == "keep me"


def test_shards_cover_every_model_once_and_appending_keeps_assignments():
    for count in (1, 2, 3, 7):
        for total in (0, 1, 5, 12):
            owners = [[fleet_manifest.shard_of(index, count) for index in range(total)].count(shard)
                      for shard in range(count)]
            assert sum(owners) == total and max(owners or [0]) - min(owners or [0]) <= 1  # balanced
    before = [fleet_manifest.shard_of(index, 3) for index in range(5)]
    after = [fleet_manifest.shard_of(index, 3) for index in range(8)]
    assert after[:5] == before  # appending models never moves earlier ones
    assert fleet_manifest.parse_shard(" 1 / 4 ") == (1, 4) and fleet_manifest.parse_shard(None) is None


def test_for_shard_selects_by_index_mod_n(files):
    text = "".join('[[model]]\npath = "models/a.h5"\nname = "m%d"\ncalib = "data/x.npy"\ncalib_samples = %d\n'
                   % (i, 10 + i) for i in range(5))
    manifest = fleet_manifest.load(write(files, text), str(files / "out"))
    assert [e.name for e in manifest.for_shard((0, 2))] == ["m0", "m2", "m4"]
    assert [e.name for e in manifest.for_shard((1, 2))] == ["m1", "m3"]
    assert len(manifest.for_shard(None)) == 5


# ------------------------------------------------------------------------------------------------ merging

def finished_run(folder, entry, verdict, report=None, error=None, finished="2026-12-07T01:00:00Z"):
    """What a shard leaves for one model: its run folder (report.json) and its outcome."""
    run_dir = os.path.join(folder, entry.name)
    if report is not None:
        os.makedirs(run_dir, exist_ok=True)
        runfolder.write_json(os.path.join(run_dir, "report.json"), report)
        runfolder.write_text(os.path.join(run_dir, "report.html"), "<html></html>")
    runfolder.write_json(os.path.join(folder, ".fleet", "outcomes", entry.name + ".json"), {
        "tfbridge": "fleet-outcome", "name": entry.name, "index": entry.index, "key": entry.key,
        "verdict": verdict, "exit_code": {"pass": 0, "fail": 1}.get(verdict, 7), "error": error,
        "failing": ["tf2-keras3"] if verdict == "fail" else [], "seconds": 12.5, "reused": False,
        "finished": finished, "shard": "0/2", "run_dir": run_dir})


REPORT = {
    "origin": {"env": "tf1.13"},
    "parity": [{"env": "tf1.15", "label": "tf1.15", "status": "match", "max_abs": 3e-8, "cosine": 1.0},
               {"env": "tf2-keras3", "label": "tf2-keras3", "status": "mismatch", "max_abs": 0.01,
                "first_divergent_layer": "lstm"}],
    "tflite": {"status": "match", "sqnr_db": 38.8, "cosine": 0.9999, "top1_agreement": 1.0, "max_abs_lsb": 4.0,
               "sqnr_centered_db": 21.5, "correlation": 0.998},
    "npu": {"verdict": "ready", "fully_int8": True,
            "targets": [{"target": "imx8mp", "npu_ops_fraction": 1.0, "ops_on_cpu": []}]},
}


@pytest.fixture
def shards(files):
    """Three models; shard 0/2 finished its two (one pass, one error), shard 1/2 never ran."""
    text = "".join('[[model]]\npath = "models/a.h5"\nname = "m%d"\ncalib = "data/x.npy"\ncalib_samples = %d\n'
                   % (i, 10 + i) for i in range(3))
    manifest = fleet_manifest.load(write(files, text), str(files / "s0"))
    for folder in ("s0", "s1"):
        runfolder.write_json(str(files / folder / ".fleet" / "manifest.json"), manifest.to_json())
    m0, m1, m2 = manifest.entries
    finished_run(str(files / "s0"), m0, "fail", REPORT)
    error = {"class": "UntrustedModelError", "step": "inspect", "message": "Lambda layer <halve>",
             "paragraph": "inspect failed: Lambda layer <halve>"}
    finished_run(str(files / "s0"), m2, "error", error=error)
    return files, manifest


def test_merge_lists_every_model_once_and_missing_ones_as_missing(shards):
    files, manifest = shards
    merged = fleet_report.merge([str(files / "s0"), str(files / "s1")])
    assert [m["name"] for m in merged["models"]] == ["m0", "m1", "m2"]
    assert [m["verdict"] for m in merged["models"]] == ["fail", "missing", "error"]
    assert merged["counts"] == {"pass": 0, "fail": 1, "error": 1, "missing": 1}
    m0 = merged["models"][0]
    assert m0["parity"]["tf2-keras3"]["status"] == "mismatch"
    assert m0["first_divergent_layer"] == {"env": "tf2-keras3", "layer": "lstm"}
    assert m0["int8"]["sqnr_db"] == 38.8 and m0["int8"]["sqnr_centered_db"] == 21.5 and m0["int8"]["correlation"]
    assert m0["npu"]["targets"]["imx8mp"]["npu_ops_fraction"] == 1.0 and m0["failing"] == ["tf2-keras3"]
    assert m0["run_dir"] == str(files / "s0" / "m0") and m0["report_html"].endswith("report.html")
    assert merged["models"][2]["error"]["class"] == "UntrustedModelError"
    assert merged["environments"] == ["tf1.15", "tf2-keras3"] and merged["targets"] == ["imx8mp"]


def test_merge_takes_the_latest_attempt_and_ignores_attempts_with_other_options(shards):
    files, manifest = shards
    m0, m1, _ = manifest.entries
    finished_run(str(files / "s1"), m0, "pass", dict(REPORT, parity=[]), finished="2026-12-07T02:00:00Z")
    stale = fleet_manifest.Entry(m1.index, m1.name, m1.path, m1.argv + ["--per-tensor"], m1.values)
    finished_run(str(files / "s1"), stale, "pass", REPORT)
    merged = fleet_report.merge([str(files / "s0"), str(files / "s1")])
    assert merged["models"][0]["verdict"] == "pass" and merged["models"][0]["folder"] == str(files / "s1")
    assert merged["models"][1]["verdict"] == "missing" and "other options" in merged["models"][1]["note"]
    assert "sqnr_centered_db" not in fleet_report.int8_of({"tflite": {"sqnr_db": 1.0}})  # older reports


def test_merge_refuses_folders_of_different_manifests_and_non_fleet_folders(shards):
    files, manifest = shards
    other = manifest.to_json()
    other["key"] = "another"
    runfolder.write_json(str(files / "s1" / ".fleet" / "manifest.json"), other)
    with pytest.raises(UsageError, match="different manifests"):
        fleet_report.merge([str(files / "s0"), str(files / "s1")])
    with pytest.raises(UsageError, match="not a fleet folder"):
        fleet_report.merge([str(files / "data")])


def test_fleet_report_writes_both_files_and_never_into_a_foreign_folder(shards):
    files, _ = shards
    fleet_report.write([str(files / "s0"), str(files / "s1")], str(files / "merged"))
    written = json.loads((files / "merged" / "fleet.json").read_text())
    assert written["tfbridge"] == "fleet" and len(written["models"]) == 3
    page = (files / "merged" / "fleet.html").read_text()
    assert 'href="../s0/m0/report.html"' in page and "m1" in page and "missing" in page
    fleet_report.write([str(files / "s0")], str(files / "merged"))  # an earlier report is replaced
    with pytest.raises(UsageError, match="holds no fleet"):
        fleet_report.write([str(files / "s0")], str(files / "models"))


def test_fleet_html_escapes_every_value_from_manifests_and_reports(shards):
    files, _ = shards
    merged = fleet_report.merge([str(files / "s0"), str(files / "s1")])
    evil = '<script>alert("x")</script>'
    merged["models"][0]["name"] = evil
    merged["models"][0]["parity"]["tf2-keras3"]["first_divergent_layer"] = evil
    merged["models"][2]["error"]["paragraph"] = evil + ' & "quoted" \'single\''
    merged["models"][0]["report_html"] = str(files / 's0' / 'a "b" <c>' / "report.html")
    page = fleet_html.render(merged, str(files))
    assert evil not in page and "<script>alert" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "&amp; &quot;quoted&quot; &#x27;single&#x27;" in page
    assert 'href="s0/a%20%22b%22%20%3Cc%3E/report.html"' in page
    assert page.count("<script>") == 1  # only the page's own sorting script


def test_outcome_description_says_what_happened():
    base = {"seconds": 3.0, "failing": [], "reused": False, "exit_code": 0}
    assert fleet.describe(dict(base, verdict="pass", reused=True)).startswith("pass (reused")
    assert "tf2-keras3" in fleet.describe(dict(base, verdict="fail", failing=["tf2-keras3"]))
    error = {"class": "ModelLoadError", "paragraph": "load failed: x"}
    assert "ModelLoadError" in fleet.describe(dict(base, verdict="error", exit_code=6, error=error))


# ------------------------------------------------------------------------------------------------ docs

def scheduler_blocks():
    """The fenced yaml / bash blocks of docs/fleet.md's "Schedulers" section."""
    text = open(os.path.join(REPO, "docs", "fleet.md")).read()
    section = text.split("## Schedulers", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```(yaml|bash)\n(.*?)```", section, re.S)


# what each scheduler puts in its variables (a worker's index, the count of workers, its cores)
VARIABLES = {"JOB_COMPLETION_INDEX": "0", "SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "4",
             "SLURM_CPUS_PER_TASK": "2", "matrix.shard": "3"}


def tfbridge_command_lines(block):
    """Each ``tfbridge fleet ...`` command line of a block as (subcommand, argv): continuation lines joined,
    the schedulers' variables replaced by what they hold (an unknown one fails), quotes removed."""
    joined = re.sub(r"\\\n\s*", " ", block)
    lines = []
    for match in re.finditer(r"tfbridge (fleet(?:-report)?) ([^\n]*)", joined):
        rest = re.sub(r"\$\{\{\s*([\w.]+)\s*\}\}|\$\{(\w+)\}|\$(\w+)",
                      lambda m: VARIABLES[m.group(1) or m.group(2) or m.group(3)], match.group(2))
        if rest.count('"') % 2:  # the command is itself a quoted argument (sbatch --wrap "..."): it ends there
            rest = rest[:rest.rindex('"')]
        lines.append((match.group(1), shlex.split(rest, comments=True)))
    return lines


def test_the_scheduler_examples_are_valid_and_their_command_lines_parse():
    blocks = scheduler_blocks()
    kinds = [kind for kind, _ in blocks]
    assert kinds.count("yaml") >= 2 and kinds.count("bash") >= 1  # Kubernetes, GitHub Actions; SLURM
    text = "\n".join(body for _, body in blocks)
    for variable in ("JOB_COMPLETION_INDEX", "SLURM_ARRAY_TASK_ID", "matrix.shard"):
        assert variable in text
    commands = []
    for kind, body in blocks:
        if kind == "yaml":
            check_yaml(body)
        else:
            result = subprocess.run(["bash", "-n"], input=body, universal_newlines=True, stderr=subprocess.PIPE)
            assert result.returncode == 0, result.stderr
        commands += tfbridge_command_lines(body)
    assert len(commands) >= 4
    for command, argv in commands:
        if command == "fleet":
            args = fleet.parse(argv)
            assert args.shard is None or args.shard[0] < args.shard[1]
        else:
            assert fleet_report.parser().parse_args(argv).folders


def check_yaml(text):
    """A YAML document: PyYAML when the host has it; else the structural rules a config breaks most:
    no tabs, indentation in steps of the block's own width, `key: value` or `- item` lines."""
    try:
        import yaml
    except ImportError:
        yaml = None
    if yaml is not None:
        assert yaml.safe_load(text) is not None
        return
    assert "\t" not in text
    in_block = None
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        indent = len(line) - len(line.lstrip(" "))
        if in_block is not None:  # a literal block scalar (key: |) runs while it is indented deeper
            if not stripped or indent > in_block:
                continue
            in_block = None
        if not stripped or stripped.startswith("#") or stripped == "---":
            continue
        assert indent % 2 == 0, "line %d: odd indentation: %r" % (number, line)
        assert re.match(r"^(- )*([\w.\-\"'/]+:( .*)?|- .+|\S.*)$", stripped), "line %d: %r" % (number, line)
        if re.search(r":\s*[|>][-+]?$", stripped):
            in_block = indent


# ------------------------------------------------------------------------------------------------ Python API

def test_the_python_api_types_the_merged_report(shards):
    from tfbridge.report import FleetReport

    files, _ = shards
    report = FleetReport.from_json(fleet_report.merge([str(files / "s0"), str(files / "s1")]), str(files / "s0"))
    assert [m.verdict for m in report.models] == ["fail", "missing", "error"] and not report.passed
    lstm_like = report.by_name("m0")
    assert lstm_like.parity == {"tf1.15": "match", "tf2-keras3": "mismatch"}
    assert lstm_like.first_divergent_layer == "lstm" and lstm_like.int8["sqnr_centered_db"] == 21.5
    assert lstm_like.npu == {"imx8mp": 1.0} and lstm_like.report().int8.sqnr_db == 38.8
    assert report.by_name("m2").error.startswith("inspect failed") and report.counts["missing"] == 1


def test_the_python_api_raises_a_bad_manifests_error_before_running(files):
    import tfbridge

    with pytest.raises(tfbridge.errors.UsageError, match="unknown key `calib_sample`"):
        tfbridge.fleet(write(files, BAD["unknown key"][0]), files / "out", quiet=True)
    assert not os.path.exists(str(files / "out"))


def test_the_readme_fleet_lines_parse_and_link_to_the_full_page():
    text = open(os.path.join(REPO, "README.md")).read()
    section = text.split("## Many models: the fleet", 1)[1].split("\n## ", 1)[0]
    assert "(docs/fleet.md)" in section
    commands = tfbridge_command_lines(section.split("```", 2)[1])
    assert [c for c, _ in commands].count("fleet") == 4 and commands[-1][0] == "fleet-report"
    for command, argv in commands:
        if command == "fleet":
            fleet.parse(argv)
        else:
            fleet_report.parser().parse_args(argv)


@pytest.mark.parametrize("text", ["jobs:\n\tshard: 1\n", "jobs:\n   shard: [0, 1\n"])
def test_the_yaml_check_refuses_broken_yaml(text):
    with pytest.raises(Exception):
        check_yaml(text)


def test_the_benchmark_section_renders_the_two_job_counts_and_the_merge():
    from bench import render

    data = {"models": ["a.h5", "b.h5", "c.h5", "d.h5"], "size": 32, "samples": 20,
            "jobs": {"1": [{"wall_s": 100.0, "verdicts": ["pass"], "model_s": [25.0]}],
                     "2": [{"wall_s": 70.0, "verdicts": ["pass"], "model_s": [35.0]}]},
            "rerun": {"wall_s": 5.0}, "merge": [{"wall_s": 0.25}]}
    text = "\n".join(render.render_fleet(data))
    assert "| `--jobs 1` | 100.0 s |" in text and "| `--jobs 2` | 70.0 s |" in text
    assert "**0.70** of the time" in text and "0.25 s" in text and "10" in render.TITLES
