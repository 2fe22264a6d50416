"""One optimizer of a tower, with the hyperparameters it lets a higher level tune as inputs.

A :class:`Level` is an optax-style optimizer whose update also takes the current values of its
tuned hyperparameters, so that a tower can differentiate the update with respect to them::

    updates, state = level.update(grads, state, values)   # values: {"learning_rate": 0.01, ...}

``level.hyperparameters`` names the tuned ones (:class:`~hgrad.towers.hyperparameter.Hyperparameter`
values: kind and initial value); every other hyperparameter is a constant of the level. The update
must be a pure, differentiable function of ``values``: :func:`hgrad.towers.tower` takes its
forward-mode derivative. Write new levels like :func:`hgrad.towers.sgd` and :func:`hgrad.towers.adam`.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple

from hgrad.towers.hyperparameter import Hyperparameter

__all__ = ["Level"]


class Level(NamedTuple):
    """An optimizer whose tuned hyperparameters are explicit inputs of its update.

    Attributes:
      init: ``params -> state``.
      update: ``(grads, state, values) -> (updates, state)``; ``values`` maps each name in
        ``hyperparameters`` to its current (constrained) value, a scalar array.
      hyperparameters: the tuned hyperparameters, name -> :class:`Hyperparameter`.
      name: a short label (``"sgd"``, ``"adam"``) for reprs and plots.
      proportional_to: a positive tuned hyperparameter (the learning rate) to which the update is
        proportional. Its derivative in log space is then the update itself, and the tower takes
        it from there instead of from a forward-mode pass. ``None`` if there is none.
      tangents: optional ``(grads, state, values) -> {name: d(update)/d(value)}``, the derivatives
        of the update with respect to (constrained) tuned hyperparameters, written by hand so that
        they cost one fused pass; the tower differentiates the others in forward mode.
      direction: optional ``(state, values) -> D`` with ``update = -values[proportional_to] * D``,
        read back from the state the update left (Adam's bias-corrected moments, a momentum's
        velocity). It must also give the right ``D`` (zeros) for the state ``init`` returns.
        Without it, the tower keeps the update itself (or, outside log storage, its forward-mode
        derivative).
      rebuild_direction: with a ``direction``, whether the tower keeps nothing weight-sized for the
        learning rate's derivative and rebuilds ``D`` from the state when the next gradient
        arrives (``True``), or keeps ``D`` from the step (``False``); an ``update`` that computes
        its direction with ``direction`` then shares that array, and the tower applies the
        rate's derivative in the contraction. Rebuilding saves one weight-sized array and is
        cheap where ``D`` is read directly (a velocity); for Adam it repeats a square root and a
        division per weight, which costs more than reading a kept array (on a 2-core CPU,
        Baydin et al.'s MLP: Adam-HD's step 1.42 times ``optax.adam``'s rebuilding, 1.18
        keeping, in one paired run; on an H100 1.248 against 1.239).
    """

    init: Callable[[Any], Any]
    update: Callable[[Any, Any, Mapping[str, Any]], tuple[Any, Any]]
    hyperparameters: Mapping[str, Hyperparameter]
    name: str = "level"
    proportional_to: str | None = None
    tangents: Callable[[Any, Any, Mapping[str, Any]], Mapping[str, Any]] | None = None
    direction: Callable[[Any, Mapping[str, Any]], Any] | None = None
    rebuild_direction: bool = True
