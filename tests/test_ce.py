"""CE, the LDAM-DRW baseline: its recipe as resolved, and a step's loss from its parts."""

from __future__ import annotations

import torch
import torch.nn.functional as F

import baselines.ce  # noqa: F401  (registers "ce")
from benchmarks.config import resolve_config
from benchmarks.train.methods import build_method


def test_recipe_values():
    config = resolve_config("ce")
    assert (config["lr"], config["weight_decay"], config["batch_size"], config["epochs"]) == (0.1, 2e-4, 128, 200)
    assert (config["lr_schedule"], config["warmup_epochs"]) == ("warmup_step", 5)
    assert config["lr_steps"] == [[160, 0.01], [180, 0.0001]]
    assert (config["classifier"], config["drop_last"]) == ("linear", False)
    assert config == resolve_config("ce", dataset="cifar100") | {"dataset": "cifar10"}


def test_step_is_plain_cross_entropy_on_the_one_view():
    """No logit adjustment, no prior: the loss is CE of the linear classifier's logits."""
    torch.manual_seed(0)
    counts = torch.tensor([50, 20, 5, 1])
    method = build_method(resolve_config("ce"), 4, counts)
    assert method.view_names() == ("crop_flip",)
    images = torch.randn(6, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 1, 2, 3, 3, 0])
    out = method.training_step([images], labels, epoch=0, step=0)
    with torch.no_grad():
        logits = method.classifier(method.backbone(images))
    assert torch.allclose(out["loss"], F.cross_entropy(logits, labels), atol=1e-6)
    assert not torch.allclose(out["loss"], F.cross_entropy(logits + method.log_prior, labels), atol=1e-3)
