"""A small, validating safetensors reader: header checks in pure Python, data as row blocks of a memory map.

Format: 8-byte little-endian header length N, N bytes of JSON
`{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}`, then the data
blob; offsets are relative to the blob. We never unpickle and never import torch.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from .errors import ConversionError

# safetensors dtype -> (numpy dtype name for the raw bits, bytes per element).
# BF16 has no numpy dtype: it is read as uint16 bits and widened by `bf16_to_f32`.
DTYPES = {"F32": ("<f4", 4), "F16": ("<f2", 2), "BF16": ("<u2", 2)}

# A header larger than this is not a real checkpoint (the real ones are well under 1 MiB);
# refusing it keeps a corrupt length field from allocating gigabytes.
MAX_HEADER = 100 * 2**20


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: str  # "F32" | "F16" | "BF16"
    shape: tuple[int, ...]
    path: Path
    offset: int  # absolute byte offset in the file
    nbytes: int

    def row_blocks(self, step: int):
        """The tensor as (rows, last dim) blocks of at most `step` rows, straight from a map of
        the file, each with release(), which drops the block's pages from this process once
        the caller (a worker thread) is done with it: resident memory stays at the blocks in
        flight, not the whole tensor (the kernel keeps them in its page cache)."""
        import functools
        import mmap

        import numpy as np

        dtype = np.dtype(DTYPES[self.dtype][0])
        cols = self.shape[-1] if self.shape else 1
        n_rows = self.nbytes // (dtype.itemsize * cols) if cols else 0
        row_bytes = cols * dtype.itemsize
        with open(self.path, "rb") as f:
            if self.offset + self.nbytes > os.fstat(f.fileno()).st_size:
                raise ConversionError(f"{self.path.name} ended inside tensor {self.name} (truncated?)")
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        for i in range(0, n_rows, step):
            n = min(step, n_rows - i)
            start = self.offset + i * row_bytes
            page = start - start % mmap.PAGESIZE
            release = functools.partial(mm.madvise, mmap.MADV_DONTNEED, page, start + n * row_bytes - page)
            yield np.frombuffer(mm, dtype=dtype, count=n * cols, offset=start).reshape(n, cols), release


def read_header(path: Path) -> dict[str, TensorEntry]:
    """Parse and validate one .safetensors file's header; raise ConversionError on any defect."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ConversionError(f"{path.name}: truncated safetensors file (no header length)")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER or 8 + n > size:
            raise ConversionError(f"{path.name}: corrupt safetensors header (length {n}, file size {size})")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ConversionError(f"{path.name}: corrupt safetensors header (not valid JSON)") from None
    if not isinstance(header, dict):
        raise ConversionError(f"{path.name}: corrupt safetensors header (not a JSON object)")
    base = 8 + n
    entries = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        entries[name] = _entry(path, name, info, base, size)
    return entries


def _entry(path: Path, name: str, info, base: int, size: int) -> TensorEntry:
    bad = f"{path.name}: corrupt safetensors header for tensor {name!r}"
    try:
        dtype, shape, (begin, end) = info["dtype"], tuple(info["shape"]), info["data_offsets"]
    except (TypeError, KeyError, ValueError):
        raise ConversionError(bad) from None
    if not isinstance(dtype, str) or dtype not in DTYPES:  # a list/dict dtype is unhashable
        raise ConversionError(f"{path.name}: tensor {name!r} has dtype {dtype}; only F32, F16 and BF16 are supported")
    if not all(isinstance(d, int) and d >= 0 for d in shape) or not all(isinstance(o, int) for o in (begin, end)):
        raise ConversionError(bad)
    nbytes = math.prod(shape) * DTYPES[dtype][1]
    if begin < 0 or end - begin != nbytes:
        raise ConversionError(f"{bad} (offsets do not match its shape)")
    if base + end > size:
        raise ConversionError(f"{path.name}: truncated safetensors file (tensor {name!r} runs past the end)")
    return TensorEntry(name, dtype, shape, path, base + begin, nbytes)


def bf16_to_f32(bits):
    """BF16 is the top half of an f32: widen by shifting the bits left 16."""
    import numpy as np

    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
