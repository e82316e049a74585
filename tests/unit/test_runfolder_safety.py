"""A run never deletes what it did not write: ``runfolder.check_out`` and ``runfolder.publish_run``.

Pure logic on temporary folders: no TensorFlow, no subprocess. The commands themselves are exercised with
real steps in tests/integration/test_out_safety_crossenv.py.
"""

import os

import pytest

from converters import runfolder
from converters.errors import UsageError

pytestmark = pytest.mark.unit


def write(path, text="x"):
    path = str(path)
    if not os.path.isdir(os.path.dirname(path)):
        os.makedirs(os.path.dirname(path))
    with open(path, "w") as handle:
        handle.write(text)
    return path


def read(path):
    with open(str(path)) as handle:
        return handle.read()


def tfbridge_run(folder, files=("manifest.json", "report.json", "logs/resave.log")):
    for name in files:
        write(os.path.join(str(folder), name), "old " + name)
    runfolder.write_marker(str(folder), "verify_upgrade")
    return str(folder)


@pytest.fixture(autouse=True)
def elsewhere(tmp_path, monkeypatch):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(str(cwd))


def refused(out, protected=(), *words):
    with pytest.raises(UsageError) as caught:
        runfolder.check_out(str(out), [str(p) for p in protected])
    paragraph = caught.value.paragraph()
    assert "\n" not in paragraph
    for word in words:
        assert word in paragraph, (word, paragraph)
    return paragraph


def test_a_new_or_empty_folder_or_a_tfbridge_run_folder_is_accepted(tmp_path):
    model = write(tmp_path / "models" / "m.h5")
    assert runfolder.check_out(str(tmp_path / "runs" / "m"), [model]) == str(tmp_path / "runs" / "m")
    (tmp_path / "empty").mkdir()
    assert runfolder.check_out(str(tmp_path / "empty"), [model]) == str(tmp_path / "empty")
    run = tfbridge_run(tmp_path / "run")
    write(os.path.join(run, "notes.txt"))  # a user's file beside tfbridge's: kept, not a reason to refuse
    assert runfolder.check_out(run, [model]) == run


def test_a_non_empty_foreign_folder_is_refused_and_untouched(tmp_path):
    notes = write(tmp_path / "mine" / "notes.txt", "my notes")
    paragraph = refused(tmp_path / "mine", (), "did not make", "not empty", "new folder")
    assert runfolder.RUN_MARKER in paragraph
    assert os.listdir(str(tmp_path / "mine")) == ["notes.txt"] and read(notes) == "my notes"


def test_a_file_as_out_is_refused(tmp_path):
    refused(write(tmp_path / "file"), (), "not a folder")


@pytest.mark.parametrize("where", ["model_folder", "model_file_itself", "ancestor_of_model"])
def test_out_equal_to_or_containing_the_model_is_refused(tmp_path, where):
    model = write(tmp_path / "models" / "face" / "m.h5")
    out = {"model_folder": tmp_path / "models" / "face", "model_file_itself": model,
           "ancestor_of_model": tmp_path / "models"}[where]
    refused(out, [model], str(model))


def test_out_containing_the_model_is_refused_even_when_it_is_a_tfbridge_run_folder(tmp_path):
    run = tfbridge_run(tmp_path / "run")
    model = write(os.path.join(run, "model_copy.h5"))
    refused(run, [model], "contains the input")


@pytest.mark.parametrize("kind", ["savedmodel", "calib_folder"])
def test_out_inside_a_model_folder_or_a_data_folder_is_refused(tmp_path, kind):
    folder = tmp_path / kind
    write(folder / "saved_model.pb")
    refused(folder / "run", [folder], "inside the input folder")
    refused(folder, [folder], "is the input")


@pytest.mark.parametrize("option", ["calib", "probe", "eval", "custom_objects", "arch"])
def test_out_containing_any_data_path_is_refused(tmp_path, option):
    data = write(tmp_path / "data" / (option + ".npy"))
    refused(tmp_path / "data", [write(tmp_path / "m.h5"), data], "contains the input")


def test_missing_and_non_path_inputs_are_ignored(tmp_path):
    assert runfolder.check_out(str(tmp_path / "run"), [None, "", "skimage", str(tmp_path / "nope.h5")])


def test_out_that_is_or_contains_the_current_folder_is_refused(tmp_path):
    refused(".", (), "current folder")
    refused(tmp_path, (), "current folder")


def test_a_symlink_to_the_model_folder_is_seen_through(tmp_path):
    model = write(tmp_path / "models" / "m.h5")
    os.symlink(str(tmp_path / "models"), str(tmp_path / "link"))
    refused(tmp_path / "link", [model], "contains the input")


def test_a_users_file_where_tfbridge_writes_is_named_and_refused(tmp_path):
    run = tfbridge_run(tmp_path / "run", files=("manifest.json",))
    write(os.path.join(run, "report.md"), "the user's own report")
    write(os.path.join(run, "logs", "my.log"))
    paragraph = refused(run, (), "report.md", os.path.join("logs", "my.log"), "Move or rename")
    assert "manifest.json" not in paragraph


