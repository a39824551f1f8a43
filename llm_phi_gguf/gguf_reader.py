"""Read a GGUF header without loading weights and without llama.cpp: the bounded reader.

The parser is deliberately defensive: every read is checked against the bytes left in the file,
no count from the file is used to allocate before it was checked against that size, and every
limit mirrors the reader in the vendored llama.cpp (ggml/src/gguf.cpp, llama-cpp-python 0.3.36).
A malformed file is one GGUFError naming the file and the problem. What llama.cpp's loader
further needs of a Phi model (validate_gguf) lives in gguf_info.py.
Only the standard library is imported: this module is loaded when a user registers a model.
"""

from __future__ import annotations

import os
import struct
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Iterable

from .errors import GGUFError
from .quant_types import QUANT_TYPES

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_STRING_LENGTH = 1 << 30  # GGUF_MAX_STRING_LENGTH
MAX_ARRAY_ELEMENTS = 1 << 30  # GGUF_MAX_ARRAY_ELEMENTS
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_NAME_BYTES = 64  # GGML_MAX_NAME, includes the NUL, so names must be shorter
_INT64_MAX = (1 << 63) - 1
_SIZE_MAX = (1 << 64) - 1

# GGUF value types: id -> (struct format, size, name). 8 (string) and 9 (array) are variable.
T_U8, T_I8, T_U16, T_I16, T_U32, T_I32, T_F32, T_BOOL = range(8)
T_STRING, T_ARRAY, T_U64, T_I64, T_F64 = range(8, 13)
_SCALAR_TYPES: dict[int, tuple[str, int, str]] = {
    T_U8: ("B", 1, "u8"),
    T_I8: ("b", 1, "i8"),
    T_U16: ("H", 2, "u16"),
    T_I16: ("h", 2, "i16"),
    T_U32: ("I", 4, "u32"),
    T_I32: ("i", 4, "i32"),
    T_F32: ("f", 4, "f32"),
    T_BOOL: ("?", 1, "bool"),  # llama.cpp reads an int8 and tests != 0, as "?" does
    T_U64: ("Q", 8, "u64"),
    T_I64: ("q", 8, "i64"),
    T_F64: ("d", 8, "f64"),
}
VALUE_TYPE_NAMES = {t: v[2] for t, v in _SCALAR_TYPES.items()} | {T_STRING: "str", T_ARRAY: "arr"}

# ggml tensor types of the vendored llama.cpp: id -> (name, block size, bytes per block).
# Hard-coded rather than taken from the `gguf` package: that import costs ~0.1 s (numpy), and
# gguf-py 0.19.0 lacks Q2_0 (42). Ids 4, 5, 31-33, 36-38 were removed and are invalid in files.
GGML_TYPE_COUNT = 43
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22), 7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 40),
    10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176), 14: ("Q6_K", 256, 210), 15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66), 17: ("IQ2_XS", 256, 74), 18: ("IQ3_XXS", 256, 98),
    19: ("IQ1_S", 256, 50), 20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82), 23: ("IQ4_XS", 256, 136), 24: ("I8", 1, 1), 25: ("I16", 1, 2),
    26: ("I32", 1, 4), 27: ("I64", 1, 8), 28: ("F64", 1, 8), 29: ("IQ1_M", 256, 56),
    30: ("BF16", 1, 2), 34: ("TQ1_0", 256, 54), 35: ("TQ2_0", 256, 66), 39: ("MXFP4", 32, 17),
    40: ("NVFP4", 64, 36), 41: ("Q1_0", 128, 18), 42: ("Q2_0", 64, 18),
}

# llama_ftype numbers (include/llama.h) -> the names users know from llama-quantize, from the
# one table of file types (data/ftypes.json).
FILE_TYPE_NAMES: dict[int, str] = {t.ftype: t.name for t in QUANT_TYPES}
# What llama.cpp's loader guesses when general.file_type is absent (most common tensor type).
_GUESSED_FILE_TYPE = {
    "F32": "F32", "F16": "F16", "BF16": "BF16", "Q4_0": "Q4_0", "Q4_1": "Q4_1",
    "Q5_0": "Q5_0", "Q5_1": "Q5_1", "Q8_0": "Q8_0", "Q2_K": "Q2_K", "Q3_K": "Q3_K_M",
    "Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M", "Q6_K": "Q6_K", "TQ1_0": "TQ1_0", "TQ2_0": "TQ2_0",
    "IQ2_XXS": "IQ2_XXS", "IQ2_XS": "IQ2_XS", "IQ2_S": "IQ2_S", "IQ3_XXS": "IQ3_XXS",
    "IQ1_S": "IQ1_S", "IQ1_M": "IQ1_M", "IQ4_NL": "IQ4_NL", "IQ4_XS": "IQ4_XS",
    "IQ3_S": "IQ3_S", "NVFP4": "NVFP4", "Q1_0": "Q1_0", "Q2_0": "Q2_0", "MXFP4": "MXFP4_MOE",
}

