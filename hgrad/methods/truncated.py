"""Truncated reverse mode: back-propagate through the last k steps only."""

from __future__ import annotations

import dataclasses

import jax

from hgrad import _checks
from hgrad import unroll as _unroll
from hgrad.methods.base import Method

__all__ = ["Truncated"]


@dataclasses.dataclass(frozen=True)
class Truncated(Method):
    r"""Reverse mode through the last ``steps`` inner steps; the earlier ones count as constants.

    Runs the first ``T - k`` steps without recording anything, then differentiates the last ``k``
    as :class:`~hgrad.Reverse` does, treating :math:`s_{T-k}` as independent of the
    hyperparameters. Memory and time of the reverse sweep scale with ``k``, not ``T``; the result
    is biased (it ignores the hyperparameters' influence before step ``T-k``, the initialization
    included), which Shaban et al. bound for contractive inner loops. ``k >= T`` is exactly
    :class:`~hgrad.Reverse`.

    Args:
      steps: ``k``, the number of final steps to back-propagate through (a positive int).
      structured: use the step's structured reverse sweep when it has one.

    References:
      Shaban, Cheng, Hatch, Boots. Truncated back-propagation for bilevel optimization. AISTATS 2019.
    """

    steps: int
    structured: bool = True

    def check(self, num_steps):
        _checks.check_num_steps(self.steps, "Truncated(steps=...)")

    def value_and_grad(self, step, outer, state0, hparams, num_steps):
        k = min(self.steps, num_steps)
        head = num_steps - k

        def f(hp):
            s0 = _unroll.initial_state(state0, hp)
            bad_head = None
            if head:
                frozen = jax.lax.stop_gradient
                s0, bad_head = _unroll.scan_unroll(step, frozen(s0), frozen(hp), head)
                s0 = frozen(s0)
            state, bad = _unroll.unroll(step, s0, hp, k, head, structured=self.structured)
            if bad_head is not None:
                bad = jax.numpy.where(bad_head >= 0, bad_head, bad)
            return outer(state, hp), bad

        (value, bad), grads = jax.value_and_grad(f, has_aux=True)(hparams)
        return value, grads, bad
