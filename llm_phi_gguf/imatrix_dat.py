"""llama.cpp's legacy importance-matrix file (.dat): the one reader and writer.

Layout (little-endian): int32 entry count; per entry int32 name length, the name, int32 ncall,
int32 value count, float32 values (sum of squared activations / count, times ncall); then an
optional trailer: int32 chunk count, int32 length, the dataset name.

Standard library only, and no package imports: the quantizer child (_quantize_child.py) loads this
file by path so that it starts without importing the package (and llm with it).
"""

from __future__ import annotations

import struct
import sys
from array import array


def read_dat(data: bytes) -> tuple[list[tuple[str, int, array]], int, list[str]]:
    """(entries as (name, ncall, float32 values), chunk count, datasets); ValueError if malformed."""
    try:
        (n,), pos = struct.unpack_from("<i", data), 4
        entries = []
        for _ in range(n):
            (length,) = struct.unpack_from("<i", data, pos)
            name = data[pos + 4: pos + 4 + length].decode()
            ncall, nval = struct.unpack_from("<ii", data, pos + 4 + length)
            pos += 12 + length
            if length <= 0 or nval <= 0 or pos + 4 * nval > len(data):
                raise ValueError("entry out of bounds")
            values = array("f", data[pos: pos + 4 * nval])
            if sys.byteorder == "big":
                values.byteswap()
            pos += 4 * nval
            entries.append((name, ncall, values))
        chunk_count, datasets = 0, []
        if pos + 8 <= len(data):  # optional trailer
            chunk_count, length = struct.unpack_from("<ii", data, pos)
            datasets = [data[pos + 8: pos + 8 + length].decode(errors="replace")]
    except (struct.error, UnicodeDecodeError) as e:
        raise ValueError(str(e)) from None
    return entries, chunk_count, datasets


def write_dat(path, rows: list, chunk_count: int, dataset: str) -> None:
    """rows: (name, ncall, float32 values: an array or a numpy array); readers divide values by ncall."""
    with open(path, "wb") as f:
        f.write(struct.pack("<i", len(rows)))
        for name, ncall, values in rows:
            raw = name.encode()
            f.write(struct.pack("<i", len(raw)) + raw + struct.pack("<ii", ncall, len(values)))
            f.write(_little_endian_f32(values))
        data = dataset.encode()
        f.write(struct.pack("<ii", chunk_count, len(data)) + data)


def _little_endian_f32(values) -> bytes:
    if hasattr(values, "astype"):  # numpy
        return values.astype("<f4").tobytes()
    out = array("f", values)
    if sys.byteorder == "big":
        out.byteswap()
    return out.tobytes()