_CHUNK = 1 << 20  # read-ahead window: small files cost one read, vocabularies a few


@dataclass(frozen=True)
class GGUFArray:
    """Placeholder for an array value that was validated but not decoded.

    `offset`/`nbytes` locate its elements in the file so they can be decoded later
    (`GGUFInfo.read_array`) without parsing the header again."""

    type: int
    count: int
    offset: int = field(default=0, compare=False)
    nbytes: int = field(default=0, compare=False)

    @property
    def type_name(self) -> str:
        return VALUE_TYPE_NAMES.get(self.type, str(self.type))


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # GGUF ne order: shape[0] is the row length
    type: int
    type_name: str
    offset: int  # relative to GGUFInfo.data_offset
    nbytes: int

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass
class GGUFInfo:
    path: str
    version: int
    alignment: int
    metadata: dict[str, object]
    tensors: list[TensorInfo]
    data_offset: int
    file_size: int
    # GGUF value type of every key (T_ARRAY for arrays): u32 and i32 both decode to int, and
    # llama.cpp insists on the exact type.
    value_types: dict[str, int] = field(default_factory=dict)
    # Element type of every array key (decoded arrays are plain lists).
    array_types: dict[str, int] = field(default_factory=dict)
    # File offset of every element of the string arrays named in read_gguf's `index_arrays`.
    string_offsets: dict[str, list[int]] = field(default_factory=dict)

    def strings(self, key: str) -> "StringArray":
        """An indexed string array, its elements decoded one at a time when asked for."""
        value = self.metadata.get(key)
        if key not in self.string_offsets or not isinstance(value, GGUFArray):
            raise GGUFError(f"{self.path}: key {key!r} was not read as an indexed string array")
        return StringArray(self.path, key, self.string_offsets[key], value.offset + value.nbytes)

    def get(self, key: str, default: object = None) -> object:
        return self.metadata.get(key, default)

    @property
    def architecture(self) -> str | None:
        arch = self.metadata.get("general.architecture")
        return arch if isinstance(arch, str) else None

    @property
    def name(self) -> str | None:
        name = self.metadata.get("general.name")
        return name if isinstance(name, str) else None

    @property
    def file_type(self) -> int | None:
        ftype = self.metadata.get("general.file_type")
        return ftype if isinstance(ftype, int) and not isinstance(ftype, bool) else None

    @property
    def file_type_name(self) -> str | None:
        if self.file_type is not None:
            return FILE_TYPE_NAMES.get(self.file_type, f"unknown file type {self.file_type}")
        # Like llama.cpp: the most common type among weight matrices decides.
        counts = Counter(t.type_name for t in self.tensors if len(t.shape) >= 2)
        if not counts:
            return None
        return _GUESSED_FILE_TYPE.get(counts.most_common(1)[0][0])

    @property
    def context_length(self) -> int | None:
        value = self.metadata.get(f"{self.architecture}.context_length")
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    @property
    def chat_template(self) -> str | None:
        value = self.metadata.get("tokenizer.chat_template")
        return value if isinstance(value, str) else None

    @property
    def n_params(self) -> int:
        return sum(t.n_elements for t in self.tensors)

    @property
    def size_label(self) -> str:
        label = self.metadata.get("general.size_label")
        return label if isinstance(label, str) and label else rounded_count(self.n_params)

    def read_array(self, key: str) -> list:
        """Decode an array value, whether or not it was decoded by `read_gguf`."""
        value = self.metadata.get(key)
        if not isinstance(value, GGUFArray):
            if isinstance(value, list):
                return value
            raise GGUFError(f"{self.path}: key {key!r} is not an array")
        with _open(self.path) as f:
            f.seek(value.offset)
            data = f.read(value.nbytes)
        if len(data) != value.nbytes:
            raise GGUFError(f"{self.path}: file changed while reading array {key!r}")
        return _decode_array(data, value.type, value.count, self.path, key)


