"""The sha256 digests Ollama names blobs by, computed once: a cache keyed by (size, mtime), and
Hugging Face cache blobs, which are named by their sha256 already. Also what we pushed where
(server, model name -> source digest, family, /api/show details), so `list` recognises our
models on servers that re-write GGUFs and store them under another digest."""

from __future__ import annotations

import os
import re
from pathlib import Path

from .files import read_json_dict, sha256_hex

def sha256_file(path: Path, progress: bool = True) -> str:
    """"sha256:<hex>" of a file, Ollama's digest form."""
    return "sha256:" + sha256_hex(path, progress)


def digest_cache_path() -> Path:
    from .store import registry_dir

    return registry_dir() / "ollama-digests.json"


def _read_cache() -> dict:
    return read_json_dict(digest_cache_path())


def _stamp(path: Path) -> list:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def remember_digest(path: Path, digest: str) -> None:
    """Cache a file's digest by (size, mtime) so `list` need not re-hash multi-GB files."""
    cache = _read_cache()
    cache[str(path)] = {"stamp": _stamp(path), "digest": digest}
    from .files import write_json_atomic

    write_json_atomic(digest_cache_path(), cache)


def cached_digest(path: Path, progress: bool = True) -> str:
    """The file's sha256 without reading it where we can: our cache (by size and mtime), or the
    Hugging Face cache, whose LFS blobs are named by their sha256. A wrong digest cannot slip
    through: Ollama checks the bytes it receives against the digest in the URL."""
    hit = _read_cache().get(str(path))
    if hit and hit.get("stamp") == _stamp(path):
        return hit["digest"]
    blob = Path(os.path.realpath(path))
    if blob.parent.name == "blobs" and re.fullmatch(r"[0-9a-f]{64}", blob.name):
        return "sha256:" + blob.name
    digest = sha256_file(path, progress)
    remember_digest(path, digest)
    return digest


def pushed_path() -> Path:
    from .store import registry_dir

    return registry_dir() / "ollama-pushed.json"


def pushed_models(base: str) -> dict:
    """{display name: record} of what we pushed to the server at `base`."""
    return read_json_dict(pushed_path()).get(base, {})


def remember_push(base: str, name: str, source_digest: str, family: str, shown: dict) -> None:
    from .files import write_json_atomic

    data = read_json_dict(pushed_path())
    data.setdefault(base, {})[name] = {"source_digest": source_digest, "family": family,
                                       "details": shown.get("details")}
    write_json_atomic(pushed_path(), data)
