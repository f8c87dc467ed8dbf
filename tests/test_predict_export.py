"""--mode predict on generated image files, and --mode export round trips."""
import csv
import json
import warnings

import numpy as np
import pytest
import torch
from helpers import run_cli, skip_unless_installed, tiny_train_args
from PIL import Image

from resnet_cifar.data.datasets import CIFAR10_MEAN, CIFAR10_STD, load_cifar10
from resnet_cifar.results.evaluation import load_model
from resnet_cifar.results.exporting import PACKAGES
from resnet_cifar.runfiles.checkpoints import load_checkpoint
from resnet_cifar.utils.atomic_files import TEMP_MARKER


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """One tiny trained ResNet-20 shared by the tests of this module (training is the slow part)."""
    from helpers import write_batches

    from resnet_cifar.cli import main as cli

    root = tmp_path_factory.mktemp("trained")
    data_dir = root / "data"
    write_batches(data_dir / "cifar-10-batches-py")
    code = cli.main([str(a) for a in tiny_train_args(data_dir, root / "run", "--epochs", "1")])
    assert code == 0
    return root / "run" / "last.pt"


def write_images(folder):
    """PNG, JPEG, RGBA, grayscale and palette files of several sizes, plus a 32x32 RGB reference."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(0)
    rgb = rng.randint(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(folder / "exact.png")
    Image.fromarray(rng.randint(0, 256, (64, 48, 3), dtype=np.uint8)).save(folder / "photo.jpg", quality=90)
    Image.fromarray(rng.randint(0, 256, (40, 40, 4), dtype=np.uint8), mode="RGBA").save(folder / "alpha.png")
    Image.fromarray(rng.randint(0, 256, (20, 30), dtype=np.uint8), mode="L").save(folder / "gray.png")
    Image.fromarray(rgb).convert("P").save(folder / "palette.gif")
    return folder


def test_predict_folder_and_files_to_csv(checkpoint, tmp_path, capsys):
    folder = write_images(tmp_path / "imgs")
    (folder / "notes.txt").write_text("not an image, and not picked up by the folder walk")
    output = tmp_path / "preds.csv"
    code, out, err = run_cli(capsys, "--mode", "predict", "--checkpoint", checkpoint, folder, "--output", output,
                             "--top-k", "2")
    assert code == 0, err
    with open(output, newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["path"].rsplit("/", 1)[1] for r in rows) == ["alpha.png", "exact.png", "gray.png",
                                                                 "palette.gif", "photo.jpg"]
    for row in rows:
        assert float(row["prob_1"]) >= float(row["prob_2"]) and row["class_1"] != row["class_2"]
    sizes = {r["path"].rsplit("/", 1)[1]: r["resized_from"] for r in rows}
    assert sizes == {"exact.png": "", "photo.jpg": "48x64", "alpha.png": "40x40", "gray.png": "30x20",
                     "palette.gif": ""}
    assert "3 of 5 images were not 32x32 and were resized to 32x32" in err


def test_predict_probabilities_match_the_model(checkpoint, tmp_path, capsys):
    folder = write_images(tmp_path / "imgs")
    code, out, err = run_cli(capsys, "--mode", "predict", "--checkpoint", checkpoint, folder / "exact.png",
                             "--top-k", "10")
    assert code == 0, err
    payload = load_checkpoint(checkpoint)
    model = load_model(payload, checkpoint).eval()
    pixels = torch.from_numpy(np.array(Image.open(folder / "exact.png"))).permute(2, 0, 1)[None].float() / 255
    mean, std = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1), torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        probabilities = model((pixels - mean) / std).softmax(1)[0]
    best = int(probabilities.argmax())
    assert out.startswith(f"{folder / 'exact.png'}: {payload['classes'][best]} {100 * probabilities[best]:.1f}%")


def test_predict_skips_broken_files_with_exit_1(checkpoint, tmp_path, capsys):
    folder = write_images(tmp_path / "imgs")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    (folder / "text.png").write_text("hello, I am text")
    code, out, err = run_cli(capsys, "--mode", "predict", "--checkpoint", checkpoint, folder)
    assert code == 1
    skipped = [line for line in err.splitlines() if line.startswith("skipped")]
    assert [line.split(":")[0] for line in skipped] == [f"skipped {folder / 'broken.png'}",
                                                        f"skipped {folder / 'text.png'}"]
    assert len(out.splitlines()) == 5


def test_predict_none_readable_is_exit_2(checkpoint, tmp_path, capsys):
    text = tmp_path / "text.png"
    text.write_text("not an image")
    code, _, err = run_cli(capsys, "--mode", "predict", "--checkpoint", checkpoint, text, tmp_path / "missing.jpg")
    assert code == 2
    assert f"skipped {tmp_path / 'missing.jpg'}: no such file" in err
    assert err.strip().splitlines()[-1] == "error: none of the 2 files could be read as an image"


def test_predict_an_empty_folder_is_a_usage_error(checkpoint, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(capsys, "--mode", "predict", "--checkpoint", checkpoint, tmp_path / "empty")
    assert code == 2 and err == f"error: no image files found in {tmp_path / 'empty'}\n"


def torchscript_is_deprecated() -> bool:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.jit.trace(torch.nn.Linear(2, 2), torch.zeros(1, 2))
    return any(issubclass(w.category, FutureWarning) and "deprecated" in str(w.message) for w in caught)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "pt2", "safetensors"])
@pytest.mark.slow
def test_export_round_trips_with_matching_logits(checkpoint, tmp_path, capsys, fmt):
    skip_unless_installed(*PACKAGES.get(fmt, ()))
    output = tmp_path / f"model.{fmt}"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, out, err = run_cli(capsys, "--mode", "export", "--checkpoint", checkpoint, "--format", fmt,
                                 "--output", output)
    assert code == 0, err
    assert "64 test images match PyTorch's" in out
    # torch's TorchScript deprecation warnings (torch 2.14: three, from trace, save and load) are
    # one note of ours; no other format has one.
    assert not [w for w in caught if "torch.jit" in str(w.message)]
    note = f"note: torch {torch.__version__} marks TorchScript deprecated"
    assert (note in out) == (fmt == "torchscript" and torchscript_is_deprecated())
    assert [p.name for p in tmp_path.iterdir() if TEMP_MARKER in p.name] == []  # the writer's temporaries are gone
    payload = load_checkpoint(checkpoint)
    model = load_model(payload, checkpoint).eval()
    test = load_cifar10(checkpoint.parent.parent / "data", download=False).test
    mean, std = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1), torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    inputs = (test.images[:7].float() / 255 - mean) / std  # another batch size than the export's example
    with torch.no_grad():
        expected = model(inputs)
    if fmt == "onnx":
        import onnxruntime
        session = onnxruntime.InferenceSession(str(output), providers=["CPUExecutionProvider"])
        got = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: inputs.numpy()})[0])
    elif fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch 2.14's deprecation, said once above
            got = torch.jit.load(str(output))(inputs)
    elif fmt == "pt2":
        got = torch.export.load(str(output)).module()(inputs)
    else:
        from safetensors.torch import load_file

        sidecar = json.loads(output.with_suffix(".json").read_text())
        assert sidecar["classes"] == payload["classes"] and sidecar["mean"] == list(CIFAR10_MEAN)
        from resnet_cifar.models.registry import modeltype
        rebuilt = modeltype(sidecar["model"], len(sidecar["classes"])).eval()
        rebuilt.load_state_dict(load_file(str(output)))
        with torch.no_grad():
            got = rebuilt(inputs)
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_export_mismatch_is_an_error_and_writes_nothing(checkpoint, tmp_path, capsys, monkeypatch):
    skip_unless_installed("safetensors")
    from resnet_cifar.results import exporting
    writer, _ = exporting._EXPORTERS["safetensors"]
    wrong = (writer, lambda path, inputs, metadata: torch.zeros(len(inputs), 10))
    monkeypatch.setitem(exporting._EXPORTERS, "safetensors", wrong)
    output = tmp_path / "model.safetensors"
    code, _, err = run_cli(capsys, "--mode", "export", "--checkpoint", checkpoint, "--format", "safetensors",
                           "--output", output)
    assert code == 2
    assert err.startswith("error: --format safetensors: the exported model's logits differ from PyTorch's by up to")
    assert list(tmp_path.iterdir()) == []


def test_export_without_its_package_names_it(checkpoint, tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    installed = object()  # onnx and onnxscript present, whether or not this machine has them

    def find_spec(name, *args):
        return None if name == "onnxruntime" else installed if name in ("onnx", "onnxscript") else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    code, _, err = run_cli(capsys, "--mode", "export", "--checkpoint", checkpoint, "--format", "onnx",
                           "--output", tmp_path / "m.onnx")
    assert code == 2 and err == "error: --format onnx needs onnxruntime: pip install onnxruntime\n"


@pytest.mark.slow
def test_a_wide_resnet_trains_evaluates_and_exports(tmp_path, capsys):
    # The pre-activation nets come through the same factory, checkpoint and export paths.
    from helpers import write_batches

    data_dir = write_batches(tmp_path / "data" / "cifar-10-batches-py").parent
    args = tiny_train_args(data_dir, tmp_path / "run", "--epochs", "1", "--model", "wrn-28-2")  # the last --model wins
    code, out, err = run_cli(capsys, *args)
    assert code == 0, err
    assert "training wrn-28-2 (1,467,610 parameters)" in out
    checkpoint = tmp_path / "run" / "last.pt"
    code, out, err = run_cli(capsys, "--mode", "eval", "--checkpoint", checkpoint)
    assert code == 0, err
    assert out.startswith("wrn-28-2 (raw weights, tta none, the run's) on 100 test images")
    code, out, err = run_cli(capsys, "--mode", "export", "--checkpoint", checkpoint, "--format", "pt2",
                             "--output", tmp_path / "wrn.pt2")
    assert code == 0, err
    assert "64 test images match PyTorch's" in out
