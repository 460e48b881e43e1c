"""The report's corrected comparisons and checks on a hand-made results tree (issues 21, 24, 25):
Holm-adjusted p per family, wins / ties / losses, the seed-matched paired test, intervals clipped
to the range of an accuracy, top-5 from 100 classes, predictions.npz validated field by field,
one recipe-diff row per run folder, the HTML leaderboard, legends that name what differs, no
empty heatmap, and `--from-csv` re-rendering the same tables from a kept summary. Every number
is checked against an independent computation (scipy, or by hand)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from benchmarks.commands import main as ltbench_main
from benchmarks.config import resolve_config
from benchmarks.reporting import build_report, build_report_from_csv
from benchmarks.reporting.compare import SEED_MATCHED, WELCH, run_predictions
from benchmarks.reporting.stats import clip_interval, holm
from benchmarks.run.variants import variant_name, with_variant
from test_report import report_cli, write_run
from test_report_stats import LABELS, correctness, run

BCCL = {0: 60.0, 1: 62.0, 2: 61.0}
CE = {0: 52.0, 1: 50.0, 2: 53.0}
PACO = {0: 10.0, 1: 90.0}
RIGHT_BCCL = {s: correctness(a, 10 + s) for s, a in BCCL.items()}
RIGHT_CE = {s: correctness(a, 20 + s) for s, a in CE.items()}


def set_metrics(folder: Path, which: str, **values) -> None:
    path = folder / "metrics.json"
    metrics = json.loads(path.read_text())
    metrics[which].update(values)
    path.write_text(json.dumps(metrics))


def make_tree(root: Path) -> dict[str, Path]:
    """cifar100 IF100 (100 classes): bccl and ce, 3 seeds each with predictions (bccl with top-5),
    paco 2 seeds (10, 90) without, a failed ce seed. cifar10 IF100, one seed each: ce with good
    predictions, bccl with NaN confidences, paco without a file; a ce variant lr=1.0 of seed 0."""
    folders = {}
    for seed, best in BCCL.items():
        folders[f"bccl{seed}"] = run(root, "bccl", "cifar100", seed, best, right=RIGHT_BCCL[seed])
        set_metrics(folders[f"bccl{seed}"], "best", top5=90.0 + seed)
    for seed, best in CE.items():
        folders[f"ce{seed}"] = run(root, "ce", "cifar100", seed, best, right=RIGHT_CE[seed])
    for seed, best in PACO.items():
        run(root, "paco", "cifar100", seed, best)
    write_run(root, resolve_config("ce", "cifar100", 100, 5), status="failed: RuntimeError: boom", history_epochs=2)
    folders["ce10"] = run(root, "ce", "cifar10", 0, 55.0, right=correctness(55.0, 3))
    folders["bccl10"] = run(root, "bccl", "cifar10", 0, 60.0, right=correctness(60.0, 4))
    with np.load(folders["bccl10"] / "predictions.npz") as npz:
        data = {k: npz[k] for k in npz.files}
    data["best_confidences"] = data["best_confidences"].astype(np.float32)
    data["best_confidences"][5] = np.nan
    np.savez_compressed(folders["bccl10"] / "predictions.npz", **data)
    folders["paco10"] = run(root, "paco", "cifar10", 0, 50.0)
    variant = with_variant(resolve_config("ce", "cifar10", 100, 0, overrides={"lr": 1.0}))
    folders["ce10_lr"] = write_run(root, variant, best=40.0, variant=variant_name(variant))
    return folders


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    folders = make_tree(root)
    out = tmp_path_factory.mktemp("reports")
    return root, folders, build_report(root, out), out


def rows(report, label, a=None, b=None, test=None, kind="methods"):
    c = report.comparisons
    c = c[(c["dataset_label"] == label) & (c["kind"] == kind)]
    if a is not None:
        c = c[(c["a_method"] == a) & (c["b_method"] == b)]
    if test is not None:
        c = c[c["test"] == test]
    return c


# ----------------------------------------------------------------------------- Holm, wins, seed-matched

def holm_by_definition(p):
    """Holm's adjusted p straight from its definition: p_(i) -> max_{j <= i} min(1, (m - j + 1) p_(j))."""
    p = list(p)
    finite = sorted((v, i) for i, v in enumerate(p) if v == v)
    m, out = len(finite), [float("nan")] * len(p)
    for rank, (_, index) in enumerate(finite):
        out[index] = max(min(1.0, (m - j) * finite[j][0]) for j in range(rank + 1))
    return out


