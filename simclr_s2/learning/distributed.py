"""Data-parallel training under torchrun: one process per GPU, or several CPU processes with gloo.

torchrun describes the job in RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT. Without it
(plain `python`, `mlflow run`) there is one process and no process group, and every helper here is a
no-op that hands back its input, so one-process numbers stay exactly what they were. Rank 0 alone
speaks to MLflow; the other ranks train their shard of every batch and get what rank 0 resolved
(split, encoder, run, checkpoint) through `main_only`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from simclr_s2.errors import UserError
from simclr_s2.learning.checkpoints import read_tree

log = logging.getLogger(__name__)

T = TypeVar("T")

TIMEOUT = timedelta(hours=1)
"""How long a rank waits in a collective: longer than the defaults (NCCL 10 min), because rank 0 may run
the `auto` demo chain, and each machine may pack its store, while the other ranks wait."""

# What torchrun sets for its workers (and TORCHELASTIC_*): a process they leak into would join the job.
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE",
                      "ROLE_RANK", "ROLE_WORLD_SIZE", "ROLE_NAME", "MASTER_ADDR", "MASTER_PORT")


def init() -> None:
    """Join the process group torchrun describes (nccl on CUDA, gloo on the CPU); nothing when alone."""
    if dist.is_initialized() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank())
        dist.init_process_group("nccl", timeout=TIMEOUT, device_id=torch.device("cuda", local_rank()))
    else:
        dist.init_process_group("gloo", timeout=TIMEOUT)
    log.info("rank %d of %d (%s)", rank(), world(), dist.get_backend())


@contextmanager
def session() -> Iterator[None]:
    """A process group for the body when torchrun started several processes, left cleanly afterwards.

    No barrier on the way out: rank 0 may still evaluate and register while the others have finished.
    """
    init()
    yield
    if dist.is_initialized():
        dist.destroy_process_group()


@contextmanager
def outside_job() -> Iterator[None]:
    """The environment without torchrun's variables, for a process rank 0 starts (the nested `mlflow run`
    of the `auto` demo chain): it must not take itself for a rank of this job and wait to join it."""
    saved = {k: os.environ.pop(k) for k in list(os.environ)
             if k in TORCHRUN_VARIABLES or k.startswith("TORCHELASTIC_")}
    try:
        yield
    finally:
        os.environ.update(saved)


def world() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    """Rank 0: the one process that talks to MLflow and writes checkpoints."""
    return rank() == 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def device() -> str:
    """Where this rank trains: "cuda" is its own GPU (LOCAL_RANK's, made current by `init`), so the
    name, and with it a checkpoint's settings, is the same on every rank."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def quiet() -> bool | None:
    """tqdm's `disable`: progress bars from rank 0 only (and, as everywhere, none without a TTY)."""
    return None if is_main() else True


def _comm_device() -> torch.device:
    """nccl moves CUDA tensors only; gloo CPU tensors."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def broadcast(obj: T) -> T:
    """Rank 0's `obj` (anything picklable) on every rank."""
    if world() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def main_only(fn: Callable[[], T]) -> T:
    """`fn()` run by rank 0 alone (MLflow look-ups, the `auto` demo chain, a checkpoint on its disk),
    its result sent to every rank. A UserError there is raised on every rank (its message: not every
    subclass can be pickled), so all stop with its line."""
    if world() == 1:
        return fn()
    result, error = None, None
    if is_main():
        try:
            result = fn()
        except UserError as e:
            error = e
    result, message = broadcast((result, None if error is None else str(error)))
    if error is not None:
        raise error
    if message is not None:
        raise UserError(message)
    return result  # type: ignore[return-value]


def all_gather_object(obj: T) -> list[T]:
    """Every rank's `obj`, in rank order (e.g. each rank's RNG state for a checkpoint)."""
    if world() == 1:
        return [obj]
    out: list[Any] = [None] * world()
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sum(values: Sequence[float]) -> list[float]:
    """Element-wise sums over the ranks, in float64 (loss totals and sample counts)."""
    if world() == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t)
    return t.cpu().tolist()


def all_gather(t: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's tensor (all of one shape), on the CPU, in rank order."""
    if world() == 1:
        return [t]
    local = t.to(_comm_device()).contiguous()
    parts = [torch.empty_like(local) for _ in range(world())]
    dist.all_gather(parts, local)
    return [p.cpu() for p in parts]


def all_gather_grad(t: torch.Tensor) -> torch.Tensor:
    """Every rank's rows of `t` concatenated, with gradients flowing back to each rank's own rows: SimCLR's
    negatives come from the whole global batch, as in one process."""
    if world() == 1:
        return t
    from torch.distributed.nn.functional import all_gather as gather_with_grad

    return torch.cat(gather_with_grad(t.contiguous()))


def own_state(states: Sequence[T], what: str) -> T:
    """This rank's entry of per-rank states a checkpoint holds (from `all_gather_object`)."""
    if len(states) != world():
        raise UserError(f"{what}: written by {len(states)} processes, resumed with {world()}; "
                        f"resume with {len(states)} (torchrun --nproc-per-node x --nnodes)")
    return states[rank()]


def load_checkpoint(path: Path | None, *, weights_only: bool = True) -> dict[str, Any] | None:
    """The checkpoint at `path` (`checkpoints.read_tree`: safetensors, or torch.save read with
    `weights_only`), or None when there is none, read by rank 0 and sent to every rank: only rank 0 writes
    checkpoints, the others may run on machines without the file, and all must resume from one state."""
    if path is None:
        return None
    return main_only(lambda: read_tree(path, weights_only=weights_only) if path.exists() else None)


def broadcast_buffers(module: nn.Module) -> None:
    """Rank 0's buffers (BatchNorm statistics) on every rank: without SyncBatchNorm each rank's last
    training step moved its own, and evaluation must use one model."""
    if world() == 1:
        return
    for buffer in module.buffers():
        moved = buffer.to(_comm_device())
        dist.broadcast(moved, src=0)
        buffer.copy_(moved)


@contextmanager
def data_parallel(model: nn.Module) -> Iterator[nn.Module]:
    """`model` wrapped in DistributedDataParallel when there are several ranks (gradients averaged over
    the ranks in backward, rank 0's weights broadcast on entry), else `model` itself.

    On CUDA its BatchNorm layers are SyncBatchNorm inside the block, so batch statistics cover the global
    batch as in one process; on the way out the original layers, which share their weights and statistics
    with the synchronised ones, are put back, so the trained model is the plain network. gloo has no
    SyncBatchNorm: on the CPU a BatchNorm that trains sees only its rank's part of the batch (logged).
    """
    if world() == 1:
        yield model
        return
    on_cuda = next(model.parameters()).is_cuda
    norms = [(parent, name, child) for parent in model.modules() for name, child in parent.named_children()
             if isinstance(child, nn.modules.batchnorm._BatchNorm)]
    if on_cuda:
        nn.SyncBatchNorm.convert_sync_batchnorm(model)
    elif any(bn.weight is not None and bn.weight.requires_grad for _, _, bn in norms):
        log.warning("BatchNorm statistics are per process on the CPU (SyncBatchNorm needs CUDA)")
    try:
        yield nn.parallel.DistributedDataParallel(model, device_ids=[local_rank()] if on_cuda else None)
    finally:
        if on_cuda:
            for parent, name, bn in norms:
                bn.train(getattr(parent, name).training)
                setattr(parent, name, bn)
