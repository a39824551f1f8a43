"""Importance matrices: computed in-process through cb_eval, checked against numpy, saved in
llama.cpp's GGUF and legacy formats, and used by the quantizer."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from llm_phi_gguf import imatrix, quantize
from llm_phi_gguf.cli import phi

from test_quantize import TINY, _seeded_probe, probe_verdict, weight_types  # noqa: F401 (fixtures)

KIND = "phi-3-mini-4k"
N_CTX, CHUNKS = 64, 3
WEIGHTS = ("attn_qkv", "attn_output", "ffn_up", "ffn_down")


@pytest.fixture
def f16(converted):
    return converted(KIND, "f16", **TINY)


@pytest.fixture(scope="module")
def computed(converted, probe_verdict, tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLM_USER_PATH", str(tmp_path_factory.mktemp("imatrix-user")))
        text = imatrix.builtin_calibration_text()
        return imatrix.compute_imatrix(converted(KIND, "f16", **TINY), text, n_ctx=N_CTX, chunks=CHUNKS)


def tokens_and_weights(path, text):
    """Independent of our collector: the tokens llama.cpp makes and the GGUF's own tensors."""
    import gguf
    from llama_cpp import Llama

    vocab = Llama(str(path), vocab_only=True, verbose=False)
    tokens = vocab.tokenize(text.encode(), add_bos=False, special=False)
    tensors = {t.name: np.array(t.data, dtype=np.float32) for t in gguf.GGUFReader(str(path)).tensors}
    return tokens, tensors


def test_entries_match_numpy_for_the_first_matmul(computed, f16):
    """blk.0.attn_qkv's input is attn_norm(token_embd[token]): its squared sums are computable."""
    tokens, w = tokens_and_weights(f16, imatrix.builtin_calibration_text())
    tokens = tokens[: N_CTX * CHUNKS]  # this tiny GGUF adds no BOS, so chunks are plain slices
    x = w["token_embd.weight"][tokens].astype(np.float64)
    normed = x / np.sqrt((x * x).mean(axis=1, keepdims=True) + 1e-5) * w["blk.0.attn_norm.weight"]
    entry = computed.entries["blk.0.attn_qkv.weight"]
    assert entry.counts.tolist() == [len(tokens)]
    np.testing.assert_allclose(entry.sums[0], (normed**2).sum(axis=0), rtol=2e-3)


def test_every_layer_matrix_sees_every_token(computed):
    assert set(computed.entries) == {f"blk.{i}.{w}.weight" for i in range(2) for w in WEIGHTS}
    for name, e in computed.entries.items():
        # logits for all tokens: the last layer's ffn sees every row, not just the last one
        assert e.counts.tolist() == [N_CTX * CHUNKS], name
        assert e.sums.shape == (1, 512 if "ffn_down" in name else 256)
        assert np.isfinite(e.sums).all() and (e.sums > 0).all()
    assert (computed.chunk_count, computed.chunk_size) == (CHUNKS, N_CTX)


def test_gguf_file_has_llama_cpp_layout(computed, tmp_path):
    import gguf

    path = imatrix.save_imatrix(computed, tmp_path / "im.gguf")
    reader = gguf.GGUFReader(str(path))
    assert reader.fields["general.type"].contents() == "imatrix"
    assert reader.fields["imatrix.datasets"].contents() == ["calibration.txt"]
    assert reader.fields["imatrix.chunk_count"].contents() == CHUNKS
    assert reader.fields["imatrix.chunk_size"].contents() == N_CTX
    tensors = {t.name: t for t in reader.tensors}
    qkv, counts = tensors["blk.0.attn_qkv.weight.in_sum2"], tensors["blk.0.attn_qkv.weight.counts"]
    assert qkv.tensor_type == gguf.GGMLQuantizationType.F32 and list(qkv.shape) == [256, 1]
    assert list(counts.shape) == [1, 1] and counts.data.ravel().tolist() == [N_CTX * CHUNKS]
    back = imatrix.read_imatrix(path)
    for name, e in computed.entries.items():
        np.testing.assert_array_equal(back.entries[name].sums, e.sums)


def test_legacy_dat_round_trip(computed, tmp_path):
    path = imatrix.save_imatrix(computed, tmp_path / "im.dat")
    raw = path.read_bytes()
    assert struct.unpack_from("<i", raw)[0] == len(computed.entries)
    first = sorted(computed.entries)[0].encode()
    assert struct.unpack_from("<i", raw, 4)[0] == len(first) and raw[8: 8 + len(first)] == first
    ncall, nval = struct.unpack_from("<ii", raw, 8 + len(first))
    assert (ncall, nval) == (CHUNKS, 256)  # ceil(tokens / chunk size) calls of the chunk size
    assert raw.endswith(b"calibration.txt")
    back = imatrix.read_imatrix(path)
    assert back.chunk_count == CHUNKS and back.datasets == ["calibration.txt"]
    for name, e in computed.entries.items():
        np.testing.assert_allclose(back.entries[name].weights(), e.weights(), rtol=1e-6)


