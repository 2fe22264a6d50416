"""Baydin et al.'s hypergradient-descent optimizers: two-level towers, ready made."""

from __future__ import annotations

import optax

from hgrad.towers.adam import adam
from hgrad.towers.sgd import sgd
from hgrad.towers.tower import tower

__all__ = ["sgd_hd", "sgdn_hd", "adam_hd"]


def sgd_hd(learning_rate: float, hyper_learning_rate: float, momentum: float | None = None,
           nesterov: bool = False, *, storage: str = "unconstrained"
           ) -> optax.GradientTransformation:
    r"""SGD-HD: SGD whose log learning rate follows plain SGD on its hypergradient.

    .. math::

        \log\alpha_t = \log\alpha_{t-1} + \beta\,\alpha_{t-1}\, g_t \cdot d_{t-1}, \qquad
        w_{t+1} = w_t - \alpha_t d_t

    with :math:`d` the update direction (:func:`hgrad.towers.sgd`). Baydin et al. step
    :math:`\alpha` itself, :math:`\alpha_t = \alpha_{t-1} + \beta' g_t \cdot d_{t-1}`, which can
    turn negative; the two agree to first order when :math:`\beta = \beta'/\alpha^2`.

    Args:
      learning_rate: the initial learning rate ``alpha_0`` > 0.
      hyper_learning_rate: ``beta`` >= 0, the step size on ``log alpha`` (0: plain SGD, exactly).
      momentum, nesterov: as in :func:`optax.sgd` (SGDN-HD: ``momentum=0.9, nesterov=True``).
      storage: ``"unconstrained"`` (log alpha) or ``"linear"``: Baydin et al.'s additive rule,
        with ``hyper_learning_rate`` their ``beta`` (hgrad keeps alpha >= 0).
    """
    return tower(sgd(learning_rate, momentum, nesterov, storage=storage),
                 sgd(hyper_learning_rate, tune=()))


def sgdn_hd(learning_rate: float, hyper_learning_rate: float, momentum: float = 0.9, *,
            storage: str = "unconstrained") -> optax.GradientTransformation:
    """SGDN-HD: :func:`sgd_hd` with Nesterov momentum (Baydin et al.'s default ``momentum=0.9``)."""
    return sgd_hd(learning_rate, hyper_learning_rate, momentum, nesterov=True, storage=storage)


def adam_hd(learning_rate: float, hyper_learning_rate: float, b1: float = 0.9, b2: float = 0.999,
            eps: float = 1e-8, *, storage: str = "unconstrained") -> optax.GradientTransformation:
    """Adam-HD: Adam whose log learning rate follows plain SGD on its hypergradient.

    The hypergradient of ``log alpha`` is ``g_t . u_{t-1}``, the current gradient against the
    previous update (Baydin et al. 2018, Algorithm 3, in log space; see :func:`sgd_hd`).

    Args:
      learning_rate: the initial learning rate ``alpha_0`` > 0.
      hyper_learning_rate: ``beta`` >= 0, the step size on ``log alpha``.
      b1, b2, eps: as in :func:`optax.adam` (fixed).
      storage: ``"unconstrained"`` (log alpha) or ``"linear"`` (Baydin et al.'s additive rule).
    """
    return tower(adam(learning_rate, b1, b2, eps, storage=storage),
                 sgd(hyper_learning_rate, tune=()))
