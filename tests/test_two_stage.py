"""Two-stage runs (a method that starts from a finished run of another, e.g. `crt` from `ce`):
ordering, the refusal when the stage-1 run is missing, the dry-run listing, --jobs and SLURM
order, the stage-1 checkpoint loaded (equal weights) and frozen, and the post-hoc methods'
formulas (tau_norm, la_posthoc) against hand-worked values."""

import hashlib
import json
import math
import re
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import run_benchmark
from benchmarks import LTBenchError
from benchmarks.run.grid import DataCache, GridOptions, plan
from benchmarks.store.results import read_status

SETS = ["train_cap_per_class=8", "test_cap_per_class=4"]
CELL = ["--datasets", "digits", "--imb-factors", "10", "--tiny", "--epochs", "1", "--no-progress", "--set", *SETS]


def cli(capsys, *args):
    code = run_benchmark.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def folder(results: Path, method: str) -> Path:
    """The method's run folder of the cell (its variant folder: --set makes these runs variants)."""
    found = [p for p in results.glob("digits-tiny*/if10/*/seed0") if p.parent.name.split("@")[0] == method]
    assert len(found) == 1, found
    return found[0]


def metrics(results: Path, method: str) -> dict:
    return json.loads((folder(results, method) / "metrics.json").read_text())


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One grid that lists the stage-2 methods before their stage 1: ce trains first."""
    results = tmp_path_factory.mktemp("two-stage") / "results"
    import io
    from contextlib import redirect_stdout

    out = io.StringIO()
    with redirect_stdout(out):
        code = run_benchmark.main([*CELL, "--methods", "tau_norm", "la_posthoc", "ce", "--results-dir", str(results)])
    assert code == 0, out.getvalue()
    return results, out.getvalue()


def test_the_grid_trains_the_stage1_run_first_and_names_its_checkpoint(trained):
    results, out = trained
    assert out.index("[1/3] digits IF10 ce") < out.index("[2/3] digits IF10 tau_norm") \
        < out.index("[3/3] digits IF10 la_posthoc")
    # tau_norm starts from the selected epoch (best.pt, as the Decoupling release), la_posthoc from
    # the final one (the logit-adjustment release adjusts the model it ends with)
    for method, file in (("tau_norm", "best.pt"), ("la_posthoc", "checkpoint.pt")):
        digest = hashlib.sha256((folder(results, "ce") / file).read_bytes()).hexdigest()
        record = metrics(results, method)["stage1"]
        assert record == {"method": "ce", "folder": str(folder(results, "ce").resolve()),
                          "checkpoint": file, "checkpoint_sha256": digest, "epochs_done": 1}
        assert metrics(results, method)["epochs"] == 0  # post-hoc: nothing trained
    assert metrics(results, "tau_norm")["posthoc"] == {"tau": 1.0, "tau_chosen_on": None}


def test_a_finished_posthoc_run_reads_as_done(trained):
    """Its history.csv holds its one evaluation as epoch 0 while metrics.json says epochs 0: that
    is whole (it was read as cut short, so the report listed every post-hoc run as incomplete)."""
    from benchmarks.reporting.load import load_runs
    from benchmarks.store.results import done_problem

    results, _ = trained
    for method in ("tau_norm", "la_posthoc"):
        assert done_problem(folder(results, method)) is None, method
    runs = load_runs(results)
    assert set(runs["state"]) == {"done"}, runs[["method", "state"]]


def test_the_stage1_weights_are_loaded_and_frozen(trained):
    from benchmarks.train.training import Trainer

    results, _ = trained
    ce_state = torch.load(folder(results, "ce") / "checkpoint.pt", weights_only=False)["method"]
    options = GridOptions(datasets=["digits"], methods=["la_posthoc", "tau_norm"], imb_factors=[10], seeds=[0],
                          epochs=1, tiny=True, results_dir=results, progress=False,
                          overrides={"train_cap_per_class": 8, "test_cap_per_class": 4})
    for run in plan(options):
        trainer = Trainer(run.config, DataCache(options).get(run.config), run.folder / "probe", torch.device("cpu"),
                          progress=False, stage1=run.stage1.folder)
        own = trainer.method.state_dict()
        loaded = [k for k in ce_state if k.startswith(("backbone.", "classifier."))]
        assert loaded and all(torch.equal(own[k], ce_state[k]) for k in loaded)
        assert not any(p.requires_grad for p in trainer.method.parameters())


def test_a_stage2_method_alone_without_its_stage1_run_is_refused(tmp_path, capsys):
    results = tmp_path / "results"
    code, out, err = cli(capsys, *CELL, "--methods", "la_posthoc", "--results-dir", str(results))
    assert code == 2
    assert err.startswith("error: digits IF10 la_posthoc") and "starts from the finished ce run of its cell" in err
    assert "--train-stage1" in err and err.count("\n") == 1
    assert not results.exists()  # nothing written


def test_dry_run_shows_the_dependency(trained, tmp_path, capsys):
    code, out, _ = cli(capsys, *CELL, "--methods", "la_posthoc", "--results-dir", str(tmp_path), "--dry-run",
                       "--train-stage1")
    assert code == 0 and "2 runs" in out
    lines = out.splitlines()
    assert lines[0].startswith("digits IF10 ce") and lines[1].startswith("digits IF10 la_posthoc")
    assert "after stage 1 digits IF10 ce" in lines[2] and "(trained first, in this grid): " + str(tmp_path) in lines[2]
    results, _ = trained
    code, out, _ = cli(capsys, *CELL, "--methods", "la_posthoc", "--results-dir", str(results), "--dry-run")
    assert code == 0 and f"(finished): {folder(results, 'ce')}" in out
    assert not any(tmp_path.iterdir())


def test_a_finished_stage1_run_on_disk_is_used_and_tau_chosen_on_test_is_a_recorded_deviation(trained, tmp_path,
                                                                                               capsys):
    results, _ = trained
    other = tmp_path / "results"
    ce = folder(results, "ce")
    shutil.copytree(ce, other / ce.relative_to(results))
    code, out, err = cli(capsys, *CELL, "tau_selection=test", "--methods", "tau_norm",
                         "--results-dir", str(other))
    assert code == 0, out + err
    m = metrics(other, "tau_norm")
    assert m["deviations"]["tau_selection"] == {"paper": "fixed", "run": "test"}
    posthoc = m["posthoc"]
    assert posthoc["tau_chosen_on"] == "test" and list(posthoc["sweep_top1"]) == [f"{t / 10:.1f}" for t in range(21)]
    assert posthoc["sweep_top1"][f"{posthoc['tau']:.1f}"] == max(posthoc["sweep_top1"].values()) == m["best"]["top1"]
    assert m["stage1"]["folder"] == str(folder(other, "ce").resolve())


def test_a_stage2_run_whose_stage1_failed_is_not_started(tmp_path, capsys, monkeypatch):
    from baselines.ce import CrossEntropy

    def poisoned(self, views, labels, epoch, step):  # ce fails with a non-finite loss at its first step
        return {"loss": F.cross_entropy(self.classifier(self.backbone(views[0])), labels) * float("inf")}

    monkeypatch.setattr(CrossEntropy, "training_step", poisoned)
    results = tmp_path / "results"
    code, out, _ = cli(capsys, *CELL, "--methods", "ce", "la_posthoc", "--results-dir", str(results))
    assert code == 1
    assert read_status(folder(results, "ce")).startswith("failed: NonFiniteLoss")
    assert "seed0: not started: its stage-1 run digits IF10 ce" in out and "is not finished" in out
    assert not list(results.glob("digits-tiny*/if10/la_posthoc*"))


def test_jobs_start_a_stage2_cell_only_after_its_stage1_cell(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    results = tmp_path / "results"
    code, out, err = cli(capsys, *CELL, "--methods", "la_posthoc", "ce", "--results-dir", str(results), "--jobs", "2")
    assert code == 0, out + err
    assert out.index("IF10 ce") < out.index("seed0: done") < out.index("IF10 la_posthoc")
    assert metrics(results, "la_posthoc")["stage1"]["folder"] == str(folder(results, "ce").resolve())


def test_slurm_holds_a_stage2_job_until_its_stage1_job_has_ended(tmp_path, monkeypatch):
    """sbatch is not here: a stand-in executor records what submitit would be asked."""
    pytest.importorskip("submitit")
    from benchmarks.run.launchers import Slurm, SlurmOptions

    class Job:
        def __init__(self, job_id):
            self.job_id = job_id

    submissions = []

    class Executor:
        def __init__(self):
            self.params = {}

        def update_parameters(self, **params):
            self.params.update(params)

        def batch(self):
            import contextlib

            return contextlib.nullcontext()

        def submit(self, job):
            submissions.append((Path(job.folder).parent.name.split("@")[0], self.params.get("slurm_dependency")))
            return Job(str(100 + len(submissions)))

    options = GridOptions(datasets=["digits"], methods=["la_posthoc", "tau_norm", "ce"],
                          imb_factors=[10], seeds=[0], results_dir=tmp_path)
    runs = plan(options)
    slurm = Slurm(SlurmOptions(cluster="local", wait=False), argv=[])
    slurm.options.cluster = "slurm"
    monkeypatch.setattr(slurm, "executor", Executor)
    outcomes = slurm.run(runs, options, log=lambda *a: None)
    assert submissions == [("ce", None), ("la_posthoc", "afterany:101"), ("tau_norm", "afterany:101")]
    assert [o.status for o in outcomes] == ["submitted (slurm job 101)", "submitted (slurm job 102)",
                                            "submitted (slurm job 103)"]


def test_tau_normalize_against_hand_worked_values():
    from baselines.decoupling import tau_normalize

    w = torch.tensor([[3.0, 4.0], [0.0, 2.0], [1.0, 0.0]])  # row norms 5, 2, 1
    assert torch.equal(tau_normalize(w, 0.0), w)
    assert torch.allclose(tau_normalize(w, 1.0), torch.tensor([[0.6, 0.8], [0.0, 1.0], [1.0, 0.0]]))
    half = torch.tensor([[3 / math.sqrt(5), 4 / math.sqrt(5)], [0.0, 2 / math.sqrt(2)], [1.0, 0.0]])
    assert torch.allclose(tau_normalize(w, 0.5), half)
    assert torch.allclose(tau_normalize(w, 2.0), torch.tensor([[0.12, 0.16], [0.0, 0.5], [1.0, 0.0]]))


def test_posthoc_logit_adjustment_against_hand_worked_values():
    from baselines.la_posthoc import posthoc_adjustment

    # counts 3 and 1: pi = 0.75, 0.25; the release subtracts log(pi^tau + 1e-12)
    assert torch.allclose(posthoc_adjustment([3, 1], 1.0), torch.tensor([math.log(0.75), math.log(0.25)]))
    assert torch.allclose(posthoc_adjustment(torch.tensor([3, 1]), 2.0),
                          torch.tensor([math.log(0.5625), math.log(0.0625)]))
    logits = torch.tensor([[2.0, 1.0]])  # CE would say class 0; adjusted: 2 - log .75 = 2.29 < 1 - log .25 = 2.39
    assert (logits - posthoc_adjustment([3, 1], 1.0)).argmax().item() == 1


def test_a_post_hoc_method_refuses_epochs(tmp_path, capsys):
    code, _, err = cli(capsys, *CELL, "epochs=3", "--methods", "tau_norm", "--results-dir", str(tmp_path),
                       "--train-stage1")
    assert code == 2 and "tau_norm is post-hoc and trains nothing: epochs must be 0, got 1" in err  # --epochs wins over --set


def test_zero_epoch_post_hoc_runs_count_as_done_for_the_runner_and_the_report(tmp_path, capsys):
    """The smoke grid's machinery end to end: a post-hoc run (`epochs: 0`, one history row for its
    one evaluation) is done for the runner (a rerun skips it), the resume check and the report."""
    import report
    from benchmarks.reporting.load import load_runs

    results, reports = tmp_path / "results", tmp_path / "reports"
    args = ["--grid", "smoke", *CELL, "--methods", "ce", "tau_norm", "la_posthoc", "--results-dir", str(results)]
    code, out, err = cli(capsys, *args)
    assert code == 0, out + err
    runs = load_runs(results)
    assert sorted(runs["method"]) == ["ce", "la_posthoc", "tau_norm"]
    assert (runs["state"] == "done").all(), runs[["method", "state", "reason"]].to_string()
    code, out, err = cli(capsys, *args)
    assert code == 0 and "trained 0, skipped (done) 3," in out, out + err
    assert report.main(["--results-dir", str(results), "--out", str(reports), "--formats", "md",
                        "--no-plots"]) == 0
    assert "3 done, 0 not finished" in capsys.readouterr().out


def test_the_stage1_run_is_the_same_whichever_methods_the_command_line_lists(tmp_path, capsys):
    """One rule: the stage-1 run is the one the same command line trains for the stage-1 method
    (its --set keys that the stage-1 method has; a stage-2 method's own options are its own)."""
    common = [*CELL, "batch_size=16", "--results-dir", str(tmp_path), "--dry-run"]
    code, out, err = cli(capsys, *common, "--methods", "ce", "tau_norm")
    assert code == 0, err
    together = re.search(r"after stage 1 digits IF10 ce\S* seed0 \(trained first, in this grid\): (\S+)", out).group(1)
    assert "batch_size=16" in together
    code, out, err = cli(capsys, *common, "--methods", "tau_norm", "--train-stage1", "--set", "tau=0.5")
    assert code == 0, err
    alone = re.search(r"after stage 1 digits IF10 ce\S* seed0 \(trained first, in this grid\): (\S+)", out).group(1)
    assert alone == together
    assert not any(tmp_path.iterdir())


def test_a_results_dir_that_is_a_file_is_named_so_also_through_a_two_stage_method(tmp_path, capsys):
    results = tmp_path / "results"
    results.write_text("not a folder\n")
    code, _, err = cli(capsys, *CELL, "--methods", "tau_norm", "--results-dir", str(results))
    assert code == 2 and err == f"error: results dir {results} is a file, not a folder\n"
    assert results.read_text() == "not a folder\n"
