"""Errors raised when a data set cannot be obtained or fails verification."""

from __future__ import annotations


class DatasetUnavailableError(RuntimeError):
    """A data set's files are not in the cache and could not be downloaded.

    The message names the cache folder the files belong in, the environment
    variable that moves the cache, and the data sets that need no download.
    """


class ChecksumError(RuntimeError):
    """A file's SHA-256 digest differs from the one recorded for it.

    Args:
        filename: Name of the file that failed the check.
        expected: The recorded SHA-256 hex digest.
        actual: The SHA-256 hex digest of the bytes received or found.
        where: Where the bytes came from (a URL or a path).
    """

    def __init__(self, filename: str, expected: str, actual: str, where: str):
        self.filename = filename
        self.expected = expected
        self.actual = actual
        self.where = where
        super().__init__(
            f"SHA-256 mismatch for {filename!r} from {where}: "
            f"expected {expected}, got {actual}."
        )

    def __reduce__(self):
        return (type(self), (self.filename, self.expected, self.actual, self.where))