def test_holm_by_hand_and_by_definition():
    assert holm([0.01, 0.04, 0.03, np.nan]) == pytest.approx([0.03, 0.06, 0.06, np.nan], nan_ok=True)
    p = np.random.default_rng(0).uniform(0, 0.2, 9)
    assert holm(p) == pytest.approx(holm_by_definition(p))
    assert np.isnan(holm([np.nan])).all() and len(holm([])) == 0


def test_p_holm_within_each_family_and_significance_at_the_adjusted_level(tree):
    report, out = tree[2], tree[3]
    welch_rows = rows(report, "cifar100", test=WELCH)
    assert len(welch_rows) == 3  # bccl-paco, bccl-ce, paco-ce
    expected = holm_by_definition(welch_rows["p"])
    assert list(welch_rows["p_holm"]) == pytest.approx(expected)
    assert list(welch_rows["significant"]) == [p < 0.05 for p in expected]
    csv = pd.read_csv(out / "comparisons.csv")
    assert {"p", "p_holm"} <= set(csv.columns)
    md = (out / "report.md").read_text()
    header = next(line for line in md.split("## Comparisons — cifar100, IF 100")[1].splitlines()
                  if line.startswith("| a |"))
    assert "| p | p (Holm) | sig. |" in header


def test_wins_ties_losses_at_the_adjusted_level(tree):
    report, out = tree[2], tree[3]
    welch_rows = rows(report, "cifar100", test=WELCH)
    expected = {m: [0, 0, 0] for m in ("bccl", "paco", "ce")}
    for r in welch_rows.itertuples():
        if r.p_holm < 0.05:
            expected[r.a_method if r.diff > 0 else r.b_method][0] += 1
            expected[r.b_method if r.diff > 0 else r.a_method][2] += 1
        else:
            expected[r.a_method][1] += 1
            expected[r.b_method][1] += 1
    wins = pd.read_csv(out / "wins.csv")
    got = {r.method: [r.wins, r.ties, r.losses] for r in wins[wins["dataset_label"] == "cifar100"].itertuples()}
    assert got == expected == {"bccl": [1, 1, 0], "paco": [0, 2, 0], "ce": [0, 1, 1]}
    md = (out / "report.md").read_text()
    assert "## Wins / ties / losses — cifar100, IF 100" in md


def test_seed_matched_paired_test_pools_discordant_images_over_seed_pairs(tree):
    row = rows(tree[2], "cifar100", "bccl", "ce", test=SEED_MATCHED)
    assert len(row) == 1
    row = row.iloc[0]
    only_a = sum(int(np.count_nonzero(RIGHT_BCCL[s] & ~RIGHT_CE[s])) for s in BCCL)
    only_b = sum(int(np.count_nonzero(~RIGHT_BCCL[s] & RIGHT_CE[s])) for s in BCCL)
    assert row["p"] == pytest.approx(st.binomtest(only_a, only_a + only_b, 0.5).pvalue)
    assert row["diff"] == pytest.approx(np.mean([BCCL[s] - CE[s] for s in BCCL]))
    assert row["low"] < row["diff"] < row["high"] and (row["n_a"], row["n_b"]) == (3, 3)
    # its own family: a single test, Holm leaves it as it is
    assert row["p_holm"] == pytest.approx(row["p"])
    # no predictions on paco's side: a note instead of a test
    paco = rows(tree[2], "cifar100", "bccl", "paco", test=SEED_MATCHED).iloc[0]
    assert np.isnan(paco["p"]) and "no predictions.npz in" in paco["note"] and (paco["n_a"], paco["n_b"]) == (2, 2)


