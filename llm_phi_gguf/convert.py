"""Hugging Face Phi checkpoint (safetensors) -> GGUF, streamed tensor by tensor.

    convert_checkpoint(src, out, outtype="auto", force=False, progress=True) -> Path

Stages: read config.json into one flat `Params` (both the hub's and current transformers' layouts),
plan every output tensor from the safetensors headers alone (name, shape, type, byte size, where
its data lives), check the plan against the config, write the GGUF header, metadata and tensor
infos, then stream each tensor's data in bounded chunks into a temporary file that is renamed at
the end. Peak memory is one chunk (CHUNK_BYTES) plus page cache, never the model.

What we write matches llama.cpp's own converter (convert_hf_to_gguf.py) for the same checkpoint,
with two deliberate differences, both identical for every published Phi model:
- phi2 `feed_forward_length` is `intermediate_size` (llama.cpp writes 4 x n_embd);
- phi3 without `original_max_position_embeddings` uses the context length (llama.cpp refuses).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from .errors import ConversionError, PhiError
from .f16_cast import to_f16
from .safetensors_reader import TensorEntry, bf16_to_f32, read_header

# --outtype -> (llama_ftype, ggml type of the big weights); "auto" is resolved from the weights.
OUTTYPES = {"f32": (0, 0), "f16": (1, 1), "bf16": (32, 30), "q8_0": (7, 8)}
F32, F16, BF16, Q8_0 = 0, 1, 30, 8
# bytes per element (F32/F16/BF16) or per 32-element block (Q8_0)
TYPE_SIZE = {F32: (1, 4), F16: (1, 2), BF16: (1, 2), Q8_0: (32, 34)}

# Values per chunk x 4 bytes: the f32 working set where a cast needs one (q8_0, f32). 4 MiB keeps
# the ~4 chunks in flight at ~16 MiB of source and output (peak RSS 90 MB against 136 MB at
# 16 MiB, no slower: benchmarks/RESULTS.md) while one C call still converts 65536 values.
CHUNK_BYTES = 4 * 2**20

# HF tensors nobody needs (buffers saved by old transformers versions).
SKIP_SUFFIXES = (".attention.masked_bias", ".attention.bias", ".rotary_emb.inv_freq")
EXPERT_RE = re.compile(r"^model\.layers\.(\d+)\.block_sparse_moe\.experts\.(\d+)\.(w[123])\.weight$")


# ---- config ----------------------------------------------------------------------------------


@dataclass
class Params:
    arch: str
    hf_arch: str
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    n_ff: int
    n_vocab: int
    ctx: int
    orig_ctx: int
    eps: float
    rope_theta: float
    n_rot: int
    sliding_window: int
    n_expert: int = 0
    n_expert_used: int = 0
    rope: dict = field(default_factory=dict)
    raw: dict = field(default_factory=dict)

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


def _find(cfg: dict, *keys: str, default: Any = KeyError) -> Any:
    for k in keys:
        if cfg.get(k) is not None:
            return cfg[k]
    if default is KeyError:
        raise ConversionError(f"config.json lacks {' / '.join(keys)}")
    return default


# Bounds on config values, checked before anything is sized from them: GGUF stores these
# counts as uint32, and a huge layer count would make the tensor-name map loop for hours.
U32_MAX = 2**32 - 1


def _count(name: str, value: Any, lo: int = 1, hi: int = U32_MAX) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ConversionError(f"config.json: {name} is {str(value)[:40]!r}; expected a whole number in {lo}..{hi}")
    return value


def _real(name: str, value: Any, lo: float = 0.0, hi: float = math.inf) -> float:
    """A finite number in (lo, hi]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (lo < value <= hi and math.isfinite(value)):
        raise ConversionError(f"config.json: {name} is {str(value)[:40]!r}; expected a number in ({lo}, {hi}]")
    return float(value)


