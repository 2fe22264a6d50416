"""Optimizers that tune their own hyperparameters while they train, stacked to any height.

Every optimizer here is an :class:`optax.GradientTransformation`. :func:`tower` stacks
:class:`Level` optimizers (:func:`sgd`, :func:`adam`, :func:`sgd_per_hyperparameter`): level
``k + 1`` runs gradient descent on the hyperparameters of level ``k``, from the derivative of the
loss after each step with respect to the hyperparameters that step used (Chandra et al. 2022).
:func:`sgd_hd`, :func:`sgdn_hd` and :func:`adam_hd` are Baydin et al. 2018's hypergradient-descent
optimizers, two-level towers. Tuned hyperparameters are stored unconstrained (log learning rate,
logit decay rates)::

    import hgrad.towers as ht
    tx = ht.tower(ht.adam(1e-3, tune=("learning_rate", "b1", "b2")), ht.sgd(1e-2), ht.sgd(1e-2))
    # use tx where optax.adam(1e-3) was
"""

from hgrad.towers.adam import AdamState, adam, safe_sqrt
from hgrad.towers.alias import adam_hd, sgd_hd, sgdn_hd
from hgrad.towers.hyperparameter import Hyperparameter
from hgrad.towers.level import Level
from hgrad.towers.per_hyperparameter import sgd_per_hyperparameter
from hgrad.towers.sgd import SGDState, sgd
from hgrad.towers.tower import LevelState, TowerState, hyperparameters, tower

__all__ = [
    "tower",
    "Level",
    "sgd",
    "adam",
    "sgd_per_hyperparameter",
    "sgd_hd",
    "sgdn_hd",
    "adam_hd",
    "hyperparameters",
    "TowerState",
    "LevelState",
    "SGDState",
    "AdamState",
    "Hyperparameter",
    "safe_sqrt",
]
