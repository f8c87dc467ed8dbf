"""Generated hostile inputs: argument lists, --config files, API arguments, damaged checkpoints,
images of every mode, summary folders. Whatever comes in: exit 0 or 2 (one line), never a traceback,
no case over its time limit, and no file that existed before changes.

Each target runs twice: a small profile in the quick tier and a larger one marked slow."""
import contextlib
import json
import os
import signal
from pathlib import Path

import pytest
import torch
from helpers import fake_run, handmade_payload, snapshot, write_batches
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resnet_cifar import api
from resnet_cifar.cli import main as cli
from resnet_cifar.errors import UserError
from resnet_cifar.options import OPTIONS
from resnet_cifar.runfiles.checkpoints import save_checkpoint
from resnet_cifar.training import route_choice

SECONDS_PER_CASE = 30
QUICK, THOROUGH = 25, 500  # examples per target in the quick tier and in the slow one


def profile(examples: int):
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large])


def both_tiers(strategy):
    """Two tests of one body: a quick profile, and a thorough one marked slow."""
    def make(body):
        quick = profile(QUICK)(given(strategy)(body))
        thorough = pytest.mark.slow(profile(THOROUGH)(given(strategy)(body)))
        return quick, thorough
    return make


@contextlib.contextmanager
def time_limit(seconds: int):
    def expire(signum, frame):
        raise TimeoutError(f"a case ran over {seconds} s")
    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


class Arena:
    """What every case may touch but must not change: a data set, a run, a valid checkpoint, a FIFO."""

    def __init__(self, root: Path):
        self.root = root
        self.data = write_batches(root / "data", n_train=40, n_test=20)
        self.run = fake_run(root / "runs" / "R")
        self.checkpoint = root / "model.pt"
        save_checkpoint(self.checkpoint, handmade_payload())
        os.mkfifo(root / "fifo")
        self.before = snapshot(root)

    @property
    def paths(self) -> list[str]:
        return ["", ".", str(self.run), f"{self.root}/runs/nope/../R", str(self.run / "last.pt"),
                str(self.run / "metrics.csv"), str(self.data), str(self.root / "fifo"), "/dev/null",
                str(self.checkpoint), str(self.root / "new"), str(self.root / "new" / "out.csv")]

    def unchanged(self) -> None:
        assert snapshot(self.root) == self.before


@pytest.fixture(scope="module")
def arena(tmp_path_factory, request) -> Arena:
    root = tmp_path_factory.mktemp("arena")
    cwd = os.getcwd()
    os.chdir(root)  # relative paths a case writes land here, and are checked
    request.addfinalizer(lambda: os.chdir(cwd))
    # A budget with no route named times the routes (~35 s on a 2-core CPU): here their costs are
    # given, the input handling is what is fuzzed.
    measure = route_choice.measure_costs
    route_choice.measure_costs = lambda configs: [route_choice.RouteCost(1.0, 0.001, 1.0) for _ in configs]
    request.addfinalizer(lambda: setattr(route_choice, "measure_costs", measure))
    return Arena(root)


def run_main(argv: list[str], capsys) -> tuple[int, str, str]:
    with time_limit(SECONDS_PER_CASE):
        code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_or_success(code: int, out: str, err: str) -> None:
    assert code in (0, 2), (code, out, err)
    assert "Traceback" not in err
    if code == 2:
        assert err.count("\n") == 1 and err.startswith("error: "), err
    assert "inf%" not in out and "nan%" not in out


# --- argument lists ------------------------------------------------------------------------------------

FLAGS = [o.flag for o in OPTIONS if o.kind != "positional"] + ["--no-" + o.flag[2:] for o in OPTIONS
                                                                if o.kind == "boolean"]
NUMBERS = st.one_of(st.integers(-2**70, 2**70), st.floats(allow_nan=True, allow_infinity=True))
WORDS = st.one_of(st.sampled_from(["train", "eval", "predict", "export", "summary", "resnet20", "airbench94",
                                   "onnx", "safetensors", "cpu", "auto", "30m", "1000000000h", "-1", "0", "1e300",
                                   "seed", "fast", "paper", "--run-dir", "nan"]),
                  st.text(max_size=12))


