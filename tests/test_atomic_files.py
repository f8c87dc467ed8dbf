"""The one atomic writer every file goes through, and destinations checked before the work."""
import os
import threading

import pytest
from helpers import run_cli

from resnet_cifar.utils.atomic_files import TEMP_MARKER, atomic_path, write_text


def test_a_finished_write_replaces_the_file_and_keeps_its_permissions(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("old")
    path.chmod(0o640)
    write_text(path, "new")
    assert path.read_text() == "new"
    assert path.stat().st_mode & 0o777 == 0o640
    assert os.listdir(tmp_path) == ["config.json"]


def test_a_new_file_gets_the_umask_permissions_not_mkstemps(tmp_path):
    write_text(tmp_path / "new.txt", "x")
    umask = os.umask(0o022)
    os.umask(umask)
    assert (tmp_path / "new.txt").stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["metrics.csv"]


def test_the_temporary_is_beside_the_file_with_a_unique_name(tmp_path):
    path = tmp_path / "last.pt"
    names, both_open = [], threading.Barrier(2)

    def write(text):
        with atomic_path(path) as tmp:
            names.append(tmp)
            tmp.write_text(text)
            both_open.wait(timeout=10)

    threads = [threading.Thread(target=write, args=(t,)) for t in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(names)) == 2
    assert all(n.parent == tmp_path and n.name.startswith(f".last.pt{TEMP_MARKER}") for n in names)
    assert path.read_text() in ("a", "b") and os.listdir(tmp_path) == ["last.pt"]


def test_export_to_a_missing_folder_fails_before_any_work(tmp_path, capsys):
    """The destination is checked first: not even the checkpoint is read."""
    output = tmp_path / "missing" / "m.onnx"
    code, out, err = run_cli(capsys, "--mode", "export", "--checkpoint", tmp_path / "absent.pt", "--format", "onnx",
                             "--output", output)
    assert code == 2 and out == ""
    assert err == f"error: --output {output}: the folder {tmp_path / 'missing'} does not exist\n"


@pytest.mark.parametrize("mode_args", [["--mode", "eval", "--checkpoint", "absent.pt"],
                                       ["--mode", "predict", "--checkpoint", "absent.pt", "photo.png"],
                                       ["--mode", "summary", "run"]])
def test_every_output_is_checked_before_the_work(mode_args, tmp_path, capsys):
    output = tmp_path / "missing" / "out.csv"
    code, out, err = run_cli(capsys, *mode_args, "--output", output)
    assert code == 2 and out == ""
    assert err == f"error: --output {output}: the folder {tmp_path / 'missing'} does not exist\n"
