"""BCCL's three loss terms as plain functions (tensors in, scalar tensor out).

Formulas are those of docs/methods/bccl.md, restated from the released code:

* `logit_adjusted_ce`      CE(logits + log pi, y)                      (LA-CE, tau_LA = 1;
                           `benchmarks.train.losses`, shared with BCL and logit_adjust)
* `class_averaged_supcon`  SupCon over the 2B projections whose negatives are divided by the
                           batch count of their class (the "balanced" part of BCCL)
* `centroid_loss`          mean of a * (1 - 2q) over every anchor x centroid pair

Under bf16 autocast (the speed option) every term is computed in float32 with autocast disabled
(`benchmarks.train.precision.float32`): exp / log-sum-exp at temperature 0.1 lose too much in 8
mantissa bits. Under fp16, BCCL's release precision, they run inside autocast as in the release.
Nothing loops over samples: each term is a handful of (2B x 2B) or (2B x CK) tensor operations.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from benchmarks.train.losses import logit_adjusted_ce  # noqa: F401  (shared with BCL and logit_adjust)
from benchmarks.train.precision import float32


def supcon_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """The (2B, 2B) divisor w_ij = b_{y_j} - m_ij, replaced by 1 where it is < 1e-6.

    b_c counts class c among the **B labels** (one view's worth, as released, not among the 2B
    projections); m_ij = 1 when j != i has the anchor's label. The diagonal (j == i) is set like
    any other entry but never used: the caller masks it out.
    """
    labels2 = torch.cat([labels, labels])
    b = F.one_hot(labels, num_classes).sum(0).float()  # bincount would sync a GPU (it reads the max)
    same = labels2[:, None] == labels2[None, :]
    same.fill_diagonal_(False)
    w = b[labels2][None, :].expand(len(labels2), -1) - same.float()
    return torch.where(w < 1e-6, torch.ones_like(w), w)


@float32
def class_averaged_supcon(
    z: torch.Tensor, labels: torch.Tensor, num_classes: int, temperature: float
) -> torch.Tensor:
    """BCCL's class-averaged SupCon loss L_SCL (a scalar).

    z: (2B, D) L2-normalised projections ordered [view 1; view 2]; labels: the (B,) labels.
    For anchor i and every j != i: s_ij = z_i . z_j / tau; D_i = sum_{j != i} exp(s_ij) / w_ij
    with w from `supcon_weights`; L_i = -(1 / max(1, |P_i|)) sum_{p in P_i} (s_ip - log D_i),
    P_i = {j != i : y_j == y_i}. The result is the mean of L_i over all 2B anchors.

    log D_i is a log-sum-exp of s_ij - log w_ij, which is the released exp / divide / sum / log
    without its overflow risk; the values are the same.
    """
    z = z.float()
    n = z.shape[0]
    labels2 = torch.cat([labels, labels])
    if labels2.shape[0] != n:
        raise ValueError(f"z has {n} rows but labels give {labels2.shape[0]} (expected 2B = 2 * len(labels))")
    s = z @ z.t() / temperature
    self_mask = torch.eye(n, dtype=torch.bool, device=z.device)
    pos = (labels2[:, None] == labels2[None, :]) & ~self_mask
    log_w = supcon_weights(labels, num_classes).log()
    log_d = torch.logsumexp((s - log_w).masked_fill(self_mask, float("-inf")), dim=1)
    pos_f = pos.float()
    n_pos = pos_f.sum(dim=1).clamp(min=1.0)
    per_anchor = -((s - log_d[:, None]) * pos_f).sum(dim=1) / n_pos
    return per_anchor.mean()


@float32
def centroid_loss(z: torch.Tensor, labels: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """BCCL's centroid term L_cen (a scalar).

    z: (2B, D) projections [view 1; view 2]; labels: (B,); centroids: (C, K, D).
    a_{i,ck} = z_i . mu_{c,k} (no temperature, centroids not renormalised); q_{i,c} = 1 iff
    c == y_i; L_cen = mean over all 2B x (C*K) pairs of a_{i,ck} * (1 - 2 q_{i,c}): pull towards
    the own-class centroids, push from every other class's. The released form
    -log(exp(a q) / exp(a (1 - q))) is the same number.

    The centroids are detached here: they are statistics of the queues, never trained, so the
    gradient reaches the anchors z only. Zero centroids (empty clusters, classes not yet
    clustered) give a = 0 and add nothing but still count in the mean, as released.
    """
    z = z.float()
    num_classes, k, dim = centroids.shape
    mu = centroids.detach().float().reshape(num_classes * k, dim)
    a = z @ mu.t()  # (2B, C*K)
    labels2 = torch.cat([labels, labels])
    own = F.one_hot(labels2, num_classes).to(a.dtype).repeat_interleave(k, dim=1)  # q per column
    return (a * (1.0 - 2.0 * own)).mean()
