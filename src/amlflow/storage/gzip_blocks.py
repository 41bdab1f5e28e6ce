"""A gzip file written as independently compressed blocks (pigz's layout), so the blocks can be
compressed anywhere — another thread, another process, another machine — and still give the same bytes.

Layout of the file (RFC 1952, one member; any gzip reader — ``gzip.decompress``, ``zcat``, pandas —
reads it as usual)::

    1f 8b 08 00 | MTIME 00 00 00 00 | XFL 00 | OS ff            the 10-byte header, no name, no time
    block 0 | block 1 | ... | block n-1                           raw deflate, each ending in a sync flush
    03 00                                                         an empty final deflate block (BFINAL)
    CRC32 | ISIZE                                                 of the whole uncompressed stream, LE

Each block is its uncompressed bytes deflated **on their own** (:func:`deflate_block`: a fresh
``zlib.compressobj(level, DEFLATED, -15)``, no dictionary from the previous block, ended with
``Z_SYNC_FLUSH``, which closes the block on a byte boundary without marking it final). A block's
compressed bytes therefore depend on its uncompressed bytes and the level only, never on what was
compressed before it or where. The writer (:class:`BlockGzipWriter`) only appends them, combines the
blocks' CRC-32s (:func:`crc32_combine`) and lengths, and ends the stream with one empty final block, so
it never needs to know in advance which block is the last one.

The price of independent blocks is the compression ratio: each block starts without the previous 32 KiB
as its window. At level 6 on AML batch output, blocks of ~256 KiB of CSV are 0.7 % larger than one
stream; blocks of 64 KiB 3 %.

Everything here is the standard library (``zlib``); :func:`crc32_combine` is zlib's own algorithm (the
standard library does not expose zlib's ``crc32_combine``), written out in Python.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import BinaryIO

import numpy as np

__all__ = [
    "HEADER",
    "TRAILER_BLOCK",
    "BlockGzipWriter",
    "DeflatedBlock",
    "RecordBlocks",
    "crc32_combine",
    "deflate_block",
]

#: the gzip member header every file starts with: deflate, no flags, MTIME 0, XFL 0, OS 255 (unknown)
HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
#: an empty deflate block with BFINAL set (fixed Huffman codes, just the end-of-block code)
TRAILER_BLOCK = b"\x03\x00"
#: zlib's default level, and ``gzip -6``
LEVEL = 6


@dataclass(frozen=True)
class DeflatedBlock:
    """One block: its raw deflate bytes (ending in a sync flush, not final), the CRC-32 and the length
    of its uncompressed bytes."""

    data: bytes
    crc: int
    size: int


def deflate_block(raw: bytes | bytearray | memoryview, level: int = LEVEL) -> DeflatedBlock:
    """Compress ``raw`` as one block of a :class:`BlockGzipWriter` stream (same input, same bytes).

    An empty input is an empty block (no bytes: nothing to add to the stream)."""
    if not len(raw):
        return DeflatedBlock(b"", 0, 0)
    compressor = zlib.compressobj(level, zlib.DEFLATED, -15)
    data = compressor.compress(raw) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return DeflatedBlock(data, zlib.crc32(raw), len(raw))


# --------------------------------------------------------------------------------------------- CRC-32
#
# A CRC-32 (reflected, polynomial 0xEDB88320) is the message as a polynomial over GF(2), times x^32,
# modulo the CRC polynomial P (with the pre- and post-inversions, which cancel in the combination below).
# Appending len2 bytes B to a message A gives crc(AB) = crc(A) * x^(8*len2) mod P  xor  crc(B), so
# combining needs x^(8*len2) mod P: the product of the precomputed x^(2^k) mod P for the bits of 8*len2,
# O(log len2) multiplications of 32-bit polynomials. In the reflected representation bit 31 is x^0.

_POLY = 0xEDB88320
_ONE = 1 << 31  # the polynomial 1 (x^0)


def _multiply(a: int, b: int) -> int:
    """``a * b mod P`` for reflected 32-bit polynomials."""
    product = 0
    mask = _ONE
    while a:
        if a & mask:
            product ^= b
            a ^= mask
        mask >>= 1
        b = (b >> 1) ^ _POLY if b & 1 else b >> 1  # b *= x
    return product


def _powers() -> list[int]:
    """``x^(2^k) mod P`` for k = 0..31. For this P, x^(2^32) = x mod P, so the sequence repeats every 32
    and :func:`_x_to_8n` indexes it mod 32, as zlib does (tests/storage/test_gzip_blocks.py checks the
    period and lengths up to 2^62 against zlib's own function where the C library is loadable)."""
    table = []
    p = _ONE >> 1  # x^1
    for _ in range(32):
        table.append(p)
        p = _multiply(p, p)
    return table


_X2N = _powers()


def _x_to_8n(n: int) -> int:
    """``x^(8 n) mod P``."""
    p = _ONE
    k = 3  # 8 n = n << 3: start at x^(2^3)
    while n:
        if n & 1:
            p = _multiply(_X2N[k & 31], p)
        n >>= 1
        k += 1
    return p


def crc32_combine(crc1: int, crc2: int, len2: int) -> int:
    """The CRC-32 of ``A + B`` from ``crc1 = zlib.crc32(A)``, ``crc2 = zlib.crc32(B)`` and
    ``len2 = len(B)`` (zlib's ``crc32_combine``)."""
    if len2 < 0:
        raise ValueError(f"len2: {len2} is negative")
    return _multiply(_x_to_8n(len2), crc1 & 0xFFFFFFFF) ^ (crc2 & 0xFFFFFFFF)


# --------------------------------------------------------------------------------------------- writer


class BlockGzipWriter:
    """Appends :class:`DeflatedBlock` s to ``out`` as one gzip member (the module docstring's layout).

    ``out`` is any writable binary file object; the writer writes the header at once, each block as it
    is added (in the order of the uncompressed stream), and the end of the stream on :meth:`close`
    (or at the end of a ``with`` block that raised nothing). It does not close ``out``.
    """

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._crc = 0
        self._size = 0
        self._closed = False
        out.write(HEADER)

    @property
    def size(self) -> int:
        """Uncompressed bytes added so far."""
        return self._size

    @property
    def crc(self) -> int:
        """CRC-32 of the uncompressed bytes added so far."""
        return self._crc

    def add(self, block: DeflatedBlock) -> None:
        """Append the next block of the stream."""
        if self._closed:
            raise ValueError("the gzip stream is already closed")
        if block.size:
            self._out.write(block.data)
            self._crc = crc32_combine(self._crc, block.crc, block.size)
            self._size += block.size

    def close(self) -> None:
        """End the stream: the final empty block, CRC-32 and ISIZE (length mod 2^32)."""
        if not self._closed:
            self._closed = True
            self._out.write(TRAILER_BLOCK + struct.pack("<II", self._crc, self._size & 0xFFFFFFFF))

    def __enter__(self) -> BlockGzipWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is None:
            self.close()


class RecordBlocks:
    """A writable binary sink that cuts AML batch CSV into blocks of ``rows`` records, in order.

    The first record written is the header: with ``header=True`` it opens block 0 (which then holds the
    header and ``rows`` records), otherwise it is dropped (a later partition of a span, whose header the
    span's first partition carries). Every block is handed to ``emit`` as bytes as soon as it is
    complete; :meth:`close` hands over the rest. A record ends at a ``\n`` outside double quotes (the
    engine quotes a field with ``"`` when it holds ``,``, ``"`` or a line break, doubling inner quotes),
    so one record is one output position, whatever its fields hold.
    """

    def __init__(self, rows: int, *, header: bool, emit: Callable[[bytes], None]) -> None:
        if rows < 1:
            raise ValueError(f"rows: {rows} must be at least 1")
        self._rows = rows
        self._emit = emit
        self._keep_header = header
        self._rest = b""  # bytes after the last cut
        self._scanned = 0  # bytes of _rest already searched for record ends
        self._in_block = 0  # complete records in _rest (the header not counted)
        self._quoted = False  # _rest ends inside a quoted field
        self._before_header = True
        self.records = 0  # records after the header

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:
        chunk = bytes(data)
        if not chunk:
            return 0
        buf = self._rest + chunk if self._rest else chunk
        view = np.frombuffer(buf, dtype=np.uint8)[self._scanned :]
        ends = np.flatnonzero(view == 10)
        if self._quoted or buf.find(b'"', self._scanned) >= 0:
            parity = np.cumsum(view == 34, dtype=np.int64) + int(self._quoted)
            ends = ends[(parity[ends] & 1) == 0]
            self._quoted = bool(parity[-1] & 1)
        cut_ends = (ends + (self._scanned + 1)).tolist()  # offsets in buf just past each record
        cut = 0
        if self._before_header and cut_ends:
            self._before_header = False
            header_end = cut_ends.pop(0)
            if not self._keep_header:
                cut = header_end
        first = self._rows - self._in_block - 1  # index in cut_ends of the record completing the block
        for k in range(first, len(cut_ends), self._rows):
            self._emit(buf[cut : cut_ends[k]])
            cut = cut_ends[k]
        self._in_block = (self._in_block + len(cut_ends)) % self._rows
        self.records += len(cut_ends)
        self._rest = buf[cut:]
        self._scanned = len(self._rest)
        return len(chunk)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        """Hand over the last (partial) block, if any bytes are left."""
        if self._rest:
            self._emit(self._rest)
        self._rest = b""
        self._scanned = self._in_block = 0
