"""BCCL as a `Method`: the released recipe of docs/methods/bccl.md.

One step (`training_step`):
  1. both views through backbone and head in one batch of 2B (BatchNorm sees both views);
     logits of view 1 only (the cosine classifier has no batch statistics, so classifying only
     the first B features gives the released view-1 logits exactly);
  2. from epoch `warmup_epochs` on, and if this (epoch, step) is a re-clustering step, k-means on
     the queues *as they stand before this step* (`should_recluster`);
  3. losses: alpha * L_SCL + beta * L_LA, plus eta * L_cen from epoch `warmup_epochs` on;
  4. push this step's detached projections (v1 then v2) into the per-class queues.
The generic loop then does backward and the SGD step.

State carried between steps, all buffers (so `state_dict()` and the run's checkpoints carry it):
`queues.features / counts / ptr`, `centroids` (C, K, D), `centroids_valid` (bool: clustered at
least once), `centroids_epoch` (epoch of the last clustering, -1 before any). Before the first
clustering the centroids are zeros, exactly as the release initialises them, so a centroid term
evaluated then (only possible when `warmup_epochs` is not a multiple of `recluster_interval`) is 0.

Options (configs/methods/bccl.yaml `options:`; release values are the defaults):
  temperature 0.1, alpha 1.0, beta 1.0, eta 0.1, queue_size 100, centroids_per_class 5,
  kmeans_max_iter 100, kmeans_tol 1e-4, recluster_interval 10, head_hidden_dim 512, proj_dim 128
  (the release's "cifar" head; its ImageNet "mlp" head is 2048 - 2048 - feat_dim 2048, set per
  dataset in the YAML).

Several processes (torchrun): the queues receive every rank's projections (v1 of all ranks, then
v2 of all ranks: the order of one process on the same global batch), so they stay identical on
every rank; k-means draws its initial centres from torch's generator, which differs by rank, so
the centroids are broadcast from rank 0 after each clustering. The losses are each rank's mean
over its share of the batch (the release is single-GPU; `sync_bn` keeps its BatchNorm over the
whole batch).
Named deviations from the release, off by default:
  recluster_once_per_epoch: re-cluster once per re-clustering epoch (at its first step) instead
  of at every step of it; centroids are then fixed for the whole epoch.
  queue_first_arrival_once: push a class's first projections once. The release's queue update
  stores them twice when the class first appears after the very first step (most classes of
  CIFAR-100-LT, whose tail classes are absent from most batches); reproduced by default
  (`ClassQueues.push(first_arrival_twice=True)`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bccl.kmeans import batched_kmeans
from bccl.losses import centroid_loss, class_averaged_supcon, logit_adjusted_ce
from bccl.queues import ClassQueues
from benchmarks.checks import check_ranges
from benchmarks.train.methods import METHODS, Method
from benchmarks.train.models import build_backbone, build_classifier, projection_head


def should_recluster(
    epoch: int,
    warmup_epochs: int,
    interval: int,
    once_per_epoch: bool = False,
    last_clustered_epoch: int = -1,
) -> bool:
    """Whether this step recomputes the centroids.

    Release: every step of every epoch with epoch >= warmup and epoch % interval == 0 (epochs 10,
    20, ..., 190 for the recipe); centroids are held fixed in all other epochs.
    `once_per_epoch` (deviation): only the first step of such an epoch re-clusters, i.e. the first
    step at which the centroids were not yet computed in this epoch (`last_clustered_epoch`); this
    also holds after a resume in the middle of an epoch.
    """
    if epoch < warmup_epochs or epoch % interval != 0:
        return False
    return not once_per_epoch or last_clustered_epoch != epoch


@METHODS.register("bccl")
class BCCL(Method):
    option_keys = ("temperature", "head_hidden_dim", "proj_dim", "alpha", "beta", "eta", "queue_size",
                   "centroids_per_class", "kmeans_max_iter", "kmeans_tol", "recluster_interval",
                   "recluster_once_per_epoch", "queue_first_arrival_once")
    name = "bccl"
    # autoaug_cutout: the release's CIFAR10Policy, or torchvision's policy with
    # autoaugment_policy: torchvision (resolved by `Method.view_names`)
    views = ("autoaug_cutout", "simclr")

    @classmethod
    def check_config(cls, config):
        check_ranges(config, {
            "temperature": "> 0", "alpha": ">= 0", "beta": ">= 0", "eta": ">= 0",
            "head_hidden_dim": ">= 1", "proj_dim": ">= 1", "queue_size": ">= 1", "centroids_per_class": ">= 1",
            "kmeans_max_iter": ">= 1", "kmeans_tol": ">= 0", "recluster_interval": ">= 1",
        })

    def __init__(self, config, num_classes, class_counts):
        super().__init__(config, num_classes, class_counts)
        self.backbone = build_backbone(config["backbone"])
        feat_dim = self.backbone.out_dim
        self.classifier = build_classifier(config, feat_dim, num_classes)
        self.proj_dim = int(config["proj_dim"])
        self.head = projection_head(feat_dim, int(config["head_hidden_dim"]), self.proj_dim)

        self.temperature = float(config["temperature"])
        self.alpha = float(config["alpha"])
        self.beta = float(config["beta"])
        self.eta = float(config["eta"])
        self.k = int(config["centroids_per_class"])
        self.kmeans_max_iter = int(config["kmeans_max_iter"])
        self.kmeans_tol = float(config["kmeans_tol"])
        self.recluster_interval = int(config["recluster_interval"])
        self.recluster_once_per_epoch = bool(config["recluster_once_per_epoch"])
        self.queue_first_arrival_once = bool(config["queue_first_arrival_once"])
        self.warmup_epochs = int(config["warmup_epochs"])

        self.queues = ClassQueues(num_classes, int(config["queue_size"]), self.proj_dim)
        self.register_buffer("centroids", torch.zeros(num_classes, self.k, self.proj_dim))
        self.register_buffer("centroids_valid", torch.tensor(False))
        self.register_buffer("centroids_epoch", torch.tensor(-1, dtype=torch.long))

    # ------------------------------------------------------------------------------------------
    def project(self, h: torch.Tensor) -> torch.Tensor:
        """z = normalize(head(h)): the 128-d projection used by SCL, the queues and the centroids."""
        return F.normalize(self.head(h), dim=1)

    @torch.no_grad()
    def recluster(self, epoch: int) -> None:
        """Replace the centroids by k-means on the current queues (all classes in one batch)."""
        result = batched_kmeans(
            self.queues.features, self.queues.counts, self.k, self.kmeans_max_iter, self.kmeans_tol
        )
        self.centroids.copy_(result.centroids)
        self.broadcast_(self.centroids)  # torchrun: rank 0's clustering everywhere (no-op in one process)
        self.centroids_valid.fill_(True)
        self.centroids_epoch.fill_(epoch)

    def reclusters_at(self, epoch: int) -> bool:
        if not should_recluster(epoch, self.warmup_epochs, self.recluster_interval):
            return False  # decided without reading a buffer (no device sync on most steps)
        if not self.recluster_once_per_epoch:
            return True
        return should_recluster(epoch, self.warmup_epochs, self.recluster_interval, True, int(self.centroids_epoch))

    def training_step(self, views, labels, epoch, step):
        v1, v2 = views
        b = v1.shape[0]
        h = self.backbone(torch.cat([v1, v2], dim=0))
        logits = self.classifier(h[:b])
        z = self.project(h)

        la_ce = logit_adjusted_ce(logits, labels, self.log_prior)
        scl = class_averaged_supcon(z, labels, self.num_classes, self.temperature)
        loss = self.alpha * scl + self.beta * la_ce
        if epoch >= self.warmup_epochs:
            if self.reclusters_at(epoch):
                self.recluster(epoch)  # from the queues as they stand before this step's push
            cen = centroid_loss(z, labels, self.centroids)
            loss = loss + self.eta * cen
        else:
            cen = torch.zeros((), device=loss.device)  # reported as 0: the term is not in the loss

        z = z.detach()
        self.queues.push(torch.cat([self.gather(z[:b]), self.gather(z[b:])]),
                         torch.cat([self.gather(labels), self.gather(labels)]),
                         first_arrival_twice=not self.queue_first_arrival_once)
        return {"loss": loss, "la_ce": la_ce.detach(), "scl": scl.detach(), "centroid": cen.detach()}

    def eval_logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.backbone(images))
