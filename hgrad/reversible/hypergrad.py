r"""Hypergradients by reversible learning (Maclaurin, Duvenaud & Adams, ICML 2015, Algorithm 2).

The inner loop is SGD with momentum in the paper's convention,

.. math:: v_{t+1} = \gamma_t v_t - (1 - \gamma_t) \nabla_w L(w_t, \lambda, t), \qquad
          w_{t+1} = w_t + \alpha_t v_{t+1}, \qquad v_0 = 0,

run in exact fixed-point arithmetic (:mod:`hgrad.reversible.exact`). The reverse sweep starts from
:math:`w_T, v_T` and the information buffer and walks back, restoring :math:`w_t, v_t` bit for bit
while it accumulates, with :math:`\bar w = \nabla_w E(w_T)`, :math:`\bar v = 0`,

.. math::
   \bar\alpha_t = \bar w \cdot v_{t+1}, \quad \bar v \mathrel{+}= \alpha_t \bar w, \quad
   \bar\gamma_t = \bar v \cdot (v_t + \nabla L_t), \quad
   \bar w \mathrel{-}= (1 - \gamma_t) H_t \bar v, \quad
   \bar\lambda \mathrel{-}= (1 - \gamma_t) (\partial_\lambda \nabla_w L_t)^\top \bar v, \quad
   \bar v \leftarrow \gamma_t \bar v,

and finally :math:`\bar\lambda \mathrel{+}= (\partial_\lambda w_0)^\top \bar w` for initialization
hyperparameters. :math:`H_t \bar v` and the mixed term come from one forward-over-reverse product,
whose primal output is the gradient the reversal needs. Memory holds the current state, the
adjoints and the buffer: it does not grow with a stored trajectory, only with the buffer, by about
:math:`\log_2(1/\gamma)` bits per weight and step.

The hyperparameters (:class:`ReversibleHparams`): log step sizes and logit momenta, each a scalar, a
per-step schedule, or a pytree prefix of the parameters (per parameter group, e.g. per layer and
separately for weights and biases) of either; the training loss's hyperparameters (per-weight L2
strengths, the training data itself); and those of the initialization (``params0`` may be a
function of the hyperparameters: init scales).
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from hgrad import _checks
from hgrad.dynamics.base import at_step, broadcast_to_params
from hgrad.dynamics.hparams import log_positive, logit_unit
from hgrad.reversible import buffer as B
from hgrad.reversible import exact as E

__all__ = ["ReversibleHparams", "ReversibleResult", "FixedPointOverflowError", "init_hparams",
           "reversible_hypergrad"]


class FixedPointOverflowError(OverflowError):
    """A weight, velocity or gradient term left the fixed-point range, or the buffer was full."""


class ReversibleHparams(NamedTuple):
    """Hyperparameters of reversible SGD with momentum (see the module docstring)."""

    log_lr: Any
    logit_momentum: Any
    loss: Any = ()
    init: Any = ()


class ReversibleResult(NamedTuple):
    """What :func:`reversible_hypergrad` returns.

    Attributes:
      value: the outer objective :math:`E(w_T, \\lambda)`.
      grads: its gradient, a :class:`ReversibleHparams` like the input.
      final_params: :math:`w_T` (float, the parameters' structure and dtype).
      buffer_bits: information held in the buffer after the forward run, summed over weights.
      bits_per_weight_per_step: ``buffer_bits / (num_weights * num_steps)``; the entropy bound
        is :math:`\\log_2(1/\\gamma)` averaged over steps.
      buffer_capacity_bits: the memory allocated to the buffer (fixed-size arrays), in bits.
      exact: whether the reverse sweep ended exactly at :math:`w_0`, :math:`v_0 = 0` and an empty
        buffer (it always should; ``False`` would mean the gradient was not recomputed bit for bit).
    """

    value: jax.Array
    grads: ReversibleHparams
    final_params: Any
    buffer_bits: jax.Array
    bits_per_weight_per_step: jax.Array
    buffer_capacity_bits: int
    exact: jax.Array


def init_hparams(lr, momentum, *, loss: Any = (), init: Any = (), num_steps: int | None = None,
                 dtype=None) -> ReversibleHparams:
    """Hyperparameters from step sizes > 0 and momenta in (0, 1), checked and stored as log / logit.

    Args:
      lr: :math:`\\alpha`: a number or a pytree of numbers (per parameter group).
      momentum: :math:`\\gamma`, strictly inside (0, 1) (exact reversal divides by it).
      loss, init: the training loss's and the initialization's hyperparameters, kept as given.
      num_steps: if given, make both schedules of that many (equal) entries.
    """
    for leaf in jax.tree.leaves(momentum):
        g = np.asarray(leaf, np.float64)
        if not np.all((g > 0) & (g < 1)):
            raise ValueError(f"momentum must lie strictly between 0 and 1 for exact reversal "
                             f"(the reverse step divides by it), got {g}")
    return ReversibleHparams(log_positive(lr, "lr", num_steps, dtype),
                             logit_unit(momentum, "momentum", num_steps, dtype), loss, init)


def _per_weight(tree: Any, params: Any, name: str, t: jax.Array) -> jax.Array:
    """A per-group, per-step hyperparameter at step ``t`` as one float64 entry per weight."""
    full = broadcast_to_params(tree, params, name)
    leaves = jax.tree.map(lambda h, p: jnp.broadcast_to(at_step(h, t), jnp.shape(p)), full, params)
    return ravel_pytree(leaves)[0].astype(jnp.float64)


def _check_schedules(hparams: ReversibleHparams, params: Any, num_steps: int) -> None:
    for name in ("log_lr", "logit_momentum"):
        tree = getattr(hparams, name)
        broadcast_to_params(tree, params, name)
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
            if jnp.shape(leaf) not in ((), (num_steps,)):
                raise ValueError(f"hparams.{name}{jax.tree_util.keystr(path)} has shape {jnp.shape(leaf)}; "
                                 f"it must be a scalar or a schedule of shape ({num_steps},)")


def buffer_words_needed(hparams: ReversibleHparams, params: Any, num_steps: int, momentum_bits: int) -> int:
    """Words (32 bits) per weight that the buffer needs: the bound on the bits the decay destroys,
    :math:`\\sum_t \\log_2(2^k / n_t) + 0.01 T`, for the smallest momentum of each step, plus slack."""
    broadcast_to_params(hparams.logit_momentum, params, "logit_momentum")
    logits = [np.broadcast_to(np.asarray(leaf, np.float64), (num_steps,))
              for leaf in jax.tree.leaves(hparams.logit_momentum)]
    gammas = 1 / (1 + np.exp(-np.min(np.stack(logits), axis=0)))
    n = np.clip(np.round(gammas * 2.0 ** momentum_bits), 2, 2 ** momentum_bits - 1)
    bits = float(np.sum(np.log2(2.0 ** momentum_bits / n))) + 0.01 * num_steps
    return math.ceil(bits / 32) + 2


def reversible_hypergrad(loss: Callable, outer: Callable, params0: Any, hparams: ReversibleHparams,
                         num_steps: int, *, radix_bits: int = 52, momentum_bits: int = 16,
                         buffer_words: int | None = None) -> ReversibleResult:
    """The hypergradient of ``outer(w_T, hparams)`` through reversible SGD with momentum.

    Args:
      loss: ``loss(params, hparams, t)``, the training loss at step ``t`` (pick the mini-batch
        from ``t``).
      outer: ``outer(params, hparams)``, a real scalar.
      params0: the initial parameters (a pytree of float arrays), or a function of ``hparams``
        returning them (initialization hyperparameters in ``hparams.init``).
      hparams: a :class:`ReversibleHparams` (see :func:`init_hparams`).
      num_steps: :math:`T`.
      radix_bits: :math:`R`, fractional bits of the fixed-point weights and velocities; every
        value must stay below :math:`2^{62-R}` in magnitude (1024 at the default).
      momentum_bits: :math:`k`: momenta are rounded to multiples of :math:`2^{-k}`.
      buffer_words: 32-bit words per weight for the buffer; by default the bound computed from
        the momenta (which must then be concrete).

    Raises:
      hgrad.DivergenceError: the loss or its gradient became non-finite (naming the step).
      FixedPointOverflowError: a value left the fixed-point range (naming the step).
    """
    num_steps = _checks.check_num_steps(num_steps)
    _checks.check_floating(hparams, "hparams")
    _checks.check_finite(hparams, "hparams")
    if not isinstance(hparams, ReversibleHparams):
        raise TypeError("hparams must be a hgrad.reversible.ReversibleHparams (see init_hparams)")
    if not 8 <= momentum_bits <= 28:
        raise ValueError(f"momentum_bits must be between 8 and 28, got {momentum_bits}")
    if not 8 <= radix_bits <= 60:
        raise ValueError(f"radix_bits must be between 8 and 60, got {radix_bits}")
    with jax.enable_x64(True):
        template = params0(hparams) if callable(params0) else params0
        _checks.check_finite(template, "params0")
        _check_schedules(hparams, template, num_steps)
        if buffer_words is None:
            if any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(hparams.logit_momentum)):
                raise ValueError("the buffer's size is computed from the momenta, which are traced here "
                                 "(under jit or grad): pass buffer_words (see buffer_words_needed)")
            buffer_words = buffer_words_needed(hparams, template, num_steps, momentum_bits)
        config = (loss, outer, params0 if callable(params0) else None, num_steps, radix_bits,
                  momentum_bits, int(buffer_words))
        init = None if callable(params0) else params0
        state, diverged, overflowed = _forward(config, hparams, init)
        _checks.raise_if_diverged(diverged, num_steps, "training loss or gradient")
        _raise_if_overflowed(overflowed, num_steps, radix_bits)
        return _reverse(config, hparams, init, state)


def _raise_if_overflowed(step, num_steps: int, radix_bits: int) -> None:
    def check(step):
        step = int(np.asarray(step))
        if step >= 0:
            raise FixedPointOverflowError(
                f"fixed-point overflow at step {step} of {num_steps}: a weight, velocity or gradient "
                f"term exceeded 2^{62 - radix_bits} in magnitude (radix_bits={radix_bits}), or the "
                "information buffer was full. Lower radix_bits, or the step size, or pass a larger "
                "buffer_words.")

    if isinstance(step, jax.core.Tracer):
        jax.debug.callback(check, step)
    else:
        check(step)


def _setup(config, hparams, init):
    loss, outer, params0_fn, num_steps, radix_bits, momentum_bits, words = config
    params0 = params0_fn(hparams) if params0_fn is not None else init
    flat0, unravel = ravel_pytree(params0)
    dtype = flat0.dtype

    def as_params(w_int):
        return unravel(E.to_float(w_int, radix_bits).astype(dtype))

    def rates(h, t):
        alpha = jnp.exp(_per_weight(h.log_lr, params0, "log_lr", t))
        gamma = jax.nn.sigmoid(_per_weight(h.logit_momentum, params0, "logit_momentum", t))
        return alpha, gamma

    return params0, flat0, as_params, rates


@functools.partial(jax.jit, static_argnums=0)
def _forward(config, hparams, init):
    loss, outer, params0_fn, num_steps, radix_bits, momentum_bits, words = config
    params0, flat0, as_params, rates = _setup(config, hparams, init)
    kw = dict(momentum_bits=momentum_bits, radix_bits=radix_bits)
    w0, bad0 = E.to_fixed(flat0, radix_bits)
    state0 = E.ExactState(w0, jnp.zeros_like(w0), B.empty(flat0.size, words))

    def body(state, t):
        value, grad = jax.value_and_grad(loss)(as_params(state.w), hparams, t)
        grad = ravel_pytree(grad)[0].astype(jnp.float64)
        alpha, gamma = rates(hparams, t)
        state, overflow = E.step(state, grad, alpha, E.momentum_numerator(gamma, momentum_bits), **kw)
        finite = jnp.isfinite(value) & jnp.all(jnp.isfinite(grad))
        return state, (finite, ~overflow)

    ts = jnp.arange(num_steps, dtype=jnp.int32)
    state, (finite, fits) = jax.lax.scan(body, state0, ts)
    fits = fits.at[0].set(fits[0] & ~bad0)
    return state, _checks.first_nonfinite_step(finite, ts), _checks.first_nonfinite_step(fits, ts)


@functools.partial(jax.jit, static_argnums=0)
def _reverse(config, hparams, init, final_state):
    loss, outer, params0_fn, num_steps, radix_bits, momentum_bits, words = config
    params0, flat0, as_params, rates = _setup(config, hparams, init)
    kw = dict(momentum_bits=momentum_bits, radix_bits=radix_bits)
    ravel = lambda tree: ravel_pytree(tree)[0].astype(jnp.float64)  # noqa: E731
    final_params = as_params(final_state.w)
    value, (w_bar_tree, h_bar) = jax.value_and_grad(outer, argnums=(0, 1))(final_params, hparams)
    grad_loss = jax.grad(loss, argnums=(0, 1))

    def body(carry, t):
        state, w_bar, v_bar, h_bar = carry
        v_next = E.to_float(state.v, radix_bits)
        (alpha, gamma), rates_vjp = jax.vjp(lambda h: rates(h, t), hparams)
        state = E.unstep_position(state, alpha)
        alpha_bar = w_bar * v_next
        v_bar = v_bar + alpha * w_bar
        params = as_params(state.w)
        # One forward-over-reverse product: the gradient (needed bit for bit to undo the velocity
        # update), H v_bar and the mixed term, all at the restored w_t.
        flat_params, unravel = ravel_pytree(params)
        tangent = unravel((-(1 - gamma) * v_bar).astype(flat_params.dtype))
        (grad, _), (hvp, mixed) = jax.jvp(lambda w: grad_loss(w, hparams, t), (params,), (tangent,))
        grad = ravel(grad)
        n = E.momentum_numerator(gamma, momentum_bits)
        state, _ = E.unstep_velocity(state, grad, n, **kw)
        v_prev = E.to_float(state.v, radix_bits)
        gamma_bar = v_bar * (v_prev + grad)
        (h_rates,) = rates_vjp((alpha_bar, gamma_bar))
        h_bar = jax.tree.map(jnp.add, h_bar, jax.tree.map(jnp.add, h_rates, mixed))
        w_bar = w_bar + ravel(hvp)
        v_bar = gamma * v_bar
        return (state, w_bar, v_bar, h_bar), None

    carry0 = (final_state, ravel(w_bar_tree), jnp.zeros_like(flat0, jnp.float64), h_bar)
    ts = jnp.arange(num_steps, dtype=jnp.int32)
    (state, w_bar, _, h_bar), _ = jax.lax.scan(body, carry0, ts, reverse=True)
    if params0_fn is not None:
        _, init_vjp = jax.vjp(lambda h: ravel(params0_fn(h)), hparams)
        (h_init,) = init_vjp(w_bar)
        h_bar = jax.tree.map(jnp.add, h_bar, h_init)
    w0, _ = E.to_fixed(flat0, radix_bits)
    exact = (jnp.all(state.w == w0) & jnp.all(state.v == 0) & jnp.all(state.buffer.count == 0)
             & jnp.all(state.buffer.head == jnp.uint64(B.HEAD_LOW)))
    bits = jnp.sum(B.size_in_bits(final_state.buffer))
    return ReversibleResult(
        value=value, grads=h_bar, final_params=final_params, buffer_bits=bits,
        bits_per_weight_per_step=bits / (flat0.size * num_steps),
        buffer_capacity_bits=32 * words * flat0.size + 96 * flat0.size, exact=exact,
    )
