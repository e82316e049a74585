"""``nox -s tests``: every test group in its own environment, and one honest summary.

Groups, in order: host unit tests (no TF); the tests that run inside tf1.13, tf1.15 and tf2; the
cross-environment tests driven from the host. Each group is a pytest run with ``-m <marker>`` and a
JUnit XML file; the summary adds them up. A group that collects no test is a failure (pytest's exit 5),
unless extra pytest arguments (e.g. ``-k``) were given, which may legitimately select nothing.
"""

import os
import subprocess
import time
import xml.etree.ElementTree as ElementTree

from envs import paths, registry, venvs
from envs.report import format_table

NO_TESTS_COLLECTED = 5

# ``nox -s faults``: the fault tests at full size (docs/safety.md, "Reliability under faults")
FAULTS_SELECTION = "mutated or full_disk or killed_run or boxed or boxes_its_code"
FAULTS_ENV = "TFBRIDGE_FAULTS"
FAULTS_LOG_ENV = "TFBRIDGE_FAULTS_LOG"


def groups():
    """(environment, marker, label) for every test group, in run order."""
    result = [("host", "unit", "unit (host)")]
    for name in registry.TF_ENVIRONMENTS:
        result.append((name, registry.marker_name(name), "inside %s" % name))
    result.append(("host", "crossenv", "cross-environment"))
    return result


def run_all(pytest_args=(), log=print):
    """Run every group; print the per-group table and the closing line; return 0 only if all passed."""
    results_dir = os.path.join(paths.home(), "test-results")
    os.makedirs(results_dir, exist_ok=True)
    # Provision every environment first: creation (or reuse) is reported once, before any test, and a
    # missing interpreter stops the run here with its one paragraph.
    for env_name in registry.ENVIRONMENTS:
        venvs.ensure(env_name, log=log)
    rows = []
    total = {"passed": 0, "failed": 0, "skipped": 0}
    all_ok = True
    for env_name, marker, label in groups():
        python = venvs.python_of(env_name)
        junit = os.path.join(results_dir, "%s.xml" % marker)
        if os.path.exists(junit):
            os.remove(junit)
        command = [python, "-m", "pytest", "-m", marker, "--junitxml", junit, "-p", "no:cacheprovider"] \
            + test_paths(pytest_args) + list(pytest_args)
        if env_name != "host":  # say which TensorFlow really runs these tests
            versions = venvs.installed_versions(env_name)
            label_versions = ", ".join("%s %s" % (k, v) for k, v in sorted(versions.items()) if v)
            log("tests %s (%s)" % (label, label_versions))
        log("tests %s: %s" % (label, " ".join(command[1:])))
        started = time.time()
        code = subprocess.call(command, cwd=venvs.REPO_ROOT, env=venvs.run_environ(env_name))
        seconds = time.time() - started
        counts = junit_counts(junit)
        if code == NO_TESTS_COLLECTED and not pytest_args:
            outcome = "NO TESTS"
            all_ok = False
        elif code in (0, NO_TESTS_COLLECTED):
            outcome = "ok"
        else:
            outcome = "FAILED (exit %d)" % code
            all_ok = False
        for key in total:
            total[key] += counts[key]
        rows.append((label, env_name, counts["passed"], counts["failed"], counts["skipped"],
                     "%.0f s" % seconds, outcome))
    print()
    print(format_table(("group", "environment", "passed", "failed", "skipped", "time", "outcome"), rows))
    if total["passed"] == 0:
        all_ok = False
    # The closing line that CI reads: "N passed, N failed" alone on a line.
    print("tests: %d passed, %d failed, %d skipped" % (total["passed"], total["failed"], total["skipped"]),
          flush=True)
    return 0 if all_ok else 1


def test_paths(pytest_args):
    """``["tests"]``, unless an argument names a test file or folder (``tests/unit``,
    ``tests/integration/test_envs_crossenv.py::test_x``): then those alone run, in every group that has
    tests there (``nox -s tests -- tests/unit`` is the host unit tests, not the whole suite)."""
    for arg in pytest_args:
        if not str(arg).startswith("-") and os.path.exists(os.path.join(venvs.REPO_ROOT, str(arg).split("::")[0])):
            return []
    return ["tests"]


def junit_counts(path):
    """passed / failed (failures + errors) / skipped from a pytest JUnit XML file (zeros if absent)."""
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    if not os.path.exists(path):
        return counts
    try:
        root = ElementTree.parse(path).getroot()
    except ElementTree.ParseError:
        return counts
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    for suite in suites:
        tests = int(suite.get("tests", 0))
        failed = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
        skipped = int(suite.get("skipped", 0))
        counts["failed"] += failed
        counts["skipped"] += skipped
        counts["passed"] += tests - failed - skipped
    return counts


def run_faults(pytest_args=(), log=print):
    """The fault tests at full size (``TFBRIDGE_FAULTS=full``): every mutation campaign (over 1000 mutated
    inputs), every disk-full case, every kill point; then the mutations by kind and outcome. Returns 0
    only if all passed."""
    log_path = os.path.join(paths.home(), "test-results", "faults.jsonl")
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    if os.path.exists(log_path):
        os.remove(log_path)
    os.environ[FAULTS_ENV] = "full"
    os.environ[FAULTS_LOG_ENV] = log_path
    code = run_all(["-s", "-k", FAULTS_SELECTION] + list(pytest_args), log=log)
    print(mutation_summary(log_path), flush=True)
    return code


def mutation_summary(log_path):
    """A table of the mutation campaigns in ``log_path`` (one JSON line each): file type, kind, mutants,
    and how many ended in each outcome ("refused (exit N)", "handled", or what the tests hunt for)."""
    import json

    rows = []
    total = 0
    try:
        with open(log_path) as handle:
            campaigns = [json.loads(line) for line in handle if line.strip()]
    except (OSError, ValueError):
        campaigns = []
    for result in campaigns:
        for kind, counts in sorted(result.get("by_kind", {}).items()):
            count = sum(counts.values())
            total += count
            rows.append((result.get("label"), kind, count, ", ".join(
                "%s %d" % (outcome, number) for outcome, number in sorted(counts.items()))))
    table = format_table(("file", "kind", "mutants", "outcomes"), rows) if rows else "no mutation campaign ran"
    return "%s\nmutations: %d mutated inputs in %d campaigns" % (table, total, len(campaigns))
