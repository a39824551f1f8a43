"""Flash attention defaults to llama.cpp's own "auto" (what llama-completion runs with): the
context is created with AUTO, which on the CPU backend computes what an explicit "on" does;
-o flash_attn false and true still choose, and a quantized KV cache forces it on."""

import numpy as np
import pytest

from llm_phi_gguf.runtime import LoadOptions, load_llama

AUTO, OFF, ON = -1, 0, 1


def logits_after(llama, tokens):
    llama.reset()
    llama.eval(tokens)
    return np.array(llama.scores[len(tokens) - 1])


@pytest.fixture(scope="module")
def gguf(converted):
    return converted("phi-4", "f16")


@pytest.mark.parametrize("options, expected", [({}, AUTO), ({"flash_attn": False}, OFF), ({"flash_attn": True}, ON),
                                               ({"cache_type": "q8_0"}, ON), ({"flash_attn": False, "cache_type": "q8_0"}, ON)])
def test_context_is_created_with_the_chosen_flash_attention(gguf, options, expected):
    llama = load_llama(gguf, LoadOptions(n_ctx=64, logits_all=True, **options))
    assert llama.context_params.flash_attn_type == expected
    llama.close()


def test_auto_computes_what_on_computes_on_the_cpu(gguf):
    import llama_cpp._internals as internals

    context_class = internals.LlamaContext
    tokens = list(range(1, 40))
    out = {}
    for name, value in (("auto", None), ("on", True), ("off", False)):
        llama = load_llama(gguf, LoadOptions(n_ctx=64, logits_all=True, flash_attn=value))
        out[name] = logits_after(llama, tokens)
        llama.close()
    assert internals.LlamaContext is context_class  # the constructor is restored after loading
    assert np.array_equal(out["auto"], out["on"])
    assert not np.array_equal(out["auto"], out["off"])  # so the two paths really differ here
    assert np.allclose(out["auto"], out["off"], atol=1e-2)
