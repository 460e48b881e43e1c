"""BCL: Balanced Contrastive Learning (Zhu et al., CVPR 2022), CIFAR-LT recipe of docs/methods/bcl.md.

Loss L = lambda * LA-CE + mu * L_BCL (lambda = 2.0, mu = 0.6, tau = 0.1).

How the release does it (FlamieZhu/Balanced-Contrastive-Learning, `main.py`, `loss/contrastive.py`,
`models/resnext.py`; the official code covers ImageNet-LT / iNat only, CIFAR reproductions reuse it):

- The three views of a batch are concatenated into one batch of 3B and pass the backbone *and*
  the projection head together (so every BatchNorm, the head's included, sees all 3B samples);
  the classifier logits of the first B (the classification view) feed LA-CE, the projections of
  the other 2B feed the contrastive loss. `training_step` does exactly that.
- The class prototypes are the classifier's class vectors (the raw, un-normalised columns of the
  NormedLinear weight) passed through a second MLP head of the same shape as the projection head
  (its BatchNorm runs over the C class vectors in train mode), then L2-normalised. Gradients flow
  through the prototypes into that head and the classifier weight.
- The balanced contrastive loss: anchors are the 2B contrastive views only; the candidates of an
  anchor are the other 2B - 1 views plus the C prototypes (class-complement); positives are the
  same-label views and the own-class prototype; the denominator is averaged per class
  (class-averaging) with the class counts taken over the 2B views plus one prototype per class,
  minus one for the anchor's own class. See `balanced_contrastive_loss`.
- LA-CE = CE(logits + log pi, y) on the classification view; evaluation uses the raw logits.
- BatchNorm groups (`bn_groups`, G): the ImageNet-LT / iNaturalist release wraps the model in
  nn.DataParallel over 4 GPUs, which scatters the concatenated 3B batch in G contiguous chunks
  (`Tensor.chunk` sizes); each replica's BatchNorm layers (backbone and projection head) normalise
  their own chunk, the outputs are gathered in order, and the running statistics that survive are
  the first replica's (the other replicas' updates are discarded with them). `bn_groups: G` does
  exactly that in one process: the chunks pass the backbone and head one after the other, the
  later ones with the BatchNorm momentum at 0 (running statistics untouched). Gradients are those
  of the gathered loss, as with DataParallel. The prototypes are computed once per step (the
  release takes the first replica's, `centers[:cls_num]`), so the prototype head's BatchNorm sees
  all C class vectors. Under torchrun with W ranks, W must divide G and each rank emulates G / W
  replicas in its share. G = 1 (one BatchNorm batch) is the CIFAR default (no release; one GPU).

Options (configs/methods/bcl.yaml `options:`): `lambda_la`, `mu_bcl`, `temperature`,
`proj_hidden_dim`, `proj_dim`, and two view options that docs/methods/bcl.md calls optional and that are
therefore off by default: `cls_autoaug` (classification view gets AutoAugment + Cutout, the
policy chosen by the shared key `autoaugment_policy`) and
`contrastive_blur` (the contrastive views get Gaussian blur p 0.5, "in some recipes").
"""

from __future__ import annotations


import torch
import torch.nn.functional as F

from benchmarks.checks import check_ranges
from benchmarks.train.bn_groups import forward_in_groups, local_groups
from benchmarks.train.losses import logit_adjusted_ce
from benchmarks.train.methods import METHODS, Method
from benchmarks.train.models import build_backbone, build_classifier, projection_head
from benchmarks.train.precision import float32
from benchmarks.data.views import autoaug_view


@float32
def balanced_contrastive_loss(
    z: torch.Tensor, labels: torch.Tensor, prototypes: torch.Tensor, temperature: float
) -> torch.Tensor:
    """The balanced contrastive loss L_BCL (class-averaging + class-complement), in float32.

    Args:
        z: (2B, D) L2-normalised projections ordered [view 1; view 2] (row i and row B + i are
            the two views of image i).
        labels: (B,) class indices of the B images.
        prototypes: (C, D) L2-normalised class prototypes (prototype c has label c).
        temperature: tau.

    For anchor i (one of the 2B views; prototypes are never anchors), with s_ij = z_i . f_j / tau
    over the candidates f_j = the other 2B - 1 views and the C prototypes:
        n'_c = #{views of class c among the 2B} + 1 (its prototype), minus 1 if c == y_i
        D_i  = sum_{j != i} exp(s_ij) / n'_{y_j}
        L_i  = -(1 / |P_i|) sum_{p in P_i} (s_ip - log D_i),
    P_i = same-label views (j != i) plus the own-class prototype (so |P_i| >= 2 here: the other
    view of the same image and the prototype). Returns the mean of L_i over the 2B anchors.

    Computed with a log-sum-exp, which equals the release's max-shifted form exactly in exact
    arithmetic (the shift cancels) and never overflows.
    """
    z = z.float()
    prototypes = prototypes.float()
    labels = labels.long()
    num_views = z.shape[0]
    num_classes = prototypes.shape[0]
    if num_views != 2 * labels.shape[0]:
        raise ValueError(f"z has {num_views} rows; expected 2 * B = {2 * labels.shape[0]}")

    device = z.device
    view_labels = labels.repeat(2)                                             # (2B,)
    targets = torch.cat([view_labels, torch.arange(num_classes, device=device)])  # (2B + C,)
    logits = z @ torch.cat([z, prototypes], dim=0).t() / temperature         # (2B, 2B + C)

    self_mask = torch.zeros_like(logits, dtype=torch.bool)
    self_mask[:, :num_views] = torch.eye(num_views, dtype=torch.bool, device=device)
    positive = (view_labels[:, None] == targets[None, :]) & ~self_mask

    # Class-averaging weights: the count of the candidate's class over views + prototypes, one
    # less for the anchor's own class (the anchor itself is not a candidate).
    counts = F.one_hot(targets, num_classes).sum(0).float()  # bincount would sync a GPU (it reads the max)
    weight = counts[targets][None, :] - positive.float()
    # weight >= 1 for every candidate: every class has its prototype, and the anchor's class
    # has at least the anchor + its prototype before the minus one. The self column is dropped.
    log_terms = (logits - torch.log(weight.clamp_min(1.0))).masked_fill(self_mask, float("-inf"))
    log_denominator = torch.logsumexp(log_terms, dim=1)                       # (2B,)

    positive = positive.float()
    mean_positive_logit = (positive * logits).sum(1) / positive.sum(1)
    return (log_denominator - mean_positive_logit).mean()


