"""Realistic synthetic Phi checkpoints for benchmarks: Phi-3-mini's shapes (hidden 3072,
intermediate 8192, 32 heads, vocab 32064) with fewer layers, bf16 (as the hub ships it) or f16,
sharded with model.safetensors.index.json like the hub, plus a small real SentencePiece
tokenizer with Phi-3's special tokens. No hub, no torch: numpy only.

    python benchmarks/synthetic.py OUT_DIR --layers 6 [--dtype bf16|f16] [--shard-gb 1]

6 layers is about 2.4 GB in bf16.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

HIDDEN, FF, HEADS, VOCAB = 3072, 8192, 32, 32064
TESTS = Path(__file__).resolve().parents[1] / "tests"


def tensor_shapes(layers: int) -> dict[str, tuple[int, ...]]:
    shapes = {"model.embed_tokens.weight": (VOCAB, HIDDEN), "model.norm.weight": (HIDDEN,), "lm_head.weight": (VOCAB, HIDDEN)}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes |= {
            p + "input_layernorm.weight": (HIDDEN,),
            p + "self_attn.qkv_proj.weight": (3 * HIDDEN, HIDDEN),
            p + "self_attn.o_proj.weight": (HIDDEN, HIDDEN),
            p + "post_attention_layernorm.weight": (HIDDEN,),
            p + "mlp.gate_up_proj.weight": (2 * FF, HIDDEN),
            p + "mlp.down_proj.weight": (HIDDEN, FF),
        }
    return shapes


def random_tensor(shape, dtype: str, rng):
    import numpy as np

    data = rng.standard_normal(shape, dtype=np.float32) * 0.02
    if dtype == "f16":
        return data.astype(np.float16)
    return (data.view(np.uint32) >> 16).astype(np.uint16)  # bf16 bits, truncated


def save_safetensors(path: Path, tensors: dict, dtype: str) -> None:
    """Write a safetensors file (JSON header + raw little-endian bytes); dtype BF16 or F16."""
    header, offset = {}, 0
    for name, array in tensors.items():
        header[name] = {"dtype": dtype, "shape": list(array.shape), "data_offsets": [offset, offset + array.nbytes]}
        offset += array.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little"))
        f.write(raw)
        for array in tensors.values():
            f.write(array.tobytes())


def write_shards(out: Path, layers: int, dtype: str, shard_bytes: int) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    shapes = tensor_shapes(layers)
    groups, current, size = [], [], 0
    for name, shape in shapes.items():
        n = int(np.prod(shape)) * 2
        if current and size + n > shard_bytes:
            groups.append(current)
            current, size = [], 0
        current.append(name)
        size += n
    groups.append(current)
    weight_map = {}
    for k, names in enumerate(groups, 1):
        fname = f"model-{k:05d}-of-{len(groups):05d}.safetensors"
        tensors = {n: random_tensor(shapes[n], dtype, rng) for n in names}
        save_safetensors(out / fname, tensors, dtype.upper())
        weight_map |= {n: fname for n in names}
    total = sum(int(np.prod(s)) * 2 for s in shapes.values())
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))


def write_config_and_tokenizer(out: Path, layers: int, dtype: str) -> None:
    sys.path.insert(0, str(TESTS))
    from fixtures.checkpoints import make_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        tiny = make_checkpoint("phi-3-mini-4k", Path(tmp) / "tiny", layout="hub")
        for f in tiny.iterdir():
            if f.name.startswith(("tokenizer", "special_tokens", "added_tokens", "generation_config")):
                shutil.copy(f, out / f.name)
        config = json.loads((tiny / "config.json").read_text())
    config.update(
        hidden_size=HIDDEN, intermediate_size=FF, num_attention_heads=HEADS, num_key_value_heads=HEADS,
        num_hidden_layers=layers, vocab_size=VOCAB, max_position_embeddings=4096,
        original_max_position_embeddings=4096, torch_dtype="bfloat16" if dtype == "bf16" else "float16",
        tie_word_embeddings=False,
    )
    config.pop("dtype", None)
    (out / "config.json").write_text(json.dumps(config, indent=2))


def make(out: Path, layers: int, dtype: str = "bf16", shard_gb: float = 1.0) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    write_shards(out, layers, dtype, int(shard_gb * 1e9))
    write_config_and_tokenizer(out, layers, dtype)
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--dtype", choices=["bf16", "f16"], default="bf16")
    ap.add_argument("--shard-gb", type=float, default=1.0)
    args = ap.parse_args()
    make(args.out, args.layers, args.dtype, args.shard_gb)
    print(args.out)
