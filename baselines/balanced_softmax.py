"""Balanced Softmax (Ren et al., NeurIPS 2020; jiawei-ren/BalancedMetaSoftmax-Classification,
`loss/BalancedSoftmaxLoss.py`, the README's snapshot `balanced_softmax_loss`):

    L = CE(z + log n, y)        n: the (C,) training class counts

Softmax is shift-invariant, so this is the logit-adjusted loss with tau 1 (log n_c = log pi_c +
log N); it is computed as released, with log n_c, through the shared `logit_adjusted_ce`.
Evaluation uses the raw logits.

Views: the release's CIFAR-LT loader (`data/ImbalanceCIFAR.py`, the train transform) runs
RandomCrop(32, 4) + flip + CIFAR10Policy + ToTensor + Cutout(1 hole, 16) + Normalize, which is
ltbench's `autoaug_cutout` view (resolved through `autoaugment_policy`). The recipe (schedule, steps
per epoch) and its fidelity sheet: configs/methods/balanced_softmax.yaml, docs/methods/balanced_softmax.md.
"""

from __future__ import annotations

from typing import Sequence

import torch

from baselines.ce import CrossEntropy
from benchmarks.config import check_ranges
from benchmarks.train.losses import logit_adjusted_ce
from benchmarks.train.methods import METHODS


def balanced_softmax_loss(logits: torch.Tensor, labels: torch.Tensor,
                          class_counts: torch.Tensor | Sequence[int]) -> torch.Tensor:
    """CE(logits + log n_c, y), mean over the batch, in float32."""
    counts = torch.as_tensor(class_counts, dtype=torch.float32, device=logits.device)
    return logit_adjusted_ce(logits, labels, counts.log())


@METHODS.register("balanced_softmax")
class BalancedSoftmax(CrossEntropy):
    """ResNet-32 + linear classifier trained with the Balanced Softmax loss."""

    name = "balanced_softmax"
    views = ("autoaug_cutout",)
    # its schedule (warmup_cosine_stepped_first, benchmarks/train/schedules.py) reads the warmup's start lr
    option_keys = (*CrossEntropy.option_keys, "warmup_start_lr")
    takes_class_weights = False

    @classmethod
    def check_config(cls, config) -> None:
        super().check_config(config)
        check_ranges(config, {"warmup_start_lr": ">= 0"}, f"(run balanced_softmax on {config['dataset']})")

    def loss(self, logits, labels, weight):
        return balanced_softmax_loss(logits, labels, self.class_counts)
