"""report.py and the runner against damaged run folders (issue 16, classes 6 and 7).

Each test builds the damage itself: a folder written as the runner leaves it, then one file
replaced by something a crash, a full disk, a bad copy or a hand edit could leave. The report must
list every damaged folder as unreadable or incomplete with its reason and still write the rest;
the runner must treat such a folder as unfinished and train it again.
"""

import json
import math

import pytest

from benchmarks.config import resolve_config
from benchmarks.reporting import build_report
from benchmarks.reporting.load import load_runs
from benchmarks.store.results import done_problem
from test_report import write_run  # noqa: E402  (tests/ is on sys.path: one fixture writer for both)

GARBAGE = bytes(range(256)) * 4  # not UTF-8, not YAML, not JSON, not CSV


def _metrics(folder):
    return json.loads((folder / "metrics.json").read_text())


def _set_metrics(folder, change):
    metrics = _metrics(folder)
    change(metrics)
    # json.dumps writes NaN as the bare token NaN, which json.load reads back (as a careless writer could)
    (folder / "metrics.json").write_text(json.dumps(metrics))


def _status_folder(folder):
    (folder / "status").unlink()
    (folder / "status").mkdir()
    (folder / "status" / "x").write_text("done\n")


def _config_of_another_method(folder):
    config = resolve_config("bccl", "cifar10", 100, int(folder.name[4:]))
    (folder / "config.yaml").write_text(json.dumps(config))  # JSON is YAML


# name -> (how to damage the folder, expected state, a phrase of the reason)
DAMAGE = {
    "config.yaml is a list": (lambda f: (f / "config.yaml").write_text("- 1\n- 2\n"), "unreadable", "not a mapping"),
    "config.yaml is a scalar": (lambda f: (f / "config.yaml").write_text("42\n"), "unreadable", "not a mapping"),
    "config.yaml is binary": (lambda f: (f / "config.yaml").write_bytes(GARBAGE), "unreadable", "config.yaml"),
    "config.yaml has duplicate keys": (lambda f: (f / "config.yaml").write_text("seed: 1\nseed: 2\n"),
                                       "unreadable", "duplicate key"),
    "config.yaml imb_factor is a string": (
        lambda f: (f / "config.yaml").write_text((f / "config.yaml").read_text().replace(
            "imb_factor: 100", "imb_factor: lots")), "unreadable", "imb_factor 'lots' is malformed"),
    "config.yaml names another method": (_config_of_another_method, "incomplete", "names method 'bccl'"),
    "status is random bytes": (lambda f: (f / "status").write_bytes(GARBAGE), "unreadable", "unreadable status file"),
    "status is a folder": (_status_folder, "unreadable", "unreadable status file"),
    "per_class holds strings": (lambda f: _set_metrics(f, lambda m: m["best"].update(per_class=["x"] * 10)),
                                "incomplete", "per_class holds 'x'"),
    "top-1 is NaN": (lambda f: _set_metrics(f, lambda m: m["best"].update(top1=math.nan)), "incomplete", "top1 nan"),
    "top-1 is 500 %": (lambda f: _set_metrics(f, lambda m: m["last"].update(top1=500.0)), "incomplete", "top1 500.0"),
    "a group is a string": (lambda f: _set_metrics(f, lambda m: m["best"].update(few="n/a")), "incomplete", "few 'n/a'"),
    "metrics.json is binary": (lambda f: (f / "metrics.json").write_bytes(GARBAGE), "incomplete", "metrics.json unreadable"),
    "metrics.json is a list": (lambda f: (f / "metrics.json").write_text("[1, 2]"), "incomplete", "not a mapping"),
    "num_classes is a string": (lambda f: _set_metrics(f, lambda m: m.update(num_classes="ten")),
                                "incomplete", "malformed num_classes"),
    "history.csv is binary": (lambda f: (f / "history.csv").write_bytes(GARBAGE), "incomplete", "history.csv unreadable"),
    "history.csv cut short": (lambda f: (f / "history.csv").write_text(
        "\n".join((f / "history.csv").read_text().splitlines()[:3]) + "\n"), "incomplete", "history.csv holds epochs 0..1"),
    "history.csv missing": (lambda f: (f / "history.csv").unlink(), "incomplete", "history.csv is missing"),
}


