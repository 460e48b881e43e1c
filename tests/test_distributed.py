"""One run across two processes (gloo, CPU), as torchrun would start it: collectives, sharded
batches, gathered queues, DistributedDataParallel against the hand-written all-reduce it replaced
(every registered method), a resumed 2-rank run against an uninterrupted one, and a whole grid
cell whose metrics equal a one-process evaluation of the checkpoint it wrote (every test image
counted once).

The two processes are spawned once per module (`two_ranks`): each check runs inside them and the
tests read what rank 0 recorded.
"""

import json
import os
import socket

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

import run_benchmark
from _tiny_data import TEST_COUNTS, TRAIN_COUNTS, make_imagenet_lt_tree, register_tiny_backbone
from benchmarks.train import distributed
from benchmarks.data.loaders import ShardedBatches
from benchmarks.train.methods import METHODS, Method

WORLD = 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LinearMethod(Method):
    """The smallest method: a linear classifier with cross-entropy (no BatchNorm, so the ranks'
    halves of a batch give exactly the global batch's mean loss)."""

    def __init__(self):
        super().__init__({}, 3, torch.ones(3))
        self.linear = torch.nn.Linear(4, 3)

    def training_step(self, views, labels, epoch, step):
        return {"loss": torch.nn.functional.cross_entropy(self.linear(views[0]), labels)}


def check_collectives(rank: int) -> None:
    # DDP around a method (forward = training step): its gradients, averaged over the ranks, are
    # the gradient of the mean loss over the global batch
    torch.manual_seed(0)
    method = LinearMethod()
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    full = torch.autograd.grad(method.training_step([x], y, 0, 0)["loss"], method.linear.weight)[0]
    step = distributed.wrap_training_step(method, torch.device("cpu"))
    assert isinstance(step, DistributedDataParallel) and step.module is method
    part = slice(4 * rank, 4 * rank + 4)
    step([x[part]], y[part], 0, 0)["loss"].backward()
    assert torch.allclose(method.linear.weight.grad, full, atol=1e-6)
    assert not torch.allclose(method.linear.weight.grad, torch.autograd.grad(  # not just the local one
        method.training_step([x[part]], y[part], 0, 0)["loss"], method.linear.weight)[0], atol=1e-4)
    # strided test shards, gathered back in order, an odd count (rank 1 has one image fewer)
    values = distributed.shard_indices(5) * 10
    assert distributed.gather_sharded(values, 5).tolist() == [0, 10, 20, 30, 40]
    assert distributed.all_gather(torch.tensor([rank])).tolist() == [0, 1]


def check_queues(rank: int) -> None:
    """BCCL's and PaCo's queues get every rank's projections and stay identical across ranks."""
    from benchmarks.config import resolve_config
    from benchmarks.train.methods import build_method

    counts = torch.tensor(TRAIN_COUNTS)
    for method_name, over in (("bccl", {"queue_size": 4}), ("paco", {"queue_size": 8, "shuffle_bn_groups": 2})):
        config = resolve_config(method_name, "imagenet_lt", 256, overrides={"backbone": "tiny_cnn", **over})
        torch.manual_seed(0)  # same initial state on both ranks
        method = build_method(config, 3, counts)
        torch.manual_seed(100 + rank)  # different images per rank
        views = [torch.randn(2, 3, 32, 32) for _ in method.view_names()]
        labels = torch.tensor([0, 1]) if rank == 0 else torch.tensor([2, 0])
        method.training_step(views, labels, epoch=0, step=0)
        for name, buffer in method.named_buffers():
            if not name.startswith(("queue", "centroids")):
                continue  # BatchNorm statistics are per rank (broadcast from rank 0 before evaluation)
            gathered = distributed.all_gather(buffer[None].float())
            assert torch.equal(gathered[0], gathered[1]), f"{method_name}.{name} differs across ranks"
        if method_name == "bccl":
            assert method.queues.counts.tolist() == [4, 2, 2]  # 2 views x the global batch's labels
        else:
            assert int(method.queue_ptr) == 4 and method.queue_labels[:4].tolist() == [0, 1, 2, 0]


