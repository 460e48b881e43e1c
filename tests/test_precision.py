"""Under bf16 autocast, heads, classifiers and every loss still compute in float32."""

import contextlib

import torch

from baselines.bcl import balanced_contrastive_loss
from baselines.paco import paco_loss
from bccl.losses import centroid_loss, class_averaged_supcon
from benchmarks.train.models import CosineClassifier, LinearClassifier, projection_head


def bf16(fn):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return fn()


def test_losses_identical_with_and_without_bf16_autocast():
    g = torch.Generator().manual_seed(0)
    z = torch.nn.functional.normalize(torch.randn(16, 32, generator=g), dim=1)
    labels = torch.randint(0, 3, (8,), generator=g)
    centroids = torch.randn(3, 4, 32, generator=g)
    protos = torch.nn.functional.normalize(torch.randn(3, 32, generator=g), dim=1)
    q, k = z[:8], z[8:]
    queue = torch.nn.functional.normalize(torch.randn(10, 32, generator=g), dim=1)
    queue_labels = torch.randint(0, 3, (10,), generator=g)
    logits = torch.randn(8, 3, generator=g) * 10
    counts = torch.tensor([50, 10, 2])
    calls = [
        lambda: class_averaged_supcon(z, labels, 3, 0.1),
        lambda: centroid_loss(z, labels, centroids),
        lambda: balanced_contrastive_loss(z, labels, protos, 0.1),
        lambda: paco_loss(q, k, queue, labels, queue_labels, logits, counts, 0.01, 1.0, 1.0, 0.05),
    ]
    for call in calls:
        full, mixed = call(), bf16(call)
        assert mixed.dtype == torch.float32
        assert torch.equal(full, mixed)


def test_heads_and_classifiers_run_in_float32_under_autocast():
    torch.manual_seed(0)
    h = torch.randn(8, 64)
    for module in (CosineClassifier(64, 10), LinearClassifier(64, 10), projection_head(64, 32, 16).eval()):
        full, mixed = module(h), bf16(lambda: module(h))
        assert mixed.dtype == torch.float32 and torch.equal(full, mixed)


def test_cosine_classifier_init_norms():
    torch.manual_seed(0)
    unit = CosineClassifier(64, 100)
    assert torch.allclose(unit.weight.norm(dim=0), torch.ones(100))
    bccl = CosineClassifier(64, 100, init_max_norm=5.0)
    norms = bccl.weight.norm(dim=0)
    # uniform(-1, 1) columns of 64 have norm ~ sqrt(64/3) = 4.6, capped at 5
    assert norms.max() <= 5.0 + 1e-5 and 4.0 < norms.mean() < 5.0


def test_recipes_pick_the_released_classifier_init_and_batching():
    from benchmarks.config import resolve_config
    from benchmarks.train.methods import build_method

    config = resolve_config("bccl")
    method = build_method(config, 10, torch.tensor([100] * 10))
    assert method.classifier.weight.norm(dim=0).min() > 3.0  # renorm_(2, 1, 5), not unit columns
    assert resolve_config("bcl")["cosine_init_max_norm"] == 5.0  # docs/protocol.md: BCL's CIFAR cosine classifier
    assert resolve_config("bcl", dataset="imagenet_lt")["cosine_init_max_norm"] == 1.0  # official code
    assert resolve_config("ce")["drop_last"] is False  # LDAM-DRW keeps the last batch
    # linear classifiers: Kaiming-normal (LDAM-DRW) vs nn.Linear's uniform(+-1/sqrt(64)) init
    bound = 1 / 64 ** 0.5
    for method_name, dataset, default_init in [("ce", "cifar10", False), ("paco", "cifar10", True),
                                               ("ce", "imagenet_lt", True), ("ce", "inat2018", True)]:
        cfg = resolve_config(method_name, dataset=dataset) | {"backbone": "resnet32"}
        weight = build_method(cfg, 10, torch.tensor([100] * 10)).classifier.weight
        assert (weight.abs().max() <= bound).item() == default_init, (method_name, dataset)
    assert resolve_config("bccl")["drop_last"] is True


# ----------------------------------------------------------------------------- release precision, fp16 loss scaling

