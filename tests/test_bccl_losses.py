"""BCCL loss terms against hand-worked values and naive per-anchor loops written from docs/methods/bccl.md."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bccl.losses import centroid_loss, class_averaged_supcon, logit_adjusted_ce, supcon_weights


# ----------------------------------------------------------------------------------------------
# Independent references: plain Python loops straight from the formulas in docs/methods/bccl.md
# ----------------------------------------------------------------------------------------------

def naive_supcon(z: np.ndarray, labels: list[int], num_classes: int, tau: float) -> float:
    n = len(z)
    y = list(labels) + list(labels)
    b = [sum(1 for lab in labels if lab == c) for c in range(num_classes)]
    total = 0.0
    for i in range(n):
        s = {j: float(np.dot(z[i], z[j])) / tau for j in range(n) if j != i}
        d = 0.0
        for j in s:
            m = 1 if y[j] == y[i] else 0
            w = b[y[j]] - m
            if w < 1e-6:
                w = 1
            d += math.exp(s[j]) / w
        pos = [j for j in s if y[j] == y[i]]
        acc = sum(s[p] - math.log(d) for p in pos)
        total += -acc / max(1, len(pos))
    return total / n


def naive_centroid(z: np.ndarray, labels: list[int], centroids: np.ndarray) -> float:
    """The released form: mean of -log(exp(a q) / exp(a (1 - q)))."""
    y = list(labels) + list(labels)
    c_count, k, _ = centroids.shape
    vals = []
    for i in range(len(z)):
        for c in range(c_count):
            q = 1.0 if c == y[i] else 0.0
            for kk in range(k):
                a = float(np.dot(z[i], centroids[c, kk]))
                vals.append(-math.log(math.exp(a * q) / math.exp(a * (1 - q))))
    return sum(vals) / len(vals)


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# ----------------------------------------------------------------------------------------------
# Class-averaged SupCon
# ----------------------------------------------------------------------------------------------

def test_supcon_two_samples_by_hand():
    # B = 2, labels [0, 1], z = [e1, e2; e1, e2], tau = 1. For every anchor: one positive (its
    # other view, s = 1, w = b - 1 = 0 -> clamped to 1) and two negatives (s = 0, w = b = 1):
    # D = e + 2, L = -(1 - log(e + 2)) = log(1 + 2/e).
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    loss = class_averaged_supcon(z, torch.tensor([0, 1]), num_classes=2, temperature=1.0)
    assert loss.item() == pytest.approx(math.log(1 + 2 / math.e), rel=1e-6)


def test_supcon_class_averaging_by_hand():
    # B = 3, labels [0, 0, 1], 1-d projections: class 0 at +1, class 1 at -1; tau = 1; b = [2, 1].
    # Class-0 anchor: 3 positives (s = 1, w = 2 - 1 = 1), 2 negatives (s = -1, w = b_1 = 1):
    #   D = 3e + 2/e, L = -(1 - log(3e + 2/e)).
    # Class-1 anchor: 1 positive (s = 1, w = 1 - 1 = 0 -> 1), 4 negatives (s = -1, w = b_0 = 2):
    #   D = e + 4/(2e), L = -(1 - log(e + 2/e)).
    z = torch.tensor([[1.0], [1.0], [-1.0], [1.0], [1.0], [-1.0]])
    loss = class_averaged_supcon(z, torch.tensor([0, 0, 1]), num_classes=2, temperature=1.0)
    e = math.e
    expected = (4 * (math.log(3 * e + 2 / e) - 1) + 2 * (math.log(e + 2 / e) - 1)) / 6
    assert loss.item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("labels", [[0, 1, 1, 2, 2], [2, 2, 2, 2, 0], [0, 1, 2, 0, 1]])
def test_supcon_matches_naive_loop(labels):
    rng = np.random.default_rng(len(labels) + labels[0])
    z = unit(rng.normal(size=(2 * len(labels), 4)))
    got = class_averaged_supcon(torch.tensor(z), torch.tensor(labels), num_classes=3, temperature=0.1)
    assert got.item() == pytest.approx(naive_supcon(z, labels, 3, 0.1), rel=1e-5)


def test_supcon_is_float32_under_low_precision_input():
    rng = np.random.default_rng(1)
    z = torch.tensor(unit(rng.normal(size=(6, 4))), dtype=torch.bfloat16)
    loss = class_averaged_supcon(z, torch.tensor([0, 1, 1]), num_classes=2, temperature=0.1)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(naive_supcon(z.float().numpy(), [0, 1, 1], 2, 0.1), rel=1e-5)


def test_supcon_weights_rule():
    # labels [0, 0, 1] -> 2B labels [0, 0, 1, 0, 0, 1]; b = [2, 1] from the B labels (not 2B).
    w = supcon_weights(torch.tensor([0, 0, 1]), num_classes=2)
    off = ~torch.eye(6, dtype=torch.bool)
    # column class 0: 2 - 1 = 1 for a class-0 anchor, 2 for a class-1 anchor;
    # column class 1: 1 - 1 = 0 -> clamped to 1 for a class-1 anchor, 1 for a class-0 anchor.
    a, c = 1.0, 1.0  # same-class entries (after the clamp for class 1)
    expected = torch.tensor([
        [0, a, 1, a, a, 1],
        [a, 0, 1, a, a, 1],
        [2, 2, 0, 2, 2, c],
        [a, a, 1, 0, a, 1],
        [a, a, 1, a, 0, 1],
        [2, 2, c, 2, 2, 0],
    ])
    assert torch.equal(w[off], expected[off])
    # b counts the B labels: three of class 0 give w = 3 - 1 = 2 between positives, 3 to others.
    w3 = supcon_weights(torch.tensor([0, 0, 0, 1]), num_classes=2)
    assert w3[0, 1].item() == 2.0 and w3[0, 4].item() == 2.0 and w3[3, 0].item() == 3.0
    assert w3[3, 7].item() == 1.0  # 1 - 1 = 0 -> 1
    assert (w3 >= 1.0).all()


# ----------------------------------------------------------------------------------------------
# Centroid loss
# ----------------------------------------------------------------------------------------------

def test_centroid_loss_by_hand():
    # B = 1, label 0, views z1 = (1, 0), z2 = (0, 1); C = 2, K = 2.
    # class 0: (1, 0), (.5, .5); class 1: (0, 1), (0, 0).
    # a * (1 - 2q): z1 -> [-1, -.5, 0, 0], z2 -> [0, -.5, 1, 0]; sum = -1, mean over 8 = -1/8.
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    cents = torch.tensor([[[1.0, 0.0], [0.5, 0.5]], [[0.0, 1.0], [0.0, 0.0]]])
    assert centroid_loss(z, torch.tensor([0]), cents).item() == pytest.approx(-0.125)


def test_centroid_loss_by_hand_column_layout():
    # K = 3, label 1: the own-class columns are 3..5 (class-major, as released), not every other.
    # class 0: (1, 0), 0, 0; class 1: (0, 1), (1, 1), 0.
    # z1 = (1, 0): a = [1, 0, 0 | 0, 1, 0] -> [1, 0, 0, 0, -1, 0]; z2 = (0, 1): a = [0, 0, 0 | 1, 1, 0]
    # -> [0, 0, 0, -1, -1, 0]; sum -2, mean over 12 = -1/6 (an interleaved mask would give +1/6).
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    cents = torch.tensor([[[1.0, 0.0], [0.0, 0.0], [0.0, 0.0]], [[0.0, 1.0], [1.0, 1.0], [0.0, 0.0]]])
    assert centroid_loss(z, torch.tensor([1]), cents).item() == pytest.approx(-1.0 / 6.0)


def test_centroid_loss_matches_released_form():
    rng = np.random.default_rng(3)
    z = unit(rng.normal(size=(8, 5)))
    cents = rng.normal(size=(3, 2, 5))
    labels = [0, 2, 2, 1]
    got = centroid_loss(torch.tensor(z), torch.tensor(labels), torch.tensor(cents))
    assert got.item() == pytest.approx(naive_centroid(z, labels, cents), rel=1e-5)


def test_centroid_loss_gradient_reaches_anchors_only():
    rng = np.random.default_rng(4)
    z = torch.tensor(unit(rng.normal(size=(4, 3))), requires_grad=True)
    cents = torch.tensor(rng.normal(size=(2, 2, 3)), requires_grad=True)
    labels = torch.tensor([0, 1])
    centroid_loss(z, labels, cents).backward()
    assert cents.grad is None
    # dL/dz_i = sum_{c,k} (1 - 2 q_ic) mu_ck / (2B * C * K)
    sign = torch.tensor([[-1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [1.0, -1.0]], dtype=torch.float64)
    expected = (sign[:, :, None] * cents.detach().sum(1)[None]).sum(1) / (4 * 4)
    assert torch.allclose(z.grad, expected, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# LA-CE
# ----------------------------------------------------------------------------------------------

def test_logit_adjusted_ce_by_hand():
    # counts [3, 1] -> log pi = [log .75, log .25]; zero logits, label 1: -log(.25) = log 4.
    log_prior = torch.log(torch.tensor([0.75, 0.25]))
    loss = logit_adjusted_ce(torch.zeros(1, 2), torch.tensor([1]), log_prior)
    assert loss.item() == pytest.approx(math.log(4.0), rel=1e-6)
