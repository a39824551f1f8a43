"""Child-process probe: does quantized inference survive llama.cpp's extra buffer types here?

`python -m llm_phi_gguf.probe` writes a tiny phi3 model (random weights, one layer, 256-wide
so the AMX/repack kernels take it), quantizes it to Q4_K_M (Q4_K + Q6_K, the types people
use most) with llama.cpp, loads it with llama.cpp's default parameters and decodes one token. A crash kills only this process; runtime.run_probe reads the exit status.
Pass --safe to load with use_extra_bufts=False instead (to check the workaround works).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

N_EMBD, N_FF, N_HEAD = 256, 512, 4


def _vocab(n_vocab: int | None = None) -> tuple[list[str], list[int]]:
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + ["▁a", "▁b", "a", "b"]
    types = [2, 3, 3] + [6] * 256 + [1] * 4  # unknown, control, byte, normal
    # filler up to n_vocab: normal, printable pieces, so a random model's output is visible text
    fill = max(0, (n_vocab or 0) - len(tokens))
    return tokens + [f"\u2581w{i}" for i in range(len(tokens), len(tokens) + fill)], types + [1] * fill


def write_random_phi3(
    path: Path, *, n_layer: int = 1, n_embd: int = N_EMBD, n_ff: int = N_FF, n_head: int = N_HEAD,
    n_vocab: int | None = None, f16: bool = False, n_head_kv: int | None = None,
) -> None:
    """A phi3 GGUF with random weights and a byte-level SentencePiece-style vocab.

    Also used by the benchmarks (Phi-3-mini width: n_embd 3072, n_ff 8192, 32 heads, 32064 tokens;
    Phi-4-mini's KV shape: n_head 24, n_head_kv 8).
    """
    import gguf
    import numpy as np

    rng = np.random.default_rng(0)
    n_head_kv = n_head_kv or n_head
    kv_dim = n_embd // n_head * n_head_kv
    tokens, types = _vocab(n_vocab)
    w = gguf.GGUFWriter(str(path), "phi3")
    for add, value in [
        (w.add_context_length, 4096), (w.add_embedding_length, n_embd), (w.add_feed_forward_length, n_ff),
        (w.add_block_count, n_layer), (w.add_head_count, n_head), (w.add_head_count_kv, n_head_kv),
        (w.add_layer_norm_rms_eps, 1e-5), (w.add_rope_dimension_count, n_embd // n_head),
        (w.add_rope_freq_base, 10000.0), (w.add_tokenizer_model, "llama"), (w.add_token_list, tokens),
        (w.add_token_scores, [0.0] * len(tokens)), (w.add_token_types, types), (w.add_bos_token_id, 1),
        (w.add_eos_token_id, 2),
    ]:
        add(value)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if f16 else gguf.LlamaFileType.ALL_F32)
    dtype = np.float16 if f16 else np.float32

    def weight(name: str, rows: int, cols: int) -> None:
        w.add_tensor(name, (rng.standard_normal((rows, cols), dtype=np.float32) * 0.02).astype(dtype))

    def norm(name: str) -> None:
        w.add_tensor(name, np.ones(n_embd, dtype=np.float32))

    weight("token_embd.weight", len(tokens), n_embd)
    norm("output_norm.weight")
    weight("output.weight", len(tokens), n_embd)
    for i in range(n_layer):
        norm(f"blk.{i}.attn_norm.weight")
        weight(f"blk.{i}.attn_qkv.weight", n_embd + 2 * kv_dim, n_embd)
        weight(f"blk.{i}.attn_output.weight", n_embd, n_embd)
        norm(f"blk.{i}.ffn_norm.weight")
        weight(f"blk.{i}.ffn_up.weight", 2 * n_ff, n_embd)
        weight(f"blk.{i}.ffn_down.weight", n_embd, n_ff)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def quantize_q4_k_m(src: Path, dst: Path) -> None:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M
    params.nthread = 1
    if llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), params) != 0:
        raise SystemExit("probe: llama_model_quantize failed")


def decode_one_token(path: Path, safe: bool) -> int:
    from .runtime import LoadOptions, load_llama

    llama = load_llama(path, LoadOptions(n_ctx=64, n_batch=64, extra_bufts=not safe))
    tokens = llama.tokenize(b"a b a", add_bos=True, special=False)
    llama.eval(tokens)
    return int(llama._scores[-1].argmax())


def main(argv: list[str]) -> int:
    safe = "--safe" in argv
    with tempfile.TemporaryDirectory(prefix="llm-phi-probe-") as tmp:
        f32, q4 = Path(tmp) / "probe-f32.gguf", Path(tmp) / "probe-q4_k_m.gguf"
        write_random_phi3(f32)
        quantize_q4_k_m(f32, q4)
        decode_one_token(q4, safe)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
