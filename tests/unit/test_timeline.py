"""converters.timeline (issue 31): steps and their phases on one time axis, the critical path, the Gantt text;
and section 8 of the benchmark, which prints them. Pure logic: made-up stamps whose answers are known by hand.
"""

import pytest

from bench import render
from converters import runfolder, timeline

pytestmark = pytest.mark.unit

T0 = 1000.0  # the run's start on the monotonic clock


def step(name, start, end, env="tf2"):
    return {"step": name, "env": env, "seconds": end - start, "exit": 0,
            "mono_start": T0 + start, "mono_end": T0 + end}


def demo_line():
    steps = [step("resave", 2, 10, "tf1.13"), step("parity-tf2-cells", 2, 30), step("tflite_convert", 2, 25),
             step("parity-tf1.15", 10, 20, "tf1.15"), step("report", 31, 33)]
    phases = {"tflite_convert": [{"phase": "import TensorFlow, wait for model", "start": T0 + 2, "end": T0 + 9,
                                  "waits_on": "resave"},
                                 {"phase": "calibrate", "start": T0 + 10, "end": T0 + 20}],
              "resave": [{"phase": "reference outputs", "start": T0 + 6, "end": T0 + 10}]}
    host = [{"phase": "preflight", "start": T0, "end": T0 + 2}]
    return timeline.build(T0, steps, phases, host)


def test_times_are_relative_to_the_run_start_and_phases_keep_what_they_waited_on():
    line = demo_line()
    steps = dict((item["step"], item) for item in line if item["phase"] == "step")
    assert steps["resave"]["start"] == 2.0 and steps["resave"]["end"] == 10.0
    assert steps["resave"]["process"] == "resave" and steps["resave"]["env"] == "tf1.13"
    wait = [item for item in line if item.get("waits_on")][0]
    assert (wait["step"], wait["start"], wait["end"], wait["waits_on"]) == ("tflite_convert", 2.0, 9.0, "resave")
    host = [item for item in line if item["process"] == "host"][0]
    assert (host["phase"], host["start"], host["end"]) == ("preflight", 0.0, 2.0)
    assert [item["start"] for item in line] == sorted(item["start"] for item in line)


def test_the_critical_path_walks_back_from_the_last_step():
    path = timeline.critical_path(demo_line())
    # report (31-33) <- the cells (ended 30, before report started) <- nothing ended before they started at 2
    assert [entry["step"] for entry in path] == ["parity-tf2-cells", "report"]
    steps = [step("resave", 0, 10), step("tflite_convert", 0, 25), step("report", 25, 27)]
    waited = {"tflite_convert": [{"phase": "wait", "start": T0, "end": T0 + 10, "waits_on": "resave"}]}
    path = timeline.critical_path(timeline.build(T0, steps, waited))
    assert [entry["step"] for entry in path] == ["resave", "tflite_convert", "report"]
    assert path[1]["waited_until"] == 10.0


def test_gantt_has_one_line_per_entry_with_bars_inside_the_width():
    text = timeline.gantt(demo_line(), width=40)
    lines = text.splitlines()
    assert len(lines) == 1 + len(demo_line())
    assert all(line.count("|") == 2 for line in lines[1:])
    report = [line for line in lines if line.startswith("report")][0]
    bar = report[report.index("|") + 1:report.rindex("|")]
    assert len(bar) == 40 and bar.strip() == "#" * len(bar.strip()) and bar.rstrip().endswith("#")
    convert = lines.index([line for line in lines if line.startswith("tflite_convert")][0])
    assert "(waits on resave)" in lines[convert + 1]  # a step's phases follow it


def test_section_8_renders_medians_ratios_and_the_median_runs_timeline():
    def run(wall, window, step_s, rss):
        return {"wall_s": wall, "window_s": window, "step_s": step_s, "peak_rss_mb": rss, "timeline": demo_line()}

    data = {"models": [{"model": "ResNet50", "samples": {
        "hand": [{"window_s": 40.0, "wall_s": 50.0, "peak_rss_mb": 2000.0}] * 3,
        "plain": [run(40.0, 18.0, 24.0, 1500.0), run(44.0, 20.0, 26.0, 1500.0), run(42.0, 19.0, 25.0, 1500.0)],
        "auto": [run(50.0, 20.0, 30.0, 1600.0), run(54.0, 22.0, 32.0, 1600.0), run(52.0, 21.0, 31.0, 1600.0)]}}],
        "load_note": "under load"}
    text = "\n".join(render.render_speed(data))
    row = [line for line in text.splitlines() if line.startswith("| ResNet50")][0]
    assert "| 40.0 / 50.0 |" in row and "| 19.0 / 25.0 / 42.0 |" in row and "| 21.0 / 31.0 / 52.0 |" in row
    assert "| 0.53 | 1.04 | 1.24 |" in row  # 21 / 40, 52 / 50, 52 / 42
    assert "Timeline of a median `--quantize auto` run, ResNet50 (52.0 s whole" in text
    assert "Critical path: parity-tf2-cells" in text and "under load" in text


def test_a_failed_origin_evaluation_stops_the_conversion_waiting_for_it(tmp_path, monkeypatch):
    monkeypatch.setenv(runfolder.AWAIT_ENV, "30")
    runfolder.write_text(str(tmp_path / runfolder.EVAL_FAILED), "failed\n")
    from converters import errors

    with pytest.raises(errors.Interrupted) as caught:
        runfolder.await_file(str(tmp_path), "eval_tf1.13.json", failed=runfolder.EVAL_FAILED,
                             waited_for="the origin's evaluation (eval-tf1.13)")
    assert "the origin's evaluation (eval-tf1.13) it waited for failed" in caught.value.message


def test_section_8_renders_the_second_process_share_and_the_search_phases():
    def run(wall, step_s, rss, taken=None, calibrate=20.0):
        sample = {"wall_s": wall, "window_s": 20.0, "step_s": step_s, "peak_rss_mb": rss,
                  "search_timings": {"calibrate": calibrate, "plain_on_all": 2.0, "candidates": 7.0, "fit_all": 0.2},
                  "candidate_seconds": {"plain": 2.5, "bias": 1.3}}
        if taken is not None:
            sample["quantize_worker"] = {"submitted": 2, "taken": taken}
        return sample

    data = {"models": [{"model": "ResNet50", "samples": {
        "hand": [{"window_s": 40.0, "wall_s": 50.0, "peak_rss_mb": 2000.0}] * 3,
        "plain": [run(40.0, 38.0, 1500.0)] * 3,
        "auto": [run(53.0, 51.0, 1600.0, 2), run(55.0, 52.0, 1620.0, 2), run(54.0, 51.5, 1610.0, 2)],
        "auto-one-process": [run(57.0, 55.0, 1590.0), run(56.0, 54.0, 1580.0), run(58.0, 56.0, 1585.0)],
        "step-alone-auto": [{"window_s": 18.0, "wall_s": 24.0}] * 3,
        "step-alone-plain": [{"window_s": 12.0, "wall_s": 17.0}] * 3}}]}
    text = "\n".join(render.render_speed(data))
    assert "whole 54.0 s against 57.0 s (ratio 0.95)" in text
    assert "peak RSS 1610 MB against 1585 MB; the worker quantized 2 of the search's models" in text
    assert "auto window 18.0 s, process 24.0 s (window / recipe 0.45); plain window 12.0 s, process 17.0 s" in text
    assert "calibrate 20.00, plain_on_all 2.00, candidates 7.00, fit_all 0.20; candidates: plain 2.50, bias 1.30" in text
