"""CE-DRW: cross-entropy with deferred re-weighting (LDAM-DRW release, `--loss_type CE
--train_rule DRW`): plain CE until the DRW epoch, then CE weighted by the class-balanced
(effective-number) weights, beta 0.9999. The switch is the recipe's re-weighting schedule
(`reweight: class_balanced`, `reweight_epoch: 160`, `baselines/reweighting.py`); the method is
CE's, only its recipe (configs/methods/ce_drw.yaml) differs."""

from __future__ import annotations

from baselines.ce import CrossEntropy
from benchmarks.train.methods import METHODS


@METHODS.register("ce_drw")
class CrossEntropyDRW(CrossEntropy):
    name = "ce_drw"