def test_intervals_are_clipped_to_the_range_of_an_accuracy(tree):
    summary = tree[2].summary
    paco = summary[(summary["dataset_label"] == "cifar100") & (summary["method"] == "paco")].iloc[0]
    low, high = st.t.interval(0.95, 1, loc=50.0, scale=st.sem(list(PACO.values())))
    assert low < -100 and high > 200  # what the unclipped interval would promise
    assert (paco["best_top1_ci_low"], paco["best_top1_ci_high"]) == (0.0, 100.0)
    assert clip_interval(-3.0, 40.0) == (0.0, 40.0) and clip_interval(-120.0, 5.0, -100.0, 100.0) == (-100.0, 5.0)
    assert all(np.isnan(clip_interval(np.nan, np.nan)))
    c = tree[2].comparisons
    assert (c["low"].dropna() >= -100).all() and (c["high"].dropna() <= 100).all()


def test_top5_shown_from_100_classes_and_na_for_runs_without_it(tree):
    summary, out = tree[2].summary, tree[3]
    bccl = summary[(summary["dataset_label"] == "cifar100") & (summary["method"] == "bccl")].iloc[0]
    assert bccl["best_top5_mean"] == pytest.approx(np.mean([90.0, 91.0, 92.0]))
    md = (out / "report.md").read_text()
    cell100 = md.split("## cifar100, IF 100")[1].split("\n## ")[0]
    header = next(line for line in cell100.splitlines() if line.startswith("| method "))
    assert "| top-5 |" in header
    ce = next(line for line in cell100.splitlines() if line.startswith("| ce "))
    assert "| 91.00 |" in next(line for line in cell100.splitlines() if line.startswith("| bccl "))
    assert ce.split(" | ")[header.split(" | ").index("top-5")] == "n/a"  # written before top-5 was recorded
    cell10 = md.split("## cifar10, IF 100")[1].split("\n## ")[0]
    assert "top-5" not in cell10  # 10 classes: top-5 says little


def test_top5_recorded_at_evaluation():
    import torch

    from benchmarks.train.evaluation import EvalOutputs, _predict_batch, evaluation_metrics, top5_accuracy
    from benchmarks.train.training import epoch_summary

    logits = torch.randn(64, 12, generator=torch.Generator().manual_seed(0))
    labels = np.random.default_rng(1).integers(0, 12, 64)
    both = _predict_batch(logits).numpy()
    top = np.argsort(-logits.numpy(), axis=1)[:, :5]
    assert (np.sort(both[:, 2:], axis=1) == np.sort(top, axis=1)).all()
    expected = 100.0 * np.mean([label in row for label, row in zip(labels, top)])
    assert top5_accuracy(both[:, 2:].astype(int), labels) == pytest.approx(expected)
    outputs = EvalOutputs(both[:, 0].astype(int), both[:, 1].astype(np.float32), both[:, 2:].astype(int))
    metrics = evaluation_metrics(outputs, labels, [10] * 12)
    assert metrics["top5"] == pytest.approx(expected)
    assert epoch_summary(metrics, 3)["top5"] == pytest.approx(expected)
    old = evaluation_metrics(EvalOutputs(outputs.predictions, outputs.confidences), labels, [10] * 12)
    assert "top5" not in epoch_summary(old, 3)


# ----------------------------------------------------------------------------- predictions.npz checked

def test_a_bad_predictions_file_is_a_note_never_a_test(tree):
    report = tree[2]
    bad = rows(report, "cifar10", "bccl", "ce").iloc[0]
    assert np.isnan(bad["p"]) and np.isnan(bad["low"]) and "bccl/seed0/predictions.npz" in bad["note"]
    assert "confidences must be finite" in bad["note"]
    missing = rows(report, "cifar10", "bccl", "paco").iloc[0]
    assert "no predictions.npz in" in missing["note"] and "paco/seed0" in missing["note"]


