"""Inputs a hostile or clumsy user gives, refused in one line (exit 2) before anything is touched:
other spellings of a run's path, folders in use, malformed files and values, special files."""
import json
import os
import signal
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import fake_run, handmade_payload, run_cli, snapshot, tiny_train_args, write_batches

from resnet_cifar import api
from resnet_cifar.errors import UserError
from resnet_cifar.results.exporting import check_sidecar, sidecar_text
from resnet_cifar.runfiles import claim as claims
from resnet_cifar.runfiles.checkpoints import load_checkpoint, save_checkpoint, structure_problem
from resnet_cifar.runfiles.destinations import abandoned_start, check_file, check_new_run_dir, place
from resnet_cifar.utils.atomic_files import atomic_path


def refused(capsys, *args) -> str:
    """The one line of a command refused before any work (it prints nothing else)."""
    code, out, err = run_cli(capsys, *args)
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: "), (code, out, err)
    return err[len("error: "):].rstrip("\n")


@pytest.fixture
def data(tmp_path) -> Path:
    return write_batches(tmp_path / "data", n_train=40, n_test=20)


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    path = tmp_path / "model.pt"
    save_checkpoint(path, handmade_payload())
    return path


# --- paths are compared as the places they are ------------------------------------------------------

def test_a_dotdot_through_a_missing_folder_does_not_reach_a_run(data, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = fake_run(tmp_path / "runs" / "R")
    before = snapshot(run)
    message = refused(capsys, *tiny_train_args(data, "runs/nope/../R"), "--dry-run")
    assert message.startswith("--run-dir runs/nope/../R already holds a run; resume it with --resume runs/R/last.pt")
    assert snapshot(run) == before and not (tmp_path / "runs" / "nope").exists()


def test_a_dotdot_report_dir_does_not_reach_a_runs_report(checkpoint, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = fake_run(tmp_path / "runs" / "R")
    (run / "report").mkdir()
    before = snapshot(run)
    message = refused(capsys, "--mode", "eval", "--checkpoint", checkpoint, "--report-dir", "runs/nope/../R/report")
    assert message.startswith("--report-dir runs/nope/../R/report is the report/ of the run in")
    assert snapshot(run) == before


def test_a_link_to_a_runs_file_is_that_file(checkpoint, tmp_path, capsys):
    run = fake_run(tmp_path / "R")
    (tmp_path / "out.json").symlink_to(run / "metrics.csv")
    message = refused(capsys, "--mode", "eval", "--checkpoint", checkpoint, "--output", tmp_path / "out.json")
    assert "is the metrics.csv of the run in" in message


def test_the_data_folder_is_neither_a_run_nor_a_report_folder(data, tmp_path, capsys):
    message = refused(capsys, *tiny_train_args(data, data), "--dry-run")
    assert message == f"--run-dir {data} is the CIFAR-10 data, which this command reads; choose another name"
    payload = handmade_payload()
    payload["config"]["data_dir"] = str(data)
    save_checkpoint(tmp_path / "model.pt", payload)
    message = refused(capsys, "--mode", "eval", "--checkpoint", tmp_path / "model.pt", "--report-dir", data,
                      "--dry-run")
    assert message == f"--report-dir {data} is the CIFAR-10 data, which this command reads; choose another name"


def test_place_resolves_every_spelling(tmp_path):
    (tmp_path / "R").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "R")
    spellings = [tmp_path / "R", tmp_path / "nope" / ".." / "R", f"{tmp_path}//R/.", tmp_path / "link"]
    assert {place(s) for s in spellings} == {place(tmp_path / "R")}


# --- a new run only in a new or empty folder; outputs never replace special or owned files --------------

def test_a_new_run_refuses_a_folder_holding_other_files(data, tmp_path, capsys):
    folder = tmp_path / "old"
    folder.mkdir()
    for name in ("best.pt", "curves.png", "timings.json"):
        (folder / name).write_bytes(b"x")
    (folder / "report").mkdir()
    before = snapshot(folder)
    message = refused(capsys, *tiny_train_args(data, folder), "--dry-run")
    assert message == (f"--run-dir {folder} holds other files (best.pt, curves.png, report, ...); a new run starts "
                       f"in a new or empty folder")
    assert snapshot(folder) == before


def test_a_folder_left_by_a_start_without_a_checkpoint_takes_a_new_start(tmp_path):
    folder = tmp_path / "started"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    assert abandoned_start(folder)
    check_new_run_dir(folder)  # accepted
    (folder / "best.pt").write_bytes(b"x")
    assert not abandoned_start(folder)
    with pytest.raises(UserError, match="already holds a run"):
        check_new_run_dir(folder)


def test_resuming_a_start_without_a_checkpoint_says_what_to_do(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(UserError, match="stopped before its first checkpoint; start it again with the command"):
        load_checkpoint(tmp_path / "last.pt")


@pytest.mark.parametrize("kind", ["fifo", "device link", "run file", "cache"])
def test_an_output_never_replaces_a_special_or_owned_file(tmp_path, kind):
    if kind == "fifo":
        target = tmp_path / "pipe"
        os.mkfifo(target)
        expected = "is not a regular file"
    elif kind == "device link":
        target = tmp_path / "null.csv"
        target.symlink_to("/dev/null")
        expected = "is not a regular file"
    elif kind == "run file":
        target = fake_run(tmp_path / "R") / "notes.txt"
        target.write_text("mine")
        expected = "is the file notes.txt of the run in"
    else:
        target = tmp_path / ".cifar-cache.npz"
        target.write_bytes(b"x")
        expected = "is an image folder's cache"
    with pytest.raises(UserError, match=expected):
        check_file(target, "--output")


@pytest.mark.parametrize("flag", ["--output", "--report-dir"])
def test_an_empty_path_is_refused(checkpoint, capsys, flag):
    assert refused(capsys, "--mode", "eval", "--checkpoint", checkpoint, flag, "") == f"{flag} is empty; give a path"


def test_the_api_refuses_an_empty_run_dir(data):
    with pytest.raises(UserError, match="--run-dir is empty"):
        api.train(model="resnet20", data_dir=str(data), run_dir="", download=False)


# --- a run folder is claimed by one process --------------------------------------------------------

def test_a_claimed_folder_is_refused_naming_its_holder(tmp_path):
    with claims.claim(tmp_path):
        with pytest.raises(UserError, match=rf"in use by another run \(process {os.getpid()} on "
                                            rf"{socket.gethostname()}\)"):
            claims.claim(tmp_path)
    claims.claim(tmp_path).release()  # free again once released
    assert not (tmp_path / claims.LOCK_NAME).exists()


def test_a_claim_left_by_an_ended_process_is_taken_over_with_a_note(tmp_path):
    (tmp_path / claims.LOCK_NAME).write_text(json.dumps({"pid": 999999, "host": "gone"}))
    notes = []
    with claims.claim(tmp_path, say=lambda line, **_: notes.append(line)):
        held = json.loads((tmp_path / claims.LOCK_NAME).read_text())
    assert notes == [f"note: --run-dir {tmp_path} was claimed by process 999999 on gone, which has ended; "
                     f"taking it over"]
    assert held["pid"] == os.getpid()


# --- every file read is checked by structure ------------------------------------------------------

DAMAGES = {
    "no model_state": lambda p: p.pop("model_state"),
    "model_state a list": lambda p: p.update(model_state=[torch.zeros(1)]),
    "model_state with int keys": lambda p: p.update(model_state={0: torch.zeros(1)}),
    "config a list": lambda p: p.update(config=[1, 2]),
    "config value of another type": lambda p: p["config"].update(epochs="many"),
    "unknown model": lambda p: p.update(model_name="resnet-9000"),
    "classes not names": lambda p: p.update(classes=[1] * 10),
    "std of zero": lambda p: p.update(std=[0.0, 1.0, 1.0]),
    "epoch negative": lambda p: p.update(epoch=-1),
}


def test_the_handmade_payload_is_whole():
    assert structure_problem(handmade_payload()) is None


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_checksummed_payload_of_the_wrong_structure_is_one_line(tmp_path, capsys, damage):
    payload = handmade_payload()
    DAMAGES[damage](payload)
    save_checkpoint(tmp_path / "bad.pt", payload)  # a valid checksum over the damaged structure
    message = refused(capsys, "--mode", "eval", "--checkpoint", tmp_path / "bad.pt", "--dry-run")
    assert message.startswith(f"checkpoint {tmp_path / 'bad.pt'} is damaged or foreign: ")


@pytest.mark.parametrize("version", ["one", 0, 2.5])
def test_an_unknown_format_version_is_one_line(tmp_path, capsys, version):
    payload = {**handmade_payload(), "format_version": version}
    payload["format"] = "resnet-cifar-checkpoint"
    from resnet_cifar.runfiles.checkpoints import checksum
    payload["sha256"] = checksum(payload)
    torch.save(payload, tmp_path / "v.pt")
    message = refused(capsys, "--mode", "eval", "--checkpoint", tmp_path / "v.pt", "--dry-run")
    assert "format version" in message


def test_a_raw_pickle_checkpoint_is_one_line_without_torch_warnings(tmp_path, capsys):
    torch.save({"model": torch.nn.Linear(2, 2)}, tmp_path / "pickle.pt")
    message = refused(capsys, "--mode", "eval", "--checkpoint", tmp_path / "pickle.pt")
    assert message.startswith("refusing to load")


@pytest.mark.parametrize("args, expected", [
    (["--seed", str(2**32)], "argument --seed: expected an integer from 0 to 4294967295, got '4294967296'"),
    (["--seeds", "1", str(2**40)], "argument --seeds: expected an integer from 0 to 4294967295"),
    (["--lr", "1e300"], "argument --lr: expected a number > 0 and at most 1e6, got '1e300'"),
    (["--weight-decay", "1e300"], "argument --weight-decay: expected a number from 0 to 1e6"),
    (["--epochs", "1" + "0" * 20], "argument --epochs: expected an integer from 1 to 2147483647"),
    (["--time-budget", "1000000000h"], "argument --time-budget: expected a duration of at most 30 days (720h)"),
])
def test_values_out_of_range_are_one_line(data, tmp_path, capsys, args, expected):
    assert refused(capsys, *tiny_train_args(data, tmp_path / "run"), *args).startswith(expected)


@pytest.mark.parametrize("name, text, expected", [
    ("digits.json", '{"epochs": ' + "9" * 5000 + "}", "is not a file of options (Exceeds the limit"),
    ("deep.json", '{"epochs": ' + "[" * 100_000 + "]" * 100_000 + "}", "is not a file of options (nested too deep)"),
    ("aliases.yaml", "a: &a [1, 1, 1, 1, 1, 1, 1, 1]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\nseeds: [*b, *b]\n",
     "uses YAML aliases (*name); write the values out"),
    ("smuggle.json", '{"seeds": [1, "--run-dir", "X"]}', "seeds holds '--run-dir', which is not a value"),
    ("smuggle2.json", '{"lr": "--run-dir"}', "argument --lr: expected a number > 0 and at most 1e6, got '--run-dir'"),
    ("big.json", '{"lr": 0.1' + " " * 1_000_001 + "}", "bytes; a file of options holds at most 1,000,000"),
])
def test_hostile_config_files_are_one_line(data, tmp_path, capsys, name, text, expected):
    if name.endswith(".yaml"):
        pytest.importorskip("yaml")
    (tmp_path / name).write_text(text)
    message = refused(capsys, *tiny_train_args(data, tmp_path / "run"), "--config", tmp_path / name, "--dry-run")
    assert expected in message and not (tmp_path / "X").exists()


def test_a_config_fifo_is_refused_without_blocking(data, tmp_path, capsys):
    os.mkfifo(tmp_path / "options.json")
    message = refused(capsys, "--config", tmp_path / "options.json", "--dry-run")
    assert message.endswith("is not a regular file (a FIFO, device or socket)")


# --- summary reads regular files, counts and accuracies only ------------------------------------

def _summary_run(folder: Path, config: dict, metrics: str = "epoch,test_acc\n1,0.5\n") -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "metrics.csv").write_text(metrics)
    return folder


@pytest.mark.parametrize("config, metrics, reason", [
    ('{"model": "resnet20", "epochs": 1e999}', "epoch,test_acc\n1,0.5\n", "epochs is inf, not a count"),
    ('{"model": "resnet20"}', "epoch,test_acc\n1,inf\n", "accuracy 'inf' is not a fraction from 0 to 1"),
    ('{"model": "resnet20"}', "epoch,test_acc\n1,nan\n", "accuracy 'nan' is not a fraction from 0 to 1"),
])
def test_summary_skips_runs_with_values_out_of_range(tmp_path, capsys, config, metrics, reason):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text(config)
    (bad / "metrics.csv").write_text(metrics)
    good = _summary_run(tmp_path / "good", {"model": "resnet20", "epochs": 1})
    code, out, err = run_cli(capsys, "--mode", "summary", good, bad)
    assert code == 0 and f"skipped {bad}: " in err and reason in err
    assert "inf%" not in out and "nan%" not in out


def test_summary_passes_over_seed_folders_named_with_other_digits(tmp_path, capsys):
    root = tmp_path / "set"
    _summary_run(root / "seed\u00b2", {"model": "resnet20", "seed": 2})
    _summary_run(root / "seed1", {"model": "resnet20", "seed": 1})
    code, out, _ = run_cli(capsys, "--mode", "summary", root)
    assert code == 0 and "seed1:" in out and "seed\u00b2" not in out


def test_summary_does_not_block_on_a_metrics_fifo(tmp_path, capsys):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "config.json").write_text('{"model": "resnet20"}')
    os.mkfifo(folder / "metrics.csv")
    signal.alarm(20)  # a read of the FIFO would block: fail instead of hanging the suite
    try:
        message = refused(capsys, "--mode", "summary", folder)
    finally:
        signal.alarm(0)
    assert "metrics.csv is not a regular file" in message


