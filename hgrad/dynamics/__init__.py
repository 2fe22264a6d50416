"""Ready-made inner dynamics (gradient descent, SGD with momentum) with fast reverse sweeps."""

from hgrad.dynamics.base import Dynamics, at_step
from hgrad.dynamics.batches import Batches, batch_indices
from hgrad.dynamics.gradient_descent import GDHparams, GradientDescent
from hgrad.dynamics.hparams import log_positive, logit_unit
from hgrad.dynamics.momentum import Momentum, MomentumHparams, MomentumState

__all__ = [
    "Dynamics",
    "GradientDescent",
    "GDHparams",
    "Momentum",
    "MomentumState",
    "MomentumHparams",
    "Batches",
    "batch_indices",
    "at_step",
    "log_positive",
    "logit_unit",
]