def load_params(folder: Path) -> Params:
    from .families import check_architecture
    from .gguf_info import MAX_EXPERTS, MAX_LAYERS

    path = folder / "config.json"
    if not path.is_file():
        raise ConversionError(f"No config.json in {folder}")
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConversionError(f"config.json is not valid JSON: {e}") from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("text_config") or {}, dict):
        raise ConversionError("config.json is not a JSON object (with an object text_config)")
    cfg = {**cfg, **(cfg.get("text_config") or {})}
    archs = cfg.get("architectures") or ["(none)"]
    if not isinstance(archs, list) or not isinstance(archs[0], str):
        raise ConversionError(f"config.json: architectures is {str(archs)[:40]!r}; expected a list of names")
    arch = check_architecture(archs[0], str(folder))  # families.py's table; the rest refused by name
    # Hub configs say rope_scaling (+ top-level rope_theta...), new ones rope_parameters: merge
    # the top-level values in, as llama.cpp does, so both layouts read the same.
    rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    if not isinstance(rope, dict):
        raise ConversionError("config.json: rope_scaling / rope_parameters is not a JSON object")
    rope = dict(rope)
    for key in ("rope_theta", "partial_rotary_factor", "original_max_position_embeddings"):
        if rope.get(key) is None and cfg.get(key) is not None:
            rope[key] = cfg[key]
    if "rope_type" not in rope and "type" in rope:
        rope["rope_type"] = rope["type"]
    n_embd = _count("hidden_size", _find(cfg, "hidden_size", "n_embd"))
    n_head = _count("num_attention_heads", _find(cfg, "num_attention_heads", "n_head"))
    ctx = _count("max_position_embeddings", _find(cfg, "n_positions", "max_position_embeddings"))
    rot_pct = _real("partial_rotary_factor", rope.get("partial_rotary_factor", 1.0), hi=1.0)
    n_expert = _count("num_local_experts", _find(cfg, "num_local_experts", "num_experts", default=0), 0, MAX_EXPERTS)
    p = Params(
        arch=arch,
        hf_arch=archs[0],
        n_layer=_count("num_hidden_layers", _find(cfg, "n_layers", "num_hidden_layers", "n_layer", "num_layers"),
                       hi=MAX_LAYERS),
        n_embd=n_embd,
        n_head=n_head,
        n_head_kv=n_head if arch == "phi2" else _count("num_key_value_heads",
                                                       _find(cfg, "num_key_value_heads", "n_head_kv")),
        n_ff=_count("intermediate_size", _find(cfg, "intermediate_size", default=4 * n_embd)),
        n_vocab=_count("vocab_size", _find(cfg, "vocab_size")),
        ctx=ctx,
        orig_ctx=_count("original_max_position_embeddings", rope.get("original_max_position_embeddings") or ctx),
        eps=_real("norm epsilon", _find(cfg, "layer_norm_epsilon", "layer_norm_eps") if arch == "phi2"
                  else _find(cfg, "rms_norm_eps")),
        rope_theta=_real("rope_theta", rope.get("rope_theta", 10000.0)),
        n_rot=int(rot_pct * n_embd) // n_head,
        sliding_window=_count("sliding_window", cfg.get("sliding_window") or 0, 0),
        n_expert=n_expert,
        n_expert_used=_count("num_experts_per_tok",
                             _find(cfg, "num_experts_per_tok", "num_experts_per_token", default=0), 0, MAX_EXPERTS),
        rope=rope,
        raw=cfg,
    )
    if p.n_rot % 2:
        raise ConversionError(f"Rotary dimension {p.n_rot} is odd; llama.cpp cannot run it")
    if arch == "phimoe" and not 0 < p.n_expert_used <= p.n_expert:
        raise ConversionError(f"config.json: num_experts_per_tok {p.n_expert_used} must be in 1..{p.n_expert}")
    return p


# Metadata per GGUF arch, in the order llama.cpp writes it: (GGUFWriter method, Params attribute).
_PHI3_KEYS = [
    ("add_context_length", "ctx"),
    ("add_rope_scaling_orig_ctx_len", "orig_ctx"),
    ("add_embedding_length", "n_embd"),
    ("add_feed_forward_length", "n_ff"),
    ("add_block_count", "n_layer"),
    ("add_head_count", "n_head"),
    ("add_head_count_kv", "n_head_kv"),
    ("add_layer_norm_rms_eps", "eps"),
    ("add_rope_dimension_count", "n_rot"),
    ("add_rope_freq_base", "rope_theta"),
    ("add_sliding_window", "sliding_window"),
]
ARCH_KEYS = {
    "phi2": [
        ("add_context_length", "ctx"),
        ("add_embedding_length", "n_embd"),
        ("add_feed_forward_length", "n_ff"),
        ("add_block_count", "n_layer"),
        ("add_head_count", "n_head"),
        ("add_head_count_kv", "n_head_kv"),
        ("add_layer_norm_eps", "eps"),
        ("add_rope_dimension_count", "n_rot"),
    ],
    "phi3": _PHI3_KEYS,
    "phimoe": _PHI3_KEYS + [("add_expert_used_count", "n_expert_used"), ("add_expert_count", "n_expert")],
}

