"""SGD with (heavy-ball) momentum as inner dynamics."""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from hgrad.dynamics.base import Dynamics, Loss, at_step, broadcast_to_params
from hgrad.dynamics.hparams import log_positive, logit_unit

__all__ = ["Momentum", "MomentumState", "MomentumHparams"]


class MomentumState(NamedTuple):
    """The state of :class:`Momentum`: the parameters and their velocity (same structure)."""

    params: Any
    velocity: Any


class MomentumHparams(NamedTuple):
    """Hyperparameters of :class:`Momentum`, stored unconstrained.

    Attributes:
      log_lr: log step size; a scalar, a ``(T,)`` schedule, or a pytree of those that is a prefix of
        the parameters' structure (per parameter group).
      logit_momentum: logit of the momentum coefficient, with the same options.
      loss: the training loss's own hyperparameters, read by the loss as ``hparams.loss``.
    """

    log_lr: Any
    logit_momentum: Any
    loss: Any = ()


@dataclasses.dataclass(frozen=True, eq=False)
class Momentum(Dynamics):
    r"""SGD with heavy-ball momentum on ``loss(params, hparams, t)``.

    .. math::
       v_{t+1} = \mu_t v_t + \nabla_w L(w_t, \lambda, t), \qquad
       w_{t+1} = w_t - \eta_t v_{t+1},

    with :math:`\eta_t = e^{\text{log\_lr}_t}` and :math:`\mu_t = \sigma(\text{logit\_momentum}_t)`
    (optax's and PyTorch's convention; Maclaurin et al.'s reversible learning uses the convex
    combination :math:`v \leftarrow \gamma v - (1-\gamma)\nabla L`, a reparametrization of this one).
    Differentiable w.r.t. step sizes and momenta (constant, per step, per group), the initial
    parameters and velocity, and every hyperparameter of the loss. Its reverse sweep costs one
    Hessian-vector product per step and stores the states, not the loss's activations.

    References:
      Polyak. Some methods of speeding up the convergence of iteration methods. 1964.
      Maclaurin, Duvenaud, Adams. Gradient-based hyperparameter optimization through reversible
      learning. ICML 2015.
    """

    loss: Loss
    schedule_fields = ("log_lr", "logit_momentum")

    @staticmethod
    def init(params: Any) -> MomentumState:
        """The initial state: the given parameters at rest (zero velocity)."""
        return MomentumState(params, jax.tree.map(jnp.zeros_like, params))

    @staticmethod
    def init_hparams(
        lr, momentum, loss: Any = (), *, num_steps: int | None = None, dtype=None
    ) -> MomentumHparams:
        """Hyperparameters from a step size > 0 and a momentum in (0, 1), checked and converted.

        Args:
          lr: the step size(s), > 0 (a number, or a pytree of numbers per parameter group).
          momentum: the momentum coefficient(s), in [0, 1); 0 itself has no finite logit and is
            rejected with advice.
          loss: the loss's hyperparameters, kept as given.
          num_steps: if given, make both schedules of that many (equal) entries.
          dtype: the floating dtype of the stored values (JAX's default float if None).
        """
        return MomentumHparams(
            log_lr=log_positive(lr, "lr", num_steps, dtype),
            logit_momentum=logit_unit(momentum, "momentum", num_steps, dtype),
            loss=loss,
        )

    def params_of(self, state):
        return state.params

    def grad_from_states(self, state, next_state, hparams, t):
        mus = broadcast_to_params(hparams.logit_momentum, state.velocity, "logit_momentum")
        return jax.tree.map(
            lambda v1, v, m: v1 - jax.nn.sigmoid(at_step(m, t)) * v,
            next_state.velocity, state.velocity, mus,
        )

    def update(self, state, grad, hparams, t):
        w, v = state
        lrs = broadcast_to_params(hparams.log_lr, w, "log_lr")
        mus = broadcast_to_params(hparams.logit_momentum, w, "logit_momentum")
        v = jax.tree.map(lambda v, g, m: jax.nn.sigmoid(at_step(m, t)) * v + g, v, grad, mus)
        w = jax.tree.map(lambda w, v, h: w - jnp.exp(at_step(h, t)) * v, w, v, lrs)
        return MomentumState(w, v)
