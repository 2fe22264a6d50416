"""Loading a data set by name."""

from __future__ import annotations

from .dataset import Dataset
from .offline import digits, mnist1d, mnist5k
from .remote import fashion_mnist, mnist

LOADERS = {
    "digits": digits,
    "mnist5k": mnist5k,
    "mnist1d": mnist1d,
    "mnist": mnist,
    "fashion_mnist": fashion_mnist,
}
"""Name -> loader function, for :func:`load`."""


def load(name: str, **kwargs) -> Dataset:
    """Load a data set by name.

    Args:
        name: One of ``"digits"``, ``"mnist5k"``, ``"mnist1d"``, ``"mnist"``,
            ``"fashion_mnist"``.
        **kwargs: Passed on to the loader (e.g. ``split="test"`` for MNIST,
            ``num_samples=`` for MNIST-1D).

    Returns:
        The :class:`Dataset`.

    Raises:
        ValueError: If ``name`` is not a known data set.
    """
    try:
        loader = LOADERS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"Unknown dataset {name!r}; known names: {', '.join(LOADERS)}."
        ) from None
    return loader(**kwargs)