# LongRoPE attention factor by rope type, scale = ctx / original ctx (> 1).
ATTN_FACTOR = {
    "su": lambda s, orig: math.sqrt(1 + math.log(s) / math.log(orig)),
    "longrope": lambda s, orig: math.sqrt(1 + math.log(s) / math.log(orig)),
    "yarn": lambda s, orig: 0.1 * math.log(s) + 1.0,
}


def longrope(p: Params) -> tuple[float, list[float], list[float]] | None:
    """(attn_factor, long factors, short factors) when the config has LongRoPE, else None."""
    long_f, short_f = p.rope.get("long_factor"), p.rope.get("short_factor")
    if p.arch == "phi2" or not long_f:
        return None
    kind = str(p.rope.get("rope_type") or "").lower()
    if kind not in ATTN_FACTOR:
        raise ConversionError(f"config.json: rope scaling type {kind or '(missing)'!r} is not supported with long_factor")
    if (not isinstance(long_f, list) or not isinstance(short_f, list) or len(long_f) != len(short_f)
            or len(long_f) * 2 != p.n_rot):
        raise ConversionError(f"config.json: LongRoPE long/short factors must both have {p.n_rot // 2} entries")
    scale = p.ctx / p.orig_ctx
    try:
        attn = ATTN_FACTOR[kind](scale, p.orig_ctx) if scale > 1.0 else 1.0
    except (ValueError, ZeroDivisionError):  # original context 1: log(1) = 0
        raise ConversionError(f"config.json: original_max_position_embeddings {p.orig_ctx} is too small") from None
    return (attn, [_real("long_factor", x, -math.inf) for x in long_f],
            [_real("short_factor", x, -math.inf) for x in short_f])


# ---- tensors ---------------------------------------------------------------------------------


@dataclass
class Planned:
    name: str  # GGUF name
    shape: tuple[int, ...]  # torch order (outermost first)
    qtype: int
    sources: list[TensorEntry] | None = None  # stacked along a new dim 0 when several
    values: Any = None  # generated data (rope factors)

    @property
    def nbytes(self) -> int:
        block, size = TYPE_SIZE[self.qtype]
        return math.prod(self.shape) // block * size


def index_weights(folder: Path) -> dict[str, TensorEntry]:
    """All tensors of the checkpoint, by HF name, from the safetensors headers."""
    index_path = folder / "model.safetensors.index.json"
    if index_path.is_file():
        try:
            weight_map = json.loads(index_path.read_text(encoding="utf-8"))["weight_map"]
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
            raise ConversionError(f"{index_path.name} is not a valid safetensors index") from None
        files = sorted(set(weight_map.values()))
        for f in files:
            if not (folder / f).is_file():
                raise ConversionError(f"{index_path.name} names shard {f}, which is missing from {folder}")
    else:
        weight_map = None
        files = sorted(p.name for p in folder.glob("*.safetensors"))
    if not files:
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
        if pickles:
            raise ConversionError(f"Only pickle weights ({pickles[0]}) in {folder}: they are never loaded; use safetensors")
        raise ConversionError(f"No *.safetensors weights in {folder}")
    entries: dict[str, TensorEntry] = {}
    for f in files:
        entries.update(read_header(folder / f))
    if weight_map is not None and set(weight_map) != set(entries):
        missing = sorted(set(weight_map) - set(entries))[:3]
        raise ConversionError(f"{index_path.name} does not match its shards (e.g. missing {missing})")
    return entries