@st.composite
def argument_lists(draw):
    """Flags with numbers, words or one of the arena's paths (@pathN, filled in at run time)."""
    tokens = []
    for _ in range(draw(st.integers(0, 6))):
        tokens.append(draw(st.sampled_from(FLAGS)))
        kind = draw(st.integers(0, 3))
        if kind == 0:
            tokens.append(str(draw(NUMBERS)))
        elif kind == 1:
            tokens.append(draw(WORDS))
        elif kind == 2:
            tokens.append(f"@path{draw(st.integers(0, 11))}")
    return tokens


def fuzz_arguments(arena, capsys, tokens):
    paths = arena.paths
    argv = [paths[int(t[5:])] if t.startswith("@path") else t for t in tokens]
    code, out, err = run_main([*argv, "--dry-run"], capsys)
    assert_one_line_or_success(code, out, err)
    arena.unchanged()


test_argument_lists_quick, test_argument_lists_thorough = both_tiers(argument_lists())(fuzz_arguments)


# --- --config files ----------------------------------------------------------------------------------

VALUES = st.recursive(st.none() | st.booleans() | NUMBERS | WORDS,
                      lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                                   max_size=3),
                      max_leaves=8)
KEYS = st.one_of(st.sampled_from([o.dest for o in OPTIONS]), st.text(max_size=10))


def fuzz_config_file(arena, capsys, case):
    values, as_yaml = case
    if as_yaml:
        yaml = pytest.importorskip("yaml")
        path, text = arena.root / "case.yaml", yaml.safe_dump(values)
    else:
        path, text = arena.root / "case.json", json.dumps(values)
    path.write_text(text)
    try:
        code, out, err = run_main(["--config", str(path), "--data-dir", str(arena.data), "--dry-run"], capsys)
    finally:
        path.unlink()
    assert_one_line_or_success(code, out, err)
    arena.unchanged()


test_config_files_quick, test_config_files_thorough = both_tiers(
    st.tuples(st.dictionaries(KEYS, VALUES, max_size=6), st.booleans()))(fuzz_config_file)


# --- API keyword arguments ---------------------------------------------------------------------------

def fuzz_api(arena, case):
    which, kwargs = case
    with time_limit(SECONDS_PER_CASE):
        try:
            if which == "build_model":
                api.build_model(**kwargs)
            elif which == "load_checkpoint":
                api.load_checkpoint(kwargs.get("path", str(arena.checkpoint)), **{k: v for k, v in kwargs.items()
                                                                                  if k == "weights"})
            else:  # into a folder that holds a run: refused before any training, if the options pass
                api.train(**{**kwargs, "run_dir": str(arena.run)})
        except UserError as e:
            assert "\n" not in str(e)
        except TypeError as e:  # a keyword the function does not take: Python's own rule for every call
            assert "unexpected keyword argument" in str(e) or "required positional argument" in str(e)
    arena.unchanged()


API_CASES = st.one_of(
    st.tuples(st.just("build_model"), st.fixed_dictionaries(
        {"name": st.one_of(st.sampled_from(api.list_models()), WORDS)},
        optional={"num_classes": NUMBERS | WORDS, "dropout": NUMBERS | WORDS, "whitening": VALUES,
                  "dirac": VALUES, "bn_scale": VALUES})),
    st.tuples(st.just("load_checkpoint"), st.fixed_dictionaries({}, optional={"path": WORDS, "weights": VALUES})),
    st.tuples(st.just("train"), st.dictionaries(KEYS, VALUES, max_size=4)),
)
test_api_arguments_quick, test_api_arguments_thorough = both_tiers(API_CASES)(fuzz_api)


# --- damaged checkpoint payloads ---------------------------------------------------------------------

PAYLOAD_KEYS = list(handmade_payload()) + ["format_version", "rng", "optimizer_state"]
TENSORISH = st.one_of(VALUES, st.builds(torch.zeros, st.integers(0, 3)),
                      st.dictionaries(st.text(max_size=4), st.builds(torch.zeros, st.integers(0, 3)), max_size=2))


