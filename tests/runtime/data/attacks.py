"""Small files that claim (or expand to) huge data: built in a blink, for the bound tests.

* :func:`zip_bomb_npz` — a ``.npz`` whose one member is a ``.npy`` of ``gib`` GiB of zeros,
  deflated (about 1 MB per GiB). The deflate stream is one compressed 16 MiB block of zeros,
  repeated: after a full flush the compressor's state is reset, so each block compresses to the
  same bytes. The member's CRC is not computed (it would take seconds): a reader that checks
  sizes first never gets to it, one that reads everything fails only after allocating it all.
* :func:`npy_claiming_rows` — a ``.npy`` header that claims ``rows`` × ``cols`` float64 with no data.
* :func:`png_of_size` — a valid PNG of a constant colour: IHDR with the given size, one IDAT.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np

_BLOCK = 16 * 1024**2


def _npy_header(shape, descr="<f8") -> bytes:
    b = io.BytesIO()
    np.lib.format.write_array_header_1_0(b, {"descr": descr, "fortran_order": False, "shape": tuple(shape)})
    return b.getvalue()


def zip_bomb_npz(path: Path, gib: float = 5.0, member: str = "x.npy") -> Path:
    blocks = int(gib * 1024**3) // _BLOCK
    rows = blocks * _BLOCK // 16
    header = _npy_header((rows, 2))
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = c.compress(header) + c.flush(zlib.Z_FULL_FLUSH)
    block = c.compress(bytes(_BLOCK)) + c.flush(zlib.Z_FULL_FLUSH)
    tail = c.flush()
    data = first + block * blocks + tail
    usize = len(header) + blocks * _BLOCK
    name = member.encode()
    extra = struct.pack("<HHQQ", 1, 16, usize, len(data))  # zip64: uncompressed, compressed sizes
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 45, 0, 8, 0, 0x21, 0, 0xFFFFFFFF, 0xFFFFFFFF, len(name), len(extra))
    central = struct.pack(
        "<IHHHHHHIIIHHHHHII",
        0x02014B50,
        45,
        45,
        0,
        8,
        0,
        0x21,
        0,
        0xFFFFFFFF,
        0xFFFFFFFF,
        len(name),
        len(extra),
        0,
        0,
        0,
        0,
        0,
    )
    body = local + name + extra + data
    cd = central + name + extra
    eocd = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(cd), len(body), 0)
    path.write_bytes(body + cd + eocd)
    return path


def npy_claiming_rows(path: Path, rows: int = 10**10, cols: int = 2) -> Path:
    path.write_bytes(np.lib.format.MAGIC_PREFIX + b"\x01\x00" + _npy_header((rows, cols))[8:])
    return path


def png_of_size(path: Path, width: int, height: int, mode: str = "L", value: int = 128) -> Path:
    """A PNG of one colour; 8-bit grey (``L``) or RGB. Compresses to about 1/1000 of its pixels."""
    channels = {"L": 1, "RGB": 3}[mode]
    colour = {"L": 0, "RGB": 2}[mode]

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    row = b"\x00" + bytes([value]) * (width * channels)  # filter byte 0, then the pixels
    k = max(1, min(height, _BLOCK // len(row)))  # rows per compressed block (repeated, as in the zip bomb)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = c.compress(row * k) + c.flush(zlib.Z_FULL_FLUSH)
    full, rest = divmod(height, k)
    tail = c.compress(row * rest) + c.flush()
    adler = 1
    for _ in range(full):
        adler = zlib.adler32(row * k, adler)
    adler = zlib.adler32(row * rest, adler)
    idat = b"\x78\x01" + block * full + tail + struct.pack(">I", adler)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path
