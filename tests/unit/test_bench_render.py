"""bench/render.py: merging a partial benchmark run into the stored document, and rendering BENCHMARKS.md.

Pure logic (no TensorFlow, no subprocess): the figures are made-up samples whose medians and ratios are
known by hand.
"""

import json

import pytest

from bench import render

pytestmark = pytest.mark.unit


def conversion_section(tfbridge_window=10.0, identical=True):
    def sample(window, wall, rss, sha="a" * 64, total=None):
        return {"window_s": window, "wall_s": wall, "peak_rss_mb": rss, "rss_total_mb": total, "sha256": sha,
                "cosine": 0.9996}

    shards = 2 if identical is not None else 1
    return {"samples": 100, "images": "real", "preprocess": "vggface2", "no_layer_debug": True, "models": [{
        "model": "ResNet50", "zoo": "vggface-resnet50",
        "samples": {"tfbridge": [dict(sample(tfbridge_window, 20.0, 1000.0, total=1500.0), shards=shards,
                                      calibration_route="calibrator"),
                                 sample(tfbridge_window + 2, 22.0, 1100.0, total=1600.0),
                                 sample(tfbridge_window - 2, 18.0, 900.0, total=1400.0)],
                    "keras": [sample(40.0, 50.0, 2000.0), sample(40.0, 52.0, 2000.0), sample(40.0, 48.0, 2000.0)],
                    "frozen_graph": [sample(20.0, 30.0, 1800.0, sha="c" * 64)] * 3},
        "default_sha256": "a" * 64,
        "sequential": {"window_s": 14.0, "sha256": "a" * 64, "shards": 1, "calibration_route": "calibrator"},
        "sharded": {"window_s": 12.0, "sha256": "a" * 64 if identical in (True, None) else "b" * 64,
                    "shards": shards, "calibration_route": "calibrator"},
        "routes": {"tfbridge": "frozen_graph", "keras": "keras", "frozen_graph": "frozen_graph"}}]}


def end_to_end_section():
    return {"demo": [{"kind": "cold", "wall_s": 30.0}],
            "big": {"model": "ResNet50", "args": ["MODEL.h5"], "convert_legacy": [{"wall_s": 60.0}, {"wall_s": 66.0}],
                    "by_hand": [{"wall_s": 50.0, "window_s": 40.0}, {"wall_s": 60.0, "window_s": 44.0}],
                    "rerun": {"wall_s": 0.63},
                    "breakdown": {"steps": [{"step": "resave", "env": "tf1.13", "seconds": 12.5, "status": "ok"}],
                                  "stages": {"verify": 30.0, "convert_stage": 25.0}}}}


def invocation(date, only, quick=False):
    return {"date": date, "command": "nox -s bench -- --only " + ",".join(only), "runs": 3, "quick": quick,
            "only": only, "machine": "test machine", "versions": "tf2: x", "minutes": 1.0}


def test_merge_of_a_partial_run_keeps_the_other_sections_and_their_invocation():
    first = render.merge(render.empty_document(), "run-1", invocation("d1", ["2", "6"]),
                         {"2": conversion_section(10.0), "6": {"how": "vela", "entries": []}})
    second = render.merge(first, "run-2", invocation("d2", ["2"]), {"2": conversion_section(8.0)})
    assert second["sections"]["6"] == first["sections"]["6"]  # kept as it was, with its own invocation
    assert second["sections"]["6"]["invocation"] == "run-1"
    assert second["sections"]["2"]["invocation"] == "run-2"
    assert second["sections"]["2"]["data"]["models"][0]["samples"]["tfbridge"][0]["window_s"] == 8.0
    assert set(second["invocations"]) == {"run-1", "run-2"}
    assert first["sections"]["2"]["data"]["models"][0]["samples"]["tfbridge"][0]["window_s"] == 10.0  # not mutated
    third = render.merge(second, "run-3", invocation("d3", ["2", "6"]),
                         {"2": conversion_section(), "6": {"how": "vela", "entries": []}})
    assert set(third["invocations"]) == {"run-3"}  # invocations no section refers to are dropped
    json.dumps(third)  # stays plain JSON


def test_conversion_figures_are_medians_and_ratios_within_one_section():
    figures = render.conversion_figures(conversion_section(10.0)["models"][0])
    assert figures["tfbridge"]["window"] == 10.0 and figures["keras"]["window"] == 40.0
    assert figures["ratio_keras"] == pytest.approx(0.25)
    assert figures["ratio_graph"] == pytest.approx(0.5)
    assert figures["ratio_wall_keras"] == pytest.approx(20.0 / 50.0)
    assert figures["ratio_rss"] == pytest.approx(1500.0 / 2000.0)  # all processes of the sharded step
    assert figures["identical"] is True
    assert render.conversion_figures(conversion_section(identical=False)["models"][0])["identical"] is False
    assert figures["same_as_same_route"] is False  # TFLite's own calibrator wrote other bytes ("c" * 64)


def test_sharding_is_judged_only_when_the_calibrator_run_sharded():
    sharded = render.conversion_figures(conversion_section()["models"][0])
    value, met = render.sharding_verdict(sharded)
    assert value.startswith("identical (calibrator, 2 shard(s)") and value.endswith("too: yes)") and met == "yes"
    differ = render.conversion_figures(conversion_section(identical=False)["models"][0])
    assert render.sharding_verdict(differ) == ("differ", "**no**")
    other_default = conversion_section()["models"][0]
    other_default["default_sha256"] = "d" * 64  # shards equal one process, but the default route wrote other bytes
    value, met = render.sharding_verdict(render.conversion_figures(other_default))
    assert value.endswith("too: no)") and met == "**no**"
    unsharded = render.conversion_figures(conversion_section(identical=None)["models"][0])
    value, met = render.sharding_verdict(unsharded)
    assert value.startswith("not tested") and met == "-"


