"""One run: the generic epoch loop shared by every method.

seed -> method (networks + state) -> SGD -> for each epoch: set the lr, build the views, call
`training_step` under autocast, backward, step, hooks -> evaluate on the test set -> history,
best/last, checkpoint. The run folder's files are written by `benchmarks.store.results`.

Reproducibility and resumption: every epoch starts by seeding python, numpy and torch (CPU and
CUDA) from (seed, epoch). An epoch's randomness (shuffling, augmentation, k-means initialisation)
is therefore a function of the seed, the epoch and the state at the epoch's start, which is
exactly what the end-of-epoch checkpoint holds, so a resumed run repeats the uninterrupted one.

Several processes (torchrun): each rank trains on its share of every global batch, the method is
wrapped in DistributedDataParallel (its `forward` is the training step; gradients are averaged
during `backward`), and only rank 0 writes files; see `benchmarks.train.distributed` for the choices
(gradients, BatchNorm, queues, evaluation).
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks import LTBenchError
from benchmarks.train import distributed, precision
from benchmarks.config import Execution  # noqa: F401 (re-exported: its home until issue 23)
from benchmarks.data.datasets import LTData
from benchmarks.train.evaluation import EvalOutputs, TestEvaluator, evaluation_metrics
from benchmarks.data.loaders import FastLoader, ReferenceLoader
from benchmarks.store.logs import FILE_ONLY, LOGGER
from benchmarks.train.methods import Method, build_method
from benchmarks.store.predictions import EpochPredictions, write_predictions
from benchmarks.store.results import atomic_torch_save, atomic_write_json, file_sha256, history_epochs, write_csv
from benchmarks.train.optimizers import build_optimizer
from benchmarks.train.schedules import learning_rate


class NonFiniteLoss(RuntimeError):
    """A loss became NaN or Inf; the run stops and is marked failed with the epoch and step."""


def parse_device(name: str) -> torch.device | None:
    """The device `--device` names (None for auto), or LTBenchError: only CPU and CUDA devices
    (mps, meta, xpu, ... are torch devices the runs do not support)."""
    if name == "auto":
        return None
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda") or (device.type == "cpu" and device.index):
        raise LTBenchError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N (the runs need CPU or CUDA)")
    return device


def resolve_device(name: str) -> torch.device:
    device = parse_device(name)
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LTBenchError(f"device {name!r} requested but CUDA is not available; use --device cpu")
    return device


def seed_epoch(seed: int, epoch: int) -> None:
    """Seed every generator from (seed, epoch): the basis of exact resumption.

    epoch -1 seeds the model's initialisation, before the first epoch.
    """
    state = np.random.SeedSequence([seed, epoch + 1]).generate_state(2)
    random.seed(int(state[0]))
    np.random.seed(int(state[1]))
    torch.manual_seed(int(state[0]) << 32 | int(state[1]))


CHECKPOINT_FORMAT = 2  # 2: with RNG states
BEST_CHECKPOINT = "best.pt"  # the selected epoch's weights, beside checkpoint.pt (`Trainer.save_best`)
CHECKPOINT_KEYS = ("epochs_done", "method", "optimizer", "history", "best", "train_seconds", "images_seen", "config")
# The types a checkpoint's entries must have to be resumed from; anything else is corrupt.
CHECKPOINT_TYPES = {"epochs_done": int, "method": dict, "optimizer": dict, "history": list, "best": (dict, type(None)),
                    "train_seconds": (int, float), "images_seen": int, "config": dict}


def rng_states(device: torch.device) -> dict[str, Any]:
    """The python, numpy, torch CPU and (on a CUDA run) the run device's CUDA generator states."""
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def restore_rng_states(states: dict[str, Any], device: torch.device) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"].cpu())  # map_location may have moved it to the GPU
    if device.type == "cuda" and "cuda" in states:
        torch.cuda.set_rng_state(states["cuda"].cpu(), device)


