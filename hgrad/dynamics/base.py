r"""Gradient-based inner dynamics with a structured reverse sweep.

A :class:`Dynamics` is an inner loop of the form

.. math:: g_t = \nabla_w L(w_t, \lambda, t), \qquad s_{t+1} = U(s_t, g_t, \lambda, t),

where :math:`w_t` = ``params_of(s_t)`` are the model's parameters, :math:`L` the training loss and
:math:`U` an element-wise optimizer update (gradient descent, heavy-ball momentum). It is a valid
``step`` for :func:`hgrad.hypergrad` as it stands (``dyn(state, hparams, t)``), and it also
provides ``unroll``, a loop with a custom reverse sweep that uses this structure. Given the
adjoint :math:`\hat s_{t+1}`, one reverse step is

.. math::
   a = (\partial_g U)^\top \hat s_{t+1}, \qquad
   \hat s_t = (\partial_s U)^\top \hat s_{t+1} + (\partial_s w)^\top H_t a, \qquad
   \hat\lambda \mathrel{+}= (\partial_\lambda U)^\top \hat s_{t+1}
       + (\partial_\lambda \nabla_w L)^\top a,

where :math:`H_t a` and the mixed term come from *one* forward-over-reverse product, the
Jacobian-vector product of :math:`(w, \lambda) \mapsto (\nabla_w L, \nabla_\lambda L)` along
:math:`(a, 0)`; it also returns :math:`g_t`, so the gradient is not recomputed. The forward pass
stores only the states :math:`s_t`, not the loss's activations, and the reverse sweep costs
about one Hessian-vector product per step, close to the floor of three training steps for a
hypergradient.
"""

from __future__ import annotations

import abc
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp

from hgrad import _checks

__all__ = ["Dynamics", "Loss", "at_step", "broadcast_to_params"]

Loss = Callable[[Any, Any, jax.Array], jax.Array]


def at_step(h: jax.Array, t: jax.Array) -> jax.Array:
    """A hyperparameter at step ``t``: itself if a scalar, its ``t``-th entry if a schedule."""
    return h if jnp.ndim(h) == 0 else h[t]


def broadcast_to_params(tree: Any, params: Any, name: str) -> Any:
    """Broadcast a per-group hyperparameter ``tree`` (a prefix of ``params``' structure) to it."""
    try:
        return jax.tree.broadcast(tree, params)
    except (ValueError, TypeError) as err:
        raise ValueError(
            f"hparams.{name} must be one array for all parameters or a pytree whose structure is "
            f"a prefix of the parameters' (one entry per parameter group); got "
            f"{jax.tree.structure(tree)} against parameters {jax.tree.structure(params)}"
        ) from err


def _add(a: Any, b: Any) -> Any:
    return jax.tree.map(jnp.add, a, b)


