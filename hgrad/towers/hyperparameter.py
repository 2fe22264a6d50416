"""How a tuned hyperparameter is stored: unconstrained, and mapped back to its domain.

A learning rate is stored as its log and a decay rate (momentum, Adam's b1 and b2) as its logit, so
no hyper-step can make a learning rate negative or a decay leave [0, 1): the failure users of the
original hypergradient-descent code met (Baydin et al. 2018 update the learning rate additively).

The maps are written relative to the initial value ``x0`` so that an unchanged hyperparameter gives
back exactly ``x0``, bit for bit (a tower with a zero hyper-step size then equals the plain
optimizer exactly)::

    learning rate:  x = x0 * exp(u - log x0)                         u = log x
    decay rate:     x = x0 + (sigmoid(u) - sigmoid(logit x0))        u = logit x

Both have the derivative of ``exp(u)`` and ``sigmoid(u)``. After each hyper-step the stored value
is projected onto a window in which the constrained value is finite and inside its domain in the
working precision (:func:`project`).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["Hyperparameter", "positive", "unit_interval", "check"]

_KINDS = ("positive", "unit_interval")


class Hyperparameter(NamedTuple):
    """A tunable hyperparameter: its kind (``"positive"`` or ``"unit_interval"``), initial value, name."""

    kind: str
    initial: Any
    name: str = "hyperparameter"

    def check_tunable(self, where: str) -> None:
        """Raise a clear error if the initial value has no finite log (logit)."""
        if self.kind == "positive":
            check(self.initial, f"{where}: {self.name}", lambda v: v > 0,
                  "> 0 to be tuned (it is stored as its log)")
        else:
            check(self.initial, f"{where}: {self.name}", lambda v: 0 < v < 1,
                  "in (0, 1) to be tuned (it is stored as its logit; 0 has none)")

    def unconstrained(self, dtype) -> jax.Array:
        """The stored value of the initial hyperparameter: ``log x0`` or ``logit x0``."""
        x0 = jnp.asarray(self.initial, dtype)
        if self.kind == "positive":
            return jnp.log(x0)
        return jnp.log(x0) - jnp.log1p(-x0)

    def constrain(self, u: jax.Array) -> jax.Array:
        """The hyperparameter's value for the stored value ``u`` (exactly ``x0`` at ``u = u0``)."""
        u0 = self.unconstrained(u.dtype)
        x0 = jnp.asarray(self.initial, u.dtype)
        if self.kind == "positive":
            return x0 * jnp.exp(u - u0)
        x = x0 + (jax.nn.sigmoid(u) - jax.nn.sigmoid(u0))
        return jnp.clip(x, 0, 1 - jnp.finfo(u.dtype).eps)

    def project(self, u: jax.Array) -> jax.Array:
        """``u`` clipped to the window where :meth:`constrain` is finite and inside the domain.

        Learning rate: from ``e`` times the smallest normal float to a thousandth of the largest,
        with ``exp(u - u0)`` inside the same range, so the rate stays positive (subnormals, which
        CPUs may flush to zero, are avoided) and finite. Decay rate: ``|u| <= log(1/eps) - 1``, so
        the rate stays below 1 and bias corrections ``1 / (1 - x^t)`` stay finite.
        """
        info = jnp.finfo(u.dtype)
        if self.kind == "positive":
            u0 = self.unconstrained(u.dtype)
            lo = math.log(float(info.tiny)) + 1 + jnp.maximum(u0, 0)
            hi = math.log(float(info.max)) - math.log(1e3) + jnp.minimum(u0, 0)
        else:
            hi = math.log(1 / float(info.eps)) - 1
            lo = -hi
        return jnp.clip(u, lo, hi)


def positive(value: Any, name: str) -> Hyperparameter:
    """A learning rate that a higher level may tune (stored as its log); checks ``value >= 0``.

    A rate of 0 is allowed for the top of a tower (nothing tunes it there); :func:`tower` asks
    for a positive one below the top (:meth:`Hyperparameter.check_tunable`).
    """
    check(value, name, lambda v: v >= 0 and math.isfinite(v), "finite and >= 0")
    return Hyperparameter("positive", value, name)


def unit_interval(value: Any, name: str) -> Hyperparameter:
    """A decay rate that a higher level may tune (stored as its logit); checks ``0 <= value < 1``."""
    check(value, name, lambda v: 0 <= v < 1, "in [0, 1)")
    return Hyperparameter("unit_interval", value, name)


def check(value: Any, name: str, ok, what: str) -> None:
    """Raise a clear error for a concrete ``value`` that fails ``ok``; traced values pass through."""
    if isinstance(value, jax.core.Tracer):
        return
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real number, got {value!r}") from None
    if not ok(v):
        raise ValueError(f"{name} must be {what}, got {v}")
