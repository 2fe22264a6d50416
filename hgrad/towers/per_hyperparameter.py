r"""SGD with its own step size for each hyperparameter of the level below, as a tower level."""

from __future__ import annotations

from typing import Mapping, Sequence

from hgrad.towers.hyperparameter import positive
from hgrad.towers.level import Level

__all__ = ["sgd_per_hyperparameter"]


def sgd_per_hyperparameter(learning_rates: Mapping[str, float], *,
                           tune: Sequence[str] | None = None,
                           storage: str = "unconstrained") -> Level:
    r"""SGD on the hyperparameters of the level below, one step size for each.

    For each tuned hyperparameter :math:`h_n` of the level below (stored as that level stores it:
    a log learning rate, a logit decay rate, or the values themselves with ``storage="linear"``)

    .. math::

        h_n \leftarrow h_n - \alpha_n \, \frac{\partial L}{\partial h_n} .

    The step sizes differ because the hyperparameters live on different scales: Chandra et al.'s
    Adam/SGD/SGD steps Adam's learning rate, ``b1`` and ``b2`` with step sizes of their own
    (their code's ``SGDPerParam``), which the level above tunes in turn. With one step size for
    all it is :func:`hgrad.towers.sgd`.

    This level only ever sits above another one: it updates a dict of scalars, and its keys must
    be the names of the hyperparameters the level below tunes (checked when the tower is traced).

    Args:
      learning_rates: ``{name: alpha_n}``, one entry for each tuned hyperparameter of the level
        below (for ``adam(..., tune=("learning_rate", "b1", "b2"))``: those three names). Each
        > 0 to be tuned, >= 0 otherwise.
      tune: which of them the level above tunes (their names as in ``learning_rates``); all of
        them by default. The tuned hyperparameters of this level are named
        ``"learning_rate_" + name`` (``"learning_rate_b1"``). Ignored at the top of a tower.
      storage: ``"unconstrained"`` (each step size stored as its log) or ``"linear"`` (as it is,
        the papers' parametrization, projected to stay >= 0).

    Returns:
      A :class:`~hgrad.towers.Level`.

    References:
      Chandra, Xie, Ragan-Kelley, Meijer. *Gradient descent: the ultimate optimizer*, NeurIPS
      2022 (arXiv:1909.13371 v1, appendix code: ``SGDPerParam``).
    """
    rates = dict(learning_rates)
    if not rates:
        raise ValueError("sgd_per_hyperparameter needs at least one step size: "
                         "{name: step size} for the hyperparameters of the level below")
    tune = tuple(rates) if tune is None else tuple(tune)
    unknown = set(tune) - set(rates)
    if unknown:
        raise ValueError(f"tune names {sorted(unknown)}, which have no step size in learning_rates "
                         f"(it has {sorted(rates)})")
    specs = {n: positive(v, f"learning_rate_{n}", storage) for n, v in rates.items()}
    hyper = {f"learning_rate_{n}": specs[n] for n in tune}

    def init(params):
        del params
        return None

    def update(grads, state, values):
        if set(grads) != set(rates):
            raise ValueError(
                f"sgd_per_hyperparameter has step sizes for {sorted(rates)}, but the level below "
                f"tunes {sorted(grads)}; give one step size for each hyperparameter it tunes")
        updates = {n: -values.get(f"learning_rate_{n}", rates[n]) * g for n, g in grads.items()}
        return updates, state

    return Level(init, update, hyper, "sgd_per_hyperparameter")
