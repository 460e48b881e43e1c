"""The recipe's `sampler`: class frequencies over many draws (chi-square), the class-aware cycles
of Decoupling's ClassAwareSampler, square-root probabilities, both loaders, torchrun shards, and a
resumed run repeating an uninterrupted one."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from benchmarks import LTBenchError
from benchmarks.config import resolve_config
from benchmarks.data.datasets import DatasetRequest, build_dataset
from benchmarks.data.loaders import FastLoader, ReferenceLoader, ShardedBatches
from benchmarks.data.samplers import EpochSampler, epoch_length, epoch_order
from benchmarks.train.training import Trainer

COUNTS = [40, 17, 9, 5, 2]  # long-tailed; 40 is no multiple of 17, 9 or 3: partial cycles everywhere
LABELS = torch.repeat_interleave(torch.arange(len(COUNTS)), torch.tensor(COUNTS))
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def draws(name: str, epochs: int, k: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.cat([epoch_order(name, LABELS, g, k) for _ in range(epochs)])


def p_value(observed: torch.Tensor, expected_share: np.ndarray) -> float:
    observed = observed.double().numpy()
    return chisquare(observed, expected_share / expected_share.sum() * observed.sum()).pvalue


def test_instance_sampling_is_a_permutation():
    order = epoch_order("instance", LABELS, torch.Generator().manual_seed(0))
    assert sorted(order.tolist()) == list(range(len(LABELS)))


@pytest.mark.parametrize("k", [1, 3, 4])
def test_class_balanced_draws_every_class_equally_often(k):
    assert epoch_length("class_balanced", LABELS) == 40 * 5
    classes = LABELS[draws("class_balanced", 150, k)]
    frequencies = torch.bincount(classes, minlength=5)
    assert frequencies.sum() == 150 * 200
    assert p_value(frequencies, np.ones(5)) > 1e-3
    assert p_value(frequencies, np.array(COUNTS, float)) < 1e-6  # the test can tell LT from balanced


def test_class_balanced_draws_the_images_of_a_class_equally_often():
    images = draws("class_balanced", 150, 3)
    for c in (1, 2, 4):
        members = torch.nonzero(LABELS == c).flatten()
        seen = torch.bincount(images, minlength=len(LABELS))[members]
        assert p_value(seen, np.ones(len(members))) > 1e-3


def test_class_balanced_follows_the_release_cycles():
    """Classes come up in random permutations of the classes, each pick gives k consecutive
    images of its class, and a class's images come in random permutations of its images."""
    k = 2
    order = epoch_order("class_balanced", LABELS, torch.Generator().manual_seed(5), k)
    picks = LABELS[order].view(-1, k)
    assert (picks == picks[:, :1]).all()  # k images of one class per pick
    classes = picks[:, 0]
    for start in range(0, len(classes) - 5 + 1, 5):
        assert sorted(classes[start:start + 5].tolist()) == [0, 1, 2, 3, 4]
    orders = []
    for c, n in enumerate(COUNTS):
        stream = order[LABELS[order] == c]
        for start in range(0, len(stream) - n + 1, n):
            assert sorted(stream[start:start + n].tolist()) == torch.nonzero(LABELS == c).flatten().tolist()
        orders.append(stream[:n].tolist())
    assert orders[0] != sorted(orders[0])  # shuffled within a class


def test_sqrt_sampling_draws_classes_in_proportion_to_the_root_of_their_counts():
    assert epoch_length("sqrt", LABELS) == len(LABELS)
    classes = LABELS[draws("sqrt", 400)]
    frequencies = torch.bincount(classes, minlength=5)
    root = np.sqrt(np.array(COUNTS, float))
    assert p_value(frequencies, root) > 1e-3
    assert p_value(frequencies, np.array(COUNTS, float)) < 1e-6
    assert p_value(frequencies, np.ones(5)) < 1e-6


def test_the_draw_is_a_function_of_the_generator_state():
    for name in ("class_balanced", "sqrt"):
        a = epoch_order(name, LABELS, torch.Generator().manual_seed(9), 2)
        b = epoch_order(name, LABELS, torch.Generator().manual_seed(9), 2)
        c = epoch_order(name, LABELS, torch.Generator().manual_seed(10), 2)
        assert torch.equal(a, b) and not torch.equal(a, c)
        torch.manual_seed(4)
        first = EpochSampler(name, LABELS, 2).order()
        torch.manual_seed(4)
        assert torch.equal(first, EpochSampler(name, LABELS, 2).order())  # the global generator


def test_unknown_sampler_and_bad_group_size_are_errors():
    with pytest.raises(LTBenchError, match="unknown sampler 'balanced'; known: instance, class_balanced, sqrt"):
        EpochSampler("balanced", LABELS)
    with pytest.raises(LTBenchError, match="sampler_samples_per_class must be >= 1"):
        EpochSampler("class_balanced", LABELS, 0)
    with pytest.raises(LTBenchError, match="unknown sampler 'uniform'"):  # at plan time, before any file
        resolve_config("ce", "synthetic", 10, 0, overrides={"sampler": "uniform"})
    with pytest.raises(LTBenchError, match="sampler_samples_per_class must be >= 1"):
        resolve_config("ce", "synthetic", 10, 0, overrides={"sampler_samples_per_class": 0})