# --- export's metadata file and the modes of new files ---------------------------------------------

def test_an_export_is_never_its_own_metadata_file(tmp_path):
    with pytest.raises(UserError, match=r"would be its own metadata file \(model.json\); name it model.safetensors"):
        check_sidecar("safetensors", tmp_path / "model.json")


def test_an_export_replaces_only_its_own_metadata_file(tmp_path):
    output = tmp_path / "model.safetensors"
    (tmp_path / "model.json").write_text('{"someone": "else"}')
    with pytest.raises(UserError, match="exists and was not written for it by this program"):
        check_sidecar("safetensors", output)
    (tmp_path / "model.json").write_text(sidecar_text({"model": "resnet20"}, tmp_path / "other.safetensors"))
    with pytest.raises(UserError, match="was not written for it"):
        check_sidecar("safetensors", output)
    (tmp_path / "model.json").write_text(sidecar_text({"model": "resnet20"}, output))
    check_sidecar("safetensors", output)  # ours, for this output: replaced


def test_a_file_a_writer_replaces_by_name_gets_the_umask_mode(tmp_path):
    umask = os.umask(0o027)
    try:
        with atomic_path(tmp_path / "model.onnx") as tmp:
            tmp.unlink()  # as torch.onnx and safetensors do: a new file under the same name
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o600)
            os.close(fd)
    finally:
        os.umask(umask)
    assert (tmp_path / "model.onnx").stat().st_mode & 0o777 == 0o640


