"""`--eval-checkpoint PATH`: evaluate a saved model on one cell and write a run folder for it.

Why: the releases publish checkpoints (BCCL's README links one per CIFAR cell); evaluating them
with the suite's own data, views and metrics tells whether a gap to the paper comes from
training or from evaluation, without training anything.

Accepted formats (detected from the keys; `module.` prefixes of DataParallel/DDP are stripped):
- **ltbench**: a run's `checkpoint.pt` (`method` holds the method's `state_dict`, `epochs_done`
  the epochs trained), or a bare `state_dict` of an ltbench method.
- **BCCL / BCL release**: `{"epoch", "state_dict", ...}` with `encoder.*` (the ResNet: `conv1`,
  `bn1`, `layer1.0.conv1`, ...), `head.0/1/3.*` (Linear, BatchNorm1d, Linear), `head_fc.*` (BCL's
  prototype head) and `fc.weight`: for the cosine classifier ("NormedLinear") of shape
  (in_features, classes), the layout `CosineClassifier` keeps; a linear `fc` has (classes,
  in_features) and a bias. Mapped to `backbone.*`, `head.*`, `head_prototype.*`, `classifier.*`.
- **LDAM-DRW release** (kaidic/LDAM-DRW `cifar_train.py`, `save_checkpoint` in `utils.py`):
  `{"epoch": epochs done, "arch", "state_dict", "best_acc1", "optimizer"}`, the state dict of its
  `models/resnet_cifar.py` ResNet-32 (`conv1`, `bn1`, `layer1.0.conv1`, ...; the option-A
  shortcuts hold no weights) with the classifier `linear.*`: an nn.Linear (weight (classes, 64)
  and bias) for CE / focal runs, or its NormedLinear (weight (64, classes), no scale in the module)
  for `--loss_type LDAM`, i.e. the cosine classifier here (the scale does not change the argmax).
  Mapped to `backbone.*` and `classifier.*`.
- **PaCo release** (MoCo builder): `encoder_q.*` (its `fc.0/1/3` is the MLP head), `encoder_k.*`,
  `linear.*`, `queue`, `queue_l`, `queue_ptr`; mapped to `backbone.*`, `head.*`, `key_backbone.*`,
  `key_head.*`, `classifier.*`, `queue`, `queue_labels`, `queue_ptr`; `linear_k.*` (a momentum
  copy of the classifier that nothing reads) is dropped.

Loading is strict where it matters for evaluation: every key of `backbone.*` and `classifier.*`
must be present with the model's shape, and no checkpoint key may be unknown to the method;
anything else the method carries (heads, queues, centroids, key encoder) is loaded when present
and otherwise left at its initial value (it does not enter the evaluation). Violations raise an
`LTBenchError` listing the missing, unexpected and mismatched keys.

Configuration: an ltbench checkpoint.pt records its run's config, and that is what is evaluated
(`checkpoint_configuration`): a command line naming another method, dataset or IF, or setting a
key (--set, --sweep, --epochs, --tiny, --name) to another value than the checkpoint's, is refused
(exit 2, nothing written); keys the command line leaves to the grid or recipe are taken from the
checkpoint, with a warning listing them, so the result is filed beside the run that wrote the
checkpoint, under its own variant; execution keys (eval_batch_size, pipeline, ...) come from the
command line. Release checkpoints and bare state dicts record no config: the command line's cell
and `--set` give it (`checkpoint.config_source` says which).

Output: `<results>/<dataset>/if<IF>/<method>/eval-<checkpoint name>/` (beside the seed folders;
`<method>@<variant>/eval-...` when `--set` makes the configuration a variant,
so the report, which reads `seed*` folders, never mixes an evaluated checkpoint into the
trained runs' statistics) with `config.yaml` (the resolved config of the cell, `--set` applied),
`metrics.json` (the training runs' structure; best = last = the checkpoint's last epoch, 0-based,
or 0 when the file does not say; plus a `checkpoint` record), `predictions.npz` (per-image
predictions, best = last; `benchmarks.store.predictions`), `env.json` and `status` `done`.
An existing folder of the same name is overwritten only when it holds an evaluation of the very
same file (same SHA-256, recorded as `checkpoint.sha256`): evaluation is deterministic and cheap.
A different file of the same name (release checkpoints are often all `ckpt.pth.tar`) goes to
`eval-<name>-<first 12 hex digits of its SHA-256>/`, so the first result is never lost.
Safe loading: the file is read with `torch.load(weights_only=True)`, which unpickles only tensors,
containers and plain values, plus an allow-list of the other types the release formats hold
(`SAFE_GLOBALS`: numpy arrays, dtypes and scalars, which the releases' `best_acc1` and ltbench's
RNG states are, and argparse.Namespace, which releases save as `args`). A file that needs
anything else is refused with the names it needs; `--unsafe-load` unpickles it fully
(`weights_only=False`, which can run arbitrary code), says so in the log, and records
`unsafe_load: true` in the checkpoint record.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks import LTBenchError
from benchmarks.config import with_added_keys

FORMATS = ("ltbench", "bccl/bcl-release", "paco-release", "ldam-drw-release")


def _strip_module(state: dict[str, Any]) -> dict[str, Any]:
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


def _rename(state: dict[str, Any], prefixes: list[tuple[str, str | None]]) -> tuple[dict[str, Any], list[str]]:
    """Rename keys by the first matching prefix (None: drop); keys matching none are kept as they are."""
    out, dropped = {}, []
    for key, value in state.items():
        for old, new in prefixes:
            if key.startswith(old):
                if new is None:
                    dropped.append(key)
                else:
                    out[new + key[len(old):]] = value
                break
        else:
            out[key] = value
    return out, dropped


def to_method_state(obj: Any) -> tuple[str, dict[str, torch.Tensor], int | None, list[str]]:
    """(format, state dict in ltbench's names, epochs trained or None, dropped keys) of a checkpoint."""
    if not isinstance(obj, dict):
        raise LTBenchError(f"not a checkpoint: a {type(obj).__name__}, expected a mapping")
    if isinstance(obj.get("method"), dict) and "epochs_done" in obj:  # ltbench checkpoint.pt
        return "ltbench", dict(obj["method"]), int(obj["epochs_done"]), []
    if isinstance(obj.get("state_dict"), dict):
        state = _strip_module(obj["state_dict"])
        epoch = obj.get("epoch")
        epochs_done = int(epoch) if isinstance(epoch, (int, np.integer)) else None
        if any(k.startswith("encoder_q.") for k in state):
            mapped, dropped = _rename(state, [
                ("encoder_q.fc.", "head."), ("encoder_q.", "backbone."),
                ("encoder_k.fc.", "key_head."), ("encoder_k.", "key_backbone."),
                ("linear_k.", None), ("linear.", "classifier."), ("queue_l", "queue_labels"),
            ])
            return "paco-release", mapped, epochs_done, dropped
        if any(k.startswith("encoder.") for k in state):
            mapped, dropped = _rename(state, [
                ("encoder.", "backbone."), ("head_fc.", "head_prototype."), ("head.", "head."), ("fc.", "classifier."),
            ])
            return "bccl/bcl-release", mapped, epochs_done, dropped
        if any(k.startswith("linear.") for k in state) and any(k.startswith("layer1.") for k in state):
            mapped, dropped = _rename(state, [("linear.", "classifier."), ("", "backbone.")])
            return "ldam-drw-release", mapped, epochs_done, dropped
        raise LTBenchError(
            "unknown checkpoint format: its state_dict has neither encoder.* (BCCL/BCL release), "
            "encoder_q.* (PaCo release) nor layer1.* with linear.* (LDAM-DRW release) keys; first keys: "
            f"{', '.join(list(state)[:5])}"
        )
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state = _strip_module(obj)
        if any(k.startswith("backbone.") for k in state):
            return "ltbench", state, None, []
    raise LTBenchError(
        f"unknown checkpoint format (top-level keys: {', '.join(map(str, list(obj)[:8]))}); known: ltbench's "
        "checkpoint.pt, a release dict with 'state_dict' (BCCL/BCL: encoder.*, head.*, fc.weight; PaCo: encoder_q.*; "
        "LDAM-DRW: conv1.*, layer1.*, linear.*)"
    )


def _listing(keys: list[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def load_for_evaluation(method: torch.nn.Module, state: dict[str, Any], source: str = "checkpoint") -> list[str]:
    """Load `state` into `method`; raise if evaluation would not use the checkpoint's own weights.

    Returns the method's keys the checkpoint did not hold (not needed for evaluation).
    """
    own = method.state_dict()
    required = [k for k in own if k.startswith(("backbone.", "classifier."))]
    unexpected = sorted(k for k in state if k not in own)
    missing = [k for k in required if k not in state]
    mismatched = [f"{k} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                  for k in state if k in own and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(own[k].shape)]
    if unexpected or missing or mismatched:
        parts = []
        if missing:
            parts.append(f"missing (needed to evaluate): {_listing(missing)}")
        if unexpected:
            parts.append(f"unexpected: {_listing(unexpected)}")
        if mismatched:
            parts.append(f"shape mismatch: {_listing(mismatched)}")
        hint = ""
        if any(m.startswith("classifier.weight") for m in mismatched):
            hint = (" (a cosine classifier stores (in_features, classes), a linear one (classes, in_features): "
                    "--set classifier=cosine|linear; the head sizes are --set options such as proj_dim)")
        elif mismatched or missing:
            hint = " (is the backbone right? --set backbone=...; or the head sizes: --set proj_dim=... )"
        raise LTBenchError(f"{source} does not fit method {method.name!r}: " + "; ".join(parts) + hint)
    method.load_state_dict(state, strict=False)
    return [k for k in own if k not in state]


def _checkpoint_name(path: Path) -> str:
    name = path.name
    for suffix in (".pth.tar", ".pth", ".pt", ".tar", ".ckpt"):
        if name.endswith(suffix) and len(name) > len(suffix):
            name = name[: -len(suffix)]
            break
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def evaluation_folder(cell_folder: Path, path: Path, sha256: str) -> Path:
    """Where the evaluation of checkpoint `path` goes in a cell's folder: `eval-<name>`, unless that
    holds the evaluation of another file (another SHA-256, or an older record without one), then
    `eval-<name>-<sha256[:12]>`."""
    plain = cell_folder / f"eval-{_checkpoint_name(path)}"
    if not plain.exists():
        return plain
    try:
        recorded = json.loads((plain / "metrics.json").read_text())["checkpoint"].get("sha256")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        recorded = None  # an unreadable earlier evaluation is kept too
    return plain if recorded == sha256 else plain.with_name(f"{plain.name}-{sha256[:12]}")


def _numpy_globals() -> list[Any]:
    multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    names = [(multiarray.scalar, "scalar"), (multiarray._reconstruct, "_reconstruct")]
    entries: list[Any] = [np.ndarray, np.dtype, *(fn for fn, _ in names)]
    # numpy 1.x pickled the same functions under numpy.core.multiarray; numpy 2 under numpy._core
    for prefix in ("numpy.core.multiarray", "numpy._core.multiarray"):
        entries += [(fn, f"{prefix}.{name}") for fn, name in names]
    entries += [type(np.dtype(t)) for t in ("bool", "uint8", "int8", "int16", "int32", "int64", "uint32", "uint64",
                                            "float16", "float32", "float64")]
    return entries


def safe_globals() -> list[Any]:
    """The allow-list of non-tensor types the release formats and ltbench's checkpoints pickle."""
    import argparse

    return [*_numpy_globals(), argparse.Namespace]


def _unsafe_names(path: Path) -> list[str]:
    try:
        allowed = {f"{g.__module__}.{g.__qualname__}" if not isinstance(g, tuple) else g[1] for g in safe_globals()}
        return [n for n in torch.serialization.get_unsafe_globals_in_checkpoint(path) if n not in allowed]
    except Exception:  # not a zip checkpoint (legacy format) or unreadable: the load error says more
        return []


def _load_file(path: Path, unsafe_load: bool = False) -> Any:
    """The checkpoint's content: weights_only with the allow-list, or fully unpickled if asked."""
    def failure(exc: Exception) -> str:
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"

    if unsafe_load:
        from benchmarks.store.logs import LOGGER

        LOGGER.warning(f"--unsafe-load: unpickling {path} with weights_only=False (it can run arbitrary code)")
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:
            raise LTBenchError(f"{path}: cannot load ({failure(exc)})") from None
    try:
        with torch.serialization.safe_globals(safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle_errors() as exc:
        needed = _unsafe_names(path)
        what = f"it pickles {', '.join(needed)}" if needed else f"weights-only loading failed ({failure(exc)})"
        raise LTBenchError(
            f"{path}: {what}, which is not among the types the release formats need (tensors, numpy arrays and "
            "scalars, argparse.Namespace); if you trust the file, rerun with --unsafe-load (full unpickling)") from None
    except Exception as exc:
        raise LTBenchError(f"{path}: cannot load ({failure(exc)})") from None


def pickle_errors() -> tuple[type[Exception], ...]:
    """What a weights-only load raises for a disallowed type (UnpicklingError; older torch: RuntimeError)."""
    import pickle

    return (pickle.UnpicklingError, RuntimeError)


def _explicit_keys(options) -> set[str]:
    """The config keys the command line sets itself (--set, --sweep, --epochs, --tiny's caps)."""
    keys = set(options.overrides) | set(options.sweeps or {})
    if options.epochs is not None:
        keys.add("epochs")
    if options.tiny:
        keys |= {"train_cap_per_class", "test_cap_per_class", "epochs"}
    return keys


def checkpoint_configuration(recorded: dict[str, Any], planned: dict[str, Any], options,
                             path: Path) -> tuple[dict[str, Any], str | None, list[str]]:
    """The configuration an ltbench checkpoint is evaluated under: the one its `config` records.

    Why: the command line names a cell, but a checkpoint of one method fits another's model when
    the shapes match, and a forgotten training flag would file the result in another variant's
    folder with a false deviation. So the recorded method, dataset and IF must be the command
    line's cell, and a key the command line sets itself (--set, --sweep, --epochs, --tiny, --name)
    must agree with the checkpoint: either is an LTBenchError. Every other key is taken from the
    checkpoint (the grid's or recipe's value is replaced, and the caller says so), except the
    execution keys (`EXECUTION_KEYS`: how to evaluate, not what), which the command line sets.
    Returns (resolved config without its variant entry, the variant's --name or None, the keys
    whose planned value the checkpoint's replaced).
    """
    from benchmarks.config import EXECUTION_KEYS, IDENTITY_KEYS, resolve_config
    from benchmarks.run.variants import VARIANT_KEY, is_named, variant_name

    recorded = with_added_keys(recorded)
    missing = [k for k in ("dataset", "imb_factor", "method", "seed") if k not in recorded]
    if missing:
        raise LTBenchError(f"{path}: the config it records lacks {', '.join(missing)}; not a whole ltbench checkpoint")
    for key, what, option in (("method", "by method", "--methods"), ("dataset", "on dataset", "--datasets"),
                              ("imb_factor", "at imbalance factor", "--imb-factors")):
        if recorded[key] != planned[key]:
            raise LTBenchError(f"--eval-checkpoint {path}: trained {what} {recorded[key]!r} (its config records it), "
                               f"but {option} names {planned[key]!r}; evaluate it with {option} {recorded[key]}")
    for key in sorted(_explicit_keys(options) - set(EXECUTION_KEYS)):
        if key in planned and planned[key] != recorded.get(key):
            raise LTBenchError(f"--eval-checkpoint {path}: the command line gives {key} {planned[key]!r}, but the "
                               f"checkpoint was trained with {recorded.get(key)!r} (its config records it, and that "
                               f"configuration is what is evaluated); drop that setting")
    name = variant_name(recorded) if is_named(recorded) else None
    if options.name is not None and options.name != name:
        label = variant_name(recorded) or "the paper recipe"
        raise LTBenchError(f"--eval-checkpoint {path}: --name {options.name!r} contradicts the checkpoint's variant "
                           f"({label}, as its config records); drop --name")
    layers = {k: v for k, v in recorded.items() if k not in IDENTITY_KEYS}
    layers.update({k: planned[k] for k in EXECUTION_KEYS if k in planned})
    try:
        config = resolve_config(recorded["method"], recorded["dataset"], recorded["imb_factor"], recorded["seed"],
                                overrides=layers)
    except LTBenchError as exc:
        raise LTBenchError(f"{path}: the configuration it records does not resolve today ({exc})") from None
    replaced = sorted(k for k in set(config) | set(planned)
                      if k not in (*EXECUTION_KEYS, VARIANT_KEY, "seed") and config.get(k) != planned.get(k))
    return config, name, replaced


def evaluate_checkpoint(path: Path, runs: list, options, unsafe_load: bool = False) -> int:
    """The `--eval-checkpoint` command: one cell, one evaluation, one folder."""
    from benchmarks.train import distributed
    from benchmarks.data.datasets import DATASETS, DatasetRequest
    from benchmarks.store.environment import environment_record
    from benchmarks.train.evaluation import TestEvaluator, evaluation_metrics
    from benchmarks.store.predictions import EpochPredictions, write_predictions
    from benchmarks.run.grid import DataCache
    from benchmarks.train.methods import build_method
    from benchmarks.train.precision import eval_precision_deviation
    from benchmarks.store.logs import LOGGER, run_log
    from benchmarks.store.results import DONE, atomic_write_json, atomic_write_yaml, write_status
    from benchmarks.config import Execution
    from benchmarks.train.training import epoch_summary, metrics_record, resolve_device, seed_epoch

    cells = sorted({(r.config["dataset"], r.config["imb_factor"], r.config["method"]) for r in runs})
    if len(cells) != 1:
        shown = "; ".join(f"{d} IF{i:g} {m}" for d, i, m in cells[:4])
        raise LTBenchError(f"--eval-checkpoint evaluates one cell, but the selection has {len(cells)} ({shown}"
                           f"{', ...' if len(cells) > 4 else ''}); name it with --datasets, --methods and --imb-factors")
    if len({r.variant for r in runs}) > 1:
        raise LTBenchError("--eval-checkpoint evaluates one configuration, but the selection sweeps several; "
                           "drop --sweep (or use a grid without sweeps)")
    path = Path(path)
    if not path.is_file():
        raise LTBenchError(f"--eval-checkpoint {path}: no such file")
    config = runs[0].config
    dataset, imb, method_name = cells[0]
    DATASETS.get(dataset).check(DatasetRequest(imb_factor=imb, data_root=options.data_root, download=options.download,
                                               split_dir=options.split_dir))
    device = distributed.init(options.device) if distributed.launched_by_torchrun() else resolve_device(options.device)

    raw = _load_file(path, unsafe_load)
    fmt, state, epochs_done, dropped = to_method_state(raw)
    cell_folder = runs[0].folder.parent  # beside the seeds of its (variant) folder
    replaced: list[str] | None = None
    if fmt == "ltbench" and isinstance(raw.get("config"), dict):  # the checkpoint says what it is
        import dataclasses

        from benchmarks.run.grid import place_run

        resolved, name, replaced = checkpoint_configuration(raw["config"], config, options, path)
        # under the grid label the checkpoint's run had (its variant entry records the grid's promise)
        record = raw["config"].get("variant")
        grid = (record.get("grid") or None) if isinstance(record, dict) else None
        promised = {k: v for k, v in grid.items() if resolved.get(k) == v} if grid else None
        run = place_run(resolved, dataclasses.replace(options, name=name), grid, promised)
        if replaced:
            LOGGER.warning(
                "--eval-checkpoint: evaluating the configuration the checkpoint records, not the command line's: "
                + ", ".join(f"{k} {config.get(k)!r} -> {run.config.get(k)!r}" for k in replaced)
                + f"; filed under its own variant {run.variant or '(the paper recipe)'}")
        config, cell_folder = run.config, run.folder.parent
    data = DataCache(options).get(config)
    seed_epoch(config["seed"], -1)
    method = build_method(config, data.num_classes, torch.as_tensor(data.class_counts))
    not_in_checkpoint = load_for_evaluation(method, state, f"{path} ({fmt} format)")
    from benchmarks.store.results import check_writable_dir, file_sha256

    # once the file is known to load (a refused file writes nothing), before the long evaluation
    check_writable_dir(Path(options.results_dir), "results dir")
    ex = Execution.resolve(config, device)
    method.to(device)
    if ex.channels_last:
        method.to(memory_format=torch.channels_last)
    method.eval()
    evaluator = TestEvaluator(data, device, config["eval_batch_size"], config["test_view"], config["num_workers"],
                              ex.channels_last)
    with ex.eval_autocast():  # as the Trainer evaluates (`Execution.eval_precision`)
        outputs = evaluator.outputs(method.eval_logits)
    metrics = evaluation_metrics(outputs, data.test_labels, data.class_counts)
    epoch = epochs_done - 1 if epochs_done else 0
    kept = EpochPredictions.compact(epoch, outputs.predictions, outputs.confidences, data.num_classes)
    summary = epoch_summary(metrics, epoch)
    sha256 = file_sha256(path)
    record: dict[str, Any] = {
        "path": str(path.resolve()), "sha256": sha256, "format": fmt, "epochs_done": epochs_done,
        "unsafe_load": unsafe_load, "keys_loaded": len(state), "keys_dropped": dropped,
        "method_keys_not_in_checkpoint": not_in_checkpoint,
    }
    record["config_source"] = "command line" if replaced is None else "checkpoint"
    if replaced is not None:
        written = with_added_keys(raw["config"])  # keys added since it was written
        record["config_keys_differing_from_checkpoint"] = sorted(
            k for k in set(written) | set(config) if written.get(k) != config.get(k))
        record["command_line_keys_replaced"] = replaced
    result = {**metrics_record(config, data, summary, summary), "checkpoint": record}
    result["deviations"].update(eval_precision_deviation(ex.eval_precision, ex.release_eval_precision))
    if replaced is not None and config.get("amp") != "auto":  # its config says what precision it trained in
        from benchmarks.train.precision import precision_deviation, resolve_precision

        trained_in = resolve_precision(config["amp"], ex.release_precision, device.type)  # not "auto": any device
        result["deviations"].update(precision_deviation(trained_in, ex.release_precision))
    folder = evaluation_folder(cell_folder, path, sha256)
    if distributed.is_main():
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_yaml(folder / "config.yaml", config)
        atomic_write_json(folder / "env.json", environment_record(device, {
            "pipeline": "evaluation", "channels_last": ex.channels_last, "world_size": distributed.world_size(),
            "evaluated_checkpoint": str(path.resolve()), "checkpoint_format": fmt}))
        atomic_write_json(folder / "metrics.json", result)
        write_predictions(folder, data.test_labels, {"best": kept, "last": kept})
        fmt_group = lambda v: "n/a" if v is None else f"{v:.2f}"  # noqa: E731
        with run_log(folder):  # the line also goes to the folder's train.log, as for a training run
            LOGGER.info(f"{dataset} IF{imb:g} {method_name}: {path} ({fmt}, {len(data.test_labels)} test images) -> "
                        f"top-1 {metrics['top1']:.2f} (many {fmt_group(metrics['many'])}, medium "
                        f"{fmt_group(metrics['medium'])}, few {fmt_group(metrics['few'])}); written to {folder}")
        write_status(folder, DONE)
    return 0
