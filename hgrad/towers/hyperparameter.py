"""How a tuned hyperparameter is stored: unconstrained, and mapped back to its domain.

A learning rate is stored as its log and a decay rate (momentum, Adam's b1 and b2) as its logit, so
no hyper-step can make a learning rate negative or a decay leave [0, 1): the failure users of the
original hypergradient-descent code met (Baydin et al. 2018 update the learning rate additively).

The maps are written relative to the initial value ``x0`` so that an unchanged hyperparameter gives
back exactly ``x0``, bit for bit (a tower with a zero hyper-step size then equals the plain
optimizer exactly)::

    learning rate:  x = x0 * exp(u - log x0)                         u = log x
    decay rate:     x = x0 + (sigmoid(u) - sigmoid(logit x0))        u = logit x

Both have the derivative of ``exp(u)`` and ``sigmoid(u)``. For reproducing the original papers,
``storage="linear"`` keeps a value as it is (their code's parametrization; hgrad still projects
it back into the domain, so a learning rate never turns negative), ``storage="tanh"`` keeps a
decay rate as ``atanh(2b - 1)`` and ``storage="log10"`` a positive value as its base-10 log
(``x = x0 * 10^(u - log10 x0)``), as Chandra et al.'s code keeps Adam's decay rates and epsilon.
After each hyper-step the stored value is projected onto a window in which the constrained value
is finite and inside its domain in the working precision (:func:`project`).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["Hyperparameter", "positive", "unit_interval", "check", "STORAGES"]

_LN10 = math.log(10.0)

_POSITIVE_STORAGES = ("unconstrained", "linear", "log10")  # a learning rate, Adam's eps
_DECAY_STORAGES = ("unconstrained", "linear", "tanh")  # a decay rate
STORAGES = _POSITIVE_STORAGES + ("tanh",)  # every storage


class Hyperparameter(NamedTuple):
    """A tunable hyperparameter: kind, initial value, name, and how it is stored.

    Attributes:
      kind: ``"positive"`` (a learning rate) or ``"unit_interval"`` (a decay rate in [0, 1)).
      initial: its initial value ``x0``.
      name: for error messages.
      storage: ``"unconstrained"`` (the default: log of a rate, logit of a decay rate),
        ``"linear"`` (the value itself, as the original papers' code stores learning rates and
        Chandra et al.'s SGD momentum; projected back into the domain after each hyper-step), or
        ``"tanh"`` (a decay rate as ``x`` with ``b = (1 + tanh x) / 2``, as Chandra et al.'s code
        stores Adam's b1 and b2: half the logit), or ``"log10"`` (a positive value as its base-10
        log, as Chandra et al.'s code stores Adam's epsilon: the natural log over ``ln 10``).
    """

    kind: str
    initial: Any
    name: str = "hyperparameter"
    storage: str = "unconstrained"

    def check_tunable(self, where: str) -> None:
        """Raise a clear error if the initial value cannot be stored (log or logit of 0)."""
        if self.storage == "linear":
            return
        if self.kind == "positive":
            check(self.initial, f"{where}: {self.name}", lambda v: v > 0,
                  "> 0 to be tuned (it is stored as its log)")
        else:
            check(self.initial, f"{where}: {self.name}", lambda v: 0 < v < 1,
                  "in (0, 1) to be tuned (it is stored as its logit; 0 has none)")

    def unconstrained(self, dtype) -> jax.Array:
        """The stored value of the initial hyperparameter (``log x0``, ``logit x0``, ...)."""
        x0 = jnp.asarray(self.initial, dtype)
        if self.storage == "linear":
            return x0
        if self.kind == "positive":
            return jnp.log10(x0) if self.storage == "log10" else jnp.log(x0)
        logit = jnp.log(x0) - jnp.log1p(-x0)
        return logit / 2 if self.storage == "tanh" else logit

    def constrain(self, u: jax.Array) -> jax.Array:
        """The hyperparameter's value for the stored value ``u`` (exactly ``x0`` at ``u = u0``)."""
        if self.storage == "linear":
            return u
        u0 = self.unconstrained(u.dtype)
        x0 = jnp.asarray(self.initial, u.dtype)
        if self.kind == "positive":
            return x0 * jnp.exp((u - u0) * _LN10 if self.storage == "log10" else u - u0)
        if self.storage == "tanh":
            # u and u0 through one tanh: alone, tanh(u0) of a constant is folded at compile time
            # by another implementation of tanh, which can differ from the run-time one in the
            # last bit (b2 = 0.999 did), and x would not be x0 at u = u0
            both = (1 + jnp.tanh(jnp.stack([u, jnp.broadcast_to(u0, jnp.shape(u))]))) / 2
            x = x0 + (both[0] - both[1])
        else:
            x = x0 + (jax.nn.sigmoid(u) - jax.nn.sigmoid(u0))
        return jnp.clip(x, 0, 1 - jnp.finfo(u.dtype).eps)

    def project(self, u: jax.Array) -> jax.Array:
        """``u`` clipped to the window where :meth:`constrain` is finite and inside the domain.

        Linear storage: the value is clipped into [0, max / 1000] for a rate (so it never turns
        negative, unlike the original code's) and [0, 1 - eps] for a decay rate.
        Learning rate: from ``e`` times the smallest normal float to a thousandth of the largest,
        with ``exp(u - u0)`` inside the same range, so the rate stays positive (subnormals, which
        CPUs may flush to zero, are avoided) and finite. Decay rate: ``|u| <= log(1/eps) - 1``, so
        the rate stays below 1 and bias corrections ``1 / (1 - x^t)`` stay finite.
        """
        info = jnp.finfo(u.dtype)
        if self.storage == "linear":  # the value itself: back into the domain
            hi = float(info.max) / 1e3 if self.kind == "positive" else 1 - float(info.eps)
            return jnp.clip(u, 0, hi)
        if self.kind == "positive":  # the window in natural-log units, then in the stored ones
            scale = _LN10 if self.storage == "log10" else 1.0
            u0 = self.unconstrained(u.dtype) * scale
            lo = (math.log(float(info.tiny)) + 1 + jnp.maximum(u0, 0)) / scale
            hi = (math.log(float(info.max)) - math.log(1e3) + jnp.minimum(u0, 0)) / scale
        else:
            hi = math.log(1 / float(info.eps)) - 1
            hi = hi / 2 if self.storage == "tanh" else hi
            lo = -hi
        return jnp.clip(u, lo, hi)


def positive(value: Any, name: str, storage: str = "unconstrained") -> Hyperparameter:
    """A learning rate (or another positive value) that a higher level may tune (stored as its
    log); checks ``value >= 0``.

    A rate of 0 is allowed for the top of a tower (nothing tunes it there); :func:`tower` asks
    for a positive one below the top (:meth:`Hyperparameter.check_tunable`).
    """
    check_nonnegative(value, name)
    _check_storage(storage, _POSITIVE_STORAGES)
    return Hyperparameter("positive", value, name, storage)


def unit_interval(value: Any, name: str, storage: str = "unconstrained") -> Hyperparameter:
    """A decay rate that a higher level may tune (stored as its logit); checks ``0 <= value < 1``."""
    check(value, name, lambda v: 0 <= v < 1, "in [0, 1)")
    _check_storage(storage, _DECAY_STORAGES)
    return Hyperparameter("unit_interval", value, name, storage)


def _check_storage(storage: str, allowed) -> None:
    if storage not in allowed:
        raise ValueError(f"storage must be one of {', '.join(map(repr, allowed))}, got {storage!r}")


def check_nonnegative(value: Any, name: str) -> None:
    """Raise a clear error for a concrete ``value`` that is negative, infinite or NaN."""
    check(value, name, lambda v: v >= 0 and math.isfinite(v), "finite and >= 0")


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