def loader_images():
    """Image i filled with level i, so a test view names its source image."""
    n = len(LABELS)
    return np.repeat(np.arange(n, dtype=np.uint8)[:, None, None, None], 32 * 32 * 3).reshape(n, 32, 32, 3)


def source_ids(view: torch.Tensor) -> list[int]:
    return torch.round((view[:, 0, 0, 0] * 0.25 + 0.5) * 255).long().tolist()


@pytest.mark.parametrize("sampler", ["class_balanced", "sqrt"])
@pytest.mark.parametrize("kind", ["fast", "reference"])
def test_both_loaders_yield_the_samplers_draw(kind, sampler):
    common = dict(images=loader_images(), labels=LABELS.numpy(), view_names=["test"], mean=MEAN, std=STD,
                  batch_size=16, drop_last=False, device=torch.device("cpu"), sampler=sampler, samples_per_class=2)
    loader = FastLoader(**common) if kind == "fast" else ReferenceLoader(**common)
    length = epoch_length(sampler, LABELS)
    assert len(loader) == -(-length // 16)
    torch.manual_seed(7)
    seen = [i for views, labels in loader for i in source_ids(views[0])]
    torch.manual_seed(7)
    if kind == "reference":
        torch.empty((), dtype=torch.int64).random_()  # a DataLoader iterator first draws its workers' base seed
    assert seen == EpochSampler(sampler, LABELS, 2).order().tolist()
    torch.manual_seed(7)
    assert [i for views, _ in loader for i in source_ids(views[0])] == seen  # seeded epoch: same draw


@pytest.mark.parametrize("sampler", ["class_balanced", "sqrt"])
def test_sharded_ranks_split_one_draw(sampler):
    world, b = 2, 8
    drawn = EpochSampler(sampler, LABELS, 1)
    ranks = [ShardedBatches(len(LABELS), b, True, rank, world, seed=3, sampler=drawn) for rank in range(world)]
    for shard in ranks:
        shard.set_epoch(2)
    batches = [list(shard) for shard in ranks]
    assert len(batches[0]) == len(ranks[0]) == len(drawn) // (b * world)
    merged = [i for pair in zip(*batches) for share in pair for i in share]
    state = np.random.SeedSequence([3, 2, 0x5EED]).generate_state(2)
    order = drawn.order(torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1])))
    assert merged == order[: len(merged)].tolist()
    fast = [FastLoader(loader_images(), LABELS.numpy(), ["test"], MEAN, STD, b, True, torch.device("cpu"),
                       shard=(rank, world), seed=3, sampler=sampler) for rank in range(world)]
    for rank, loader in enumerate(fast):
        loader.set_epoch(2)
        assert [source_ids(v[0]) for v, _ in loader] == batches[rank]


def test_a_resumed_class_balanced_run_repeats_the_uninterrupted_one(tmp_path):
    data = build_dataset("synthetic", DatasetRequest(imb_factor=10, train_cap_per_class=12, test_cap_per_class=3))
    config = resolve_config("ce", "synthetic", 10, 3, overrides={
        "epochs": 2, "batch_size": 32, "warmup_epochs": 1, "pipeline": "reference",
        "sampler": "class_balanced", "sampler_samples_per_class": 2})
    full = Trainer(config, data, tmp_path / "full", torch.device("cpu"), progress=False)
    assert len(full.loader) == 12 * 10 // 32 + 1
    full = full.run()
    short = dict(config, epochs=1)
    Trainer(short, data, tmp_path / "cut", torch.device("cpu"), progress=False).run()
    state = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=False)
    state["config"] = config  # as if the 2-epoch run was killed after its first epoch
    torch.save(state, tmp_path / "cut" / "checkpoint.pt")
    resumed = Trainer(config, data, tmp_path / "cut", torch.device("cpu"), progress=False)
    assert resumed.load_checkpoint() and resumed.start_epoch == 1
    again = resumed.run()
    assert again["last"]["per_class"] == full["last"]["per_class"] and again["best"] == full["best"]
    assert again["deviations"]["sampler"] == {"paper": "instance", "run": "class_balanced"}


def test_folders_written_before_samplers_read_as_instance_sampling(tmp_path):
    """config.yaml and checkpoints written before the key existed still match today's config."""
    import yaml

    from benchmarks.config import ADDED_KEYS
    from benchmarks.store.results import read_config
    from benchmarks.train.training import CHECKPOINT_KEYS, read_checkpoint

    config = resolve_config("ce", "synthetic", 10, 0)
    old = {k: v for k, v in config.items() if k not in ADDED_KEYS}
    assert old != config
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    assert read_config(tmp_path) == config
    entries = {"epochs_done": 0, "method": {}, "optimizer": {}, "history": [], "best": None, "train_seconds": 0.0,
               "images_seen": 0}  # typed as a resumable checkpoint's (read_checkpoint checks the types)
    assert set(entries) | {"config"} == set(CHECKPOINT_KEYS)
    torch.save({**entries, "config": old}, tmp_path / "checkpoint.pt")
    assert read_checkpoint(tmp_path / "checkpoint.pt", map_location=None)["config"] == config
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({**old, "sampler": "sqrt"}))
    assert read_config(tmp_path)["sampler"] == "sqrt"  # a written value is never replaced
