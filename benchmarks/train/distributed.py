"""One run across several GPUs or nodes: `torchrun` process groups, rank helpers, collectives.

    torchrun --nproc_per_node 4 run_benchmark.py --grid imagenet --data-root /data
    torchrun --nnodes 2 --nproc_per_node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 run_benchmark.py ...

Every rank runs the same cells in the same order; rank 0 alone touches the run folder (lock,
status, config, history, checkpoint, metrics), the others only compute. How the computation is
split (the design choices, each one what the releases do or the closest faithful equivalent):

- **Global batch preserved.** `batch_size` stays the global batch of the recipe; each rank takes
  batch_size / world images per step (an error if it does not divide). Every epoch has one
  permutation, identical on all ranks (a generator seeded from (seed, epoch)); global batch i is
  its slice i, and rank r trains on the r-th part of it, so the images of a global step are those
  of the one-process run with that permutation (`ShardedBatches` in `benchmarks.data.loaders`).
- **DistributedDataParallel**, the standard way: a method's `forward` is its training step
  (`Method.forward`), as the PaCo release's MoCo model does its whole step in `forward`, so DDP
  wraps the method itself (`wrap_training_step`) and all-reduces each bucket of gradients while
  backward is still computing the rest (communication overlaps the backward on several GPUs).
  DDP divides by the world size: the gradient of the mean of the ranks' losses, i.e. of the
  global-batch loss when each rank's loss is a mean over its equal share. Only the trainable
  parameters take part (PaCo's momentum key encoder needs no gradient and is not reduced);
  `find_unused_parameters` only for a method that declares it needs it
  (`Method.find_unused_parameters`; none does today). The hooks that run outside `forward`
  (`on_epoch_start`, `after_step`: momentum updates after the optimiser step) run on the method
  itself, identically on every rank. The wrapper holds no state of its own: checkpoints save
  the method's `state_dict` (no `module.` prefix), so they load in one process and under
  torchrun alike, and one process never builds a wrapper (it calls the method itself).
  `benchmarks/perf/ddp_step.py` keeps the hand-written alternative this replaced (all-reduce of
  one flat buffer after backward, then divide) to compare the two, equal losses and gradients
  and the step time (`benchmarks/perf/RESULTS.md`).
- **BatchNorm** is per rank (statistics of the rank's share), as in the releases that ran on
  several GPUs (PaCo's DDP, BCL's and Decoupling's DataParallel), unless the config says
  `sync_bn: true` (BCCL, whose release trained on one GPU: BN over the whole batch), which
  converts every BatchNorm to SyncBatchNorm (CUDA only). Running statistics are rank 0's: they
  are broadcast before every evaluation (`broadcast_batchnorm_buffers_`). DDP's own broadcast of
  buffers before each forward is off (`forward_sync_buffers=False`; `broadcast_buffers=False` on
  torch versions without it): by default it would send every buffer of rank 0 before every
  forward, queues included (BCCL's ImageNet-LT queues: 800 MB a step), and training is the same
  without it: rank 0's buffers only ever receive rank 0's values either way, and in training
  mode BatchNorm normalises with batch statistics, never reading the running ones.
- **Queues** (PaCo's key queue, BCCL's per-class queues) receive the projections of all ranks,
  gathered in rank order (`Method.gather`), as the releases' `concat_all_gather` does, so they are
  identical everywhere; state computed with rank-dependent randomness (BCCL's k-means) is
  broadcast from rank 0 (`Method.broadcast_`).
- **Evaluation** shards the test set by stride (rank r takes images r, r + W, ...: no padding, so
  no image is counted twice, unlike DistributedSampler's padded shards), and the predictions are
  gathered back into test-set order on every rank before the metrics are computed.

The process group comes from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
MASTER_PORT): NCCL on CUDA (device cuda:LOCAL_RANK), gloo on the CPU (what the tests use). One
process without torchrun never initialises anything, and every helper is then the identity.
"""

from __future__ import annotations

import datetime
import os
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.nn as nn

from benchmarks import LTBenchError


def launched_by_torchrun() -> bool:
    """Whether this process is one of several started by torchrun (or any env:// launcher)."""
    return "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def init(device_name: str = "auto", timeout_minutes: float = 60.0) -> torch.device:
    """Join torchrun's process group and return this rank's device.

    `device_name` as on the command line: auto / cuda use cuda:LOCAL_RANK (NCCL), cpu uses gloo;
    an explicit cuda:N is refused (torchrun assigns the GPUs).
    """
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device_name not in ("auto", "cpu", "cuda"):
        raise LTBenchError(f"--device {device_name} with torchrun: use auto, cuda or cpu (each rank takes "
                           "cuda:LOCAL_RANK)")
    use_cuda = device_name != "cpu" and torch.cuda.is_available()
    if device_name == "cuda" and not use_cuda:
        raise LTBenchError("--device cuda requested but CUDA is not available; use --device cpu")
    if use_cuda:
        if local_rank >= torch.cuda.device_count():
            raise LTBenchError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPUs are visible")
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if not is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo",
                                timeout=datetime.timedelta(minutes=timeout_minutes))
    return device


