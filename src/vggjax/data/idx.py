"""IDX files (the MNIST family's format), gzipped or raw, read with numpy only.

An IDX file is a big-endian header (two zero bytes, a type code, the number of
dimensions, then each dimension as a 32-bit integer) followed by the payload. Only
unsigned bytes (type 0x08) are read. Gzip is recognised by content, not by name. Bad
data raises :class:`~vggjax.errors.DataError`, one line naming the file.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import math
import os
import zlib
from pathlib import Path

import numpy as np

from vggjax.errors import DataError

GZIP_MAGIC = b"\x1f\x8b"  # the first two bytes of a gzip file, whatever its name
# IDX type codes (0x08 uint8 ... 0x0E float64): a header ``[ndim, code, 0, 0]`` is a magic
# written little-endian.
_TYPE_CODES = (0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E)
_CHUNK = 1 << 20  # bytes hashed at a time after the entries a limited read keeps
_REPLACE = "replace it with an intact copy of the file"


def read_idx(path: str | os.PathLike, *, limit: int | None = None) -> np.ndarray:
    """Read an IDX file of unsigned bytes, gzipped or raw (gzip recognised by content).

    Args:
        path: the file to read; its name does not matter.
        limit: read only the first ``limit`` entries along the first dimension (all of
            them if None or more than the file holds). Only the header and those entries
            are read (and decompressed), but the header is checked as in a full read and
            so is the payload's length: a raw file's from its size, a gzip file's from
            the length its trailer records. A file whose length does not match is read in
            full, so that the error is exactly that of a full read.

    Returns:
        ``uint8[d0, ..., dk]``, the 1 to 4 dimensions declared in the header
        (``d0`` at most ``limit``).

    Raises:
        DataError: unreadable file, not IDX (or its header byte-swapped), not uint8, or
            gzip stream or payload truncated or too long; a negative ``limit``.
    """
    if limit is not None and limit < 0:
        raise DataError(f"limit must be at least 0, got {limit}; pass a non-negative limit or none")
    return read_idx_counted(Path(path), limit)[0]


def read_idx_counted(
    path: Path, limit: int | None, *, digest: bool = False
) -> tuple[np.ndarray, int, str | None]:
    """:func:`read_idx`, the number of entries the header declares (``d0``), and a checksum.

    Args:
        path: the file to read.
        limit: as in :func:`read_idx`.
        digest: also return the SHA-256 of the whole decompressed content (header and
            payload, the same whether the file is gzipped or raw). With a ``limit`` the rest
            of the file is then streamed through the hash too, in 1 MiB pieces, so that
            memory stays that of the entries kept.

    Returns:
        ``(array, d0, sha256)``: the array of :func:`read_idx`, ``d0``, and the hex
        SHA-256 of the content (None unless ``digest``).

    Raises:
        DataError: as :func:`read_idx`.
    """
    if limit is not None:
        head = _read_head(path, limit, digest)
        if head is not None:
            return head
    raw = _read_all(path)
    array = _parse_idx(raw, path)
    sha256 = hashlib.sha256(raw).hexdigest() if digest else None
    return (array if limit is None else array[:limit]), len(array), sha256


def _read_all(path: Path) -> bytes:
    """The whole (decompressed) content of ``path``."""
    gzipped = False
    try:
        with open(path, "rb") as f:
            gzipped = f.read(2) == GZIP_MAGIC
        with gzip.open(path, "rb") if gzipped else open(path, "rb") as f:
            return f.read()
    except (EOFError, zlib.error, OSError) as e:
        if not gzipped:
            raise DataError(f"cannot read {path} ({e}); check the path and permissions") from None
        raise DataError(f"{path}: truncated or corrupt gzip stream ({e}); {_REPLACE}") from None


def _read_head(path: Path, limit: int, digest: bool) -> tuple[np.ndarray, int, str | None] | None:
    """The first ``limit`` entries of a sound IDX file, reading no further than them unless ``digest``.

    With ``digest`` the rest is read in pieces into the SHA-256 of the whole content.
    None if reading them all is needed anyway, or if anything looks wrong (unreadable,
    bad header, a length that does not match the header, a stream cut or corrupt
    further on): the full read then gives the data or the error.
    """
    try:
        with open(path, "rb") as f:
            gzipped = f.read(2) == GZIP_MAGIC
            size = f.seek(0, os.SEEK_END)
            if gzipped:
                if size < 18:  # a gzip member's header and trailer alone take 18 bytes
                    return None
                f.seek(-4, os.SEEK_END)
                isize = int.from_bytes(f.read(4), "little")  # content length mod 2**32
            f.seek(0)
            with gzip.GzipFile(fileobj=f, mode="rb") if gzipped else contextlib.nullcontext(f) as stream:
                head = stream.read(4)
                if len(head) == 4 and 1 <= head[3] <= 4:
                    head += stream.read(4 * head[3])
                dims, start = _parse_header(head, path)
                length = start + math.prod(dims)
                if (isize != length % 2**32) if gzipped else (size != length):
                    return None
                if limit >= dims[0]:
                    return None
                shape = (limit, *dims[1:])
                payload = stream.read(math.prod(shape))
                if len(payload) != math.prod(shape):
                    return None
                sha256 = None
                if digest:
                    hasher, read = hashlib.sha256(head[:start]), start + len(payload)
                    hasher.update(payload)
                    while chunk := stream.read(_CHUNK):
                        hasher.update(chunk)
                        read += len(chunk)
                    if read != length:
                        return None
                    sha256 = hasher.hexdigest()
    except (DataError, EOFError, zlib.error, OSError):
        return None
    return np.frombuffer(payload, dtype=np.uint8).reshape(shape).copy(), dims[0], sha256


def _parse_header(raw: bytes, path: Path) -> tuple[tuple[int, ...], int]:
    """The dimensions an IDX header declares, and where its payload starts in ``raw``."""
    if len(raw) >= 4 and raw[2:4] == b"\0\0" and raw[1] in _TYPE_CODES and 1 <= raw[0] <= 4:
        magic = int.from_bytes(raw[:4], "little")  # e.g. 2049 (labels) or 2051 (images)
        raise DataError(
            f"{path}: IDX header looks byte-swapped: it starts with {raw[:4]!r}, the magic {magic} "
            f"written little-endian, but IDX is big-endian ({magic.to_bytes(4, 'big')!r}); write the "
            f"file big-endian, or {_REPLACE}"
        )
    if len(raw) < 4 or raw[:2] != b"\0\0":
        raise DataError(f"{path}: not an IDX file (starts with {raw[:4]!r}); {_REPLACE}")
    code, ndim = raw[2], raw[3]
    if code != 0x08:
        raise DataError(f"{path}: IDX data type 0x{code:02x} is not uint8 (0x08); {_REPLACE}")
    if not 1 <= ndim <= 4:
        raise DataError(f"{path}: IDX header declares {ndim} dimensions, not 1 to 4; {_REPLACE}")
    start = 4 + 4 * ndim
    if len(raw) < start:
        raise DataError(f"{path}: IDX header truncated at {len(raw)} bytes; {_REPLACE}")
    return tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)), start


def _parse_idx(raw: bytes, path: Path) -> np.ndarray:
    """Check an IDX header against the payload and return the payload as an array."""
    dims, start = _parse_header(raw, path)
    expected, got = math.prod(dims), len(raw) - start
    if got != expected:
        raise DataError(
            f"{path}: {'truncated' if got < expected else 'too long'}: header declares shape "
            f"{dims} = {expected} data bytes but the file holds {got}; {_REPLACE}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=start).reshape(dims).copy()
