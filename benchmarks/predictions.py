"""Per-image predictions of a run: `predictions.npz`, and pairing two runs image by image.

Why: two runs on the same test set can be compared on every image (a paired bootstrap interval
and McNemar's test, `benchmarks.reporting.stats`), which resolves far smaller differences than
seed means, and calibration can be drawn (reliability diagrams) from the kept confidences.

A run folder's `predictions.npz` (numpy's compressed archive; no pickles) holds
- `labels`      the test labels in test-set order (int16; int32 beyond 32,767 classes)
- `fingerprint` sha256 of those labels as little-endian int64, in order: two runs pair only when
                their fingerprints are equal (same images in the same order, as far as labels tell)
- for `best` and `last` (the epochs the trainer selected; `best` may be absent, below):
  `<which>_epoch`, `<which>_predictions` (argmax class, int16/int32) and `<which>_confidences`
  (softmax probability of that class, float16: 3 significant digits, plenty for 15 ECE bins).
A 10,000-image test set takes 40 KB per epoch kept before compression (tested: well under
100 KB). A run resumed from a checkpoint written before predictions were kept has no `best`
predictions unless its best epoch came after the resume; the report then says n/a.

Only numpy here: the report reads these files without torch.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks import LTBenchError

PREDICTIONS_FILE = "predictions.npz"
FORMAT = 1
EPOCHS_KEPT = ("best", "last")


def class_dtype(num_classes: int) -> type:
    return np.int16 if num_classes <= np.iinfo(np.int16).max + 1 else np.int32


def labels_fingerprint(labels) -> str:
    """sha256 (hex) of the labels in their order, as little-endian int64 whatever their dtype."""
    return hashlib.sha256(np.ascontiguousarray(np.asarray(labels).ravel(), dtype="<i8").tobytes()).hexdigest()


@dataclass
class EpochPredictions:
    """One evaluated epoch, compact: the predicted class and its confidence per test image."""

    epoch: int
    predictions: np.ndarray  # int16 (int32 beyond 32,767 classes)
    confidences: np.ndarray  # float16

    @classmethod
    def compact(cls, epoch: int, predictions, confidences, num_classes: int) -> "EpochPredictions":
        return cls(int(epoch), np.asarray(predictions).astype(class_dtype(num_classes)),
                   np.asarray(confidences).astype(np.float16))

    def as_dict(self) -> dict:
        """For a checkpoint (plain numpy arrays and an int)."""
        return {"epoch": self.epoch, "predictions": self.predictions, "confidences": self.confidences}

    @classmethod
    def from_dict(cls, d: dict | None) -> "EpochPredictions | None":
        if not isinstance(d, dict):
            return None
        return cls(int(d["epoch"]), np.asarray(d["predictions"]), np.asarray(d["confidences"]))


@dataclass
class RunPredictions:
    """A run's predictions.npz, read back."""

    labels: np.ndarray
    fingerprint: str
    epochs: dict[str, EpochPredictions]  # "best" and/or "last"

    def correct(self, which: str = "best") -> np.ndarray:
        """Boolean per test image: was the `which` epoch's prediction right?"""
        if which not in self.epochs:
            raise LTBenchError(f"no {which}-epoch predictions in this run (kept: {', '.join(self.epochs) or 'none'})")
        return self.epochs[which].predictions.astype(np.int64) == self.labels


def write_predictions(folder: Path, labels, epochs: dict[str, EpochPredictions | None]) -> Path:
    """Write `<folder>/predictions.npz` atomically; `epochs` maps "best"/"last" to their
    predictions (None: not kept)."""
    from benchmarks.results import atomic_write_bytes

    labels = np.asarray(labels)
    num_classes = int(labels.max()) + 1 if len(labels) else 1
    arrays = {"format": np.array(FORMAT), "labels": labels.astype(class_dtype(num_classes)),
              "fingerprint": np.array(labels_fingerprint(labels))}
    for which, kept in epochs.items():
        if which not in EPOCHS_KEPT:
            raise ValueError(f"unknown epoch {which!r}; kept epochs are {EPOCHS_KEPT}")
        if kept is None:
            continue
        if len(kept.predictions) != len(labels) or len(kept.confidences) != len(labels):
            raise ValueError(f"{which}: {len(kept.predictions)} predictions for {len(labels)} test labels")
        arrays[f"{which}_epoch"] = np.array(kept.epoch)
        arrays[f"{which}_predictions"] = kept.predictions
        arrays[f"{which}_confidences"] = kept.confidences.astype(np.float16)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    path = Path(folder) / PREDICTIONS_FILE
    atomic_write_bytes(path, buffer.getvalue())
    return path


def read_predictions(folder: Path) -> RunPredictions | None:
    """A run folder's predictions, or None when it has no predictions.npz (runs written before
    predictions were kept). A damaged file is an LTBenchError naming it."""
    path = Path(folder) / PREDICTIONS_FILE
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {k: npz[k] for k in npz.files}
        labels = data["labels"].astype(np.int64)
        fingerprint = str(data["fingerprint"])
        epochs = {}
        for which in EPOCHS_KEPT:
            if f"{which}_predictions" in data:
                epochs[which] = EpochPredictions(int(data[f"{which}_epoch"]), data[f"{which}_predictions"],
                                                 data[f"{which}_confidences"])
                if len(epochs[which].predictions) != len(labels):
                    raise ValueError(f"{which}: {len(epochs[which].predictions)} predictions, {len(labels)} labels")
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise LTBenchError(f"{path} is damaged ({type(exc).__name__}: {exc}); rerun the run to rewrite it") from None
    if labels_fingerprint(labels) != fingerprint:
        raise LTBenchError(f"{path}: its labels do not match its own fingerprint (edited or damaged)")
    return RunPredictions(labels, fingerprint, epochs)


def paired_correctness(a: RunPredictions, b: RunPredictions, which: str = "best") -> tuple[np.ndarray, np.ndarray]:
    """Per-image correctness of two runs on the same test images, in the same order.

    Refuses (LTBenchError) runs whose test labels differ in content or order: pairing image i of
    one run with image i of another is only meaningful on the same test sequence.
    """
    if a.fingerprint != b.fingerprint:
        raise LTBenchError(
            f"cannot pair these runs image by image: their test labels differ ({len(a.labels)} images, "
            f"fingerprint {a.fingerprint[:12]} vs {len(b.labels)} images, {b.fingerprint[:12]}); only runs on "
            "the same test set in the same order pair")
    return a.correct(which), b.correct(which)
