"""Gradient descent as inner dynamics: ``w_{t+1} = w_t - eta_t grad L(w_t, lambda, t)``."""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from hgrad.dynamics.base import Dynamics, Loss, at_step, broadcast_to_params
from hgrad.dynamics.hparams import log_positive

__all__ = ["GradientDescent", "GDHparams"]


class GDHparams(NamedTuple):
    """Hyperparameters of :class:`GradientDescent`, stored unconstrained.

    Attributes:
      log_lr: log step size: a scalar, a schedule of shape ``(T,)``, or a pytree of those that is a
        prefix of the parameters' structure (one step size per parameter group).
      loss: the training loss's own hyperparameters (any pytree; e.g. a log L2 strength or
        per-example weights), read by ``loss(params, hparams, t)`` as ``hparams.loss``.
    """

    log_lr: Any
    loss: Any = ()


@dataclasses.dataclass(frozen=True, eq=False)
class GradientDescent(Dynamics):
    r"""Gradient descent on ``loss(params, hparams, t)``, the state being the parameters.

    .. math:: w_{t+1} = w_t - \eta_t \nabla_w L(w_t, \lambda, t), \qquad \eta_t = e^{\text{log\_lr}_t}.

    Mini-batches are chosen by the step index ``t`` inside ``loss`` (see :class:`hgrad.dynamics.Batches`).
    Differentiable w.r.t. the step sizes (constant, per step, per parameter group), the initial
    parameters and every hyperparameter of the loss. Its reverse sweep costs one Hessian-vector
    product per step (:class:`hgrad.dynamics.Dynamics`).

    Example:
      >>> import jax.numpy as jnp
      >>> from hgrad.dynamics import GradientDescent
      >>> gd = GradientDescent(lambda w, h, t: 0.5 * jnp.sum(w ** 2))
      >>> h = gd.init_hparams(lr=0.5)
      >>> gd(jnp.ones(2), h, 0)
      Array([0.5, 0.5], dtype=float32)
    """

    loss: Loss
    schedule_fields = ("log_lr",)

    @staticmethod
    def init_hparams(lr, loss: Any = (), *, num_steps: int | None = None, dtype=None) -> GDHparams:
        """Hyperparameters from a positive step size (or a pytree of them per group).

        Args:
          lr: the step size(s), > 0.
          loss: the loss's hyperparameters, kept as given.
          num_steps: if given, make the step size a schedule of that many (equal) entries.
          dtype: the floating dtype of the stored values (JAX's default float if None).
        """
        return GDHparams(log_lr=log_positive(lr, "lr", num_steps, dtype), loss=loss)

    def params_of(self, state):
        return state

    def update(self, state, grad, hparams, t):
        lrs = broadcast_to_params(hparams.log_lr, state, "log_lr")
        return jax.tree.map(lambda w, g, h: w - jnp.exp(at_step(h, t)) * g, state, grad, lrs)