def test_amp_resolves_to_the_release_precision_on_cuda_and_fp32_on_cpu():
    from benchmarks.config import release_precision
    from benchmarks.train.precision import resolve_precision

    assert release_precision("bccl") == "fp16"
    assert [release_precision(m) for m in ("bcl", "paco", "ce")] == ["fp32"] * 3
    assert resolve_precision("auto", "fp16", "cuda") == "fp16"
    assert resolve_precision("auto", "fp16", "cpu") == "fp32"
    assert resolve_precision("auto", "fp32", "cuda") == "fp32"
    assert resolve_precision("bf16", "fp32", "cuda") == "bf16"  # the speed option
    assert resolve_precision("off", "fp16", "cuda") == "fp32"


def test_fp16_step_runs_heads_under_autocast_like_the_release_and_bf16_keeps_float32_islands():
    from benchmarks.train.precision import islands

    torch.manual_seed(0)
    module, h = CosineClassifier(64, 10), torch.randn(8, 64)
    with islands(False), torch.autocast("cpu", dtype=torch.float16):
        assert module(h).dtype == torch.float16  # what the BCCL release's autocast block computes
    with islands(True), torch.autocast("cpu", dtype=torch.bfloat16):
        assert module(h).dtype == torch.float32


def _fp16_trainer(tmp_path, monkeypatch, epochs=2):
    """A CE run with amp fp16 on the CPU: loss scaling on. fp16 convolutions on a CPU take minutes
    (no fast kernels), so the step's autocast is left out: the loss-scaling logic is what is
    tested here (what autocast computes is tested above)."""
    import contextlib

    from benchmarks.config import resolve_config
    from benchmarks.data.datasets import DatasetRequest, build_dataset
    from benchmarks.train.training import Execution, Trainer

    monkeypatch.setattr(Execution, "autocast", lambda self: contextlib.nullcontext())
    data = build_dataset("synthetic", DatasetRequest(imb_factor=10, train_cap_per_class=4, test_cap_per_class=2))
    config = resolve_config("ce", "synthetic", 10, 0, overrides={
        "epochs": epochs, "batch_size": 64, "warmup_epochs": 0, "pipeline": "reference", "amp": "fp16"})
    return Trainer(config, data, tmp_path, torch.device("cpu"), progress=False)


def test_fp16_loss_scaling_skips_an_overflowing_step_and_halves_the_scale(tmp_path, monkeypatch):
    """A fake overflow: the loss times 1e35 is finite, but scaled by 65,536 it is not, so every
    gradient is inf/NaN. The GradScaler must skip that step (parameters unchanged) and halve the
    scale; the next, clean step must update the parameters and keep the scale."""
    torch.set_num_threads(1)
    trainer = _fp16_trainer(tmp_path, monkeypatch)
    assert len(trainer.loader) == 1 and trainer.scaler.is_enabled()
    step = trainer.method.training_step
    trainer.method.training_step = lambda *a: {"loss": step(*a)["loss"] * 1e35}
    before = [p.detach().clone() for p in trainer.parameters]
    trainer.train_epoch(0)
    assert all(torch.equal(b, p) for b, p in zip(before, trainer.parameters))  # step skipped
    assert trainer.scaler.get_scale() == 65536.0 / 2
    trainer.method.training_step = step
    trainer.train_epoch(1)
    assert any(not torch.equal(b, p) for b, p in zip(before, trainer.parameters))  # a real step
    assert trainer.scaler.get_scale() == 32768.0  # grows only after 2,000 clean steps
    trainer.save_checkpoint(2)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert state["scaler"]["scale"] == 32768.0  # the scale is resumed, not reset
    resumed = _fp16_trainer(tmp_path, monkeypatch)
    assert resumed.load_checkpoint() and resumed.scaler.get_scale() == 32768.0


def test_precision_is_recorded_per_method_with_a_deviation_where_it_differs(tmp_path, monkeypatch):
    """On this CPU `amp: auto` trains in fp32: CE matches its release, BCCL (fp16 release) records
    the deviation; a fp16 BCCL run records none."""
    from benchmarks.config import resolve_config
    from benchmarks.train.precision import precision_deviation
    from benchmarks.train.training import Execution

    cpu = torch.device("cpu")
    for method, amp, run, deviation in (("ce", "auto", "fp32", None), ("bccl", "auto", "fp32", "fp16"),
                                        ("bccl", "fp16", "fp16", None), ("paco", "bf16", "bf16", "fp32")):
        ex = Execution.resolve(resolve_config(method, overrides={"amp": amp}), cpu)
        assert ex.precision == run and ex.fp32_islands == (run == "bf16")
        record = ex.record()
        assert record["run"] == run and "tf32_conv" in record
        expected = {} if deviation is None else {"precision": {"paper": deviation, "run": run}}
        assert precision_deviation(ex.precision, ex.release_precision) == expected
    metrics = _fp16_trainer(tmp_path / "fp16", monkeypatch, epochs=1).run()
    assert metrics["precision"]["run"] == "fp16" and metrics["deviations"]["precision"] == {"paper": "fp32", "run": "fp16"}


