"""Deterministic shuffled splits of a :class:`Dataset` into disjoint parts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .dataset import Dataset


def _check_size(key, size) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 0:
        raise ValueError(f"split: size of part {key!r} must be a non-negative int, got {size!r}.")
    return int(size)


def split(
    dataset: Dataset,
    sizes: Sequence[int] | Mapping[str, int],
    *,
    seed: int,
) -> tuple[Dataset, ...] | dict[str, Dataset]:
    """Shuffle ``dataset`` with ``seed`` and cut it into consecutive disjoint parts.

    The examples are permuted once with ``numpy.random.default_rng(seed)``;
    part ``k`` takes the next ``sizes[k]`` of them. Examples beyond
    ``sum(sizes)`` are left out. The same seed always gives the same parts.

    Args:
        dataset: The data set to split.
        sizes: Sizes of the parts, either a sequence of ints or a mapping
            part name -> int (in the mapping's order).
        seed: Seed of the shuffle.

    Returns:
        A tuple of :class:`Dataset` (for a sequence) or a dict part name ->
        :class:`Dataset` (for a mapping). Each part keeps the name and class
        count of ``dataset``; its note says which part it is.

    Raises:
        ValueError: If a size is negative or not an int, there are no parts,
            or the sizes add up to more examples than ``dataset`` has.
    """
    named = isinstance(sizes, Mapping)
    items = list(sizes.items()) if named else list(enumerate(sizes))
    if not items:
        raise ValueError("split: sizes must name at least one part.")
    counts = [_check_size(key, size) for key, size in items]
    n = len(dataset.x)
    if sum(counts) > n:
        raise ValueError(
            f"split: sizes {dict(items) if named else tuple(counts)} add up to "
            f"{sum(counts):,} examples but dataset {dataset.name!r} has only {n:,}."
        )
    order = np.random.default_rng(seed).permutation(n)
    ends = np.cumsum(counts)
    parts = []
    for (key, _), count, end in zip(items, counts, ends, strict=True):
        index = order[end - count:end]
        parts.append(dataset._replace(
            x=dataset.x[index],
            y=dataset.y[index],
            note=f"{dataset.note}; part {key!r} of a shuffled split (seed {seed}), {count:,} examples",
        ))
    if named:
        return {key: part for (key, _), part in zip(items, parts, strict=True)}
    return tuple(parts)
