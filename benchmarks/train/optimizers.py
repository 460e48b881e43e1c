"""The training optimiser: SGD with momentum, in the form the method's release applies it.

`momentum_form` (config key):
- `pytorch` (torch.optim.SGD, the PyTorch releases): b <- m b + g; w <- w - lr (g + m b) with
  Nesterov, w <- w - lr b without.
- `keras` (tf.keras.optimizers.SGD, the logit-adjustment release, `main.py`
  SGD(momentum=0.9, nesterov=True)): v <- m v - lr g; w <- w + m v - lr g with Nesterov,
  w <- w + v without.
With a constant lr the two are the same update (v = -lr b). They differ where the lr changes
(warmup, steps): Keras's velocity keeps the earlier steps' lr inside it, PyTorch multiplies the
whole buffer by the current lr. Matching the release's form is therefore part of its recipe;
the other form is a recorded deviation like any other key. In both, `weight_decay` adds wd * w to
the gradient (the Keras release's L2 term in the loss has that gradient).
"""

from __future__ import annotations

from typing import Any, Iterable

import torch

MOMENTUM_FORMS = ("pytorch", "keras")


class KerasSGD(torch.optim.Optimizer):
    """SGD with momentum as Keras applies it (module docstring); state: one `velocity` per tensor."""

    def __init__(self, params: Iterable, lr: float, momentum: float = 0.0, weight_decay: float = 0.0,
                 nesterov: bool = False):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, m, wd = group["lr"], group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad.add(p, alpha=wd) if wd else p.grad
                state = self.state[p]
                if "velocity" not in state:
                    state["velocity"] = torch.zeros_like(p)
                velocity = state["velocity"]
                velocity.mul_(m).add_(grad, alpha=-lr)
                if group["nesterov"]:
                    p.add_(velocity, alpha=m).add_(grad, alpha=-lr)
                else:
                    p.add_(velocity)
        return loss


def build_optimizer(parameters, config: dict[str, Any]) -> torch.optim.Optimizer:
    """The run's optimiser over `parameters` (lr set per epoch by the trainer)."""
    kind = KerasSGD if config["momentum_form"] == "keras" else torch.optim.SGD
    return kind(parameters, lr=config["lr"], momentum=config["momentum"], weight_decay=config["weight_decay"],
                nesterov=config["nesterov"])