# Per method, what the comparison needs beyond the tiny backbone: PaCo's and BCL's BN groups a
# multiple of the ranks, BCCL clustering (k-means, broadcast inside the step) and its centroid loss from step 0.
COMPARISON_OVERRIDES = {
    "paco": {"queue_size": 16, "shuffle_bn_groups": 2},
    "bcl": {"bn_groups": 2},  # BatchNorm groups a multiple of the ranks (one per rank)
    "bccl": {"queue_size": 4, "centroids_per_class": 2, "warmup_epochs": 0, "recluster_interval": 1},
}
TRAINING_METHODS = [name for name in METHODS.names() if METHODS.get(name).trains]  # post-hoc ones take no step
COMPARISON_STEPS = 3  # DDP reports parameters left without a gradient at the step after


def compare_ddp_with_hand_written(rank: int, name: str) -> dict:
    """Two copies of method `name` from one seed, trained side by side for a few steps on the same
    batches and RNG states: the DDP path of the training loop and the hand-written all-reduce of
    benchmarks/perf/ddp_step.py. Returns what rank 0 records (losses, equalities)."""
    from benchmarks.config import resolve_config
    from benchmarks.train.methods import build_method
    from benchmarks.perf.ddp_step import ddp_step, hand_written_step, sgd

    counts = torch.tensor([20, 10, 5, 3, 2])
    config = resolve_config(name, "synthetic", 10, overrides={"backbone": "tiny_cnn",
                                                              **COMPARISON_OVERRIDES.get(name, {})})
    copies = []
    for _ in range(2):
        torch.manual_seed(0)
        method = build_method(config, len(counts), counts)
        if method.stage1:  # a stage-2 method trains on its stage-1 run's state, frozen as the Trainer loads it
            stage1_config = resolve_config(method.stage1, "synthetic", 10, overrides={"backbone": "tiny_cnn"})
            method.load_stage1(build_method(stage1_config, len(counts), counts).state_dict())
        distributed.broadcast_module_(method)
        method.train()
        copies.append((method, sgd(method, config)))
    (plain, plain_opt), (wrapped_method, ddp_opt) = copies
    wrapped = distributed.wrap_training_step(wrapped_method, torch.device("cpu"))
    record = {"hand_written": [], "ddp": [], "grads_equal": True}
    for step in range(COMPARISON_STEPS):
        torch.manual_seed(100 * step + rank)  # each rank its own images
        views = [torch.randn(4, 3, 32, 32) for _ in wrapped_method.view_names()]
        labels = torch.randint(0, len(counts), (4,))
        torch.manual_seed(7 + step)
        a = hand_written_step(plain, plain_opt, views, labels, 0, step)
        torch.manual_seed(7 + step)
        b = ddp_step(wrapped, wrapped_method, ddp_opt, views, labels, 0, step)
        record["hand_written"].append({k: float(v) for k, v in a.items()})
        record["ddp"].append({k: float(v) for k, v in b.items()})
        for p, q in zip(plain.trainable_parameters(), wrapped_method.trainable_parameters()):
            record["grads_equal"] &= (p.grad is None) == (q.grad is None) and (p.grad is None or torch.equal(p.grad, q.grad))
    a_state, b_state = plain.state_dict(), wrapped_method.state_dict()
    record["state_keys_equal"] = list(a_state) == list(b_state)
    record["state_differs"] = [k for k in a_state if not torch.equal(a_state[k], b_state[k])]
    record["loss_moved"] = record["ddp"][0]["loss"] != record["ddp"][-1]["loss"]
    return record