def test_evaluation_follows_the_release_where_it_evaluated_under_autocast(tmp_path, monkeypatch):
    """BCCL's release tests inside its fp16 autocast block: a BCCL run training in fp16 (its
    release precision) evaluates under fp16 autocast too; one training in another precision
    evaluates in fp32 and records the deviation `eval_precision`; a method whose release evaluated
    in fp32 (CE) evaluates in fp32 and records none."""
    from benchmarks.config import release_eval_precision, resolve_config
    from benchmarks.data.datasets import DatasetRequest, build_dataset
    from benchmarks.train import precision
    from benchmarks.train.training import Execution, Trainer

    assert release_eval_precision("bccl") == "fp16" and release_eval_precision("ce") == "fp32"
    cpu = torch.device("cpu")
    for method, amp, evaluated in (("bccl", "fp16", "fp16"), ("bccl", "auto", "fp32"), ("bccl", "bf16", "fp32"),
                                   ("ce", "fp16", "fp32")):
        ex = Execution.resolve(resolve_config(method, overrides={"amp": amp}), cpu)
        assert (ex.eval_precision, ex.record()["eval"]) == (evaluated, evaluated)
        with ex.eval_autocast():
            assert torch.is_autocast_enabled("cpu") == (evaluated != "fp32")
            if evaluated == "fp16":
                assert torch.get_autocast_dtype("cpu") == torch.float16 and not precision.islands_enabled()
    seen = []
    monkeypatch.setattr(Execution, "autocast", lambda self: contextlib.nullcontext())  # fp16 training: slow on CPU
    data = build_dataset("synthetic", DatasetRequest(imb_factor=10, train_cap_per_class=4, test_cap_per_class=2))
    for method, amp, deviation in (("bccl", "auto", {"paper": "fp16", "run": "fp32"}), ("bccl", "fp16", None),
                                   ("ce", "auto", None)):
        config = resolve_config(method, "synthetic", 10, 0, overrides={
            "epochs": 1, "batch_size": 16, "warmup_epochs": 0, "pipeline": "reference", "backbone": "resnet8",
            "amp": amp, **({"queue_size": 4} if method == "bccl" else {})})
        trainer = Trainer(config, data, tmp_path / f"{method}-{amp}", cpu, progress=False)
        logits = trainer.method.eval_logits
        trainer.method.eval_logits = lambda x: seen.append(torch.is_autocast_enabled("cpu")) or logits(x)
        metrics = trainer.run()
        assert metrics["deviations"].get("eval_precision") == deviation
        assert set(seen) == {trainer.ex.eval_precision == "fp16"}  # every test batch under it, or none
        seen.clear()


def test_runs_written_before_eval_precision_group_with_those_that_record_it():
    """A BCCL run written before evaluation followed the release (no `eval` in its precision
    record) evaluated in fp32: the report completes its deviations with eval_precision, so it
    lands in the same cell as a run that records it; CE's and newer records stay as written."""
    from benchmarks.reporting.recipe import recorded_deviations

    old = {"deviations": {"precision": {"paper": "fp16", "run": "bf16"}}, "precision": {"run": "bf16", "release": "fp16"}}
    new = {"deviations": {"precision": {"paper": "fp16", "run": "bf16"},
                          "eval_precision": {"paper": "fp16", "run": "fp32"}},
           "precision": {"run": "bf16", "release": "fp16", "eval": "fp32", "release_eval": "fp16"}}
    assert recorded_deviations(old, {"method": "bccl"}) == new["deviations"] == recorded_deviations(new, {"method": "bccl"})
    assert recorded_deviations({"deviations": {}, "precision": {"run": "fp32"}}, {"method": "ce"}) == {}
    assert recorded_deviations(None, {"method": "bccl"}) is None
