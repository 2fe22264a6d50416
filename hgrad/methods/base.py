"""The interface every hypergradient method implements.

A method is a small, immutable strategy value (hashable, so it can be a static argument of
``jax.jit``), in the spirit of optimistix's adjoints: the *what* (the inner loop, the outer
objective) is given to :func:`hgrad.hypergrad`, the *how* (reverse or forward mode, checkpointing,
truncation) is the method.
"""

from __future__ import annotations

import abc
from typing import Any, Callable

import jax

from hgrad import unroll as _unroll

__all__ = ["Method", "final_objective"]


def final_objective(step, outer, state0, num_steps: int, *, structured: bool) -> Callable:
    """``hparams -> (outer(state_T, hparams), bad_step)``: the function every method differentiates."""

    def f(hparams):
        s0 = _unroll.initial_state(state0, hparams)
        state, bad = _unroll.unroll(step, s0, hparams, num_steps, structured=structured)
        return outer(state, hparams), bad

    return f


class Method(abc.ABC):
    """A way of computing ``d outer(state_T(hparams), hparams) / d hparams``."""

    @abc.abstractmethod
    def value_and_grad(
        self, step, outer, state0: Any, hparams: Any, num_steps: int
    ) -> tuple[jax.Array, Any, jax.Array]:
        """Return ``(outer_value, grads, bad_step)``; ``grads`` is shaped like ``hparams``.

        ``bad_step`` is the first inner step whose result was non-finite, or ``-1``.
        """

    def check(self, num_steps: int) -> None:
        """Raise for settings that do not fit ``num_steps`` (called before any computation)."""
