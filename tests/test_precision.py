"""Under bf16 autocast, heads, classifiers and every loss still compute in float32."""

import torch

from baselines.bcl import balanced_contrastive_loss
from baselines.paco import paco_loss
from bccl.losses import centroid_loss, class_averaged_supcon
from benchmarks.models import CosineClassifier, LinearClassifier, projection_head


def bf16(fn):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return fn()


def test_losses_identical_with_and_without_bf16_autocast():
    g = torch.Generator().manual_seed(0)
    z = torch.nn.functional.normalize(torch.randn(16, 32, generator=g), dim=1)
    labels = torch.randint(0, 3, (8,), generator=g)
    centroids = torch.randn(3, 4, 32, generator=g)
    protos = torch.nn.functional.normalize(torch.randn(3, 32, generator=g), dim=1)
    q, k = z[:8], z[8:]
    queue = torch.nn.functional.normalize(torch.randn(10, 32, generator=g), dim=1)
    queue_labels = torch.randint(0, 3, (10,), generator=g)
    logits = torch.randn(8, 3, generator=g) * 10
    counts = torch.tensor([50, 10, 2])
    calls = [
        lambda: class_averaged_supcon(z, labels, 3, 0.1),
        lambda: centroid_loss(z, labels, centroids),
        lambda: balanced_contrastive_loss(z, labels, protos, 0.1),
        lambda: paco_loss(q, k, queue, labels, queue_labels, logits, counts, 0.01, 1.0, 1.0, 0.05),
    ]
    for call in calls:
        full, mixed = call(), bf16(call)
        assert mixed.dtype == torch.float32
        assert torch.equal(full, mixed)


def test_heads_and_classifiers_run_in_float32_under_autocast():
    torch.manual_seed(0)
    h = torch.randn(8, 64)
    for module in (CosineClassifier(64, 10), LinearClassifier(64, 10), projection_head(64, 32, 16).eval()):
        full, mixed = module(h), bf16(lambda: module(h))
        assert mixed.dtype == torch.float32 and torch.equal(full, mixed)


def test_cosine_classifier_init_norms():
    torch.manual_seed(0)
    unit = CosineClassifier(64, 100)
    assert torch.allclose(unit.weight.norm(dim=0), torch.ones(100))
    bccl = CosineClassifier(64, 100, init_max_norm=5.0)
    norms = bccl.weight.norm(dim=0)
    # uniform(-1, 1) columns of 64 have norm ~ sqrt(64/3) = 4.6, capped at 5
    assert norms.max() <= 5.0 + 1e-5 and 4.0 < norms.mean() < 5.0


def test_recipes_pick_the_released_classifier_init_and_batching():
    from benchmarks.config import resolve_config
    from benchmarks.methods import build_method

    config = resolve_config("bccl")
    method = build_method(config, 10, torch.tensor([100] * 10))
    assert method.classifier.weight.norm(dim=0).min() > 3.0  # renorm_(2, 1, 5), not unit columns
    assert resolve_config("bcl")["cosine_init_max_norm"] == 5.0  # docs/protocol.md: BCL's CIFAR cosine classifier
    assert resolve_config("bcl", dataset="imagenet_lt")["cosine_init_max_norm"] == 1.0  # official code
    assert resolve_config("ce")["drop_last"] is False  # LDAM-DRW keeps the last batch
    # linear classifiers: Kaiming-normal (LDAM-DRW) vs nn.Linear's uniform(+-1/sqrt(64)) init
    bound = 1 / 64 ** 0.5
    for method_name, dataset, default_init in [("ce", "cifar10", False), ("paco", "cifar10", True),
                                               ("ce", "imagenet_lt", True), ("ce", "inat2018", True)]:
        cfg = resolve_config(method_name, dataset=dataset) | {"backbone": "resnet32"}
        weight = build_method(cfg, 10, torch.tensor([100] * 10)).classifier.weight
        assert (weight.abs().max() <= bound).item() == default_init, (method_name, dataset)
    assert resolve_config("bccl")["drop_last"] is True
