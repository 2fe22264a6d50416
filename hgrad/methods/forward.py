"""Forward-mode hypergradients: tangents pushed through the loop, one per hyperparameter."""

from __future__ import annotations

import dataclasses
from typing import Optional

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from hgrad import _checks
from hgrad.methods.base import Method, final_objective

__all__ = ["Forward"]


@dataclasses.dataclass(frozen=True)
class Forward(Method):
    r"""Forward-mode differentiation of the unrolled loop (FMD).

    Carries :math:`Z_t = d s_t / d\lambda` alongside the state,

    .. math:: Z_{t+1} = \partial_s \Phi_t \, Z_t + \partial_\lambda \Phi_t, \qquad
              \nabla f = Z_T^\top \nabla_s E + \nabla_\lambda E,

    as Jacobian-vector products (``jax.jvp``), one tangent per scalar hyperparameter. Time grows
    with the number of hyperparameters ``m`` (about ``m`` tangent passes); memory does not grow
    with T (no trajectory is stored), but holds ``chunk_size`` tangents of the state at once. The
    better choice than :class:`~hgrad.Reverse` for few hyperparameters and long loops, and the
    basis of real-time hyperparameter optimization (:func:`hgrad.rtho`).

    Args:
      chunk_size: how many tangents to push at once (all ``m`` by default). Smaller chunks use
        less memory and recompute the primal loop once per chunk.

    References:
      Franceschi, Donini, Frasconi, Pontil. Forward and reverse gradient-based hyperparameter
      optimization. ICML 2017 (section 2.2).
    """

    chunk_size: Optional[int] = None

    def check(self, num_steps):
        if self.chunk_size is not None:
            _checks.check_num_steps(self.chunk_size, "Forward(chunk_size=...)")

    def value_and_grad(self, step, outer, state0, hparams, num_steps):
        flat, unravel = ravel_pytree(hparams)
        f = final_objective(step, outer, state0, num_steps, structured=False)

        def tangent(direction):
            (value, bad), (dvalue, _) = jax.jvp(lambda x: f(unravel(x)), (flat,), (direction,))
            return value, bad, dvalue

        push = jax.vmap(tangent, out_axes=(None, None, 0))
        m = flat.size
        chunk = min(self.chunk_size or m, m)
        num_chunks = -(-m // chunk)
        basis = jnp.eye(num_chunks * chunk, m, dtype=flat.dtype)
        if num_chunks == 1:
            value, bad, flat_grad = push(basis)
        else:
            values, bads, dvalues = jax.lax.map(push, basis.reshape(num_chunks, chunk, m))
            value, bad, flat_grad = values[0], bads[0], dvalues.reshape(-1)[:m]
        return value, unravel(flat_grad), bad
