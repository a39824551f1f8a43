"""The lean decode loop gives the tokens llama-cpp-python's own Llama.generate gives (the path it
replaced, kept here as the oracle): greedy, seeded sampling, repeat penalty and grammar."""

from __future__ import annotations

import itertools

import pytest

from llm_phi_gguf import decode
from llm_phi_gguf.runtime import LoadOptions, load_llama

N = 24
CASES = {
    "greedy": dict(temp=0.0),
    "seeded": dict(temp=0.9, top_k=40, top_p=0.95, min_p=0.05, seed=1234),
    "seeded-wide": dict(temp=1.5, top_k=0, top_p=1.0, min_p=0.0, seed=7),
    "penalty": dict(temp=0.7, repeat_penalty=1.3, seed=99),
}


@pytest.fixture(scope="module")
def llama(converted):
    return load_llama(converted("phi-4", "f16"), LoadOptions(n_ctx=512))


def prompt(llama):
    return llama.tokenize(b"<|user|>Write a poem about the sea<|end|><|assistant|>", add_bos=True, special=True)


def oracle(llama, tokens, s: decode.Sampling, grammar=None) -> list[int]:
    llama.reset()
    llama.set_seed(s.seed if s.seed is not None else 0)
    kw = dict(temp=s.temp, top_k=s.top_k, top_p=s.top_p, min_p=s.min_p, repeat_penalty=s.repeat_penalty)
    return list(itertools.islice(llama.generate(tokens, grammar=grammar, **kw), N))


def ours(llama, tokens, s: decode.Sampling) -> list[int]:
    llama.reset()
    return list(itertools.islice(decode.TokenStream(llama, tokens, s), N))


@pytest.mark.parametrize("case", CASES)
def test_same_tokens_as_llama_generate(llama, case):
    s = decode.Sampling(**{**decode.Sampling().__dict__, **CASES[case]})
    tokens = prompt(llama)
    expected = oracle(llama, tokens, s)
    assert len(set(expected)) > 1  # a degenerate stream would prove nothing
    assert ours(llama, tokens, s) == expected


def test_grammar_constrains_like_llama_generate(llama):
    import llama_cpp

    schema = '{"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}'
    grammar = llama_cpp.LlamaGrammar.from_json_schema(schema, verbose=False)
    s = decode.Sampling(temp=0.0, grammar=(grammar._grammar, grammar._root))
    tokens = prompt(llama)
    assert ours(llama, tokens, s) == oracle(llama, tokens, s, grammar=grammar)


def test_kv_reuse_continues_exactly(llama):
    """The second turn reuses the context (prefill returns the shared prefix) and its tokens equal
    a fresh evaluation's."""
    s = decode.Sampling(temp=0.0)
    tokens = prompt(llama)
    first = ours(llama, tokens, s)
    follow = tokens + first + llama.tokenize(b"<|end|><|user|>More<|end|><|assistant|>", add_bos=False, special=True)
    stream = decode.TokenStream(llama, follow, s)
    assert stream.cached >= len(tokens) + len(first) - 1
    reused = list(itertools.islice(stream, N))
    assert reused == ours(llama, follow, s)


def test_unseeded_sampling_differs_between_turns(llama):
    """No seed means a fresh random seed each turn (the old path kept the last turn's seed)."""
    s = decode.Sampling(temp=1.5, top_k=0, top_p=1.0, min_p=0.0)
    tokens = prompt(llama)
    runs = {tuple(ours(llama, tokens, s)) for _ in range(3)}
    assert len(runs) > 1