def check_ddp_against_hand_written(rank: int, out: Path) -> None:
    records = {}
    for name in TRAINING_METHODS:
        try:
            records[name] = compare_ddp_with_hand_written(rank, name)
        except Exception as exc:  # recorded for the method's test (both ranks fail alike: DDP's own checks)
            records[name] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
    if rank == 0:
        (out / "ddp_vs_hand_written.json").write_text(json.dumps(records))


def check_resume(rank: int, out: Path) -> None:
    """PaCo (momentum key encoder, queue, BN shuffled across ranks) for 2 epochs on 2 ranks, and
    the same run cut after epoch 1 and resumed from its checkpoint by a new pair of Trainers."""
    from benchmarks.config import resolve_config
    from benchmarks.data.datasets import DatasetRequest, build_dataset
    from benchmarks.train.training import Trainer

    data = build_dataset("synthetic", DatasetRequest(imb_factor=10, train_cap_per_class=4, test_cap_per_class=2))
    config = resolve_config("paco", "synthetic", 10, overrides={
        "epochs": 2, "batch_size": 8, "warmup_epochs": 1, "pipeline": "reference", "num_workers": 0,
        "backbone": "tiny_cnn", "queue_size": 16, "shuffle_bn_groups": 2})
    cpu = torch.device("cpu")
    full_trainer = Trainer(config, data, out / "full", cpu, progress=False)
    assert isinstance(full_trainer.train_step, DistributedDataParallel)
    full = full_trainer.run()
    Trainer(dict(config, epochs=1), data, out / "cut", cpu, progress=False).run()
    if rank == 0:  # pretend the 2-epoch run was killed after its first epoch
        state = torch.load(out / "cut" / "checkpoint.pt", weights_only=False)
        state["config"] = config
        torch.save(state, out / "cut" / "checkpoint.pt")
    distributed.barrier()
    resumed = Trainer(config, data, out / "cut", cpu, progress=False)
    assert distributed.main_first(resumed.load_checkpoint) and resumed.start_epoch == 1
    again = resumed.run()
    if rank == 0:
        timing = ("train_seconds", "images_per_s", "eval_seconds", "posthoc_seconds", "peak_memory_mb")  # wall clock, memory
        history = [[{k: v for k, v in row.items() if k not in timing} for row in t.history]
                   for t in (full_trainer, resumed)]
        (out / "resume.json").write_text(json.dumps({
            "full": {k: full[k] for k in ("best", "last")}, "resumed": {k: again[k] for k in ("best", "last")},
            "history_full": history[0], "history_resumed": history[1],
            "checkpoint_keys": list(torch.load(out / "cut" / "checkpoint.pt", weights_only=False)["method"]),
            "method_keys": list(resumed.method.state_dict()),
        }))


