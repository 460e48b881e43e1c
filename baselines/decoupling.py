"""Decoupling (Kang et al., ICLR 2020; release facebookresearch/classifier-balancing): the
classifier stage, on the backbone of a finished `ce` run of the same cell and seed.

- `crt` (classifier re-training): the backbone is the stage-1 one, frozen; the classifier is a
  new, re-initialised linear layer (the release's `DotProductClassifier` with
  `stage1_weights: false`, nn.Linear's init), trained with CE on class-balanced batches.
- `lws` (learnable weight scaling): the stage-1 backbone and linear classifier, both frozen, and
  one learnable scale per class, initialised to 1: logits = (W h + b) * s (the release's
  `TauNormClassifier.py`), trained with CE on class-balanced batches.
- `tau_norm`: post-hoc, trains nothing: logits = h W_tau^T with W_tau = `tau_normalize(W, tau)`
  and no bias, as the release's `tau_norm.py` computes them.

What the release freezes (`run_networks.py`, `fix: true`): the feature model's parameters
(requires_grad False). Its modules stay in train mode, so the backbone's BatchNorm running
statistics keep following the stage-2 batches; that is reproduced (`freeze_backbone_bn: false`),
and `freeze_backbone_bn: true` (a named deviation) keeps the stage-1 statistics instead.

The stage-1 weights are the `ce` run's final checkpoint (its last epoch). The release loads the
stage-1 `final_model_checkpoint.pth`, whose `state_dict_best` is the epoch that was best on its
validation split; the CIFAR-LT protocol has no validation split, and taking the test-best epoch
would select on the test set, so the last epoch is used (docs/protocol.md, "Two-stage runs").
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from benchmarks import LTBenchError
from benchmarks.checks import check_ranges
from benchmarks.train.methods import METHODS, Method, check_stage1_checkpoint, load_stage1_module
from benchmarks.train.models import LinearClassifier, build_backbone, build_classifier
from benchmarks.train.precision import float32

# tau_norm.py sweeps p over np.linspace(0, 2, 21) and prints the accuracies of each.
TAU_SWEEP = tuple(float(t) for t in np.linspace(0, 2, 21))
TAU_SELECTIONS = ("fixed", "test")


def tau_normalize(weight: torch.Tensor, tau: float) -> torch.Tensor:
    """weight (C, D) with row c divided by ||w_c||_2 ** tau (tau 0: unchanged; 1: unit rows)."""
    if weight.dim() != 2:
        raise ValueError(f"tau_normalize expects a (classes, features) weight, got shape {tuple(weight.shape)}")
    return weight / weight.norm(p=2, dim=1, keepdim=True).pow(tau)


class _OnCEBackbone(Method):
    """A classifier stage on the frozen backbone of the cell's finished `ce` run.

    Which of its weights (`stage1_checkpoint`, read by `benchmarks.train.training.load_stage1`):
    `best`, the stage-1 run's selected epoch (best.pt), as the release: its stage 1 saves the best
    epoch's weights (`state_dict_best`, chosen on its 'val' phase: ImageNet-LT's val split, the
    evaluation set elsewhere; classifier-balancing `run_networks.py:356-362, 705-716`) and stage 2
    loads those (`load_model`, `run_networks.py:665-689`; `utils.py:49-63` for the classifier of
    LWS and tau-norm); BalancedMetaSoftmax's CIFAR decoupling does the same (`run_networks.py:744-750`).
    `final` (a named deviation) starts from the last epoch's checkpoint.pt.
    """

    stage1 = "ce"
    views = ("crop_flip",)

    @classmethod
    def check_config(cls, config: dict[str, Any]) -> None:
        check_stage1_checkpoint(config)

    def __init__(self, config, num_classes, class_counts):
        super().__init__(config, num_classes, class_counts)
        self.backbone = build_backbone(config["backbone"])

    def load_stage1(self, state: dict[str, torch.Tensor]) -> None:
        load_stage1_module(self.backbone, state, "backbone.", freeze=True)

    def train(self, mode: bool = True) -> "_OnCEBackbone":
        super().train(mode)
        if mode and self.config.get("freeze_backbone_bn"):
            self.backbone.eval()  # deviation: keep the stage-1 BatchNorm statistics
        return self

    def features(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():  # frozen parameters: no graph through the backbone (BN statistics still move)
            return self.backbone(images)

    def eval_logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.logits(self.backbone(images))

    def training_step(self, views, labels, epoch, step):
        return {"loss": F.cross_entropy(self.logits(self.features(views[0])).float(), labels)}


@METHODS.register("crt")
class ClassifierRetraining(_OnCEBackbone):
    """cRT: a re-initialised linear classifier on the frozen stage-1 backbone."""
    option_keys = ("freeze_backbone_bn", "stage1_checkpoint")

    name = "crt"

    def __init__(self, config, num_classes, class_counts):
        super().__init__(config, num_classes, class_counts)
        self.classifier = build_classifier(config, self.backbone.out_dim, num_classes)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        return self.classifier(h)


@METHODS.register("lws")
class LearnableWeightScaling(_OnCEBackbone):
    """LWS: the stage-1 classifier, frozen, times one learnable scale per class."""
    option_keys = ("freeze_backbone_bn", "stage1_checkpoint")

    name = "lws"

    def __init__(self, config, num_classes, class_counts):
        super().__init__(config, num_classes, class_counts)
        self.classifier = LinearClassifier(self.backbone.out_dim, num_classes, init="default")
        self.scales = nn.Parameter(torch.ones(num_classes))

    def load_stage1(self, state: dict[str, torch.Tensor]) -> None:
        super().load_stage1(state)
        load_stage1_module(self.classifier, state, "classifier.", freeze=True)

    @float32
    def logits(self, h: torch.Tensor) -> torch.Tensor:
        return self.classifier(h) * self.scales


@METHODS.register("tau_norm")
class TauNormalizedClassifier(_OnCEBackbone):
    """tau-normalised stage-1 classifier, no bias; tau fixed (`tau`) or, as a named deviation,
    chosen on the test set over the release's sweep (`tau_selection: test`)."""
    option_keys = ("tau", "tau_selection", "stage1_checkpoint")

    name = "tau_norm"
    trains = False

    @classmethod
    def check_config(cls, config: dict[str, Any]) -> None:
        super().check_config(config)
        if config["tau_selection"] not in TAU_SELECTIONS:
            raise LTBenchError(f"tau_selection must be one of {', '.join(TAU_SELECTIONS)}; got {config['tau_selection']!r}")
        check_ranges(config, {"tau": ">= 0"}, f"(run tau_norm on {config['dataset']})")

    def __init__(self, config, num_classes, class_counts):
        super().__init__(config, num_classes, class_counts)
        self.classifier = LinearClassifier(self.backbone.out_dim, num_classes, init="default")
        self.tau = float(config["tau"])

    def load_stage1(self, state: dict[str, torch.Tensor]) -> None:
        super().load_stage1(state)
        load_stage1_module(self.classifier, state, "classifier.", freeze=True)

    @float32
    def logits(self, h: torch.Tensor) -> torch.Tensor:
        return h @ tau_normalize(self.classifier.weight, self.tau).t()

    def fit_posthoc(self, evaluate) -> dict[str, Any]:
        if self.config["tau_selection"] == "fixed":
            return {"tau": self.tau, "tau_chosen_on": None}
        sweep = {}
        for tau in TAU_SWEEP:
            self.tau = tau
            sweep[f"{tau:.1f}"] = evaluate()["top1"]
        best = max(sweep, key=sweep.get)  # the first of equal ones: the smallest tau
        self.tau = float(best)
        return {"tau": self.tau, "tau_chosen_on": "test", "sweep_top1": sweep}
