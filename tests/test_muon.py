"""--optimizer muon: the update against airbench94_muon.py's, SGD's groups against torch.optim.SGD,
the groups and their lrs, the airbench94-muon recipes, and the trainer's guarantees for it."""
import json

import pytest
import torch
from helpers import read_metrics, run_cli, same_state, tiny_train_args, training_state

from resnet_cifar.config import TrainConfig
from resnet_cifar.models.registry import modeltype
from resnet_cifar.optim.groups import group_rules
from resnet_cifar.optim.muon import MuonSGD, orthogonalize
from resnet_cifar.optim.schedules import LRSchedule, build_optimizer, set_lrs
from resnet_cifar.recipes import apply_recipe
from resnet_cifar.runfiles.checkpoints import load_checkpoint

# --- the published update, as airbench94_muon.py (KellerJordan/cifar10-airbench) writes it -------------------

def published_zeropower(G, steps=3, eps=1e-7):
    assert len(G.shape) == 2
    a, b, c = (3.4445, -4.7750, 2.0315)
    X = G.bfloat16()
    X /= (X.norm() + eps)
    if G.size(0) > G.size(1):
        X = X.T
    for _ in range(steps):
        A = X @ X.T
        B = b * A + c * A @ A
        X = a * X + B @ X
    if G.size(0) > G.size(1):
        X = X.T
    return X


def published_muon_step(params, buffers, lr, momentum, nesterov=True):
    for p, buf in zip(params, buffers, strict=True):
        g = p.grad
        buf.mul_(momentum).add_(g)
        g = g.add(buf, alpha=momentum) if nesterov else buf
        p.data.mul_(len(p.data) ** 0.5 / p.data.norm())
        update = published_zeropower(g.reshape(len(g), -1)).view(g.shape)
        p.data.add_(update, alpha=-lr)


@pytest.mark.parametrize("shape", [(64, 24, 3, 3), (24, 64, 3, 3), (10, 256)])
def test_orthogonalize_is_the_published_iteration(shape):
    torch.manual_seed(0)
    update = torch.randn(shape)
    ours = orthogonalize(update)
    assert ours.shape == update.shape and ours.dtype == torch.bfloat16
    assert torch.equal(ours, published_zeropower(update.reshape(shape[0], -1)).view(shape))


def test_orthogonalize_brings_the_singular_values_near_one():
    torch.manual_seed(1)
    # singular values from 0.1 to 1: three steps bring them all to 0.6-1.3 (not all the way to 1:
    # the iteration is tuned for few steps; values far below the largest stay small)
    u, _ = torch.linalg.qr(torch.randn(64, 64))
    v, _ = torch.linalg.qr(torch.randn(216, 64))
    update = (u * torch.logspace(-1, 0, 64)) @ v.T
    singular = torch.linalg.svdvals(orthogonalize(update).float())
    assert singular.min() > 0.6 and singular.max() < 1.3
    assert torch.linalg.svdvals(update).min() < 0.11


def test_muon_groups_take_the_published_update_and_sgd_groups_torchs():
    torch.manual_seed(2)
    filters = [torch.randn(16, 8, 3, 3), torch.randn(32, 16, 3, 3)]
    others = [torch.randn(10, 32), torch.randn(32)]
    ours = [t.clone().requires_grad_() for t in filters + others]
    reference = [t.clone().requires_grad_() for t in filters + others]
    optimizer = MuonSGD([{"params": ours[:2], "muon": True, "momentum": 0.6, "lr": 0.24},
                         {"params": ours[2:], "weight_decay": 5e-3}], lr=0.1, momentum=0.85, nesterov=True)
    sgd = torch.optim.SGD(reference[2:], lr=0.1, momentum=0.85, nesterov=True, weight_decay=5e-3, foreach=False)
    buffers = [torch.zeros_like(t) for t in filters]
    for step in range(4):
        grads = [torch.randn_like(t) for t in filters + others]
        for params in (ours, reference):
            for p, g in zip(params, grads, strict=True):
                p.grad = g.clone()
        optimizer.step()
        sgd.step()
        published_muon_step(reference[:2], buffers, lr=0.24, momentum=0.6)
        assert all(torch.equal(a, b) for a, b in zip(ours, reference, strict=True)), f"step {step}"
    # The filters' norm is renormalised to sqrt(filters) before each step: no weight decay needed.
    assert ours[0].norm().item() == pytest.approx(4.0, rel=0.2)


def muon_config(**values):
    return apply_recipe(TrainConfig(model="airbench94", recipe="airbench94-muon", **values), set())