@pytest.fixture(scope="module")
def damaged(tmp_path_factory):
    """A results tree: one whole CE run (seed 0), and one damaged CE run per DAMAGE case."""
    root = tmp_path_factory.mktemp("damaged") / "results"
    good = write_run(root, resolve_config("ce", "cifar10", 100, 0, overrides={"epochs": 4}), best=60.0)
    folders = {}
    for seed, (name, (damage, _, _)) in enumerate(sorted(DAMAGE.items()), start=1):
        folder = write_run(root, resolve_config("ce", "cifar10", 100, seed, overrides={"epochs": 4}), best=61.0)
        damage(folder)
        folders[name] = folder
    return root, good, folders


def test_a_whole_fixture_run_is_done(damaged):
    _, good, _ = damaged
    assert done_problem(good) is None


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_the_report_lists_each_damaged_folder_with_its_reason(damaged, case):
    root, _, folders = damaged
    runs = load_runs(root).set_index("folder")
    _, state, phrase = DAMAGE[case]
    row = runs.loc[str(folders[case])]
    assert row["state"] == state, (row["state"], row["reason"])
    assert phrase in row["reason"], row["reason"]
    assert done_problem(folders[case]) is not None  # and the runner would train it again


def test_the_report_is_written_with_every_damaged_folder_in_it(damaged, tmp_path):
    root, good, folders = damaged
    report = build_report(root, tmp_path / "reports", formats=["md", "csv"], plots=False)
    runs = report.runs
    assert list(runs[runs["state"] == "done"]["folder"]) == [str(good)]
    assert set(runs[runs["state"] != "done"]["folder"]) == {str(f) for f in folders.values()}
    text = (tmp_path / "reports" / "report.md").read_text()
    assert "60.00" in text  # the whole run's top-1 is reported
    for folder in folders.values():
        assert str(folder) in text  # every damaged folder is listed


def test_a_folder_whose_loading_fails_unforeseen_is_still_a_row(tmp_path, monkeypatch):
    """Even a folder whose loading raises something nobody foresaw becomes a row (unreadable)."""
    from benchmarks.reporting import load

    root = tmp_path / "results"
    write_run(root, resolve_config("ce", "cifar10", 100, 0, overrides={"epochs": 4}), best=60.0)
    write_run(root, resolve_config("ce", "cifar10", 100, 1, overrides={"epochs": 4}), best=60.0)
    original = load._read_config

    def failing(folder):
        if folder.name == "seed1":
            raise RuntimeError("boom")
        return original(folder)

    monkeypatch.setattr(load, "_read_config", failing)
    runs = load_runs(root)
    assert list(runs["state"]) == ["done", "unreadable"]
    assert runs["reason"][1] == "RuntimeError: boom"
    report = build_report(root, tmp_path / "reports", formats=["md"], plots=False)
    assert "RuntimeError: boom" in (tmp_path / "reports" / "report.md").read_text() and not report.empty


def test_identity_of_a_variant_folder_is_its_method_before_the_at_and_its_config_variant(tmp_path):
    """`<method>@<variant>/seed<S>/`: the method is the part before `@`; the config's `variant`
    entry must name the folder's variant (an older version's `<method>/seed<S>/` has none)."""
    from benchmarks.store.results import identity_problem

    config = {"method": "ce", "seed": 0, "variant": {"name": "eta=0.0", "deviations": {"eta": {"paper": 0.1, "run": 0.0}}}}
    assert identity_problem(tmp_path / "ce@eta=0.0" / "seed0", config) is None
    assert "names variant 'eta=0.0', the folder 'eta=0.5'" in identity_problem(tmp_path / "ce@eta=0.5" / "seed0", config)
    assert "names method 'ce', the folder 'bccl'" in identity_problem(tmp_path / "bccl@eta=0.0" / "seed0", config)
    plain = {"method": "ce", "seed": 0}
    assert identity_problem(tmp_path / "ce" / "seed0", plain) is None
    assert "the folder 'quick'" in identity_problem(tmp_path / "ce@quick" / "seed0", plain)
    assert identity_problem(tmp_path / "ce" / "seed0", config) is not None
    assert "names seed 0" in identity_problem(tmp_path / "ce@eta=0.0" / "seed1", config)