class StringArray(Sequence):
    """A validated string array of a GGUF file, each element decoded when asked for, from the
    offsets the walk noted: the chat format needs two tokens of a 200k vocabulary, and
    decoding all of them cost ~90 ms a command. The array's bytes are read once, at first
    use. Integer indexes only."""

    def __init__(self, path: str, key: str, offsets: list[int], end: int):
        self.path, self.key, self.offsets, self.end = path, key, offsets, end
        self._bytes: bytes | None = None
        self._starts: set[int] | None = None  # element offsets, for __contains__

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, i):
        if not isinstance(i, int):
            raise TypeError("StringArray takes integer indexes")
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        data, at = self._data(), self.offsets[i] - self.offsets[0]
        (n,) = _U64.unpack_from(data, at)
        return _text(data[at + 8 : at + 8 + n])

    def __contains__(self, text) -> bool:
        """Whether `text` is an element: a search of the array's bytes for it behind its length,
        at the start of an element (C-speed, where comparing every element would not be)."""
        if not isinstance(text, str) or not self.offsets:
            return False
        raw = text.encode("utf-8", "surrogateescape")
        data, needle, base = self._data(), _U64.pack(len(raw)) + raw, self.offsets[0]
        if self._starts is None:
            self._starts = set(self.offsets)
        starts = self._starts
        i = data.find(needle)
        while i >= 0 and i + base not in starts:
            i = data.find(needle, i + 1)
        return i >= 0

    def _data(self) -> bytes:
        if self._bytes is None:
            start = self.offsets[0]
            with _open(self.path) as f:
                f.seek(start)
                data = f.read(self.end - start)
            # the walk checked these bytes; a file rewritten since then no longer holds them
            last = self.offsets[-1] - start
            if len(data) != self.end - start or len(data) < last + 8 or last + 8 + _U64.unpack_from(data, last)[0] != len(data):
                raise GGUFError(f"{self.path}: file changed while reading {self.key!r}")
            self._bytes = data
        return self._bytes


def rounded_count(n: int) -> str:
    """3_821_079_552 -> "3.8B", 60_300_000 -> "60M" (two significant digits, like gguf-py)."""
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M")):
        if n > scale:
            break
    else:
        scale, suffix = 1e3, "K"
    scaled = n / scale
    decimals = max(2 - len(str(round(scaled)).lstrip("0")), 0)
    return f"{scaled:.{decimals}f}{suffix}"


def show(text: str, limit: int = 80) -> str:
    """Quote untrusted text for a one-line message: escapes control characters and bad bytes."""
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _open(path: str):
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise GGUFError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise GGUFError(f"{path}: is a directory, not a GGUF file") from None
    except OSError as e:
        raise GGUFError(f"{path}: cannot open: {e.strerror or e}") from None


_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")
_U64 = struct.Struct("<Q")
_HEADER = struct.Struct("<Iqq")  # version, n_tensors, n_kv (after the magic)

# Smallest possible encodings, used to reject absurd counts before looping over them:
# a KV is a non-empty key (8 + 1), a type (4) and at least a u8; a tensor info is a name
# length (8), n_dims (4), a type (4) and an offset (8).
_MIN_KV_BYTES = 8 + 1 + 4 + 1
_MIN_TENSOR_INFO_BYTES = 8 + 4 + 4 + 8


class _Reader:
    """Sequential reads through a read-ahead window, each bounded by the real file size."""

    def __init__(self, f, path: str, size: int):
        self.f, self.path, self.size = f, path, size
        self.pos = 0
        self.buf = b""
        self.buf_start = 0
        self.last_array_type = -1
        self.indexed: frozenset = frozenset()  # string arrays whose element offsets to keep
        self.offsets: dict[str, list[int]] = {}
        self.index_into: list | None = None  # where the array being read notes its offsets

    def remaining(self) -> int:
        return self.size - self.pos

    def fail(self, problem: str) -> GGUFError:
        return GGUFError(f"{self.path}: {problem}")

    def truncated(self, n: int, what: str) -> GGUFError:
        return self.fail(
            f"file is truncated: {what} needs {n} bytes at offset {self.pos}, "
            f"but the file has {self.size} bytes"
        )

    def take(self, n: int, what: str) -> int:
        """Advance over n bytes and return where they start in self.buf."""
        if n > self.size - self.pos:
            raise self.truncated(n, what)
        start = self.pos - self.buf_start
        if start < 0 or start + n > len(self.buf):
            self.f.seek(self.pos)
            self.buf = self.f.read(min(max(n, _CHUNK), self.size - self.pos))
            self.buf_start, start = self.pos, 0
            if len(self.buf) < n:  # the file shrank under us
                raise self.truncated(n, what)
        self.pos += n
        return start

    def unpack(self, st: struct.Struct, what: str) -> tuple:
        start = self.take(st.size, what)  # may refill self.buf: call it first
        return st.unpack_from(self.buf, start)

    def skip(self, n: int, what: str) -> None:
        if n > self.size - self.pos:
            raise self.truncated(n, what)
        self.pos += n

    def raw_string(self, what: str) -> bytes:
        (n,) = self.unpack(_U64, what)
        if n > MAX_STRING_LENGTH:
            raise self.fail(f"{what} is {n} bytes long, over the 1 GiB limit")
        start = self.take(n, what)
        return self.buf[start : start + n]

    def string(self, what: str) -> str:
        return _text(self.raw_string(what))


