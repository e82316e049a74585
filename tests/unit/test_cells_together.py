"""The tf2 parity cells in one process (``converters.parity_matrix.together``), and what happens when it dies.

The steps are recorded by a stand-in runner (the scheduling is what is tested here; the real steps run
in tests/integration/test_pipeline_crossenv.py).
"""

import json
import os

import pytest

from converters import errors, parity_matrix

pytestmark = pytest.mark.unit


class Runner(object):
    """Records the steps; the ``cells`` step writes the files of ``finishes`` and then dies (or not)."""

    def __init__(self, run_dir, finishes, dies):
        self.run_dir, self.finishes, self.dies, self.ran = run_dir, finishes, dies, []

    def step(self, name, env, module, args, nice=None):
        self.ran.append(name)
        if name == parity_matrix.TOGETHER_STEP:
            for output in self.finishes:
                with open(os.path.join(self.run_dir, output), "w") as handle:
                    json.dump({}, handle)
            if self.dies:
                raise errors.EnvironmentStepError("exited with status -9", step=name)


def chains_for(run_dir):
    chains = []
    for label, env, flavour in parity_matrix.cells_for("tf1.13", keras3=True):
        chain = [("parity-%s" % label, env, "converters.shared.parity", [run_dir, "--label", label, "--keras", flavour])]
        if label == parity_matrix.MIGRATED_LABEL:
            chain.insert(0, ("migrate", "tf2", "converters.tf2.migrate", [run_dir]))
        chains.append(chain)
    return chains


def test_the_tf2_cells_become_one_chain_and_tf115_stays_alone(tmp_path):
    merged = parity_matrix.together(str(tmp_path), chains_for(str(tmp_path)))
    assert len(merged) == 2
    assert [step[0] for step in merged[0]] == ["parity-tf1.15"]
    assert len(merged[1]) == 1 and callable(merged[1][0])


def test_all_finished_in_one_process_runs_nothing_else(tmp_path):
    run_dir = str(tmp_path)
    merged = parity_matrix.together(run_dir, chains_for(run_dir))
    runner = Runner(run_dir, ["parity_tf2.json", "parity_tf2-graph.json", "parity_tf2-keras3.json",
                              "migration.json", "parity_tf2-keras3-migrated.json"], dies=False)
    merged[1][0](runner)
    assert runner.ran == [parity_matrix.TOGETHER_STEP]


def test_a_process_that_dies_leaves_its_unfinished_cells_to_a_process_each(tmp_path):
    run_dir = str(tmp_path)
    merged = parity_matrix.together(run_dir, chains_for(run_dir))
    # died in the Keras 3 cell: tf2 and tf2-graph were written, the rest was not
    runner = Runner(run_dir, ["parity_tf2.json", "parity_tf2-graph.json"], dies=True)
    merged[1][0](runner)
    assert runner.ran == [parity_matrix.TOGETHER_STEP, "parity-tf2-keras3", "migrate", "parity-tf2-keras3-migrated"]


def test_a_migration_done_in_the_process_is_not_redone(tmp_path):
    run_dir = str(tmp_path)
    merged = parity_matrix.together(run_dir, chains_for(run_dir))
    runner = Runner(run_dir, ["parity_tf2.json", "parity_tf2-graph.json", "parity_tf2-keras3.json",
                              "migration.json"], dies=True)
    merged[1][0](runner)
    assert runner.ran == [parity_matrix.TOGETHER_STEP, "parity-tf2-keras3-migrated"]


def test_stale_cell_files_do_not_count_as_finished(tmp_path):
    run_dir = str(tmp_path)
    with open(os.path.join(run_dir, "parity_tf2.json"), "w") as handle:
        json.dump({"status": "match"}, handle)  # from some earlier run: removed before the process starts
    merged = parity_matrix.together(run_dir, chains_for(run_dir))
    runner = Runner(run_dir, [], dies=True)
    merged[1][0](runner)
    assert runner.ran[:2] == [parity_matrix.TOGETHER_STEP, "parity-tf2"]
