"""Reverse-mode hypergradients through the whole unrolled inner loop."""

from __future__ import annotations

import dataclasses

import jax

from hgrad.methods.base import Method, final_objective

__all__ = ["Reverse"]


@dataclasses.dataclass(frozen=True)
class Reverse(Method):
    r"""Reverse-mode differentiation of the unrolled loop (RMD; backpropagation through training).

    With :math:`s_{t+1} = \Phi_t(s_t, \lambda)` and :math:`f(\lambda) = E(s_T, \lambda)`, the
    adjoints :math:`p_T = \nabla_s E`, :math:`p_t = (\partial_s \Phi_t)^\top p_{t+1}` give

    .. math:: \nabla f = \nabla_\lambda E + \sum_{t} (\partial_\lambda \Phi_t)^\top p_{t+1}.

    Time: about two to three times the inner loop. Memory: the whole trajectory (grows with T);
    use :class:`~hgrad.Checkpointed` when that is too much. Differentiates every hyperparameter the
    loop touches: step sizes, momenta, their schedules, the initialization (when ``state0`` is a
    function of ``hparams``) and the training loss's own hyperparameters.

    Args:
      structured: use the step's structured reverse sweep when it has one (the ready-made
        dynamics in :mod:`hgrad.dynamics` do: one Hessian-vector product per step). ``False``
        forces the generic reverse-over-reverse through ``lax.scan``.

    References:
      Franceschi, Donini, Frasconi, Pontil. Forward and reverse gradient-based hyperparameter
      optimization. ICML 2017 (section 2.1). Domke. Generic methods for optimization-based
      modeling. AISTATS 2012.
    """

    structured: bool = True

    def value_and_grad(self, step, outer, state0, hparams, num_steps):
        f = final_objective(step, outer, state0, num_steps, structured=self.structured)
        (value, bad), grads = jax.value_and_grad(f, has_aux=True)(hparams)
        return value, grads, bad