def expected_shapes(p: Params) -> dict[str, tuple[int, ...]]:
    """GGUF tensor kind (name without `blk.N.` and suffix) -> torch shape of its weight."""
    e, v, f, x = p.n_embd, p.n_vocab, p.n_ff, p.n_expert
    q, kv = p.n_head * p.head_dim, p.n_head_kv * p.head_dim
    shapes = {"token_embd": (v, e), "output": (v, e), "output_norm": (e,), "attn_norm": (e,), "attn_output": (e, q)}
    per_arch = {
        "phi2": {"attn_q": (q, e), "attn_k": (kv, e), "attn_v": (kv, e), "ffn_up": (f, e), "ffn_down": (e, f)},
        "phi3": {
            "attn_qkv": (q + 2 * kv, e), "attn_q": (q, e), "attn_k": (kv, e), "attn_v": (kv, e),
            "ffn_norm": (e,), "ffn_up": (2 * f, e), "ffn_down": (e, f),
        },
        "phimoe": {
            "attn_q": (q, e), "attn_k": (kv, e), "attn_v": (kv, e), "ffn_norm": (e,), "ffn_gate_inp": (x, e),
            "ffn_gate_exps": (x, f, e), "ffn_up_exps": (x, f, e), "ffn_down_exps": (x, e, f),
        },
    }
    return {**shapes, **per_arch[p.arch]}


def output_type(name: str, shape: tuple[int, ...], qtype: int) -> int:
    """Norms, biases, 1-D tensors and the MoE router stay F32, as llama.cpp expects."""
    if len(shape) <= 1 or name.endswith("_norm.weight") or not name.endswith(".weight") or ".ffn_gate_inp." in name:
        return F32
    if qtype == Q8_0 and shape[-1] % 32:
        return F16  # Q8_0 needs rows in 32-blocks; llama.cpp falls back the same way
    return qtype


