"""PaCo: the loss against hand-worked values, the queue, the momentum encoder, the method.

Reference values are computed independently of `paco_loss`: a literal worked by hand, and a
naive per-query loop written straight from docs/methods/paco.md's formula.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

import baselines.paco  # noqa: F401  (registers "paco")
from baselines.paco import PaCo, paco_loss
from benchmarks.config import resolve_config
from benchmarks.train.methods import build_method


def naive_paco(q, k, queue, labels, queue_labels, class_logits, counts, alpha, beta, gamma, tau,
               exclude_self=True, supt=1.0):
    """docs/methods/paco.md, literally: for query i the candidates are the C centres
    (class logit + log pi_c) then q_i . f_j / tau for f_j in [q; k; queue] except q_i itself.
    Positives: beta on the own-class centre, alpha on every same-label sample; denominator
    weights 1 on centres, gamma on samples. L_i = -sum_p w_p log softmax_p / sum_p w_p."""
    q, k, queue = q.double(), k.double(), queue.double()
    B, C = class_logits.shape
    pi = [float(n) / float(counts.sum()) for n in counts]
    feats = [q[j] for j in range(B)] + [k[j] for j in range(B)] + [queue[j] for j in range(len(queue))]
    feat_labels = labels.tolist() * 2 + queue_labels.tolist()
    total = 0.0
    for i in range(B):
        y = int(labels[i])
        cands = []  # (logit, denominator weight, positive weight)
        for c in range(C):
            cands.append(((float(class_logits[i, c]) + math.log(pi[c])) / supt, 1.0, beta if c == y else 0.0))
        for j, f in enumerate(feats):
            if exclude_self and j == i:
                continue
            cands.append((float(q[i] @ f) / tau, gamma, alpha if feat_labels[j] == y else 0.0))
        log_z = math.log(sum(d * math.exp(l) for l, d, _ in cands))
        num = sum(w * (l - log_z) for l, _, w in cands)
        total += -num / sum(w for _, _, w in cands)
    return total / B


def random_inputs(seed, B=4, K=6, C=3, D=5):
    g = torch.Generator().manual_seed(seed)
    q = F.normalize(torch.randn(B, D, generator=g), dim=1)
    k = F.normalize(torch.randn(B, D, generator=g), dim=1)
    queue = F.normalize(torch.randn(K, D, generator=g), dim=1)
    labels = torch.randint(0, C, (B,), generator=g)
    queue_labels = torch.randint(0, C, (K,), generator=g)
    class_logits = torch.randn(B, C, generator=g)
    counts = torch.tensor([40, 9, 3][:C])
    return q, k, queue, labels, queue_labels, class_logits, counts


def test_hand_worked_literal():
    # One query of class 0: q = (1, 0), its key k = (0.6, 0.8), one queued key (0, 1) of class 1.
    # class_logits (0.5, -0.5), counts (3, 1) -> pi = (0.75, 0.25); tau = 0.5.
    # Centres: c0 = 0.5 + log 0.75, c1 = -0.5 + log 0.25. Samples (q itself excluded):
    # q.k / tau = 1.2 (class 0, positive), q.u / tau = 0 (class 1).
    # Z = e^c0 + e^c1 + e^1.2 + e^0 (gamma = 1)
    # L = -(1 * (c0 - log Z) + 0.01 * (1.2 - log Z)) / 1.01 = 1.51982264...
    q = torch.tensor([[1.0, 0.0]])
    k = torch.tensor([[0.6, 0.8]])
    queue = torch.tensor([[0.0, 1.0]])
    loss = paco_loss(q, k, queue, torch.tensor([0]), torch.tensor([1]),
                     torch.tensor([[0.5, -0.5]]), torch.tensor([3, 1]),
                     alpha=0.01, beta=1.0, gamma=1.0, temperature=0.5)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(1.519822640962052, abs=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("alpha,beta,gamma,tau", [(0.01, 1.0, 1.0, 0.05), (0.5, 2.0, 0.3, 0.2)])
def test_matches_naive_loop(seed, alpha, beta, gamma, tau):
    inputs = random_inputs(seed)
    loss = paco_loss(*inputs, alpha=alpha, beta=beta, gamma=gamma, temperature=tau)
    assert loss.item() == pytest.approx(naive_paco(*inputs, alpha, beta, gamma, tau), rel=1e-5)


def test_supt_divides_the_centre_logits():
    inputs = random_inputs(5)
    loss = paco_loss(*inputs, alpha=0.05, beta=1.0, gamma=1.0, temperature=0.2, supt=2.0).item()
    assert loss == pytest.approx(naive_paco(*inputs, 0.05, 1.0, 1.0, 0.2, supt=2.0), rel=1e-5)
    assert abs(loss - naive_paco(*inputs, 0.05, 1.0, 1.0, 0.2)) > 1e-3


def test_self_contrast_excluded():
    inputs = random_inputs(3)
    loss = paco_loss(*inputs, alpha=0.5, beta=1.0, gamma=1.0, temperature=0.2).item()
    assert loss == pytest.approx(naive_paco(*inputs, 0.5, 1.0, 1.0, 0.2), rel=1e-5)
    with_self = naive_paco(*inputs, 0.5, 1.0, 1.0, 0.2, exclude_self=False)
    assert abs(loss - with_self) > 1e-3
    # With B = 1, an empty queue, and alpha = 0, the only sample candidate is the own key; if
    # q_i . q_i were a candidate, moving q toward k would not cancel it. Check the exact value.
    q = torch.tensor([[1.0, 0.0]])
    k = torch.tensor([[0.0, 1.0]])
    loss = paco_loss(q, k, torch.zeros(0, 2), torch.tensor([0]), torch.zeros(0, dtype=torch.long),
                     torch.tensor([[0.0, 0.0]]), torch.tensor([1, 1]),
                     alpha=0.0, beta=1.0, gamma=1.0, temperature=1.0)
    # centres: log 0.5 each; sample q.k = 0. Z = 0.5 + 0.5 + 1 = 2; L = -(log 0.5 - log 2) = log 4.
    assert loss.item() == pytest.approx(math.log(4.0), abs=1e-6)


def test_own_key_is_a_positive():
    # q_i . k_i is never masked: with alpha > 0 it is a positive even when nothing else is.
    q = torch.tensor([[1.0, 0.0]])
    k = torch.tensor([[1.0, 0.0]])
    args = (q, k, torch.zeros(0, 2), torch.tensor([1]), torch.zeros(0, dtype=torch.long),
            torch.tensor([[0.0, 0.0]]), torch.tensor([1, 1]))
    loss = paco_loss(*args, alpha=1.0, beta=1.0, gamma=1.0, temperature=1.0).item()
    # Z = 0.5 + 0.5 + e; positives: centre 1 (log 0.5) and the key (1), weights 1 and 1.
    z = 1.0 + math.e
    assert loss == pytest.approx(-((math.log(0.5) - math.log(z)) + (1.0 - math.log(z))) / 2, abs=1e-6)


def test_gradient_flows_to_queries_and_classifier_only():
    q, k, queue, labels, queue_labels, class_logits, counts = random_inputs(4)
    q = q.clone().requires_grad_(True)
    k = k.clone().requires_grad_(True)
    queue = queue.clone().requires_grad_(True)
    class_logits = class_logits.clone().requires_grad_(True)
    paco_loss(q, k, queue, labels, queue_labels, class_logits, counts,
              alpha=0.01, beta=1.0, gamma=1.0, temperature=0.05).backward()
    assert q.grad.abs().sum() > 0 and class_logits.grad.abs().sum() > 0


# ----------------------------------------------------------------------------------------------
# The method: queue, momentum encoder, training step
# ----------------------------------------------------------------------------------------------

COUNTS = torch.tensor([50, 30, 20, 12, 8, 5, 4, 3, 2, 1])


def make_paco(**overrides):
    torch.manual_seed(0)
    config = resolve_config("paco", dataset="cifar100", overrides=overrides)
    return build_method(config, 10, COUNTS)


def test_recipe_values():
    config = resolve_config("paco", dataset="cifar100")
    assert (config["alpha"], config["beta"], config["gamma"], config["temperature"]) == (
        0.01, 1.0, 1.0, 0.05
    )
    assert (config["moco_m"], config["queue_size"], config["shuffle_bn_groups"]) == (0.999, 1024, 1)
    assert (config["lr"], config["weight_decay"], config["epochs"], config["batch_size"]) == (
        0.05, 5e-4, 400, 128
    )
    assert config["lr_schedule"] == "paco_step" and config["warmup_epochs"] == 10
    assert config["lr_steps"] == [[321, 0.1], [361, 0.01]]
    assert config["classifier"] == "linear"


def test_structure_and_initial_state():
    method = make_paco()
    assert isinstance(method, PaCo)
    assert method.view_names() == ("autoaug_cutout", "contrastive_blur")
    assert [m.out_features for m in (method.head[0], method.head[3])] == [64, 32]
    assert method.queue.shape == (1024, 32) and method.queue_labels.shape == (1024,)
    assert int(method.queue_ptr) == 0
    # Released init: randn normalised along dim 0, labels uniform in [0, C).
    assert torch.allclose(method.queue.norm(dim=0), torch.ones(32), atol=1e-5)
    assert method.queue_labels.min() >= 0 and method.queue_labels.max() < 10
    # Key encoder starts as an exact copy and is frozen.
    for pq, pk in zip(method.query_parameters(), method.key_parameters()):
        assert torch.equal(pq, pk) and not pk.requires_grad
    trainable = {id(p) for p in method.trainable_parameters()}
    assert not any(id(p) in trainable for p in method.key_parameters())


def test_state_dict_holds_queue_and_key_encoder():
    keys = make_paco().state_dict().keys()
    for name in ("queue", "queue_labels", "queue_ptr"):
        assert name in keys
    assert any(k.startswith("key_backbone.") for k in keys)
    assert any(k.startswith("key_head.") for k in keys)
    assert "key_backbone.bn1.running_mean" in keys


def test_queue_fifo_with_labels_and_wrap():
    method = make_paco(queue_size=5, proj_dim=2)
    batches = [
        (torch.tensor([[1.0, 0.0], [2.0, 0.0]]), torch.tensor([1, 2])),
        (torch.tensor([[3.0, 0.0], [4.0, 0.0]]), torch.tensor([3, 4])),
        (torch.tensor([[5.0, 0.0], [6.0, 0.0]]), torch.tensor([5, 6])),  # wraps: slots 4, 0
        (torch.tensor([[7.0, 0.0], [8.0, 0.0]]), torch.tensor([7, 8])),  # slots 1, 2
    ]
    expected_ptr = [2, 4, 1, 3]
    for (keys, labels), ptr in zip(batches, expected_ptr):
        method.enqueue(keys, labels)
        assert int(method.queue_ptr) == ptr
    assert method.queue[:, 0].tolist() == [6.0, 7.0, 8.0, 4.0, 5.0]
    assert method.queue_labels.tolist() == [6, 7, 8, 4, 5]
    # A batch larger than the queue: the same state as writing its keys one after another
    # (10 -> slot 3, 11 -> 4, 12 -> 0, 13 -> 1, 14 -> 2, 15 -> 3, 16 -> 4); pointer (3 + 7) % 5.
    keys = torch.arange(10, 17, dtype=torch.float).view(-1, 1).repeat(1, 2)
    method.enqueue(keys, torch.arange(10, 17))
    assert int(method.queue_ptr) == 0
    assert method.queue_labels.tolist() == [12, 13, 14, 15, 16]
    assert method.queue[:, 0].tolist() == [12.0, 13.0, 14.0, 15.0, 16.0]


def test_momentum_update_exact():
    method = make_paco(moco_m=0.9)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for pk in method.key_parameters():
            pk.copy_(torch.randn(pk.shape, generator=g))
    before_q = [p.detach().clone() for p in method.query_parameters()]
    before_k = [p.detach().clone() for p in method.key_parameters()]
    method.momentum_update()
    for pq, pk, new in zip(before_q, before_k, method.key_parameters()):
        assert torch.equal(new, pk * 0.9 + pq * (1.0 - 0.9))
    # The query encoder is untouched.
    for pq, now in zip(before_q, method.query_parameters()):
        assert torch.equal(pq, now)


def test_training_step_updates_key_encoder_before_the_key_forward():
    method = make_paco(moco_m=0.5, queue_size=12)
    method.train()
    with torch.no_grad():
        for pk in method.key_parameters():
            pk.add_(0.1)
    before_q = [p.detach().clone() for p in method.query_parameters()]
    before_k = [p.detach().clone() for p in method.key_parameters()]
    g = torch.Generator().manual_seed(6)
    views = [torch.randn(8, 3, 32, 32, generator=g) for _ in range(2)]
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 9, 9])
    out = method.training_step(views, labels, epoch=0, step=0)
    for pq, pk, new in zip(before_q, before_k, method.key_parameters()):
        assert torch.equal(new, pk * 0.5 + pq * (1.0 - 0.5))
    # The keys enqueued are those of the *updated* key encoder (recomputed in train mode on the
    # same batch: same batch statistics, so the same keys).
    with torch.no_grad():
        k = F.normalize(method.key_head(method.key_backbone(views[1])), dim=1)
    assert torch.allclose(method.queue[:8], k, atol=1e-5)
    assert method.queue_labels[:8].tolist() == labels.tolist()
    assert int(method.queue_ptr) == 8
    assert torch.isfinite(out["loss"])


def test_training_step_backward_and_no_key_gradient():
    method = make_paco(queue_size=12)
    method.train()
    g = torch.Generator().manual_seed(7)
    labels = torch.tensor([0, 1, 2, 3, 4, 5, 6, 9])
    for step in range(2):  # the second step wraps the 12-slot queue (8 + 8)
        views = [torch.randn(8, 3, 32, 32, generator=g) for _ in range(2)]
        out = method.training_step(views, labels, epoch=0, step=step)
        assert set(out) == {"loss", "paco"} and torch.isfinite(out["loss"])
        method.zero_grad(set_to_none=True)
        out["loss"].backward()
        assert all(p.grad is None for p in method.key_parameters())
        for module in (method.backbone, method.head, method.classifier):
            assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in module.parameters())
    assert int(method.queue_ptr) == 4
    assert method.queue_labels[8:].tolist() == [0, 1, 2, 3]
    assert method.queue_labels[:4].tolist() == [4, 5, 6, 9]

    method.eval()
    with torch.no_grad():
        logits = method.eval_logits(views[0])
        assert torch.allclose(logits, method.classifier(method.backbone(views[0])))
    assert logits.shape == (8, 10)


def test_shuffle_bn_groups_option_runs_and_unshuffles():
    method = make_paco(queue_size=16, shuffle_bn_groups=2)
    method.train()
    g = torch.Generator().manual_seed(8)
    views = [torch.randn(8, 3, 32, 32, generator=g) for _ in range(2)]
    labels = torch.arange(8)
    out = method.training_step(views, labels, epoch=0, step=0)
    assert torch.isfinite(out["loss"])
    # Key i is the key of image i: with BN in eval mode (no batch statistics) the grouped,
    # shuffled forward must equal the plain one row for row.
    method.eval()
    with torch.no_grad():
        grouped = method._keys(views[1])
        plain = F.normalize(method.key_head(method.key_backbone(views[1])), dim=1)
    assert torch.allclose(grouped, plain, atol=1e-5)


def test_training_step_loss_uses_raw_h_classifier_logits():
    """The class-centre logits come from the classifier on the raw pooled feature h."""
    m = make_paco(queue_size=16)
    m.train()
    g = torch.Generator().manual_seed(3)
    views = [torch.randn(4, 3, 8, 8, generator=g) for _ in range(2)]
    labels = torch.tensor([0, 1, 2, 0])
    queue, queue_labels = m.queue.clone(), m.queue_labels.clone()
    reference = copy.deepcopy(m)
    out = m.training_step(views, labels, epoch=0, step=0)

    h = reference.backbone(views[0])
    q = torch.nn.functional.normalize(reference.head(h), dim=1)
    reference.momentum_update()
    with torch.no_grad():
        k = torch.nn.functional.normalize(reference.key_head(reference.key_backbone(views[1])), dim=1)
    args = dict(alpha=m.alpha, beta=m.beta, gamma=m.gamma, temperature=m.temperature)
    expected = paco_loss(q, k, queue, labels, queue_labels, reference.classifier(h), m.class_counts, **args)
    wrong = paco_loss(q, k, queue, labels, queue_labels,
                      reference.classifier(torch.nn.functional.normalize(h, dim=1)), m.class_counts, **args)
    assert torch.allclose(out["loss"], expected, atol=1e-5)
    assert not torch.allclose(out["loss"], wrong, atol=1e-3)