def _text(raw: bytes) -> str:
    # llama.cpp accepts any bytes; surrogateescape keeps invalid UTF-8 lossless (so distinct
    # keys stay distinct) without ever raising UnicodeDecodeError.
    return raw.decode("utf-8", "surrogateescape")


def _pad(n: int, alignment: int) -> int:
    return (n + alignment - 1) // alignment * alignment


def read_gguf(path: str | os.PathLike, *, read_arrays: bool | Iterable[str] = False,
              index_arrays: Iterable[str] = ()) -> GGUFInfo:
    """Validate a GGUF file's header, metadata and tensor infos; never reads tensor data.

    Scalars are always decoded. Arrays are validated and decoded only for keys in
    `read_arrays` (True = all); others become `GGUFArray` placeholders. For the string arrays
    in `index_arrays` the walk also notes where each element starts (`GGUFInfo.strings`)."""
    path = os.fspath(path)
    wanted = read_arrays if isinstance(read_arrays, bool) else frozenset(read_arrays)
    with _open(path) as f:
        try:
            size = os.fstat(f.fileno()).st_size
            r = _Reader(f, path, size)
            r.indexed = frozenset(index_arrays)
            version, n_tensors, n_kv = _read_header(r)
            metadata, value_types, array_types = _read_kvs(r, n_kv, wanted)
            alignment = _alignment(r, metadata, value_types)
            tensors = [_read_tensor_info(r, i) for i in range(n_tensors)]
        except OSError as e:
            raise GGUFError(f"{path}: read error: {e.strerror or e}") from None
    _check_unique_tensor_names(r, tensors)
    # llama.cpp pads to the data section only when there are tensors.
    data_offset = _pad(r.pos, alignment) if n_tensors else r.pos
    if data_offset > size:
        raise r.fail(f"file is truncated: the tensor data should start at offset {data_offset}, "
                     f"but the file has {size} bytes")
    _check_tensor_offsets(r, tensors, alignment, data_offset)
    return GGUFInfo(path, version, alignment, metadata, tensors, data_offset, size, value_types,
                    array_types, r.offsets)


def _read_header(r: _Reader) -> tuple[int, int, int]:
    if r.size < 4:
        raise r.fail(f"not a GGUF file (only {r.size} bytes long)")
    start = r.take(4, "magic")
    magic = r.buf[start : start + 4]
    if magic != GGUF_MAGIC:
        raise r.fail(f"not a GGUF file (starts with {bytes(magic)!r}, expected b'GGUF')")
    version, n_tensors, n_kv = r.unpack(_HEADER, "the GGUF header")
    if version != 0 and version & 0xFFFF == 0:
        raise r.fail(f"GGUF version {version:#x} looks byte-swapped: big-endian GGUF files "
                     "are not supported (endianness mismatch)")
    if version == 1:
        raise r.fail("GGUF version 1 is no longer supported; re-convert the model")
    if version not in SUPPORTED_VERSIONS:
        raise r.fail(f"unsupported GGUF version {version} (supported: 2, 3)")
    _check_count(r, n_tensors, _MIN_TENSOR_INFO_BYTES, "tensors")
    _check_count(r, n_kv, _MIN_KV_BYTES, "metadata keys")
    return version, n_tensors, n_kv


