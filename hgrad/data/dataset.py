"""The :class:`Dataset` record and the checks every loader applies to it."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Dataset(NamedTuple):
    """A labelled classification data set held in memory.

    Attributes:
        x: Inputs, ``float32`` array of shape ``(n, *features)`` scaled to ``[0, 1]``.
        y: Labels, ``int32`` array of shape ``(n,)`` with values in ``[0, num_classes)``.
        num_classes: Number of classes.
        name: Short name of the data set, e.g. ``"digits"``.
        note: One-line human description of where the data came from.
    """

    x: np.ndarray
    y: np.ndarray
    num_classes: int
    name: str
    note: str


def check_finite(dataset: Dataset) -> Dataset:
    """Raise if any input value of ``dataset`` is NaN or infinite.

    Args:
        dataset: The data set to check.

    Returns:
        ``dataset`` itself, unchanged, so the call can be chained.

    Raises:
        ValueError: If ``dataset.x`` holds NaN or infinite values; the message
            gives the data set's name and how many values are bad.
    """
    x = np.asarray(dataset.x)
    bad = ~np.isfinite(x)
    if bad.any():
        num_nan = int(np.isnan(x).sum())
        num_inf = int(bad.sum()) - num_nan
        rows = int(bad.reshape(len(x), -1).any(axis=1).sum()) if x.ndim else 1
        raise ValueError(
            f"Dataset {dataset.name!r} has non-finite inputs: {num_nan} NaN and "
            f"{num_inf} infinite values in {rows} of {len(x)} examples."
        )
    return dataset


def make_dataset(x, y, num_classes: int, name: str, note: str) -> Dataset:
    """Build a :class:`Dataset` with canonical dtypes after validating it.

    Args:
        x: Inputs of shape ``(n, *features)``, already scaled to ``[0, 1]``.
        y: Integer labels of shape ``(n,)``.
        num_classes: Number of classes; every label must lie in ``[0, num_classes)``.
        name: Short name of the data set.
        note: One-line description of provenance.

    Returns:
        The :class:`Dataset`, with ``x`` as ``float32`` and ``y`` as ``int32``.

    Raises:
        ValueError: If shapes disagree, labels are out of range or not integers,
            or ``x`` holds NaN or infinite values.
    """
    x = np.asarray(x)
    y = np.asarray(y)
    if x.ndim < 2:
        raise ValueError(f"Dataset {name!r}: x must have shape (n, *features), got {x.shape}.")
    if y.ndim != 1 or len(y) != len(x):
        raise ValueError(
            f"Dataset {name!r}: y must have shape ({len(x)},) to match x, got {y.shape}."
        )
    if y.size and not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"Dataset {name!r}: labels must be integers, got dtype {y.dtype}.")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(
            f"Dataset {name!r}: labels must lie in [0, {num_classes}), "
            f"found values from {y.min()} to {y.max()}."
        )
    dataset = Dataset(
        x=x.astype(np.float32, copy=False),
        y=y.astype(np.int32, copy=False),
        num_classes=int(num_classes),
        name=name,
        note=note,
    )
    return check_finite(dataset)
