"""A prompt cache on disk, so `llm -c` in a new process does not re-evaluate the conversation.

After a turn we save llama.cpp's KV state of sequence 0 (no logits) for the tokens the context
holds, one file per conversation (the newest turn replaces the older one). A new process
whose prompt starts with the tokens of a saved state loads the longest match and evaluates
only the rest. Files live in llm's user dir, are named by a key over everything that shapes
the KV cache (the model file's identity, n_ctx, cache type, flash attention, GPU layers,
llama-cpp-python's version), and the folder is bounded: least recently used files go first.

Never wrong: every file carries a header with its key, format, token list and a CRC32 of
the state, checked before llama.cpp sees a byte; anything that fails is deleted. Files are
written to a temporary and renamed (files.atomic_output), so readers never see half a file.
We save only when loading would beat re-evaluating by MIN_SAVING_S, judged from rates
measured on this machine (stats.json), so short chats write nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
import time
import zlib
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

ENV_SIZE = "LLM_PHI_PROMPT_CACHE_GB"  # folder bound in GB; 0 turns the cache off
ENV_MIN_SAVING = "LLM_PHI_PROMPT_CACHE_MIN_SAVING"  # seconds a load must save to be worth a file; < 0 = always
DEFAULT_GB = 4.0
MIN_SAVING_S = 0.25
MAGIC = b"PHIKVST1"
FORMAT = 1
SUFFIX = ".kvstate"
DEFAULT_LOAD_BPS = 300e6  # until this machine's load rate is measured
_HEAD = struct.Struct("<8sI")  # magic, header length


def cache_dir() -> Path:
    from .store import registry_dir

    return registry_dir() / "prompt-cache"


def size_limit() -> int:
    """The folder bound in bytes (0 = cache off), from LLM_PHI_PROMPT_CACHE_GB."""
    raw = os.environ.get(ENV_SIZE, "").strip()
    try:
        gb = float(raw) if raw else DEFAULT_GB
    except ValueError:
        gb = DEFAULT_GB
    return max(0, int(gb * 1e9))


def min_saving() -> float:
    with contextlib.suppress(ValueError):
        return float(os.environ.get(ENV_MIN_SAVING, MIN_SAVING_S))
    return MIN_SAVING_S


@dataclass
class Slot:
    """Where one conversation's state goes, and what this turn measured."""

    key: str  # the model + KV layout
    conversation: str
    eval_tokens: int = 0  # prompt tokens evaluated this turn ...
    eval_seconds: float = 0.0  # ... and how long that took
    loaded: int = 0  # tokens restored from disk this turn
    extra: dict = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return cache_dir() / f"{self.key}-{self.conversation}{SUFFIX}"


def model_key(path: str | os.PathLike, load_options) -> str:
    """A key over the model file's identity and every load option that shapes the KV state."""
    st = Path(path).stat()
    layout = {k: v for k, v in asdict(load_options).items() if k not in ("n_threads", "n_threads_batch")}
    ident = [str(Path(path).resolve()), st.st_size, st.st_mtime_ns, layout, runtime_version(), FORMAT]
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:24]


def slot_for(path, load_options, conversation_id: str | None, prompt_tokens: list[int]) -> Slot | None:
    """The slot for this turn, or None when the cache is off."""
    if size_limit() <= 0:
        return None
    # without llm's conversation id (the first turn of `llm -m`, the Python API) the prompt
    # names the file; save() deletes states the new one supersedes, so a conversation keeps one
    conv = hashlib.sha256(str(conversation_id or prompt_tokens).encode()).hexdigest()[:16]
    return Slot(model_key(path, load_options), conv)


# ------------------------------------------------------------------------------- files


@dataclass
class Entry:
    path: Path
    header: dict
    tokens: list[int]
    data_offset: int
    inode: int


def _remove(path: Path, inode: int | None = None) -> None:
    """Delete a bad file, unless another process has meanwhile renamed a fresh one over it."""
    with contextlib.suppress(OSError):
        if inode is None or path.stat().st_ino == inode:
            path.unlink()


@lru_cache(maxsize=1)
def runtime_version() -> str:
    import importlib.metadata

    return importlib.metadata.version("llama_cpp_python")


