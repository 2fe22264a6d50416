r"""Towers of optimizers: each level tunes the hyperparameters of the level below, online.

Level 0 updates the model's weights; level ``k + 1`` updates the tuned hyperparameters of level
``k`` (stored unconstrained); the top level's hyperparameters are constants. At step ``t``, with
``G_0 = \nabla L(w_t)``, each level receives the derivative of the loss *after* the previous step
with respect to the hyperparameters that step used:

.. math::

    G_{k+1} = \frac{\partial L(w_t)}{\partial h_k}
            = \Big\langle G_k,\ \frac{\partial u_k^{(t-1)}}{\partial h_k} \Big\rangle ,

where :math:`u_k^{(t-1)}` is the update level ``k`` applied at step ``t - 1`` (its optimizer state
held fixed, as in Chandra et al. and Baydin et al.). For SGD this is Baydin et al.'s
:math:`-\alpha\, g_t \cdot g_{t-1}` in log space. The levels then step from the top down, so each
level uses the hyperparameters just updated above it, and level 0's update is returned.

The derivative :math:`\partial u_k / \partial h_k` is taken when ``u_k`` is computed (one
tangent per tuned scalar, each shaped like level ``k``'s parameters: by hand where the level
gives it, else in forward mode) and kept in the state until the next gradient arrives. For a
learning rate the update is :math:`-\alpha D`, so the tangent is :math:`-D\, d\alpha/du` for
the stored value :math:`u`: where the level gives :math:`D`
(:attr:`~hgrad.towers.Level.direction`), the tower keeps :math:`D`, the array the update was made
from, and multiplies the contraction by the scalar :math:`-d\alpha/du`; where rebuilding
:math:`D` is cheap (a momentum's velocity) nothing is kept and :math:`D` is rebuilt from the state
when the next gradient arrives; without a direction it keeps the update itself (log space) or its
forward-mode derivative. Each scalar level above the first costs a handful of scalar operations.

References:
  Baydin, Cornish, Martinez Rubio, Schmidt, Wood. *Online learning rate adaptation with
  hypergradient descent*, ICLR 2018.
  Chandra, Xie, Ragan-Kelley, Meijer. *Gradient descent: the ultimate optimizer*, NeurIPS 2022.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from hgrad.reversible.materialize import materialized
from hgrad.towers.level import Level

__all__ = ["tower", "TowerState", "LevelState", "hyperparameters"]


class LevelState(NamedTuple):
    """The state of one level.

    Attributes:
      params: the unconstrained tuned hyperparameters of this level (what the level above
        optimizes): name -> scalar; empty at the top.
      values: their current constrained values (learning rate, decay rates), for logging.
      hypergrad: the derivative of the loss at this step's weights with respect to ``params``
        as the previous step used them: what the level above received this step.
      inner: this level's optimizer state.
      tangents: the derivatives of this level's last update with respect to its tuned
        hyperparameters, in the order of ``Level.hyperparameters``, each shaped like what this
        level updates; for the learning rate of a level with a ``direction``, that direction
        ``D`` (the derivative is ``-D`` times that of the rate w.r.t. its stored value), or
        ``None`` where ``D`` is rebuilt from ``inner``; ``None`` at the top.
    """

    params: dict
    values: dict
    hypergrad: dict
    inner: Any
    tangents: tuple | None


class TowerState(NamedTuple):
    """The states of a tower's levels, bottom (the weights' optimizer) first."""

    levels: tuple


def _constrain(level: Level, params: dict) -> dict:
    """The constrained values of the tuned hyperparameters in ``params`` (none at the top)."""
    return {k: level.hyperparameters[k].constrain(v) for k, v in params.items()}


def _rebuilt(level: Level, name: str) -> bool:
    """Whether the derivative w.r.t. ``name`` is rebuilt from the level's state, not stored."""
    return name == level.proportional_to and level.direction is not None and level.rebuild_direction


def _scaled(level: Level, name: str) -> bool:
    """Whether the derivative w.r.t. ``name`` is ``-d(value)/du`` times the level's direction."""
    return name == level.proportional_to and level.direction is not None


def _dvalue(h, u):
    """d(value)/d(stored value) of hyperparameter ``h`` at ``u``."""
    return jax.jvp(h.constrain, (u,), (jnp.ones_like(u),))[1]


