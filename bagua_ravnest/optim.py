"""Optimizers that work together with a bagua_ravnest algorithm.

QAdamOptimizer is Adam for the ``qadam`` and ``onebit_adam`` algorithms
(ALGORITHMS.md): during
``warmup_steps`` it is exactly ``torch.optim.Adam`` on the averaged gradient;
afterwards the algorithm leaves in each ``.grad`` the momentum it averaged
(compressed) over all ranks, and the step uses that momentum with the
variance frozen at the switch, with the usual bias corrections. Coordinates
whose frozen variance is exactly 0 (no gradient during the whole warm-up)
are not updated after the switch.

With ``precondition=True`` the algorithm compresses each momentum divided by
the Adam denominator frozen at the switch (sqrt(v_hat) + eps) and multiplies
back after averaging: the codec's per-block scale then follows the size of
each coordinate's update instead of its raw momentum, so a coordinate with a
tiny frozen variance no longer receives a step of lr * (its block's momentum
scale) / sqrt(v). The update is the same in expectation; see docs/qadam.md
for what it changes in practice.

Two rules keep the steps after the switch the size of Adam's, however short
the warm-up (docs/qadam.md, "Short warm-ups"):

- the frozen variance keeps the bias correction of the step it was frozen
  at: v_hat = v_T / (1 - beta2^T) for T = warmup_steps. (Correcting v_T with
  the current step t instead shrinks v_hat as t grows: after a 4-step
  warm-up every step at t = 100 would be 4.9 times too large.)
- ``update_bound`` (default 1.0): no coordinate moves by more than
  update_bound * lr in one step. The denominator is max(sqrt(v_hat) + eps,
  |m_hat| / update_bound). Exact Adam's update m_hat / sqrt(v_hat) is at most
  about 1 for a gradient that is steady, so this changes nothing while the
  frozen variance is still a fair estimate; when the gradients outgrow it
  (a frozen variance from too few steps), the update is clipped to that of
  Adam on a steady gradient instead of growing without bound. None turns it
  off.

    opt = bagua_ravnest.QAdamOptimizer(model.parameters(), lr=1e-3, warmup_steps=100)
    model = bagua_ravnest.DistributedDataParallel(model, algorithm="qadam", optimizer=opt)
"""

from __future__ import annotations

import math

import torch


class QAdamOptimizer(torch.optim.Optimizer):
    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, warmup_steps: int = 100,
                 precondition: bool = False, update_bound: float | None = 1.0):
        if not lr > 0:
            raise ValueError(f"QAdamOptimizer: lr must be positive, got {lr}")
        if not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"QAdamOptimizer: betas must be in [0, 1), got {betas}")
        if not eps > 0:
            raise ValueError(f"QAdamOptimizer: eps must be positive, got {eps}")
        if int(warmup_steps) != warmup_steps or warmup_steps < 0:
            raise ValueError(f"QAdamOptimizer: warmup_steps must be a non-negative integer, got {warmup_steps}")
        if update_bound is not None and not update_bound > 0:
            raise ValueError(f"QAdamOptimizer: update_bound must be positive or None, got {update_bound}")
        if warmup_steps < 1:
            # Without a warm-up there is no variance to freeze: no coordinate would ever move.
            what = "precondition=True divides by" if precondition else "the steps after it use"
            raise ValueError(f"QAdamOptimizer: {what} the variance learned during the warm-up; "
                             f"use warmup_steps >= 1")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps))
        self.warmup_steps = int(warmup_steps)
        self.precondition = bool(precondition)
        self.update_bound = None if update_bound is None else float(update_bound)
        # Per parameter, once the variance is frozen: sqrt(v_hat) + eps, and
        # +inf where v is 0 (dividing by it leaves those coordinates where
        # they are), with a buffer for each step's denominator (a fresh
        # tensor per step costs page faults beside the backward pass of the
        # next step). Derived from the state, so not saved; reset by
        # load_state_dict.
        self._frozen_denom: dict[torch.Tensor, tuple[torch.Tensor, torch.Tensor]] = {}

    def algorithm_spec(self, name: str = "qadam") -> str:
        """The spec of `name` (qadam or onebit_adam) that matches these hyperparameters."""
        beta1, beta2 = self.param_groups[0]["betas"]
        if any(g["betas"][0] != beta1 for g in self.param_groups):
            raise ValueError(f"QAdamOptimizer: every parameter group must use the same betas[0] with {name}")
        if not self.precondition:
            return f"{name}:beta1={beta1!r},warmup_steps={self.warmup_steps}"
        eps = self.param_groups[0]["eps"]
        if any(g["betas"][1] != beta2 or g["eps"] != eps for g in self.param_groups):
            raise ValueError(f"QAdamOptimizer: with precondition=True every parameter group must use the same "
                             f"betas and eps with {name}")
        return (f"{name}:beta1={beta1!r},beta2={beta2!r},eps={eps!r},precondition=true,"
                f"warmup_steps={self.warmup_steps}")

    def state_dict(self):
        out = super().state_dict()
        out["warmup_steps"] = self.warmup_steps
        return out

    def load_state_dict(self, state_dict):
        state_dict = dict(state_dict)
        saved = state_dict.pop("warmup_steps", self.warmup_steps)
        if saved != self.warmup_steps:
            raise ValueError(f"QAdamOptimizer: the checkpoint used warmup_steps={saved}, this optimizer "
                             f"{self.warmup_steps}; construct it with the same value")
        super().load_state_dict(state_dict)
        self._frozen_denom.clear()

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.tensor(0.0)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                t = int(state["step"].item())
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                step_size = group["lr"] / (1 - beta1**t)
                correction = math.sqrt(1 - beta2**t)
                if t <= self.warmup_steps:
                    # Plain Adam on the averaged gradient, as torch.optim.Adam computes it.
                    exp_avg.lerp_(p.grad, 1 - beta1)
                    exp_avg_sq.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                    denom = (exp_avg_sq.sqrt() / correction).add_(group["eps"])
                    p.addcdiv_(exp_avg, denom, value=-step_size)
                    continue
                # .grad holds the momentum the algorithm averaged; the variance stays frozen,
                # with the bias correction of the step it was frozen at (T = warmup_steps).
                # Where it is 0 the parameter never had a gradient during warm-up: exact Adam
                # would not move it (its momentum is 0), and dividing compression noise by
                # eps would throw it far away, so it stays put (its denominator is +inf).
                frozen = self._frozen_denom.get(p)
                if frozen is None:
                    frozen_correction = math.sqrt(1 - beta2**self.warmup_steps)
                    fixed = (exp_avg_sq.sqrt() / frozen_correction).add_(group["eps"])
                    fixed.masked_fill_(exp_avg_sq == 0, math.inf)
                    frozen = self._frozen_denom[p] = (fixed, torch.empty_like(fixed))
                fixed, denom = frozen
                if self.update_bound is None:
                    p.addcdiv_(p.grad, fixed, value=-step_size)
                    continue
                # max(sqrt(v_hat) + eps, |m_hat| / bound): |update| <= bound * lr.
                torch.abs(p.grad, out=denom).mul_(1 / ((1 - beta1**t) * self.update_bound))
                torch.maximum(denom, fixed, out=denom)
                p.addcdiv_(p.grad, denom, value=-step_size)
        return loss
