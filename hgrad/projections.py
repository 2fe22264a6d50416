r"""Euclidean projections onto hyperparameter constraint sets.

Currently: the *capped simplex*

.. math::
    \mathcal{W}_R = \{\, w \in [0, 1]^n : \textstyle\sum_i w_i \le R \,\},

the constraint set of data hyper-cleaning (Franceschi et al., 2017): one weight in ``[0, 1]`` per
training example, with total weight at most ``R`` (an a-priori bound on the number of clean
examples). Projected hypergradient descent takes a hypergradient step on ``w`` and then applies
:func:`project_capped_simplex`.

Math. The projection :math:`p = \arg\min_{z \in \mathcal{W}_R} \tfrac12\|z - w\|^2` is, by the KKT
conditions of this separable problem with one coupling constraint,

.. math::
    p = \operatorname{clip}(w - \tau, 0, 1), \qquad
    \tau \ge 0,\quad \textstyle\sum_i p_i \le R,\quad \tau\,(R - \textstyle\sum_i p_i) = 0 .

If :math:`\sum_i \operatorname{clip}(w_i, 0, 1) \le R` the sum constraint is inactive and
:math:`\tau = 0`. Otherwise :math:`\tau > 0` solves :math:`f(\tau) = R` for

.. math::
    f(\tau) = \textstyle\sum_i \operatorname{clip}(w_i - \tau, 0, 1),

which is continuous, non-increasing and piecewise linear in :math:`\tau`, with breakpoints at
:math:`w_i - 1` and :math:`w_i`. We sort the ``2n`` breakpoints (clipped at 0, plus 0 itself),
locate by binary search the consecutive pair :math:`a < b` with :math:`f(a) > R \ge f(b)`
(evaluating :math:`f` directly, whose floating-point value is exactly monotone in :math:`\tau`), and
since :math:`f` is linear on :math:`[a, b]` the root is the exact interpolation
:math:`\tau = a + (f(a) - R)(b - a) / (f(a) - f(b))`. A final Newton step
:math:`\tau \leftarrow \tau + (f(\tau) - R)/|M|` on the active set
:math:`M = \{i : 0 < w_i - \tau < 1\}` removes the interpolation's rounding error (it is kept only if
it reduces :math:`|f(\tau) - R|`). Cost: one sort plus :math:`O(\log n)` passes over ``w``; no
data-dependent Python control flow, so everything is ``jax.jit``-able.

References:
    L. Franceschi, M. Donini, P. Frasconi, M. Pontil. "Forward and Reverse Gradient-Based
    Hyperparameter Optimization". ICML 2017 (data hyper-cleaning, Sec. 5.1).
    W. Wang, C. Lu. "Projection onto the capped simplex". arXiv:1503.01002, 2015.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["capped_simplex_threshold", "project_capped_simplex"]

Array = jax.Array


def _check_inputs(w: Any, radius: Any) -> tuple[Array, Array]:
    """Validate and convert ``(w, radius)``; raise before any computation on concrete bad input."""
    w = jnp.asarray(w)
    if not jnp.issubdtype(w.dtype, jnp.floating):
        raise TypeError(f"w must be a floating-point array, got dtype {w.dtype}")
    if jnp.ndim(radius) != 0:
        raise ValueError(f"radius must be a scalar, got shape {jnp.shape(radius)}")
    try:
        r = float(radius)
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
        r = None  # traced radius (e.g. a hyperparameter under jit): no value check possible
    if r is not None and not r >= 0.0:  # also rejects NaN
        raise ValueError(
            f"radius must be >= 0 (the capped simplex is empty for radius < 0), got {r}"
        )
    radius = jnp.asarray(radius)
    if radius.dtype != w.dtype:
        radius = radius.astype(w.dtype)
    return w, radius


def _sum_clip(w: Array, tau: Array) -> Array:
    """``f(tau) = sum_i clip(w_i - tau, 0, 1)`` for a flat ``w``."""
    return jnp.sum(jnp.clip(w - tau, 0.0, 1.0))


@jax.jit
def _threshold_flat(w: Array, radius: Array) -> Array:
    """Threshold ``tau`` of the capped-simplex projection of a 1-D ``w`` (see module docstring)."""
    zero = jnp.zeros((), w.dtype)
    active = _sum_clip(w, zero) > radius

    # Candidates: 0 and the 2n breakpoints clipped at 0, sorted. f(t[0]) = f(0) > R when active,
    # and f(t[-1]) = f(max(0, max w)) = 0 <= R, so a bracketing pair of neighbours exists.
    knots = jnp.sort(jnp.concatenate([zero[None], jnp.maximum(w - 1.0, 0.0), jnp.maximum(w, 0.0)]))
    m = knots.shape[0]  # 2n + 1

    def bisect(_, bounds):
        lo, hi = bounds
        mid = (lo + hi) // 2
        above = _sum_clip(w, knots[mid]) > radius
        return jnp.where(above, mid, lo), jnp.where(above, hi, mid)

    num_iter = max(1, math.ceil(math.log2(max(m, 2))))
    lo, hi = jax.lax.fori_loop(
        0, num_iter, bisect, (jnp.zeros((), jnp.int32), jnp.full((), m - 1, jnp.int32))
    )
    a, b = knots[lo], knots[hi]
    fa, fb = _sum_clip(w, a), _sum_clip(w, b)
    denom = fa - fb
    safe = denom > 0
    tau = a + jnp.where(safe, (fa - radius) / jnp.where(safe, denom, 1.0), 0.0) * (b - a)
    tau = jnp.clip(tau, a, b)

    # One Newton step on the linear piece containing tau (exact finish on the active set).
    inside = (w - tau > 0) & (w - tau < 1)
    count = jnp.sum(inside).astype(w.dtype)
    f_tau = _sum_clip(w, tau)
    tau_newton = jnp.clip(tau + (f_tau - radius) / jnp.maximum(count, 1.0), a, b)
    better = jnp.abs(_sum_clip(w, tau_newton) - radius) < jnp.abs(f_tau - radius)
    tau = jnp.where((count > 0) & better, tau_newton, tau)

    return jnp.where(active, tau, zero)


def capped_simplex_threshold(w: Array, radius: float | Array) -> Array:
    r"""Dual variable :math:`\tau \ge 0` of the projection onto the capped simplex.

    The projection is ``clip(w - tau, 0, 1)``; ``tau == 0`` exactly when the sum constraint is
    inactive (``sum(clip(w, 0, 1)) <= radius``). See the module docstring for the algorithm.

    Args:
        w: floating array of any shape (the constraint couples all of its entries).
        radius: scalar ``R >= 0`` (Python number or array; may be traced). ``R >= w.size`` is
            allowed: the sum constraint is then inactive.

    Returns:
        Scalar ``tau`` of dtype ``w.dtype``.

    Raises:
        ValueError: if a concrete ``radius`` is negative or NaN, or ``radius`` is not a scalar.
        TypeError: if ``w`` is not floating point.
    """
    w, radius = _check_inputs(w, radius)
    return _threshold_flat(w.reshape(-1), radius)


def project_capped_simplex(w: Array, radius: float | Array) -> Array:
    r"""Euclidean projection onto :math:`\{z \in [0,1]^n : \sum_i z_i \le R\}`.

    .. math::
        \Pi(w) = \operatorname{clip}(w - \tau, 0, 1)

    with :math:`\tau` from :func:`capped_simplex_threshold` (module docstring: math and
    algorithm). The result is exact up to floating-point rounding: ``sum(result)`` may exceed
    ``radius`` by a few ulps of ``n``.

    Behaviour at the edges of the parameter range:

    * ``radius >= w.size`` (more precisely ``sum(clip(w, 0, 1)) <= radius``): the sum constraint
      is inactive and the result is ``clip(w, 0, 1)``; this is allowed, not an error;
    * ``radius == 0``: the result is all zeros;
    * ``radius < 0`` (or NaN): the set is empty; a concrete value raises ``ValueError`` before any
      computation. A *traced* negative radius cannot be checked and gives an unspecified result.

    Args:
        w: floating array (float32 or float64) of any shape; all entries share the budget.
        radius: scalar budget ``R >= 0``; cast to ``w.dtype``.

    Returns:
        Array of the same shape and dtype as ``w``. Jit-able (``radius`` may be traced) and
        differentiable almost everywhere.

    Raises:
        ValueError: if a concrete ``radius`` is negative or NaN, or ``radius`` is not a scalar.
        TypeError: if ``w`` is not floating point.

    References:
        Franceschi et al., ICML 2017 (data hyper-cleaning); Wang & Lu, arXiv:1503.01002.
    """
    w, radius = _check_inputs(w, radius)
    return _project_flat(w.reshape(-1), radius).reshape(w.shape)


@jax.jit
def _project_flat(w: Array, radius: Array) -> Array:
    """``clip(w - tau, 0, 1)`` for a 1-D ``w`` (one compiled program per shape and dtype)."""
    return jnp.clip(w - _threshold_flat(w, radius), 0.0, 1.0)
