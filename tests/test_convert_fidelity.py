"""Converted GGUFs compute what transformers computes: logits from llama.cpp vs transformers' f32
forward on the same tokens, for every family the converter supports (MoE: see test_convert_moe)."""

from __future__ import annotations

import json

import numpy as np
import pytest

llama_cpp = pytest.importorskip("llama_cpp")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def tokens_for(folder, n: int) -> list[int]:
    """n ids drawn from the real (non-padding) vocabulary, fixed seed."""
    n_real = len(transformers.AutoTokenizer.from_pretrained(folder))
    return np.random.default_rng(0).integers(3, n_real, n).tolist()


def hf_logits(folder, toks: list[int]) -> np.ndarray:
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(torch.tensor([toks])).logits[0].numpy()


def gguf_logits(path, toks: list[int], n_ctx: int) -> np.ndarray:
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, logits_all=True, verbose=False, n_threads=2)
    try:
        llm.eval(toks)
        return np.array(llm.scores[: len(toks)])
    finally:
        llm.close()


def compare(got: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    rel = float(np.linalg.norm(got - ref) / np.linalg.norm(ref))
    agree = float((got.argmax(-1) == ref.argmax(-1)).mean())
    return rel, agree


# (kind, n_ctx, n_tokens). llama.cpp pads n_ctx up to 256, so the LongRoPE kinds use an original
# context of 256: n_ctx 256 + 80 tokens = short factors on both sides, n_ctx 512 + 300 tokens = long.
CASES = [
    ("phi-2", 256, 80),
    ("phi-3-mini-4k", 256, 80),
    ("phi-3-128k", 256, 80),
    ("phi-3-128k", 512, 300),
    ("phi-4", 256, 80),
    ("phi-4-mini", 256, 80),
    ("phi-4-mini", 512, 300),
]


@pytest.mark.parametrize("kind,n_ctx,n", CASES, ids=[f"{k}-ctx{c}-n{n}" for k, c, n in CASES])
def test_f32_logits_match_transformers(kind, n_ctx, n, checkpoint, converted):
    folder = checkpoint(kind)
    toks = tokens_for(folder, n)
    rel, agree = compare(gguf_logits(converted(kind), toks, n_ctx), hf_logits(folder, toks))
    assert rel < 0.01 and agree >= 0.98, (rel, agree)


def test_longrope_regimes_really_differ(checkpoint, converted):
    """Guard for the test above: the long factors change the logits, so using the wrong set fails."""
    folder = checkpoint("phi-3-128k")
    toks = tokens_for(folder, 80)
    short = gguf_logits(converted("phi-3-128k"), toks, 256)
    long_ = gguf_logits(converted("phi-3-128k"), toks, 512)
    assert compare(long_, short)[0] > 0.05


@pytest.mark.parametrize("kind,outtype,tol", [("phi-3-mini-4k", "f16", 0.01), ("phi-4", "bf16", 0.05),
                                               ("phi-2", "f16", 0.01)])
def test_half_precision_outputs_agree(kind, outtype, tol, checkpoint, converted):
    folder = checkpoint(kind)
    toks = tokens_for(folder, 64)
    rel, agree = compare(gguf_logits(converted(kind, outtype), toks, 256), hf_logits(folder, toks))
    assert rel < tol and agree >= 0.9, (rel, agree)


def test_bf16_checkpoint_auto_is_bf16_and_bit_exact(checkpoint, converted):
    import gguf

    folder = checkpoint("phi-4-mini", dtype="bfloat16", layout="transformers")
    reader = gguf.GGUFReader(converted("phi-4-mini", "auto", dtype="bfloat16", layout="transformers"))
    assert reader.fields["general.file_type"].contents() == gguf.LlamaFileType.MOSTLY_BF16
    from safetensors.numpy import load_file  # noqa: F401  (bf16 is not a numpy dtype: use torch)
    from safetensors.torch import load_file as load_torch

    hf = load_torch(folder / "model.safetensors")["model.embed_tokens.weight"]
    t = next(t for t in reader.tensors if t.name == "token_embd.weight")
    assert t.tensor_type == gguf.GGMLQuantizationType.BF16
    assert np.array_equal(np.asarray(t.data).view(np.uint16).reshape(hf.shape), hf.view(torch.uint16).numpy())
    assert "output.weight" not in {t.name for t in reader.tensors}  # tied embeddings


def test_sharded_checkpoint_equals_single_file(checkpoint, converted):
    import gguf

    one = gguf.GGUFReader(converted("phi-3-mini-4k"))
    sharded_dir = checkpoint("phi-3-mini-4k", max_shard_size="300KB")
    assert json.loads((sharded_dir / "model.safetensors.index.json").read_text())["weight_map"]
    many = gguf.GGUFReader(converted("phi-3-mini-4k", max_shard_size="300KB"))
    a = {t.name: bytes(t.data) for t in one.tensors}
    b = {t.name: bytes(t.data) for t in many.tensors}
    assert a == b


def test_q8_0_output_roundtrips(checkpoint, converted):
    import gguf

    reader = gguf.GGUFReader(converted("phi-4", "q8_0"))
    assert reader.fields["general.file_type"].contents() == gguf.LlamaFileType.MOSTLY_Q8_0
    types = {t.name: t.tensor_type for t in reader.tensors}
    assert types["blk.0.attn_qkv.weight"] == gguf.GGMLQuantizationType.Q8_0
    assert types["blk.0.attn_norm.weight"] == gguf.GGMLQuantizationType.F32
    f32 = {t.name: t for t in gguf.GGUFReader(converted("phi-4")).tensors}
    t = next(t for t in reader.tensors if t.name == "blk.1.ffn_down.weight")
    deq = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type)
    ref = np.asarray(f32[t.name].data)
    assert np.abs(deq - ref).max() <= np.abs(ref).max() / 127 * 0.51 + 1e-7
