"""Decoupling's trained classifier stages on a finished `ce` run: cRT and LWS load the stage-1
weights (equal), freeze what the release freezes (parameters; BatchNorm statistics keep moving
unless the named deviation), resume exactly, and refuse a stage-1 checkpoint that changed; the
release's cosine schedule stepped before each epoch, by hand."""

import math

import pytest
import torch

from benchmarks import LTBenchError
from benchmarks.config import resolve_config
from benchmarks.data.datasets import DatasetRequest, build_dataset
from benchmarks.store.results import DONE, atomic_write_yaml, write_status
from benchmarks.train.schedules import learning_rate
from benchmarks.train.training import Trainer, write_metrics

CPU = torch.device("cpu")
SMALL = {"batch_size": 16, "pipeline": "reference", "train_cap_per_class": 12, "test_cap_per_class": 4}


@pytest.fixture(scope="module")
def data():
    return build_dataset("synthetic", DatasetRequest(imb_factor=10, train_cap_per_class=12, test_cap_per_class=4))


@pytest.fixture(scope="module")
def stage1(tmp_path_factory, data):
    """A finished one-epoch `ce` run folder, as the grid leaves it."""
    torch.set_num_threads(2)
    folder = tmp_path_factory.mktemp("stage1") / "ce" / "seed0"  # a run folder names its method and seed
    folder.mkdir(parents=True)
    config = resolve_config("ce", "synthetic", 10, 0, overrides={**SMALL, "epochs": 1, "warmup_epochs": 1})
    metrics = Trainer(config, data, folder, CPU, progress=False).run()
    atomic_write_yaml(folder / "config.yaml", config)
    write_metrics(folder, metrics)
    write_status(folder, DONE)
    return folder, torch.load(folder / "checkpoint.pt", weights_only=False)["method"]


def stage2(method, data, folder, stage1_folder, **overrides):
    config = resolve_config(method, "synthetic", 10, 0, overrides={**SMALL, "epochs": 2, **overrides})
    return Trainer(config, data, folder, CPU, progress=False, stage1=stage1_folder)


def backbone_params(state):
    return {k: v for k, v in state.items() if k.startswith("backbone.") and "running" not in k
            and "num_batches" not in k}


def test_crt_loads_and_freezes_the_stage1_backbone_and_retrains_a_new_classifier(tmp_path, data, stage1):
    folder, ce = stage1
    trainer = stage2("crt", data, tmp_path / "crt", folder)
    method = trainer.method
    assert all(torch.equal(method.state_dict()[k], v) for k, v in ce.items() if k.startswith("backbone."))
    assert not torch.equal(method.classifier.weight, ce["classifier.weight"])  # re-initialised, as released
    assert not any(p.requires_grad for p in method.backbone.parameters())
    assert {id(p) for g in trainer.optimizer.param_groups for p in g["params"]} == \
        {id(p) for p in method.classifier.parameters()}
    metrics = trainer.run()
    after = method.state_dict()
    assert all(torch.equal(after[k], v) for k, v in backbone_params(ce).items())  # frozen
    assert not torch.equal(after["backbone.bn1.running_mean"], ce["backbone.bn1.running_mean"])  # release: BN moves
    assert not torch.equal(after["classifier.weight"], trainer.method.classifier.weight.new_zeros(1))
    assert metrics["stage1"]["folder"] == str(folder.resolve())

    kept = stage2("crt", data, tmp_path / "crt-bn", folder, freeze_backbone_bn=True)
    kept_metrics = kept.run()
    assert torch.equal(kept.method.state_dict()["backbone.bn1.running_mean"], ce["backbone.bn1.running_mean"])
    assert kept_metrics["deviations"]["freeze_backbone_bn"] == {"paper": False, "run": True}


def test_lws_learns_only_the_class_scales_on_the_frozen_stage1_classifier(tmp_path, data, stage1):
    folder, ce = stage1
    trainer = stage2("lws", data, tmp_path / "lws", folder)
    method = trainer.method
    for key in ("classifier.weight", "classifier.bias", "backbone.layer3.4.conv2.weight"):
        assert torch.equal(method.state_dict()[key], ce[key])
    assert torch.equal(method.scales, torch.ones(10))
    assert [p for g in trainer.optimizer.param_groups for p in g["params"]] == [method.scales]
    h = torch.randn(3, 64)
    with torch.no_grad():
        method.scales.copy_(torch.arange(1.0, 11.0))
        expected = (h @ ce["classifier.weight"].t() + ce["classifier.bias"]) * torch.arange(1.0, 11.0)
        assert torch.allclose(method.logits(h), expected, atol=1e-5)
        method.scales.fill_(1.0)
    trainer.run()
    assert not torch.equal(method.scales.detach(), torch.ones(10))
    for key in ("classifier.weight", "classifier.bias"):
        assert torch.equal(method.state_dict()[key], ce[key])


