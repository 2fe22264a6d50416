"""hgrad: gradient-based hyperparameter optimization in JAX.

The core is :func:`hypergrad`, the gradient of a validation objective through an unrolled inner
training loop, computed by a choice of method (:class:`Reverse`, :class:`Checkpointed`,
:class:`Forward`, :class:`Truncated`), and :func:`rtho`, which tunes hyperparameters during a single
training run. :func:`reversible_hypergrad` differentiates SGD with momentum by running it backwards
exactly (:mod:`hgrad.reversible`). :mod:`hgrad.towers` holds optax optimizers that tune their own
hyperparameters while they train (hypergradient descent, and towers of optimizers). Ready-made inner
loops live in :mod:`hgrad.dynamics`, models in :mod:`hgrad.models`, datasets in :mod:`hgrad.data`.
"""

from hgrad import towers
from hgrad._checks import DivergenceError
from hgrad.hypergrad import hypergrad, validate
from hgrad.methods import Checkpointed, Forward, Method, Reverse, Truncated
from hgrad.reversible import FixedPointOverflowError, ReversalError, reversible_hypergrad
from hgrad.rtho import RTHOResult, rtho
from hgrad.unroll import unroll

__version__ = "0.1.0"

__all__ = [
    "hypergrad",
    "validate",
    "rtho",
    "RTHOResult",
    "unroll",
    "Method",
    "Reverse",
    "Checkpointed",
    "Forward",
    "Truncated",
    "DivergenceError",
    "reversible_hypergrad",
    "FixedPointOverflowError",
    "ReversalError",
    "towers",
    "__version__",
]