# --- the resume hint, predict's images and columns, the API's arguments -----------------------------

def test_the_program_is_named_as_it_was_started(tmp_path, monkeypatch):
    from resnet_cifar.utils.launcher import program, torchrun_target

    script = tmp_path / "my project" / "main.py"
    script.parent.mkdir()
    script.write_text("")
    assert program(str(script)) == f"python '{script}'"
    assert torchrun_target(str(script)) == f"'{script}'"
    assert program("/nowhere/main.py") == "python main.py"


def test_16_bit_images_are_scaled_not_clipped(tmp_path):
    from PIL import Image

    from resnet_cifar.results.predict import decode

    gray = (np.arange(32 * 32, dtype=np.uint32).reshape(32, 32) * 64).astype(np.uint16)
    Image.fromarray(gray).save(tmp_path / "deep.png")
    decoded = decode(tmp_path / "deep.png")
    assert decoded.pixels.shape == (3, 32, 32)
    assert decoded.pixels[0, 0, 0] == 0 and 250 <= decoded.pixels.max() <= 255
    assert 100 < decoded.pixels.mean() < 155  # a ramp, not a white picture


def test_predict_with_top_k_beyond_the_classes_keeps_the_columns(checkpoint, tmp_path, capsys):
    from PIL import Image

    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "a.png")
    code, _, err = run_cli(capsys, "--mode", "predict", "--checkpoint", checkpoint, "--top-k", "50",
                           "--output", tmp_path / "p.csv", "--device", "cpu", tmp_path / "a.png")
    assert code == 0 and "--top-k 50 is more than the model's 10 classes" in err
    header, row = (tmp_path / "p.csv").read_text().splitlines()
    assert len(header.split(",")) == len(row.split(",")) == 1 + 2 * 10 + 1


