"""CE: ResNet-32 + linear classifier trained with plain cross-entropy (the LDAM-DRW baseline).

Recipes (LDAM-DRW on CIFAR, Decoupling on the large datasets) and their sources: docs/methods/ce.md.

`CrossEntropy` is also the base of the single-classifier baselines that differ only in their loss
(`ce_drw`, `focal`, `cb_focal`, `ldam_drw`, `balanced_softmax`, `logit_adjust`): each overrides
`loss`. The loss takes the epoch's per-class weights from `Method.class_weights(epoch)`, which the
recipe's re-weighting schedule switches (`reweight`, none for plain CE: weight=None).

`bn_groups` (an option of the whole family, `option_keys` extended by each subclass, so that a
recipe written as `base: ce` stays valid): on ImageNet-LT and iNaturalist ltbench's `ce` is the
classifier-balancing release's stage 1, which wraps the network in nn.DataParallel over every
visible GPU (`run_networks.py:113`), so BatchNorm normalises one GPU's chunk of the batch
(`benchmarks.train.bn_groups`). The release does not state its GPU count, so no value is "the
release's": the recipes keep 1 (the whole batch, as one GPU would; the LDAM-DRW family's CIFAR
runs use one GPU, `--gpu 0`) and `--set bn_groups=G` reproduces a G-GPU run.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from benchmarks.checks import check_ranges
from benchmarks.train.bn_groups import forward_in_groups, local_groups
from benchmarks.train.methods import METHODS, Method
from benchmarks.train.models import build_backbone, build_classifier


@METHODS.register("ce")
class CrossEntropy(Method):
    name = "ce"
    views = ("crop_flip",)
    takes_class_weights = True
    option_keys = ("bn_groups",)

    @classmethod
    def check_config(cls, config):
        check_ranges(config, {"bn_groups": ">= 1"})

    def __init__(self, config, num_classes, class_counts):
        super().__init__(config, num_classes, class_counts)
        self.backbone = build_backbone(config["backbone"])
        self.classifier = build_classifier(config, self.backbone.out_dim, num_classes)
        # 1 = no emulation: under torchrun each rank then normalises its share (or the whole batch
        # with sync_bn), as before the option, and the run records the deviation `processes`
        groups = int(config["bn_groups"])
        self.local_bn_groups = local_groups(groups, self.name) if groups > 1 else 1

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The backbone's features of a training batch, BatchNorm per `bn_groups` chunk."""
        if self.local_bn_groups == 1:  # the recipes' case: one forward, no concatenation copy
            return self.backbone(images)
        return torch.cat(forward_in_groups(self.backbone, images, self.local_bn_groups, self.backbone))

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
        """The training loss of float32 `logits`; `weight`: the epoch's per-class weights or None."""
        return F.cross_entropy(logits, labels, weight=weight)

    def training_step(self, views, labels, epoch, step):
        logits = self.classifier(self.features(views[0]))
        return {"loss": self.loss(logits.float(), labels, self.class_weights(epoch))}

    def eval_logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.backbone(images))
