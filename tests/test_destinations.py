"""Where a command may write (runfiles/destinations.py): files it reads, files a run owns, missing
and unwritable folders; and where a resumed run continues."""
import os

import pytest

from resnet_cifar.errors import UserError
from resnet_cifar.runfiles.destinations import (
    Read,
    check_empty_run_dir,
    check_file,
    check_folder,
    check_new_run_dir,
    resume_target,
)


@pytest.fixture
def run(tmp_path):
    """A folder holding a run's files."""
    folder = tmp_path / "run"
    (folder / "report").mkdir(parents=True)
    for name in ("config.json", "metrics.csv", "last.pt", "best.pt"):
        (folder / name).write_text(name)
    return folder


def test_a_file_destination_names_what_is_wrong(tmp_path):
    check_file(tmp_path / "ok.json", "--output")
    with pytest.raises(UserError, match=f"^--output {tmp_path}/no/x.json: the folder {tmp_path}/no does not exist$"):
        check_file(tmp_path / "no" / "x.json", "--output")
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match=f"^--output {tmp_path}/file/x.json: {tmp_path}/file is not a folder$"):
        check_file(tmp_path / "file" / "x.json", "--output")
    with pytest.raises(UserError, match="is a folder; give a file name$"):
        check_file(tmp_path, "--output")


@pytest.mark.parametrize("name", ["last.pt", "best.pt", "config.json", "metrics.csv", "report/report.json"])
def test_a_runs_files_are_never_a_destination(run, name):
    what = "report/" if name.startswith("report/") else name
    with pytest.raises(UserError, match=f"^--output {run / name} is the {what} of the run in {run}, which is never "
                                        f"overwritten; choose another name$"):
        check_file(run / name, "--output")


def test_the_same_names_outside_a_run_are_fine(tmp_path):
    (tmp_path / "report").mkdir()
    check_file(tmp_path / "last.pt", "--output")
    check_file(tmp_path / "report" / "report.json", "--output")


def test_what_a_command_reads_is_never_a_destination(tmp_path):
    data = tmp_path / "data" / "cifar-10-batches-py"
    data.mkdir(parents=True)
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_text("")
    reads = (Read(checkpoint, "the checkpoint"), Read(data, "the CIFAR-10 data"))
    with pytest.raises(UserError, match=f"^--output {checkpoint} is the checkpoint, which this command reads"):
        check_file(checkpoint, "--output", reads)
    with pytest.raises(UserError, match=f"^--output {data}/x.csv is inside the CIFAR-10 data \\({data}\\)"):
        check_file(data / "x.csv", "--output", reads)
    with pytest.raises(UserError, match="^--run-dir .* is inside the CIFAR-10 data"):
        check_new_run_dir(data / "run", reads)


def test_a_folder_destination(run, tmp_path):
    check_folder(tmp_path / "new" / "deeper", "--report-dir")
    with pytest.raises(UserError, match=f"^--report-dir {run}/report is the report/ of the run in {run}"):
        check_folder(run / "report", "--report-dir")
    with pytest.raises(UserError, match="is a file, not a folder$"):
        check_folder(run / "last.pt", "--report-dir")
    if os.geteuid() != 0:  # root ignores permission bits
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(UserError, match=f"the folder {locked} is not writable$"):
            check_folder(locked / "report", "--report-dir")


def test_a_new_run_needs_a_folder_without_a_run(run, tmp_path):
    check_new_run_dir(tmp_path / "fresh")
    with pytest.raises(UserError, match=f"^--run-dir {run} already holds a run; resume it with --resume"):
        check_new_run_dir(run)
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    (seeds / "seeds.json").write_text("{}")
    with pytest.raises(UserError, match="already holds a --seeds set of runs"):
        check_new_run_dir(seeds)


def test_a_continued_run_needs_a_new_or_empty_folder(run, tmp_path):
    (tmp_path / "empty").mkdir()
    check_empty_run_dir(tmp_path / "empty", (), run / "last.pt")
    check_empty_run_dir(tmp_path / "new", (), run / "last.pt")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("")
    with pytest.raises(UserError, match="holds other files; continuing the run of .* needs a new or empty folder"):
        check_empty_run_dir(tmp_path / "other", (), run / "last.pt")
    with pytest.raises(UserError, match="holds another run;"):
        check_empty_run_dir(run, (), tmp_path / "elsewhere" / "last.pt")


PAYLOAD = {"epoch": 1, "global_step": 7}


def test_a_runs_last_checkpoint_continues_in_place(run):
    target = resume_target(run / "last.pt", None, PAYLOAD, ())
    assert target.in_place and target.run_dir == run.resolve() and target.origin is None
    assert resume_target(run / "last.pt", str(run), PAYLOAD, ()).in_place


def test_any_other_checkpoint_continues_as_a_new_run(run, tmp_path):
    target = resume_target(run / "best.pt", None, PAYLOAD, ())
    assert not target.in_place and target.run_dir is None  # a new runs/<model>-<time>
    assert target.origin == {"checkpoint": str((run / "best.pt").resolve()), "run_dir": str(run.resolve()),
                             "epoch": 1, "global_step": 7}
    assert target.describe(run / "best.pt", tmp_path / "new") == (
        f"continuing from {run / 'best.pt'} (best.pt is not its run's latest checkpoint, {run.resolve() / 'last.pt'}) "
        f"at epoch 1, step 7, as a new run in {tmp_path / 'new'}; {run.resolve()} is left as it is")
    named = resume_target(run / "best.pt", str(tmp_path / "named"), PAYLOAD, ())
    assert named.run_dir == tmp_path / "named" and not named.in_place
    with pytest.raises(UserError, match=f"^--run-dir {run} is the run that best.pt comes from, whose later state"):
        resume_target(run / "best.pt", str(run), PAYLOAD, ())


def test_a_last_checkpoint_continued_elsewhere_leaves_its_run(run, tmp_path):
    target = resume_target(run / "last.pt", str(tmp_path / "b"), PAYLOAD, ())
    assert not target.in_place and target.run_dir == tmp_path / "b" and target.origin["run_dir"] == str(run.resolve())
