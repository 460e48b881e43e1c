"""BCL: the balanced contrastive loss against hand-worked values, and the method end to end.

Reference values are computed independently of `balanced_contrastive_loss`: a literal worked by
hand, and a naive per-anchor loop written straight from docs/methods/bcl.md's formula.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import baselines.bcl  # noqa: F401  (registers "bcl")
from baselines.bcl import BCL, balanced_contrastive_loss
from benchmarks.config import resolve_config
from benchmarks.train.methods import build_method


def naive_bcl(z, labels, prototypes, tau, prototype_positive=True, prototype_anchors=False):
    """docs/methods/bcl.md, literally: one anchor at a time, python loops over candidates.

    Candidates of anchor i: the other 2B - 1 views and the C prototypes. n'_c = count of class c
    among the 2B views + 1 (prototype), minus 1 for the anchor's class. D_i = sum_c (1 / n'_c)
    sum_{k in class c} exp(z_i . z_k / tau). L_i = -(1/|P_i|) sum_p (z_i . z_p / tau - log D_i).
    The two flags build deliberately wrong variants for the structural tests.
    """
    z = z.double()
    prototypes = prototypes.double()
    B = labels.shape[0]
    C = prototypes.shape[0]
    view_labels = [int(y) for y in labels] * 2
    feats = [z[j] for j in range(2 * B)] + [prototypes[c] for c in range(C)]
    feat_labels = view_labels + list(range(C))
    is_proto = [False] * (2 * B) + [True] * C
    n_anchors = 2 * B + (C if prototype_anchors else 0)
    losses = []
    for i in range(n_anchors):
        anchor, y_i = feats[i], feat_labels[i]
        count = {c: view_labels.count(c) + 1 for c in range(C)}
        count[y_i] -= 1
        denominator = 0.0
        positives = []
        for j in range(len(feats)):
            if j == i:
                continue
            s = float(anchor @ feats[j]) / tau
            denominator += math.exp(s) / count[feat_labels[j]]
            if feat_labels[j] == y_i and (prototype_positive or not is_proto[j]):
                positives.append(s)
        if not positives:
            continue
        log_d = math.log(denominator)
        losses.append(-sum(s - log_d for s in positives) / len(positives))
    return sum(losses) / len(losses)


def random_inputs(seed, B=6, C=4, D=8):
    g = torch.Generator().manual_seed(seed)
    z = F.normalize(torch.randn(2 * B, D, generator=g), dim=1)
    prototypes = F.normalize(torch.randn(C, D, generator=g), dim=1)
    labels = torch.randint(0, C, (B,), generator=g)
    return z, labels, prototypes


def test_hand_worked_literal():
    # B = 1 image of class 0, two views z1 = (1, 0), z2 = (0, 1); prototypes p0 = (1, 0),
    # p1 = (0, 1); tau = 1. Counts: class 0 = 2 views + 1 prototype = 3, class 1 = 0 + 1 = 1;
    # for an anchor of class 0: n'_0 = 2, n'_1 = 1.
    # z1: candidates z2 (s=0, class 0), p0 (s=1, class 0), p1 (s=0, class 1):
    #     D = (e^0 + e^1) / 2 + e^0 = (3 + e) / 2; positives z2, p0 -> L = log D - 1/2.
    # z2: candidates z1 (0), p0 (0), p1 (1): D = (1 + 1) / 2 + e = 1 + e;
    #     positives z1, p0 (both s = 0) -> L = log(1 + e).
    # mean = (log((3 + e) / 2) - 1/2 + log(1 + e)) / 2 = 0.93189144379...
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    prototypes = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0])
    loss = balanced_contrastive_loss(z, labels, prototypes, 1.0)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(0.9318914437934783, abs=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_matches_naive_loop(seed, tau):
    z, labels, prototypes = random_inputs(seed)
    loss = balanced_contrastive_loss(z, labels, prototypes, tau)
    assert loss.item() == pytest.approx(naive_bcl(z, labels, prototypes, tau), rel=1e-5)


def test_matches_naive_loop_all_one_class_and_absent_classes():
    # Every image in class 2 of 5: the other classes enter only through their prototypes.
    z, _, prototypes = random_inputs(3, B=4, C=5)
    labels = torch.full((4,), 2)
    loss = balanced_contrastive_loss(z, labels, prototypes, 0.1)
    assert loss.item() == pytest.approx(naive_bcl(z, labels, prototypes, 0.1), rel=1e-5)


def test_prototypes_are_positives_and_never_anchors():
    z, labels, prototypes = random_inputs(4)
    loss = balanced_contrastive_loss(z, labels, prototypes, 0.1).item()
    right = naive_bcl(z, labels, prototypes, 0.1)
    not_positive = naive_bcl(z, labels, prototypes, 0.1, prototype_positive=False)
    as_anchors = naive_bcl(z, labels, prototypes, 0.1, prototype_anchors=True)
    assert loss == pytest.approx(right, rel=1e-5)
    assert abs(loss - not_positive) > 1e-3
    assert abs(loss - as_anchors) > 1e-3


def test_prototype_gradient_only_through_view_anchors():
    # Prototypes are candidates (positives of their class, negatives of the others) but never
    # anchors: their gradient equals that of a per-anchor loop over the 2B views only.
    z, labels, prototypes = random_inputs(5, B=3, C=3, D=4)
    p = prototypes.clone().requires_grad_(True)
    balanced_contrastive_loss(z, labels, p, 0.5).backward()
    p_ref = prototypes.double().clone().requires_grad_(True)
    ref = _torch_reference(z.double(), labels, p_ref, 0.5)
    ref.backward()
    assert torch.allclose(p.grad.double(), p_ref.grad, atol=1e-5)
    assert (p.grad.abs().sum(dim=1) > 0).all()


def _torch_reference(z, labels, prototypes, tau):
    """Per-anchor loop (differentiable) from docs/methods/bcl.md, for gradient comparisons."""
    B, C = labels.shape[0], prototypes.shape[0]
    view_labels = labels.repeat(2).tolist()
    feats = torch.cat([z, prototypes])
    feat_labels = view_labels + list(range(C))
    total = 0.0
    for i in range(2 * B):
        count = {c: view_labels.count(c) + 1 for c in range(C)}
        count[view_labels[i]] -= 1
        terms, positives = [], []
        for j in range(2 * B + C):
            if j == i:
                continue
            s = z[i] @ feats[j] / tau
            terms.append(torch.exp(s) / count[feat_labels[j]])
            if feat_labels[j] == view_labels[i]:
                positives.append(s)
        log_d = torch.log(torch.stack(terms).sum())
        total = total - torch.stack([s - log_d for s in positives]).mean()
    return total / (2 * B)


def test_numerically_stable_at_small_temperature():
    z, labels, prototypes = random_inputs(6)
    loss = balanced_contrastive_loss(z, labels, prototypes, 0.01)
    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx(naive_bcl(z, labels, prototypes, 0.01), rel=1e-4)


def test_rejects_wrong_view_count():
    z, labels, prototypes = random_inputs(7)
    with pytest.raises(ValueError):
        balanced_contrastive_loss(z[:-1], labels, prototypes, 0.1)


# ----------------------------------------------------------------------------------------------
# The method
# ----------------------------------------------------------------------------------------------

def make_bcl(**overrides):
    torch.manual_seed(0)
    config = resolve_config("bcl", dataset="cifar10", overrides=overrides)
    counts = torch.tensor([50, 30, 20, 12, 8, 5, 4, 3, 2, 1])
    return build_method(config, 10, counts)


def test_recipe_values():
    config = resolve_config("bcl")
    assert (config["lambda_la"], config["mu_bcl"], config["temperature"]) == (2.0, 0.6, 0.1)
    assert config["classifier"] == "cosine"
    assert (config["lr"], config["batch_size"], config["epochs"], config["warmup_epochs"]) == (
        0.1, 128, 200, 5
    )
    assert (config["weight_decay"], config["lr_schedule"], config["lr_steps"]) == (
        2e-4, "warmup_step", [[160, 0.01], [180, 0.0001]]
    )
    assert (config["cosine_scale"], config["cosine_init_max_norm"], config["drop_last"]) == (
        pytest.approx(1 / 0.03), 5.0, False
    )
    assert config == resolve_config("bcl", dataset="cifar100") | {"dataset": "cifar10"}


def test_view_names_and_options():
    assert make_bcl().view_names() == ("crop_flip", "contrastive", "contrastive")
    method = make_bcl(cls_autoaug=True, contrastive_blur=True)
    assert method.view_names() == ("autoaug_cutout", "contrastive_blur", "contrastive_blur")


def test_module_shapes():
    method = make_bcl()
    assert isinstance(method, BCL)
    assert [m.out_features for m in (method.head[0], method.head[3])] == [512, 128]
    assert [m.out_features for m in (method.head_prototype[0], method.head_prototype[3])] == [512, 128]
    prototypes = method.prototypes()
    assert prototypes.shape == (10, 128)
    assert torch.allclose(prototypes.norm(dim=1), torch.ones(10), atol=1e-5)


def test_training_step_and_backward():
    method = make_bcl()
    method.train()
    g = torch.Generator().manual_seed(1)
    views = [torch.randn(8, 3, 32, 32, generator=g) for _ in range(3)]
    labels = torch.tensor([0, 0, 1, 2, 3, 0, 1, 9])
    out = method.training_step(views, labels, epoch=0, step=0)
    assert set(out) == {"loss", "la_ce", "bcl"}
    assert all(torch.isfinite(v) for v in out.values())
    assert out["loss"].item() == pytest.approx(2.0 * out["la_ce"].item() + 0.6 * out["bcl"].item(), rel=1e-5)
    out["loss"].backward()
    for module in (method.backbone, method.classifier, method.head, method.head_prototype):
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in module.parameters())

    method.eval()
    with torch.no_grad():
        logits = method.eval_logits(views[0])
        assert torch.allclose(logits, method.classifier(method.backbone(views[0])))
    assert logits.shape == (8, 10)


def test_la_ce_uses_log_prior_on_classification_view():
    method = make_bcl()
    method.train()
    g = torch.Generator().manual_seed(2)
    views = [torch.randn(4, 3, 32, 32, generator=g) for _ in range(3)]
    labels = torch.tensor([0, 1, 2, 3])
    torch.manual_seed(3)
    out = method.training_step(views, labels, 0, 0)
    # Recompute LA-CE by hand from the same joint 3B forward (train-mode BN sees all 3 views).
    with torch.no_grad():
        h = method.backbone(torch.cat(views))
        logits = method.classifier(h[:4])
        counts = method.class_counts.double()
        adjusted = logits.double() + torch.log(counts / counts.sum())
        expected = -(adjusted.log_softmax(1)[torch.arange(4), labels]).mean()
    assert out["la_ce"].item() == pytest.approx(expected.item(), rel=1e-4)


def test_prototypes_come_from_raw_classifier_weights():
    """prototypes = normalize(head_prototype(W^T)) with the un-normalised class vectors."""
    m = make_bcl()
    with torch.no_grad():
        m.classifier.weight.mul_(torch.linspace(0.5, 3.0, 10))  # columns of different norms
    m.train()
    w = m.classifier.class_weights()
    expected = torch.nn.functional.normalize(m.head_prototype(w), dim=1)
    wrong = torch.nn.functional.normalize(m.head_prototype(torch.nn.functional.normalize(w, dim=1)), dim=1)
    got = m.prototypes()
    assert torch.allclose(got, expected, atol=1e-6)
    assert not torch.allclose(got, wrong, atol=1e-3)


def test_step_feeds_the_contrastive_views_through_one_joint_forward():
    """The loss of a step from its parts, recomputed: one forward of all 3B images (BatchNorm sees
    the classification view too), z of the two contrastive views only, LA-CE on view 0. Mixing
    up the views, or running the head on 2B rows, gives other numbers (checked below)."""
    method = make_bcl()
    g = torch.Generator().manual_seed(5)
    views = [torch.randn(4, 3, 8, 8, generator=g) for _ in range(3)]
    labels = torch.tensor([0, 1, 1, 3])
    out = method.training_step(views, labels, epoch=0, step=0)
    with torch.no_grad():
        h = method.backbone(torch.cat(views))
        z = F.normalize(method.head(h), dim=1)
        protos = method.prototypes()
        expected = balanced_contrastive_loss(z[4:], labels, protos, 0.1)
        wrong_views = balanced_contrastive_loss(z[:8], labels, protos, 0.1)
        head_on_2b = balanced_contrastive_loss(F.normalize(method.head(h[4:]), dim=1), labels, protos, 0.1)
        la_ce = F.cross_entropy(method.classifier(h[:4]) + method.log_prior, labels)
    assert torch.allclose(out["bcl"], expected, atol=1e-6)
    assert torch.allclose(out["la_ce"], la_ce, atol=1e-6)
    assert torch.allclose(out["loss"], 2.0 * la_ce + 0.6 * expected, atol=1e-5)
    assert not torch.allclose(expected, wrong_views, atol=1e-4)
    assert not torch.allclose(expected, head_on_2b, atol=1e-4)


def test_large_dataset_recipes_follow_the_release_readme_commands():
    from benchmarks.config import resolve_config

    inat = resolve_config("bcl", "inat2018", 500)
    assert (inat["lr"], inat["weight_decay"], inat["epochs"]) == (0.2, 1.0e-4, 100)  # README's iNat command
    imagenet = resolve_config("bcl", "imagenet_lt", 256)
    assert (imagenet["lr"], imagenet["weight_decay"], imagenet["epochs"]) == (0.1, 5.0e-4, 90)
    assert imagenet["bn_groups"] == inat["bn_groups"] == 4  # DataParallel over 4 GPUs
    assert resolve_config("bcl", "cifar100")["bn_groups"] == 1


def test_bn_groups_normalise_contiguous_chunks_and_keep_the_first_chunks_running_stats():
    """bn_groups 4 = nn.DataParallel over 4 replicas: every chunk of the 3B batch is normalised on
    its own statistics, the outputs are in order, and only the first chunk updates the running
    statistics (the other replicas' updates are discarded)."""
    import copy

    torch.manual_seed(0)
    grouped = make_bcl(bn_groups=4)
    plain = copy.deepcopy(grouped)
    plain.bn_groups = plain.local_bn_groups = 1
    images = torch.randn(12, 3, 32, 32)
    h, z = grouped.features(images)
    reference = copy.deepcopy(plain)
    chunks = [reference.features(c) for c in images.chunk(4)]
    assert torch.allclose(h, torch.cat([c[0] for c in chunks]), atol=1e-5)
    assert torch.allclose(z, torch.cat([c[1] for c in chunks]), atol=1e-5)
    first = copy.deepcopy(plain)
    first.features(images[:3])  # what replica 0 alone does to the running statistics
    for a, b in zip(grouped.buffers(), first.buffers()):
        assert torch.equal(a, b)
    whole_h, _ = plain.features(images)
    assert not torch.allclose(whole_h, h, atol=1e-3)  # one BatchNorm batch computes something else


def test_configs_written_before_bn_groups_and_select_on_still_match_todays():
    """Results folders of the code before these keys existed resume and report: their configs
    are completed with the old behaviour (one BN batch, best test epoch), only for BCL's option."""
    from benchmarks.config import with_added_keys

    for method in ("bcl", "ce"):
        today = resolve_config(method, "cifar100")
        written = {k: v for k, v in today.items() if k not in ("bn_groups", "select_on")}
        assert with_added_keys(written) == today
    assert with_added_keys({"method": "ce"})["bn_groups"] == 1
    assert with_added_keys({"method": "focal"})["bn_groups"] == 1
    assert "bn_groups" not in with_added_keys({"method": "paco"})
