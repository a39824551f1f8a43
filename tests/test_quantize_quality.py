"""The quality report's numbers against an independent oracle (transformers) and against itself."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from llm_phi_gguf import quality

from test_quantize import TINY, _seeded_probe, probe_verdict  # noqa: F401 (fixtures)

KIND = "phi-3-mini-4k"
N_CTX = 256


def test_perplexity_matches_transformers(checkpoint, converted):
    """Same tokens, same chunks: llama.cpp on our f32 GGUF vs transformers on the checkpoint."""
    import torch
    import transformers
    from llama_cpp import Llama

    f32 = converted(KIND, "f32", **TINY)
    text = quality.builtin_eval_text()[:2000]
    report = quality.evaluate(f32, [], text, n_ctx=N_CTX)

    tokens = Llama(str(f32), vocab_only=True, verbose=False).tokenize(text.encode(), add_bos=False, special=False)
    model = transformers.AutoModelForCausalLM.from_pretrained(checkpoint(KIND, **TINY), dtype=torch.float32).eval()
    nll = []
    with torch.no_grad():
        for i in range(0, len(tokens), N_CTX):  # this tiny GGUF adds no BOS
            chunk = torch.tensor([tokens[i: i + N_CTX]])
            if chunk.shape[1] < 2:
                continue
            logp = torch.log_softmax(model(chunk).logits[0, :-1].double(), dim=-1)
            nll.append(-logp.gather(1, chunk[0, 1:, None])[:, 0])
    expected = math.exp(torch.cat(nll).mean().item())
    assert report.n_tokens == sum(len(x) for x in nll)
    assert report.source.ppl == pytest.approx(expected, rel=2e-3)


def test_a_model_against_itself_is_perfect(converted, tmp_path):
    f16 = converted(KIND, "f16", **TINY)
    report = quality.evaluate(f16, [f16], quality.builtin_eval_text()[:1500], n_ctx=N_CTX)
    row = report.rows[0]
    assert row.kld_mean == pytest.approx(0, abs=1e-6) and row.kld_p99 == pytest.approx(0, abs=1e-6)
    assert row.top1 == 1.0 and row.ppl == pytest.approx(report.source.ppl, rel=1e-9)
    assert row.bpw == pytest.approx(16, abs=0.05) and row.size == f16.stat().st_size


def test_report_json_and_table(converted, tmp_path):
    from llm_phi_gguf.quantize import quantize_file

    f16 = converted(KIND, "f16", **TINY)
    q8 = quantize_file(f16, tmp_path / "m_Q8_0.gguf", "Q8_0", progress=False).path
    report = quality.evaluate(f16, [q8], quality.builtin_eval_text()[:1500], n_ctx=N_CTX)
    [written] = quality.save_reports(report)
    assert written.name == "m_Q8_0.gguf.quality.json"
    data = json.loads(written.read_text())
    assert [r["path"] for r in data["rows"]] == [str(q8), str(f16)]
    assert data["n_tokens"] == report.n_tokens and data["n_ctx"] == N_CTX
    assert np.isfinite([v for r in data["rows"] for v in (r["ppl"], r["kld_mean"], r["kld_p99"], r["top1"])]).all()
    table = quality.format_table(report).splitlines()
    assert table[0].split()[:3] == ["model", "size", "bpw"] and "m_Q8_0.gguf" in table[2]
    assert len(table) == 4  # header, source, Q8_0, footer


def test_eval_text_too_short(converted):
    with pytest.raises(quality.PhiError, match="too short"):
        quality.evaluate(converted(KIND, "f16", **TINY), [], "a")
