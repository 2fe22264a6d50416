"""Running an inner loop: ``state_{t+1} = step(state_t, hparams, t)`` for ``t = start, ..., start+T-1``.

Every hypergradient method differentiates through (a part of) this loop. The loop carries, beside
the state, the index of the first step whose result is non-finite (``-1`` while none is), so that a
diverging run is reported with the step where it happened rather than as silent NaNs.

A step may be a plain function or a :class:`hgrad.dynamics.Dynamics`, whose ``unroll`` can replace
the generic scan with a structured one (for example, a reverse sweep made of Hessian-vector
products instead of reverse-over-reverse through stored activations). ``structured=True`` asks for
it; forward-mode methods, which must push tangents through the loop, use the generic scan.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from hgrad import _checks

__all__ = ["unroll", "scan_unroll", "initial_state"]

Step = Callable[[Any, Any, jax.Array], Any]


def scan_unroll(step: Step, state0: Any, hparams: Any, num_steps: int, start: Any = 0):
    """Apply ``step`` ``num_steps`` times with ``lax.scan``.

    Args:
      step: ``step(state, hparams, t) -> state``.
      state0: the initial state (a pytree).
      hparams: the hyperparameters (a pytree), the same at every step.
      num_steps: a Python int, the number of steps.
      start: the index of the first step (an int or a traced int32 scalar).

    Returns:
      ``(state, bad_step)``: the final state and the first step (an int32 scalar) whose output was
      non-finite, or ``-1``.
    """

    def body(state, t):
        state = step(state, hparams, t)
        return state, _checks.tree_all_finite(state)

    ts = jnp.arange(num_steps, dtype=jnp.int32) + jnp.asarray(start, jnp.int32)
    state, finite = jax.lax.scan(body, state0, ts)
    return state, _checks.first_nonfinite_step(finite, ts)


def unroll(
    step: Step,
    state0: Any,
    hparams: Any,
    num_steps: int,
    start: Any = 0,
    *,
    structured: bool = True,
):
    """Run the inner loop, through the step's own structured unroll when it has one.

    See :func:`scan_unroll` for the arguments and the return value.
    """
    custom = getattr(step, "unroll", None) if structured else None
    if custom is not None:
        return custom(state0, hparams, num_steps, start)
    return scan_unroll(step, state0, hparams, num_steps, start)


def initial_state(state0: Any, hparams: Any) -> Any:
    """``state0(hparams)`` when the initial state is a function of the hyperparameters, else ``state0``.

    Making the initial state a function of ``hparams`` is how initialization hyperparameters
    (weight scales, the initial weights themselves) are differentiated.
    """
    return state0(hparams) if callable(state0) else state0
