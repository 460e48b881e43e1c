"""The method interface and the method registry.

A method is an `nn.Module` that owns every network it trains (backbone, classifier, heads,
momentum encoders) and every piece of state it carries between steps (queues, centroids) as
parameters or buffers, so one `state_dict()` is the whole method state for checkpoints.

The generic epoch loop (`benchmarks.train.training`) does everything else: it builds the views the
method names, runs `training_step` under autocast, steps the optimiser over the parameters that
require gradients, calls the hooks, and evaluates `eval_logits` on the test set every epoch.

A method's hyper-parameters live in `configs/methods/<name>.yaml` (`options:` for the method's
own keys with the release's values; `recipe:` for the shared keys such as lr and epochs); the
method reads them from the resolved `config` dict and names the option keys it reads in
`option_keys` (checked against its YAML).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn as nn

from benchmarks import LTBenchError
from benchmarks.registry import Registry

# Every module of the method packages is imported on first lookup: a module that defines a
# method registers it with `@METHODS.register(name)`.
METHODS: Registry[type["Method"]] = Registry("method", packages=("bccl", "baselines"))


class Method(nn.Module):
    """Base class of every method.

    Subclasses set `views` (names from `benchmarks.data.views.VIEW_NAMES`, one tensor per name reaches
    `training_step`, in that order), build their modules in `__init__`, and implement
    `training_step` and `eval_logits`.
    """

    name: ClassVar[str] = ""
    views: ClassVar[tuple[str, ...]] = ("crop_flip",)
    # How many processes the release trained with, per dataset (default 1: one process, also for
    # DataParallel over several GPUs). Under torchrun each rank's losses see only its share of the
    # batch (and its BatchNorm too, unless sync_bn), so a run with another number of processes
    # computes something else and records the deviation `processes` (`training.process_deviation`).
    release_processes: ClassVar[dict[str, int]] = {}
    # Two-stage methods: the registry name of the method whose finished run of the same cell
    # (dataset, IF, seed, at its recipe) this one starts from; the grid trains that run first
    # (`benchmarks.run.grid`), and the Trainer hands its checkpoint to `load_stage1`.
    stage1: ClassVar[str | None] = None
    # False for post-hoc methods: no optimiser step; the run is one evaluation (its recipe's
    # `epochs` is 0), after `fit_posthoc`.
    trains: ClassVar[bool] = True
    # Under torchrun the method is wrapped in DistributedDataParallel, which all-reduces each
    # gradient bucket as backward fills it. By default DDP expects every trainable parameter to
    # get a gradient in every step; a method whose `training_step` leaves some out of the loss
    # (in some steps or always) sets this, and DDP then searches the autograd graph after each
    # forward for the unused ones (a cost on every step, hence off unless needed).
    find_unused_parameters: ClassVar[bool] = False
    # Whether the method's loss takes per-class weights (`class_weights`); a run of a method that
    # does not must keep `reweight: none` (checked at plan time).
    takes_class_weights: ClassVar[bool] = False
    # The keys of the method's own `options:` (configs/methods/<name>.yaml) that its code reads: the
    # YAML's options must be exactly these (`benchmarks.config.paper_recipe`), so an option no code
    # reads (a typo, a leftover) is an error, not a silently ignored setting.
    option_keys: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def check_config(cls, config: dict[str, Any]) -> None:
        """Value checks of the method's own options (`options:` of its YAML), raising LTBenchError.

        Called at plan time for every resolved config (`benchmarks.config.validate_config`), before
        anything is written, so a bad option in a grid's `method_overrides` stops the grid at once
        rather than in the middle of it. Ranges are easiest said with `config.check_ranges`, e.g.
        `check_ranges(config, {"temperature": "> 0", "queue_size": ">= 1"})`. The default checks
        nothing (a method without options).
        """

    def __init__(self, config: dict[str, Any], num_classes: int, class_counts: torch.Tensor):
        super().__init__()
        self.config = config
        self.num_classes = num_classes
        self.register_buffer("class_counts", torch.as_tensor(class_counts, dtype=torch.long).clone())

    @property
    def log_prior(self) -> torch.Tensor:
        """log pi_c, pi_c = n_c / sum(n): the logit adjustment of LA-CE and PaCo's class centres."""
        counts = self.class_counts.float()
        return torch.log(counts / counts.sum())

    def class_weights(self, epoch: int) -> torch.Tensor | None:
        """The per-class loss weights of `epoch` (None: unweighted), switched by the recipe's
        re-weighting schedule (`reweight`, `reweight_beta`, `reweight_epoch`; deferred
        re-weighting is `reweight_epoch` > 0), on the method's device. Computed once per epoch."""
        cached = getattr(self, "_class_weights_of_epoch", None)
        if cached is None or cached[0] != epoch:
            from baselines.reweighting import epoch_class_weights

            weights = epoch_class_weights(self.config, self.class_counts, epoch)
            cached = (epoch, None if weights is None else weights.to(self.class_counts.device))
            self._class_weights_of_epoch = cached
        return cached[1]

    def classifier_weight_norms(self) -> list[float] | None:
        """The L2 norm of each class's classifier vector at the end of training (metrics.json
        `classifier_weight_norms`): the diagnostic of Decoupling (Kang et al. 2020), where the norms
        follow the class counts under instance sampling and re-balancing flattens them. None for a
        method without a `classifier` exposing `class_weights()` (num_classes x features)."""
        classifier = getattr(self, "classifier", None)
        if classifier is None or not hasattr(classifier, "class_weights"):
            return None
        with torch.no_grad():
            return [float(v) for v in classifier.class_weights().detach().float().norm(dim=1).cpu()]

    def view_names(self) -> tuple[str, ...]:
        """The views this run needs: the config's `views` when set (the methods' recipes set the
        release's 224-pixel views per large dataset there), else the method's CIFAR views (a
        method may make those depend on its options). In the CIFAR views, `autoaug_cutout`
        resolves through the config's `autoaugment_policy` (`benchmarks.data.views.autoaug_view`); a
        configured `views` list is taken as written."""
        configured = tuple(self.config.get("views") or ())
        if configured:
            if len(configured) != len(self.views):
                from benchmarks import LTBenchError

                raise LTBenchError(
                    f"{self.name}: views {list(configured)} name {len(configured)} views; the method "
                    f"takes {len(self.views)} ({', '.join(self.views)} on CIFAR)"
                )
            return configured
        from benchmarks.data.views import resolve_views

        return resolve_views(self.views, self.config)

    # Multi-process hooks (torchrun; identities in one process) ----------------------------------
    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """This step's `tensor` of every rank, concatenated in rank order along dim 0 (no gradient).

        What a release's `concat_all_gather` does before a queue update, so that every rank's
        queues hold the whole global batch and stay identical; one process returns `tensor`.
        """
        from benchmarks.train import distributed

        return distributed.all_gather(tensor)

    def broadcast_(self, tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
        """Make `tensor` rank `src`'s on every rank (in place): state computed with randomness
        that differs across ranks (k-means initialisation) is taken from one rank."""
        from benchmarks.train import distributed

        return distributed.broadcast_(tensor, src)

    def training_step(
        self, views: list[torch.Tensor], labels: torch.Tensor, epoch: int, step: int
    ) -> dict[str, torch.Tensor]:
        """Forward the batch and return named scalar losses; `"loss"` is the one minimised.

        `views[i]` is the (B, 3, H, W) normalised batch of view `view_names()[i]`; `epoch` is
        0-based; `step` counts the optimiser steps within the epoch.
        """
        raise NotImplementedError

    def eval_logits(self, images: torch.Tensor) -> torch.Tensor:
        """Logits used for evaluation (the module is in eval mode)."""
        raise NotImplementedError

    def forward(
        self, views: list[torch.Tensor], labels: torch.Tensor, epoch: int, step: int
    ) -> dict[str, torch.Tensor]:
        """The training step: what DistributedDataParallel calls under torchrun
        (`benchmarks.train.distributed.wrap_training_step`), as the PaCo release's DDP-wrapped MoCo
        model does one training step in its `forward`. Subclasses implement `training_step`."""
        return self.training_step(views, labels, epoch, step)

    # Optional hooks ---------------------------------------------------------------------------
    def on_epoch_start(self, epoch: int) -> None:
        """Called before the first step of every epoch."""

    def after_step(self, epoch: int, step: int) -> None:
        """Called after each optimiser step (momentum encoders update here)."""

    def load_stage1(self, state: dict[str, torch.Tensor]) -> None:
        """Two-stage methods: take what this method starts from out of the stage-1 method's
        `state_dict` (its run's final checkpoint). Called once on the fresh method, before the
        optimiser is built, so that what it freezes (requires_grad False) stays out of it."""
        raise NotImplementedError(f"{self.name} names stage1 {self.stage1!r} but does not load it")

    def fit_posthoc(self, evaluate) -> dict[str, Any]:
        """Post-hoc methods (`trains` False): choose whatever the method chooses on data, before
        the one evaluation. `evaluate()` returns the test-set metrics of the current
        `eval_logits`; a method that selects a hyper-parameter with it must say so (named
        deviation). Returns what to record in metrics.json `posthoc` (e.g. the chosen value and
        the split it was chosen on)."""
        return {}

    def trainable_parameters(self) -> list[nn.Parameter]:
        """What the optimiser updates: every parameter that requires a gradient."""
        return [p for p in self.parameters() if p.requires_grad]


# Which weights of its finished stage-1 run a two-stage method starts from (its option
# `stage1_checkpoint`, read by `benchmarks.train.training.load_stage1`): `best` = the selected epoch
# (best.pt, on whatever split the stage-1 run selects), `final` = the last epoch (checkpoint.pt).
STAGE1_CHECKPOINTS = ("best", "final")


def check_stage1_checkpoint(config: dict[str, Any]) -> None:
    if config["stage1_checkpoint"] not in STAGE1_CHECKPOINTS:
        raise LTBenchError(f"stage1_checkpoint must be one of {', '.join(STAGE1_CHECKPOINTS)}; "
                           f"got {config['stage1_checkpoint']!r} (run {config['method']} on {config['dataset']})")


def load_stage1_module(module: nn.Module, state: dict[str, torch.Tensor], prefix: str, freeze: bool) -> None:
    """Load the keys `prefix*` of a stage-1 `state_dict` into `module`, strictly (every key, every
    shape: a stage-2 run must start from exactly the stage-1 weights), and freeze its parameters
    (requires_grad False, so they stay out of the optimiser) when `freeze`. Buffers (BatchNorm
    running statistics) are not parameters: whether they move is the module's train/eval mode."""
    from benchmarks import LTBenchError

    own = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    try:
        module.load_state_dict(own, strict=True)
    except RuntimeError as exc:
        raise LTBenchError(f"the stage-1 checkpoint's {prefix}* do not fit: {' '.join(str(exc).split())[:400]}") from None
    if freeze:
        for parameter in module.parameters():
            parameter.requires_grad_(False)


def build_method(config: dict[str, Any], num_classes: int, class_counts: torch.Tensor) -> Method:
    cls = METHODS.get(config["method"])
    return cls(config, num_classes, class_counts)