@pytest.mark.parametrize("call, expected", [
    (lambda: api.build_model("resnet-9000"), "name 'resnet-9000' is none of: "),
    (lambda: api.build_model("resnet20", num_classes=0), "num_classes must be an integer from 2"),
    (lambda: api.build_model("resnet20", dropout=2), "dropout must be a number in [0, 1)"),
    (lambda: api.build_model("resnet20", bn_scale="huge"), "bn_scale 'huge' is none of: "),
    (lambda: api.load_checkpoint("x.pt", weights="best"), "weights 'best' is none of: raw, ema"),
    (lambda: api.load_checkpoint(None), "path must name a checkpoint file"),
])
def test_the_api_raises_its_own_error_for_bad_arguments(call, expected):
    with pytest.raises(UserError) as raised:
        call()
    assert expected in str(raised.value)


def test_val_size_beyond_the_training_set_says_so(data, tmp_path, capsys):
    message = refused(capsys, *tiny_train_args(data, tmp_path / "run"), "--val-size", "1000")
    assert message == "--val-size 1000 holds out every training image (40); choose a smaller --val-size"
    assert not (tmp_path / "run").exists()


def test_a_line_break_in_a_value_stays_on_the_error_line_in_python_too():
    import resnet_cifar

    with pytest.raises(UserError) as caught:
        resnet_cifar.load_checkpoint("0\n")
    assert "\n" not in str(caught.value) and "0\\n" in str(caught.value)
