"""Reading and writing the IDX file format used by MNIST and Fashion-MNIST.

An IDX file is a 4-byte magic number ``0x00 0x00 <dtype code> <ndim>``, then
``ndim`` big-endian ``uint32`` dimension sizes, then the array in C order with
big-endian items. Files whose name ends in ``.gz`` are gzip-compressed.
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np

IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
"""IDX type code -> NumPy dtype (big-endian as stored on disk)."""

_GZIP_MAGIC = b"\x1f\x8b"


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Decode the bytes of an uncompressed IDX file.

    Args:
        data: The whole file content.
        source: Name used in error messages (a path or URL).

    Returns:
        The array, with native byte order and the shape recorded in the header.

    Raises:
        ValueError: If the magic number, type code, dimension count or the
            amount of data does not match the IDX format.
    """
    if len(data) < 4:
        raise ValueError(f"{source}: too short for an IDX file ({len(data)} bytes).")
    zero0, zero1, code, ndim = data[0], data[1], data[2], data[3]
    if zero0 != 0 or zero1 != 0:
        raise ValueError(
            f"{source}: bad IDX magic number {data[:4].hex()} (must start with 0000)."
        )
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise ValueError(f"{source}: unknown IDX type code 0x{code:02X} (known: {known}).")
    if ndim == 0:
        raise ValueError(f"{source}: IDX header declares 0 dimensions.")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(
            f"{source}: truncated IDX header ({len(data)} bytes, {header} needed "
            f"for {ndim} dimensions)."
        )
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = IDX_DTYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    actual = len(data) - header
    if actual != expected:
        raise ValueError(
            f"{source}: IDX header declares shape {shape} of {dtype.name} "
            f"({expected} data bytes) but the file has {actual} data bytes."
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file, gunzipping it first if it is gzip-compressed.

    Compression is detected from the file's first bytes, not its name.

    Args:
        path: Path to an ``.idx`` or ``.gz`` IDX file.

    Returns:
        The array stored in the file.

    Raises:
        ValueError: If the file is not a valid (possibly gzipped) IDX file.
    """
    path = Path(path)
    data = path.read_bytes()
    if data[:2] == _GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as error:
            raise ValueError(f"{path}: corrupt gzip data ({error}).") from error
    return parse_idx(data, source=str(path))


def encode_idx(array: np.ndarray) -> bytes:
    """Encode an array as the bytes of an uncompressed IDX file.

    Args:
        array: Array of one of the dtypes in :data:`IDX_DTYPES`, at least 1-D
            and with at most 255 dimensions.

    Returns:
        The IDX file content.

    Raises:
        ValueError: If the dtype or number of dimensions cannot be stored.
    """
    array = np.asarray(array)
    if not 1 <= array.ndim <= 255:
        raise ValueError(f"IDX stores 1 to 255 dimensions, got {array.ndim}.")
    codes = {(dtype.kind, dtype.itemsize): code for code, dtype in IDX_DTYPES.items()}
    code = codes.get((array.dtype.kind, array.dtype.itemsize))
    if code is None:
        raise ValueError(
            f"IDX cannot store dtype {array.dtype}; use uint8, int8, int16, int32, "
            f"float32 or float64."
        )
    dtype = IDX_DTYPES[code]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=dtype).tobytes()


def write_idx(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write an array as an IDX file, gzip-compressed if ``path`` ends in ``.gz``.

    Args:
        path: Destination file.
        array: Array to store (see :func:`encode_idx` for allowed dtypes).

    Returns:
        The path written, as a :class:`pathlib.Path`.
    """
    path = Path(path)
    data = encode_idx(array)
    if path.suffix == ".gz":
        data = gzip.compress(data, mtime=0)
    path.write_bytes(data)
    return path
