"""paper_numbers.yaml: every figure traceable (source, status, views where a release published
several view sets), and a run compared only with the entry of its own views."""

import pandas as pd
import pytest

from benchmarks import LTBenchError
from benchmarks.reporting.paper_numbers import STATUSES, load_paper_numbers, lookup
from benchmarks.reporting.tables import source_notes

SIM_SIM = ["rrc224_randaug", "simclr224", "simclr224"]
SIM_RAND = ["rrc224_randaug", "bcl_randstack224", "simclr224"]


def test_every_entry_has_a_source_a_status_and_views_where_relevant():
    numbers = load_paper_numbers()
    assert numbers
    for n in numbers:
        assert n.source.strip() and n.status in STATUSES, n
        if n.status == "paper":
            assert "Table" in n.source or "table" in n.source, n  # the table that prints it
    bcl_imagenet = [n for n in numbers if (n.method, n.dataset) == ("bcl", "imagenet_lt")]
    assert len(bcl_imagenet) == 4 and all(n.views is not None for n in bcl_imagenet)
    resnext = {(n.views if isinstance(n.views, str) else tuple(n.views)): n.top1
               for n in bcl_imagenet if n.backbone == "resnext50_32x4d"}
    assert resnext[tuple(SIM_SIM)] == 57.2 and resnext[tuple(SIM_RAND)] == 57.2
    assert [v for v, top1 in resnext.items() if top1 == 57.8] == ["rand-rand (not in the released code)"]
    # the untraceable CIFAR-100 many/medium/few are gone
    for n in numbers:
        if n.dataset == "cifar100" and n.method in ("ce", "bcl"):
            assert (n.many, n.medium, n.few) == (None, None, None)


def test_a_run_is_compared_only_with_the_entry_of_its_views():
    numbers = load_paper_numbers()
    sim = lookup(numbers, "bcl", "imagenet_lt", 256, "resnext50_32x4d", SIM_SIM)
    assert sim.top1 == 57.2 and "sim-sim" in sim.source
    assert lookup(numbers, "bcl", "imagenet_lt", 256, "resnext50_32x4d", SIM_RAND).top1 == 57.2
    assert lookup(numbers, "bcl", "imagenet_lt", 256, "resnet50", SIM_SIM).top1 == 56.0
    # no ltbench view set is the README's rand-rand: 57.8 is never the comparison
    stacked = ["rrc224_randaug", "bcl_randstack224", "bcl_randstack224"]
    assert lookup(numbers, "bcl", "imagenet_lt", 256, "resnext50_32x4d", stacked) is None
    # entries without views match any run (CIFAR: the method's own views)
    assert lookup(numbers, "bccl", "cifar10", 100, "resnet32", []).top1 == 85.22


def test_unverified_status_is_shown_by_the_report_and_bad_statuses_refused(tmp_path):
    cell = pd.DataFrame([{"method": "ce", "paper_source": "Kang et al.", "paper_top1": 41.6, "paper_many": 64.0,
                          "paper_medium": 33.8, "paper_few": 5.8, "paper_backbone": "resnet50", "paper_views": "",
                          "paper_epochs": 90, "paper_status": "unverified", "dataset": "imagenet_lt", "if_label": "256"}])
    notes = source_notes(cell)
    assert notes[0].endswith("[unverified]")
    # issue 22 point 9: the methods with no ImageNet-LT recipe are listed, not silently absent
    assert "ldam_drw: no recipe for imagenet_lt (not run; docs/methods/ldam_drw.md)" in notes
    assert not any(n.startswith(("crt:", "bcl:")) and "no recipe" in n for n in notes)
    bad = tmp_path / "numbers.yaml"
    bad.write_text("- {method: ce, dataset: cifar10, imb_factor: 100, top1: 70.0, backbone: resnet32, "
                   "epochs: 200, source: somewhere, status: rumoured, reported_epoch: best}\n")
    with pytest.raises(LTBenchError, match="status must be one of"):
        load_paper_numbers(bad)


def test_every_entry_says_which_epoch_it_reports(tmp_path):
    """Issue 22 point 3: best or last, required, so that the verdict compares like with like."""
    assert {n.reported_epoch for n in load_paper_numbers()} == {"best", "last"}
    bad = tmp_path / "numbers.yaml"
    for extra in ("", ", reported_epoch: final"):
        bad.write_text("- {method: ce, dataset: cifar10, imb_factor: 100, top1: 70.0, backbone: resnet32, "
                       f"epochs: 200, source: somewhere, status: paper{extra}}}\n")
        with pytest.raises(LTBenchError, match="reported_epoch must be one of best, last"):
            load_paper_numbers(bad)
