"""Reversible learning (Maclaurin, Duvenaud & Adams, ICML 2015): exact hypergradients through SGD
with momentum without storing the trajectory.

* :mod:`hgrad.reversible.buffer`: the information buffer (range-ANS, one per weight, jit-able);
* :mod:`hgrad.reversible.exact`: the fixed-point update and its exact inverse;
* :func:`reversible_hypergrad`: the hypergradient, with the buffer's size in the result.
"""

from hgrad.reversible.hypergrad import (
    FixedPointOverflowError,
    ReversalError,
    ReversibleHparams,
    ReversibleResult,
    buffer_words_needed,
    init_hparams,
    reversible_hypergrad,
)

__all__ = [
    "reversible_hypergrad",
    "ReversibleHparams",
    "ReversibleResult",
    "init_hparams",
    "buffer_words_needed",
    "FixedPointOverflowError",
    "ReversalError",
]
