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
    from benchmarks.store.results import atomic_write_bytes

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


def _integers(data: dict, key: str, ndim: int) -> np.ndarray:
    """An integer array of `ndim` dimensions (a bool or float array is not a class index)."""
    value = data[key]
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "iu" or value.ndim != ndim:
        raise ValueError(f"{key} must be a {ndim}-d integer array, got {_describe(value)}")
    return value


def _describe(value) -> str:
    return f"{value.ndim}-d {value.dtype}" if isinstance(value, np.ndarray) else type(value).__name__


def check_fields(data: dict, num_classes: int | None = None) -> RunPredictions:
    """Every field of a predictions.npz (the arrays by name) checked; ValueError says which is wrong.

    labels: 1-d integers in [0, num_classes) (>= 0 when the class count is unknown); fingerprint: a
    string equal to the labels' own; per kept epoch: an integer epoch >= 0, predictions of the
    labels' length in the same class range, confidences of that length, finite and in [0, 1]
    (a softmax probability); format, when present, FORMAT. A file with predictions but no confidences, or the reverse, is
    refused too."""
    if "format" in data and (not isinstance(data["format"], np.ndarray) or data["format"].dtype.kind not in "iu"
                             or data["format"].ndim != 0 or int(data["format"]) != FORMAT):
        raise ValueError(f"format must be {FORMAT}, got {data['format']!r}")
    if "labels" not in data or "fingerprint" not in data:
        raise ValueError(f"no {'labels' if 'labels' not in data else 'fingerprint'} field")
    labels = _integers(data, "labels", 1).astype(np.int64)
    top = num_classes if num_classes is not None else np.iinfo(np.int64).max

    def in_range(key: str, values: np.ndarray) -> None:
        if len(values) and (values.min() < 0 or values.max() >= top):
            raise ValueError(f"{key} holds classes outside [0, {num_classes}): {values.min()}..{values.max()}")

    in_range("labels", labels)
    fingerprint = data["fingerprint"]
    if not isinstance(fingerprint, np.ndarray) or fingerprint.ndim != 0 or fingerprint.dtype.kind != "U":
        raise ValueError(f"fingerprint must be a string, got {_describe(fingerprint)}")
    epochs = {}
    for which in EPOCHS_KEPT:
        present = [f"{which}_{k}" in data for k in ("epoch", "predictions", "confidences")]
        if not any(present):
            continue
        if not all(present):
            raise ValueError(f"{which}: epoch, predictions and confidences must come together")
        epoch = _integers(data, f"{which}_epoch", 0)
        if int(epoch) < 0:
            raise ValueError(f"{which}_epoch is negative ({int(epoch)})")
        predictions = _integers(data, f"{which}_predictions", 1)
        confidences = data[f"{which}_confidences"]
        if not isinstance(confidences, np.ndarray) or confidences.dtype.kind != "f" or confidences.ndim != 1:
            raise ValueError(f"{which}_confidences must be a 1-d float array, got {_describe(confidences)}")
        for key, values in ((f"{which}_predictions", predictions), (f"{which}_confidences", confidences)):
            if len(values) != len(labels):
                raise ValueError(f"{key}: {len(values)} values for {len(labels)} labels")
        in_range(f"{which}_predictions", predictions)
        conf = confidences.astype(np.float64)
        if not np.isfinite(conf).all() or (len(conf) and (conf.min() < 0 or conf.max() > 1)):
            raise ValueError(f"{which}_confidences must be finite probabilities in [0, 1]")
        epochs[which] = EpochPredictions(int(epoch), predictions, confidences)
    return RunPredictions(labels, str(fingerprint), epochs)


def read_predictions(folder: Path, num_classes: int | None = None) -> RunPredictions | None:
    """A run folder's predictions, or None when it has no predictions.npz. A damaged file, or
    one whose fields are not what `check_fields` accepts (given the run's class count, when
    known), is an LTBenchError naming it and the field."""
    path = Path(folder) / PREDICTIONS_FILE
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {k: npz[k] for k in npz.files}
        kept = check_fields(data, num_classes)
    except (OSError, KeyError, ValueError, TypeError, zipfile.BadZipFile, EOFError) as exc:
        raise LTBenchError(f"{path} is damaged ({type(exc).__name__}: {exc}); rerun the run to rewrite it") from None
    if labels_fingerprint(kept.labels) != kept.fingerprint:
        raise LTBenchError(f"{path}: its labels do not match its own fingerprint (edited or damaged)")
    return kept


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
