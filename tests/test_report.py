"""report.py on fixture run folders: seed arithmetic, every verdict, missing paper numbers,
failed / unfinished runs, deviations, and every output format produced and parseable.

The fixture results tree is written with the results store's own writers, with configs from
`resolve_config`, so it has the layout and content the grid runner produces. One `report.py` run
over it is shared by the output tests (module-scoped) to keep the suite fast.
"""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import io
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks import PROJECT_ROOT
from benchmarks.config import recipe_deviations, resolve_config
from benchmarks.reporting.paper_numbers import PaperNumber, load_paper_numbers
from benchmarks.reporting import build_report
from benchmarks.reporting.aggregate import aggregate, label_variants, verdict
from benchmarks.reporting.load import load_runs
from benchmarks.store.results import RunLock, atomic_write_json, atomic_write_yaml, run_dir, write_csv, write_status
from benchmarks.store.results import history_epochs as history_epochs_of

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _load_report_cli():
    spec = importlib.util.spec_from_file_location("report_cli", PROJECT_ROOT / "report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


report_cli = _load_report_cli()


# ----------------------------------------------------------------------------- fixture folders

def class_counts(num_classes: int, imb_factor: float, n_max: int) -> list[int]:
    """Exponential LT profile, as the CIFAR-LT construction."""
    return [int(n_max * (1 / imb_factor) ** (i / (num_classes - 1))) for i in range(num_classes)]


def write_run(root: Path, config: dict, status: str = "done", best: float | None = None,
              last: float | None = None, label: str | None = None, record_deviations: bool = True,
              history_epochs: int | None = None, extra_metrics: dict | None = None, variant: str = "") -> Path:
    """One run folder as the grid runner leaves it (metrics only when `best` is given; in the
    `<method>@<variant>` folder when `variant` is given)."""
    label = label or config["dataset"]
    folder = run_dir(root, label, config["imb_factor"], config["method"], config["seed"], variant)
    atomic_write_yaml(folder / "config.yaml", config)
    num_classes = 100 if config["dataset"] == "cifar100" else 10
    counts = class_counts(num_classes, config["imb_factor"], 500 if num_classes == 100 else 5000)
    epochs = history_epochs if history_epochs is not None else config["epochs"]
    rows = history_epochs_of(epochs) if history_epochs is None else range(epochs)  # a post-hoc run: row 0
    if best is not None:
        last = best - 0.5 if last is None else last
        # per-class accuracy falling along the tail around `best`; groups as the evaluation has them
        per_class = [round(min(100.0, max(0.0, best + 30.0 - 60.0 * i / (num_classes - 1))), 2)
                     for i in range(num_classes)]

        def summary(top1, epoch):
            many = [a for a, n in zip(per_class, counts) if n > 100]
            medium = [a for a, n in zip(per_class, counts) if 20 <= n <= 100]
            few = [a for a, n in zip(per_class, counts) if n < 20]
            mean = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
            return {"epoch": epoch, "top1": top1, "many": mean(many), "medium": mean(medium),
                    "few": mean(few), "per_class": per_class}

        metrics = {
            "best": summary(best, max(epochs - 3, 0)), "last": summary(last, max(epochs - 1, 0)), "epochs": config["epochs"],
            "num_classes": num_classes, "class_counts": counts, "train_images": sum(counts),
            "test_images": 100 * num_classes, "train_seconds": 12.5, "train_images_per_s": 1000.0,
            "dataset_info": {"name": config["dataset"]},
        }
        if record_deviations:
            metrics["deviations"] = recipe_deviations(config)
        for key, value in (extra_metrics or {}).items():
            metrics[key] = {**metrics.get(key, {}), **value}
        atomic_write_json(folder / "metrics.json", metrics)
    write_csv(folder / "history.csv", [
        {"epoch": e, "lr": 0.1, "loss": 2.0 / (e + 1), "loss_ce": 2.0 / (e + 1),
         "top1": (best or 50.0) * (e + 1) / max(epochs, 1), "many": 90.0, "medium": 60.0, "few": None,
         "train_seconds": 0.1, "images_per_s": 1000.0}
        for e in rows
    ])
    write_status(folder, status)
    atomic_write_json(folder / "env.json", {"python": "3.11"})
    return folder


RUNNER_LOCKS: list = []


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    """A results tree with one cell per verdict, a failed, a running and a tiny run.

    cifar10 IF100: bccl 84.0 / 86.0 (mean 85.0 vs 85.22: reproduced), bcl 90.0 (+ a failed seed;
    vs 84.32: above), ce 60.0 (vs 70.36: below; + a running seed), paco 70.0 (no paper number).
    cifar100 IF100: paco at 200 epochs (recorded deviation: recipe differs), ce with lr 0.2 and no
    recorded deviations (recomputed: recipe differs). cifar10-tiny: ce, tiny subset.
    """
    root = tmp_path_factory.mktemp("results")
    for seed, best in ((0, 84.0), (1, 86.0)):  # on a GPU: trained and evaluated in fp16, as the release
        write_run(root, resolve_config("bccl", "cifar10", 100, seed), best=best, last=best - 1.0, extra_metrics={
            "precision": {"run": "fp16", "release": "fp16", "eval": "fp16", "release_eval": "fp16"}})
    write_run(root, resolve_config("bcl", "cifar10", 100, 0), best=90.0)
    write_run(root, resolve_config("bcl", "cifar10", 100, 1), status="failed: RuntimeError: boom")
    write_run(root, resolve_config("ce", "cifar10", 100, 0), best=60.0)
    running = write_run(root, resolve_config("ce", "cifar10", 100, 1), status="running", history_epochs=3)
    RUNNER_LOCKS.append(RunLock(running).acquire())  # a live runner holds it (for the module's tests)
    write_run(root, resolve_config("ce", "cifar10", 100, 2), status="running", history_epochs=2)  # killed
    write_run(root, resolve_config("paco", "cifar10", 100, 0), best=70.0)
    write_run(root, resolve_config("paco", "cifar100", 100, 0, overrides={"epochs": 200}), best=50.0)
    write_run(root, resolve_config("ce", "cifar100", 100, 0, overrides={"lr": 0.2}), best=40.0,
              record_deviations=False)
    # BCCL trained on a CPU: fp32 where its release trains fp16, and so evaluated in fp32 where its
    # release evaluates in fp16 (what the trainer of before eval_precision recorded: the report adds it)
    write_run(root, resolve_config("bccl", "cifar100", 100, 0), best=52.5, extra_metrics={
        "precision": {"run": "fp32", "release": "fp16"}, "deviations": {"precision": {"paper": "fp16", "run": "fp32"}}})
    tiny = resolve_config("ce", "cifar10", 100, 0,
                          overrides={"train_cap_per_class": 20, "test_cap_per_class": 10, "epochs": 2})
    write_run(root, tiny, best=30.0, label="cifar10-tiny")
    return root


@pytest.fixture(scope="module")
def report(results, tmp_path_factory):
    """report.py's main() over the fixture tree: (exit code, stdout, out dir)."""
    out = tmp_path_factory.mktemp("reports")
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = report_cli.main(["--results-dir", str(results), "--out", str(out)])
    return code, stdout.getvalue(), out


@pytest.fixture(scope="module")
def summary(report) -> pd.DataFrame:
    return pd.read_csv(report[2] / "summary.csv", keep_default_na=False, na_values=[""])


def row(summary: pd.DataFrame, label: str, method: str) -> pd.Series:
    rows = summary[(summary["dataset_label"] == label) & (summary["method"] == method)]
    assert len(rows) == 1, rows
    return rows.iloc[0]


# ----------------------------------------------------------------------------- aggregation, verdicts

def test_seed_aggregation_arithmetic(summary):
    bccl = row(summary, "cifar10", "bccl")
    assert bccl["n"] == 2 and bccl["seeds"] == "0 1"
    assert bccl["best_top1_mean"] == pytest.approx(85.0)
    assert bccl["best_top1_std"] == pytest.approx(math.sqrt(2))  # sample std (ddof=1) of 84, 86
    assert bccl["last_top1_mean"] == pytest.approx(84.0)
    assert bccl["diff"] == pytest.approx(85.0 - 85.22)
    single = row(summary, "cifar10", "ce")
    assert single["n"] == 1 and math.isnan(single["best_top1_std"])  # undefined with one seed


def test_every_verdict(summary):
    assert row(summary, "cifar10", "bccl")["verdict"] == "reproduced"
    assert row(summary, "cifar10", "bcl")["verdict"] == "above"
    assert row(summary, "cifar10", "ce")["verdict"] == "below"
    assert row(summary, "cifar10", "paco")["verdict"] == "no paper number"
    assert row(summary, "cifar100", "paco")["verdict"] == "recipe differs"
    assert row(summary, "cifar10-tiny", "ce")["verdict"] == "recipe differs"


def test_missing_paper_number_is_absent_not_zero(summary):
    paco = row(summary, "cifar10", "paco")
    assert math.isnan(paco["paper_top1"]) and math.isnan(paco["diff"])
    assert pd.isna(paco["paper_source"])


def test_deviations_recorded_and_recomputed(summary):
    assert row(summary, "cifar100", "paco")["differences"] == "epochs 200≠400"
    # no "deviations" in its metrics.json: recomputed from config.yaml
    assert row(summary, "cifar100", "ce")["differences"] == "lr 0.2≠0.1"
    tiny = row(summary, "cifar10-tiny", "ce")["differences"]
    assert "epochs 2≠200" in tiny and "train_cap_per_class 20≠0" in tiny


def test_failed_and_running_runs_are_listed_not_aggregated(report, summary):
    assert row(summary, "cifar10", "bcl")["n"] == 1  # the failed seed is not averaged
    runs = pd.read_csv(report[2] / "runs.csv")
    states = dict(zip(zip(runs["method"], runs["seed"], runs["dataset_label"]), runs["state"]))
    assert states[("bcl", 1, "cifar10")] == "failed" and states[("ce", 1, "cifar10")] == "running"
    assert states[("ce", 2, "cifar10")] == "interrupted"  # says running, but nobody holds its lock
    unfinished = report[1].split("## Unfinished and failed runs")[1].split("##")[0]
    assert "RuntimeError: boom" in unfinished and "running" in unfinished and "3/200" in unfinished
    assert "rerun the grid to resume" in unfinished


def test_precision_is_reported_per_method_and_a_precision_deviation_is_recipe_differs(report, summary):
    bccl = row(summary, "cifar100", "bccl")
    assert bccl["precision"] == "fp32" and bccl["verdict"] == "recipe differs"
    assert bccl["differences"] == "eval_precision fp32≠fp16; precision fp32≠fp16"
    assert pd.isna(row(summary, "cifar10", "bcl")["precision"])  # an older run that recorded none
    cell = report[1].split("## cifar100, IF 100")[1].split("##")[0]
    assert "| precision |" in next(line for line in cell.splitlines() if line.startswith("| method "))
    bccl_line = next(line for line in cell.splitlines() if line.startswith("| bccl "))
    assert "| fp32 |" in bccl_line and "precision fp32≠fp16" in bccl_line


def test_reconstructed_recipes_are_labelled_not_matched(report, summary):
    """BCL's CIFAR recipe (no official CIFAR code) and PaCo's CIFAR-10 one are `reconstructed` in
    their YAML: the report labels their cells and runs so, and never says they match a release."""
    assert row(summary, "cifar10", "bcl")["recipe_label"] == "reconstructed recipe"
    assert row(summary, "cifar10", "paco")["recipe_label"] == "reconstructed recipe"
    assert pd.isna(row(summary, "cifar10", "bccl")["recipe_label"])
    assert row(summary, "cifar10", "bcl")["verdict"] == "above"  # the verdict stays, labelled
    cell = report[1].split("## cifar10, IF 100")[1].split("##")[0]
    bcl_line = next(line for line in cell.splitlines() if line.startswith("| bcl "))
    assert bcl_line.rstrip(" |").endswith("reconstructed recipe")
    diff = pd.read_csv(report[2] / "recipe_diff.csv", keep_default_na=False)
    assert (diff[(diff["method"] == "bcl") & (diff["state"] == "done")]["note"] == "reconstructed recipe").all()
    assert (diff[diff["method"] == "bccl"]["note"] == "matches the paper recipe").all()


def test_recipe_status_is_read_from_the_method_yaml(tmp_path, monkeypatch):
    import benchmarks.config as config_module
    from benchmarks import LTBenchError
    from benchmarks.config import recipe_status

    assert recipe_status("bcl", "cifar100") == "reconstructed" and recipe_status("bcl", "imagenet_lt") == "release"
    assert recipe_status("bccl", "cifar10") == "release" and recipe_status("bccl", "inat2018") == "reconstructed"
    # issue 22 point 4: post-hoc LA on the suite's CE base model is labelled as logit_adjust is
    assert recipe_status("la_posthoc", "cifar10") == recipe_status("logit_adjust", "cifar10") == "reconstructed"
    (tmp_path / "methods").mkdir()
    (tmp_path / "methods" / "ce.yaml").write_text("recipe_status:\n  cifar10: guessed\nrecipe: {}\n")
    monkeypatch.setattr(config_module, "CONFIG_DIR", tmp_path)
    with pytest.raises(LTBenchError, match="recipe_status.cifar10 must be one of release, reconstructed"):
        recipe_status("ce", "cifar10")


def test_folders_without_predictions_or_ece_report_na(report, summary):
    """The fixture folders are laid out as before per-image predictions and ECE were kept: they
    load and report, and the new columns and sections say n/a (with why) instead of failing."""
    _, stdout, out = report
    cell = stdout.split("## cifar10, IF 100")[1].split("\n## ")[0]
    assert "Reliability diagram: n/a" in cell
    bccl_line = next(line for line in cell.splitlines() if line.startswith("| bccl "))
    header = next(line for line in cell.splitlines() if line.startswith("| method "))
    columns = [c.strip() for c in header.strip(" |").split(" | ")]
    values = [c.strip() for c in bccl_line.strip(" |").split(" | ")]
    assert values[columns.index("ECE best/last")] == "n/a"
    assert values[columns.index("95% CI")] == "[72.29, 97.71]"  # 85 ± 12.706 * 1.414 / sqrt(2)
    assert np.isnan(row(summary, "cifar10", "bccl")["best_ece_mean"])
    comparisons = pd.read_csv(out / "comparisons.csv", keep_default_na=False, na_values=[""])
    one_seed = comparisons[(comparisons["a_method"] == "bcl") & (comparisons["b_method"] == "ce")
                           & (comparisons["dataset_label"] == "cifar10")].iloc[0]
    assert one_seed["diff"] == pytest.approx(30.0) and np.isnan(one_seed["p"])
    assert "no predictions.npz" in one_seed["note"]
    mixed = comparisons[(comparisons["a_method"] == "bccl") & (comparisons["b_method"] == "bcl")].iloc[0]
    assert "Welch needs >= 2 seeds" in mixed["note"]
    assert row(summary, "cifar10", "bccl")["paper_in_ci"] == True  # noqa: E712  (84, 86 around 85.22)


def test_verdict_rules_and_tolerance():
    assert verdict(-1.0, True, False, 1.0) == "reproduced"
    assert verdict(85.22 - 1.0 - 85.22, True, False, 1.0) == "reproduced"  # float noise ignored
    assert verdict(-1.01, True, False, 1.0) == "below"
    assert verdict(1.01, True, False, 1.0) == "above"
    assert verdict(float("nan"), False, False, 1.0) == "no paper number"
    assert verdict(0.0, True, True, 1.0) == "recipe differs"


def test_published_recipe_mismatch_is_recipe_differs(results):
    """A run on its recipe file whose published number used other epochs (PaCo's 400)."""
    numbers = [PaperNumber("bccl", "cifar10", 100, 85.22, "resnet32", 400, "test source", "paper")]
    summary = aggregate(label_variants(load_runs(results)), numbers, tolerance=1.0)
    bccl = summary[(summary["dataset_label"] == "cifar10") & (summary["method"] == "bccl")].iloc[0]
    assert bccl["verdict"] == "recipe differs"
    assert bccl["differences"] == "epochs 200≠400 (published recipe)"


def test_the_verdict_compares_the_epoch_the_paper_figure_reports(tmp_path):
    """Issue 22 point 3: the logit-adjustment README prints the final epoch's accuracy, so a run is
    set against it with its last-epoch top-1; a best-epoch figure with the best epoch's."""
    write_run(tmp_path, resolve_config("logit_adjust", "cifar10", 100, 0), best=80.0, last=77.5)
    write_run(tmp_path, resolve_config("ldam_drw", "cifar10", 100, 0), best=77.5, last=75.0)
    summary = aggregate(label_variants(load_runs(tmp_path)), load_paper_numbers(), tolerance=1.0)
    la = summary[summary["method"] == "logit_adjust"].iloc[0]
    assert la["compared_epoch"] == "last" and la["paper_top1"] == 77.89
    assert la["diff"] == pytest.approx(77.5 - 77.89) and la["verdict"] == "reproduced"  # best 80.0 would be "above"
    write_run(tmp_path, resolve_config("la_posthoc", "cifar10", 100, 0), best=77.0, last=77.0)
    summary = aggregate(label_variants(load_runs(tmp_path)), load_paper_numbers(), tolerance=1.0)
    post = summary[summary["method"] == "la_posthoc"].iloc[0]
    assert (post["compared_epoch"], post["paper_top1"], post["verdict"]) == ("last", 77.32, "reproduced")
    assert post["recipe_label"] == "reconstructed recipe"
    ldam = summary[summary["method"] == "ldam_drw"].iloc[0]
    assert ldam["compared_epoch"] == "best" and ldam["diff"] == pytest.approx(77.5 - 77.03)


def test_tolerance_option(results, tmp_path):
    report = build_report(results, tmp_path, tolerance=0.1, formats=["csv"])
    bccl = report.summary[(report.summary["dataset_label"] == "cifar10") & (report.summary["method"] == "bccl")]
    assert bccl["verdict"].item() == "below"


def test_paper_numbers_file_is_complete():
    """Every CIFAR figure of paper-numbers.md, none invented (PaCo has no CIFAR-10 figure)."""
    numbers = load_paper_numbers()
    cifar = {(n.method, n.dataset, n.imb_factor): n.top1 for n in numbers if n.dataset.startswith("cifar")}
    first = {k: v for k, v in cifar.items() if k[0] in ("bccl", "bcl", "paco", "ce")}
    assert len(first) == 21 and ("paco", "cifar10", 100) not in cifar
    assert cifar[("bccl", "cifar100", 10)] == 65.3 and cifar[("ce", "cifar10", 100)] == 70.36
    # issue 14's single-stage baselines: LDAM-DRW's Table 2, the LA and Balanced Softmax READMEs
    assert len(cifar) - len(first) == 10 and ("focal", "cifar10", 100) not in cifar  # unchecked: left out
    assert cifar[("ldam_drw", "cifar10", 100)] == 77.03 and cifar[("logit_adjust", "cifar100", 100)] == 44.06
    assert cifar[("balanced_softmax", "cifar10", 200)] == 79.8
    # issue 22: the LA README's post-hoc column, final-epoch figures like the loss column's
    assert cifar[("la_posthoc", "cifar10", 100)] == 77.32 and cifar[("la_posthoc", "cifar100", 100)] == 44.07
    assert {n.reported_epoch for n in numbers if n.method in ("logit_adjust", "la_posthoc")} == {"last"}
    assert all(n.status in ("release", "paper", "unverified") and n.source for n in numbers)


# ----------------------------------------------------------------------------- outputs

def test_stdout_has_every_table(report):
    code, stdout, _ = report
    assert code == 0
    for title in ("cifar10, IF 100", "cifar100, IF 100", "cifar10-tiny, IF 100", "Unfinished and failed runs",
                  "Recipe differences per run"):
        assert f"## {title}" in stdout
    assert "85.00 ± 1.41 (n=2)" in stdout and "60.00 (n=1)" in stdout
    assert "BCCL official README [release]" in stdout  # every paper number with its source and status
    assert "paco: no published figure for cifar10 IF 100" in stdout
    assert "(paper 65.2)" not in stdout  # CE's CIFAR-100 split had no traceable source: dropped


def test_every_format_written_and_parseable(report):
    _, _, out = report
    for name in ("report.md", "summary.csv", "runs.csv", "recipe_diff.csv", "report.tex", "report.html"):
        assert (out / name).stat().st_size > 0, name
    diff = pd.read_csv(out / "recipe_diff.csv", keep_default_na=False)
    paco = diff[(diff["method"] == "paco") & (diff["dataset_label"] == "cifar100")]
    assert paco[["key", "run", "paper"]].values.tolist() == [["epochs", "200", "400"]]
    assert (diff[diff["method"] == "bccl"]["note"] == "matches the paper recipe").all()
    tex = (out / "report.tex").read_text()
    # 3 cells, 2 with comparisons (cifar10: 4 methods, cifar100: 2; the tiny cell has one method),
    # 3 test-distribution shift tables, their wins / ties / losses, unfinished runs, recipe differences
    assert tex.count(r"\begin{tabular}") == tex.count(r"\end{tabular}") == 12
    assert r"\begin{document}" in tex and tex.rstrip().endswith(r"\end{document}")
    assert "$\\pm$" in tex and "epochs 200$\\neq$400" in tex
    body = tex.split(r"\begin{document}")[1]
    assert not re.search(r"(?<!\\)[_%#<>|]", body)  # LaTeX specials all escaped


def test_pngs_valid_and_embedded_in_html(report):
    _, _, out = report
    pngs = sorted((out / "plots").glob("*.png"))
    # per-class, curves, shift and cost for 3 cells, one heatmap (no predictions: no confusion,
    # no weight norms: no norm plot)
    assert len(pngs) == 13
    assert all(p.read_bytes().startswith(PNG_MAGIC) for p in pngs)
    html = (out / "report.html").read_text()
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(images) == len(pngs)
    assert all(base64.b64decode(data).startswith(PNG_MAGIC) for data in images)
    # 3 cells, 3 leaderboards, 2 comparisons, 2 wins / ties / losses, 3 shifts, unfinished runs, recipe differences
    assert html.count("<table>") == 15
    for title in ("cifar10, IF 100", "Unfinished and failed runs", "Recipe differences per run"):
        assert title in html
    md = (out / "report.md").read_text()
    assert "![diff_heatmap](plots/diff_heatmap.png)" in md


def test_no_plots_and_format_selection(results, tmp_path):
    code = report_cli.main(["--results-dir", str(results), "--out", str(tmp_path), "--formats", "md", "html",
                            "--no-plots"])
    assert code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "report.md"]
    assert "<img" not in (tmp_path / "report.html").read_text()


