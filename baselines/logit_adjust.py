"""Logit-adjusted loss (Menon et al., ICLR 2021; google-research `logit_adjustment/`,
`main.py --mode=loss`, `utils.py` `build_loss_fn`):

    L = CE(z + tau * log pi, y)        pi_c = n_c / N, tau = 1

the term BCCL and BCL also train with (`benchmarks.train.losses.logit_adjusted_ce`, one formulation
for all three). Evaluation uses the raw logits.
"""

from __future__ import annotations

from baselines.ce import CrossEntropy
from benchmarks.train.losses import logit_adjusted_ce
from benchmarks.checks import check_ranges
from benchmarks.train.methods import METHODS


@METHODS.register("logit_adjust")
class LogitAdjust(CrossEntropy):
    """A backbone + linear classifier trained with the logit-adjusted loss (`la_tau`)."""
    option_keys = (*CrossEntropy.option_keys, "la_tau")

    name = "logit_adjust"
    takes_class_weights = False

    @classmethod
    def check_config(cls, config):
        super().check_config(config)
        check_ranges(config, {"la_tau": ">= 0"})

    def loss(self, logits, labels, weight):
        return logit_adjusted_ce(logits, labels, self.log_prior, self.config["la_tau"])