def _check_count(r: _Reader, n: int, min_bytes: int, what: str) -> None:
    if n < 0:
        raise r.fail(f"invalid header: negative number of {what} ({n})")
    if n * min_bytes > r.remaining():
        raise r.fail(f"invalid header: claims {n} {what}, more than the "
                     f"{r.remaining()} bytes left in the file can hold")


def _read_kvs(r: _Reader, n_kv: int, wanted) -> tuple[dict, dict, dict]:
    metadata: dict[str, object] = {}
    value_types: dict[str, int] = {}
    array_types: dict[str, int] = {}
    for i in range(n_kv):
        key = r.string(f"metadata key #{i}")
        if not key:
            raise r.fail(f"metadata key #{i} is empty")
        if key in metadata:
            raise r.fail(f"duplicate metadata key {show(key)}")
        what = f"the value of {show(key)}"
        (vtype,) = r.unpack(_I32, what)
        decode = wanted is True or (wanted is not False and key in wanted)
        r.index_into = [] if key in r.indexed else None
        value = metadata[key] = _read_value(r, vtype, what, decode)
        if r.index_into is not None and vtype == T_ARRAY and r.last_array_type == T_STRING:
            r.offsets[key] = r.index_into
        r.index_into = None
        value_types[key] = vtype
        if vtype == T_ARRAY:
            array_types[key] = value.type if isinstance(value, GGUFArray) else r.last_array_type
    return metadata, value_types, array_types


def _read_value(r: _Reader, vtype: int, what: str, decode: bool) -> object:
    if vtype == T_STRING:
        return r.string(what)
    if vtype == T_ARRAY:
        return _read_array(r, what, decode)
    if vtype not in _SCALAR_TYPES:
        raise r.fail(f"{what} has invalid GGUF value type {vtype}")
    fmt, size, _ = _SCALAR_TYPES[vtype]
    start = r.take(size, what)
    return struct.unpack_from("<" + fmt, r.buf, start)[0]


def _read_array(r: _Reader, what: str, decode: bool) -> object:
    etype, count = r.unpack(struct.Struct("<iQ"), what)
    if etype == T_ARRAY:
        raise r.fail(f"{what} is an array of arrays, which GGUF does not allow")
    if etype != T_STRING and etype not in _SCALAR_TYPES:
        raise r.fail(f"{what} is an array of invalid GGUF value type {etype}")
    if count > MAX_ARRAY_ELEMENTS:
        raise r.fail(f"{what} claims {count} elements, over the 2^30 limit")
    # Every element takes at least 8 bytes (string length) or its fixed size.
    elem_size = 8 if etype == T_STRING else _SCALAR_TYPES[etype][1]
    if count * elem_size > r.remaining():
        raise r.truncated(count * elem_size, what)
    start = r.pos
    if etype == T_STRING:
        _walk_strings(r, count, what, r.index_into)
    else:
        r.skip(count * elem_size, what)
    placeholder = GGUFArray(etype, count, start, r.pos - start)
    r.last_array_type = etype
    if not decode:
        return placeholder
    r.f.seek(start)
    return _decode_array(r.f.read(placeholder.nbytes), etype, count, r.path, what)


def _walk_strings(r: _Reader, count: int, what: str, offsets: list | None = None) -> None:
    """Skip `count` length-prefixed strings: the hot loop for 200k-token vocabularies.

    Each `take` checks a string against the file and refills the read-ahead window; the
    strings that lie wholly inside the window are stepped over with local arithmetic instead
    (200k tokens and 100k merges: 260 ms -> ~130 ms, paid by every `llm -m` of Phi-4-mini).
    `offsets`, when given, gets each string's file offset."""
    take, unpack_from, limit = r.take, _U64.unpack_from, MAX_STRING_LENGTH
    note = offsets.append if offsets is not None else None
    done = 0
    while done < count:
        if note:
            note(r.pos)
        start = take(8, what)  # may refill r.buf
        (n,) = unpack_from(r.buf, start)
        if n > limit:
            raise r.fail(f"{what} holds a string of {n} bytes, over the 1 GiB limit")
        take(n, what)
        done += 1
        buf, base = r.buf, r.buf_start  # the window lies inside the file, so no size check here
        pos, end = r.pos - base, len(buf)
        while done < count and pos + 8 <= end:
            (n,) = unpack_from(buf, pos)
            if n > limit:
                raise r.fail(f"{what} holds a string of {n} bytes, over the 1 GiB limit")
            if pos + 8 + n > end:  # runs past the window: take() reads on
                break
            if note:
                note(base + pos)
            pos += 8 + n
            done += 1
        r.pos = base + pos