def worker(rank: int, port: int, data_root: str, results: str, out: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    register_tiny_backbone()
    distributed.init("cpu", timeout_minutes=5)  # a rank stuck in a collective fails the test, not CI
    check_collectives(rank)
    check_queues(rank)
    check_ddp_against_hand_written(rank, Path(out))
    check_resume(rank, Path(out))
    code = run_benchmark.main([
        "--grid", "imagenet", "--methods", "bcl", "--data-root", data_root, "--results-dir", results,
        "--no-progress", "--epochs", "2", "--device", "cpu",
        "--set", "backbone=tiny_cnn", "num_workers=0", "batch_size=4", "drop_last=true", "select_on=test",
    ])
    assert code == 0
    distributed.shutdown()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """Runs every check in two spawned processes once; returns (data root, results dir, records dir)."""
    tmp = tmp_path_factory.mktemp("two_ranks")
    data_root, results, out = tmp / "data", tmp / "results", tmp / "records"
    out.mkdir()
    make_imagenet_lt_tree(data_root)
    mp.spawn(worker, args=(free_port(), str(data_root), str(results), str(out)), nprocs=WORLD, join=True)
    return data_root, results, out


def test_sharded_batches_split_the_global_batches():
    shards = [ShardedBatches(11, 2, drop_last=False, rank=r, world=WORLD, seed=3) for r in range(WORLD)]
    for s in shards:
        s.set_epoch(5)
    batches = [list(s) for s in shards]
    assert len(batches[0]) == len(shards[0]) == 3
    for step in range(3):
        together = batches[0][step] + batches[1][step]
        assert len(batches[0][step]) == len(batches[1][step]) > 0
        if step < 2:
            assert len(set(together)) == 4
    seen = {i for b in batches for step in b for i in step}
    assert seen == set(range(11))  # every image once per epoch (the last batch padded by one)
    one = ShardedBatches(11, 2, drop_last=True, rank=0, world=WORLD, seed=3)
    one.set_epoch(6)
    assert len(list(one)) == 2 and list(one) != batches[0][:2]  # another epoch, another permutation


def test_two_processes_train_one_run_and_count_every_test_image_once(two_ranks, capsys):
    data_root, results, _ = two_ranks

    folder, = (results / "imagenet_lt" / "if256").glob("bcl@*/seed0")  # a variant of the recipe (--epochs, --set)
    assert (folder / "status").read_text().strip() == "done"
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["test_images"] == sum(TEST_COUNTS) and metrics["class_counts"] == list(TRAIN_COUNTS)
    assert json.loads((folder / "env.json").read_text())["world_size"] == WORLD
    assert metrics["deviations"]["processes"] == {"paper": 1, "run": WORLD}  # BCL's losses are per rank
    assert len((folder / "history.csv").read_text().strip().splitlines()) == 3  # header + 2 epochs, written once

    # the gathered predictions equal one process evaluating the same weights (the checkpoint)
    register_tiny_backbone()
    code = run_benchmark.main([
        "--grid", "imagenet", "--methods", "bcl", "--data-root", str(data_root), "--results-dir", str(results),
        "--no-progress", "--device", "cpu", "--epochs", "2",
        "--set", "backbone=tiny_cnn", "num_workers=0", "batch_size=4", "drop_last=true", "select_on=test",
        "--eval-checkpoint", str(folder / "checkpoint.pt"),
    ])
    assert code == 0, capsys.readouterr()
    single = json.loads((folder.parent / "eval-checkpoint" / "metrics.json").read_text())
    assert single["checkpoint"]["config_keys_differing_from_checkpoint"] == []
    for key in ("top1", "many", "medium", "few", "per_class"):
        assert single["last"][key] == metrics["last"][key], key
    assert np.isclose(sum(single["last"]["per_class"][c] * TEST_COUNTS[c] for c in range(3)) / sum(TEST_COUNTS),
                      metrics["last"]["top1"])


@pytest.mark.parametrize("name", TRAINING_METHODS)
def test_ddp_step_equals_the_hand_written_all_reduce(two_ranks, name):
    """Losses of every step, gradients and the final state (weights, BN statistics, queues, key
    encoders) of the DDP path equal those of the all-reduce it replaced, bit for bit (2 ranks:
    halving before or after the sum is exact)."""
    record = json.loads((two_ranks[2] / "ddp_vs_hand_written.json").read_text())[name]
    assert "error" not in record, record.get("error")
    assert record["ddp"] == record["hand_written"]
    assert record["loss_moved"]  # the optimiser steps took effect: the comparison covers updated weights
    assert record["grads_equal"]
    assert record["state_keys_equal"] and record["state_differs"] == []


def test_resumed_two_rank_run_equals_the_uninterrupted_one(two_ranks):
    record = json.loads((two_ranks[2] / "resume.json").read_text())
    assert record["resumed"] == record["full"]
    assert record["history_resumed"] == record["history_full"]  # every epoch's losses, full precision
    # the checkpoint holds the method's own keys (no DDP `module.` prefix): existing ones still load
    assert record["checkpoint_keys"] == record["method_keys"]
    assert not any(k.startswith("module.") for k in record["checkpoint_keys"])
