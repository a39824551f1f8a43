"""A copy of a GGUF with `tokenizer.chat_template` added, for `llm phi ollama push --embed-template`.

Ollama >= 0.30 may run the GGUF's own Jinja template instead of the Modelfile TEMPLATE (API.md
7.4); a GGUF converted elsewhere without one then has nothing right to fall back on. The copy is
streamed: header and metadata are rewritten with one more key, the tensor infos are copied as
they are (their offsets are relative to the data section), and the tensor data follows at the
next aligned offset, read and written in 4 MiB chunks, into a temporary file renamed at the end.
"""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

from .errors import PhiError

KEY = "tokenizer.chat_template"
T_STRING = 8
COPY_CHUNK = 4 << 20
_HEADER = struct.Struct("<4sIQQ")  # magic, version, tensor count, metadata count


def _gguf_string(text: str) -> bytes:
    raw = text.encode("utf-8")
    return struct.pack("<Q", len(raw)) + raw


def _tensor_info_span(path: Path, info) -> tuple[int, int]:
    """(start, end) of the tensor-info block: it ends at most `alignment` bytes before the data
    section, and starts with the first tensor's name, which pins the exact position."""
    size = sum(8 + len(t.name.encode()) + 4 + 8 * len(t.shape) + 4 + 8 for t in info.tensors)
    if not info.tensors:
        return info.data_offset, info.data_offset
    first = _gguf_string(info.tensors[0].name)
    with open(path, "rb") as f:
        for end in range(info.data_offset, info.data_offset - info.alignment, -1):
            f.seek(end - size)
            if f.read(len(first)) == first:
                return end - size, end
    raise PhiError(f"Cannot locate the tensor infos of {path}", hint="re-convert the model")


def embed_template(src: Path, out: Path, template: str, force: bool = False) -> Path:
    """Write `out`: `src` plus `tokenizer.chat_template` = template (refused if `src` has one)."""
    from .files import atomic_output
    from .gguf_info import read_gguf

    info = read_gguf(src)
    if KEY in info.metadata:
        raise PhiError(f"{src} already carries a chat template")
    start, end = _tensor_info_span(src, info)
    with open(src, "rb") as f:
        magic, version, n_tensors, n_kv = _HEADER.unpack(f.read(_HEADER.size))
        with atomic_output(out, force=force) as tmp, open(tmp, "wb") as w:
            w.write(_HEADER.pack(magic, version, n_tensors, n_kv + 1))
            _copy(f, w, start - _HEADER.size)  # the metadata as it was
            w.write(_gguf_string(KEY) + struct.pack("<I", T_STRING) + _gguf_string(template))
            _copy(f, w, end - start)  # tensor infos
            if n_tensors:
                w.write(b"\0" * (-w.tell() % info.alignment))
            f.seek(info.data_offset)
            shutil.copyfileobj(f, w, COPY_CHUNK)
    return out


def _copy(f, w, n: int) -> None:
    while n > 0:
        chunk = f.read(min(COPY_CHUNK, n))
        if not chunk:
            raise PhiError(f"{f.name} ended early while copying it")
        w.write(chunk)
        n -= len(chunk)


def embedded_path(src: Path) -> Path:
    """Where --embed-template writes its copy: next to the original."""
    return src.with_name(src.name[: -len(".gguf")] + ".chat-template.gguf" if src.name.endswith(".gguf")
                         else src.name + ".chat-template.gguf")