class Dynamics(abc.ABC):
    """Base class of gradient-based inner loops with a structured reverse sweep.

    Subclasses give the training loss (``self.loss``), which part of the state holds the
    parameters, the element-wise update, and which hyperparameter fields are schedules.
    Instances are hashable by identity, so they can be static arguments of ``jax.jit``.
    """

    loss: Loss
    schedule_fields: tuple[str, ...] = ()

    @abc.abstractmethod
    def params_of(self, state: Any) -> Any:
        """The model parameters inside ``state``."""

    @abc.abstractmethod
    def update(self, state: Any, grad: Any, hparams: Any, t: jax.Array) -> Any:
        """The element-wise optimizer update ``U(state, grad, hparams, t)``."""

    def grad_from_states(self, state: Any, next_state: Any, hparams: Any, t: jax.Array) -> Any:
        """The gradient of step ``t`` recovered from the states before and after it, or ``None``.

        When an update lets the gradient be read back stably (momentum: ``g = v_{t+1} - mu v_t``,
        accurate to the rounding of ``v``), the reverse sweep uses it instead of the gradient
        recomputed with the Hessian-vector product, whose own primal output XLA then drops: one
        matrix product fewer per layer and step. ``None`` (the default) means: recompute.
        """
        return None

    # -- the step, as any hgrad.hypergrad step ------------------------------------------------
    def __call__(self, state: Any, hparams: Any, t: jax.Array) -> Any:
        grad = jax.grad(self.loss)(self.params_of(state), hparams, t)
        return self.update(state, grad, hparams, t)

    def check(self, state0: Any, hparams: Any, num_steps: int) -> None:
        """Check schedules have one entry per step and per-group values fit the parameters."""
        params = self.params_of(state0)
        for name in self.schedule_fields:
            tree = getattr(hparams, name)
            broadcast_to_params(tree, params, name)
            for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
                shape = jnp.shape(leaf)
                if shape not in ((), (num_steps,)):
                    raise ValueError(
                        f"hparams.{name}{jax.tree_util.keystr(path)} has shape {shape}; it must "
                        f"be a scalar (constant) or a schedule of shape ({num_steps},), one entry "
                        f"per inner step"
                    )

    # -- the structured loop --------------------------------------------------------------------
    def unroll(self, state0: Any, hparams: Any, num_steps: int, start: Any = 0):
        """Run ``num_steps`` steps from ``start``; see :func:`hgrad.unroll.scan_unroll`.

        Differentiating the result in reverse mode uses the structured sweep described in the
        module docstring (it is a ``jax.custom_vjp``; forward mode goes through the generic scan).
        """
        return _structured_unroll(self, num_steps, state0, hparams, jnp.asarray(start, jnp.int32))

    def _forward(self, state0, hparams, num_steps, start, keep: bool):
        def body(state, t):
            value, grad = jax.value_and_grad(self.loss)(self.params_of(state), hparams, t)
            new = self.update(state, grad, hparams, t)
            finite = jnp.isfinite(value) & _checks.tree_all_finite(self.params_of(new))
            return new, (finite, state if keep else None)

        ts = start + jnp.arange(num_steps, dtype=jnp.int32)
        state, (finite, trajectory) = jax.lax.scan(body, state0, ts)
        return state, _checks.first_nonfinite_step(finite, ts), trajectory

    def _reverse(self, hparams, num_steps, start, trajectory, final_state, state_bar):
        grad_loss = jax.grad(self.loss, argnums=(0, 1))

        def body(carry, xs):
            s_bar, h_bar, next_state = carry
            t, state = xs
            params = self.params_of(state)
            zero_grad = jax.tree.map(jnp.zeros_like, params)
            # a = (dU/dg)^T s_bar: U is linear in g, so the value of g does not matter here.
            _, vjp_g = jax.vjp(lambda g: self.update(state, g, hparams, t), zero_grad)
            (a,) = vjp_g(s_bar)
            # one forward-over-reverse product: g_t, H_t a and (d grad_w L / d lambda)^T a.
            (grad, _), (hvp, mixed) = jax.jvp(
                lambda w: grad_loss(w, hparams, t), (params,), (a,)
            )
            recovered = self.grad_from_states(state, next_state, hparams, t)
            if recovered is not None:
                grad = recovered
            _, vjp_sh = jax.vjp(lambda s, h: self.update(s, grad, h, t), state, hparams)
            s_prev_bar, h_bar_update = vjp_sh(s_bar)
            _, vjp_p = jax.vjp(self.params_of, state)
            (hvp_state,) = vjp_p(hvp)
            s_prev_bar = _add(s_prev_bar, hvp_state)
            h_bar = _add(h_bar, _add(h_bar_update, mixed))
            return (s_prev_bar, h_bar, state), None

        ts = start + jnp.arange(num_steps, dtype=jnp.int32)
        h_bar0 = jax.tree.map(jnp.zeros_like, hparams)
        (s0_bar, h_bar, _), _ = jax.lax.scan(
            body, (state_bar, h_bar0, final_state), (ts, trajectory), reverse=True
        )
        return s0_bar, h_bar

    def __hash__(self):
        return id(self)

    def __eq__(self, other):
        return self is other


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _structured_unroll(dyn: Dynamics, num_steps: int, state0, hparams, start):
    state, bad, _ = dyn._forward(state0, hparams, num_steps, start, keep=False)
    return state, bad


def _structured_fwd(dyn, num_steps, state0, hparams, start):
    state, bad, trajectory = dyn._forward(state0, hparams, num_steps, start, keep=True)
    return (state, bad), (hparams, start, trajectory, state)


def _structured_bwd(dyn, num_steps, residuals, cotangents):
    hparams, start, trajectory, final_state = residuals
    state_bar, _ = cotangents  # the second is bad_step's (integer, float0) cotangent
    s0_bar, h_bar = dyn._reverse(hparams, num_steps, start, trajectory, final_state, state_bar)
    return s0_bar, h_bar, None


_structured_unroll.defvjp(_structured_fwd, _structured_bwd)