def plan_tensors(p: Params, entries: dict[str, TensorEntry], qtype: int) -> list[Planned]:
    import gguf

    tmap = gguf.get_tensor_name_map(gguf.MODEL_ARCH[p.arch.upper()], p.n_layer)
    planned: list[Planned] = []
    experts: dict[str, dict[int, TensorEntry]] = {}  # stacked HF name -> expert id -> entry
    for hf_name, entry in entries.items():
        if hf_name.endswith(SKIP_SUFFIXES):
            continue
        hf_name = hf_name.replace("language_model.", "")
        if m := EXPERT_RE.match(hf_name):
            stacked = f"model.layers.{m[1]}.block_sparse_moe.experts.{m[3]}.weight"
            if stacked not in experts:
                experts[stacked] = {}
                planned.append(Planned(stacked, (), F32, []))  # placeholder, keeps file order
            experts[stacked][int(m[2])] = entry
            continue
        planned.append(Planned(hf_name, entry.shape, F32, [entry]))
    for t in planned:
        if t.name in experts:
            t.sources = _stack(t.name, experts[t.name], p.n_expert)
            t.shape = (len(t.sources), *t.sources[0].shape)
        gguf_name = tmap.get_name(t.name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise ConversionError(f"Unexpected tensor {t.name} for a {p.hf_arch} checkpoint")
        t.name = gguf_name
        t.qtype = output_type(gguf_name, t.shape, qtype)
    if lr := longrope(p):
        planned[:0] = [Planned(f"rope_factors_{k}.weight", (len(vals),), F32, values=vals)
                       for k, vals in (("long", lr[1]), ("short", lr[2]))]
    check_shapes(p, planned)
    return planned


def _stack(name: str, by_expert: dict[int, TensorEntry], n_expert: int) -> list[TensorEntry]:
    if sorted(by_expert) != list(range(n_expert)):
        raise ConversionError(f"{name}: found experts {sorted(by_expert)}, config says {n_expert}")
    shapes = {e.shape for e in by_expert.values()}
    if len(shapes) != 1:
        raise ConversionError(f"{name}: experts have different shapes {sorted(shapes)}")
    return [by_expert[i] for i in range(n_expert)]


def check_shapes(p: Params, planned: list[Planned]) -> None:
    """Every tensor must have the shape the config implies, and the required ones must exist."""
    want = expected_shapes(p)
    have = set()
    for t in planned:
        kind = re.sub(r"^blk\.\d+\.", "", t.name).rsplit(".", 1)[0]
        have.add(t.name)
        if kind.startswith("rope_factors"):
            continue
        expect = want[kind] if t.name.endswith(".weight") else want[kind][:1]
        if tuple(t.shape) != expect:
            raise ConversionError(
                f"Tensor {t.name} has shape {list(t.shape)} but config.json implies {list(expect)}"
            )
    required = ["token_embd.weight", "output_norm.weight"] + [
        f"blk.{i}.{k}.weight" for i in range(p.n_layer)
        for k in ("attn_norm", "attn_output", *{"phi2": ("ffn_up", "ffn_down"), "phi3": ("ffn_up", "ffn_down"),
                                                "phimoe": ("ffn_gate_inp", "ffn_up_exps")}[p.arch])
    ]
    if p.arch != "phi3":
        required.append("output.weight")  # only phi3 may tie the output to token_embd
    missing = [n for n in required if n not in have]
    if missing:
        raise ConversionError(f"Checkpoint lacks tensor(s) for {missing[:3]} (from its {p.hf_arch} config)")


def chunk_jobs(t: Planned) -> Iterator[Callable[[], Any]]:
    """One job per output chunk (at most ~CHUNK_BYTES of f32), in file order; each reads (page
    faults on the map) and converts."""
    import functools

    import numpy as np

    if t.values is not None:
        yield functools.partial(np.asarray, t.values, dtype=np.float32)
        return
    for src in t.sources:
        step = max(1, CHUNK_BYTES // (4 * max(src.shape[-1] if src.shape else 1, 1)))
        for rows, release in src.row_blocks(step):
            yield functools.partial(_convert_and_release, rows, release, src.dtype, t.qtype, t.name)


def _convert_and_release(rows, release, src_dtype: str, qtype: int, name: str):
    """Convert a block, then drop its source pages: resident memory stays at the blocks in flight."""
    out = _convert(rows, src_dtype, qtype, name)
    if out is rows:  # a bit copy still reads the map when it is written
        out = rows.copy()
    release()
    return out


def in_parallel(pool, jobs: Iterator[Callable[[], Any]], ahead: int) -> Iterator[Any]:
    """The jobs' results in order, with up to `ahead` of them running on `pool` meanwhile: reading
    and converting the next chunks overlaps writing this one (numpy and file writes drop the GIL)."""
    from collections import deque

    pending: deque = deque()
    for job in jobs:
        pending.append(pool.submit(job))
        if len(pending) > ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _convert(block, src_dtype: str, qtype: int, name: str = "?"):
    import gguf
    import numpy as np

    if (src_dtype, qtype) in _SAME_BITS:
        return block  # bit copy; bf16 -> bf16 rounds to itself
    if qtype == F16:
        fast = to_f16(block, src_dtype)  # ggml's SIMD cast, same bits as numpy's; None: use numpy
        if fast is not None:
            return fast
    data = bf16_to_f32(block) if src_dtype == "BF16" else np.asarray(block)
    if qtype == F32:
        return data.astype(np.float32)
    if qtype == F16:
        return _to_f16(data, name)
    _check_q8_0_range(data, name)
    return gguf.quants.quantize(data.astype(np.float32, copy=False), gguf.GGMLQuantizationType(qtype))


# q8_0 keeps each block's scale, max|x| / 127, as float16: beyond 127 x 65504 it becomes inf
Q8_0_MAX = 127 * 65504.0


def _check_q8_0_range(data, name: str) -> None:
    """Refuse values whose q8_0 block scale float16 cannot hold (it would write inf/NaN)."""
    import numpy as np

    with np.errstate(invalid="ignore"):
        peak = np.nanmax(np.abs(data)) if data.size else 0.0
    if peak > Q8_0_MAX:
        raise ConversionError(
            f"Tensor {name} holds values beyond what q8_0 can store (up to {peak:.4g}; a q8_0 block "
            f"scale is float16, so |x| must stay under {Q8_0_MAX:.4g})",
            hint="convert with --outtype bf16 or f32 instead: llm phi quantize convert SRC -o OUT.gguf --outtype bf16")


def _to_f16(data, name: str):
    """data as float16; refuse values beyond its range (+-65504), which the cast would make inf."""
    import numpy as np

    with np.errstate(over="ignore"):
        out = data.astype(np.float16)
    if np.isinf(out).any():
        overflowed = np.asarray(data)[np.isinf(out) & np.isfinite(data)]
        if overflowed.size:
            raise ConversionError(
                f"Tensor {name} holds values beyond float16's range (up to {np.abs(overflowed).max():.4g}; "
                f"f16 ends at 65504): converting it to f16 would write inf",
                hint="convert with --outtype bf16 or f32: llm phi quantize convert SRC -o OUT.gguf --outtype bf16 "
                     "(and quantize OUT.gguf)")
    return out


def resolve_outtype(outtype: str, entries: dict[str, TensorEntry]) -> tuple[int, int]:
    """(llama_ftype, ggml type); "auto" = bf16 if the first >=2-D weight is bf16, else f16."""
    if outtype == "auto":
        first = next((e.dtype for e in entries.values() if len(e.shape) >= 2 and e.dtype != "F32"), "F16")
        outtype = "bf16" if first == "BF16" else "f16"
    if outtype not in OUTTYPES:
        raise ConversionError(f"Unknown outtype {outtype!r}; choose from {', '.join([*OUTTYPES, 'auto'])}")
    return OUTTYPES[outtype]


# ---- writing ---------------------------------------------------------------------------------


def phi3_marked_name(name: str, src: Path) -> str:
    """general.name, with "Phi-3" in it when the tokenizer strips whitespace after its specials.

    Phi-3's hub tokenizers mark <|user|>, <|end|>... rstrip; llama.cpp reproduces that only for
    models whose general.name contains "phi-3" or "phi3" (llama.cpp's own converter writes
    "Phi 3.5 Mini Instruct", which misses it, and every prompt then gains stray tokens).
    """
    from .families import named_like_phi3

    if named_like_phi3(name) or not (src / "tokenizer.model").exists():
        return name
    if any(t.get("special") and t.get("rstrip") for t in _added_tokens(src)):
        return re.sub(r"^phi 3\b", "Phi-3", name, flags=re.I) if re.match(r"phi 3\b", name, re.I) else f"Phi-3 {name}"
    return name


def _added_tokens(src: Path) -> list[dict]:
    """Added-token records from tokenizer.json and tokenizer_config.json (either may be absent)."""
    found: list = []
    for name, pick in (("tokenizer.json", lambda d: d.get("added_tokens", [])),
                       ("tokenizer_config.json", lambda d: list(d.get("added_tokens_decoder", {}).values()))):
        try:
            found += pick(json.loads((src / name).read_text("utf-8")))
        except (OSError, ValueError, AttributeError):
            pass
    return [t for t in found if isinstance(t, dict)]


def build_writer(src: Path, p: Params, planned: list[Planned], ftype: int):
    """A GGUFWriter holding every KV and tensor info (no data yet), in llama.cpp's key order."""
    import gguf
    import numpy as np

    from .vocab import load_vocab

    w = gguf.GGUFWriter(path=None, arch=p.arch)
    lr = longrope(p)
    if lr:
        w.add_rope_scaling_attn_factors(lr[0])
    for t in planned:
        w.add_tensor_info(t.name, t.shape, np.dtype(np.float32), t.nbytes, raw_dtype=gguf.GGMLQuantizationType(t.qtype))
    total, shared, expert, n_expert = w.get_total_parameter_count()
    try:
        meta = gguf.Metadata.load(None, src, None, total)
    except (AttributeError, TypeError, ValueError) as e:  # it trusts config.json's types (_name_or_path...)
        raise ConversionError(f"config.json / model card metadata is malformed: {type(e).__name__}: {e}") from None
    meta.name = phi3_marked_name(meta.name or src.name, src)
    if meta.size_label is None and total > 0:
        meta.size_label = gguf.size_label(total, shared, expert, n_expert)
    w.add_type(gguf.GGUFType.MODEL)
    meta.set_gguf_meta_model(w)
    for method, attr in ARCH_KEYS[p.arch]:
        getattr(w, method)(getattr(p, attr))
    w.add_file_type(ftype)
    if p.arch == "phi2":
        w.add_add_bos_token(False)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    load_vocab(src, p.arch, p.n_vocab).add_to(w)
    return w


def write_gguf(writer, planned: list[Planned], path: Path, progress: bool) -> None:
    try:
        writer.write_header_to_file(path)
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        _write_data(writer.fout[0], writer.data_alignment, planned, progress)
    finally:
        writer.close()


def _write_data(fout, align: int, planned: list[Planned], progress: bool) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    from .cpus import usable_cpus

    workers = usable_cpus()
    fout.write(b"\0" * (-fout.tell() % align))
    with tqdm(total=sum(t.nbytes for t in planned), unit="B", unit_scale=True, desc="Writing",
              disable=not progress, leave=False) as bar, ThreadPoolExecutor(workers) as pool:
        for t in planned:
            written = _copy_in_kernel(fout, t, bar) if _same_bits(t) else None
            if written is None:
                written = 0
                for chunk in in_parallel(pool, chunk_jobs(t), ahead=workers):
                    fout.write(memoryview(chunk).cast("B"))
                    written += chunk.nbytes
                    bar.update(chunk.nbytes)
            if written != t.nbytes:  # a planning bug must never produce a silently corrupt file
                raise ConversionError(f"Internal error: {t.name} wrote {written} bytes, planned {t.nbytes}")
            fout.write(b"\0" * (-written % align))


def _same_bits(t: Planned) -> bool:
    """The output bytes are the source bytes (same dtype, nothing generated)."""
    return t.values is None and all((s.dtype, t.qtype) in _SAME_BITS for s in t.sources)


_SAME_BITS = {("F32", F32), ("F16", F16), ("BF16", BF16)}


def _copy_in_kernel(fout, t: Planned, bar) -> int | None:
    """Copy the tensor's bytes file to file inside the kernel (copy_file_range, as `cp` does):
    no page passes through Python. None where the platform or file systems cannot; the caller
    then streams the bytes itself."""
    import errno
    import os

    if not hasattr(os, "copy_file_range"):
        return None
    fout.flush()
    start = fout.tell()
    try:
        for src in t.sources:
            with open(src.path, "rb") as f:
                offset, left = src.offset, src.nbytes
                while left:
                    n = os.copy_file_range(f.fileno(), fout.fileno(), min(left, 1 << 30), offset)
                    if n == 0:
                        raise ConversionError(f"{src.path.name} ended inside tensor {src.name} (truncated?)")
                    offset, left = offset + n, left - n
                    bar.update(n)
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL, errno.EBADF):
            raise
        os.lseek(fout.fileno(), start, os.SEEK_SET)  # nothing copied counts: redo it the slow way
        fout.seek(start)
        fout.truncate()
        return None
    fout.seek(0, os.SEEK_END)  # the buffered writer catches up with what the kernel appended
    return fout.tell() - start


def convert_checkpoint(src, out, outtype: str = "auto", force: bool = False, progress: bool = True) -> Path:
    """Convert the Hugging Face folder `src` to the GGUF file `out`; return its absolute path."""
    from .files import atomic_output, check_free_space, check_output_path

    src = Path(src).expanduser().absolute()
    if not src.is_dir():
        raise ConversionError(f"{src} is not a folder")
    params = load_params(src)
    entries = index_weights(src)
    out = check_output_path(Path(out), force, inputs=tuple(sorted({e.path for e in entries.values()})))
    ftype, qtype = resolve_outtype(outtype, entries)
    planned = plan_tensors(params, entries, qtype)
    writer = build_writer(src, params, planned, ftype)
    # tensor data plus a generous allowance for header, vocab and padding
    check_free_space(out.parent, sum(t.nbytes + 32 for t in planned) + 64 * 2**20)
    try:
        with atomic_output(out, force=force) as tmp:
            # The writer creates the file anew: on ext4, opening the existing (empty) temporary
            # with O_TRUNC marks it for a flush of all its data at close, which held the command
            # until the disk had caught up (1.4 s of 2.2 GB). Unlinking first keeps the name ours.
            tmp.unlink()
            write_gguf(writer, planned, tmp, progress)
    except OSError as e:
        raise PhiError(f"Writing {out} failed: {e.strerror or e}") from None
    return out
