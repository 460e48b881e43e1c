"""Post-hoc logit adjustment (Menon et al., ICLR 2021; release google-research/google-research
`logit_adjustment/main.py`, `--mode=posthoc`) of the cell's finished `ce` run: trains nothing.

Test logits become f(x) - log(pi^tau + 1e-12), pi the training class frequencies (the release's
`<dataset>_base_probs.txt`), tau = 1 (its `--tau` default). The release adjusts the CE model it
trains itself (its own schedule, Nesterov momentum); here the adjusted model is the suite's `ce`
run of the same cell and seed, so the adjustment is the release's and the base model the
suite's. Nothing is chosen on data: tau is the release's fixed value.
"""

from __future__ import annotations

import torch

from benchmarks.checks import check_ranges
from benchmarks.train.methods import METHODS, Method, check_stage1_checkpoint, load_stage1_module
from benchmarks.train.models import build_backbone, build_classifier


def posthoc_adjustment(class_counts: torch.Tensor, tau: float) -> torch.Tensor:
    """The release's additive term, log(pi^tau + 1e-12), subtracted from the logits."""
    counts = torch.as_tensor(class_counts, dtype=torch.float64)
    return torch.log((counts / counts.sum()) ** tau + 1e-12).float()


@METHODS.register("la_posthoc")
class PostHocLogitAdjustment(Method):
    # stage1_checkpoint `final`: the logit-adjustment release adjusts the model it trained, at the
    # end of training (its README's figures are final-epoch); `best` (a named deviation) takes the
    # ce run's selected epoch
    option_keys = ("tau", "stage1_checkpoint")
    name = "la_posthoc"
    views = ("crop_flip",)
    stage1 = "ce"
    trains = False

    @classmethod
    def check_config(cls, config) -> None:
        check_ranges(config, {"tau": ">= 0"}, f"(run la_posthoc on {config['dataset']})")
        check_stage1_checkpoint(config)

    def __init__(self, config, num_classes, class_counts):
        super().__init__(config, num_classes, class_counts)
        self.backbone = build_backbone(config["backbone"])
        self.classifier = build_classifier(config, self.backbone.out_dim, num_classes)

    def load_stage1(self, state: dict[str, torch.Tensor]) -> None:
        load_stage1_module(self.backbone, state, "backbone.", freeze=True)
        load_stage1_module(self.classifier, state, "classifier.", freeze=True)

    def eval_logits(self, images: torch.Tensor) -> torch.Tensor:
        adjustment = posthoc_adjustment(self.class_counts, self.config["tau"]).to(images.device)
        return self.classifier(self.backbone(images)).float() - adjustment
