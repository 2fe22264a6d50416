"""Reverse mode with checkpointing: memory ~ sqrt(T) instead of ~ T, for one extra forward pass."""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

import jax
import jax.numpy as jnp

from hgrad import _checks
from hgrad import unroll as _unroll
from hgrad.methods.base import Method

__all__ = ["Checkpointed"]


@dataclasses.dataclass(frozen=True)
class Checkpointed(Method):
    r"""Reverse mode that stores the state only every ``every`` steps and recomputes the rest.

    The loop is cut into segments of ``k = every`` steps (``k = ceil(sqrt(T))`` by default). The
    forward pass keeps the state at each segment boundary; the backward pass reruns one segment at
    a time, keeping its ``k`` steps, and back-propagates through it. Memory holds ``T/k + k``
    states (``2 sqrt(T)`` at the default) at the cost of one more forward pass: the same
    hypergradient as :class:`~hgrad.Reverse`, to rounding.

    Args:
      every: the segment length ``k``, a positive int; ``None`` for ``ceil(sqrt(T))``.
      structured: inside each segment, use the step's structured reverse sweep if it has one.

    References:
      Griewank, Walther. Evaluating Derivatives (2nd ed., SIAM 2008), chapter 12.
      Chen, Xu, Zhang, Guestrin. Training deep nets with sublinear memory cost. arXiv:1604.06174.
    """

    every: Optional[int] = None
    structured: bool = True

    def check(self, num_steps):
        if self.every is not None:
            _checks.check_num_steps(self.every, "Checkpointed(every=...)")

    def segment_length(self, num_steps: int) -> int:
        return min(self.every or math.ceil(math.sqrt(num_steps)), num_steps)

    def value_and_grad(self, step, outer, state0, hparams, num_steps):
        k = self.segment_length(num_steps)
        num_segments, remainder = divmod(num_steps, k)
        structured = self.structured

        @jax.checkpoint
        def segment(state, hp, start):
            return _unroll.unroll(step, state, hp, k, start, structured=structured)

        def f(hp):
            s0 = _unroll.initial_state(state0, hp)

            def body(carry, i):
                state, bad = carry
                state, seg_bad = segment(state, hp, i * k)
                return (state, jnp.where(bad >= 0, bad, seg_bad)), None

            init = (s0, jnp.asarray(_checks.NO_DIVERGENCE, jnp.int32))
            (state, bad), _ = jax.lax.scan(body, init, jnp.arange(num_segments, dtype=jnp.int32))
            if remainder:
                state, rem_bad = _unroll.unroll(
                    step, state, hp, remainder, num_segments * k, structured=structured
                )
                bad = jnp.where(bad >= 0, bad, rem_bad)
            return outer(state, hp), bad

        (value, bad), grads = jax.value_and_grad(f, has_aux=True)(hparams)
        return value, grads, bad