@METHODS.register("bcl")
class BCL(Method):
    """ResNet-32 + cosine classifier + projection head + prototype head, LA-CE + BCL loss."""
    option_keys = ("lambda_la", "mu_bcl", "temperature", "proj_hidden_dim", "proj_dim", "cls_autoaug",
                   "contrastive_blur", "bn_groups")

    name = "bcl"
    # v0 classification view, v1 and v2 contrastive views (docs/methods/bcl.md: crop-flip; RRC (0.2, 1),
    # flip, jitter p 0.8, grayscale p 0.2). `view_names()` applies the two view options.
    views = ("crop_flip", "contrastive", "contrastive")

    @classmethod
    def check_config(cls, config):
        check_ranges(config, {"lambda_la": ">= 0", "mu_bcl": ">= 0", "temperature": "> 0",
                              "proj_hidden_dim": ">= 1", "proj_dim": ">= 1", "bn_groups": ">= 1"})

    def __init__(self, config, num_classes, class_counts):
        super().__init__(config, num_classes, class_counts)
        self.lambda_la = float(config["lambda_la"])
        self.mu_bcl = float(config["mu_bcl"])
        self.temperature = float(config["temperature"])
        self.backbone = build_backbone(config["backbone"])
        feat = self.backbone.out_dim
        self.classifier = build_classifier(config, feat, num_classes)
        hidden, out = int(config["proj_hidden_dim"]), int(config["proj_dim"])
        self.head = projection_head(feat, hidden, out)
        # Same shape as `head`, applied to the (C, feat) class vectors of the classifier.
        self.head_prototype = projection_head(feat, hidden, out)
        self.bn_groups = int(config["bn_groups"])
        self.local_bn_groups = local_groups(self.bn_groups, "bcl")  # known only at run time (torchrun)

    def view_names(self) -> tuple[str, ...]:
        if self.config.get("views"):
            return super().view_names()  # the large datasets' release views (configs/methods/bcl.yaml)
        cls_view = autoaug_view(self.config) if self.config["cls_autoaug"] else "crop_flip"
        con_view = "contrastive_blur" if self.config["contrastive_blur"] else "contrastive"
        return (cls_view, con_view, con_view)

    def prototypes(self) -> torch.Tensor:
        """(C, proj_dim) normalised prototypes: head_prototype(classifier class vectors)."""
        return F.normalize(self.head_prototype(self.classifier.class_weights()).float(), dim=1)

    def features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(h, z) of the concatenated 3B images, each of the `bn_groups` DataParallel chunks
        normalised by its own BatchNorm statistics (see the module docstring)."""
        def forward(chunk):
            h = self.backbone(chunk)
            return h, self.head(h)

        hs, zs = zip(*forward_in_groups(forward, images, self.local_bn_groups, self.backbone, self.head))
        return torch.cat(hs), F.normalize(torch.cat(zs).float(), dim=1)

    def training_step(self, views, labels, epoch, step):
        batch = labels.shape[0]
        # One forward of all 3B images, as the release does (BatchNorm sees all three views, or
        # each DataParallel replica its chunk of them).
        h, z = self.features(torch.cat(list(views[:3]), dim=0))
        logits = self.classifier(h[:batch]).float()
        la_ce = logit_adjusted_ce(logits, labels, self.log_prior)
        bcl = balanced_contrastive_loss(z[batch:], labels, self.prototypes(), self.temperature)
        loss = self.lambda_la * la_ce + self.mu_bcl * bcl
        return {"loss": loss, "la_ce": la_ce.detach(), "bcl": bcl.detach()}

    def eval_logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.backbone(images))
