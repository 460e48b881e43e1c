"""Training-step time of a 2-rank run: DistributedDataParallel vs the hand-written all-reduce.

Until issue 17 the training loop averaged gradients by hand after `backward`: every gradient
all-reduced in one flat buffer per dtype, then divided by the world size. The loop now wraps the
method in DistributedDataParallel (`benchmarks.train.distributed.wrap_training_step`), which reduces
buckets of gradients while backward still runs. That old path survives only here, implemented
in this script (`allreduce_gradients`, `hand_written_step`), as the reference the DDP path is
timed against and tested against (tests/test_distributed.py: equal losses, gradients and
weights for every registered method).

Both paths run in the same processes, on two copies of the method built from the same seed,
steps interleaved (hand-written step i, DDP step i, the order alternating) on the same batches and the same RNG
state, so machine load hits both alike and the copies stay equal: the script checks that the
losses of every step and the final weights are identical and says so. Each timed step is
forward + backward + gradient averaging + SGD step + `after_step`, from a barrier to the end of
the step on rank 0 (the all-reduce makes the ranks finish together). Inputs are random
32x32 images (the views pipeline is not what is measured); the model is the method's CIFAR
recipe (ResNet-32), the global batch the recipe's, split over the ranks.

Run (CPU, gloo, one thread per rank):
    python benchmarks/perf/ddp_step.py [--world 2] [--methods ce bccl] [--steps 3] [--warmup 1]
or under torchrun (the script then does not spawn):
    torchrun --nproc_per_node 2 benchmarks/perf/ddp_step.py
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Iterable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.train import distributed  # noqa: E402
from benchmarks.config import resolve_config  # noqa: E402
from benchmarks.train.methods import Method, build_method  # noqa: E402


# -- the hand-written path (what training.py did before DDP) ---------------------------------------
@torch.no_grad()
def allreduce_gradients(parameters: Iterable[nn.Parameter]) -> None:
    """All-reduce the gradients that exist in one flat buffer per dtype, then divide by W."""
    world = distributed.world_size()
    if world == 1:
        return
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for param in parameters:
        if param.grad is not None:
            by_dtype.setdefault(param.grad.dtype, []).append(param.grad)
    for grads in by_dtype.values():
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat.div_(world)
        offset = 0
        for g in grads:
            g.copy_(flat[offset: offset + g.numel()].view_as(g))
            offset += g.numel()


def hand_written_step(method: Method, optimizer: torch.optim.Optimizer, views, labels, epoch: int,
                      step: int) -> dict[str, torch.Tensor]:
    """One step as the loop did it before DDP: training_step, backward, all-reduce, SGD, hook."""
    losses = method.training_step(views, labels, epoch, step)
    optimizer.zero_grad(set_to_none=True)
    losses["loss"].backward()
    allreduce_gradients(method.trainable_parameters())
    optimizer.step()
    method.after_step(epoch, step)
    return losses


def ddp_step(wrapped, method: Method, optimizer: torch.optim.Optimizer, views, labels, epoch: int,
             step: int) -> dict[str, torch.Tensor]:
    """One step as `Trainer.train_epoch` does it now: `wrapped` is `wrap_training_step(method)`."""
    losses = wrapped(views, labels, epoch, step)
    optimizer.zero_grad(set_to_none=True)
    losses["loss"].backward()
    optimizer.step()
    method.after_step(epoch, step)
    return losses


def sgd(method: Method, config: dict[str, Any]) -> torch.optim.SGD:
    """The loop's optimiser (`Trainer.__init__`)."""
    return torch.optim.SGD(method.trainable_parameters(), lr=config["lr"], momentum=config["momentum"],
                           weight_decay=config["weight_decay"], nesterov=config["nesterov"])