def _rewrite(folder: Path, **fields) -> None:
    with np.load(folder / "predictions.npz") as npz:
        data = {k: npz[k] for k in npz.files}
    data.update(fields)
    for key in [k for k, v in fields.items() if v is None]:
        del data[key]
    np.savez_compressed(folder / "predictions.npz", **data)


BAD_FIELDS = {
    "a class outside the range": ({"best_predictions": np.full(len(LABELS), 150, np.int16)}, "outside [0, 100)"),
    "a confidence above 1": ({"best_confidences": np.full(len(LABELS), 1.5, np.float16)}, "probabilities in [0, 1]"),
    "float labels": ({"labels": LABELS.astype(np.float32)}, "labels must be a 1-d integer array"),
    "2-d predictions": ({"best_predictions": np.zeros((len(LABELS), 2), np.int16)}, "1-d integer array"),
    "a short prediction array": ({"best_predictions": np.zeros(3, np.int16)}, "3 values for 400 labels"),
    "a numeric fingerprint": ({"fingerprint": np.array(7)}, "fingerprint must be a string"),
    "a float epoch": ({"best_epoch": np.array(1.5)}, "best_epoch must be a 0-d integer"),
    "confidences without predictions": ({"best_predictions": None}, "must come together"),
    "another format": ({"format": np.array(9)}, "format must be 1"),
}


@pytest.mark.parametrize("case", list(BAD_FIELDS))
def test_every_field_of_predictions_is_checked(tmp_path, case):
    fields, message = BAD_FIELDS[case]
    folder = run(tmp_path, "ce", "cifar100", 0, 52.0, right=RIGHT_CE[0])
    from benchmarks.reporting.load import load_run

    assert run_predictions(pd.Series(load_run(folder)))[1] == ""
    _rewrite(folder, **fields)
    kept, note = run_predictions(pd.Series(load_run(folder)))
    assert kept is None and message in note, note


def test_predictions_contradicting_metrics_are_not_used(tmp_path):
    from benchmarks.reporting.load import load_run

    folder = run(tmp_path, "ce", "cifar100", 0, 52.0, right=RIGHT_CE[0])
    set_metrics(folder, "best", top1=57.0)
    kept, note = run_predictions(pd.Series(load_run(folder)))
    assert kept is None and "contradicts metrics.json's 57.00" in note
    set_metrics(folder, "best", top1=52.0, epoch=1)
    kept, note = run_predictions(pd.Series(load_run(folder)))
    assert kept is None and "is not metrics.json's 1" in note
    (folder / "predictions.npz").write_bytes(b"garbage")
    assert "is damaged" in run_predictions(pd.Series(load_run(folder)))[1]


def test_a_report_over_bad_files_of_every_kind_never_crashes(tmp_path):
    for i, (fields, _) in enumerate(BAD_FIELDS.values()):
        a = run(tmp_path / f"r{i}", "bccl", "cifar100", 0, BCCL[0], right=RIGHT_BCCL[0])
        run(tmp_path / f"r{i}", "ce", "cifar100", 0, CE[0], right=RIGHT_CE[0])
        _rewrite(a, **fields)
        report = build_report(tmp_path / f"r{i}", tmp_path / f"out{i}", formats=["csv"], plots=False)
        row = report.comparisons.iloc[0]
        assert np.isnan(row["p"]) and "bccl/seed0/predictions.npz" in row["note"]


# ----------------------------------------------------------------------------- recipe diff, plots