def test_imatrix_changes_q4_k_m_and_iq4_xs_and_formats_agree(computed, f16, tmp_path):
    gguf_im = imatrix.save_imatrix(computed, tmp_path / "im.gguf")
    dat_im = imatrix.save_imatrix(computed, tmp_path / "im.dat")
    for qtype in ("Q4_K_M", "IQ4_XS"):
        plain = quantize.quantize_file(f16, tmp_path / f"plain_{qtype}.gguf", qtype, progress=False).path
        a = quantize.quantize_file(f16, tmp_path / f"a_{qtype}.gguf", qtype, imatrix=gguf_im, progress=False).path
        b = quantize.quantize_file(f16, tmp_path / f"b_{qtype}.gguf", qtype, imatrix=dat_im, progress=False).path
        assert a.read_bytes() != plain.read_bytes()
        assert a.read_bytes() == b.read_bytes()  # the same weights reach llama.cpp from either format
        assert weight_types(a) == weight_types(plain)  # same types, different rounding


def test_imatrix_weights_scratch_lives_beside_the_output_and_goes(computed, f16, tmp_path, monkeypatch):
    """The per-column weights the child reads are a scratch file in the output's folder (not
    the system temp dir, where a kill -9 would strand it), gone after the run."""
    im = imatrix.save_imatrix(computed, tmp_path / "im.dat")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    seen = []
    real = quantize.run_child

    def spy(job, reader):
        weights = Path(job["imatrix"])
        seen.append((weights.parent, weights.is_file() and weights.stat().st_size > 0))
        return real(job, reader)

    monkeypatch.setattr(quantize, "run_child", spy)
    quantize.quantize_file(f16, out_dir / "m.gguf", "Q4_K_M", imatrix=im, progress=False)
    assert seen == [(out_dir, True)]
    assert sorted(p.name for p in out_dir.iterdir()) == ["m.gguf"]


def test_cli_imatrix_then_quantize_iq2_xxs(f16, tmp_path):
    text = tmp_path / "calib.txt"
    text.write_text(imatrix.builtin_calibration_text())
    out = tmp_path / "im.gguf"
    made = CliRunner().invoke(phi, ["quantize", "imatrix", str(f16), "--text", str(text), "-o", str(out),
                                    "--chunks", "2", "--n-ctx", "128"])
    assert made.exit_code == 0, made.output
    assert "8 entries, 2 chunks of 128 tokens" in made.output
    result = CliRunner().invoke(phi, ["quantize", str(f16), "-q", "IQ2_XXS", "--imatrix", str(out), "-o",
                                      str(tmp_path / "m.gguf"), "--no-register", "--no-report"])
    assert result.exit_code == 0, result.output
    assert weight_types(tmp_path / "m.gguf")["blk.0.ffn_up.weight"][0] == "IQ2_XXS"
    from llm_phi_gguf.runtime import LoadOptions, load_llama

    llama = load_llama(tmp_path / "m.gguf", LoadOptions(n_ctx=64))
    try:
        assert llama("Hello", max_tokens=3, temperature=0.0)["usage"]["completion_tokens"] >= 1
    finally:
        llama.close()


def test_calibration_option_equals_the_imatrix_command(f16, tmp_path):
    """--calibration computes in the pipeline exactly what `quantize imatrix` computes."""
    text = tmp_path / "calib.txt"
    text.write_text(imatrix.builtin_calibration_text())
    runner = CliRunner()
    made = runner.invoke(phi, ["quantize", "imatrix", str(f16), "--text", str(text), "-o", str(tmp_path / "im.gguf")])
    assert made.exit_code == 0, made.output
    common = ["-q", "Q4_K_M", "--no-register", "--no-report"]
    a = runner.invoke(phi, ["quantize", str(f16), *common, "--calibration", str(text), "-o", str(tmp_path / "a.gguf")])
    b = runner.invoke(phi, ["quantize", str(f16), *common, "--imatrix", str(tmp_path / "im.gguf"),
                            "-o", str(tmp_path / "b.gguf")])
    assert a.exit_code == 0 and b.exit_code == 0, a.output + b.output
    assert (tmp_path / "a.gguf").read_bytes() == (tmp_path / "b.gguf").read_bytes()


def test_text_too_short(f16):
    with pytest.raises(imatrix.ImatrixError, match="too short"):
        imatrix.compute_imatrix(f16, "hi")


def test_moe_experts_get_per_expert_rows(converted, tmp_path):
    """MUL_MAT_ID: each routed token counts once for each of its 2 experts (of 4)."""
    src = converted("phi-3.5-moe", "f16", **TINY)
    im = imatrix.compute_imatrix(src, imatrix.builtin_calibration_text(), n_ctx=N_CTX, chunks=CHUNKS)
    n_tokens = N_CTX * CHUNKS
    for i in range(2):
        for w, ne0 in (("ffn_up_exps", 256), ("ffn_gate_exps", 256), ("ffn_down_exps", 128)):
            e = im.entries[f"blk.{i}.{w}.weight"]
            assert e.sums.shape == (4, ne0) and e.counts.sum() == 2 * n_tokens
        assert im.entries[f"blk.{i}.ffn_gate_inp.weight"].counts.tolist() == [n_tokens]
    result = quantize.quantize_file(src, tmp_path / "moe.gguf", "IQ2_XXS", imatrix=im, progress=False)
    assert weight_types(result.path)["blk.0.ffn_up_exps.weight"][0] == "IQ2_XXS"
    # 128-long expert rows cannot hold 256-blocks: llama.cpp falls back, and we say so
    expected = {(f"blk.{i}.ffn_down_exps.weight", "iq4_nl") for i in range(2)}
    assert {(f.tensor, f.used) for f in result.fallbacks} == expected
