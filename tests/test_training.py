"""The epoch loop end to end on small data: learning, metrics, history, checkpoint, NaN handling."""

import json
import shutil

import numpy as np
import pytest
import torch

from benchmarks.config import resolve_config
from benchmarks.data.datasets import DatasetRequest, build_dataset
from benchmarks.store.predictions import read_predictions
from benchmarks.train.training import NonFiniteLoss, Trainer


def small_synthetic(train_cap=30, test_cap=10):
    return build_dataset("synthetic", DatasetRequest(imb_factor=10, train_cap_per_class=train_cap,
                                                       test_cap_per_class=test_cap))


def test_short_ce_run_beats_chance_by_a_clear_margin(tmp_path):
    torch.set_num_threads(2)
    data = small_synthetic()
    config = resolve_config("ce", "synthetic", 10, 0, overrides={
        "epochs": 5, "batch_size": 16, "lr": 0.01, "warmup_epochs": 1, "pipeline": "reference"})
    trainer = Trainer(config, data, tmp_path, torch.device("cpu"), progress=False)
    metrics = trainer.run()
    assert metrics["best"]["top1"] > 50.0  # chance is 10 %
    assert metrics["last"]["epoch"] == 4
    assert len(metrics["best"]["per_class"]) == 10
    assert (tmp_path / "history.csv").read_text().count("\n") == 6  # header + 5 epochs
    assert (tmp_path / "checkpoint.pt").exists()
    json.dumps(metrics, allow_nan=False)
    for which in ("best", "last"):  # calibration beside accuracy, overall and per shot group
        ece = metrics[which]["ece"]
        assert set(ece) == {"overall", "many", "medium", "few"} and 0 <= ece["overall"] <= 1
    run = read_predictions(tmp_path)  # per-image predictions of the epochs the trainer selected
    assert run.epochs["best"].epoch == metrics["best"]["epoch"] and run.epochs["last"].epoch == 4
    assert len(run.labels) == len(data.test_labels) == len(run.epochs["best"].predictions)
    assert 100 * run.correct("best").mean() == pytest.approx(metrics["best"]["top1"])
    assert 100 * run.correct("last").mean() == pytest.approx(metrics["last"]["top1"])
    # cost: evaluation time summed over the history's rows, the process's peak memory, the device
    import csv

    rows = list(csv.DictReader((tmp_path / "history.csv").open()))
    assert metrics["eval_seconds"] == pytest.approx(sum(float(r["eval_seconds"]) for r in rows))
    assert metrics["eval_seconds"] > 0 and metrics["device"] == "cpu"
    assert 50 < metrics["peak_memory_mb"] < 64 * 1024  # a python process with torch: tens of MB at least
    # the classifier's per-class weight norms at the end of training
    weight = trainer.method.classifier.weight.detach()
    assert metrics["classifier_weight_norms"] == pytest.approx(weight.norm(dim=1).tolist())
    assert len(metrics["classifier_weight_norms"]) == 10


def test_weight_norms_of_a_cosine_classifier_are_its_class_columns():
    from benchmarks.train.methods import build_method

    config = resolve_config("ldam_drw", "synthetic", 10, 0)
    method = build_method(config, 10, torch.arange(10, 0, -1))
    w = method.classifier.weight.detach()  # (features, classes): one column per class
    assert method.classifier_weight_norms() == pytest.approx(w.norm(dim=0).tolist())