def read_entry(path: Path, key: str) -> Entry | None:
    """The header and tokens of a cache file named for `key`. A file that is not sound, or was
    written by another format or llama-cpp-python version, is deleted; another model's sound
    file is left alone (None)."""
    mine, inode = path.name.startswith(key + "-"), None
    try:
        with open(path, "rb") as f:
            inode = os.fstat(f.fileno()).st_ino
            magic, n = _HEAD.unpack(f.read(_HEAD.size))
            header = json.loads(f.read(n)) if magic == MAGIC and n < 1 << 20 else None
            ok = (isinstance(header, dict) and header.get("format") == FORMAT
                  and header.get("runtime") == runtime_version())
            if ok and not mine:
                return None
            if ok:
                raw = f.read(4 * header["n_tokens"])
                size = os.fstat(f.fileno()).st_size
                offset = _HEAD.size + n + len(raw)
                ok = (header.get("key") == key and len(raw) == 4 * header["n_tokens"]
                      and zlib.crc32(raw) == header["tokens_crc"] and size == offset + header["data_len"])
    except (OSError, ValueError, KeyError, TypeError, struct.error):
        ok = False
    if not ok:
        _remove(path, inode)
        return None
    return Entry(path, header, list(struct.unpack(f"<{header['n_tokens']}i", raw)), offset, inode)


def entries(key: str) -> list[Entry]:
    """This model's sound states; on the way, delete every unsound or outdated file."""
    return [e for p in sorted(cache_dir().glob(f"*{SUFFIX}")) if (e := read_entry(p, key))]


def shared_prefix(a: list[int], b: list[int]) -> int:
    """How many leading tokens `a` and `b` share."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


# ----------------------------------------------------------------------------- restore


def restore(llama, slot: Slot | None, tokens: list[int], have: int) -> int:
    """Load the saved state sharing the longest prefix with `tokens` when it beats `have`
    tokens already in the context. Returns the tokens now in the context (at most len - 1:
    the last prompt token is always evaluated, for its logits)."""
    if slot is None or len(tokens) < 2:
        return have
    best, best_n = None, have
    for entry in entries(slot.key):
        n = min(shared_prefix(entry.tokens, tokens), len(tokens) - 1)
        if n > best_n and entry.header["n_tokens"] <= llama.n_ctx():
            best, best_n = entry, n
    if best is None or not worth_loading(slot, best_n - have, best.header["data_len"]):
        return have
    start = time.perf_counter()
    if not _load(llama, best):
        return _reset(llama)
    _trim(llama, best.tokens, best_n)
    seconds = time.perf_counter() - start
    with contextlib.suppress(OSError):
        os.utime(best.path)  # least recently *used* goes first
    slot.loaded = best_n
    record_rate("load_bps", best.header["data_len"] / max(seconds, 1e-6))
    return best_n


def _load(llama, entry: Entry) -> bool:
    import ctypes

    import llama_cpp

    n = entry.header["data_len"]
    buf = bytearray(n)
    try:
        with open(entry.path, "rb") as f:
            f.seek(entry.data_offset)
            ok = f.readinto(buf) == n and zlib.crc32(buf) == entry.header["data_crc"]
    except OSError:
        ok = False
    if ok:
        _reset(llama)
        c_buf = (ctypes.c_uint8 * n).from_buffer(buf)
        ok = llama_cpp.llama_state_seq_set_data(llama._ctx.ctx, c_buf, n, 0) == n
    if not ok:
        _remove(entry.path, entry.inode)
    return ok


def _reset(llama) -> int:
    llama.reset()
    llama._ctx.kv_cache_clear()
    return 0


def _trim(llama, saved: list[int], keep: int) -> None:
    """Make the context hold exactly saved[:keep]."""
    llama.input_ids[: len(saved)] = saved
    llama.n_tokens = len(saved)
    if keep < len(saved):
        llama._ctx.kv_cache_seq_rm(-1, keep, -1)
    llama.n_tokens = keep


# -------------------------------------------------------------------------------- save


def worth_loading(slot: Slot, gain_tokens: int, state_bytes: int) -> bool:
    """Whether loading a state beats evaluating the `gain_tokens` it adds to what the context holds."""
    if min_saving() < 0:  # forced (tests, benchmarks): whatever it costs
        return True
    stats = read_stats()
    eval_tps = stats.get(f"eval_tps:{slot.key}")
    if not eval_tps:
        return gain_tokens >= 16
    return gain_tokens / eval_tps > state_bytes / stats.get("load_bps", DEFAULT_LOAD_BPS)


def worth_saving(slot: Slot, n_tokens: int, state_bytes: int) -> bool:
    """Whether loading `state_bytes` later beats re-evaluating `n_tokens` by min_saving()."""
    stats = read_stats()
    eval_tps = (slot.eval_tokens / slot.eval_seconds if slot.eval_tokens >= 64 and slot.eval_seconds > 0
                else stats.get(f"eval_tps:{slot.key}"))
    if not eval_tps:
        eval_tps = slot.eval_tokens / slot.eval_seconds if slot.eval_seconds > 0 else None
    if not eval_tps:
        return False
    load_s = state_bytes / stats.get("load_bps", DEFAULT_LOAD_BPS)
    return n_tokens / eval_tps - load_s > min_saving()


def save(llama, slot: Slot | None) -> Path | None:
    """Save the context's state for this conversation if it is worth it; returns the file."""
    import ctypes

    import llama_cpp

    if slot is None or llama.n_tokens < 1:
        return None
    if slot.eval_tokens >= 64 and slot.eval_seconds > 0:
        record_rate(f"eval_tps:{slot.key}", slot.eval_tokens / slot.eval_seconds)
    ctx, limit = llama._ctx.ctx, size_limit()
    size = llama_cpp.llama_state_seq_get_size(ctx, 0)
    if size <= 0 or size > limit or not worth_saving(slot, llama.n_tokens, size):
        return None
    buf = (ctypes.c_uint8 * size)()
    n = llama_cpp.llama_state_seq_get_data(ctx, buf, size, 0)
    if n <= 0:
        return None
    ids = llama.input_ids[: llama.n_tokens].tolist()
    tokens = struct.pack(f"<{len(ids)}i", *ids)
    data = memoryview(buf)[:n]
    header = json.dumps({"format": FORMAT, "runtime": runtime_version(), "key": slot.key, "n_tokens": llama.n_tokens, "tokens_crc": zlib.crc32(tokens),
                         "data_len": n, "data_crc": zlib.crc32(data), "saved": time.time()}).encode()
    from .files import atomic_output

    cache_dir().mkdir(parents=True, exist_ok=True)
    with atomic_output(slot.path, force=True) as tmp, open(tmp, "wb") as f:
        f.write(_HEAD.pack(MAGIC, len(header)) + header + tokens)
        f.write(data)
    _drop_superseded(slot, ids)
    evict(limit)
    return slot.path


