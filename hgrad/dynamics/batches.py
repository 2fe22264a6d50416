"""Mini-batches chosen by the step index, deterministically from a seed."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from hgrad import _checks

__all__ = ["Batches", "batch_indices"]


def batch_indices(num_examples: int, batch_size: int, num_steps: int, *, seed: int) -> np.ndarray:
    """Indices of the mini-batch of each step, shape ``(num_steps, batch_size)``.

    Each epoch is a fresh permutation of the examples (from ``seed``) cut into
    ``num_examples // batch_size`` batches; a last partial batch is dropped.
    """
    num_steps = _checks.check_num_steps(num_steps)
    batch_size = _checks.check_num_steps(batch_size, "batch_size")
    if batch_size > num_examples:
        raise ValueError(f"batch_size {batch_size} exceeds the {num_examples} examples available")
    per_epoch = num_examples // batch_size
    epochs = -(-num_steps // per_epoch)
    rng = np.random.default_rng(seed)
    rows = [rng.permutation(num_examples)[: per_epoch * batch_size] for _ in range(epochs)]
    return np.concatenate(rows).reshape(-1, batch_size)[:num_steps].astype(np.int32)


class Batches:
    """The data of step ``t``: ``batches(t)`` returns the ``t``-th mini-batch of each array.

    Args:
      *arrays: arrays with the same number of rows (e.g. inputs and labels); checked for NaN/inf.
      batch_size: rows per batch; ``None`` for full batches (every step sees all the data).
      num_steps: the number of steps to prepare batches for.
      seed: the shuffling seed.

    Example:
      >>> import numpy as np
      >>> b = Batches(np.arange(10.0), np.arange(10), batch_size=5, num_steps=4, seed=0)
      >>> [x.shape for x in b(3)]
      [(5,), (5,)]
    """

    def __init__(self, *arrays: Any, batch_size: int | None, num_steps: int, seed: int = 0):
        if not arrays:
            raise ValueError("Batches needs at least one array")
        sizes = {len(a) for a in arrays}
        if len(sizes) != 1:
            raise ValueError(
                "the arrays must have the same number of rows, got "
                + ", ".join(str(len(a)) for a in arrays)
            )
        for i, a in enumerate(arrays):
            _checks.check_finite(np.asarray(a), f"data array {i}")
        self.arrays = tuple(jnp.asarray(a) for a in arrays)
        self.num_examples = sizes.pop()
        self.batch_size = batch_size
        self.indices = (
            None
            if batch_size is None
            else jnp.asarray(batch_indices(self.num_examples, batch_size, num_steps, seed=seed))
        )

    def __call__(self, t: jax.Array) -> tuple:
        if self.indices is None:
            return self.arrays
        idx = self.indices[t]
        return tuple(jnp.take(a, idx, axis=0) for a in self.arrays)
