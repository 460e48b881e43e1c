"""CE, the LDAM-DRW baseline: its recipe as resolved, and a step's loss from its parts."""

from __future__ import annotations

import pytest
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


def test_bn_groups_normalise_each_dataparallel_chunk_and_keep_the_first_chunks_running_stats():
    """`--set bn_groups=4` = the classifier-balancing stage 1 on 4 GPUs (nn.DataParallel): each
    chunk's BatchNorm uses its own statistics, the loss is that of the gathered logits, and only
    the first chunk moves the running statistics. The recipe's 1 is one BatchNorm batch."""
    import copy

    from benchmarks.config import recipe_deviations

    config = resolve_config("ce", "imagenet_lt", overrides={"bn_groups": 4, "backbone": "resnet8"})
    assert resolve_config("ce", "imagenet_lt")["bn_groups"] == resolve_config("ce")["bn_groups"] == 1
    assert recipe_deviations(config)["bn_groups"] == {"paper": 1, "run": 4}
    torch.manual_seed(0)
    grouped = build_method(config, 5, torch.tensor([40, 20, 10, 5, 2]))
    plain = copy.deepcopy(grouped)
    plain.local_bn_groups = 1
    images = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    labels = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2])
    loss = grouped.training_step([images], labels, epoch=0, step=0)["loss"]
    per_chunk = copy.deepcopy(plain)
    logits = torch.cat([per_chunk.classifier(per_chunk.backbone(c)) for c in images.chunk(4)])
    assert torch.allclose(loss, F.cross_entropy(logits, labels), atol=1e-5)
    first = copy.deepcopy(plain)
    first.backbone(images[:2])  # what replica 0 alone does to the running statistics
    for a, b in zip(grouped.buffers(), first.buffers()):
        assert torch.equal(a, b)
    whole = plain.training_step([images], labels, epoch=0, step=0)["loss"]
    assert not torch.allclose(whole, loss, atol=1e-3)  # one BatchNorm batch computes something else


def test_the_whole_ce_family_takes_bn_groups_at_one():
    """Every method built on CE reads `bn_groups` (so a recipe written as `base: ce` stays
    valid), at 1 in its recipe (the releases' one GPU on CIFAR); 0 is refused."""
    from benchmarks import LTBenchError

    for method in ("ce", "ce_drw", "focal", "cb_focal", "ldam_drw", "balanced_softmax", "logit_adjust"):
        assert resolve_config(method)["bn_groups"] == 1, method
    for method in ("ce", "focal"):
        with pytest.raises(LTBenchError, match="bn_groups must be >= 1"):
            resolve_config(method, overrides={"bn_groups": 0})
