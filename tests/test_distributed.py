"""One run across two processes (gloo, CPU), as torchrun would start it: collectives, sharded
batches, gathered queues, and a whole grid cell whose metrics equal a one-process evaluation of the
checkpoint it wrote (every test image counted once)."""

import json
import os
import socket

import numpy as np
import torch
import torch.multiprocessing as mp

import run_benchmark
from _tiny_data import TEST_COUNTS, TRAIN_COUNTS, make_imagenet_lt_tree, register_tiny_backbone
from benchmarks import distributed
from benchmarks.loaders import ShardedBatches

WORLD = 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_collectives(rank: int) -> None:
    # gradients averaged over ranks == the gradient of the mean loss over the global batch
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    full = torch.autograd.grad(torch.nn.functional.cross_entropy(model(x), y), model.weight)[0]
    part = slice(4 * rank, 4 * rank + 4)
    torch.nn.functional.cross_entropy(model(x[part]), y[part]).backward()
    distributed.average_gradients(model.parameters())
    assert torch.allclose(model.weight.grad, full, atol=1e-6)
    # strided test shards, gathered back in order, an odd count (rank 1 has one image fewer)
    values = distributed.shard_indices(5) * 10
    assert distributed.gather_sharded(values, 5).tolist() == [0, 10, 20, 30, 40]
    assert distributed.all_gather(torch.tensor([rank])).tolist() == [0, 1]


def check_queues(rank: int) -> None:
    """BCCL's and PaCo's queues get every rank's projections and stay identical across ranks."""
    from benchmarks.config import resolve_config
    from benchmarks.methods import build_method

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


def worker(rank: int, port: int, data_root: str, results: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    register_tiny_backbone()
    distributed.init("cpu")
    check_collectives(rank)
    check_queues(rank)
    code = run_benchmark.main([
        "--grid", "imagenet", "--methods", "bcl", "--data-root", data_root, "--results-dir", results,
        "--no-progress", "--epochs", "2", "--device", "cpu",
        "--set", "backbone=tiny_cnn", "num_workers=0", "batch_size=4", "drop_last=true",
    ])
    assert code == 0
    distributed.shutdown()


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


def test_two_processes_train_one_run_and_count_every_test_image_once(tmp_path, capsys):
    data_root, results = tmp_path / "data", tmp_path / "results"
    make_imagenet_lt_tree(data_root)
    mp.spawn(worker, args=(free_port(), str(data_root), str(results)), nprocs=WORLD, join=True)

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
        "--set", "backbone=tiny_cnn", "num_workers=0", "batch_size=4", "drop_last=true",
        "--eval-checkpoint", str(folder / "checkpoint.pt"),
    ])
    assert code == 0, capsys.readouterr()
    single = json.loads((folder.parent / "eval-checkpoint" / "metrics.json").read_text())
    assert single["checkpoint"]["config_keys_differing_from_checkpoint"] == []
    for key in ("top1", "many", "medium", "few", "per_class"):
        assert single["last"][key] == metrics["last"][key], key
    assert np.isclose(sum(single["last"]["per_class"][c] * TEST_COUNTS[c] for c in range(3)) / sum(TEST_COUNTS),
                      metrics["last"]["top1"])
