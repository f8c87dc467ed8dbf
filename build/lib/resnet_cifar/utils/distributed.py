"""Several processes, one run: torchrun's environment, the process group, and the few collectives
the trainer needs (metric sums, stop agreement, buffer broadcast, barriers).

A single process gets `Distributed()` (world size 1, not active) whose methods do nothing, so the
trainer has one code path. Under torchrun (RANK, LOCAL_RANK and WORLD_SIZE set) `start()` joins
the process group: NCCL with each rank on cuda:LOCAL_RANK, or gloo on the CPU.
"""
from __future__ import annotations

import datetime
import os
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.rendezvous import rendezvous

from resnet_cifar.errors import UserError
from resnet_cifar.utils.devices import resolve_device

TORCHRUN_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE")


@dataclass(frozen=True)
class Distributed:
    """This process's place in the job; the collectives are no-ops when not active."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    local_world_size: int = 1  # processes on this node
    torchrun: bool = False  # started by torchrun
    active: bool = False  # joined torchrun's process group (even with one process)
    device: torch.device | None = None  # cuda:LOCAL_RANK or cpu under torchrun
    restart_count: int = 0  # TORCHELASTIC_RESTART_COUNT: restarts of the worker group so far
    max_restarts: int = 0
    run_id: str | None = None  # TORCHELASTIC_RUN_ID: the same across a job's restarts
    control_group: Any = None  # gloo group for the stop flag when the default group is NCCL

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def sum_(self, *tensors: torch.Tensor) -> None:
        """Sum each tensor over the ranks, in place."""
        if self.active:
            for tensor in tensors:
                dist.all_reduce(tensor, op=dist.ReduceOp.SUM)

    def max_int(self, value: int) -> int:
        """The largest of the ranks' values (on the CPU control group: no device sync)."""
        if not self.active:
            return value
        tensor = torch.tensor([value], dtype=torch.int64)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX, group=self.control_group)
        return int(tensor)

    def same_everywhere(self, value: int) -> bool:
        """True when every rank passed the same value."""
        return self.max_int(value) == -self.max_int(-value)

    def barrier(self) -> None:
        if self.active:
            dist.barrier(group=self.control_group)

    def broadcast_buffers(self, module: nn.Module) -> None:
        """Give every rank rank 0's buffers (BatchNorm statistics), which each rank updated from its
        own share of the batch; after this every rank holds the model rank 0 saves."""
        if self.active:
            for buffer in module.buffers():
                dist.broadcast(buffer, src=0)

    def gather_objects(self, value: Any) -> list:
        """Every rank's value, in rank order, on every rank (CPU objects: the control group is gloo)."""
        if not self.active:
            return [value]
        gathered = [None] * self.world_size
        dist.all_gather_object(gathered, value, group=self.control_group)
        return gathered

    def broadcast_object(self, value: Any) -> Any:
        """Rank 0's value on every rank (a run directory name, say)."""
        if not self.active:
            return value
        holder = [value]
        dist.broadcast_object_list(holder, src=0, group=self.control_group)
        return holder[0]


def launched_by_torchrun(environ: Mapping[str, str]) -> bool:
    return all(name in environ for name in TORCHRUN_VARIABLES)


def _int_variable(environ: Mapping[str, str], name: str, default: int = 0) -> int:
    text = environ.get(name, str(default))
    try:
        return int(text)
    except ValueError:
        raise UserError(f"environment variable {name}={text!r} is not an integer (is this torchrun?)") from None


def describe_launch(environ: Mapping[str, str] | None = None) -> Distributed:
    """Where torchrun placed this process (not yet joined: active is False); a single process
    when not launched by torchrun."""
    environ = os.environ if environ is None else environ
    if not launched_by_torchrun(environ):
        return Distributed()
    return Distributed(
        torchrun=True, rank=_int_variable(environ, "RANK"), local_rank=_int_variable(environ, "LOCAL_RANK"),
        world_size=_int_variable(environ, "WORLD_SIZE", 1),
        local_world_size=_int_variable(environ, "LOCAL_WORLD_SIZE", 1),
        restart_count=_int_variable(environ, "TORCHELASTIC_RESTART_COUNT"),
        max_restarts=_int_variable(environ, "TORCHELASTIC_MAX_RESTARTS"),
        run_id=environ.get("TORCHELASTIC_RUN_ID"),
    )


