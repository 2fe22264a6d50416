"""``hgrad.hypergrad``: the gradient of a validation objective through an inner training loop."""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp

from hgrad import _checks
from hgrad.methods import Method, Reverse

__all__ = ["hypergrad", "validate"]


def validate(step, outer, state0, hparams, num_steps) -> int:
    """Check the problem before any computation; return ``num_steps`` as an int.

    Raises ``TypeError``/``ValueError`` for: a non-positive or non-integer ``num_steps``;
    non-floating or non-finite hyperparameters; a non-finite initial state; a step that changes
    the state's structure, shapes or dtypes; an outer objective that is not a real scalar; and
    whatever the step's own ``check`` rejects (the ready-made dynamics check, for example, that a
    schedule has one entry per step).
    """
    num_steps = _checks.check_num_steps(num_steps)
    _checks.check_floating(hparams, "hparams")
    _checks.check_finite(hparams, "hparams")
    if not callable(state0):
        _checks.check_finite(state0, "state0")
    key = (step, outer, state0 if callable(state0) else None, _signature(state0), _signature(hparams), num_steps)
    try:
        _check_structure(*key)
    except TypeError as err:
        if "unhashable" not in str(err):
            raise
        _check_structure.__wrapped__(*key)  # an unhashable step or outer: check, do not remember
    return num_steps


def _signature(tree: Any):
    """A hashable abstract description of a pytree: its structure, shapes and dtypes."""
    if callable(tree):
        return None
    leaves, treedef = jax.tree.flatten(tree)
    return treedef, tuple(jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x)) for x in leaves)


def _abstract(signature):
    treedef, leaves = signature
    return jax.tree.unflatten(treedef, leaves)


@functools.lru_cache(maxsize=512)
def _check_structure(step, outer, init, state_signature, hparams_signature, num_steps) -> None:
    """The checks that depend only on shapes: done once per signature, like jit's compilation."""
    hparams = _abstract(hparams_signature)
    state0 = jax.eval_shape(init, hparams) if init is not None else _abstract(state_signature)
    step_check = getattr(step, "check", None)
    if step_check is not None:
        step_check(state0, hparams, num_steps)
    _checks.check_step_shapes(step, state0, hparams)
    _checks.check_scalar_outer(outer, state0, hparams)


@functools.partial(jax.jit, static_argnums=(0, 1, 4, 5))
def _run(step, outer, state0, hparams, num_steps, method):
    return method.value_and_grad(step, outer, state0, hparams, num_steps)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 4, 5))
def _run_with_init(step, outer, init, hparams, num_steps, method):
    return method.value_and_grad(step, outer, init, hparams, num_steps)


def hypergrad(
    step: Callable[[Any, Any, jax.Array], Any],
    outer: Callable[[Any, Any], jax.Array],
    state0: Any,
    hparams: Any,
    num_steps: int,
    *,
    method: Method = Reverse(),
) -> tuple[jax.Array, Any]:
    r"""Value and gradient of ``outer(state_T, hparams)`` with respect to ``hparams``.

    The inner loop is :math:`s_{t+1} = \mathrm{step}(s_t, \lambda, t)` for
    :math:`t = 0, \dots, T-1` from :math:`s_0`, and the hyper-objective is
    :math:`f(\lambda) = \mathrm{outer}(s_T, \lambda)`. Every method returns the same
    :math:`\nabla f` (truncated reverse mode excepted, by design); they differ in time and memory:

    ==============================  ===================  ===========================
    method                          time                 memory
    ==============================  ===================  ===========================
    :class:`~hgrad.Reverse`         ~3x the loop         the trajectory, ~T
    :class:`~hgrad.Checkpointed`    ~4x the loop         ~sqrt(T) states
    :class:`~hgrad.Forward`         ~m x the loop        m tangents, no trajectory
    :class:`~hgrad.Truncated`       ~(T + 2k) steps      ~k
    ==============================  ===================  ===========================

    (m: the number of scalar hyperparameters.) All of them differentiate any hyperparameter the
    loop touches: step sizes and momenta and their schedules, the training loss's hyperparameters,
    and the initialization when ``state0`` is a function of ``hparams``.

    Args:
      step: ``step(state, hparams, t) -> state``, one inner update; ``t`` is an int32 step index
        (use it to pick a mini-batch or a schedule entry). Any pytrees; it must keep the state's
        shapes and dtypes. A :class:`hgrad.dynamics.Dynamics` brings a faster reverse sweep.
      outer: ``outer(state, hparams) -> scalar``, the validation objective on the final state.
      state0: the initial state, or a function ``state0(hparams) -> state``.
      hparams: the hyperparameters, a pytree of floating-point arrays (store them unconstrained:
        a log step size, a logit momentum).
      num_steps: T, a positive Python int.
      method: a strategy value: :class:`~hgrad.Reverse` (default), :class:`~hgrad.Checkpointed`,
        :class:`~hgrad.Forward` or :class:`~hgrad.Truncated`.

    Returns:
      ``(outer_value, grads)`` with ``grads`` shaped like ``hparams``.

    Raises:
      TypeError, ValueError: for bad input, before any computation (see :func:`validate`).
      hgrad.DivergenceError: when the inner loop produced a non-finite state; it names the step.
        Under ``jax.jit`` it arrives wrapped in JAX's runtime error.

    The function is jit-able (``step``, ``outer``, ``num_steps`` and ``method`` static) and
    vmap-able over ``hparams``. It compiles once per (step, outer, shapes, method); keep ``step``
    and ``outer`` the same Python objects between calls to reuse the compiled code.

    Example:
      >>> import jax.numpy as jnp, hgrad
      >>> step = lambda w, lam, t: w - 0.1 * (w - 1.0 + jnp.exp(lam) * w)
      >>> outer = lambda w, lam: (w - 0.5) ** 2
      >>> value, grad = hgrad.hypergrad(step, outer, jnp.float32(0.0), jnp.float32(0.0), 100)
      >>> bool(jnp.isclose(value, 0.0, atol=1e-6)), bool(jnp.isclose(grad, 0.0, atol=1e-4))
      (True, True)

    References:
      Franceschi, Donini, Frasconi, Pontil. Forward and reverse gradient-based hyperparameter
      optimization. ICML 2017. Maclaurin, Duvenaud, Adams. Gradient-based hyperparameter
      optimization through reversible learning. ICML 2015.
    """
    if not isinstance(method, Method):
        raise TypeError(
            f"method must be a hypergradient method such as hgrad.Reverse() or hgrad.Forward(), "
            f"got {method!r}"
        )
    num_steps = validate(step, outer, state0, hparams, num_steps)
    method.check(num_steps)
    run = _run_with_init if callable(state0) else _run
    value, grads, bad = run(step, outer, state0, hparams, num_steps, method)
    _checks.raise_if_diverged(bad, num_steps)
    return value, grads
