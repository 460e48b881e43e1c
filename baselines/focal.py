"""Focal loss as the LDAM-DRW release computes it (`losses.py`, `FocalLoss`, `--loss_type Focal`).

    CE_i = w_{y_i} * (-log softmax(z_i)[y_i])      (w: per-class weights, or all 1)
    p_i  = exp(-CE_i)
    L    = mean_i (1 - p_i)^gamma * CE_i

Note the release's form: p_i is computed from the *weighted* CE_i, so with class weights p_i is
not the softmax probability of the true class (for w_{y_i} = 1 it is). Reproduced as released;
the mean is over the batch, not weighted by w. gamma: 1 in the release's `cifar_train.py`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from baselines.ce import CrossEntropy
from benchmarks.checks import check_ranges
from benchmarks.train.methods import METHODS
from benchmarks.train.precision import float32


@float32
def focal_loss(logits: torch.Tensor, labels: torch.Tensor, gamma: float,
               weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over the batch of (1 - p_i)^gamma * CE_i, p_i = exp(-CE_i), CE_i weighted by `weight`."""
    ce = F.cross_entropy(logits.float(), labels, reduction="none", weight=weight)
    p = torch.exp(-ce)
    return ((1 - p) ** gamma * ce).mean()


@METHODS.register("focal")
class Focal(CrossEntropy):
    """ResNet-32 + linear classifier trained with the focal loss (`focal_gamma`)."""
    option_keys = (*CrossEntropy.option_keys, "focal_gamma")

    name = "focal"

    @classmethod
    def check_config(cls, config):
        super().check_config(config)
        check_ranges(config, {"focal_gamma": ">= 0"})

    def loss(self, logits, labels, weight):
        return focal_loss(logits, labels, self.config["focal_gamma"], weight)