def test_a_stage2_run_resumes_exactly_and_refuses_a_changed_stage1_checkpoint(tmp_path, data, stage1, monkeypatch):
    folder, _ = stage1
    full = stage2("crt", data, tmp_path / "full", folder).run()

    cut = stage2("crt", data, tmp_path / "cut", folder)
    original = Trainer.train_epoch

    def stop_at_epoch_1(self, epoch):
        if epoch == 1:
            raise KeyboardInterrupt  # killed after epoch 0's checkpoint
        return original(self, epoch)

    monkeypatch.setattr(Trainer, "train_epoch", stop_at_epoch_1)
    with pytest.raises(KeyboardInterrupt):
        cut.run()
    monkeypatch.setattr(Trainer, "train_epoch", original)
    resumed = stage2("crt", data, tmp_path / "cut", folder)
    assert resumed.load_checkpoint() and resumed.start_epoch == 1
    again = resumed.run()
    assert again["best"] == full["best"] and again["last"] == full["last"]
    assert again["stage1"] == full["stage1"]

    state = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=False)
    state["stage1"] = dict(state["stage1"], checkpoint_sha256="0" * 64)
    torch.save(state, tmp_path / "cut" / "checkpoint.pt")
    with pytest.raises(LTBenchError, match="another stage-1 checkpoint"):
        stage2("crt", data, tmp_path / "cut", folder).load_checkpoint()


def test_cosine_stepped_first_against_hand_worked_values():
    config = {"lr_schedule": "cosine_stepped_first", "lr": 0.2, "epochs": 10}
    # CosineAnnealingLR(T_max=10, eta_min=0) stepped before each epoch: epoch e trains at step e + 1
    assert learning_rate(0, config) == pytest.approx(0.1 * (1 + math.cos(math.pi / 10)))  # 0.19511
    assert learning_rate(4, config) == pytest.approx(0.1)
    assert learning_rate(9, config) == pytest.approx(0.0, abs=1e-12)


def test_decoupling_recipes_select_step_and_batch_as_the_releases():
    """Issue 22 points 6-7: on ImageNet-LT the release keeps the best ImageNet_LT_val epoch
    (run_networks.py), in both stages; its CE stage 1 steps CosineAnnealingLR before each epoch and
    stops an epoch after int(N / 512) steps; cRT's CIFAR epochs are BalancedMetaSoftmax's 2,000
    classifier iterations of batch 512 restated in epochs (ceil(2000 / ceil(N / 512)))."""
    for method in ("ce", "crt", "lws"):
        assert resolve_config(method, "imagenet_lt", 256)["select_on"] == "val"
        assert resolve_config(method, "inat2018", 500)["select_on"] == "test"  # its val set is the test set
    for dataset, imb in (("imagenet_lt", 256), ("inat2018", 500)):
        ce = resolve_config("ce", dataset, imb)
        assert (ce["lr_schedule"], ce["drop_last"], ce["warmup_epochs"]) == ("cosine_stepped_first", True, 0)
    assert learning_rate(89, resolve_config("ce", "imagenet_lt", 256)) == pytest.approx(0.0, abs=1e-12)
    for dataset, images in (("cifar10", 12406), ("cifar100", 10847)):
        assert resolve_config("crt", dataset, 100)["epochs"] == math.ceil(2000 / math.ceil(images / 512))
    assert [resolve_config("crt", d, 100)["epochs"] for d in ("cifar10", "cifar100")] == [80, 91]


