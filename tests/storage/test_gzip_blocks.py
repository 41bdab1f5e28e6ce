"""storage.gzip_blocks: zlib's crc32_combine in Python, and gzip files of independently deflated blocks
that standard readers (gzip, zcat, pandas) read as one stream."""

from __future__ import annotations

import ctypes
import ctypes.util
import gzip
import io
import random
import shutil
import struct
import subprocess
import zlib
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amlflow.storage import gzip_blocks
from amlflow.storage.gzip_blocks import (
    HEADER,
    BlockGzipWriter,
    DeflatedBlock,
    crc32_combine,
    deflate_block,
)


def _libz_combine() -> object | None:
    """zlib's own ``crc32_combine64`` from the C library, when it can be loaded (the oracle for lengths
    too long to build)."""
    name = ctypes.util.find_library("z")
    if name is None:
        return None
    try:
        lib = ctypes.CDLL(name)
        fn = lib.crc32_combine64
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_ulong
    fn.argtypes = [ctypes.c_ulong, ctypes.c_ulong, ctypes.c_int64]
    return fn


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000), st.binary(max_size=3000))
def test_crc32_combine_is_the_crc_of_the_concatenation(a: bytes, b: bytes) -> None:
    assert crc32_combine(zlib.crc32(a), zlib.crc32(b), len(b)) == zlib.crc32(a + b)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=500), max_size=8))
def test_combining_pieces_in_order_gives_the_whole_crc(pieces: list[bytes]) -> None:
    crc = 0
    for piece in pieces:
        crc = crc32_combine(crc, zlib.crc32(piece), len(piece))
    assert crc == zlib.crc32(b"".join(pieces))


def test_crc32_combine_on_long_runs_of_zeros() -> None:
    # lengths whose bits reach well past the first table entries (2^20 + odd bits), built for real
    for n in (1, 7, 4096, 65_537, (1 << 20) + 12_345, 3 * (1 << 21) + 1):
        a, b = b"amlflow", bytes(n)
        assert crc32_combine(zlib.crc32(a), zlib.crc32(b), n) == zlib.crc32(a + b), n
    assert crc32_combine(0x1234_5678, zlib.crc32(b""), 0) == 0x1234_5678


def test_the_power_table_repeats_every_32_entries() -> None:
    """x^(2^32) = x mod P: why indexing the table mod 32 is right for lengths past 2^29 bytes."""
    table = gzip_blocks._X2N
    assert len(table) == 32
    assert gzip_blocks._multiply(table[31], table[31]) == table[0]


def test_crc32_combine_agrees_with_zlibs_own_for_long_lengths() -> None:
    libz = _libz_combine()
    if libz is None:
        pytest.skip("the C zlib's crc32_combine64 cannot be loaded here (the tests above still ran)")
    rng = random.Random(7)
    for bits in (8, 16, 29, 31, 32, 33, 40, 48, 62):
        for _ in range(50):
            c1, c2, n = rng.getrandbits(32), rng.getrandbits(32), rng.getrandbits(bits) | 1
            assert crc32_combine(c1, c2, n) == libz(c1, c2, n), (c1, c2, n)  # type: ignore[operator]


def test_crc32_combine_rejects_a_negative_length() -> None:
    with pytest.raises(ValueError, match="negative"):
        crc32_combine(0, 0, -1)


def _gzip_of(pieces: list[bytes]) -> bytes:
    out = io.BytesIO()
    with BlockGzipWriter(out) as writer:
        for piece in pieces:
            writer.add(deflate_block(piece))
    return out.getvalue()