# -- timing ----------------------------------------------------------------------------------------
def time_method(name: str, steps: int, warmup: int, device: torch.device) -> dict[str, Any]:
    world, rank = distributed.world_size(), distributed.rank()
    # PaCo's BatchNorm groups must be a multiple of the ranks (one group per rank, as released)
    config = resolve_config(name, "synthetic100", 100, overrides={"shuffle_bn_groups": world} if name == "paco" else {})
    counts = torch.tensor([int(500 * 0.01 ** (i / 99)) for i in range(100)])
    copies = []
    for _ in range(2):
        torch.manual_seed(0)
        method = build_method(config, 100, counts).to(device)
        distributed.broadcast_module_(method)
        method.train()
        copies.append((method, sgd(method, config)))
    (plain, plain_opt), (ddp_method, ddp_opt) = copies
    wrapped = distributed.wrap_training_step(ddp_method, device)

    local = config["batch_size"] // world
    times: dict[str, list[float]] = {"hand-written all-reduce": [], "DDP": []}
    max_diff = 0.0
    for step in range(warmup + steps):
        torch.manual_seed(1000 * step + rank)  # this step's images differ by rank
        views = [torch.randn(local, 3, 32, 32, device=device) for _ in ddp_method.view_names()]
        labels = torch.randint(0, 100, (local,), device=device)
        results = {}
        paths = [("hand-written all-reduce", lambda: hand_written_step(plain, plain_opt, views, labels, 0, step)),
                 ("DDP", lambda: ddp_step(wrapped, ddp_method, ddp_opt, views, labels, 0, step))]
        for label, run in paths[::1 if step % 2 == 0 else -1]:  # alternate which goes first
            torch.manual_seed(7 + step)  # the same RNG state for both paths (k-means, PaCo's shuffle)
            distributed.barrier()
            start = time.perf_counter()
            results[label] = run()
            seconds = time.perf_counter() - start
            if step >= warmup:
                times[label].append(seconds)
        for key, value in results["DDP"].items():
            max_diff = max(max_diff, float((value.detach() - results["hand-written all-reduce"][key].detach()).abs()))
    weights_equal = all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), ddp_method.state_dict().values()))
    return {"method": name, "times": times, "max_loss_diff": max_diff, "weights_equal": weights_equal,
            "batch": config["batch_size"], "views": len(ddp_method.view_names())}


def report(result: dict[str, Any], world: int, steps: int) -> None:
    t = result["times"]
    before = statistics.median(t["hand-written all-reduce"]) * 1e3
    after = statistics.median(t["DDP"]) * 1e3
    print(f"{result['method']}: global batch {result['batch']} ({result['batch'] // world} per rank, "
          f"{result['views']} view(s)), median of {steps} steps")
    print(f"  hand-written all-reduce: {before:8.1f} ms/step  (min {min(t['hand-written all-reduce']) * 1e3:.1f})")
    print(f"  DDP                    : {after:8.1f} ms/step  (min {min(t['DDP']) * 1e3:.1f})")
    print(f"  DDP / hand-written     : {after / before:.3f}")
    print(f"  losses equal every step: {result['max_loss_diff'] == 0.0} (max |diff| {result['max_loss_diff']:.3g}); "
          f"final weights and buffers equal: {result['weights_equal']}")


def run(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    device = distributed.init("cpu")
    if distributed.is_main():
        print(f"world {distributed.world_size()} (gloo, CPU), {args.threads} thread(s) per rank, torch {torch.__version__}")
    for name in args.methods:
        result = time_method(name, args.steps, args.warmup, device)
        if distributed.is_main():
            report(result, distributed.world_size(), args.steps)
    distributed.shutdown()


def spawned(rank: int, world: int, port: int, args: argparse.Namespace) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    run(args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--world", type=int, default=2, help="ranks to spawn (ignored under torchrun)")
    parser.add_argument("--methods", nargs="+", default=["ce", "bccl"])
    parser.add_argument("--steps", type=int, default=3, help="timed steps per path")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (DDP rebuilds its buckets)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per rank")
    args = parser.parse_args()
    if distributed.launched_by_torchrun():
        run(args)
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(spawned, args=(args.world, port, args), nprocs=args.world, join=True)


if __name__ == "__main__":
    main()
