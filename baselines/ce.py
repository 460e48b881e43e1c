"""CE: ResNet-32 + linear classifier trained with plain cross-entropy (the LDAM-DRW baseline).

Recipes (LDAM-DRW on CIFAR, Decoupling on the large datasets) and their sources: docs/methods/ce.md.

`CrossEntropy` is also the base of the single-classifier baselines that differ only in their loss
(`ce_drw`, `focal`, `cb_focal`, `ldam_drw`, `balanced_softmax`, `logit_adjust`): each overrides
`loss`. The loss takes the epoch's per-class weights from `Method.class_weights(epoch)`, which the
recipe's re-weighting schedule switches (`reweight`, none for plain CE: weight=None).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from benchmarks.train.methods import METHODS, Method
from benchmarks.train.models import build_backbone, build_classifier


@METHODS.register("ce")
class CrossEntropy(Method):
    name = "ce"
    views = ("crop_flip",)
    takes_class_weights = True

    def __init__(self, config, num_classes, class_counts):
        super().__init__(config, num_classes, class_counts)
        self.backbone = build_backbone(config["backbone"])
        self.classifier = build_classifier(config, self.backbone.out_dim, num_classes)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
        """The training loss of float32 `logits`; `weight`: the epoch's per-class weights or None."""
        return F.cross_entropy(logits, labels, weight=weight)

    def training_step(self, views, labels, epoch, step):
        logits = self.classifier(self.backbone(views[0]))
        return {"loss": self.loss(logits.float(), labels, self.class_weights(epoch))}

    def eval_logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.backbone(images))