def test_recipe_diff_has_one_row_per_run_folder_with_its_variant(tree):
    out = tree[3]
    diff = pd.read_csv(out / "recipe_diff.csv", keep_default_na=False)
    ce10 = diff[(diff["dataset_label"] == "cifar10") & (diff["method"] == "ce") & (diff["seed"] == 0)]
    assert ce10["folder"].nunique() == 2
    lr = ce10[ce10["key"] == "lr"].iloc[0]
    assert (lr["run"], lr["paper"], lr["variant"]) == ("1", "0.1", "lr 1≠0.1")  # a whole number as an integer
    md = (out / "report.md").read_text().split("## Recipe differences per run")[1]
    lines = [line for line in md.splitlines() if line.startswith("| cifar10 IF 100 ce seed 0 ")]
    assert len(lines) == 2
    assert any("| lr 1≠0.1 |" in line and "lr 1≠0.1 |" in line for line in lines)
    assert any("| recipe |" in line for line in lines)


def test_sensitivity_marks_the_best_value(tree):
    s = tree[2].sensitivity
    lr = s[(s["dataset_label"] == "cifar10") & (s["method"] == "ce")]
    assert list(lr["value"]) == [0.1, 1.0] and list(lr["best"]) == [True, False]  # 55.0 > 40.0
    assert "0.1 (recipe) (best)" in (tree[3] / "report.md").read_text()


def test_legends_name_the_differing_keys_in_distinct_colours(tree):
    from benchmarks.reporting.plots import line_styles

    report = tree[2]
    done = report.runs[report.runs["state"] == "done"]
    cell = report.summary[report.summary["dataset_label"] == "cifar10"]
    styles = line_styles(cell, done)
    labels = {key[0] + "|" + key[1]: label for key, (label, _) in styles.items()}
    assert labels["ce|"] == "ce lr=recipe" and labels["ce|lr 1≠0.1"] == "ce lr=1"
    assert labels["bccl|"] == "bccl"
    colours = [colour for _, colour in styles.values()]
    assert len(set(colours)) == len(colours)


def test_leaderboard_in_html_sorted_by_best_top1_with_shift_hook(tree):
    html = (tree[3] / "report.html").read_text()
    board = html.split("Leaderboard — cifar100, IF 100")[1].split("</table>")[0]
    order = [m for m in ("bccl", "paco", "ce") if f"<td>{m}</td>" in board]
    positions = sorted(order, key=lambda m: board.index(f"<td>{m}</td>"))
    assert positions == ["bccl", "ce", "paco"]  # 61.0, 51.67, 50.0
    assert "shift (mean top-1)" in board and "cost (train s)" in board and "<td>12.5</td>" in board
    assert "Leaderboard" not in (tree[3] / "report.md").read_text()  # an HTML view


def test_no_heatmap_without_any_paper_number(tmp_path):
    run(tmp_path / "r", "paco", "cifar10", 0, 50.0)
    report = build_report(tmp_path / "r", tmp_path / "out")
    assert report.summary["paper_top1"].isna().all()
    assert not (tmp_path / "out" / "plots" / "diff_heatmap.png").exists()
    assert "diff_heatmap" not in (tmp_path / "out" / "report.md").read_text()


# ----------------------------------------------------------------------------- --from-csv

TABLES = ("summary.csv", "comparisons.csv", "recipe_diff.csv", "sensitivity.csv", "wins.csv", "per_class.csv")


def test_from_csv_renders_the_same_tables_without_run_folders(tmp_path):
    make_tree(tmp_path / "results")
    first = build_report(tmp_path / "results", tmp_path / "a", plots=False)
    kept = tmp_path / "kept"
    kept.mkdir()
    for name in ("runs.csv", "per_class.csv", "comparisons.csv"):
        shutil.copy(tmp_path / "a" / name, kept / name)
    shutil.rmtree(tmp_path / "results")  # nothing of the run folders is left
    again = build_report_from_csv(kept / "runs.csv", tmp_path / "b", plots=False)
    skip_header = lambda text: text.split("\n", 3)[3]  # noqa: E731  (the header names the source)
    assert skip_header(again.markdown) == skip_header(first.markdown)
    assert "3/200" not in again.markdown and "2/200" in again.markdown  # the failed run's epochs, kept
    for name in TABLES + ("report.tex",):
        a, b = (tmp_path / "a" / name).read_text(), (tmp_path / "b" / name).read_text()
        if name == "report.tex":
            a, b = a.split("subsection", 1)[1], b.split("subsection", 1)[1]
        assert a == b, name
    # the image-level tests came from comparisons.csv: same numbers, without predictions.npz
    assert (again.comparisons["test"] == SEED_MATCHED).sum() == 3  # bccl-paco, bccl-ce, paco-ce (notes)


