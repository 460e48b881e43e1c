"""The published numbers (`paper_numbers.yaml`), loaded and looked up for the report.

ImageNet-LT and iNaturalist 2018 have a natural, not a constructed, imbalance; their entries
carry the datasets' conventional IF (256 and 500) so that every cell is keyed the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from benchmarks import LTBenchError
from benchmarks.store.yamlio import yaml_load


# Package data (pyproject.toml package-data), found the same way in a checkout and an installed wheel.
PAPER_NUMBERS_FILE = Path(str(resources.files("benchmarks.reporting") / "paper_numbers.yaml"))
FIELDS = {"method", "dataset", "imb_factor", "top1", "many", "medium", "few", "backbone", "epochs", "source", "status",
          "views", "reported_epoch"}
STATUSES = {"release", "paper", "unverified"}
# Which epoch of a run a published figure is: `best` (the best epoch on the selection split: the
# test set for the CIFAR releases, the validation split where the release has one) or `last` (the
# final epoch, e.g. the logit-adjustment release's printed "final test accuracy"). The verdict
# compares the run's figure of the same epoch (reporting/aggregate.py), so every entry says which.
REPORTED_EPOCHS = ("best", "last")


@dataclass(frozen=True)
class PaperNumber:
    method: str
    dataset: str
    imb_factor: float
    top1: float
    backbone: str
    epochs: int
    source: str
    status: str
    many: float | None = None
    medium: float | None = None
    few: float | None = None
    views: tuple[str, ...] | str | None = None  # the entry's training views (see paper_numbers.yaml)
    reported_epoch: str = "best"  # best | last: the run's epoch this figure is compared with (REPORTED_EPOCHS)

    def views_match(self, views) -> bool:
        """Whether a run with these `views` (its config's list) may be compared with this entry."""
        if self.views is None:
            return True
        return not isinstance(self.views, str) and tuple(views or ()) == self.views


def load_paper_numbers(path: Path = PAPER_NUMBERS_FILE) -> list[PaperNumber]:
    with open(path) as f:
        rows = yaml_load(f) or []
    numbers = []
    for i, row in enumerate(rows):
        unknown = set(row) - FIELDS
        if unknown:
            raise LTBenchError(f"{path} entry {i}: unknown field(s) {sorted(unknown)}")
        if row.get("status") not in STATUSES:
            raise LTBenchError(f"{path} entry {i}: status must be one of {sorted(STATUSES)}")
        if not isinstance(row.get("top1"), (int, float)) or not row.get("source"):
            raise LTBenchError(f"{path} entry {i}: every number needs top1 and a source")
        if row.get("reported_epoch") not in REPORTED_EPOCHS:
            raise LTBenchError(f"{path} entry {i}: reported_epoch must be one of {', '.join(REPORTED_EPOCHS)} "
                               f"(which epoch of a run the figure is), got {row.get('reported_epoch')!r}")
        if isinstance(row.get("views"), list):
            row = {**row, "views": tuple(row["views"])}
        numbers.append(PaperNumber(**row))
    return numbers


def lookup(numbers: list[PaperNumber], method: str, dataset: str, imb_factor: float,
           backbone: str | None = None, views=None) -> PaperNumber | None:
    """The published figure of a cell; with several backbones, the run's backbone's (or the first).
    Entries that record their views are candidates only for a run with the same `views`."""
    matches = [n for n in numbers if n.method == method and n.dataset == dataset
               and float(n.imb_factor) == float(imb_factor) and n.views_match(views)]
    if backbone is not None:
        same = [n for n in matches if n.backbone == backbone]
        matches = same or matches
    return matches[0] if matches else None