def test_the_groups_under_muon():
    config = muon_config()
    model = modeltype("airbench94")
    optimizer, rules = build_optimizer(model, config)
    assert isinstance(optimizer, MuonSGD)
    groups = {group["kind"]: group for group in optimizer.param_groups}
    filters = [p for p in model.parameters() if p.dim() == 4 and p.requires_grad]
    assert groups["muon"]["params"] == filters and len(filters) == 6  # not the fixed whitening filters
    assert groups["muon"]["muon"] and groups["muon"]["momentum"] == 0.6 and groups["muon"]["weight_decay"] == 0
    assert groups["other"]["params"] == [model.fc.weight] and not groups["other"]["muon"]
    assert groups["whiten_bias"]["params"] == [model.whiten.bias]
    set_lrs(optimizer, LRSchedule(config, 25, rules).group_lrs(0, 0))
    # airbench94_muon's lrs: filters 0.24, biases 0.053 x 2000 (mean loss), head 0.67 x 2000 x (9/256)^2
    assert groups["muon"]["lr"] == pytest.approx(0.24)
    assert groups["norm_bias"]["lr"] == pytest.approx(106) == groups["whiten_bias"]["lr"]
    assert groups["other"]["lr"] == pytest.approx(1340 * 81 / 65536)
    assert groups["norm_bias"]["weight_decay"] * 106 == pytest.approx(2e-6 * 2000)  # the decay a step, as there
    assert groups["other"]["weight_decay"] == pytest.approx(2e-6 / 0.67 * (256 / 9) ** 2)


def test_the_schedule_falls_linearly_and_the_whitening_bias_faster():
    config = muon_config()
    rules = group_rules(config)
    schedule = LRSchedule(config, 25, [rules["other"], rules["whiten_bias"]])  # 50,000 images of 2000: 200 steps
    base, scale = config.lr, rules["whiten_bias"].lr_scale
    assert schedule.lr(0, 0) == pytest.approx(base) and schedule.lr(4, 0) == pytest.approx(base / 2)
    assert schedule.lr(7, 24) == pytest.approx(base / 200)
    assert schedule.group_lrs(0, 0) == pytest.approx([base, base * scale])
    assert schedule.group_lrs(1, 12)[1] == pytest.approx(base * scale * (1 - 37 / 75))
    assert schedule.group_lrs(3, 0)[1] == 0.0 == schedule.group_lrs(5, 3)[1]
    sgd = TrainConfig(whiten_bias_epochs=3)
    sgd_schedule = LRSchedule(sgd, 25, [group_rules(sgd)["whiten_bias"]])
    assert sgd_schedule.group_lrs(2, 24) == [sgd.lr] and sgd_schedule.group_lrs(3, 0) == [0.0]


def test_the_recipe_dry_run(capsys):
    code, out, err = run_cli(capsys, "--model", "airbench94", "--recipe", "airbench94-muon", "--dry-run")
    assert code == 0, err
    config = json.loads(out)["config"]
    assert (config["optimizer"], config["batch_size"], config["epochs"], config["lookahead"]) == ("muon", 2000, 8,
                                                                                                   False)
    code, out, err = run_cli(capsys, "--model", "airbench94", "--recipe", "airbench94-muon-cpu", "--dry-run")
    assert code == 0, err
    plan = json.loads(out)
    cpu = {name: value for name, value in plan["config"].items() if config[name] != value}
    assert cpu == {"recipe": "airbench94-muon-cpu", "batch_size": 1024, "lr": pytest.approx(0.848, abs=1e-4)}
    assert plan["length"] == "7.5 epochs: the steps decided when the data set's size is known"
    code, out, err = run_cli(capsys, "--model", "resnet20", "--optimizer", "muon", "--muon-lr", "0.1", "--dry-run")
    assert code == 0 and json.loads(out)["config"]["muon_lr"] == 0.1
    code, out, err = run_cli(capsys, "--optimizer", "adam", "--dry-run")
    assert code == 2 and "invalid choice: 'adam'" in err and "'sgd', 'muon'" in err and len(err.splitlines()) == 1


ARGS = ("--model", "airbench94", "--recipe", "airbench94-muon", "--batch-size", "32", "--threads", "1")


@pytest.mark.slow
def test_muon_lowers_the_loss(batches_dir, tmp_path, capsys):
    code, _, err = run_cli(capsys, *tiny_train_args(batches_dir, tmp_path / "run", "--optimizer", "muon",
                                                    "--muon-lr", "0.05", "--lr", "0.05", "--epochs", "6",
                                                    "--scheduler", "cosine"))
    assert code == 0, err
    losses = [float(row["train_loss"]) for row in read_metrics(tmp_path / "run")]
    assert losses[-1] < 0.8 * losses[0]


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["airbench94-muon", "speedrun"])
def test_a_resume_mid_run_is_bit_exact(batches_dir, tmp_path, capsys, recipe):
    """Muon's momentum and step count (the record route renormalises every few steps), the SGD groups'
    and the whitening bias's lr (a function of the step) and the record's colour jitter resume exactly."""
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    args = (*ARGS, "--recipe", recipe, "--whitening-images", "64")
    code, _, err = run_cli(capsys, *tiny_train_args(batches_dir, straight, *args, "--epochs", "4"))
    assert code == 0, err
    code, _, err = run_cli(capsys, *tiny_train_args(batches_dir, stopped, *args, "--epochs", "4", "--max-steps", "11"))
    assert code == 0, err
    optimizer_state = load_checkpoint(stopped / "last.pt")["optimizer_state"]
    groups = {group["kind"]: group for group in optimizer_state["param_groups"]}
    assert set(groups) == {"muon", "other", "norm_bias", "whiten_bias"} and groups["muon"]["muon_steps"] == 11
    code, _, err = run_cli(capsys, "--resume", stopped / "last.pt", "--quiet")
    assert code == 0, err
    assert same_state(training_state(load_checkpoint(stopped / "last.pt")),
                      training_state(load_checkpoint(straight / "last.pt")))