def test_resume_from_checkpoint_repeats_the_uninterrupted_run(tmp_path):
    torch.set_num_threads(1)
    data = small_synthetic(train_cap=16, test_cap=5)
    config = resolve_config("ce", "synthetic", 10, 3, overrides={
        "epochs": 2, "batch_size": 32, "warmup_epochs": 1, "pipeline": "reference"})
    full = Trainer(config, data, tmp_path / "full", torch.device("cpu"), progress=False).run()

    short = dict(config, epochs=1)
    Trainer(short, data, tmp_path / "cut", torch.device("cpu"), progress=False).run()
    state = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=False)
    state["config"] = config  # pretend the 2-epoch run was killed after its first epoch
    torch.save(state, tmp_path / "cut" / "checkpoint.pt")
    (tmp_path / "cut" / "predictions.npz").unlink()
    shutil.copytree(tmp_path / "cut", tmp_path / "old")
    resumed = Trainer(config, data, tmp_path / "cut", torch.device("cpu"), progress=False)
    assert resumed.train_step is resumed.method  # one process: no DDP wrapper
    assert resumed.load_checkpoint() and resumed.start_epoch == 1
    assert resumed.best_predictions.epoch == 0  # the best epoch's predictions survive the resume
    again = resumed.run()
    assert again["last"]["per_class"] == full["last"]["per_class"]
    assert again["best"] == full["best"]
    ours, theirs = read_predictions(tmp_path / "cut"), read_predictions(tmp_path / "full")
    for which in ("best", "last"):
        assert ours.epochs[which].epoch == theirs.epochs[which].epoch
        np.testing.assert_array_equal(ours.epochs[which].predictions, theirs.epochs[which].predictions)
        np.testing.assert_array_equal(ours.epochs[which].confidences, theirs.epochs[which].confidences)

    # a checkpoint written before predictions were kept still resumes; a best epoch before the
    # resume then has no predictions, a later one has
    state.pop("best_predictions")
    torch.save(state, tmp_path / "old" / "checkpoint.pt")
    old = Trainer(config, data, tmp_path / "old", torch.device("cpu"), progress=False)
    assert old.load_checkpoint() and old.best_predictions is None
    assert old.run()["best"] == full["best"]
    kept = read_predictions(tmp_path / "old").epochs
    assert ("best" in kept) == (full["best"]["epoch"] == 1) and kept["last"].epoch == 1


def test_nan_loss_stops_the_run_with_epoch_and_step(tmp_path):
    data = small_synthetic(train_cap=16, test_cap=2)
    config = resolve_config("ce", "synthetic", 10, 0, overrides={
        "epochs": 1, "batch_size": 32, "lr": 1e6, "warmup_epochs": 1, "pipeline": "reference"})
    trainer = Trainer(config, data, tmp_path, torch.device("cpu"), progress=False)
    original = trainer.method.training_step

    def poisoned(views, labels, epoch, step):
        losses = original(views, labels, epoch, step)
        if step == 2:
            losses["loss"] = losses["loss"] * float("nan")
        return losses

    trainer.method.training_step = poisoned
    with pytest.raises(NonFiniteLoss, match="epoch 0 step 2"):
        trainer.run()


def test_process_count_other_than_the_releases_is_a_deviation():
    import baselines.paco  # noqa: F401  (registers "paco")
    from benchmarks.train.methods import build_method
    from benchmarks.train.training import process_deviation

    counts = torch.tensor([20, 10, 5])
    ce = build_method(resolve_config("ce", "cifar10", 100, 0), 3, counts)
    assert process_deviation(ce, 1) == {}
    assert process_deviation(ce, 2) == {"processes": {"paper": 1, "run": 2}}
    paco = build_method(resolve_config("paco", "imagenet_lt", 256, 0, overrides={"backbone": "resnet32"}), 3, counts)
    assert process_deviation(paco, 4) == {}  # the release's 4 DDP processes
    assert process_deviation(paco, 1) == {"processes": {"paper": 4, "run": 1}}


def test_images_per_second_counts_the_images_seen_not_the_nominal_batch(tmp_path):
    """A batch larger than the training set (drop_last false) sees the training set once per epoch,
    not `batch_size` images: the throughput is images seen / seconds."""
    data = small_synthetic(train_cap=4, test_cap=2)
    config = resolve_config("ce", "synthetic", 10, 0, overrides={
        "epochs": 1, "batch_size": 100000, "drop_last": False, "warmup_epochs": 0, "pipeline": "reference"})
    trainer = Trainer(config, data, tmp_path, torch.device("cpu"), progress=False)
    trainer.run()
    row = trainer.history[0]
    assert row["images_per_s"] * row["train_seconds"] == pytest.approx(len(data.train_labels))