def save_quietly(llama, slot: Slot | None) -> Path | None:
    """save(), but a full disk or an unwritable folder only costs the next turn some time."""
    try:
        return save(llama, slot)
    except OSError:
        return None


def _drop_superseded(slot: Slot, tokens: list[int]) -> None:
    """Delete this model's other states whose tokens the new state starts with: it covers them."""
    for entry in entries(slot.key):
        if entry.path != slot.path and entry.tokens == tokens[: len(entry.tokens)]:
            _remove(entry.path, entry.inode)


def evict(limit: int) -> list[Path]:
    """Delete least recently used files until the folder holds at most `limit` bytes."""
    files = []
    for p in cache_dir().glob(f"*{SUFFIX}"):
        with contextlib.suppress(OSError):
            st = p.stat()
            files.append((st.st_mtime, st.st_size, p))
    files.sort()
    total, removed = sum(s for _, s, _ in files), []
    for _, s, p in files:
        if total <= limit:
            break
        _remove(p)
        total -= s
        removed.append(p)
    return removed


# ------------------------------------------------------------------------------- stats


def _stats_path() -> Path:
    return cache_dir() / "stats.json"


def read_stats() -> dict:
    from .files import read_json_dict

    data = read_json_dict(_stats_path())
    return {k: v for k, v in data.items() if isinstance(v, (int, float)) and v > 0}


def record_rate(name: str, value: float) -> None:
    """Keep a smoothed rate (half old, half new) so one noisy turn does not swing the policy."""
    from .files import write_json_atomic

    stats = read_stats()
    stats[name] = value if name not in stats else (stats[name] + value) / 2
    with contextlib.suppress(OSError):
        cache_dir().mkdir(parents=True, exist_ok=True)
        write_json_atomic(_stats_path(), stats)


# ---------------------------------------------------------------------------- commands


def summary() -> dict:
    files = [p for p in cache_dir().glob(f"*{SUFFIX}") if p.is_file()]
    return {"folder": str(cache_dir()), "files": len(files), "bytes": sum(p.stat().st_size for p in files),
            "limit": size_limit()}


def clear() -> int:
    """Delete every cache file (and the measured rates); returns how many files went."""
    n = 0
    for p in cache_dir().glob(f"*{SUFFIX}"):
        _remove(p)
        n += 1
    with contextlib.suppress(OSError):
        _stats_path().unlink()
    return n