def read_checkpoint(path: Path, map_location: Any = "cpu") -> dict[str, Any] | None:
    """A run's checkpoint, or None when there is none or it is corrupt (then it is deleted).

    Only called by the process holding the run's lock, or (without deleting, `map_location=None`
    means "just look") by the preflight check; see `Trainer.load_checkpoint` for why deleting is
    safe. Looking memory-maps the file, so checking a grid's checkpoints reads little more than
    their configs.
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location=map_location or "cpu", weights_only=False, mmap=map_location is None)
        problem = None if isinstance(state, dict) else "not a mapping"
        if problem is None:
            missing = [k for k in CHECKPOINT_KEYS if k not in state]
            problem = f"lacks {', '.join(missing)}" if missing else None
        if problem is None:
            problem = next((f"its {key!r} is a {type(state[key]).__name__}" for key, types in CHECKPOINT_TYPES.items()
                            if isinstance(state[key], bool) or not isinstance(state[key], types)), None)
    except Exception as exc:  # truncated zip, garbage bytes, unpickling errors: all mean corrupt
        problem = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    if problem is None:
        from benchmarks.config import with_added_keys

        state["config"] = with_added_keys(state["config"])  # keys added since it was written
        return state
    if map_location is not None:
        LOGGER.warning(f"    corrupt checkpoint {path} ({problem}): deleted, the run restarts from scratch")
        path.unlink(missing_ok=True)
    return None


def loader_problem(config: dict[str, Any], train_images: int, world: int = 1) -> str | None:
    """Why a run's training set and batch give no training step, or None: a batch larger than the
    training set with drop_last (tiny subsets), or a global batch that the ranks cannot split."""
    batch = config["batch_size"]
    if batch % world:
        return (f"batch_size {batch} is not divisible by the {world} processes; the global batch of the "
                "recipe is split evenly across ranks")
    batches = train_images // batch if config["drop_last"] else -(-train_images // batch)
    if batches == 0:
        return (f"{train_images} training images give no batch of {batch} (drop_last={config['drop_last']}); "
                "lower batch_size" + (" or set drop_last false" if config["drop_last"] else ""))
    return None


def dry_build(config: dict[str, Any]) -> None:
    """Build the method of `config` on two fake classes and resolve its views, or raise
    LTBenchError: the plan-time check that whatever a method's constructor refuses (an option
    combination, the number of processes) stops a grid before it starts, not in a cell. The
    global RNG states are left as they were."""
    with torch.random.fork_rng(devices=[]):
        try:
            build_method(config, 2, torch.tensor([2, 1])).view_names()
        except LTBenchError:
            raise
        except Exception as exc:
            raise LTBenchError(f"the {config['method']} method cannot be built with this config "
                               f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None


def make_loader(data: LTData, method: Method, config: dict[str, Any], ex: Execution):
    """The training batches of this process: the global `batch_size`, or its share under torchrun."""
    world = distributed.world_size()
    problem = loader_problem(config, len(data.train_labels), world)
    if problem is not None:
        raise LTBenchError(problem)
    common = dict(
        images=data.train_images, labels=data.train_labels, view_names=method.view_names(),
        mean=data.mean, std=data.std, batch_size=config["batch_size"] // world,
        drop_last=config["drop_last"], device=ex.device, shard=(distributed.rank(), world), seed=config["seed"],
        sampler=config["sampler"], samples_per_class=config["sampler_samples_per_class"],
        sampler_epoch=config["sampler_epoch"],
    )
    if ex.pipeline == "fast":
        memory_format = torch.channels_last if ex.channels_last else torch.contiguous_format
        return FastLoader(**common, memory_format=memory_format)
    return ReferenceLoader(**common, num_workers=config["num_workers"])


def epoch_summary(metrics: dict[str, Any], epoch: int) -> dict[str, Any]:
    """What metrics.json keeps of one epoch's evaluation (its `best` and `last` entries): top-1,
    groups, per-class accuracy, the calibration error (`ece`: overall and per shot group) and top-5
    (`top5`, when the evaluation gave it)."""
    summary = {"epoch": epoch, **{k: metrics[k] for k in ("top1", "many", "medium", "few", "per_class", "ece")}}
    if metrics.get("top5") is not None:
        summary["top5"] = metrics["top5"]
    return summary


def metrics_record(config: dict[str, Any], data: LTData, best: dict[str, Any], last: dict[str, Any],
                   train_seconds: float = 0.0, train_images_per_s: float | None = None) -> dict[str, Any]:
    """The content of a run folder's metrics.json, for a training run and an evaluated checkpoint alike."""
    from benchmarks.config import recipe_deviations

    return {
        "best": best,
        "last": last,
        "epochs": config["epochs"],
        "num_classes": data.num_classes,
        "class_counts": [int(c) for c in data.class_counts],
        "train_images": int(len(data.train_labels)),
        "test_images": int(len(data.test_labels)),
        "train_seconds": train_seconds,
        "train_images_per_s": train_images_per_s,
        "deviations": recipe_deviations(config),
        "dataset_info": {k: v for k, v in data.info.items() if k != "class_counts"},
    }