def test_publish_keeps_every_file_tfbridge_did_not_write(tmp_path):
    out = tfbridge_run(tmp_path / "run", files=("manifest.json", "report.json", "parity_tf2.json", "logs/a.log"))
    write(os.path.join(out, "notes.txt"), "my notes")
    write(os.path.join(out, "sub", "deeper", "data.csv"), "1,2")
    os.symlink("notes.txt", os.path.join(out, "link-to-notes"))
    (tmp_path / "run" / "empty-folder").mkdir()
    new = str(tmp_path / ".run.partial-1")
    write(os.path.join(new, "manifest.json"), "new manifest")
    write(os.path.join(new, "report.json"), "new report")
    runfolder.publish_run(new, out, "verify_upgrade")
    assert not os.path.exists(new)
    assert sorted(os.listdir(str(tmp_path))) == ["cwd", "run"], "no .old- or .partial- folder left"
    assert read(os.path.join(out, "notes.txt")) == "my notes"
    assert read(os.path.join(out, "sub", "deeper", "data.csv")) == "1,2"
    assert os.readlink(os.path.join(out, "link-to-notes")) == "notes.txt"
    assert os.path.isdir(os.path.join(out, "empty-folder"))
    assert read(os.path.join(out, "manifest.json")) == "new manifest"
    assert not os.path.exists(os.path.join(out, "parity_tf2.json")), "tfbridge's old files are replaced"
    assert not os.path.exists(os.path.join(out, "logs"))
    marker = runfolder.read_marker(out)
    assert marker["files"] == ["manifest.json", "report.json"] and marker["command"] == "verify_upgrade"
    assert runfolder.user_files(out) == ["link-to-notes", "notes.txt",
                                         os.path.join("sub", "deeper", "data.csv")]

    # and again: the kept files are still the user's, not listed as tfbridge's
    newer = str(tmp_path / ".run.partial-2")
    write(os.path.join(newer, "report.json"), "newer report")
    runfolder.publish_run(newer, out, "convert_legacy")
    assert read(os.path.join(out, "notes.txt")) == "my notes"
    assert runfolder.read_marker(out)["files"] == ["report.json"]


def test_publish_into_a_new_or_empty_folder(tmp_path):
    for out in (str(tmp_path / "new"), str(tmp_path / "empty")):
        if out.endswith("empty"):
            os.mkdir(out)
        partial = str(tmp_path / ".partial")
        write(os.path.join(partial, "report.json"))
        runfolder.publish_run(partial, out, "verify_upgrade")
        assert runfolder.is_run_folder(out) and runfolder.user_files(out) == []


def test_publish_refuses_a_clash_and_changes_nothing(tmp_path):
    out = tfbridge_run(tmp_path / "run", files=("manifest.json",))
    write(os.path.join(out, "model.pb"), "the user's graph")  # not written by tfbridge, and the new run has one
    partial = str(tmp_path / ".partial")
    write(os.path.join(partial, "model.pb"), "new graph")
    with pytest.raises(UsageError, match="model.pb"):
        runfolder.publish_run(partial, out, "verify_upgrade")
    assert read(os.path.join(out, "model.pb")) == "the user's graph"
    assert read(os.path.join(out, "manifest.json")) == "old manifest.json"


def test_publish_refuses_a_folder_that_became_foreign_during_the_run(tmp_path):
    out = str(tmp_path / "run")
    write(os.path.join(out, "appeared.txt"))
    partial = str(tmp_path / ".partial")
    write(os.path.join(partial, "report.json"))
    with pytest.raises(UsageError, match="changed during the run"):
        runfolder.publish_run(partial, out, "verify_upgrade")
    assert os.listdir(out) == ["appeared.txt"]


def test_add_to_marker_unions_and_forgets_removed_files(tmp_path):
    run = tfbridge_run(tmp_path / "run", files=("a.json", "b.json"))
    os.remove(os.path.join(run, "b.json"))
    write(os.path.join(run, "c.json"))
    runfolder.add_to_marker(run, "convert", ["c.json"])
    assert runfolder.read_marker(run)["files"] == ["a.json", "c.json"]


def _dead_pid():
    """The id of a process that has ended (a child reaped at once)."""
    import subprocess

    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_what_a_killed_run_left_is_cleaned_by_the_next_run_of_that_out(tmp_path):
    out = tmp_path / "run"
    dead, alive = _dead_pid(), os.getpid()
    stale = tmp_path / (".run.partial-%d-abc" % dead)
    (stale / "logs").mkdir(parents=True)
    (stale / "model.h5").write_bytes(b"half")
    running = tmp_path / (".run.partial-%d-def" % os.getppid())  # a run still going: left alone
    running.mkdir()
    other = tmp_path / (".other.partial-%d-abc" % dead)  # another --out's: not this run's business
    other.mkdir()
    old = tmp_path / (".run.old-%d-xyz" % dead)  # killed between publishing's two renames
    old.mkdir()
    runfolder.write_json(str(old / "report.json"), {"complete": True})
    runfolder.write_marker(str(old), "convert_legacy")
    done = runfolder.recover(str(out))
    assert sorted(done) == ["removed .run.partial-%d-abc" % dead, "restored .run.old-%d-xyz" % dead]
    assert sorted(os.listdir(str(tmp_path))) == sorted([".other.partial-%d-abc" % dead, running.name, "run", "cwd"])
    assert runfolder.read_json(str(out / "report.json")) == {"complete": True}
    # with the --out present, a stale old folder is only removed
    old.mkdir()
    runfolder.write_marker(str(old), "convert_legacy")
    assert runfolder.recover(str(out)) == ["removed .run.old-%d-xyz" % dead]
    assert alive == os.getpid() and runfolder.partial_folder(str(out)).startswith(
        str(tmp_path / (".run.partial-%d-" % alive)))
