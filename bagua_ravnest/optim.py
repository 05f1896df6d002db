"""Optimizers that work together with a bagua_ravnest algorithm.

QAdamOptimizer is Adam for the ``qadam`` and ``onebit_adam`` algorithms
(docs/qadam.md): during
``warmup_steps`` it is exactly ``torch.optim.Adam`` on the averaged gradient;
afterwards the algorithm leaves in each ``.grad`` the momentum it averaged
(compressed) over all ranks, and the optimizer steps with it, with the usual
bias corrections.

``variance`` says what becomes of Adam's variance v after the warm-up
(docs/qadam.md, "The variance after the switch"). Every rank holds the same
averaged momentum, so each rule keeps the ranks' weights identical without
sending anything more:

- ``"recovered"`` (qadam's default): v keeps learning, as Adam's does, from
  the averaged gradient that two consecutive averaged momenta give back:
  g = (m_t - beta1 * m_{t-1}) / (1 - beta1). With an exact exchange this
  is torch.optim.Adam, step for step, up to rounding. Where the algorithm
  knows the variance its codec's rounding added to m_t (qadam's 8-bit
  codes; bind_companions), g^2 is learned less that variance, amplified as
  g amplifies the rounding.
- ``"momentum"`` (onebit_adam's default): v keeps learning from the square
  of the averaged (bias-corrected) momentum. A sign codec sends each value
  as its block's scale, so the difference of two of its momenta is mostly
  that scale's flips, not a gradient.
- ``"frozen"``: v stays as it was at the switch (BAGUA's rule), with the
  bias correction of that step; coordinates whose v is 0 there never move.
- ``None`` (the default): the algorithm's own; DistributedDataParallel tells
  the optimizer which when it wraps the model.

Where v is 0 (a coordinate that has had no gradient yet) the coordinate
stays where it is.

With ``precondition=True`` the algorithm compresses each momentum divided by
the Adam denominator at the switch (sqrt(v_hat) + eps) and multiplies
back after averaging: the codec's per-block scale then follows the size of
each coordinate's update instead of its raw momentum, so a coordinate with a
tiny variance no longer receives a step of lr * (its block's momentum
scale) / sqrt(v). The update is the same in expectation; see docs/qadam.md
for what it changes in practice.

``update_bound`` (default 1.0): no coordinate moves by more than
update_bound * lr in one step. The denominator is max(sqrt(v_hat) + eps,
|m_hat| / update_bound). Exact Adam's update m_hat / sqrt(v_hat) is at most
about 1 for a gradient that is steady, so this changes nothing while the
variance is a fair estimate; where it is not (a variance frozen after too
few steps, a tiny variance beside a codec block's large scale) the update is
clipped to that of Adam on a steady gradient instead of growing without
bound. None turns it off.

    opt = bagua_ravnest.QAdamOptimizer(model.parameters(), lr=1e-3, warmup_steps=100)
    model = bagua_ravnest.DistributedDataParallel(model, algorithm="qadam", optimizer=opt)
"""

from __future__ import annotations

import math

import torch


def _check_variance_rule(rule: str) -> None:
    """The rules are the algorithms' `variance=` values; C++ (qadam_options)
    holds the one list, so its parser judges."""
    from . import _C

    what = "QAdamOptimizer: variance must be a rule of the algorithm's `variance=` option or None (the algorithm's own)"
    try:
        spec = _C.canonical_spec(f"qadam:variance={rule}", 0, 1, [0])
    except (ValueError, RuntimeError) as e:
        raise ValueError(f"{what}: {e}") from None
    if _C.parse_algorithm_spec(spec)[1].get("variance") != rule:  # "frozen,warmup_steps=3" is no rule
        raise ValueError(f"{what}, got {rule!r}")


