"""The single-stage baselines (ce_drw, ldam_drw, focal, cb_focal, balanced_softmax, logit_adjust):
each loss against hand-worked values, the class-balanced weights, the DRW switch at the right
epoch inside the generic loop, each method's step equal to its public loss, and the recipes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from baselines.balanced_softmax import balanced_softmax_loss
from baselines.focal import focal_loss
from baselines.ldam import ldam_loss, ldam_margins
from baselines.reweighting import class_balanced_weights
from benchmarks import LTBenchError
from benchmarks.config import resolve_config
from benchmarks.data.datasets import DatasetRequest, build_dataset
from benchmarks.train.losses import logit_adjusted_ce
from benchmarks.train.methods import build_method
from benchmarks.train.training import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


NEW_METHODS = ("ce_drw", "ldam_drw", "focal", "cb_focal", "balanced_softmax", "logit_adjust")


# -- class-balanced weights ------------------------------------------------------------------------
def test_class_balanced_weights_by_hand():
    # beta 0.5, n = (2, 1): (1 - b) / (1 - b^n) = (0.5 / 0.75, 0.5 / 0.5) = (2/3, 1); sum 5/3 -> x 2 / (5/3)
    weights = class_balanced_weights([2, 1], 0.5)
    assert weights.dtype == torch.float32 and weights.shape == (2,)
    assert torch.allclose(weights, torch.tensor([0.8, 1.2]), atol=1e-7)
    assert torch.equal(class_balanced_weights(torch.tensor([5000, 50, 1]), 0.0), torch.ones(3))
    cifar = class_balanced_weights([5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50], 0.9999)
    assert math.isclose(float(cifar.sum()), 10.0, rel_tol=1e-6) and (cifar[1:] > cifar[:-1]).all()
    # n = 1 at beta 0.9999: effective number exactly 1 - 0.9999 = 1e-4 -> raw weight 1
    assert torch.allclose(class_balanced_weights([1, 1], 0.9999), torch.ones(2))


def test_class_balanced_weights_refuse_empty_classes_and_bad_beta():
    with pytest.raises(ValueError, match="class count >= 1"):
        class_balanced_weights([3, 0], 0.9)
    with pytest.raises(ValueError, match=r"beta must be in \[0, 1\)"):
        class_balanced_weights([3, 1], 1.0)


# -- losses by hand --------------------------------------------------------------------------------
def test_focal_loss_by_hand():
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    labels = torch.tensor([0, 0])
    ln2, ln43 = math.log(2), math.log(4 / 3)  # CE of p = 1/2 and p = 3/4
    assert torch.allclose(focal_loss(logits[:1], labels[:1], 0.0), torch.tensor(ln2))
    assert torch.allclose(focal_loss(logits[:1], labels[:1], 2.0), torch.tensor(0.25 * ln2))
    assert torch.allclose(focal_loss(logits, labels, 1.0), torch.tensor((0.5 * ln2 + 0.25 * ln43) / 2))
    # weighted as the release: CE_i = w_y * CE, p_i = exp(-CE_i) (0.25 and 0.5625), plain batch mean
    weighted = focal_loss(logits, labels, 1.0, weight=torch.tensor([2.0, 1.0]))
    expected = ((1 - 0.25) * 2 * ln2 + (1 - 0.5625) * 2 * ln43) / 2
    assert torch.allclose(weighted, torch.tensor(expected), atol=1e-6)


def test_ldam_margins_and_loss_by_hand():
    assert torch.allclose(ldam_margins([16, 1], 0.5), torch.tensor([0.25, 0.5]))  # 16^-1/4 = 0.5, scaled to max 0.5
    logits = torch.tensor([[0.5, 0.2], [0.1, 0.6]])  # cosines
    labels = torch.tensor([0, 1])
    # sample 0: (0.5 - 0.25, 0.2) * 30 = (7.5, 6): CE = log(1 + e^-1.5); sample 1: (0.1, 0.6 - 0.5) * 30: CE = ln 2
    ce0, ce1 = math.log(1 + math.exp(-1.5)), math.log(2)
    assert torch.allclose(ldam_loss(logits, labels, [16, 1]), torch.tensor((ce0 + ce1) / 2), atol=1e-6)
    assert torch.allclose(ldam_loss(logits, labels, torch.tensor([16, 1]), weight=torch.tensor([1.0, 3.0])),
                          torch.tensor((ce0 + 3 * ce1) / 4), atol=1e-6)  # weighted mean, as F.cross_entropy
    # margins only on the true class: the other logit keeps its value
    assert torch.allclose(ldam_loss(logits, labels, [1, 1], max_m=0.0, s=1.0), F.cross_entropy(logits, labels))


def test_balanced_softmax_and_logit_adjustment_by_hand():
    logits = torch.zeros(2, 2)
    labels = torch.tensor([1, 0])
    # logits + log n = (ln 3, 0): p = (3/4, 1/4)
    expected = (math.log(4) + math.log(4 / 3)) / 2
    assert torch.allclose(balanced_softmax_loss(logits, labels, [3, 1]), torch.tensor(expected))
    assert torch.allclose(balanced_softmax_loss(logits, labels, torch.tensor([3, 1])), torch.tensor(expected))
    prior = torch.log(torch.tensor([0.75, 0.25]))
    assert torch.allclose(logit_adjusted_ce(logits, labels, prior), torch.tensor(expected))  # shift-invariant
    # tau 2: softmax of (2 ln 3/4, 2 ln 1/4) is (9/10, 1/10)
    assert torch.allclose(logit_adjusted_ce(logits[:1], labels[:1], prior, tau=2.0), torch.tensor(math.log(10)))


# -- the methods -----------------------------------------------------------------------------------
COUNTS = torch.tensor([50, 20, 5, 1])


def method_and_batch(name: str, **overrides):
    torch.manual_seed(0)
    method = build_method(resolve_config(name, overrides=overrides), 4, COUNTS)
    images = torch.randn(6, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    return method, images, torch.tensor([0, 1, 2, 3, 3, 0])


@pytest.mark.parametrize("name", NEW_METHODS)
def test_each_methods_step_is_its_public_loss(name):
    method, images, labels = method_and_batch(name, reweight_epoch=1) if name in ("ce_drw", "ldam_drw", "cb_focal") \
        else method_and_batch(name)
    assert method.view_names() == (("autoaug_cutout",) if name == "balanced_softmax" else ("crop_flip",))
    for epoch in (0, 1):
        out = method.training_step([images], labels, epoch=epoch, step=0)
        with torch.no_grad():
            logits = method.classifier(method.backbone(images))
        cfg = method.config
        weight = class_balanced_weights(COUNTS, 0.9999) if cfg["reweight"] == "class_balanced" and epoch >= \
            cfg["reweight_epoch"] else (torch.ones(4) if cfg["reweight"] == "class_balanced" else None)
        expected = {
            "ce_drw": lambda: F.cross_entropy(logits, labels, weight=weight),
            "ldam_drw": lambda: ldam_loss(logits, labels, COUNTS, 0.5, 30.0, weight),
            "focal": lambda: focal_loss(logits, labels, 1.0, weight),
            "cb_focal": lambda: focal_loss(logits, labels, 1.0, weight),
            "balanced_softmax": lambda: balanced_softmax_loss(logits, labels, COUNTS),
            "logit_adjust": lambda: logit_adjusted_ce(logits, labels, torch.log(COUNTS / COUNTS.sum())),
        }[name]()
        assert torch.allclose(out["loss"], expected, atol=1e-6), (name, epoch)
        out["loss"].backward()
        assert all(p.grad is not None for p in method.classifier.parameters())


def test_ldam_uses_the_released_normed_classifier():
    method, images, _ = method_and_batch("ldam_drw")
    with torch.no_grad():
        logits = method.classifier(method.backbone(images))
    assert logits.abs().max() <= 1.0 + 1e-6  # the classifier gives cosines, unscaled: s lives in the loss
    assert torch.all(method.classifier.weight.norm(dim=0) <= 1.0 + 1e-5)


def test_drw_switches_at_the_drw_epoch_in_the_generic_loop(tmp_path):
    """The loop trains epochs 0, 1, 2; with reweight_epoch 2 the loss gets all-ones weights in
    epochs 0 and 1 and the class-balanced ones from epoch 2: no method code decides it."""
    data = build_dataset("digits", DatasetRequest(imb_factor=10, train_cap_per_class=13, test_cap_per_class=1))
    assert list(data.class_counts) == [13] * 9 + [12]  # unequal: the weights differ from ones
    config = resolve_config("ce_drw", "digits", 10, 0, overrides={
        "epochs": 3, "batch_size": 130, "warmup_epochs": 1, "reweight_epoch": 2, "pipeline": "reference"})
    trainer = Trainer(config, data, tmp_path, torch.device("cpu"), progress=False)
    seen: dict[int, torch.Tensor] = {}
    original = trainer.method.training_step

    def spy(views, labels, epoch, step):
        seen[epoch] = trainer.method.class_weights(epoch).clone()
        return original(views, labels, epoch, step)

    trainer.method.training_step = spy
    trainer.run()
    counts = torch.as_tensor(data.class_counts)
    assert torch.equal(seen[0], torch.ones(10)) and torch.equal(seen[1], torch.ones(10))
    assert torch.equal(seen[2], class_balanced_weights(counts, 0.9999))
    assert not torch.equal(seen[2], seen[1])


def test_recipes_follow_the_releases():
    for name in ("ce_drw", "ldam_drw", "focal", "cb_focal"):  # LDAM-DRW's cifar_train.py
        c = resolve_config(name)
        assert (c["epochs"], c["batch_size"], c["lr"], c["weight_decay"], c["drop_last"]) == (200, 128, 0.1, 2e-4, False)
        assert (c["lr_schedule"], c["warmup_epochs"], c["lr_steps"]) == ("warmup_step", 5, [[160, 0.01], [180, 0.0001]])
    assert [resolve_config(n)["reweight_epoch"] for n in ("ce_drw", "ldam_drw", "cb_focal")] == [160, 160, 0]
    assert resolve_config("ce_drw")["reweight"] == "class_balanced" and resolve_config("focal")["reweight"] == "none"
    assert resolve_config("ce_drw")["reweight_beta"] == 0.9999
    ldam = resolve_config("ldam_drw")
    assert (ldam["classifier"], ldam["cosine_scale"], ldam["ldam_max_m"], ldam["ldam_s"]) == ("cosine", 1.0, 0.5, 30.0)
    assert resolve_config("focal")["focal_gamma"] == resolve_config("cb_focal")["focal_gamma"] == 1.0
    la10, la100 = resolve_config("logit_adjust", "cifar10"), resolve_config("logit_adjust", "cifar100")
    assert (la10["epochs"], la10["warmup_epochs"], la10["nesterov"], la10["la_tau"]) == (1241, 20, True, 1.0)
    assert la100["lr_steps"] == [[691, 0.1], [1059, 0.01], [1290, 0.001]] and la100["epochs"] == 1419
    bs = resolve_config("balanced_softmax", "cifar100")
    assert (bs["batch_size"], bs["weight_decay"], bs["epochs"], bs["warmup_epochs"]) == (512, 5e-4, 591, 37)
    assert (bs["drop_last"], bs["lr_schedule"], bs["warmup_start_lr"]) == (True, "warmup_cosine_stepped_first", 0.05)


def test_reweighting_is_refused_for_a_method_that_ignores_weights():
    with pytest.raises(LTBenchError, match="method bccl takes no per-class loss weights"):
        resolve_config("bccl", overrides={"reweight": "class_balanced"})
    with pytest.raises(LTBenchError, match="unknown reweight 'effective'"):
        resolve_config("ce", overrides={"reweight": "effective"})
    with pytest.raises(LTBenchError, match="reweight_beta must be < 1"):
        resolve_config("ce_drw", overrides={"reweight_beta": 1.5})
    with pytest.raises(LTBenchError, match="ldam_s must be > 0"):
        resolve_config("ldam_drw", overrides={"ldam_s": 0})
    with pytest.raises(LTBenchError, match="focal_gamma must be >= 0"):
        resolve_config("cb_focal", overrides={"focal_gamma": -1})
    assert resolve_config("ce", overrides={"reweight": "class_balanced"})["reweight"] == "class_balanced"


def _lt_counts(num_classes: int, n_max: int, imb_factor: float) -> list[int]:
    """The LDAM-DRW CIFAR-LT profile (int(n_max * IF^(-i / (C - 1))))."""
    return [int(n_max * (1 / imb_factor) ** (i / (num_classes - 1))) for i in range(num_classes)]


@pytest.mark.parametrize("dataset, classes, n_max, steps, images", [
    ("cifar10", 10, 5000, 24, 12406), ("cifar100", 100, 500, 21, 10847)])
def test_balanced_softmax_has_the_releases_views_steps_and_warmup(dataset, classes, n_max, steps, images):
    """Issue 22 points 1-2: data/ImbalanceCIFAR.py's crop + flip + CIFAR10Policy + Cutout view, and
    run_networks.py's int(N / 512) steps per epoch (12,480 iterations on CIFAR-10-LT IF 100), the
    lr of utils.py CosineAnnealingLRWarmup stepped before each epoch (0.05 up to 0.1, cosine to 0)."""
    import numpy as np

    from benchmarks.data.loaders import ReferenceLoader
    from benchmarks.train.schedules import learning_rate

    config = resolve_config("balanced_softmax", dataset, 100)
    counts = _lt_counts(classes, n_max, 100)
    assert sum(counts) == images
    method = build_method(config, classes, counts)
    assert method.view_names() == ("autoaug_cutout",)
    tv = resolve_config("balanced_softmax", dataset, 100, overrides={"autoaugment_policy": "torchvision"})
    assert build_method(tv, classes, counts).view_names() == ("autoaug_cutout_tv",)
    labels = np.repeat(np.arange(classes), counts)
    loader = ReferenceLoader(np.zeros((images, 1, 1, 3), np.uint8), labels, ("test",), (0.5,) * 3, (0.5,) * 3,
                             config["batch_size"], config["drop_last"], torch.device("cpu"))
    assert len(loader) == images // 512 == steps
    batches = math.ceil(images / 512)  # the release's len(loader), which turns iterations into epochs
    assert config["epochs"] == math.ceil(13000 / batches) and config["warmup_epochs"] == math.ceil(800 / batches)
    if dataset == "cifar10":
        assert len(loader) * config["epochs"] == 12480
    w, e = config["warmup_epochs"], config["epochs"]
    assert learning_rate(0, config) == pytest.approx(0.05)
    assert learning_rate(w - 2, config) == pytest.approx(0.05 + 0.05 * (w - 2) / (w - 1))
    assert learning_rate(w - 1, config) == pytest.approx(0.1)
    assert learning_rate(w, config) == pytest.approx(0.05 * (1 + math.cos(math.pi / (e - w))))
    assert learning_rate(e - 1, config) == pytest.approx(0.0, abs=1e-12)


def test_a_schedule_that_needs_warmup_start_lr_is_refused_without_it():
    with pytest.raises(LTBenchError, match="needs the option warmup_start_lr"):
        resolve_config("ce", overrides={"lr_schedule": "warmup_cosine_stepped_first"})


def test_ldam_drw_confidences_come_from_the_scaled_cosines():
    """Issue 22 point 8: ECE from the logits the model predicts with, s * cos (s = 30), not from
    softmax of the raw cosines (which sit near 1 / C); the top-1 ranking is unchanged."""
    from benchmarks.train.evaluation import predict

    method, images, _ = method_and_batch("ldam_drw")
    method.eval()
    with torch.no_grad():
        cosines = method.classifier(method.backbone(images)).float()
        logits = method.eval_logits(images).float()
    assert torch.allclose(logits, 30.0 * cosines)
    out = predict(method.eval_logits, images, batch_size=4)
    expected = torch.softmax(30.0 * cosines, dim=1).max(dim=1)
    assert torch.equal(out[:, 0].long(), cosines.argmax(dim=1))
    assert torch.allclose(out[:, 1].float(), expected.values, atol=1e-6)
    assert not torch.allclose(out[:, 1].float(), torch.softmax(cosines, dim=1).max(dim=1).values)


def test_keras_momentum_is_the_logit_adjustment_releases_update():
    """Issue 22 point 5: Keras SGD (v <- m v - lr g; w <- w + m v - lr g) equals PyTorch's Nesterov
    SGD while the lr is constant and differs once it changes; logit_adjust's recipe uses Keras's."""
    from benchmarks.train.optimizers import KerasSGD

    assert resolve_config("logit_adjust")["momentum_form"] == "keras"
    assert resolve_config("ce")["momentum_form"] == "pytorch"
    with pytest.raises(LTBenchError, match="unknown momentum_form 'tf'"):
        resolve_config("ce", overrides={"momentum_form": "tf"})
    grads = [torch.tensor([1.0, -2.0]), torch.tensor([0.5, 0.5]), torch.tensor([-1.0, 3.0])]
    lrs = [0.1, 0.1, 0.01]

    def run(kind):
        w = torch.nn.Parameter(torch.tensor([1.0, 1.0]))
        opt = kind([w], lr=0.1, momentum=0.9, weight_decay=0.0, nesterov=True)
        out = []
        for g, lr in zip(grads, lrs):
            for group in opt.param_groups:
                group["lr"] = lr
            w.grad = g.clone()
            opt.step()
            out.append(w.detach().clone())
        return out

    keras, torch_sgd = run(KerasSGD), run(torch.optim.SGD)
    # by hand, Keras: v1 = -0.1 g1, w1 = w0 + 0.9 v1 - 0.1 g1; v2 = 0.9 v1 - 0.1 g2, ...
    w, v = torch.tensor([1.0, 1.0]), torch.zeros(2)
    for g, lr, got in zip(grads, lrs, keras):
        v = 0.9 * v - lr * g
        w = w + 0.9 * v - lr * g
        assert torch.allclose(got, w)
    assert torch.allclose(keras[1], torch_sgd[1])  # constant lr: the same update
    assert not torch.allclose(keras[2], torch_sgd[2])  # the lr changed: the forms part
