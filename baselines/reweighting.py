"""Per-class loss weights and the schedule that switches them on: re-weighting and deferred
re-weighting (DRW), as the LDAM-DRW release (kaidic/LDAM-DRW, `cifar_train.py`) computes them.

Class-balanced weights (Cui et al., CVPR 2019, "effective number of samples"):

    w_c = (1 - beta) / (1 - beta^{n_c}),   then   w <- w / sum(w) * C

so the weights sum to C (beta = 0 gives all ones: 0^{n_c} = 0 for n_c >= 1). The release
computes them in float64 (numpy) and hands them to the loss as a float32 tensor; so does this.

The schedule (recipe keys, `configs/defaults.yaml`):
- `reweight: none`: no weights (the loss gets `weight=None`).
- `reweight: class_balanced`: from epoch `reweight_epoch` (0-based) on, the weights above with
  `reweight_beta`; before it, the same formula with beta = 0, i.e. all ones, as the release's
  DRW does (`idx = epoch // 160; betas = [0, 0.9999]`). `--train_rule Reweight` is
  `reweight_epoch: 0`; `--train_rule DRW` is `reweight_epoch: 160`.

A method asks `Method.class_weights(epoch)` for the weights of the epoch it is training, so no
method decides by itself when the weights change.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from benchmarks import LTBenchError

REWEIGHT_RULES = ("none", "class_balanced")


def class_balanced_weights(class_counts: torch.Tensor | Sequence[int], beta: float) -> torch.Tensor:
    """The (C,) float32 effective-number weights (1 - beta) / (1 - beta^n_c), normalised to sum C."""
    counts = torch.as_tensor(class_counts, dtype=torch.float64).cpu()
    if (counts < 1).any():
        raise ValueError(f"class-balanced weights need every class count >= 1, got {counts.tolist()}")
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"beta must be in [0, 1), got {beta}")
    effective_num = 1.0 - torch.pow(torch.tensor(beta, dtype=torch.float64), counts)
    weights = (1.0 - beta) / effective_num
    return (weights / weights.sum() * len(counts)).float()


def epoch_class_weights(config: dict[str, Any], class_counts: torch.Tensor, epoch: int) -> torch.Tensor | None:
    """The loss's per-class weights in `epoch` under the config's rule (None: unweighted)."""
    rule = config["reweight"]
    if rule == "none":
        return None
    if rule == "class_balanced":
        beta = config["reweight_beta"] if epoch >= config["reweight_epoch"] else 0.0
        return class_balanced_weights(class_counts, beta)
    raise LTBenchError(f"unknown reweight {rule!r}; known: {', '.join(REWEIGHT_RULES)}")