class QAdamOptimizer(torch.optim.Optimizer):
    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, warmup_steps: int = 100,
                 precondition: bool = False, update_bound: float | None = 1.0, variance: str | None = None):
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
        if variance is not None:
            if not isinstance(variance, str):
                raise TypeError(f"QAdamOptimizer: variance must be a string or None, got {type(variance).__name__}")
            _check_variance_rule(variance)
        if warmup_steps < 1:
            # Without a warm-up a frozen variance is 0 (no coordinate would ever move), and every rule
            # starts from the warm-up's variance.
            what = "precondition=True divides by" if precondition else "the steps after it use"
            raise ValueError(f"QAdamOptimizer: {what} the variance learned during the warm-up; "
                             f"use warmup_steps >= 1")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps))
        self.warmup_steps = int(warmup_steps)
        self.precondition = bool(precondition)
        self.update_bound = None if update_bound is None else float(update_bound)
        self.variance = variance
        # The rule in use, set when DistributedDataParallel binds this
        # optimizer to its algorithm: `variance`, or the algorithm's default.
        # Unbound, the steps past the warm-up would read plain gradients as
        # averaged momenta, so they refuse to run.
        self._variance: str | None = None
        # Per parameter after the switch, two buffers: with a frozen
        # variance, sqrt(v_hat) + eps (+inf where v is 0: dividing by it
        # leaves those coordinates where they are; derived from the state, so
        # not saved, and reset by load_state_dict) and each step's
        # denominator; with a learned one, two scratch buffers. A fresh
        # tensor per step would cost page faults beside the backward pass of
        # the next step.
        self._buffers: dict[torch.Tensor, tuple[torch.Tensor, torch.Tensor]] = {}
        # Per parameter, when the algorithm fills them (qadam with
        # "recovered"): the variance that the exchange's rounding added to
        # each averaged momentum this step (bind_companions).
        self._rounding: dict[torch.Tensor, torch.Tensor] = {}

    def algorithm_spec(self, name: str = "qadam") -> str:
        """The spec of `name` (qadam or onebit_adam) that matches these hyperparameters."""
        beta1, beta2 = self.param_groups[0]["betas"]
        if any(g["betas"][0] != beta1 for g in self.param_groups):
            raise ValueError(f"QAdamOptimizer: every parameter group must use the same betas[0] with {name}")
        variance = "" if self.variance is None else f"variance={self.variance},"
        if not self.precondition:
            return f"{name}:beta1={beta1!r},{variance}warmup_steps={self.warmup_steps}"
        eps = self.param_groups[0]["eps"]
        if any(g["betas"][1] != beta2 or g["eps"] != eps for g in self.param_groups):
            raise ValueError(f"QAdamOptimizer: with precondition=True every parameter group must use the same "
                             f"betas and eps with {name}")
        return (f"{name}:beta1={beta1!r},beta2={beta2!r},eps={eps!r},precondition=true,"
                f"{variance}warmup_steps={self.warmup_steps}")

    def bind_algorithm(self, spec: str) -> None:
        """Called by DistributedDataParallel with the algorithm's canonical
        spec, once every rank has agreed on it: the variance rule comes from
        there when this optimizer was given none."""
        from .algorithms import parse_algorithm_spec

        _, options = parse_algorithm_spec(spec)
        rule = options.get("variance")
        if rule is None:
            raise ValueError(f"QAdamOptimizer: the algorithm {spec!r} names no variance rule; it is not one this "
                             f"optimizer works with (qadam, onebit_adam)")
        if self.variance is not None and rule != self.variance:
            raise ValueError(f"QAdamOptimizer: built with variance={self.variance!r}, but the algorithm runs "
                             f"{spec!r}")
        self._variance = rule

    def bind_companions(self, parts: dict[torch.Tensor, torch.Tensor]) -> None:
        """Called by DistributedDataParallel when it builds its buckets: for
        each parameter, the part of its bucket's companion, where the
        algorithm leaves the variance its exchange's rounding added to each
        averaged momentum (the same on every rank)."""
        self._rounding = dict(parts)

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
        self._buffers.clear()

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            learning: dict[int, list[torch.Tensor]] = {}  # step -> parameters past the warm-up
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.tensor(0.0)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                t = int(state["step"].item()) + 1
                if t > self.warmup_steps and self._variance is None:
                    # Checked before any state changes: .grad holds a momentum only under the algorithm.
                    raise RuntimeError(
                        "QAdamOptimizer: after the warm-up it steps with the momentum its algorithm averaged; wrap "
                        "the model with bagua_ravnest.DistributedDataParallel(model, algorithm='qadam' or "
                        "'onebit_adam', optimizer=this optimizer) before the first step")
                state["step"] += 1
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                step_size = group["lr"] / (1 - beta1**t)
                if t <= self.warmup_steps:
                    # Plain Adam on the averaged gradient, as torch.optim.Adam computes it.
                    exp_avg.lerp_(p.grad, 1 - beta1)
                    exp_avg_sq.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                    denom = (exp_avg_sq.sqrt() / math.sqrt(1 - beta2**t)).add_(group["eps"])
                    p.addcdiv_(exp_avg, denom, value=-step_size)
                    continue
                # .grad holds the momentum the algorithm averaged (the same on every rank).
                if self._variance == "frozen":
                    self._frozen_step(p, group, t, step_size)
                else:
                    learning.setdefault(t, []).append(p)
            for t, params in learning.items():
                self._learned_steps(params, group, t)
        return loss

    def _scratch(self, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        buffers = self._buffers.get(p)
        if buffers is None:
            buffers = self._buffers[p] = (torch.empty_like(p), torch.empty_like(p))
        return buffers

    def _learned_steps(self, params: list[torch.Tensor], group, t: int) -> None:
        """Adam's step t for `params`, with v learning from what every rank
        holds: the averaged gradient given back by two averaged momenta
        ("recovered"), or the averaged momentum itself ("momentum"). Passes
        are multi-tensor operations where torch has them: a model has many
        small parameters, and dispatching each pass per tensor costs more
        than its arithmetic."""
        beta1, beta2 = group["betas"]
        states = [self.state[p] for p in params]
        m = [p.grad for p in params]
        exp_avg = [s["exp_avg"] for s in states]
        v = [s["exp_avg_sq"] for s in states]
        a, b = (list(x) for x in zip(*(self._scratch(p) for p in params)))
        if self._variance == "recovered":
            # m_t = beta1 m_{t-1} + (1 - beta1) g on every rank before the
            # average, so the average gives back the averaged g; exp_avg
            # holds m_{t-1} (Adam's own at the switch).
            torch._foreach_copy_(a, m)
            torch._foreach_add_(a, exp_avg, alpha=-beta1)
            torch._foreach_mul_(v, beta2)
            torch._foreach_addcmul_(v, a, a, value=(1 - beta2) / (1 - beta1) ** 2)
            rounding = [self._rounding.get(p) for p in params]
            if all(r is not None for r in rounding):
                # a = (1 - beta1) g + e, e the exchange's rounding of m_t,
                # whose variance r the algorithm knows: a^2 - r estimates
                # (1 - beta1)^2 g^2 without bias. Squaring e as if it were
                # signal inflated v where g is small beside its codec
                # block's scale (e / (1 - beta1) is the rounding amplified
                # ten times), and the steps came out short (docs/qadam.md).
                # One step's estimate may be negative; their average, v, is
                # kept at no less than (1 - beta1)^2 m_hat^2 (in v_hat's
                # scale): v > 0 wherever m is not 0, so no step divides by
                # eps alone, and no step exceeds lr / (1 - beta1) even
                # without the update bound.
                torch._foreach_add_(v, rounding, alpha=-(1 - beta2) / (1 - beta1) ** 2)
                torch._foreach_copy_(b, m)
                torch._foreach_mul_(b, m)
                torch._foreach_mul_(b, (1 - beta2**t) * ((1 - beta1) / (1 - beta1**t)) ** 2)
                torch._foreach_maximum_(v, b)
            torch._foreach_copy_(exp_avg, m)
        else:
            torch._foreach_mul_(v, beta2)
            torch._foreach_addcmul_(v, m, m, value=(1 - beta2) / (1 - beta1**t) ** 2)
        # lr/(1 - b1^t) * m / (sqrt(v)/c + eps), c = sqrt(1 - b2^t), taken as
        # lr c/(1 - b1^t) * m / (sqrt(v) + c eps): one pass fewer. Where v is
        # 0 no gradient has reached the coordinate yet, and its momentum is
        # 0 as well (v is 0 at the switch only where m is, and with
        # beta2 > 0 every later change of m enters v in the same step), so
        # it stays put, as exact Adam would leave it.
        c = math.sqrt(1 - beta2**t)
        for vi, ai in zip(v, a):
            torch.sqrt(vi, out=ai)
        torch._foreach_add_(a, c * group["eps"])
        if self.update_bound is not None:
            # max(sqrt(v_hat) + eps, |m_hat| / bound): |update| <= bound * lr.
            for mi, bi in zip(m, b):
                torch.abs(mi, out=bi)
            torch._foreach_mul_(b, c / ((1 - beta1**t) * self.update_bound))
            torch._foreach_maximum_(a, b)
        torch._foreach_addcdiv_(params, m, a, value=-group["lr"] * c / (1 - beta1**t))

    def _frozen_step(self, p, group, t: int, step_size: float) -> None:
        """The step with v frozen at the switch, with the bias correction of
        the step it was frozen at (T = warmup_steps). Where it is 0 the
        parameter never had a gradient during warm-up: exact Adam would not
        move it (its momentum is 0), and dividing compression noise by eps
        would throw it far away, so it stays put (its denominator is +inf)."""
        beta1, beta2 = group["betas"]
        exp_avg_sq = self.state[p]["exp_avg_sq"]
        buffers = self._buffers.get(p)
        if buffers is None:
            frozen_correction = math.sqrt(1 - beta2**self.warmup_steps)
            fixed = (exp_avg_sq.sqrt() / frozen_correction).add_(group["eps"])
            fixed.masked_fill_(exp_avg_sq == 0, math.inf)
            buffers = self._buffers[p] = (fixed, torch.empty_like(fixed))
        fixed, denom = buffers
        if self.update_bound is None:
            p.addcdiv_(p.grad, fixed, value=-step_size)
            return
        # max(sqrt(v_hat) + eps, |m_hat| / bound): |update| <= bound * lr.
        torch.abs(p.grad, out=denom).mul_(1 / ((1 - beta1**t) * self.update_bound))
        torch.maximum(denom, fixed, out=denom)
        p.addcdiv_(p.grad, denom, value=-step_size)