def shutdown() -> None:
    if is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if is_initialized():
        dist.barrier()


def main_first(fn: Callable[[], Any]) -> Any:
    """Run `fn` on rank 0, then on the others: e.g. reading a checkpoint that rank 0 may delete
    as corrupt, so that every rank then sees the same file (or none)."""
    if world_size() == 1:
        return fn()
    if is_main():
        result = fn()
        barrier()
        return result
    barrier()
    return fn()


def wrap_training_step(method: nn.Module, device: torch.device) -> nn.Module:
    """What the training loop calls each step: the method itself in one process (its `forward`
    is `training_step`); under torchrun, DistributedDataParallel around the method.

    Built after everything that changes the parameters' device, layout or type (`.to`,
    channels_last, SyncBatchNorm, compile): DDP registers its gradient hooks and buckets on the
    parameters as they are at construction. Its parameter broadcast from rank 0 repeats what
    `broadcast_module_` already did (which also sends the buffers: queues, initial key encoders;
    only newer torch's DDP sends them at construction too).
    """
    if world_size() == 1:
        return method
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    # No buffer broadcast before each forward (BN statistics are broadcast before evaluation; see
    # the module docstring). Newer torch (2.14 here) renamed the switch and deprecates the old name.
    no_forward_buffer_sync = (
        {"forward_sync_buffers": False}
        if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters
        else {"broadcast_buffers": False}
    )
    return DistributedDataParallel(
        method,
        device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=bool(getattr(method, "find_unused_parameters", False)),
        **no_forward_buffer_sync,
    )


# ----------------------------------------------------------------------------------------------
# Collectives (each the identity in one process)
# ----------------------------------------------------------------------------------------------

@torch.no_grad()
def all_gather(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's `tensor` (same shape everywhere) along dim 0, in rank order."""
    if world_size() == 1:
        return tensor
    tensor = tensor.contiguous()
    parts = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(parts, tensor)
    return torch.cat(parts, dim=0)


@torch.no_grad()
def all_gather_uneven(tensor: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's `tensor`, whose first dimension may differ by rank, as a list in rank order."""
    if world_size() == 1:
        return [tensor]
    tensor = tensor.contiguous()
    size = torch.tensor([tensor.shape[0]], device=tensor.device, dtype=torch.long)
    sizes = [int(s) for s in all_gather(size)]
    padded = torch.zeros((max(sizes),) + tuple(tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
    padded[: tensor.shape[0]] = tensor
    gathered = all_gather(padded).view(world_size(), max(sizes), *tensor.shape[1:])
    return [gathered[r, : sizes[r]] for r in range(world_size())]


def shard_indices(n: int, rank_: int | None = None, world: int | None = None) -> torch.Tensor:
    """The test images of a rank: r, r + W, r + 2W, ... (every image on exactly one rank)."""
    rank_ = rank() if rank_ is None else rank_
    world = world_size() if world is None else world
    return torch.arange(rank_, n, world)


def gather_sharded(values: torch.Tensor, n: int) -> torch.Tensor:
    """Undo `shard_indices`: each rank's per-image `values` -> all n values in test-set order."""
    world = world_size()
    if world == 1:
        return values
    parts = all_gather_uneven(values)
    out = torch.empty((n,) + tuple(values.shape[1:]), dtype=values.dtype, device=values.device)
    for r, part in enumerate(parts):
        out[r::world] = part
    return out


@torch.no_grad()
def broadcast_(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    if world_size() > 1:
        dist.broadcast(tensor, src)
    return tensor


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """A picklable object of rank `src` on every rank (decisions that only rank 0 can make)."""
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src)
    return box[0]


@torch.no_grad()
def all_reduce_(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    if world_size() > 1:
        dist.all_reduce(tensor, {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX,
                                 "min": dist.ReduceOp.MIN}[op])
    return tensor


@torch.no_grad()
def broadcast_module_(module: nn.Module, src: int = 0) -> None:
    """Every parameter and buffer of `module` from rank `src`: the start of a run (DDP's own
    initial broadcast, `wrap_training_step`, covers the buffers only on newer torch)."""
    if world_size() == 1:
        return
    for tensor in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(tensor.data, src)


@torch.no_grad()
def broadcast_batchnorm_buffers_(module: nn.Module, src: int = 0) -> None:
    """BatchNorm running statistics from rank `src`, before evaluating (see the module docstring
    for why DDP's per-forward `broadcast_buffers` is off).

    Only BN buffers: the methods' other buffers (queues, centroids) are kept identical by
    construction and can be large (BCCL's ImageNet queues: 800 MB).
    """
    if world_size() == 1:
        return
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._NormBase):
            for buffer in m.buffers():
                dist.broadcast(buffer, src)


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    if device.type != "cuda":
        raise LTBenchError("sync_bn: true needs CUDA (torch's SyncBatchNorm has no CPU kernel); on the CPU "
                           "pass --set sync_bn=false")
    return nn.SyncBatchNorm.convert_sync_batchnorm(module)
