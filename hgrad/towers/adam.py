"""Adam as a tower level, differentiable in its learning rate and both decay rates."""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from hgrad.towers.hyperparameter import check_nonnegative, positive, unit_interval
from hgrad.towers.level import Level

__all__ = ["adam", "AdamState", "safe_sqrt"]


class AdamState(NamedTuple):
    """The step count and the first and second moment estimates."""

    count: jax.Array
    mu: Any
    nu: Any


def safe_sqrt(x: jax.Array) -> jax.Array:
    """``sqrt(x)`` for ``x >= 0`` whose derivative at 0 is 0 instead of infinity.

    Adam's second moment is exactly 0 for a weight whose gradient has always been 0 (a dead unit,
    an unused embedding). Its derivative with respect to ``b2`` is then 0 as well, and the chain
    rule through ``sqrt`` gives ``inf * 0 = NaN``; Chandra et al. add a small constant to the
    moment instead. Here the value is unchanged and the derivative at 0 is 0, the limit of the
    true derivative of the update, which is identically 0 there.
    """
    positive_ = x > 0
    return jnp.where(positive_, jnp.sqrt(jnp.where(positive_, x, 1)), 0)


def adam(learning_rate: float, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, *,
         tune: Sequence[str] = ("learning_rate",), storage: str = "unconstrained",
         rebuild_direction: bool = False, initial_second_moment: Any = 0.0) -> Level:
    r"""Adam as a tower level, with the same update as :func:`optax.adam`.

    .. math::

        m_t = (1-\beta_1) g_t + \beta_1 m_{t-1}, \quad
        v_t = (1-\beta_2) g_t^2 + \beta_2 v_{t-1}, \quad
        u_t = -\alpha\, \frac{m_t / (1-\beta_1^t)}{\sqrt{v_t / (1-\beta_2^t)} + \epsilon}

    The square root is :func:`safe_sqrt`, so tuning ``b2`` gives no NaN where the second moment is
    0. Tuning only the learning rate is Baydin et al.'s Adam-HD; tuning all four is Chandra et
    al.'s hyperoptimizable Adam (whose moments, like here, are held fixed when differentiating).

    Args:
      learning_rate: ``alpha``; > 0 to be tuned, >= 0 otherwise.
      b1, b2: decay rates in [0, 1) (in (0, 1) to be tuned).
      eps: >= 0, added to the root of the second moment (> 0 to be tuned).
      tune: any of ``"learning_rate"`` (stored as its log), ``"b1"``, ``"b2"`` (as logits) and
        ``"eps"`` (as its log).
      storage: ``"unconstrained"`` (logs, logits) or ``"linear"``: the learning rate as it is
        (projected to stay >= 0), b1, b2 as ``atanh(2b - 1)`` and eps as ``log10(eps)``, as in
        Chandra et al.'s code.
      rebuild_direction: if true, a tower keeps no copy of the last update for the learning
        rate's hypergradient and recomputes it from the moments when the next gradient arrives:
        one weight-sized array less, one more square root and division per weight and step
        (:attr:`~hgrad.towers.Level.rebuild_direction`).
      initial_second_moment: :math:`v_0 \ge 0`, the second moment before the first step, for
        every weight. 0 (the default) is optax's start; Chandra et al.'s v1 code starts at
        :math:`10^{-8}`, which the bias correction turns into
        :math:`\hat v_1 = g_1^2 + \beta_2 v_0 / (1 - \beta_2)`: with the default ``b2`` an extra
        :math:`\approx 10^{-5}` in the first step's denominator, where with :math:`v_0 = 0` the first
        step is :math:`\alpha\,\mathrm{sign}(g_1)` (nearly, through ``eps``) on every weight with a
        nonzero gradient, however small. May be traced (under :func:`jax.vmap`, for instance).

    Returns:
      A :class:`~hgrad.towers.Level`.

    References:
      Kingma & Ba, *Adam*, ICLR 2015. Baydin et al., ICLR 2018. Chandra et al., *Gradient descent:
      the ultimate optimizer*, NeurIPS 2022.
    """
    tune = tuple(tune)
    unknown = set(tune) - {"learning_rate", "b1", "b2", "eps"}
    if unknown:
        raise ValueError(f"adam can tune 'learning_rate', 'b1', 'b2' and 'eps', not {sorted(unknown)}")
    hyper = {}
    lr_spec = positive(learning_rate, "learning_rate", storage)
    if "learning_rate" in tune:
        hyper["learning_rate"] = lr_spec
    for name, value in (("b1", b1), ("b2", b2)):
        spec = unit_interval(value, name, "tanh" if storage == "linear" else storage)
        if name in tune:
            hyper[name] = spec
    eps_spec = positive(eps, "eps", "log10" if storage == "linear" else storage)
    if "eps" in tune:
        hyper["eps"] = eps_spec
    check_nonnegative(initial_second_moment, "initial_second_moment")

    def init(params):
        return AdamState(count=jnp.zeros([], jnp.int32), mu=jax.tree.map(jnp.zeros_like, params),
                         nu=jax.tree.map(lambda p: jnp.full_like(p, initial_second_moment), params))

    def moments(grads, state, values):
        beta1, beta2 = values.get("b1", b1), values.get("b2", b2)
        # 1 - beta as (1 - b) - (beta - b): exactly 1 - b, rounded once as optax rounds it,
        # while beta is unchanged, so a tower with a zero hyper-step size equals optax.adam.
        one_minus_b1, one_minus_b2 = (1 - b1) - (beta1 - b1), (1 - b2) - (beta2 - b2)
        mu = jax.tree.map(lambda g, m: one_minus_b1 * g + beta1 * m, grads, state.mu)
        nu = jax.tree.map(lambda g, v: one_minus_b2 * (g * g) + beta2 * v, grads, state.nu)
        count = state.count + jnp.where(state.count < jnp.iinfo(jnp.int32).max, 1, 0)
        return beta1, beta2, mu, nu, count

    def corrected(m, v, count, beta1, beta2, epsilon, lr=0.0):
        t = count.astype(m.dtype) + jnp.asarray(0 * lr, m.dtype)  # + 0 * lr: see `direction`
        return (m / (1 - beta1**t)) / (safe_sqrt(v / (1 - beta2**t)) + epsilon)

    def update(grads, state, values):
        lr = values.get("learning_rate", learning_rate)
        beta1, beta2, mu, nu, count = moments(grads, state, values)
        new_state = AdamState(count=count, mu=mu, nu=nu)
        updates = jax.tree.map(lambda d: -lr * d, direction(new_state, values))
        return updates, new_state

    def direction(state, values):
        """The last update over -lr, from the moments it left (0 before the first step).

        ``update`` takes its direction from here too, so that a tower keeping the direction
        stores the very array the update used (one pass writes it). The step count enters as
        ``t + 0 * lr``: exactly ``t`` for a finite learning rate, and it makes the new direction
        depend on the rate the tower has just set by contracting the old direction with the new
        gradient. Without that dependence XLA could compute the new direction before the old
        one is read, so it copied the old one out of its buffer and the new one back in: two
        weight-sized copies per step (Adam-HD / optax.adam on Chandra et al.'s MLP 1.04 and
        1.08 with the copies, 1.00 and 1.01 without, paired runs on a 2-core CPU).
        """
        beta1, beta2, epsilon = values.get("b1", b1), values.get("b2", b2), values.get("eps", eps)
        count = jnp.maximum(state.count, 1)  # at init mu = nu = 0: the direction is 0, not 0/0
        lr = values.get("learning_rate", learning_rate)
        return jax.tree.map(lambda m, v: corrected(m, v, count, beta1, beta2, epsilon, lr),
                            state.mu, state.nu)

    def tangents(grads, state, values):
        r"""d(update)/d(b1), d(update)/d(b2) and d(update)/d(eps), by hand: one fused loop over
        the weights each.

        With :math:`c_i = 1 - \beta_i^t`, :math:`\hat m = m / c_1`, :math:`s = \sqrt{v / c_2}`:
        :math:`\partial\hat m/\partial\beta_1 = (m_{t-1} - g)/c_1 + t\beta_1^{t-1} m / c_1^2`,
        :math:`\partial s/\partial\beta_2 = ((v_{t-1} - g^2)/c_2 + t\beta_2^{t-1} v/c_2^2)/(2s)`
        (0 where s = 0), :math:`\partial u/\partial\beta_1 = -\alpha\,(\partial\hat m/
        \partial\beta_1)/(s+\epsilon)`, :math:`\partial u/\partial\beta_2 = \alpha\hat m\,
        (\partial s/\partial\beta_2)/(s+\epsilon)^2`, :math:`\partial u/\partial\epsilon =
        \alpha\hat m/(s+\epsilon)^2`. The divisions by :math:`c_i` are products with scalar
        reciprocals.

        The old moments enter only as :math:`m_{t-1} - g = (m - g)/\beta_1` and
        :math:`v_{t-1} - g^2 = (v - g^2)/\beta_2`, from the new moments, so that nothing reads
        the old ones after the step has written the new ones in their place. Read from the old
        ones, XLA copied both out of their buffers at every step: the Adam(lr, b1, b2) level at
        height 1 on Baydin et al.'s MLP cost 1.60 and 1.64 times optax.adam's step with the
        copies, 1.42 and 1.40 without (paired runs, 2-core CPU). The price is rounding: the
        error of :math:`m` (:math:`\approx\varepsilon |m|`) is divided by :math:`\beta_1`. In
        float32 against float64, on 10^5 weights, the contraction with the next gradient is off
        by 5e-6 (relative) for :math:`\beta_1` from 0.9 to 0.01, as with the old moments, 2e-3
        at 1e-4 and 0.15 at 1e-6 (the old moments' form: 5e-6 throughout); :math:`\beta_2`'s
        is unaffected at 0.999. In the stored value :math:`u` the level above steps, the
        absolute error stays about :math:`\varepsilon |m|`, since :math:`d\beta/du` is
        itself proportional to :math:`\beta` near 0 (logit: :math:`\beta(1-\beta)`; tanh:
        :math:`2\beta(1-\beta)`); float64 is the remedy where a tiny rate's derivative must
        be accurate. Where a rate is exactly 0 (the bottom of its window in the working
        precision) the new moment holds nothing of the old one, and its derivative,
        :math:`m_{t-1} - g` or :math:`v_{t-1} - g^2`, is taken as 0.

        Each derivative computes its own :math:`s`, as :math:`\sqrt{v/c_2}` for
        :math:`\beta_1`, :math:`\sqrt{v}\sqrt{1/c_2}` for :math:`\beta_2` and
        :math:`\sqrt{4v/c_2}/2` (the same bits as the first) for :math:`\epsilon`: written the
        same way, XLA merged them, and as it does not repeat a square root or a division in two
        fused loops, it wrote :math:`s` and :math:`1/(s+\epsilon)` as two weight-sized arrays
        that both derivatives then read back (the Adam(lr, b1, b2) level at height 1 on Baydin
        et al.'s MLP, 2-core CPU, paired: 1.47 and 1.50 times optax.adam's step shared, 1.40
        and 1.36 apart). The arithmetic is free beside the memory traffic.
        """
        lr, epsilon = values.get("learning_rate", learning_rate), values.get("eps", eps)
        beta1, beta2, mu, nu, count = moments(grads, state, values)
        # 1 / beta, or 0 where beta is 0: m_{t-1} - g = (m - g) / beta (see the docstring)
        over_b1, over_b2 = (jnp.where(beta > 0, 1 / jnp.where(beta > 0, beta, 1), 0)
                            for beta in (beta1, beta2))

        def both(g, m, v):
            t = count.astype(m.dtype)
            r1, r2 = 1 / (1 - beta1**t), 1 / (1 - beta2**t)
            out = {}
            if "b1" in hyper:
                dm = ((m - g) * over_b1) * r1 + (t * beta1 ** (t - 1) * r1 * r1) * m
                out["b1"] = -lr * dm / (safe_sqrt(v * r2) + epsilon)
            if "b2" in hyper:
                s = safe_sqrt(v) * jnp.sqrt(r2)  # not the same expression as above: see docstring
                inverse = 1 / (s + epsilon)
                dv = ((v - g * g) * over_b2) * r2 + (t * beta2 ** (t - 1) * r2 * r2) * v
                ds = jnp.where(s > 0, dv / (2 * jnp.where(s > 0, s, 1)), 0)
                out["b2"] = (lr * r1) * m * ds * (inverse * inverse)
            if "eps" in hyper:
                inverse = 1 / (safe_sqrt(4 * r2 * v) / 2 + epsilon)  # sqrt(v r2), its own way: see docstring
                out["eps"] = (lr * r1) * m * (inverse * inverse)
            return out

        names = [name for name in ("b1", "b2", "eps") if name in hyper]
        if not names:
            return {}
        per_leaf = jax.tree.map(both, grads, mu, nu)  # leaves -> {name: array}
        inner = jax.tree.structure({name: 0 for name in names})
        return jax.tree.transpose(jax.tree.structure(grads), inner, per_leaf)

    return Level(init, update, hyper, "adam", proportional_to="learning_rate",
                 tangents=tangents, direction=direction, rebuild_direction=bool(rebuild_direction))