def _step(level: Level, grads, inner, params: dict, *, tangents: bool):
    r"""One update of ``level`` and the hyperparameter values it used; with ``tangents``, also the
    update's derivative w.r.t. each tuned scalar.

    The derivatives are a tuple in the order of ``level.hyperparameters``, each shaped like the
    update. For the rate the update is proportional to, with a ``direction``: ``D`` itself (the
    contraction applies ``-d(value)/du``), or ``None`` where it is rebuilt; without one, the
    update itself for a rate stored as its log. The level's own ``tangents`` give others by hand;
    the rest come from forward-mode passes.

    A forward-mode derivative is multiplied by ``1 + 0 * u``, exactly 1, for the new stored value
    ``u`` of its hyperparameter. That makes it depend on the contraction that read the old
    derivative (through the level above, which set ``u`` from it), so XLA writes the new one
    where the old one was after the contraction. Otherwise it need not: for a learning rate
    stored as it is (``storage="linear"``), the derivative of ``-lr * g`` is ``-g``, which XLA
    computed before the contraction, so it copied the old derivative out of its buffer and the
    new one back in, two weight-sized copies per step (an SGD/SGD tower on Chandra et al.'s MLP
    took 1.19 times a one-level tower's step with the copies, 1.04 without, paired, 2-core CPU).
    Adam's direction is tied the same way in :func:`hgrad.towers.adam`; a derivative by hand is
    tied through ``d(value)/du``, and the update itself (a rate stored as its log) through the rate.

    A forward-mode derivative may also read the old state, which the new state overwrites: a
    momentum's, :math:`-\alpha v_{t-1}`, beside :math:`v_t = \mu v_{t-1} + g_t`. XLA then
    copied the old velocity at every step. Where the level also keeps a derivative that is not
    taken in forward mode (its learning rate's), the forward-mode ones are stored through
    :func:`~hgrad.reversible.materialize.materialized` and the new state is multiplied by
    ``1 + 0 * s``, exactly 1, for a scalar ``s`` read from them, so the state is written after
    the derivatives have read the old one, in place. An SGD(lr, momentum)/SGD tower's step took
    0.97 times as long on Baydin et al.'s MLP and 0.98-1.00 on Chandra et al.'s (paired, 2-core
    CPU, the same bits). Where the momentum is the only tuned hyperparameter the weights' update
    recomputes :math:`v_t` from :math:`v_{t-1}` too; storing the update as well removed that copy
    but took 1.07 times as long on Baydin et al.'s MLP (0.96 on Chandra et al.'s), so there the
    copy stays.
    """

    def run(p):
        return level.update(grads, inner, _constrain(level, p))

    values = _constrain(level, params)
    updates, new_inner = level.update(grads, inner, values)
    if not tangents:
        return updates, new_inner, values, None
    by_hand = {} if level.tangents is None else level.tangents(grads, inner, values)
    derivs, traced = [], []
    for name, h in level.hyperparameters.items():
        if _rebuilt(level, name):
            derivs.append(None)  # -d(value)/du * D, with D rebuilt from the state when needed
        elif _scaled(level, name):
            derivs.append(level.direction(new_inner, values))  # D; -d(value)/du applied later
        elif name == level.proportional_to and (h.kind, h.storage) == ("positive", "unconstrained"):
            derivs.append(updates)  # d(x0 exp(u - u0) d)/du = the update
        elif name in by_hand:  # d(update)/d(value) times d(value)/du
            scale = _dvalue(h, params[name])
            derivs.append(jax.tree.map(lambda d: scale * d, by_hand[name]))
        else:
            basis = {k: jnp.ones_like(v) if k == name else jnp.zeros_like(v)
                     for k, v in params.items()}
            deriv = jax.jvp(lambda p: run(p)[0], (params,), (basis,))[1]
            one = 1 + 0 * params[name]  # exactly 1 (the stored value is finite): see the docstring
            derivs.append(jax.tree.map(lambda d: d * one.astype(d.dtype), deriv))
            traced.append(len(derivs) - 1)
    if traced and len(traced) < len(derivs) and jax.tree.leaves(new_inner):  # see the docstring
        u = next(iter(params.values()))
        stored = materialized([derivs[i] for i in traced], jnp.all(u == u))  # any run-time boolean will do
        for i, d in zip(traced, stored):
            derivs[i] = d
        one = 1 + sum(0 * jnp.sum(jax.tree.leaves(d)[0].ravel()[:1]) for d in stored)
        new_inner = jax.tree.map(
            lambda x: x * one.astype(x.dtype) if jnp.issubdtype(x.dtype, jnp.inexact) else x, new_inner)
    return updates, new_inner, values, tuple(derivs)


def flat_vdot(a: jax.Array, b: jax.Array) -> jax.Array:
    """``<a, b>`` summed over the flattened arrays, in one pass over both.

    Same value as :func:`jax.numpy.vdot` up to the order of summation. The operands are
    flattened behind :func:`jax.lax.optimization_barrier`: otherwise XLA:CPU moves the flattening
    out of the product, and its tree-reduction rewrite then sums a 2-D product in 32 x 32
    windows. On an AVX2 CPU those windowed sums took about 1.6 ms per million weights in XLA's
    profile of a training step (``benchmarks/towers.py``'s workload), where a flat sum of a
    million products took about 0.3 ms. Flattening a row-major array is free. A gradient and a
    tangent kept in the state are stored arrays already; a direction rebuilt from the state is
    stored before the sum because of the barrier, and was faster all the same (Adam-HD with
    ``rebuild_direction=True``: 1.29 against 1.25 times optax.adam, paired on Baydin's MLP).
    """
    a, b = jax.lax.optimization_barrier((jnp.ravel(a), jnp.ravel(b)))
    return jnp.dot(a, b)


