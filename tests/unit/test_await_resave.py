"""Steps started beside the re-save (issue 13): they wait for its files, and stop when it fails.

``converters.runfolder.await_file`` is plain file logic (no TensorFlow); the re-save writes the files the
real steps wait for in tests/integration/test_pipeline_crossenv.py. Here a thread plays the re-save.
"""

import os
import threading
import time

import pytest

from converters import errors, parity_matrix, runfolder

pytestmark = pytest.mark.unit


@pytest.fixture
def awaiting(monkeypatch):
    monkeypatch.setenv(runfolder.AWAIT_ENV, "30")


def later(seconds, action):
    thread = threading.Thread(target=lambda: (time.sleep(seconds), action()))
    thread.start()
    return thread


def test_without_the_variable_nothing_waits(tmp_path, monkeypatch):
    monkeypatch.delenv(runfolder.AWAIT_ENV, raising=False)
    called = []
    started = time.time()
    path = runfolder.await_file(str(tmp_path), runfolder.MANIFEST, before=lambda: called.append(1))
    assert path == os.path.join(str(tmp_path), runfolder.MANIFEST)
    assert not os.path.exists(path) and not called  # the step itself then says the file is missing
    assert time.time() - started < 0.5


def test_waits_for_the_file_and_warms_up_first(tmp_path, awaiting):
    called = []
    writer = later(0.3, lambda: runfolder.write_json(str(tmp_path / runfolder.MANIFEST), {"done": True}))
    started = time.time()
    path = runfolder.await_file(str(tmp_path), runfolder.MANIFEST, before=lambda: called.append(time.time()))
    writer.join()
    assert runfolder.read_json(path) == {"done": True}
    assert time.time() - started >= 0.25
    assert len(called) == 1 and called[0] - started < 0.25  # the warm-up runs before the wait, once


def test_a_file_already_there_is_not_waited_for(tmp_path, awaiting):
    runfolder.write_json(str(tmp_path / runfolder.MANIFEST), {})
    called = []
    runfolder.await_file(str(tmp_path), runfolder.MANIFEST, before=lambda: called.append(1))
    assert not called


def test_a_failed_resave_stops_the_waiting_step(tmp_path, awaiting):
    marker = later(0.2, lambda: runfolder.write_text(str(tmp_path / runfolder.RESAVE_FAILED), "failed\n"))
    started = time.time()
    with pytest.raises(errors.Interrupted) as caught:
        runfolder.await_file(str(tmp_path), runfolder.reference_name("tf1.13"))
    marker.join()
    assert time.time() - started < 5
    assert "re-save it waited for failed" in caught.value.message


def test_gives_up_after_the_limit(tmp_path, monkeypatch):
    monkeypatch.setenv(runfolder.AWAIT_ENV, "0.2")
    with pytest.raises(errors.Interrupted) as caught:
        runfolder.await_file(str(tmp_path), runfolder.MANIFEST)
    assert "did not appear within 0.2 s" in caught.value.message


class FailingRunner(object):
    def __init__(self):
        self.niceness = []

    def step(self, name, env, module, args, nice=None):
        self.niceness.append(nice)
        raise errors.ModelLoadError("the model does not load", step=name)


def test_the_resave_item_marks_its_failure_for_the_waiting_steps(tmp_path):
    item = parity_matrix.resave_item(str(tmp_path), ["resave"], "tf1.13")
    runner = FailingRunner()
    with pytest.raises(errors.ModelLoadError):
        item(runner)
    assert os.path.exists(str(tmp_path / runfolder.RESAVE_FAILED))
    assert item.done.is_set() and item.failed
    assert runner.niceness == [0]  # the step every other one waits for runs at full priority
