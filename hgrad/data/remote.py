"""MNIST and Fashion-MNIST read from gzipped IDX files in the cache,
downloaded on first use."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .cache import cache_dir
from .dataset import Dataset, make_dataset
from .download import fetch_files
from .idx import read_idx
from .sources import FASHION_MNIST, MNIST, IdxSource


def load_idx_dataset(
    source: IdxSource,
    split: str = "train",
    *,
    cache: str | os.PathLike | None = None,
    download: bool = True,
    mirrors: Sequence[str] | None = None,
    checksums: Mapping[str, str] | None = None,
    timeout: float = 60.0,
) -> Dataset:
    """Load one split of an IDX image data set, downloading its files if needed.

    Args:
        source: Which data set (:data:`~hgrad.data.sources.MNIST` or
            :data:`~hgrad.data.sources.FASHION_MNIST`).
        split: ``"train"`` or ``"test"``.
        cache: Cache root; the files live in ``<cache>/<source.folder>``.
            Defaults to :func:`~hgrad.data.cache_dir` (``$HGRAD_DATA_DIR`` or
            ``~/.cache/hgrad``).
        download: If False, only read files already in the cache.
        mirrors: Base URLs to download from, in order; defaults to ``source.mirrors``.
        checksums: File name -> SHA-256 hex digest; overrides entries of
            ``source.checksums``.
        timeout: Seconds to wait on each network operation.

    Returns:
        The split as a :class:`Dataset`: ``x`` of shape ``(n, rows * cols)``
        (images flattened, pixels divided by 255) and ``y`` of shape ``(n,)``.

    Raises:
        ValueError: If ``split`` is unknown or the files are not consistent
            image/label IDX files.
        DatasetUnavailableError: If files are missing and cannot be downloaded.
        ChecksumError: If a file's SHA-256 digest is not the recorded one.
    """
    if split not in source.files:
        raise ValueError(f"{source.label}: split must be one of {sorted(source.files)}, got {split!r}.")
    root = Path(cache).expanduser() if cache is not None else cache_dir()
    folder = root / source.folder
    image_file, label_file = source.files[split]
    table = {**source.checksums, **(checksums or {})}
    paths = fetch_files(
        source.label,
        folder,
        {name: table[name] for name in (image_file, label_file)},
        source.mirrors if mirrors is None else tuple(mirrors),
        download=download,
        timeout=timeout,
    )
    images = read_idx(paths[image_file])
    labels = read_idx(paths[label_file])
    if images.dtype != np.uint8 or images.ndim != 3:
        raise ValueError(
            f"{paths[image_file]}: expected uint8 images of shape (n, rows, cols), "
            f"got {images.dtype} {images.shape}."
        )
    if labels.ndim != 1 or len(labels) != len(images):
        raise ValueError(
            f"{paths[label_file]}: expected {len(images)} labels to match the images, "
            f"got shape {labels.shape}."
        )
    n, rows, cols = images.shape
    note = (
        f"{source.label} {split} split, {n:,} {rows}x{cols} images "
        f"read from IDX files in {folder}"
    )
    return make_dataset(
        images.reshape(n, rows * cols).astype(np.float32) / np.float32(255.0),
        labels.astype(np.int64),
        source.num_classes,
        source.folder,
        note,
    )


def mnist(
    split: str = "train",
    *,
    cache: str | os.PathLike | None = None,
    download: bool = True,
    mirrors: Sequence[str] | None = None,
    checksums: Mapping[str, str] | None = None,
    timeout: float = 60.0,
) -> Dataset:
    """MNIST handwritten digits (60,000 train / 10,000 test, 28x28, 10 classes).

    Files are read from ``<cache>/mnist`` and, when missing, downloaded from
    the ossci-datasets S3 mirror used by torchvision, then from
    yann.lecun.com, with a SHA-256 check. Offline, put the four
    ``*-idx?-ubyte.gz`` files in that folder, or use :func:`mnist5k`.

    Args:
        split: ``"train"`` or ``"test"``.
        cache: Cache root (default :func:`cache_dir`).
        download: If False, never touch the network.
        mirrors: Base URLs overriding the default mirrors.
        checksums: File name -> SHA-256 digest overriding the recorded ones.
        timeout: Seconds to wait on each network operation.

    Returns:
        A :class:`Dataset` with ``x`` of shape ``(n, 784)`` in ``[0, 1]``.

    Raises:
        DatasetUnavailableError: If files are missing and cannot be downloaded.
        ChecksumError: If a file's SHA-256 digest is not the recorded one.
    """
    return load_idx_dataset(
        MNIST, split, cache=cache, download=download,
        mirrors=mirrors, checksums=checksums, timeout=timeout,
    )


def fashion_mnist(
    split: str = "train",
    *,
    cache: str | os.PathLike | None = None,
    download: bool = True,
    mirrors: Sequence[str] | None = None,
    checksums: Mapping[str, str] | None = None,
    timeout: float = 60.0,
) -> Dataset:
    """Fashion-MNIST clothing images (60,000 train / 10,000 test, 28x28, 10 classes).

    Files are read from ``<cache>/fashion_mnist`` and, when missing,
    downloaded from Zalando's S3 website bucket with a SHA-256 check.

    Args:
        split: ``"train"`` or ``"test"``.
        cache: Cache root (default :func:`cache_dir`).
        download: If False, never touch the network.
        mirrors: Base URLs overriding the default mirror.
        checksums: File name -> SHA-256 digest overriding the recorded ones.
        timeout: Seconds to wait on each network operation.

    Returns:
        A :class:`Dataset` with ``x`` of shape ``(n, 784)`` in ``[0, 1]``.

    Raises:
        DatasetUnavailableError: If files are missing and cannot be downloaded.
        ChecksumError: If a file's SHA-256 digest is not the recorded one.
    """
    return load_idx_dataset(
        FASHION_MNIST, split, cache=cache, download=download,
        mirrors=mirrors, checksums=checksums, timeout=timeout,
    )