def test_from_csv_command_draws_the_plots_it_can(tmp_path, capsys):
    make_tree(tmp_path / "results")
    assert report_cli.main(["--results-dir", str(tmp_path / "results"), "--out", str(tmp_path / "a")]) == 0
    shutil.rmtree(tmp_path / "results")
    assert ltbench_main(["report", "--from-csv", str(tmp_path / "a" / "runs.csv"), "--out", str(tmp_path / "b")]) == 0
    plots = {p.name for p in (tmp_path / "b" / "plots").glob("*.png")}
    assert "per_class_cifar100_if100.png" in plots and "sensitivity_ce_lr_cifar10_if100.png" in plots
    assert not any(p.startswith("reliability_") for p in plots)  # needs predictions.npz
    # the training curves come back from the kept curves.csv, the same curves as from the folders
    assert {p for p in plots if p.startswith("curves_")} == {
        p.name for p in (tmp_path / "a" / "plots").glob("curves_*.png")} != set()
    first, again = (pd.read_csv(tmp_path / d / "curves.csv") for d in ("a", "b"))
    pd.testing.assert_frame_equal(first, again)
    (tmp_path / "k").mkdir()  # a kept summary without curves.csv (an older one): no curves, no crash
    shutil.copy(tmp_path / "a" / "runs.csv", tmp_path / "k" / "runs.csv")
    assert ltbench_main(["report", "--from-csv", str(tmp_path / "k" / "runs.csv"), "--out", str(tmp_path / "d")]) == 0
    assert not list((tmp_path / "d" / "plots").glob("curves_*.png"))
    capsys.readouterr()


def test_curves_csv_holds_every_finished_runs_history(tmp_path):
    make_tree(tmp_path / "results")
    report = build_report(tmp_path / "results", tmp_path / "a", plots=False, formats=["csv"])
    curves = pd.read_csv(tmp_path / "a" / "curves.csv")
    done = report.runs[report.runs["state"] == "done"]
    assert set(curves["folder"]) <= set(done["folder"])
    for folder in done["folder"]:
        history = pd.read_csv(Path(folder) / "history.csv")
        kept = curves[curves["folder"] == folder]
        assert kept["epoch"].tolist() == history["epoch"].tolist()
        assert kept["top1"].tolist() == pytest.approx(history["top1"].tolist())


@pytest.mark.parametrize("problem", ["missing", "not csv", "no columns", "bad json", "both sources"])
def test_from_csv_bad_input_is_one_line_exit_2(tmp_path, capsys, problem):
    path = tmp_path / "runs.csv"
    if problem == "not csv":
        path.write_bytes(b"\x00\xff\xfe" * 50)
    elif problem == "no columns":
        path.write_text("a,b\n1,2\n")
    elif problem == "bad json":
        make_tree(tmp_path / "results")
        build_report(tmp_path / "results", tmp_path / "a", formats=["csv"], plots=False)
        frame = pd.read_csv(tmp_path / "a" / "runs.csv")
        frame.loc[0, "config"] = "{not json"
        frame.to_csv(path, index=False)
    argv = ["--from-csv", str(path), "--out", str(tmp_path / "out")]
    if problem == "both sources":
        argv += ["--results-dir", str(tmp_path)]
    assert report_cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert ("not allowed with" in err) if problem == "both sources" else ("--from-csv" in err)
    assert not (tmp_path / "out").exists()