def fuzz_checkpoint(arena, capsys, damage):
    payload = handmade_payload()
    for key, value in damage:
        if value is None and key in payload:
            payload.pop(key)
        else:
            payload[key] = value
    path = arena.root / "damaged.pt"
    try:
        with contextlib.suppress(UserError):
            save_checkpoint(path, payload)  # a valid checksum over the damaged structure
        for argv in (["--mode", "eval", "--checkpoint", str(path), "--dry-run"],
                     ["--mode", "predict", "--checkpoint", str(path), str(arena.root / "img.png"), "--dry-run"],
                     ["--resume", str(path), "--run-dir", str(arena.root / "new"), "--dry-run"]):
            code, out, err = run_main(argv, capsys)
            assert_one_line_or_success(code, out, err)
    finally:
        path.unlink(missing_ok=True)
    arena.unchanged()


test_damaged_checkpoints_quick, test_damaged_checkpoints_thorough = both_tiers(
    st.lists(st.tuples(st.sampled_from(PAYLOAD_KEYS), TENSORISH), min_size=1, max_size=3))(fuzz_checkpoint)


# --- images of every mode ----------------------------------------------------------------------------

MODES = ["1", "L", "P", "RGB", "RGBA", "LA", "CMYK", "YCbCr", "I;16", "I", "F", "RGBX"]


def fuzz_image(arena, case):
    from PIL import Image

    from resnet_cifar.results.predict import decode

    mode, width, height, seed, fmt = case
    size = len(Image.new(mode, (width, height)).tobytes())
    image = Image.frombytes(mode, (width, height), bytes((seed * 7919 + i * 31) % 256 for i in range(size)))
    path = arena.root / f"image.{fmt}"
    try:
        try:
            image.save(path)
        except (OSError, ValueError, KeyError):
            return  # a mode this format cannot hold: nothing to read
        with time_limit(SECONDS_PER_CASE):
            decoded = decode(path)
    finally:
        path.unlink(missing_ok=True)
    if decoded.pixels is not None:
        assert decoded.pixels.shape == (3, 32, 32) and decoded.pixels.dtype.name == "uint8"
    else:
        assert decoded.error and "\n" not in decoded.error
    arena.unchanged()


test_images_of_every_mode_quick, test_images_of_every_mode_thorough = both_tiers(
    st.tuples(st.sampled_from(MODES), st.integers(1, 70), st.integers(1, 70), st.integers(0, 1000),
              st.sampled_from(["png", "tiff", "bmp", "jpg", "gif", "webp"])))(fuzz_image)


# --- summary folders ---------------------------------------------------------------------------------

CELLS = st.one_of(st.sampled_from(["", "0.5", "1", "inf", "-inf", "nan", "1e999", "x", "-1", "2"]),
                  st.text(max_size=6).filter(lambda t: "\x00" not in t))


def fuzz_summary(arena, capsys, case):
    config, rows, raw = case
    folder = arena.root / "summarised"
    (folder / "seed\u00b2").mkdir(parents=True)
    try:
        (folder / "config.json").write_text(raw if raw is not None else json.dumps(config))
        header = "epoch,val_acc,test_acc,seconds,epoch_seconds,tta"
        (folder / "metrics.csv").write_text("\n".join([header, *(",".join(r) for r in rows)]) + "\n")
        code, out, err = run_main(["--mode", "summary", str(folder), str(arena.root / "fifo")], capsys)
    finally:
        for path in sorted(folder.rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()
        folder.rmdir()
    assert code in (0, 2) and "Traceback" not in err
    if code == 2:
        assert err.count("\n") == 1
    assert "inf%" not in out and "nan%" not in out
    arena.unchanged()


test_summary_folders_quick, test_summary_folders_thorough = both_tiers(
    st.tuples(st.dictionaries(KEYS, VALUES, max_size=5),
              st.lists(st.lists(CELLS, min_size=6, max_size=6), max_size=4),
              st.one_of(st.none(), st.text(max_size=20))))(fuzz_summary)