def test_no_runs_is_one_line_and_exit_0(tmp_path, capsys):
    (tmp_path / "results").mkdir()
    assert report_cli.main(["--results-dir", str(tmp_path / "results"), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "no runs" in out
    assert not (tmp_path / "out").exists()


def test_missing_results_dir_is_an_error(tmp_path, capsys):
    assert report_cli.main(["--results-dir", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1 and "does not exist" in err


def test_negative_tolerance_is_an_error(results, tmp_path, capsys):
    assert report_cli.main(["--results-dir", str(results), "--out", str(tmp_path), "--tolerance", "-1"]) == 2
    assert "tolerance" in capsys.readouterr().err


def test_method_without_recipe_and_corrupt_metrics(tmp_path):
    """A run of an unknown method and a 'done' run with broken metrics.json: listed, no crash."""
    config = {**resolve_config("ce", "cifar10", 100, 0), "method": "mystery"}
    write_run(tmp_path / "r", config, best=50.0, record_deviations=False)
    broken = write_run(tmp_path / "r", resolve_config("ce", "cifar10", 100, 1), best=55.0)
    (broken / "metrics.json").write_text("{not json")
    report = build_report(tmp_path / "r", tmp_path / "out", formats=["md", "csv"])
    mystery = report.summary[report.summary["method"] == "mystery"].iloc[0]
    assert mystery["verdict"] == "no paper number" and "no recipe" in mystery["deviation_note"]
    assert report.runs.set_index("seed").loc[1, "state"] == "incomplete"
    diff = pd.read_csv(tmp_path / "out" / "recipe_diff.csv", keep_default_na=False)
    assert "no recipe file" in diff[diff["method"] == "mystery"]["note"].item()


def test_report_imports_no_training_code():
    code = ("import sys, runpy; sys.argv = ['report.py', '--help']\n"
            "try:\n    runpy.run_path('report.py', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "import benchmarks.reporting.plots, benchmarks.reporting.html\n"
            "bad = [m for m in ('torch', 'benchmarks.train.training', 'benchmarks.train.methods', 'benchmarks.run.grid') "
            "if m in sys.modules]\nassert not bad, bad")
    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_unwritable_report_folder_is_a_clear_error(results, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code = report_cli.main(["--results-dir", str(results), "--out", str(blocker / "sub"), "--no-plots"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: report folder") and "not writable" in err
    assert blocker.read_text() == "not a folder"


def test_source_notes_keep_one_line_per_paper_entry():
    from benchmarks.reporting.tables import source_notes

    base = {"dataset": "imagenet_lt", "if_label": "256", "paper_many": np.nan, "paper_medium": np.nan,
            "paper_few": np.nan, "paper_epochs": 90, "paper_status": "release"}
    cell = pd.DataFrame([
        {**base, "method": "bcl", "paper_top1": 56.0, "paper_backbone": "resnet50", "paper_source": "paper R50"},
        {**base, "method": "bcl", "paper_top1": 56.0, "paper_backbone": "resnet50", "paper_source": "paper R50"},
        {**base, "method": "bcl", "paper_top1": 57.8, "paper_backbone": "resnext50_32x4d", "paper_source": "README X50"},
        {**base, "method": "bccl", "paper_top1": np.nan, "paper_backbone": "", "paper_source": ""},
    ])
    notes = [n for n in source_notes(cell) if "no recipe for" not in n]  # issue 22's lines: test_paper_numbers
    assert len(notes) == 3
    assert any("README X50" in n for n in notes) and any("paper R50" in n for n in notes)
    assert notes[-1] == "bccl: no published figure for imagenet_lt IF 256"


def test_usage_errors_are_one_line(capsys):
    for argv in (["--bogus"], ["--tol", "1"], ["--formats", "pdf"]):
        assert report_cli.main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err


def test_selection_on_the_validation_split_is_labelled_with_best_on_test_beside(tmp_path):
    """A BCL ImageNet-LT run selected on ImageNet_LT_val: its best top-1 is the selected epoch's test
    accuracy, the report says which split chose it and shows the best test epoch as 'best on test';
    a CIFAR run says 'test' (the releases' own selection)."""
    root = tmp_path / "r"
    write_run(root, resolve_config("bcl", "imagenet_lt", 256, 0), best=55.5, extra_metrics={
        "selection": {"split": "val", "val_top1": 54.0}, "best_on_test": {"epoch": 80, "top1": 56.25}})
    write_run(root, resolve_config("bccl", "cifar10", 100, 0), best=85.0)
    report = build_report(root, tmp_path / "out", formats=["md", "csv"], plots=False)
    bcl = report.summary[report.summary["method"] == "bcl"].iloc[0]
    assert bcl["selected_on"] == "val" and bcl["best_top1_mean"] == 55.5 and bcl["best_on_test_mean"] == 56.25
    text = (tmp_path / "out" / "report.md").read_text()
    cell = text.split("## imagenet_lt, IF 256")[1].split("##")[0]
    assert "val (best on test: 56.25)" in cell
    cifar = text.split("## cifar10, IF 100")[1].split("##")[0]
    assert "| test |" in next(line for line in cifar.splitlines() if line.startswith("| bccl "))
    assert "select_on: test" in text  # the report says the CIFAR releases select on the test set
