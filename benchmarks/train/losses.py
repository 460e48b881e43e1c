"""Loss terms shared by several methods (one formulation each).

* `logit_adjusted_ce`: CE(logits + tau * log pi, y), the logit-adjusted loss of Menon et al.
  (ICLR 2021; google-research `logit_adjustment/utils.py`, `build_loss_fn`), which BCCL and BCL
  use as their classification term (tau 1) and `logit_adjust` trains with alone. With log n_c in
  place of log pi_c it is the Balanced Softmax loss (Ren et al., NeurIPS 2020).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from benchmarks.train.precision import float32


@float32
def logit_adjusted_ce(logits: torch.Tensor, labels: torch.Tensor, log_prior: torch.Tensor,
                      tau: float = 1.0) -> torch.Tensor:
    """Logit-adjusted cross-entropy: CE(logits + tau * log_prior, y), in float32.

    `log_prior` is the (C,) vector log(n_c / sum n). Only training uses the adjustment; the
    evaluation logits are the raw classifier output. The Menon et al. release adds 1e-12 to the
    prior inside the log: for every class with a training image (pi > 4e-6 on every dataset here)
    that moves the term by less than 3e-7, below or at one float32 rounding step of log pi, so
    it is left out (BCCL's and BCL's releases have no epsilon).
    """
    adjustment = log_prior.float() if tau == 1.0 else tau * log_prior.float()
    return F.cross_entropy(logits.float() + adjustment, labels)
