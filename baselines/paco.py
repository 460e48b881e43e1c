"""PaCo: Parametric Contrastive Learning (Cui et al., ICCV 2021), CIFAR-LT recipe of docs/methods/paco.md.

Read from the release (dvlab-research/Parametric-Contrastive-Learning, `PaCo/LT/paco_cifar.py`,
`moco/builder.py`, `losses.py`, `sh/CIFAR100_train_imb0.01.sh`) and matched here:

- Query encoder = ResNet-32 + MLP head Linear(64, 64) - BN - ReLU - Linear(64, 32) (`--mlp`,
  `--feat_dim 64`, `--moco-dim 32`); q = normalize(head(h)). A plain linear classifier reads the
  pooled feature h (un-normalised: `--normalize False`); evaluation uses its raw logits.
- Initialisation as released: the classifier is an `nn.Linear` built outside the ResNet, so it
  keeps PyTorch's default init (not Kaiming-normal: `linear_init: default` in the recipe); in
  the head, the first Linear keeps the default init and the last one (the ResNet's replaced
  `fc`) is Kaiming-normal.
- Momentum key encoder: a copy of backbone + head whose parameters start equal to the query's
  and get no gradient; param_k = m * param_k + (1 - m) * param_q with m = 0.999 over
  *parameters only* (BatchNorm running statistics of the key encoder come from its own forward
  passes). Order inside a step, as released: query forward -> momentum update -> key forward
  (no grad) -> loss against the queue as it stood before this step -> enqueue this step's keys.
  So the update happens at the start of each step (step 1's update is a no-op, the encoders are
  equal), not in `after_step`. The release also keeps a momentum copy of the classifier
  (`linear_k`) that nothing reads; it is left out.
- Queue: K = 1024 keys of dim 32 with their labels, a FIFO written at a pointer. Initialised as
  released: `randn(K, D)` normalised along dim 0 (over the K keys, per coordinate, as the release
  writes it) and labels drawn uniformly from [0, C) -- so until the queue has been filled once, its
  random keys act as (weak) positives and negatives of random classes, exactly as in the release.
  The release asserts K % B == 0; here the write indices wrap modulo K, which is identical when B
  divides K (128 divides 1024) and keeps FIFO order otherwise. Queue, labels, pointer and the key
  encoder are buffers / submodules, so they are in `state_dict()` and in every checkpoint.
- Loss (`paco_loss`): one softmax over the C class centres (classifier logit + log pi_c, / supt)
  followed by the sample logits q_i . f_j / tau for f_j in [queries; keys; queue] minus q_i itself.
  No separate CE term.

Named deviation -- shuffled BatchNorm (`shuffle_bn_groups`):
The release only runs under DistributedDataParallel, and its key encoder uses MoCo's "shuffle
BN" (the key batch is permuted across processes before the key forward so that a process's key
BatchNorm statistics come from other images than its queries). ltbench runs one process on one
device, where that is impossible as such. But the released CIFAR jobs request a single GPU
(`#SBATCH --gres=gpu:1`, world size 1): there the shuffle is a permutation inside one BatchNorm
batch, which leaves the statistics unchanged, so the released CIFAR run *is* plain BatchNorm
over the whole key batch. Hence the default `shuffle_bn_groups: 1` (plain BN) reproduces the
released CIFAR computation. `shuffle_bn_groups: G > 1` emulates G-process DDP BatchNorm in one
process: the query batch is forwarded in G contiguous sub-batches and the key batch is randomly
permuted, forwarded in G sub-batches, and un-permuted (each BatchNorm, the heads' included, sees
B / G samples; running statistics are updated once per sub-batch). It emulates only the
statistics, not DDP's per-process loss (the loss still contrasts all B queries with all keys).

Several processes (torchrun, W ranks): `shuffle_bn_groups` G counts the BatchNorm groups of the
*global* batch (the release's number of GPUs); W must divide it and each rank emulates G / W groups
in its share. The key batch is shuffled across ranks as the release does (gather every rank's key
images, one permutation broadcast from rank 0, each rank forwards its slice, keys gathered back and
unshuffled), each rank's loss is its queries' mean against its own keys and the shared queue, and
the queue receives the keys of all ranks in rank order. So W = G = 4 is the released ImageNet-LT
computation; one process with G = 4 emulates its BatchNorm statistics.

Large datasets (ImageNet-LT, iNaturalist 2018; `paco_lt.py` + `moco/builder.py`): torchvision's
ResNet-50 with its `fc` replaced by the MLP head Linear(2048, 2048) - BN - ReLU - fc(2048, 128) and
an nn.Linear(2048, C) classifier; torchvision leaves `fc` (the head's last layer) at nn.Linear's
default init, so the Kaiming-normal re-init is only for ResNet-32, whose release initialises it.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from benchmarks import LTBenchError
from benchmarks.checks import check_ranges
from benchmarks.train.methods import METHODS, Method
from benchmarks.train.models import build_backbone, build_classifier, projection_head
from benchmarks.train.precision import float32


@float32
def paco_loss(
    q: torch.Tensor,
    k: torch.Tensor,
    queue: torch.Tensor,
    labels: torch.Tensor,
    queue_labels: torch.Tensor,
    class_logits: torch.Tensor,
    class_counts: torch.Tensor,
    alpha: float,
    beta: float,
    gamma: float,
    temperature: float,
    *,
    supt: float = 1.0,
) -> torch.Tensor:
    """The PaCo loss, in float32.

    Args:
        q: (B, D) normalised queries (with gradient).
        k: (B, D) normalised keys of the same images (no gradient needed).
        queue: (K, D) queued keys; queue_labels: (K,) their labels.
        labels: (B,) labels of the batch.
        class_logits: (B, C) classifier outputs for the queries.
        class_counts: (C,) training images per class (pi_c = n_c / sum n).
        alpha, beta, gamma, temperature: as in docs/methods/paco.md; supt divides the centre logits (1).

    Candidates of query i: the C centre logits (class_logits_ic + log(pi_c + 1e-9)) / supt,
    then q_i . f_j / tau for every f_j in [q; k; queue] except q_i itself (its own key k_i stays,
    as a positive). Positive weights: beta on the own-class centre, alpha on every same-label
    sample. Denominator weights: 1 on centres, gamma on samples.
        L_i = -sum_p w_p (l_ip - log sum_j d_j exp(l_ij)) / sum_p w_p;  loss = mean_i L_i.
    The 1e-9 inside the log prior is the release's; its 1e-12 inside the log of the denominator
    and its max-shift are replaced by a log-sum-exp (same value, no overflow).
    """
    q = q.float()
    features = torch.cat([q, k.float(), queue.float()], dim=0)             # (2B + K, D)
    sample_labels = torch.cat([labels, labels, queue_labels]).long()       # (2B + K,)
    batch = q.shape[0]
    num_classes = class_logits.shape[1]
    device = q.device

    counts = class_counts.float().to(device)
    log_prior = torch.log(counts / counts.sum() + 1e-9)
    centre_logits = (class_logits.float() + log_prior) / supt              # (B, C)
    sample_logits = q @ features.t() / temperature                         # (B, 2B + K)
    logits = torch.cat([centre_logits, sample_logits], dim=1)

    not_self = torch.ones_like(sample_logits, dtype=torch.bool)
    not_self[:, :batch] = ~torch.eye(batch, dtype=torch.bool, device=device)
    same_label = (labels.long()[:, None] == sample_labels[None, :]) & not_self
    one_hot = F.one_hot(labels.long(), num_classes).float()
    positive_weight = torch.cat([beta * one_hot, alpha * same_label.float()], dim=1)
    denominator_weight = torch.cat(
        [torch.ones_like(centre_logits), gamma * not_self.float()], dim=1
    )

    weighted = (logits + torch.log(denominator_weight)).masked_fill(
        denominator_weight <= 0, float("-inf")
    )
    log_prob = logits - torch.logsumexp(weighted, dim=1, keepdim=True)
    per_query = -(positive_weight * log_prob).sum(1) / positive_weight.sum(1)
    return per_query.mean()


@METHODS.register("paco")
class PaCo(Method):
    """MoCo-style PaCo: query encoder + linear classifier, momentum key encoder, labelled queue."""
    option_keys = ("alpha", "beta", "gamma", "temperature", "supt", "moco_m", "queue_size", "proj_hidden_dim",
                   "proj_dim", "shuffle_bn_groups")

    name = "paco"
    release_processes = {"imagenet_lt": 4, "inat2018": 4}  # DDP; each rank's loss against its own keys
    # query: crop, flip, AutoAugment CIFAR-10, Cutout 16; key: RRC (0.2, 1), flip, jitter p 0.8,
    # grayscale p 0.2, Gaussian blur p 0.5 (the release's `--aug cifar100`). The AutoAugment is
    # the release's CIFAR10Policy (autoaug.py), or torchvision's with autoaugment_policy:
    # torchvision (resolved by `Method.view_names`).
    views = ("autoaug_cutout", "contrastive_blur")

    @classmethod
    def check_config(cls, config):
        check_ranges(config, {
            "alpha": ">= 0", "beta": ">= 0", "gamma": ">= 0", "temperature": "> 0", "supt": "> 0",
            "moco_m": ">= 0 <= 1", "queue_size": ">= 1", "proj_hidden_dim": ">= 1", "proj_dim": ">= 1",
            "shuffle_bn_groups": ">= 1",
        })

    def __init__(self, config, num_classes, class_counts):
        super().__init__(config, num_classes, class_counts)
        self.alpha = float(config["alpha"])
        self.beta = float(config["beta"])
        self.gamma = float(config["gamma"])
        self.temperature = float(config["temperature"])
        self.supt = float(config["supt"])
        self.momentum = float(config["moco_m"])
        self.shuffle_bn_groups = int(config["shuffle_bn_groups"])
        from benchmarks.train import distributed

        self.world = distributed.world_size()
        if self.shuffle_bn_groups % self.world:
            raise LTBenchError(
                f"shuffle_bn_groups {self.shuffle_bn_groups} (BatchNorm groups of the global batch) must be a "
                f"multiple of the {self.world} processes; --set shuffle_bn_groups={self.world} gives one group per rank"
            )
        self.local_groups = self.shuffle_bn_groups // self.world
        queue_size = int(config["queue_size"])

        self.backbone = build_backbone(config["backbone"])
        feat = self.backbone.out_dim
        self.classifier = build_classifier(config, feat, num_classes)
        dim = int(config["proj_dim"])
        self.head = projection_head(feat, int(config["proj_hidden_dim"]), dim)
        if config["backbone"] == "resnet32":
            # The head's last Linear is the ResNet's `fc`, which the CIFAR release Kaiming-initialises.
            nn.init.kaiming_normal_(self.head[3].weight)

        # Momentum key encoder: starts as an exact copy, never receives gradients.
        self.key_backbone = copy.deepcopy(self.backbone)
        self.key_head = copy.deepcopy(self.head)
        for param in self.key_parameters():
            param.requires_grad_(False)

        # Queue as released: randn keys normalised along dim 0, uniformly random labels.
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, dim), dim=0))
        self.register_buffer("queue_labels", torch.randint(0, num_classes, (queue_size,)))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))

    # Key encoder ------------------------------------------------------------------------------
    def query_parameters(self) -> list[nn.Parameter]:
        return list(self.backbone.parameters()) + list(self.head.parameters())

    def key_parameters(self) -> list[nn.Parameter]:
        return list(self.key_backbone.parameters()) + list(self.key_head.parameters())

    @torch.no_grad()
    def momentum_update(self) -> None:
        """param_k = m * param_k + (1 - m) * param_q over the backbone and head parameters."""
        m = self.momentum
        keys = self.key_parameters()
        # The release's param_k * m + param_q * (1 - m), as three separately rounded ops, over all
        # parameters per call (a few multi-tensor kernels instead of three launches per tensor).
        blended = torch._foreach_mul(keys, m)
        torch._foreach_add_(blended, torch._foreach_mul([p.detach() for p in self.query_parameters()], 1.0 - m))
        torch._foreach_copy_(keys, blended)

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor, labels: torch.Tensor) -> None:
        """FIFO write of this step's keys and labels at the pointer, wrapping modulo K.

        If B > K only the newest K keys can stay; the pointer still advances by B (mod K), so
        the queue state is the same as writing the B keys one after another.
        """
        size = self.queue.shape[0]
        batch = keys.shape[0]
        kept = min(batch, size)
        offset = torch.arange(batch - kept, batch, device=keys.device)
        index = (self.queue_ptr + offset) % size
        self.queue.index_copy_(0, index, keys[batch - kept:].detach().to(self.queue.dtype))
        self.queue_labels.index_copy_(0, index, labels[batch - kept:].to(self.queue_labels.dtype))
        self.queue_ptr.add_(batch).remainder_(size)

    @torch.no_grad()
    def _keys(self, images: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            return self._keys_across_ranks(images)
        groups = self.shuffle_bn_groups
        if groups == 1:
            return F.normalize(self.key_head(self.key_backbone(images)).float(), dim=1)
        perm = torch.randperm(images.shape[0], device=images.device)
        chunks = [self.key_head(self.key_backbone(c)).float() for c in images[perm].chunk(groups)]
        return F.normalize(torch.cat(chunks), dim=1)[torch.argsort(perm)]

    @torch.no_grad()
    def _keys_across_ranks(self, images: torch.Tensor) -> torch.Tensor:
        """The release's `_batch_shuffle_ddp` / `_batch_unshuffle_ddp` around the key forward."""
        from benchmarks.train import distributed

        local = images.shape[0]
        everything = self.gather(images)
        perm = torch.randperm(everything.shape[0], device=images.device)
        self.broadcast_(perm)  # one permutation, rank 0's
        mine = everything[perm.view(self.world, local)[distributed.rank()]]
        keys = torch.cat([self.key_head(self.key_backbone(c)).float() for c in mine.chunk(self.local_groups)])
        keys = self.gather(F.normalize(keys, dim=1))[torch.argsort(perm)]
        return keys.view(self.world, local, -1)[distributed.rank()]

    def _query(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(h, q): pooled features and normalised projections of the query view."""
        if self.local_groups == 1:
            h = self.backbone(images)
            return h, F.normalize(self.head(h).float(), dim=1)
        # Emulated multi-process BN: each sub-batch is normalised on its own statistics.
        hs = [self.backbone(chunk) for chunk in images.chunk(self.local_groups)]
        zs = [self.head(h) for h in hs]
        return torch.cat(hs), F.normalize(torch.cat(zs).float(), dim=1)

    # Method interface -------------------------------------------------------------------------
    def training_step(self, views, labels, epoch, step):
        im_q, im_k = views[0], views[1]
        h, q = self._query(im_q)
        class_logits = self.classifier(h).float()
        self.momentum_update()                       # release order: before the key forward
        k = self._keys(im_k)
        loss = paco_loss(
            q, k, self.queue.clone(), labels, self.queue_labels.clone(), class_logits,
            self.class_counts, self.alpha, self.beta, self.gamma, self.temperature,
            supt=self.supt,
        )
        self.enqueue(self.gather(k), self.gather(labels))  # every rank's keys (torchrun), as released
        return {"loss": loss, "paco": loss.detach()}

    def eval_logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.backbone(images))