def _csv(rows: int, seed: int = 0) -> bytes:
    rng = random.Random(seed)
    lines = ["tag,0,1,2"] + [
        f"r{i},{rng.random():.6E},{rng.random():.6E},{rng.random():.6E}" for i in range(rows)
    ]
    return ("\n".join(lines) + "\n").encode()


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=20_000), st.lists(st.integers(0, 20_000), max_size=6))
def test_any_split_decompresses_to_the_same_bytes(data: bytes, cuts: list[int]) -> None:
    bounds = sorted({0, len(data), *(min(c, len(data)) for c in cuts)})
    pieces = [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    gz = _gzip_of(pieces)
    assert gzip.decompress(gz) == data
    d = zlib.decompressobj(31)  # one member, nothing after it
    assert d.decompress(gz) == data and d.eof and d.unused_data == b""


def test_the_layout_header_trailer_and_determinism() -> None:
    data = _csv(5000)
    pieces = [data[i : i + 40_000] for i in range(0, len(data), 40_000)]
    gz = _gzip_of(pieces)
    assert gz[:10] == HEADER  # no file name, MTIME 0: the same input gives the same file, any day
    assert gz[-10:-8] == b"\x03\x00"  # the empty final block
    crc, size = struct.unpack("<II", gz[-8:])
    assert (crc, size) == (zlib.crc32(data), len(data))
    assert _gzip_of(pieces) == gz
    # a block's bytes depend on its own bytes only: deflated in other threads, in another order, the same
    with ThreadPoolExecutor(3) as pool:
        blocks = list(pool.map(deflate_block, reversed(pieces)))[::-1]
    out = io.BytesIO()
    with BlockGzipWriter(out) as writer:
        for block in blocks:
            writer.add(block)
    assert out.getvalue() == gz
    # other block boundaries: other bytes, the same content
    other = _gzip_of([data[i : i + 30_000] for i in range(0, len(data), 30_000)])
    assert other != gz and gzip.decompress(other) == data


def test_blocks_cost_little_against_one_stream() -> None:
    data = _csv(20_000)
    pieces = [data[i : i + 256 * 1024] for i in range(0, len(data), 256 * 1024)]
    assert len(pieces) >= 4
    assert len(_gzip_of(pieces)) < 1.03 * len(gzip.compress(data, 6))


def test_empty_streams_and_empty_blocks() -> None:
    assert gzip.decompress(_gzip_of([])) == b""
    assert gzip.decompress(_gzip_of([b"", b"a", b"", b"bc", b""])) == b"abc"
    assert deflate_block(b"") == DeflatedBlock(b"", 0, 0)


def test_isize_is_the_length_mod_2_to_the_32() -> None:
    out = io.BytesIO()
    writer = BlockGzipWriter(out)
    writer.add(DeflatedBlock(b"", 0x0BAD_F00D, (1 << 32) + 5))  # the length of a > 4 GiB block
    writer.close()
    assert out.getvalue()[-4:] == struct.pack("<I", 5)
    with pytest.raises(ValueError, match="closed"):
        writer.add(deflate_block(b"x"))


def test_a_failed_with_block_leaves_the_stream_open() -> None:
    out = io.BytesIO()
    block = deflate_block(b"half")
    with pytest.raises(RuntimeError), BlockGzipWriter(out) as writer:
        writer.add(block)
        raise RuntimeError("scoring failed")
    assert out.getvalue() == HEADER + block.data  # no final block, no trailer: not a complete gzip
    with pytest.raises((EOFError, gzip.BadGzipFile)):
        gzip.decompress(out.getvalue())


def test_standard_readers_read_it(tmp_path) -> None:
    data = _csv(3000)
    path = tmp_path / "result.csv.gz"
    path.write_bytes(_gzip_of([data[i : i + 25_000] for i in range(0, len(data), 25_000)]))
    with gzip.open(path, "rb") as fh:
        assert fh.read() == data
    frame = pd.read_csv(path)
    assert frame.equals(pd.read_csv(io.BytesIO(data)))
    assert len(frame) == 3000
    for tool in ("zcat", "gzip"):
        exe = shutil.which(tool)
        if exe is None:
            continue
        args = [exe] if tool == "zcat" else [exe, "-dc"]
        assert subprocess.run([*args, str(path)], capture_output=True, check=True).stdout == data
        if tool == "gzip":
            subprocess.run([exe, "-t", str(path)], check=True)  # the CRC-32 and length check out