def test_rendered_file_has_every_section_and_issue13_verdicts():
    document = render.merge(render.empty_document(), "run-1", invocation("d1", ["2", "4"]),
                            {"2": conversion_section(30.0), "4": end_to_end_section()})
    text = render.render(document)
    for number, title in render.TITLES.items():
        assert "## %s. %s" % (number, title) in text
    assert "Not measured yet: `nox -s bench -- --only 1`." in text
    table = text[text.index("## Issue 13's figures"):text.index("## 1.")]
    conversion = [line for line in table.splitlines() if line.startswith("| int8 conversion")][0]
    assert "| 0.75 |" in conversion and "**no**" in conversion  # 30 / 40 > 0.5
    whole = [line for line in table.splitlines() if line.startswith("| whole")][0]
    assert "| 1.15 |" in whole and "| yes |" in whole  # median 63 / median 55 = 1.145
    rerun = [line for line in table.splitlines() if line.startswith("| unchanged rerun")][0]
    assert "| 0.010 |" in rerun and "| yes |" in rerun  # 0.63 / 63
    identical = [line for line in table.splitlines() if line.startswith("| sharded")][0]
    assert "identical" in identical and "| yes |" in identical
    assert "| resave | tf1.13 | 12.5 |" in text  # the per-stage breakdown
    assert "QUICK MODE" not in text


def test_quick_invocations_are_flagged_and_a_partial_rerender_keeps_old_tables():
    document = render.merge(render.empty_document(), "run-1", invocation("d1", ["5"]), {"5": {
        "models": [{"model": "digits", "data": "test split", "weights": "per-tensor", "samples": 540,
                    "float_top1": 98.0, "int8_top1": 96.5, "drop_points": 1.5, "drop_ci95": [0.4, 2.9],
                    "flipped": 9, "layers": [{"name": "fc1", "op": "FULLY_CONNECTED", "rmse_over_scale": 0.9}]}],
        "latency": []}})
    before = render.render(document)
    assert ("| digits | test split | per-tensor | 540 | 98.00 | 96.50 | 1.50 | [0.40, 2.90] | 9 | **no** | "
            "0.90 LSB (FULLY_CONNECTED) |") in before
    assert "`fc1` (FULLY_CONNECTED, 0.90 LSB)" in before  # why, where the target is missed
    later = render.merge(document, "run-2", invocation("d2", ["3"], quick=True),
                         {"3": {"model": "small", "rows": [{"samples": 10, "window_s": 1.0, "wall_s": 5.0,
                                                            "peak_rss_mb": 100.0}]}})
    after = render.render(later)
    accuracy = before[before.index("## 5."):before.index("## 6.")]
    assert accuracy.replace("`run-1` (d1)", "") in after.replace("`run-1` (d1)", "")
    assert "QUICK MODE" in after


def fidelity_section():
    def row(candidate, raw, centered, r, source="report", **extra):
        return dict({"weights": "per-channel", "candidate": candidate, "sqnr_db": raw, "sqnr_centered_db": centered,
                     "sqnr_centered_db_from": source, "correlation": r, "correlation_from": source, "cosine": 0.99,
                     "top1_agreement": 1.0, "float_top1": 87.5, "int8_top1": 90.0, "convert_s": 11.0,
                     "chosen": candidate, "validation": {"plain": 19.0, "bias": 23.4}}, **extra)

    return {"model": {"architecture": "MobileNet", "split": {"calibration": 120, "probe": 40, "eval": 40},
                      "probe_dominant_share": 0.95, "probe_dominant_class": "face",
                      "float_top1_tf1": {"eval": 87.5, "probe": 97.5}, "preprocess": "tf"},
            "rows": [row("auto", 31.2, 18.1, 0.993, chosen="plain", why="plain kept"),
                     {"weights": "per-channel", "candidate": "constant output", "sqnr_db": 13.1,
                      "sqnr_centered_db": 0.0, "correlation": 0.0, "sqnr_centered_db_from": "bench",
                      "correlation_from": "bench", "cosine": 0.975, "top1_agreement": 0.975},
                     row("plain", 31.2, 18.1, 0.993),
                     row("bias", 41.2, 25.0, 0.999, source="bench", why="forced by the benchmark (...)"),
                     row("cle", 31.2, 18.1, 0.993, chosen="plain", cle_dropped="float check"),
                     {"weights": "per-channel", "candidate": "adaround", "note": "conversion failed (exit 2)"}],
            "notes": ["ebias: not measured, this code's `--quantize` refuses it (unknown rewrite)."]}


def test_fidelity_section_marks_figures_the_bench_measured_and_candidates_not_built():
    document = render.merge(render.empty_document(), "run-1", invocation("d1", ["9"]), {"9": fidelity_section()})
    text = render.render(document)
    section = text[text.index("## 9."):]
    assert "a probe of 40 that is 95 % faces" in section
    assert "| per-channel | **auto** | 31.2 | 18.1 | 0.9930 | 0.9900 | 1.000 | 87.5 / 90.0 | 11.0 | 19.0 | chose **plain** |" \
        in section
    assert "| per-channel | constant output | 13.1 | 0.0 | 0.0000 |" in section  # no '*': it is the bench's by nature
    assert "| per-channel | bias | 41.2 | 25.0* | 0.9990* |" in section and "| 23.4 | forced |" in section
    assert "| per-channel | cle | 31.2 |" in section and "not built (plain written); cle dropped" in section
    assert "| per-channel | adaround | - | - | - | - | - | - | - | - | conversion failed (exit 2) |" in section
    assert "- ebias: not measured" in section
