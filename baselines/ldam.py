"""LDAM-DRW (Cao et al., NeurIPS 2019), as released (kaidic/LDAM-DRW, `losses.py` `LDAMLoss`,
`models/resnet_cifar.py` `NormedLinear`, `cifar_train.py --loss_type LDAM --train_rule DRW`).

Label-distribution-aware margins, one per class, proportional to n_c^(-1/4) and scaled so that
the largest is `max_m`:

    m_c = max_m * n_c^(-1/4) / max_c' n_c'^(-1/4)

The loss is CE on s * (z - m_y e_y): the true class's logit lowered by its margin, everything
scaled by s (30), CE weighted by the epoch's per-class weights (DRW: the class-balanced weights
from epoch 160, beta 0.9999; the recipe's re-weighting schedule, `baselines/reweighting.py`).
The release computes the margins in float64 (numpy) and stores them as float32; so does this.

The classifier is the release's `NormedLinear` (`use_norm=True` for LDAM): cosines between the
normalised feature and the normalised class columns, unscaled (`classifier: cosine`,
`cosine_scale: 1`), columns initialised uniform(-1, 1) and renormed to 1; the scale s lives in
the loss. Evaluation returns s * cos: the ranking (top-1) is the cosines', and the softmax
confidences behind ECE are those of the logits the model was trained to calibrate (the release's
`output = model(input)` feeds the loss as s * cos; softmax of the raw cosines, all within [-1, 1],
would make every confidence close to 1 / C).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from baselines.ce import CrossEntropy
from benchmarks.checks import check_ranges
from benchmarks.train.methods import METHODS
from benchmarks.train.precision import float32


def ldam_margins(class_counts: torch.Tensor | Sequence[int], max_m: float = 0.5) -> torch.Tensor:
    """The (C,) float32 margins m_c = max_m * n_c^(-1/4) / max(n^(-1/4))."""
    counts = torch.as_tensor(class_counts, dtype=torch.float64).cpu()
    m = 1.0 / torch.sqrt(torch.sqrt(counts))
    return (m * (max_m / m.max())).float()


def ldam_loss(logits: torch.Tensor, labels: torch.Tensor, class_counts: torch.Tensor | Sequence[int],
              max_m: float = 0.5, s: float = 30.0, weight: torch.Tensor | None = None) -> torch.Tensor:
    """CE(s * (logits - m_y on the true class), y), weighted by `weight` (per class) if given."""
    return margin_loss(logits, labels, ldam_margins(class_counts, max_m).to(logits.device), s, weight)


@float32
def margin_loss(logits: torch.Tensor, labels: torch.Tensor, margins: torch.Tensor, s: float,
                weight: torch.Tensor | None = None) -> torch.Tensor:
    """`ldam_loss` with the (C,) margins given (on the logits' device)."""
    logits = logits.float()
    true_class = F.one_hot(labels, logits.shape[1]).bool()
    adjusted = torch.where(true_class, logits - margins[labels][:, None], logits)
    return F.cross_entropy(s * adjusted, labels, weight=weight)


@METHODS.register("ldam_drw")
class LDAMDRW(CrossEntropy):
    """ResNet-32 + NormedLinear trained with the LDAM loss (`ldam_max_m`, `ldam_s`) + DRW."""
    option_keys = (*CrossEntropy.option_keys, "ldam_max_m", "ldam_s")

    name = "ldam_drw"

    @classmethod
    def check_config(cls, config):
        super().check_config(config)
        check_ranges(config, {"ldam_max_m": ">= 0", "ldam_s": "> 0"})

    def loss(self, logits, labels, weight):
        margins = getattr(self, "_margins", None)
        if margins is None or margins.device != logits.device:  # computed once, not per step
            margins = self._margins = ldam_margins(self.class_counts, self.config["ldam_max_m"]).to(logits.device)
        return margin_loss(logits, labels, margins, self.config["ldam_s"], weight)

    def eval_logits(self, images: torch.Tensor) -> torch.Tensor:
        """s * cos: the scaled logits of the loss (same argmax as the cosines; ECE from these)."""
        return self.config["ldam_s"] * super().eval_logits(images)
