"""Real-time hyperparameter optimization (RTHO): tune hyperparameters during one training run."""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from hgrad import _checks
from hgrad.hypergrad import validate

__all__ = ["rtho", "RTHOResult"]


class RTHOResult(NamedTuple):
    """What :func:`rtho` returns.

    Attributes:
      state: the inner state after all ``num_steps`` steps.
      hparams: the hyperparameters after the last hyper-step.
      hparams_history: the hyperparameters after each hyper-step (leaves stacked on a leading axis
        of length ``num_steps // hyper_every``).
      outer_history: the outer objective at each hyper-step, before the update.
    """

    state: Any
    hparams: Any
    hparams_history: Any
    outer_history: jax.Array


def _tangent_dot(tangents: Any, cotangent: Any) -> jax.Array:
    """``sum_leaves <Z_leaf[i], c_leaf>`` for each tangent ``i``: ``Z^T c``, shape ``(m,)``."""
    parts = [
        jnp.tensordot(z, c, axes=c.ndim) for z, c in zip(jax.tree.leaves(tangents), jax.tree.leaves(cotangent))
    ]
    return functools.reduce(jnp.add, parts)


@functools.partial(jax.jit, static_argnums=(0, 1, 4, 5, 6, 7))
def _run(step, outer, state0, hparams, num_steps, optimizer, hyper_every, project):
    flat, unravel = ravel_pytree(hparams)
    m = flat.size
    basis = jnp.eye(m, dtype=flat.dtype)

    def tangent_step(state, tangents, x, t):
        def f(s, x):
            return step(s, unravel(x), t)

        return jax.vmap(lambda z, e: jax.jvp(f, (state, x), (z, e)), out_axes=(None, 0))(
            tangents, basis
        )

    def block(carry, block_index):
        state, tangents, x, opt_state, bad = carry

        def inner(c, t):
            state, tangents = tangent_step(*c, x, t)
            return (state, tangents), _checks.tree_all_finite(state)

        ts = block_index * hyper_every + jnp.arange(hyper_every, dtype=jnp.int32)
        (state, tangents), finite = jax.lax.scan(inner, (state, tangents), ts)
        bad = jnp.where(bad >= 0, bad, _checks.first_nonfinite_step(finite, ts))
        value, (grad_state, grad_x) = jax.value_and_grad(
            lambda s, x: outer(s, unravel(x)), argnums=(0, 1)
        )(state, x)
        hypergrad = grad_x + _tangent_dot(tangents, grad_state)
        updates, opt_state = optimizer.update(hypergrad, opt_state, x)
        x = optax.apply_updates(x, updates)
        if project is not None:
            x = ravel_pytree(project(unravel(x)))[0]
        return (state, tangents, x, opt_state, bad), (x, value)

    tangents0 = jax.tree.map(lambda s: jnp.zeros((m,) + jnp.shape(s), jnp.result_type(s)), state0)
    init = (state0, tangents0, flat, optimizer.init(flat), jnp.asarray(-1, jnp.int32))
    blocks = jnp.arange(num_steps // hyper_every, dtype=jnp.int32)
    (state, _, x, _, bad), (xs, values) = jax.lax.scan(block, init, blocks)
    history = jax.vmap(unravel)(xs)
    return RTHOResult(state, unravel(x), history, values), bad


def rtho(
    step: Callable[[Any, Any, jax.Array], Any],
    outer: Callable[[Any, Any], jax.Array],
    state0: Any,
    hparams: Any,
    num_steps: int,
    *,
    optimizer: optax.GradientTransformation,
    hyper_every: int = 1,
    project: Optional[Callable[[Any], Any]] = None,
) -> RTHOResult:
    r"""Optimize ``hparams`` *during* a single run of the inner loop, from forward-mode tangents.

    The tangents :math:`Z_t = d s_t / d\lambda` of forward mode (:class:`hgrad.Forward`) are
    carried along the run; every ``hyper_every`` steps the hypergradient of the outer objective at
    the current state, :math:`Z_t^\top \nabla_s E(s_t) + \nabla_\lambda E`, is handed to
    ``optimizer`` and the hyperparameters change *without restarting* training. The tangents are
    not reset after an update, as in the paper: an approximation that is exact for the first
    hyper-step and improves as the hyperparameters settle. Cost: one training run with
    ``m`` tangents (``m`` scalar hyperparameters), memory ``m`` times the state.

    Args:
      step: ``step(state, hparams, t) -> state``, as for :func:`hgrad.hypergrad`.
      outer: ``outer(state, hparams) -> scalar``, evaluated at every hyper-step.
      state0: the initial state (a pytree; not a function of ``hparams`` here).
      hparams: the initial hyperparameters (unconstrained, floating point).
      num_steps: the length of the single training run; a multiple of ``hyper_every``.
      optimizer: an optax transformation for the hyperparameters (e.g. ``optax.adam(0.01)``),
        applied to their flattened vector.
      hyper_every: inner steps between hyper-steps.
      project: an optional map applied to ``hparams`` after each hyper-step (a projection onto a
        constraint set).

    Returns:
      An :class:`RTHOResult`.

    References:
      Franceschi, Donini, Frasconi, Pontil. Forward and reverse gradient-based hyperparameter
      optimization. ICML 2017 (section 3, real-time HO). Williams, Zipser. A learning algorithm
      for continually running fully recurrent neural networks. 1989.
    """
    if callable(state0):
        raise TypeError("rtho needs a concrete initial state, not a function of hparams")
    num_steps = validate(step, outer, state0, hparams, num_steps)
    hyper_every = _checks.check_num_steps(hyper_every, "hyper_every")
    if num_steps % hyper_every:
        raise ValueError(
            f"num_steps ({num_steps}) must be a multiple of hyper_every ({hyper_every})"
        )
    result, bad = _run(step, outer, state0, hparams, num_steps, optimizer, hyper_every, project)
    _checks.raise_if_diverged(bad, num_steps)
    return result
