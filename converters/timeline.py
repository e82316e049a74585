"""The run's timeline: every step and its phases on one time axis, and what waited on what (issue 31).

For whom: ``convert_legacy`` (``report.json``'s ``timings.timeline`` and ``steps.json``) and the benchmark
(``bench/render.py`` prints it as a Gantt-like table). Host side, standard library only.

Times are seconds since the run started, from the machine's monotonic clock: the host stamps each step it
runs (``converters.steps.StepRunner``: ``mono_start`` / ``mono_end``), and the steps that have phases write
them on the same clock (``converters.shared.phases``: the re-save's in ``manifest.json``, the conversion
step's in ``tflite.json``). An entry is ``{step, phase, start, end, process}``: ``phase`` is ``"step"`` for a
step's whole process, else one part of it; ``process`` names the OS process it ran in (the step's, or
``host``); ``waits_on`` (on a waiting phase) names the step it waited for.

The critical path (``critical_path``) walks back from the step that ended last: from each step to the one
that ended last before it started (or, when it waited for another step's file, before it stopped waiting).
It is the chain of steps whose shortening would shorten the run; the others overlapped it. A step's waits
for its own threads (the conversion step's layer debugger) carry no ``waits_on``: they are not steps.
"""

import time

STEP = "step"
MIN_WAIT = 0.5  # seconds: a shorter "wait" found its file there already (and read it)


def now():
    """The clock of every stamp (``time.monotonic``: system-wide on Linux, the steps' clock too)."""
    return time.monotonic()


def build(run_start, steps, phases=None, host=None):
    """The timeline. ``steps``: ``StepRunner.timings`` entries (with ``mono_start`` / ``mono_end``);
    ``phases``: {step name: [{phase, start, end, waits_on?}]} on the monotonic clock; ``host``: the host's
    own phases, the same shape, process ``host``. Entries sorted by start."""
    timeline = []

    def rel(value):
        return round(value - run_start, 2)

    for step in steps:
        if step.get("mono_start") is None:
            continue
        timeline.append({"step": step["step"], "phase": STEP, "start": rel(step["mono_start"]),
                         "end": rel(step["mono_end"]), "process": step["step"], "env": step.get("env")})
    for name, entries in sorted((phases or {}).items()):
        for entry in entries or []:
            item = {"step": name, "phase": entry["phase"], "start": rel(entry["start"]), "end": rel(entry["end"]),
                    "process": name}
            if entry.get("waits_on"):
                item["waits_on"] = entry["waits_on"]
            timeline.append(item)
    for entry in host or []:
        item = {"step": entry.get("step", "host"), "phase": entry["phase"], "start": rel(entry["start"]),
                "end": rel(entry["end"]), "process": "host"}
        if entry.get("waits_on"):
            item["waits_on"] = entry["waits_on"]
        timeline.append(item)
    timeline.sort(key=lambda item: (item["start"], item["phase"] != STEP))
    return timeline


def critical_path(timeline):
    """The steps on the critical path, first to last: [{step, start, end, waited_until?}] (module docstring).

    From the step that ended last, back: a step that really waited (a phase with ``waits_on``, longer than
    ``MIN_WAIT`` seconds) for another step's file was held by that step (its file may come before its end:
    the re-save's model); otherwise by the step that ended last before it could start (it was started, or
    its wait for something that is no step ended)."""
    steps = [item for item in timeline if item["phase"] == STEP]
    if not steps:
        return []
    by_name = dict((item["step"], item) for item in steps)
    waits = {}
    for item in timeline:
        if item["phase"] != STEP and item.get("waits_on") and item["end"] - item["start"] > MIN_WAIT:
            if item["end"] > waits.get(item["step"], {"end": -1.0})["end"]:
                waits[item["step"]] = item
    current = max(steps, key=lambda item: item["end"])
    path = []
    seen = set()
    while current is not None and current["step"] not in seen:
        seen.add(current["step"])
        entry = {"step": current["step"], "start": current["start"], "end": current["end"]}
        ready = current["start"]
        wait = waits.get(current["step"])
        held_by = None
        if wait is not None:
            entry["waited_until"] = wait["end"]
            ready = max(ready, wait["end"])
            held_by = by_name.get(wait["waits_on"])
        path.append(entry)
        if held_by is not None and held_by["step"] not in seen:
            current = held_by
            continue
        before = [item for item in steps if item["step"] not in seen and item["end"] <= ready + 0.5]
        current = max(before, key=lambda item: item["end"]) if before else None
    return list(reversed(path))


def gantt(timeline, width=60, total=None):
    """The timeline as text: one line per entry (steps, their phases indented), a bar over ``width``
    columns of the run's length. For the benchmark's report and for reading a run by hand."""
    if not timeline:
        return ""
    total = total or max(item["end"] for item in timeline) or 1.0
    scale = width / float(total)
    lines = []
    label_width = max(len(_label(item)) for item in timeline)
    ordered = _grouped(timeline)
    for item in ordered:
        first = int(round(item["start"] * scale))
        last = max(first + 1, int(round(item["end"] * scale)))
        bar = " " * first + ("#" if item["phase"] == STEP else "=") * (last - first)
        lines.append("%-*s %6.1f %6.1f %6.1f |%-*s|" % (label_width, _label(item), item["start"], item["end"],
                                                      item["end"] - item["start"], width, bar[:width]))
    header = "%-*s %6s %6s %6s  %s" % (label_width, "step / phase", "start", "end", "s", "0 .. %.1f s" % total)
    return "\n".join([header] + lines)


def _label(item):
    if item["phase"] == STEP:
        return item["step"]
    label = "  " + item["phase"]
    if item.get("waits_on"):
        label += " (waits on %s)" % item["waits_on"]
    return label


def _grouped(timeline):
    """Steps in order of start, each followed by its phases (and the host's phases as a step of their own)."""
    steps = [item for item in timeline if item["phase"] == STEP]
    phases = [item for item in timeline if item["phase"] != STEP]
    ordered = []
    used = set()
    for step in steps:
        ordered.append(step)
        for index, item in enumerate(phases):
            if item["step"] == step["step"] and item["process"] != "host" and index not in used:
                ordered.append(item)
                used.add(index)
    rest = [item for index, item in enumerate(phases) if index not in used]
    return ordered + rest