def check_launch(launch: Distributed, device_name: str, sync_bn: bool) -> torch.device:
    """Refuse a device or --sync-bn that this launch cannot use; the device this process would use."""
    if not launch.torchrun:
        if sync_bn:
            raise UserError("--sync-bn synchronises BatchNorm across processes; launch with torchrun "
                            "(e.g. torchrun --nproc-per-node=2 main.py ...) or drop --sync-bn")
        return resolve_device(device_name)
    device = resolve_device(device_name)
    if device.type == "cuda":
        if device_name not in ("auto", "cuda"):
            raise UserError(f"--device {device_name}: under torchrun each process uses cuda:LOCAL_RANK; "
                            f"pass --device cuda (or auto)")
        if launch.local_rank >= torch.cuda.device_count():
            raise UserError(f"LOCAL_RANK {launch.local_rank} but only {torch.cuda.device_count()} CUDA device(s) "
                            f"here; start at most {torch.cuda.device_count()} processes per node (--nproc-per-node)")
        return torch.device("cuda", launch.local_rank)
    if sync_bn:
        raise UserError("--sync-bn needs CUDA: SyncBatchNorm has no CPU kernel; drop --sync-bn on the CPU")
    return device


def start(launch: Distributed, device_name: str, timeout_s: float, sync_bn: bool = False) -> Distributed:
    """Join torchrun's process group (NCCL on cuda:LOCAL_RANK, gloo on the CPU); a single process
    is returned unchanged. The timeout makes a collective that waits for a lost peer fail
    instead of hanging forever."""
    if not launch.torchrun:
        check_launch(launch, device_name, sync_bn)
        return launch
    device = check_launch(launch, device_name, sync_bn)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    timeout = datetime.timedelta(seconds=timeout_s)
    options = {"device_id": device} if backend == "nccl" else {}
    # torchrun's env:// store outlives a restart of the workers, and with it the previous
    # attempt's gloo addresses: a restarted group read them and failed to connect (measured with
    # torch 2.14, --max-restarts=1). Each attempt's keys get their own prefix.
    store, rank, world_size = next(rendezvous("env://", timeout=timeout))
    store = dist.PrefixStore(f"resnet-cifar/attempt_{launch.restart_count}/", store)
    dist.init_process_group(backend, store=store, rank=rank, world_size=world_size, timeout=timeout, **options)
    # The per-step stop flag travels on the CPU: an NCCL flag would make the host wait for the GPU
    # at every step.
    control = dist.new_group(backend="gloo", timeout=timeout) if backend == "nccl" else None
    return replace(launch, active=True, device=device, control_group=control)


def stop(context: Distributed) -> None:
    if context.active and dist.is_initialized():
        dist.destroy_process_group()


def shard_bounds(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """Rank's contiguous share of n items; shares differ by at most one and cover each item once
    (no padding, unlike DistributedSampler, so a distributed evaluation counts every image once)."""
    return n * rank // world_size, n * (rank + 1) // world_size


def wrap_model(model: nn.Module, context: Distributed) -> nn.Module:
    """DistributedDataParallel around the (already placed, laid out and loaded) model."""
    if not context.active:
        return model
    device_ids = [context.device.index] if context.device is not None and context.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


FAULT_VARIABLE = "RESNET_CIFAR_TEST_FAULT"


def fault_injector(environ: Mapping[str, str], dist: Distributed) -> Callable[[], None]:
    """For the tests of failures under torchrun only: RESNET_CIFAR_TEST_FAULT=RANK:N:kill|raise
    makes that rank SIGKILL itself or raise at its N-th step check, on the job's first attempt."""
    rank, _, rest = environ.get(FAULT_VARIABLE, "").partition(":")
    checks, _, how = rest.partition(":")
    if not (rank.isdigit() and checks.isdigit() and int(rank) == dist.rank and dist.restart_count == 0):
        return lambda: None
    remaining = [int(checks)]

    def check() -> None:
        remaining[0] -= 1
        if remaining[0] == 0:
            if how == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError(f"{FAULT_VARIABLE}: fault injected on rank {dist.rank}")
    return check