def _contract(level: Level, state: LevelState, cotangent, dtype) -> dict:
    """``{name: <cotangent, d(last update)/d(name)>}`` for each tuned hyperparameter of ``level``."""
    c = jax.tree.leaves(cotangent)
    out = {}
    for name, t in zip(level.hyperparameters, state.tangents):
        scale = 1
        if _scaled(level, name):  # u = -value * D: du/du_name = -d(value)/du_name * D
            scale = -_dvalue(level.hyperparameters[name], state.params[name])
            if t is None:
                t = level.direction(state.inner, state.values)
        out[name] = (scale * sum(flat_vdot(a, b) for a, b in zip(c, jax.tree.leaves(t)))).astype(dtype)
    return out


def tower(*levels: Level) -> optax.GradientTransformation:
    r"""Stack optimizers: ``tower(adam(...), sgd(...), sgd(...))`` is Chandra et al.'s Adam/SGD/SGD.

    Level 0 (the first argument) updates the weights; each further level tunes the
    ``hyperparameters`` of the one below it; the top level's hyperparameters stay fixed. The
    result is an :class:`optax.GradientTransformation`: it replaces ``optax.adam(1e-3)`` in any
    training loop, works under :func:`jax.jit`, :func:`optax.inject_hyperparams` (for hyperparameters
    that are not tuned) and :class:`flax.nnx.Optimizer`, and needs no ``params`` in ``update``.

    A tower of one level is the plain optimizer; a tower whose top learning rate is 0 updates the
    weights exactly as the plain bottom level does.

    Args:
      *levels: :class:`~hgrad.towers.Level` values, bottom first. Every level below the top must
        tune at least one hyperparameter.

    Returns:
      An :class:`optax.GradientTransformation` with a :class:`TowerState`. The current
      hyperparameters are in ``state.levels[k].values`` (see :func:`hyperparameters`).

    Example:
      >>> import jax.numpy as jnp, optax, hgrad.towers as ht
      >>> tx = ht.tower(ht.sgd(0.1), ht.sgd(0.01))      # SGD-HD with hyper step size 0.01
      >>> params = jnp.array([1.0, -2.0])
      >>> state = tx.init(params)
      >>> for _ in range(3):
      ...     updates, state = tx.update(2 * params, state)
      ...     params = optax.apply_updates(params, updates)
      >>> bool(ht.hyperparameters(state)[0]["learning_rate"] > 0.1)
      True
    """
    if not levels:
        raise ValueError("tower() needs at least one level")
    for k, level in enumerate(levels):
        if not isinstance(level, Level):
            raise TypeError(f"level {k} is a {type(level).__name__}, not an hgrad.towers.Level; "
                            "build levels with hgrad.towers.sgd(...) or hgrad.towers.adam(...)")
        if k < len(levels) - 1:
            if not level.hyperparameters:
                raise ValueError(f"level {k} ({level.name}) tunes no hyperparameter, so level "
                                 f"{k + 1} would have nothing to optimize; give it tune=(...)")
            for h in level.hyperparameters.values():
                h.check_tunable(f"level {k} ({level.name})")
    top = len(levels) - 1

    def init(params):
        leaves = jax.tree.leaves(params)
        if not leaves or not all(jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating) for x in leaves):
            raise ValueError("the parameters must be a non-empty pytree of floating-point arrays")
        dtype = jnp.result_type(*leaves)
        states, below = [], params
        for k, level in enumerate(levels):
            tuned = level.hyperparameters if k < top else {}
            hp = {n: h.unconstrained(dtype) for n, h in tuned.items()}
            states.append(LevelState(
                params=hp,
                values={n: h.constrain(hp[n]) for n, h in tuned.items()},
                hypergrad={n: jnp.zeros_like(v) for n, v in hp.items()},
                inner=level.init(below),
                tangents=tuple(None if _rebuilt(level, n) else jax.tree.map(jnp.zeros_like, below)
                               for n in tuned) if tuned else None,
            ))
            below = hp
        return TowerState(levels=tuple(states))

    def update(updates, state, params=None):
        del params
        old = state.levels
        dtype = jnp.result_type(*jax.tree.leaves(updates))
        # Hypergradients, bottom up: what each level above receives.
        grads = [updates]
        for k in range(top):
            grads.append(_contract(levels[k], old[k], grads[k], dtype))
        # Steps, top down: each level uses the hyperparameters just set above it.
        new = [None] * len(levels)
        params_k = old[top].params  # empty: the top's hyperparameters are constants
        for k in range(top, -1, -1):
            level = levels[k]
            upd, inner, values, tangents = _step(level, grads[k], old[k].inner, params_k,
                                                 tangents=k < top)
            new[k] = LevelState(params=params_k, values=values,
                                hypergrad=grads[k + 1] if k < top else {}, inner=inner,
                                tangents=tangents)
            if k > 0:
                below = levels[k - 1]
                params_k = {n: below.hyperparameters[n].project(old[k - 1].params[n] + upd[n])
                            for n in old[k - 1].params}
            else:
                out = upd
        return out, TowerState(levels=tuple(new))

    return optax.GradientTransformation(init, update)


def hyperparameters(state: TowerState) -> list[dict]:
    """The current tuned hyperparameters of each level below the top, bottom first."""
    return [dict(s.values) for s in state.levels[:-1]]
