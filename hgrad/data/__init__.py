"""Data sets for hyperparameter-optimisation experiments.

Every loader returns a :class:`Dataset` ``(x, y, num_classes, name, note)``
with ``float32`` inputs in ``[0, 1]`` and ``int32`` labels.

Offline (no download): :func:`digits`, :func:`mnist5k`, :func:`mnist1d`.
Downloaded once into :func:`cache_dir` (``$HGRAD_DATA_DIR`` or
``~/.cache/hgrad``) with a SHA-256 check: :func:`mnist`, :func:`fashion_mnist`.
"""

from .cache import DATA_DIR_ENV, cache_dir
from .dataset import Dataset, check_finite
from .errors import ChecksumError, DatasetUnavailableError
from .noise import flip_labels
from .offline import digits, mnist1d, mnist5k
from .registry import load
from .remote import fashion_mnist, mnist
from .split import split

__all__ = [
    "Dataset",
    "load",
    "digits",
    "mnist5k",
    "mnist1d",
    "mnist",
    "fashion_mnist",
    "split",
    "flip_labels",
    "check_finite",
    "DATA_DIR_ENV",
    "cache_dir",
    "DatasetUnavailableError",
    "ChecksumError",
]
