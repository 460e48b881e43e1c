"""LR schedules at known epochs, shot groups at their thresholds, ResNet-32 and classifiers."""

import math

import numpy as np
import pytest
import torch

from benchmarks.train.evaluation import accuracy_metrics, shot_groups
from benchmarks.train.models import CosineClassifier, projection_head, resnet32
from benchmarks.train.schedules import learning_rate


def test_warmup_cosine_bccl_recipe():
    cfg = {"lr_schedule": "warmup_cosine", "lr": 0.15, "warmup_epochs": 10, "epochs": 200}
    assert learning_rate(0, cfg) == pytest.approx(0.015)
    assert learning_rate(9, cfg) == pytest.approx(0.15)
    # first cosine epoch: 0.15 * 0.5 * (1 + cos(pi * 1 / 191))
    assert learning_rate(10, cfg) == pytest.approx(0.15 * 0.5 * (1 + math.cos(math.pi / 191)))
    assert learning_rate(105, cfg) == pytest.approx(0.15 * 0.5 * (1 + math.cos(math.pi * 96 / 191)))
    assert learning_rate(199, cfg) == pytest.approx(0.15 * 0.5 * (1 + math.cos(math.pi * 190 / 191)))


def test_warmup_step_ldam_recipe():
    cfg = {"lr_schedule": "warmup_step", "lr": 0.1, "warmup_epochs": 5, "lr_steps": [[160, 0.01], [180, 0.0001]]}
    assert [learning_rate(e, cfg) for e in range(5)] == pytest.approx([0.02, 0.04, 0.06, 0.08, 0.1])
    assert learning_rate(5, cfg) == pytest.approx(0.1)
    assert learning_rate(159, cfg) == pytest.approx(0.1)
    assert learning_rate(160, cfg) == pytest.approx(0.001)
    assert learning_rate(179, cfg) == pytest.approx(0.001)
    assert learning_rate(180, cfg) == pytest.approx(0.00001)


def test_paco_step_runs_epoch_ten_at_1_1_lr():
    cfg = {"lr_schedule": "paco_step", "lr": 0.05, "warmup_epochs": 10, "lr_steps": [[321, 0.1], [361, 0.01]]}
    assert learning_rate(0, cfg) == pytest.approx(0.005)
    assert learning_rate(10, cfg) == pytest.approx(0.055)  # released quirk: e <= warmup
    assert learning_rate(11, cfg) == pytest.approx(0.05)
    assert learning_rate(320, cfg) == pytest.approx(0.05)
    assert learning_rate(321, cfg) == pytest.approx(0.005)
    assert learning_rate(361, cfg) == pytest.approx(0.0005)
    no_warmup = {**cfg, "warmup_epochs": 0}
    assert learning_rate(0, no_warmup) == pytest.approx(0.05)  # not a division by zero
    assert learning_rate(321, no_warmup) == pytest.approx(0.005)


def test_shot_group_thresholds():
    counts = [101, 100, 20, 19, 500, 1]
    groups = shot_groups(counts)
    assert groups["many"].tolist() == [0, 4]
    assert groups["medium"].tolist() == [1, 2]  # exactly 100 and exactly 20 are medium
    assert groups["few"].tolist() == [3, 5]


def test_accuracy_metrics_groups_and_empty_group_is_none():
    counts = [5000, 500, 50]  # no few-shot class, like CIFAR-10-LT
    labels = np.array([0, 0, 1, 1, 2, 2, 2, 2])
    preds = np.array([0, 0, 1, 0, 2, 0, 0, 0])
    m = accuracy_metrics(preds, labels, counts)
    assert m["top1"] == pytest.approx(100 * 4 / 8)
    assert m["per_class"] == pytest.approx([100.0, 50.0, 25.0])
    assert m["many"] == pytest.approx(75.0)  # mean of classes 0 and 1, not of images
    assert m["medium"] == pytest.approx(25.0)
    assert m["few"] is None


def test_resnet32_parameter_count():
    # conv1 432 + bn 32; stage1 5 x (2*2304 + 2*32); stage2 (4608 + 9216 + 128) + 4 x (2*9216 + 128);
    # stage3 (18432 + 36864 + 256) + 4 x (2*36864 + 256)
    expected = 464 + 5 * 4672 + 13952 + 4 * 18560 + 55552 + 4 * 73984
    assert expected == 463504
    model = resnet32()
    assert sum(p.numel() for p in model.parameters()) == expected
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 64)


def test_resnet20_and_resnet8_are_the_6n_plus_2_family_members():
    from benchmarks.train.models import build_backbone

    # ResNet-6n+2 with n blocks per stage: n = 3 (20 layers) and n = 1 (8 layers)
    for name, blocks, layers in (("resnet20", 3, 20), ("resnet8", 1, 8)):
        model = build_backbone(name)
        assert [len(s) for s in (model.layer1, model.layer2, model.layer3)] == [blocks] * 3
        convs = sum(1 for m in model.modules() if isinstance(m, torch.nn.Conv2d))
        assert convs + 1 == layers  # + the classifier
        assert model(torch.zeros(2, 3, 28, 28)).shape == (2, 64)
    expected20 = 464 + 3 * 4672 + 13952 + 2 * 18560 + 55552 + 2 * 73984
    assert sum(p.numel() for p in build_backbone("resnet20").parameters()) == expected20


def test_option_a_shortcut_has_no_parameters_and_zero_pads():
    block = resnet32().layer2[0]
    assert sum(p.numel() for p in block.shortcut.parameters()) == 0
    x = torch.randn(1, 16, 8, 8)
    out = block.shortcut(x)
    assert out.shape == (1, 32, 4, 4)
    assert torch.equal(out[:, 8:24], x[:, :, ::2, ::2]) and out[:, :8].abs().sum() == 0


def test_cosine_classifier_is_scaled_cosine_similarity():
    clf = CosineClassifier(4, 3, scale=1 / 0.03)
    assert torch.allclose(clf.weight.norm(dim=0), torch.ones(3))  # unit columns at init
    h = torch.randn(5, 4)
    w = clf.weight.detach()
    expected = torch.stack([torch.stack([torch.dot(h[i], w[:, c]) / (h[i].norm() * w[:, c].norm())
                                         for c in range(3)]) for i in range(5)]) / 0.03
    assert torch.allclose(clf(h), expected, atol=1e-4)


def test_projection_head_layout_matches_release_names():
    head = projection_head(64, 512, 128)
    names = {k for k in head.state_dict()}
    assert {"0.weight", "1.running_mean", "3.weight"} <= names
