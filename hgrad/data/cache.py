"""Where downloaded data sets are kept on disk."""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_ENV = "HGRAD_DATA_DIR"
"""Environment variable that overrides the default cache root ``~/.cache/hgrad``."""


def cache_dir() -> Path:
    """Return the root folder of hgrad's data cache.

    The folder is ``$HGRAD_DATA_DIR`` when that variable is set and not empty,
    otherwise ``~/.cache/hgrad``. Each data set keeps its files in a subfolder
    named after it (for example ``<root>/mnist``). The folder is not created.

    Returns:
        The cache root as an absolute :class:`pathlib.Path`.
    """
    root = os.environ.get(DATA_DIR_ENV, "")
    if root:
        return Path(root).expanduser().resolve()
    return (Path.home() / ".cache" / "hgrad").resolve()
