"""The token source: prefill the prompt (reusing what the context or the disk cache holds),
then sample with llama.cpp's own sampler chain and decode one token at a time.

Everything per token happens in llama.cpp: one llama_sampler_sample and one llama_decode call
through ctypes, no logits copied to Python, no per-token Python objects beyond the id. The
chain is built in the same order as llama-cpp-python's Llama.generate (penalties, grammar,
top-k, typical, top-p, min-p, temperature, dist; greedy at temperature 0), so greedy and
seeded outputs are the ones that path gives. We keep Llama's bookkeeping (input_ids,
n_tokens) up to date, so the next turn in this process reuses the KV cache.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterator, Optional

from . import prompt_cache


@dataclass(frozen=True)
class Sampling:
    temp: float = 0.8
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    seed: Optional[int] = None  # None = a random seed each turn
    grammar: Optional[tuple[str, str]] = None  # (GBNF text, root rule)


def sampling(options: dict, seed: Optional[int], schema: Optional[dict]) -> Sampling:
    """Sampling from model.Generation's resolved options (temp, top_p, top_k, min_p, repeat_penalty)."""
    return Sampling(**options, seed=seed, grammar=grammar_for_schema(schema) if schema is not None else None)


def grammar_for_schema(schema: dict) -> tuple[str, str]:
    """A JSON schema as GBNF, through llama-cpp-python's converter."""
    import json

    import llama_cpp

    g = llama_cpp.LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
    return g._grammar, g._root


def sampler_chain(llama, s: Sampling):
    """A llama_sampler chain for `s`; the caller frees it (llama_sampler_free)."""
    import llama_cpp as lib

    chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
    vocab = llama._model.vocab
    seed = lib.LLAMA_DEFAULT_SEED if s.seed is None else s.seed & 0xFFFFFFFF
    steps = [lib.llama_sampler_init_penalties(llama.n_vocab(), llama.last_n_tokens_size, s.repeat_penalty, 0.0, 0.0)]
    if s.grammar is not None:
        steps.append(lib.llama_sampler_init_grammar(vocab, s.grammar[0].encode(), s.grammar[1].encode()))
    if s.temp == 0:
        steps.append(lib.llama_sampler_init_greedy())
    else:
        steps += [
            lib.llama_sampler_init_top_k(s.top_k),
            lib.llama_sampler_init_typical(1.0, 1),
            lib.llama_sampler_init_top_p(s.top_p, 1),
            lib.llama_sampler_init_min_p(s.min_p, 1),
            lib.llama_sampler_init_temp(s.temp),
            lib.llama_sampler_init_dist(seed),
        ]
    for step in steps:
        lib.llama_sampler_chain_add(chain, step)  # the chain owns them now
    return chain


def common_prefix(llama, tokens: list[int]) -> int:
    """How many leading `tokens` the context already holds."""
    return prompt_cache.shared_prefix(llama.input_ids[: llama.n_tokens].tolist(), tokens)


def prefill(llama, tokens: list[int], slot: prompt_cache.Slot | None = None) -> int:
    """Evaluate `tokens`, reusing the longest prefix the context or the disk cache holds.
    Returns the number of tokens reused; the last prompt token is always evaluated (logits)."""
    have = min(common_prefix(llama, tokens), len(tokens) - 1)
    have = prompt_cache.restore(llama, slot, tokens, have)
    llama._ctx.kv_cache_seq_rm(-1, have, -1)
    llama.n_tokens = have
    start = time.perf_counter()
    llama.eval(tokens[have:])
    if slot is not None:
        slot.eval_tokens, slot.eval_seconds = len(tokens) - have, time.perf_counter() - start
    return have


class TokenStream:
    """Iterate token ids after the prompt; `cached` says how many prompt tokens were reused.

    A token is decoded into the context only when the consumer asks for the next one, so the
    end token it stops on never enters the KV cache (the next turn's prompt has its own).
    """

    def __init__(self, llama, prompt_tokens: list[int], sampling: Sampling, slot: prompt_cache.Slot | None = None):
        self.llama, self.sampling = llama, sampling
        self.cached = prefill(llama, prompt_tokens, slot)

    def __iter__(self) -> Iterator[int]:
        import llama_cpp as lib

        llama = self.llama
        ctx, n_ctx, ids = llama._ctx.ctx, llama.n_ctx(), llama.input_ids
        chain = sampler_chain(llama, self.sampling)
        token = (lib.llama_token * 1)()
        batch = lib.llama_batch_get_one(token, 1)  # reused: it points at `token`
        sample, decode = lib.llama_sampler_sample, lib.llama_decode
        try:
            while llama.n_tokens < n_ctx:
                tok = sample(chain, ctx, -1)
                yield tok
                token[0] = tok
                if decode(ctx, batch) != 0:
                    raise RuntimeError(f"llama_decode failed after {llama.n_tokens} tokens")
                ids[llama.n_tokens] = tok
                llama.n_tokens += 1
        finally:
            lib.llama_sampler_free(chain)