def _decode_array(data: bytes, etype: int, count: int, path: str, what: str) -> list:
    """Decode elements already validated by `_read_array` (sizes are trusted here)."""
    if etype != T_STRING:
        fmt, size, _ = _SCALAR_TYPES[etype]
        if len(data) != count * size:
            raise GGUFError(f"{path}: file changed while reading {what}")
        return list(struct.unpack(f"<{count}{fmt}", data))
    out, pos, unpack_from = [], 0, _U64.unpack_from
    try:
        for _ in range(count):
            (n,) = unpack_from(data, pos)
            out.append(data[pos + 8 : pos + 8 + n].decode("utf-8", "surrogateescape"))
            pos += 8 + n
    except struct.error:
        raise GGUFError(f"{path}: file changed while reading {what}") from None
    return out


def _alignment(r: _Reader, metadata: dict, value_types: dict) -> int:
    if "general.alignment" not in metadata:
        return DEFAULT_ALIGNMENT
    if value_types["general.alignment"] != T_U32:
        raise r.fail("general.alignment must be of type u32, not "
                     + VALUE_TYPE_NAMES.get(value_types["general.alignment"], "?"))
    alignment = metadata["general.alignment"]
    if alignment == 0 or alignment & (alignment - 1):
        raise r.fail(f"general.alignment {alignment} is not a power of 2")
    return alignment


def _read_tensor_info(r: _Reader, i: int) -> TensorInfo:
    name = r.string(f"tensor name #{i}")
    label = f"tensor {show(name)}"
    if len(name.encode("utf-8", "surrogateescape")) >= MAX_NAME_BYTES:
        raise r.fail(f"{label} has a name of {MAX_NAME_BYTES} bytes or more")
    (n_dims,) = r.unpack(_U32, label)
    if n_dims > MAX_DIMS:
        raise r.fail(f"{label} has {n_dims} dimensions (at most {MAX_DIMS} allowed)")
    start = r.take(8 * n_dims, label)
    shape = struct.unpack_from(f"<{n_dims}q", r.buf, start)
    if any(d < 0 for d in shape):
        raise r.fail(f"{label} has a negative dimension {shape}")
    (ggml_type,) = r.unpack(_I32, label)
    (offset,) = r.unpack(_U64, label)
    type_name, nbytes = _tensor_size(r, label, shape, ggml_type)
    return TensorInfo(name, shape, ggml_type, type_name, offset, nbytes)


def _tensor_size(r: _Reader, label: str, shape: tuple, ggml_type: int) -> tuple[str, int]:
    n_elements = 1
    for d in shape:
        n_elements *= d
    if n_elements > _INT64_MAX:
        raise r.fail(f"{label} has too many elements {shape}")
    if ggml_type not in GGML_TYPES:
        kind = "a removed" if 0 <= ggml_type < GGML_TYPE_COUNT else "an invalid"
        raise r.fail(f"{label} has {kind} ggml type {ggml_type}")
    type_name, block, type_size = GGML_TYPES[ggml_type]
    row = shape[0] if shape else 1
    if row % block:
        raise r.fail(f"{label} of type {type_name} has {row} elements per row, "
                     f"not a multiple of the block size {block}")
    nbytes = n_elements // block * type_size
    if nbytes > _SIZE_MAX // 2:
        raise r.fail(f"{label} is too large ({nbytes} bytes)")
    return type_name, nbytes


def _check_unique_tensor_names(r: _Reader, tensors: list[TensorInfo]) -> None:
    seen: set[str] = set()
    for t in tensors:
        if t.name in seen:
            raise r.fail(f"duplicate tensor name {show(t.name)}")
        seen.add(t.name)


def _check_tensor_offsets(r: _Reader, tensors: list[TensorInfo], alignment: int,
                          data_offset: int) -> None:
    # llama.cpp requires the exact layout its writer produces: each tensor starts where the
    # previous one ended, padded to the alignment.
    expected = 0
    for t in tensors:
        if t.offset != expected:
            raise r.fail(f"tensor {show(t.name)} has data offset {t.offset}, expected {expected} "
                         f"(tensors must be stored in order, {alignment}-byte aligned)")
        end = data_offset + t.offset + t.nbytes
        if end > r.size:
            raise r.fail(f"file is truncated: tensor {show(t.name)} ends at byte {end}, "
                         f"but the file has {r.size} bytes")
        expected += _pad(t.nbytes, alignment)
