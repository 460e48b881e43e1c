"""CB-Focal: the focal loss weighted by class-balanced (effective-number) weights from the first
epoch, as the LDAM-DRW release runs it (`--loss_type Focal --train_rule Reweight`, beta 0.9999,
gamma 1; Cui et al., CVPR 2019). The method is `focal`'s; only its recipe
(configs/methods/cb_focal.yaml: `reweight: class_balanced`, `reweight_epoch: 0`) differs."""

from __future__ import annotations

from baselines.focal import Focal
from benchmarks.train.methods import METHODS


@METHODS.register("cb_focal")
class ClassBalancedFocal(Focal):
    name = "cb_focal"
