"""CE: ResNet-32 + linear classifier trained with plain cross-entropy (the LDAM-DRW baseline).

Recipes (LDAM-DRW on CIFAR, Decoupling on the large datasets) and their sources: docs/methods/ce.md.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from benchmarks.methods import METHODS, Method
from benchmarks.models import build_backbone, build_classifier


@METHODS.register("ce")
class CrossEntropy(Method):
    name = "ce"
    views = ("crop_flip",)

    def __init__(self, config, num_classes, class_counts):
        super().__init__(config, num_classes, class_counts)
        self.backbone = build_backbone(config["backbone"])
        self.classifier = build_classifier(config, self.backbone.out_dim, num_classes)

    def training_step(self, views, labels, epoch, step):
        logits = self.classifier(self.backbone(views[0]))
        return {"loss": F.cross_entropy(logits.float(), labels)}

    def eval_logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.backbone(images))
