"""Label noise: flipping a chosen number of labels to other classes."""

from __future__ import annotations

import numpy as np


def flip_labels(y, num_flips: int, num_classes: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Flip exactly ``num_flips`` randomly chosen labels, each to a different class.

    The examples to flip are drawn without replacement; each flipped label
    moves to a class drawn uniformly from the ``num_classes - 1`` classes other
    than its own. The input is not modified.

    Args:
        y: Integer labels of shape ``(n,)`` with values in ``[0, num_classes)``.
        num_flips: How many labels to flip, from 0 to ``n``.
        num_classes: Number of classes (at least 2 when ``num_flips > 0``).
        seed: Seed of ``numpy.random.default_rng``; the same seed gives the same flips.

    Returns:
        ``(noisy_y, flipped)``: the new labels (same dtype as ``y``) and a
        boolean mask of shape ``(n,)`` that is True exactly where a label was
        flipped.

    Raises:
        ValueError: If ``y`` is not a 1-D integer array with labels in range,
            ``num_flips`` is negative or larger than ``n``, or there is only one
            class to flip between.
    """
    y = np.asarray(y)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"flip_labels: y must be a 1-D integer array, got {y.dtype} of shape {y.shape}.")
    if isinstance(num_flips, bool) or not isinstance(num_flips, (int, np.integer)):
        raise ValueError(f"flip_labels: num_flips must be an int, got {num_flips!r}.")
    n = len(y)
    if not 0 <= num_flips <= n:
        raise ValueError(f"flip_labels: num_flips must lie in [0, {n}] (len(y)), got {num_flips}.")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(
            f"flip_labels: labels must lie in [0, {num_classes}), found {y.min()} to {y.max()}."
        )
    if num_flips and num_classes < 2:
        raise ValueError(f"flip_labels: flipping needs at least 2 classes, got num_classes={num_classes}.")
    rng = np.random.default_rng(seed)
    chosen = rng.choice(n, size=num_flips, replace=False)
    shifts = rng.integers(1, num_classes, size=num_flips) if num_flips else np.zeros(0, np.int64)
    noisy = y.copy()
    noisy[chosen] = (y[chosen] + shifts) % num_classes
    flipped = np.zeros(n, dtype=bool)
    flipped[chosen] = True
    return noisy, flipped