class Trainer:
    """Trains one run and writes its checkpoint, history and metrics into `folder`."""

    def __init__(self, config: dict[str, Any], data: LTData, folder: Path, device: torch.device,
                 tensorboard: bool = False, progress: bool = True, log_interval: int = 0,
                 stage1: Path | None = None):
        self.config = config
        self.data = data
        self.folder = Path(folder)
        self.ex = Execution.resolve(config, device)
        if data.file_based and self.ex.pipeline == "fast":
            if config["pipeline"] != "auto":
                raise LTBenchError(f"{data.name} is read from files: pipeline fast needs in-memory images; "
                                   "use --set pipeline=reference (or auto)")
            self.ex = dataclasses.replace(self.ex, pipeline="reference")  # files: decoded by DataLoader workers
        self.world = distributed.world_size()
        self.is_main = distributed.is_main()
        self.progress = progress and self.is_main
        self.log_interval = log_interval if self.is_main else 0
        self.class_counts = data.class_counts

        seed_epoch(config["seed"], -1)
        self.method = build_method(config, data.num_classes, torch.as_tensor(self.class_counts))
        self.stage1 = load_stage1(self.method, stage1)  # before the optimiser: what it freezes stays out
        self.posthoc: dict[str, Any] | None = None
        if self.world > 1 and config["sync_bn"]:
            self.method = distributed.convert_sync_batchnorm(self.method, device)
        self.method.to(device)
        distributed.broadcast_module_(self.method)  # rank 0's initial state everywhere (as DDP does)
        if self.ex.channels_last:
            self.method.to(memory_format=torch.channels_last)
        if self.ex.cudnn_benchmark:
            torch.backends.cudnn.benchmark = True
        if self.ex.compile:
            for module in self.method.children():
                module.compile()
        # the method itself in one process; under torchrun DDP around the method (built last:
        # it hooks the parameters as they are now). self.method stays the unwrapped module, so
        # checkpoints and evaluation never see the wrapper.
        self.train_step = distributed.wrap_training_step(self.method, device) if self.method.trains else None
        self.parameters = self.method.trainable_parameters()
        self.optimizer = self.loader = None  # post-hoc methods (`trains` False) have neither
        self.scaler = precision.grad_scaler(self.ex.precision, device.type)  # fp16 only; else a no-op
        if self.method.trains:
            self.optimizer = build_optimizer(self.parameters, config)  # SGD, in the release's momentum_form
            self.loader = make_loader(data, self.method, config, self.ex)
        if self.loader is not None and len(self.loader) == 0:
            raise LTBenchError(
                f"{len(data.train_labels)} training images give no batch of {config['batch_size']} "
                f"(drop_last={config['drop_last']}); lower batch_size"
            )
        self.evaluator = TestEvaluator(data, device, config["eval_batch_size"], config["test_view"],
                                       config["num_workers"], self.ex.channels_last)
        self.test_labels = np.asarray(data.test_labels)
        # Model selection (`select_on`): the best epoch by test top-1 (the CIFAR releases), or by the
        # top-1 on the dataset's validation split (BCL's ImageNet-LT release), see `record_epoch`.
        self.select_on = config["select_on"]
        self.val_evaluator = None
        if self.select_on == "val":
            if data.val_labels is None:
                raise LTBenchError(f"select_on val: {data.name} has no validation split here (its split file, "
                                   "e.g. ImageNet_LT_val.txt, next to the training list); use select_on=test")
            self.val_evaluator = TestEvaluator(data.validation_as_test(), device, config["eval_batch_size"],
                                               config["test_view"], config["num_workers"], self.ex.channels_last)
            self.val_labels = np.asarray(data.val_labels)
        self.best_on_test: dict[str, Any] | None = None  # with select_on val: the best test epoch, labelled so
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        self.last: dict[str, Any] | None = None
        # per-image predictions of the best and last epoch (predictions.npz); the best one is
        # checkpointed, since its epoch may lie before a resume
        self.best_predictions: EpochPredictions | None = None
        self.last_predictions: EpochPredictions | None = None
        self.start_epoch = 0
        self.train_seconds = 0.0
        self.images_seen = 0
        self.writer = self._tensorboard() if tensorboard else None
        # CPU threads change a run's float sums, so a resumed run takes its checkpoint's count
        # (`load_checkpoint`); this process's own count comes back after the run (`restore_threads`).
        self.threads = self._threads_before = torch.get_num_threads()
        self.checkpoint_loaded: bool | None = None  # None until load_checkpoint has run

    # -- checkpoints -----------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.folder / "checkpoint.pt"

    @property
    def best_path(self) -> Path:
        return self.folder / BEST_CHECKPOINT

    def save_best(self) -> None:
        """best.pt: the weights of the selected (best) epoch, beside the last epoch's checkpoint.pt,
        written atomically whenever an epoch becomes the best, so the headline top-1 can be
        re-evaluated (`--eval-checkpoint .../best.pt`) or used, as the releases keep their best
        checkpoint. `epochs_done` is the best epoch + 1, the ltbench format `--eval-checkpoint` reads."""
        atomic_torch_save(self.best_path, {"format": CHECKPOINT_FORMAT, "epochs_done": self.best["epoch"] + 1,
                                           "method": self.method.state_dict(), "best": self.best,
                                           "config": self.config, "stage1": self.stage1})

    def save_checkpoint(self, epochs_done: int) -> None:
        """Everything a resumed run needs to repeat the uninterrupted one, written atomically.

        Model, optimiser, method state (queues, centroids, momentum encoders: all in the method's
        `state_dict`), the fp16 GradScaler's state (its scale and clean-step count; empty when
        loss scaling is off), history, best-so-far, epoch and every RNG state. The RNG states are
        belt and braces: each epoch reseeds from (seed, epoch) anyway.
        """
        atomic_torch_save(self.checkpoint_path, {
            "format": CHECKPOINT_FORMAT,
            "epochs_done": epochs_done,
            "method": self.method.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "history": self.history,
            "best": self.best,
            "best_on_test": self.best_on_test,
            "best_predictions": self.best_predictions.as_dict() if self.best_predictions else None,
            "train_seconds": self.train_seconds,
            "images_seen": self.images_seen,
            "config": self.config,
            "rng": rng_states(self.ex.device),
            "threads": self.threads,
            "stage1": self.stage1,
        })

    def load_checkpoint(self) -> bool:
        """Resume from the folder's checkpoint if there is one; returns whether it did.

        A checkpoint that does not load (truncated, garbage, missing keys) is deleted and the run
        restarts from scratch, with a log line: it can only come from a crash or a full disk, and
        training again is always correct. A checkpoint of another configuration is an error: it
        is someone's result, and silently replacing it could lose work.
        """
        self.checkpoint_loaded = self._load_checkpoint()
        return self.checkpoint_loaded

    def _load_checkpoint(self) -> bool:
        state = read_checkpoint(self.checkpoint_path, self.ex.device)
        if state is None:
            return False
        if state["config"] != self.config:
            raise LTBenchError(f"{self.checkpoint_path} was written by another configuration; "
                               "delete the run folder or use another --results-dir")
        if self.stage1 is not None and (state.get("stage1") or {}).get("checkpoint_sha256") != \
                self.stage1["checkpoint_sha256"]:
            raise LTBenchError(f"{self.checkpoint_path} was trained from another stage-1 checkpoint than "
                               f"{self.stage1['folder']}'s (sha256 differs); delete this run folder to start again")
        try:
            self.method.load_state_dict(state["method"])
            self.optimizer.load_state_dict(state["optimizer"])
            if state.get("scaler"):  # absent in checkpoints of runs without loss scaling
                self.scaler.load_state_dict(state["scaler"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise LTBenchError(f"{self.checkpoint_path} does not fit this method's state (written by other "
                               f"code?): {str(exc).splitlines()[0]}; delete the run folder") from None
        self.history = state["history"]
        self.best = state["best"]
        self.best_on_test = state.get("best_on_test")
        # absent from checkpoints written before predictions were kept: then unknown until a
        # later epoch becomes the best
        self.best_predictions = EpochPredictions.from_dict(state.get("best_predictions"))
        self.start_epoch = state["epochs_done"]
        self.train_seconds = state["train_seconds"]
        self.images_seen = state["images_seen"]
        if "rng" in state:
            restore_rng_states(state["rng"], self.ex.device)
        recorded = state.get("threads")
        if isinstance(recorded, int) and recorded >= 1 and recorded != self.threads:
            if self.is_main:
                LOGGER.info(f"    resuming with {recorded} CPU threads, as its checkpoint records (this process "
                            f"had {self.threads}): other counts sum floats in another order")
            torch.set_num_threads(recorded)
            self.threads = recorded
        return True

    def restore_threads(self) -> None:
        """Give this process back the thread count it had before a resumed run changed it."""
        if torch.get_num_threads() != self._threads_before:
            torch.set_num_threads(self._threads_before)

    def write_history(self) -> None:
        """history.csv from the history in memory (the checkpoint's, after a resume): rewritten
        whole, so a file a kill cut short between two writes is repaired before training goes on."""
        if self.is_main:
            write_csv(self.folder / "history.csv", self.history)

    def _tensorboard(self):
        if not distributed.is_main():
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise LTBenchError("--tensorboard needs the tensorboard package: pip install 'ltbench[tensorboard]'") from None
        return SummaryWriter(log_dir=str(self.folder / "tensorboard"))

    # -- the loop ----------------------------------------------------------------------------------
    def train_epoch(self, epoch: int) -> dict[str, float]:
        method, opt = self.method, self.optimizer
        method.train()
        method.on_epoch_start(epoch)
        if hasattr(self.loader, "set_epoch"):
            self.loader.set_epoch(epoch)  # the sharded sampler's permutation (torchrun)
        sums: dict[str, torch.Tensor] = {}
        first_bad = torch.full((), -1, dtype=torch.long, device=self.ex.device)
        steps = 0
        for step, (views, labels) in enumerate(self._steps(epoch)):
            if self.ex.channels_last:
                views = [v.contiguous(memory_format=torch.channels_last) for v in views]
            with self.ex.autocast():
                losses = self.train_step(views, labels, epoch, step)
            loss = losses["loss"]
            # Record the first non-finite step without synchronising the device every step.
            bad = ~torch.isfinite(loss.detach())
            first_bad = torch.where((first_bad < 0) & bad, torch.full_like(first_bad, step), first_bad)
            opt.zero_grad(set_to_none=True)
            # fp16: the scaled loss (the release's GradScaler); under torchrun DDP averages the
            # gradients across ranks during backward, so an overflow on one rank reaches every rank
            self.scaler.scale(loss).backward()
            self.scaler.step(opt)  # fp16: unscales, skips the step if a gradient overflowed
            self.scaler.update()  # fp16: halves the scale after an overflow, doubles it after 2,000 clean steps
            method.after_step(epoch, step)
            for name, value in losses.items():
                value = value.detach().float()
                sums[name] = sums[name] + value if name in sums else value
            steps += 1
            self.images_seen += len(labels) * self.world
            if self.log_interval and (step + 1) % self.log_interval == 0:
                self._log_step(epoch, step, loss)
            if self.ex.device.type == "cpu" and self.world == 1 and bool(bad):
                break  # on the CPU the check costs nothing: stop at once (ranks must agree: not under torchrun)
        if self.world > 1:  # every rank raises, or none: the earliest bad step of any rank
            first_bad = distributed.all_reduce_(torch.where(first_bad < 0, torch.full_like(first_bad, 2**62),
                                                            first_bad), "min")
            first_bad = torch.where(first_bad == 2**62, torch.full_like(first_bad, -1), first_bad)
            for name in sums:
                sums[name] = distributed.all_reduce_(sums[name].clone()) / self.world
        bad_step = int(first_bad)
        if bad_step >= 0:
            raise NonFiniteLoss(f"non-finite loss at epoch {epoch} step {bad_step}")
        return {f"loss_{k}" if k != "loss" else "loss": float(v) / max(steps, 1) for k, v in sums.items()}

    def _steps(self, epoch: int):
        """The loader, behind a step-level progress bar when bars are on (long epochs otherwise
        say nothing for an hour); also starts the `--log-interval` clock."""
        self._interval_start = (time.perf_counter(), 0)
        if not self.progress:
            return self.loader
        from tqdm import tqdm

        return tqdm(self.loader, total=len(self.loader), leave=False, disable=None, desc=f"epoch {epoch}", unit="step")

    def _log_step(self, epoch: int, step: int, loss: torch.Tensor) -> None:
        """A `--log-interval` line: the step, this step's loss, images/s since the last line."""
        start, first = self._interval_start
        now = time.perf_counter()
        images = (step + 1 - first) * self.config["batch_size"]
        LOGGER.info(f"    epoch {epoch} ({epoch + 1} of {self.config['epochs']}) step {step + 1}/{len(self.loader)}: loss {float(loss.detach()):.4f}, "
                    f"{images / max(now - start, 1e-9):.0f} images/s")
        self._interval_start = (now, step + 1)

    def evaluate(self) -> tuple[dict[str, Any], EvalOutputs]:
        """This epoch's test metrics (accuracy, groups, ECE) and the per-image outputs behind them."""
        self.method.eval()
        distributed.broadcast_batchnorm_buffers_(self.method)  # rank 0's running statistics (torchrun)
        # float32, or the release's evaluation autocast when training in its precision (precision.py)
        with self.ex.eval_autocast():
            outputs = self.evaluator.outputs(self.method.eval_logits)
        return evaluation_metrics(outputs, self.test_labels, self.class_counts), outputs

    def validation_top1(self) -> float | None:
        """This epoch's top-1 on the validation split (select_on val), else None."""
        if self.val_evaluator is None:
            return None
        with self.ex.eval_autocast():
            outputs = self.val_evaluator.outputs(self.method.eval_logits)
        return evaluation_metrics(outputs, self.val_labels, self.class_counts)["top1"]

    def record_epoch(self, metrics: dict[str, Any], outputs: EvalOutputs, epoch: int, last_only: bool = False,
                     val_top1: float | None = None) -> None:
        """The one place where the best and last epochs are chosen, with their per-image predictions:
        whatever rule selects the best epoch, its predictions travel with it.

        select_on test: best = the epoch of the highest test top-1 (the first on ties), as the CIFAR
        releases select. select_on val: best = the epoch of the highest validation top-1, with that
        epoch's *test* metrics (the release tests the selected checkpoint once), and `best_on_test`
        keeps the highest test top-1 besides, labelled as such: it is biased upward."""
        summary = epoch_summary(metrics, epoch)
        kept = EpochPredictions.compact(epoch, outputs.predictions, outputs.confidences, self.data.num_classes)
        if not last_only:
            if self.select_on == "val":
                if self.best is None or val_top1 > self.best["val_top1"]:
                    self.best, self.best_predictions = {**summary, "val_top1": val_top1}, kept
                if self.best_on_test is None or metrics["top1"] > self.best_on_test["top1"]:
                    self.best_on_test = summary
            elif self.best is None or metrics["top1"] > self.best["top1"]:
                self.best, self.best_predictions = summary, kept
        self.last, self.last_predictions = summary, kept

    def run_posthoc(self) -> dict[str, Any]:
        """A method that trains nothing: its own choices (`fit_posthoc`), then one evaluation."""
        start = time.perf_counter()
        self.posthoc = self.method.fit_posthoc(lambda: self.evaluate()[0])
        eval_start = time.perf_counter()
        metrics, outputs = self.evaluate()
        epoch, = history_epochs(self.config["epochs"])  # the one row of a run without training epochs
        self.record_epoch(metrics, outputs, epoch)
        self.history = [{"epoch": epoch, "top1": metrics["top1"], "many": metrics["many"], "medium": metrics["medium"],
                         "few": metrics["few"], "posthoc_seconds": time.perf_counter() - start,
                         "eval_seconds": time.perf_counter() - eval_start}]
        if self.is_main:
            write_csv(self.folder / "history.csv", self.history)
            write_predictions(self.folder, self.test_labels, {"best": self.best_predictions, "last": self.last_predictions})
        return self.final_metrics()

    def run(self) -> dict[str, Any]:
        if not self.method.trains:
            return self.run_posthoc()
        epochs = self.config["epochs"]
        bar = range(self.start_epoch, epochs)
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(bar, initial=self.start_epoch, total=epochs, leave=False, disable=None,
                       desc=f"{self.config['dataset']} if{self.config['imb_factor']} {self.config['method']} s{self.config['seed']}")
        for epoch in bar:
            seed_epoch(self.config["seed"], epoch)
            lr = learning_rate(epoch, self.config)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            if self.ex.device.type == "cuda":
                torch.cuda.synchronize(self.ex.device)
            start, images_before = time.perf_counter(), self.images_seen
            losses = self.train_epoch(epoch)
            if self.ex.device.type == "cuda":
                torch.cuda.synchronize(self.ex.device)
            seconds = time.perf_counter() - start
            self.train_seconds += seconds
            eval_start = time.perf_counter()
            metrics, outputs = self.evaluate()
            val_top1 = self.validation_top1()
            eval_seconds = time.perf_counter() - eval_start
            row = {"epoch": epoch, "lr": lr, **losses, "top1": metrics["top1"], "many": metrics["many"],
                   "medium": metrics["medium"], "few": metrics["few"], "train_seconds": seconds,
                   # the images this epoch's steps saw (a last short batch, a batch larger than the data)
                   "images_per_s": (self.images_seen - images_before) / seconds if seconds else math.nan,
                   "eval_seconds": eval_seconds}
            if val_top1 is not None:
                row["val_top1"] = val_top1
            self.history.append(row)
            self.record_epoch(metrics, outputs, epoch, val_top1=val_top1)
            if self.is_main and self.best["epoch"] == epoch:
                self.save_best()  # before the checkpoint: a kill between the two repeats this epoch
            if self.writer is not None and self.is_main:
                for key, value in row.items():
                    if key != "epoch" and isinstance(value, (int, float)) and value is not None:
                        self.writer.add_scalar(key, value, epoch)
            if self.is_main:
                self._log_epoch(row)
            if self.progress and hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{losses['loss']:.3f}", top1=f"{metrics['top1']:.1f}")
            if self.is_main:  # the other ranks hold the same state (gradients and buffers are shared)
                # history first: a kill between the two leaves a checkpoint one epoch behind, which
                # resumes, repeats that epoch and rewrites the history (never a short history
                # next to a complete checkpoint)
                write_csv(self.folder / "history.csv", self.history)
                self.save_checkpoint(epoch + 1)
        if self.start_epoch >= epochs:  # nothing left to train: the last row is the checkpoint's
            self.record_epoch(*self.evaluate(), epochs - 1, last_only=True)
        if self.writer is not None:
            self.writer.close()
        if self.is_main:
            write_predictions(self.folder, self.test_labels, {"best": self.best_predictions, "last": self.last_predictions})
        return self.final_metrics()

    def _log_epoch(self, row: dict[str, Any]) -> None:
        """One line per epoch into train.log; on the console too when no progress bar shows it."""
        def fmt(value):
            return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2f}"

        losses = ", ".join(f"{k} {v:.4f}" for k, v in row.items() if k.startswith("loss"))
        LOGGER.info(f"    epoch {row['epoch']} ({row['epoch'] + 1} of {self.config['epochs']}): lr {row['lr']:.5g}, {losses}; top-1 "
                    f"{fmt(row['top1'])} (many {fmt(row['many'])}, medium {fmt(row['medium'])}, few {fmt(row['few'])}); "
                    f"{row['train_seconds']:.1f} s, {row['images_per_s']:.0f} images/s",
                    extra=FILE_ONLY if self.progress else None)

    def cost_record(self) -> dict[str, Any]:
        """What the run cost beside `train_seconds`: `eval_seconds` (every evaluation of the test
        and validation splits, summed over the history, so a resumed run counts the epochs before
        the resume too; None when a row of an older run lacks it), `peak_memory_mb` (this process's
        peak: resident set size on a CPU, the allocator's max allocated on CUDA; a resumed run
        reports the peak of its last process) and the `device` it trained on."""
        evals = [row.get("eval_seconds") for row in self.history]
        known = [float(v) for v in evals if isinstance(v, (int, float)) and not math.isnan(float(v))]
        return {
            "eval_seconds": sum(known) if evals and len(known) == len(evals) else None,
            "peak_memory_mb": peak_memory_mb(self.ex.device),
            "device": str(self.ex.device),
        }

    def final_metrics(self) -> dict[str, Any]:
        images_per_s = self.images_seen / self.train_seconds if self.train_seconds else None
        record = metrics_record(self.config, self.data, self.best, self.last, self.train_seconds, images_per_s)
        record["deviations"].update(process_deviation(self.method, self.world))
        record["deviations"].update(precision.precision_deviation(self.ex.precision, self.ex.release_precision))
        record["deviations"].update(precision.eval_precision_deviation(self.ex.eval_precision,
                                                                       self.ex.release_eval_precision))
        record["selection"] = {"split": self.select_on}
        if self.select_on == "val":
            record["selection"]["val_top1"] = self.best["val_top1"]
            record["best_on_test"] = self.best_on_test
        record["precision"] = self.ex.record()
        record.update(self.cost_record())
        record["classifier_weight_norms"] = self.method.classifier_weight_norms()
        if self.stage1 is not None:
            record["stage1"] = self.stage1
        if self.posthoc is not None:
            record["posthoc"] = self.posthoc
        if self.is_main:  # what a stage-2 run (load_stage1) and a reader check the files against
            record["checkpoints"] = {path.name: file_sha256(path) for path in (self.checkpoint_path, self.best_path)
                                     if path.exists()}
        return record


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process in MiB: max allocated by PyTorch's CUDA allocator on a GPU,
    the resident set's high-water mark (getrusage, KiB on Linux) on a CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource
    import sys

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # macOS reports bytes


def load_stage1(method: Method, folder: Path | None) -> dict[str, Any] | None:
    """Hand a two-stage method its stage-1 run's weights: best.pt (the selected epoch) or the final
    checkpoint.pt, as its `stage1_checkpoint` says; returns what metrics.json records
    of it (`stage1`: method, folder, checkpoint, its sha256, epochs), or None for other methods.

    The stage-1 run must be finished (`benchmarks.run.grid` orders and checks that before a stage-2
    run starts; this is the last line of defence for a worker started by hand). Its checkpoint is
    only looked at, never deleted or rewritten, even when it is unreadable.
    """
    if method.stage1 is None:
        return None
    from benchmarks.store.results import done_problem

    if folder is None:
        raise LTBenchError(f"{method.name} starts from a finished {method.stage1} run, and none was given")
    folder = Path(folder)
    problem = done_problem(folder)
    if problem is not None:
        raise LTBenchError(f"{method.name}: the stage-1 run {folder} is not finished ({problem})")
    from benchmarks.store.results import read_config, read_metrics

    folder_config = read_config(folder)
    # The method's `stage1_checkpoint`: the selected epoch (Decoupling's releases hand stage 2 the
    # stage-1 epoch they selected, baselines/decoupling.py) or the final one
    path = folder / (BEST_CHECKPOINT if method.config["stage1_checkpoint"] == "best" else "checkpoint.pt")
    digest = file_sha256(path) if path.exists() else None
    if path.name == BEST_CHECKPOINT:  # weights only (no optimiser, RNG): read_checkpoint's keys do not apply
        try:
            state = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
            from benchmarks.config import with_added_keys

            state["config"] = with_added_keys(state["config"])
            state = state if isinstance(state["method"], dict) and "epochs_done" in state else None
        except Exception:  # missing, truncated, not an ltbench best.pt
            state = None
    else:
        state = read_checkpoint(path, map_location=None)  # just look: another run's file
    if state is None:
        hint = (" (a run from before best.pt was kept has none), or start from its final epoch with "
                "--set stage1_checkpoint=final (a named deviation)") if path.name == BEST_CHECKPOINT else ""
        raise LTBenchError(f"{method.name}: the stage-1 checkpoint {path} is missing or unreadable; "
                           f"delete that run folder to train it again{hint}")

    if state["config"] != folder_config:
        raise LTBenchError(f"{method.name}: {path} was written by another configuration than its folder's "
                           "config.yaml (replaced?); delete that run folder to train it again")
    recorded = (read_metrics(folder).get("checkpoints") or {}).get(path.name)  # absent: runs before it was recorded
    if recorded is not None and recorded != digest:
        raise LTBenchError(f"{method.name}: {path} is not the one its run finished with (sha256 {digest[:12]}, "
                           f"metrics.json records {str(recorded)[:12]}; replaced?); delete that run folder "
                           "to train it again")
    finished = path.name == BEST_CHECKPOINT or state["epochs_done"] == state["config"]["epochs"]  # best.pt: done_problem
    if state["config"]["method"] != method.stage1 or not finished:
        raise LTBenchError(f"{method.name}: {path} is not a finished {method.stage1} run "
                           f"({state['config']['method']}, {state['epochs_done']} of {state['config']['epochs']} epochs)")
    method.load_stage1(state["method"])
    return {"method": method.stage1, "folder": str(folder.resolve()), "checkpoint": path.name,
            "checkpoint_sha256": digest, "epochs_done": int(state["epochs_done"])}


def process_deviation(method: Method, world: int) -> dict[str, dict[str, Any]]:
    """{"processes": {"paper": P, "run": world}} when this run's number of processes differs from
    the release's P (`Method.release_processes`), else {}: the losses (and BatchNorm without
    sync_bn) are computed per rank, so another count computes something else, and the report
    counts such a run as "recipe differs"."""
    paper = method.release_processes.get(method.config["dataset"], 1)
    return {} if world == paper else {"processes": {"paper": paper, "run": world}}


def write_metrics(folder: Path, metrics: dict[str, Any]) -> None:
    atomic_write_json(Path(folder) / "metrics.json", metrics)
