"""Stochastic gradient descent, with optional (Nesterov) momentum, as a tower level."""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from hgrad.towers.hyperparameter import positive, unit_interval
from hgrad.towers.level import Level

__all__ = ["sgd", "SGDState"]


class SGDState(NamedTuple):
    """The velocity (``None`` without momentum)."""

    trace: Any


def sgd(learning_rate: float, momentum: float | None = None, nesterov: bool = False, *,
        tune: Sequence[str] = ("learning_rate",), storage: str = "unconstrained") -> Level:
    r"""SGD as a tower level, with the same update as :func:`optax.sgd`.

    .. math::

        v_t = \mu v_{t-1} + g_t, \qquad
        d_t = \begin{cases} g_t + \mu v_t & \text{Nesterov} \\ v_t & \text{otherwise}\end{cases},
        \qquad u_t = -\alpha\, d_t

    (``d_t = g_t`` without momentum). This is also the convention of Baydin et al.'s SGD-HD and
    SGDN-HD code (PyTorch's momentum: the learning rate multiplies the whole velocity).

    Args:
      learning_rate: ``alpha``; > 0 to be tuned, >= 0 otherwise (0 freezes what this level
        updates: the top of a tower with a zero hyper-step size).
      momentum: ``mu`` in [0, 1), or ``None`` for none (no velocity is stored).
      nesterov: use Nesterov momentum (Baydin et al.'s SGDN).
      tune: the hyperparameters a higher level tunes: any of ``"learning_rate"`` (stored as its
        log) and ``"momentum"`` (as its logit; needs ``0 < momentum < 1``). Ignored at the top.
      storage: ``"unconstrained"`` (log, logit) or ``"linear"``: both stored as they are, as in
        Baydin et al.'s and Chandra et al.'s code (projected to stay >= 0, and < 1 for momentum).

    Returns:
      A :class:`~hgrad.towers.Level`.

    References:
      Baydin et al., *Online learning rate adaptation with hypergradient descent*, ICLR 2018.
    """
    tune = tuple(tune)
    unknown = set(tune) - {"learning_rate", "momentum"}
    if unknown:
        raise ValueError(f"sgd can tune 'learning_rate' and 'momentum', not {sorted(unknown)}")
    if "momentum" in tune and momentum is None:
        raise ValueError("tune includes 'momentum' but momentum is None; give 0 < momentum < 1")
    if nesterov and momentum is None:
        raise ValueError("nesterov=True needs a momentum")
    hyper = {}
    lr_spec = positive(learning_rate, "learning_rate", storage)
    if "learning_rate" in tune:
        hyper["learning_rate"] = lr_spec
    if momentum is not None:
        mu_spec = unit_interval(momentum, "momentum", storage)
        if "momentum" in tune:
            hyper["momentum"] = mu_spec

    def init(params):
        if momentum is None:
            return SGDState(trace=None)
        return SGDState(trace=jax.tree.map(jnp.zeros_like, params))

    def update(grads, state, values):
        lr = values.get("learning_rate", learning_rate)
        if momentum is None:
            direction, trace = grads, None
        else:
            mu = values.get("momentum", momentum)
            trace = jax.tree.map(lambda g, t: g + mu * t, grads, state.trace)
            direction = jax.tree.map(lambda g, t: g + mu * t, grads, trace) if nesterov else trace
        updates = jax.tree.map(lambda d: -lr * d, direction)
        return updates, SGDState(trace=trace)

    def direction(state, values):  # the velocity: u = -lr * trace (not with Nesterov's look-ahead)
        del values
        return state.trace

    return Level(init, update, hyper, "sgdn" if nesterov else "sgd", proportional_to="learning_rate",
                 direction=direction if momentum is not None and not nesterov else None)