def test_a_stage2_run_refuses_a_stage1_checkpoint_that_is_not_its_folders(tmp_path, data, stage1):
    """A replaced stage-1 checkpoint.pt (another configuration's, or other weights of the same
    configuration) is refused with a clear error before any weight is used."""
    import shutil

    folder, _ = stage1
    copy = tmp_path / "ce" / "seed0"
    shutil.copytree(folder, copy)
    state = torch.load(copy / "checkpoint.pt", weights_only=False)
    torch.save({**state, "config": {**state["config"], "lr": 0.5}}, copy / "checkpoint.pt")
    with pytest.raises(LTBenchError, match=r"checkpoint\.pt was written by another configuration than its "
                                           r"folder's config\.yaml"):
        stage2("crt", data, tmp_path / "crt", copy, stage1_checkpoint="final")
    method = {k: v + 1 if v.is_floating_point() else v for k, v in state["method"].items()}
    torch.save({**state, "method": method}, copy / "checkpoint.pt")  # same config, other weights
    with pytest.raises(LTBenchError, match=r"checkpoint\.pt is not the one its run finished with \(sha256"):
        stage2("crt", data, tmp_path / "crt", copy, stage1_checkpoint="final")
    assert not (tmp_path / "crt").exists()


def test_stage2_starts_from_the_stage1_runs_selected_epoch_as_the_release_or_its_final_one(tmp_path, data, stage1):
    """Decoupling's releases hand stage 2 the stage-1 epoch they selected (state_dict_best), on
    whatever split selects: `stage1_checkpoint: best` loads best.pt, from a stage-1 run selecting
    on test (CIFAR) as from one selecting on val (ImageNet-LT), and metrics.json says which file.
    `final` (checkpoint.pt) is a recorded deviation; la_posthoc's release adjusts its final model."""
    import dataclasses

    from benchmarks.config import recipe_deviations

    assert [resolve_config(m)["stage1_checkpoint"] for m in ("crt", "lws", "tau_norm", "la_posthoc")] == \
        ["best", "best", "best", "final"]
    test_folder, _ = stage1
    crt = stage2("crt", data, tmp_path / "from_test", test_folder).run()
    assert crt["stage1"]["checkpoint"] == "best.pt" and "stage1_checkpoint" not in crt["deviations"]
    final = stage2("crt", data, tmp_path / "from_final", test_folder, stage1_checkpoint="final").run()
    assert final["stage1"]["checkpoint"] == "checkpoint.pt"
    assert final["deviations"]["stage1_checkpoint"] == {"paper": "best", "run": "final"}
    assert recipe_deviations(resolve_config("crt", overrides={"stage1_checkpoint": "final"})) == \
        {"stage1_checkpoint": {"paper": "best", "run": "final"}}
    with pytest.raises(LTBenchError, match="stage1_checkpoint must be one of best, final; got 'last'"):
        resolve_config("lws", overrides={"stage1_checkpoint": "last"})
    # a run folder written before the option started from the final epoch, and reads so
    from benchmarks.config import with_added_keys

    written = {k: v for k, v in resolve_config("crt").items() if k != "stage1_checkpoint"}
    assert with_added_keys(written)["stage1_checkpoint"] == "final"

    with_val = dataclasses.replace(data, val_images=data.test_images, val_labels=data.test_labels)
    folder = tmp_path / "stage1val" / "ce" / "seed0"
    folder.mkdir(parents=True)
    config = resolve_config("ce", "synthetic", 10, 0,
                            overrides={**SMALL, "epochs": 3, "warmup_epochs": 1, "lr": 0.5})
    config["select_on"] = "val"  # the synthetic set declares no val split: the copy above lends it one
    metrics = Trainer(config, with_val, folder, CPU, progress=False).run()
    atomic_write_yaml(folder / "config.yaml", config)
    write_metrics(folder, metrics)
    write_status(folder, DONE)
    best = torch.load(folder / "best.pt", weights_only=False)

    trainer = stage2("crt", data, tmp_path / "from_val", folder)
    run = trainer.run()
    assert run["stage1"]["checkpoint"] == "best.pt"
    assert run["stage1"]["epochs_done"] == best["epochs_done"] == metrics["best"]["epoch"] + 1
    loaded = backbone_params(torch.load(tmp_path / "from_val" / "checkpoint.pt", weights_only=False)["method"])
    for name, value in backbone_params(best["method"]).items():
        assert torch.equal(loaded[name], value), name  # frozen stage-1 backbone = best.pt's

    (folder / "best.pt").unlink()  # a stage-1 run from before best.pt was kept
    with pytest.raises(LTBenchError, match="best.pt is missing or unreadable; delete that run folder to train it "
                                           "again .*--set stage1_checkpoint=final"):
        stage2("crt", data, tmp_path / "again", folder).run()
