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


def _vocab() -> tuple[list[str], list[int]]:
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + ["▁a", "▁b", "a", "b"]
    types = [2, 3, 3] + [6] * 256 + [1] * 4  # unknown, control, byte, normal
    return tokens, types


def write_probe_model(path: Path) -> None:
    import gguf
    import numpy as np

    rng = np.random.default_rng(0)
    tokens, types = _vocab()
    w = gguf.GGUFWriter(str(path), "phi3")
    w.add_context_length(256)
    w.add_embedding_length(N_EMBD)
    w.add_feed_forward_length(N_FF)
    w.add_block_count(1)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(N_EMBD // N_HEAD)
    w.add_rope_freq_base(10000.0)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * len(tokens))
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)

    def weight(name: str, rows: int, cols: int) -> None:
        w.add_tensor(name, (rng.standard_normal((rows, cols)) * 0.02).astype(np.float32))

    n_vocab = len(tokens)
    weight("token_embd.weight", n_vocab, N_EMBD)
    w.add_tensor("output_norm.weight", np.ones(N_EMBD, dtype=np.float32))
    weight("output.weight", n_vocab, N_EMBD)
    w.add_tensor("blk.0.attn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
    weight("blk.0.attn_qkv.weight", 3 * N_EMBD, N_EMBD)
    weight("blk.0.attn_output.weight", N_EMBD, N_EMBD)
    w.add_tensor("blk.0.ffn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
    weight("blk.0.ffn_up.weight", 2 * N_FF, N_EMBD)
    weight("blk.0.ffn_down.weight", N_EMBD, N_FF)
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
        write_probe_model(f32)
        quantize_q4_k_m(f32, q4)
        decode_one_token(q4, safe)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
