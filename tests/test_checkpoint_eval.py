"""`--eval-checkpoint`: the BCCL release's checkpoint format (built here with exactly its names and
shapes), ltbench's own checkpoints, the PaCo release's names, and clear errors on mismatches."""

import json

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import run_benchmark
import yaml
from _tiny_data import TEST_COUNTS, make_imagenet_lt_tree, register_tiny_backbone
from benchmarks import LTBenchError
from benchmarks.run.checkpoint_eval import load_for_evaluation, to_method_state
from benchmarks.config import resolve_config
from benchmarks.data.datasets import DatasetRequest, build_dataset
from benchmarks.data.loaders import normalised_tensor
from benchmarks.train.methods import build_method
from benchmarks.train.models import resnet32
from benchmarks.store.predictions import labels_fingerprint, read_predictions


class ReleaseNormedLinear(nn.Module):
    """The release's NormedLinear: weight (in_features, num_classes), logits / 0.03."""

    def __init__(self, in_features, num_classes):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_features, num_classes).uniform_(-1, 1).renorm_(2, 1, 5))

    def forward(self, x):
        return F.normalize(x, dim=1).mm(F.normalize(self.weight, dim=0)) / 0.03


class ReleaseModel(nn.Module):
    """The BCCL release's `Model` layout: `encoder`, `head` (Linear, BN1d, ReLU, Linear), `fc`."""

    def __init__(self, encoder, dim_in, hidden, feat_dim, num_classes):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Sequential(nn.Linear(dim_in, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                                  nn.Linear(hidden, feat_dim))
        self.fc = ReleaseNormedLinear(dim_in, num_classes)


def randomise_bn(model):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.normal_(1, 0.1)


SYNTH = ["--grid", "smoke", "--datasets", "digits", "--methods", "bccl", "--imb-factors", "100",
         "--no-progress", "--set", "test_cap_per_class=20", "backbone=resnet32"]  # the release checkpoints are ResNet-32s


def test_bccl_release_checkpoint_resnet32_on_cifar_shaped_data(tmp_path, capsys):
    torch.manual_seed(0)
    release = ReleaseModel(resnet32(), 64, 512, 128, 10)
    randomise_bn(release)
    state = release.state_dict()
    # exactly the release's names and shapes
    assert {k.split(".")[0] for k in state} == {"encoder", "head", "fc"}
    for key, shape in (("encoder.conv1.weight", (16, 3, 3, 3)), ("encoder.layer1.0.conv1.weight", (16, 16, 3, 3)),
                       ("encoder.layer3.4.bn2.running_var", (64,)), ("head.0.weight", (512, 64)),
                       ("head.1.running_mean", (512,)), ("head.3.weight", (128, 512)), ("fc.weight", (64, 10))):
        assert tuple(state[key].shape) == shape, key
    path = tmp_path / "bccl_cifar10_if100.pth.tar"
    torch.save({"epoch": 200, "arch": "resnet32", "state_dict": state, "best_acc1": 85.22, "optimizer": {}}, path)

    results = tmp_path / "results"
    assert run_benchmark.main(SYNTH + ["--results-dir", str(results), "--eval-checkpoint", str(path)]) == 0
    assert "bccl/bcl-release" in capsys.readouterr().out
    folder, = results.glob("digits-tiny@*/if100/bccl*/eval-bccl_cifar10_if100")  # under the smoke grid's label
    assert (folder / "status").read_text().strip() == "done" and (folder / "config.yaml").exists()
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["best"] == metrics["last"] and metrics["last"]["epoch"] == 199
    assert metrics["checkpoint"]["format"] == "bccl/bcl-release" and metrics["test_images"] == 200

    # the release's own forward on the same test images gives the same accuracy
    data = build_dataset("digits", DatasetRequest(imb_factor=100, test_cap_per_class=20))
    release.eval()
    with torch.no_grad():
        x = normalised_tensor(data.test_images, data.mean, data.std, torch.device("cpu"))
        preds = release.fc(release.encoder(x)).argmax(1).numpy()
    assert metrics["last"]["top1"] == pytest.approx(100.0 * (preds == data.test_labels).mean())
    kept = read_predictions(folder)  # per-image predictions of the evaluated checkpoint, pairable
    assert kept.epochs["best"].epoch == kept.epochs["last"].epoch == 199
    np.testing.assert_array_equal(kept.epochs["last"].predictions, preds)
    assert kept.fingerprint == labels_fingerprint(data.test_labels)


def test_mismatches_are_listed():
    config = resolve_config("bccl", "digits", 100)
    method = build_method(config, 10, torch.ones(10, dtype=torch.long))
    release = ReleaseModel(resnet32(), 64, 512, 128, 10).state_dict()
    _, state, _, _ = to_method_state({"state_dict": release})
    transposed = dict(state, **{"classifier.weight": state["classifier.weight"].t()})
    with pytest.raises(LTBenchError, match=r"shape mismatch: classifier\.weight \(10, 64\) vs model \(64, 10\).*cosine"):
        load_for_evaluation(method, transposed)
    missing = {k: v for k, v in state.items() if k != "backbone.bn1.weight"}
    with pytest.raises(LTBenchError, match=r"missing \(needed to evaluate\): backbone\.bn1\.weight"):
        load_for_evaluation(method, missing)
    with pytest.raises(LTBenchError, match=r"unexpected: backbone\.layer4\.0\.conv1\.weight"):
        load_for_evaluation(method, dict(state, **{"backbone.layer4.0.conv1.weight": torch.zeros(1)}))
    with pytest.raises(LTBenchError, match="unknown checkpoint format"):
        to_method_state({"state_dict": {"net.conv.weight": torch.zeros(1)}})
    # a checkpoint without queues/centroids is fine: they do not enter the evaluation
    assert any(k.startswith("queues.") for k in load_for_evaluation(method, state))


def test_bccl_release_layout_of_a_torchvision_resnet50_on_the_tiny_tree(tmp_path, capsys):
    import torchvision

    make_imagenet_lt_tree(tmp_path / "data")
    torch.manual_seed(0)
    encoder = torchvision.models.resnet50(weights=None)
    del encoder.fc  # the release comments fc out of its torchvision-copied ResNet
    release = ReleaseModel(encoder, 2048, 2048, 2048, 3)  # README: --feat_dim 2048, "mlp" head
    state = release.state_dict()
    assert "encoder.layer4.2.bn3.running_var" in state and tuple(state["fc.weight"].shape) == (2048, 3)
    path = tmp_path / "imagenet_lt_r50.pth.tar"
    torch.save({"epoch": 100, "state_dict": state}, path)
    results = tmp_path / "results"
    args = ["--grid", "imagenet", "--methods", "bccl", "--data-root", str(tmp_path / "data"), "--results-dir",
            str(results), "--no-progress", "--set", "num_workers=0", "--eval-checkpoint", str(path)]
    assert run_benchmark.main(args) == 0, capsys.readouterr()
    metrics = json.loads((results / "imagenet_lt" / "if256" / "bccl" / "eval-imagenet_lt_r50" / "metrics.json").read_text())
    assert metrics["test_images"] == sum(TEST_COUNTS) and metrics["last"]["epoch"] == 99
    assert metrics["checkpoint"]["method_keys_not_in_checkpoint"]  # queues, centroids: not needed


def test_paco_release_names_map_onto_the_method():
    register_tiny_backbone()
    config = resolve_config("paco", "imagenet_lt", 256, overrides={"backbone": "tiny_cnn", "queue_size": 16})
    method = build_method(config, 3, torch.tensor([5, 3, 1]))
    reverse = [("key_backbone.", "encoder_k."), ("key_head.", "encoder_k.fc."), ("backbone.", "encoder_q."),
               ("head.", "encoder_q.fc."), ("classifier.", "linear."), ("queue_labels", "queue_l")]
    release = {}
    for key, value in method.state_dict().items():
        for ours, theirs in reverse:
            if key.startswith(ours):
                key = theirs + key[len(ours):]
                break
        if key != "class_counts":
            release["module." + key] = value.clone() + (1 if value.is_floating_point() else 0)
    release["module.linear_k.weight"] = torch.zeros(3, 8)
    fmt, state, epochs, dropped = to_method_state({"epoch": 400, "state_dict": release})
    assert fmt == "paco-release" and epochs == 400 and dropped == ["linear_k.weight"]
    assert load_for_evaluation(method, state) == ["class_counts"]
    assert torch.equal(method.queue, release["module.queue"]) and torch.equal(method.classifier.bias,
                                                                              release["module.linear.bias"])


def test_eval_checkpoint_needs_one_cell(tmp_path, capsys):
    code = run_benchmark.main(["--grid", "smoke", "--eval-checkpoint", str(tmp_path / "x.pt"),
                               "--results-dir", str(tmp_path)])
    assert code == 2 and "evaluates one cell" in capsys.readouterr().err


class LDAMReleaseResNet32(nn.Module):
    """kaidic/LDAM-DRW `models/resnet_cifar.py` ResNet_s names: conv1, bn1, layer1-3 (option-A
    shortcuts without weights), `linear` (nn.Linear, or NormedLinear (64, classes) with use_norm)."""

    def __init__(self, num_classes, use_norm):
        super().__init__()
        trunk = resnet32()
        self.conv1, self.bn1 = trunk.conv1, trunk.bn1
        self.layer1, self.layer2, self.layer3 = trunk.layer1, trunk.layer2, trunk.layer3
        self.linear = ReleaseNormedLinear(64, num_classes) if use_norm else nn.Linear(64, num_classes)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.linear(F.avg_pool2d(out, out.size()[3]).flatten(1))


@pytest.mark.parametrize("use_norm", [False, True])
def test_ldam_drw_release_checkpoint(tmp_path, capsys, use_norm):
    torch.manual_seed(1)
    release = LDAMReleaseResNet32(10, use_norm)
    randomise_bn(release)
    state = release.state_dict()
    for key, shape in (("conv1.weight", (16, 3, 3, 3)), ("layer2.0.conv1.weight", (32, 16, 3, 3)),
                       ("layer3.4.bn2.running_var", (64,)), ("linear.weight", (64, 10) if use_norm else (10, 64))):
        assert tuple(state[key].shape) == shape, key
    assert ("linear.bias" in state) is not use_norm
    path = tmp_path / "ckpt.pth.tar"
    # cifar_train.py: save_checkpoint(args, {'epoch': epoch + 1, 'arch', 'state_dict', 'best_acc1', 'optimizer'}),
    # the model wrapped in DataParallel (module. prefix)
    torch.save({"epoch": 200, "arch": "resnet32", "state_dict": {f"module.{k}": v for k, v in state.items()},
                "best_acc1": torch.tensor(70.36), "optimizer": {"state": {}, "param_groups": []}}, path)
    results = tmp_path / "results"
    args = ["--grid", "smoke", "--datasets", "digits", "--methods", "ce", "--imb-factors", "100", "--no-progress",
            "--set", "test_cap_per_class=20", "backbone=resnet32"] + (["classifier=cosine"] if use_norm else []) + \
        ["--results-dir", str(results), "--eval-checkpoint", str(path)]
    assert run_benchmark.main(args) == 0
    assert "ldam-drw-release" in capsys.readouterr().out
    folder, = results.glob("digits-tiny@*/if100/ce@*/eval-ckpt*")  # the smoke grid's ce with --set test_cap_per_class
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["checkpoint"]["format"] == "ldam-drw-release" and metrics["last"]["epoch"] == 199
    assert metrics["checkpoint"]["method_keys_not_in_checkpoint"] == ["class_counts"]
    data = build_dataset("digits", DatasetRequest(imb_factor=100, test_cap_per_class=20))
    release.eval()
    with torch.no_grad():
        preds = release(normalised_tensor(data.test_images, data.mean, data.std, torch.device("cpu"))).argmax(1)
    assert metrics["last"]["top1"] == pytest.approx(100.0 * (preds.numpy() == data.test_labels).mean())


def test_release_types_load_weights_only_and_anything_else_needs_unsafe_load(tmp_path, capsys):
    import argparse
    import fractions

    from benchmarks.run.checkpoint_eval import _load_file

    state = {"encoder.conv1.weight": torch.zeros(2, 2)}
    release = tmp_path / "release.pth.tar"  # what releases pickle beside tensors: numpy scalars, arrays, args
    torch.save({"epoch": 200, "state_dict": state, "best_acc1": np.float64(85.22), "arr": np.arange(3),
                "args": argparse.Namespace(lr=0.15, arch="resnet32")}, release)
    loaded = _load_file(release)
    assert loaded["best_acc1"] == 85.22 and loaded["args"].lr == 0.15 and list(loaded["arr"]) == [0, 1, 2]

    other = tmp_path / "other.pt"
    torch.save({"state_dict": state, "ratio": fractions.Fraction(1, 3)}, other)
    with pytest.raises(LTBenchError, match=r"pickles fractions.Fraction.*--unsafe-load"):
        _load_file(other)
    assert _load_file(other, unsafe_load=True)["ratio"] == fractions.Fraction(1, 3)

    results = tmp_path / "results"  # through the command line: refused, one line, nothing written
    code = run_benchmark.main(SYNTH + ["--results-dir", str(results), "--eval-checkpoint", str(other)])
    err = capsys.readouterr().err
    assert code == 2 and "--unsafe-load" in err and len(err.strip().splitlines()) == 1
    assert not results.exists()
    assert run_benchmark.main(SYNTH + ["--results-dir", str(results), "--unsafe-load"]) == 2
    assert "--unsafe-load applies to --eval-checkpoint only" in capsys.readouterr().err


# -- the cell and configuration come from an ltbench checkpoint (issue 21 point 9) ------------------
from test_integrity import ARGS, folder_of, reference  # noqa: E402,F401  (the fixture too)


def _without(args, *items):
    return [a for a in args if a not in items]


def _one_line_refusal(args, results, capsys, *expected):
    code = run_benchmark.main(args)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    for text in expected:
        assert text in lines[0], lines[0]
    assert not results.exists() or not list(results.rglob("eval-*"))


def test_a_checkpoint_of_one_method_is_never_filed_as_another(reference, tmp_path, capsys):
    """ce's checkpoint fits focal's model (same shapes): it was evaluated and filed as focal."""
    results = tmp_path / "results"
    args = list(ARGS)
    args[args.index("ce")] = "focal"
    _one_line_refusal(args + ["--results-dir", str(results), "--eval-checkpoint", str(reference / "checkpoint.pt")],
                      results, capsys, "trained by method 'ce'", "--methods names 'focal'")


def test_a_forgotten_training_flag_files_the_evaluation_beside_the_checkpoints_run(reference, tmp_path, capsys):
    """Without --set batch_size=16 the command line plans another variant; the checkpoint's own
    configuration is evaluated, in its own variant's folder, and the difference is said loudly."""
    results = tmp_path / "results"
    code = run_benchmark.main(_without(ARGS, "batch_size=16") + [
        "--results-dir", str(results), "--eval-checkpoint", str(reference / "checkpoint.pt")])
    out, err = capsys.readouterr()
    assert code == 0, err
    cell = folder_of(results).parent  # where the reference run's variant lives in this results dir
    assert cell.name == reference.parent.name and cell.name.startswith("ce@batch_size=16,")
    folder = cell / "eval-checkpoint"
    assert (folder / "status").read_text().strip() == "done"
    assert [p.name for p in cell.parent.iterdir()] == [cell.name]  # no false variant
    assert [p.name for p in results.iterdir()] == [cell.parents[1].name]  # nor another grid label
    trained = yaml.safe_load((reference / "config.yaml").read_text())
    assert yaml.safe_load((folder / "config.yaml").read_text()) == trained
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["deviations"] == json.loads((reference / "metrics.json").read_text())["deviations"]
    assert metrics["checkpoint"]["config_source"] == "checkpoint"
    assert metrics["checkpoint"]["command_line_keys_replaced"] == ["batch_size"]
    assert "batch_size 32 -> 16" in out + err and "configuration the checkpoint records" in out + err


@pytest.mark.parametrize("extra, expected", [
    (["--set", "batch_size=64"], ("batch_size 64", "the checkpoint was trained with 16")),
    (["--set", "lr=0.3"], ("lr 0.3", "the checkpoint was trained with {lr}")),  # the grid's lr, whatever it is
    (["--epochs", "3"], ("epochs 3", "the checkpoint was trained with 2")),
    (["--name", "mine"], ("--name 'mine'", "the checkpoint's variant")),
    (["--datasets", "synthetic"], ("trained on dataset 'digits'",)),
])
def test_a_command_line_that_contradicts_the_checkpoint_is_refused(reference, tmp_path, capsys, extra, expected):
    results = tmp_path / "results"
    args = ARGS + extra
    if "--datasets" in extra:
        args = ARGS[2:] + extra
    if "--epochs" in extra:
        args = ARGS[:ARGS.index("--epochs")] + ARGS[ARGS.index("--epochs") + 2:] + extra
    trained = yaml.safe_load((reference / "config.yaml").read_text())
    _one_line_refusal(args + ["--results-dir", str(results), "--eval-checkpoint", str(reference / "checkpoint.pt")],
                      results, capsys, *(text.format(**trained) for text in expected))


def test_execution_keys_may_differ_from_the_checkpoint(reference, tmp_path, capsys):
    results = tmp_path / "results"
    code = run_benchmark.main(ARGS + ["--set", "eval_batch_size=7", "--results-dir", str(results),
                                      "--eval-checkpoint", str(reference / "checkpoint.pt")])
    assert code == 0, capsys.readouterr()
    folder = folder_of(results).parent / "eval-checkpoint"
    record = json.loads((folder / "metrics.json").read_text())["checkpoint"]
    assert record["config_keys_differing_from_checkpoint"] == ["eval_batch_size"]
    assert record["command_line_keys_replaced"] == []


def test_a_run_keeps_best_pt_beside_checkpoint_pt_and_eval_checkpoint_evaluates_either(tmp_path, capsys):
    """best.pt holds the selected epoch's weights (its sha256 recorded in metrics.json): evaluated
    with --eval-checkpoint it gives the run's best top-1, checkpoint.pt its last."""
    import hashlib

    results = tmp_path / "results"
    args = ["--grid", "smoke", "--datasets", "digits", "--methods", "ce", "--imb-factors", "100", "--no-progress",
            "--tiny", "--epochs", "3", "--set", "train_cap_per_class=10", "test_cap_per_class=10",
            "--results-dir", str(results)]
    assert run_benchmark.main(args) == 0
    run, = results.glob("digits-tiny*/if100/ce*/seed0")
    trained = json.loads((run / "metrics.json").read_text())
    best = torch.load(run / "best.pt", weights_only=True)
    assert best["epochs_done"] == trained["best"]["epoch"] + 1 and best["config"]["method"] == "ce"
    for name in ("best.pt", "checkpoint.pt"):
        assert trained["checkpoints"][name] == hashlib.sha256((run / name).read_bytes()).hexdigest()
    assert not list(run.glob(".*.tmp"))
    for name, which in (("best.pt", "best"), ("checkpoint.pt", "last")):
        assert run_benchmark.main(args + ["--eval-checkpoint", str(run / name)]) == 0
        folder, = run.parent.glob(f"eval-{name.removesuffix('.pt')}*")
        evaluated = json.loads((folder / "metrics.json").read_text())
        assert evaluated["last"]["epoch"] == trained[which]["epoch"]
        assert evaluated["last"]["top1"] == pytest.approx(trained[which]["top1"])
    capsys.readouterr()
