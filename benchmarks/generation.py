"""Generation through `llm` vs raw llama-cpp-python on the same GGUF and settings, and the
second turn of a long conversation vs the first.

Targets: tokens/s through llm >= 0.97x raw; a conversation's second turn, with the KV cache
kept from the first, reaches its first token in <= 0.3x the time of the same second turn (same
history, same prompt tokens) evaluated with the KV cache emptied. Turn 1 is reported too.

The model is a synthetic Phi-3-mini-shaped GGUF (random weights, fewer layers, Q4_K_M) so the
script needs no download; size it with --layers.

    python benchmarks/generation.py [--layers 2] [--tokens 128]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import record, run

sys.path.insert(0, str(Path(__file__).parent))


def synthetic_q4(workdir: Path, layers: int) -> Path:
    from gpu_offload import quantize, write_model

    q4 = workdir / f"synthetic-{layers}l-q4_k_m.gguf"
    if not q4.exists():
        f16 = workdir / "synthetic-f16.gguf"
        write_model(f16, layers)
        quantize(f16, q4)
        f16.unlink()
    return q4


def raw_tokens_per_s(path: Path, prompt: list[int], n: int) -> float:
    """What a llama-cpp-python user gets: create_completion, streaming, greedy, same tokens."""
    from llm_phi_gguf.runtime import LoadOptions, load_llama

    llama = load_llama(path, LoadOptions(n_ctx=2048))
    first = last = None
    count = 0
    for _ in llama.create_completion(prompt, max_tokens=n, temperature=0, stream=True):
        now = time.perf_counter()
        first = first or now
        last = now
        count += 1
    llama.close()
    return (count - 1) / (last - first)


def prompt_tokens(alias: str, prompt: str) -> list[int]:
    """The exact tokens llm feeds llama.cpp for this prompt (chat template applied)."""
    import llm

    model = llm.get_model(alias)
    return model.prepare(llm.Prompt(prompt, model=model, options=model.Options(n_ctx=2048)))[1]


def llm_tokens_per_s(alias: str, prompt: str, n: int) -> tuple[float, int]:
    import llm

    model = llm.get_model(alias)
    response = model.prompt(prompt, temperature=0, max_tokens=n, n_ctx=2048)
    first = last = None
    for _ in response:
        now = time.perf_counter()
        first = first or now
        last = now
    count = response.output_tokens
    return (count - 1) / (last - first), count


def time_to_first_token(conversation, text: str) -> tuple[float, dict]:
    """Seconds to the first streamed chunk of one turn, and its token usage."""
    t = time.perf_counter()
    response = conversation.prompt(text, temperature=0, max_tokens=8, n_ctx=2048)
    ttft = None
    for _ in response:  # read to the end: a response left half-read would run again on .text()
        ttft = ttft or time.perf_counter() - t
    return ttft, {"input": response.input_tokens, "cached": (response.token_details or {}).get("cached_tokens", 0)}


def forget_kv_cache(model) -> None:
    """Empty the loaded model's KV cache (the weights stay loaded, so no load time is counted):
    the next prompt is evaluated from its first token, as by a freshly loaded model."""
    import llm

    model.prepare(llm.Prompt("", model=model, options=model.Options(n_ctx=2048)))[0].reset()


def second_turn(alias: str) -> dict:
    """One conversation: turn 1 (long prompt), turn 2 (short follow-up, KV cache kept from turn 1),
    then the same turn 2 again (same history, same prompt tokens) with the KV cache emptied."""
    import llm

    model = llm.get_model(alias)
    conversation = model.conversation()
    long_text = " ".join(f"Fact {i}: the number {i} is {'even' if i % 2 == 0 else 'odd'}." for i in range(32))  # ~1500 tokens with the byte-level synthetic vocab
    forget_kv_cache(model)
    t1, u1 = time_to_first_token(conversation, long_text + " Summarise.")
    t2, u2 = time_to_first_token(conversation, "And the next one?")
    conversation.responses.pop()  # turn 2 again, on the same history
    forget_kv_cache(model)
    t2_off, u2_off = time_to_first_token(conversation, "And the next one?")
    assert u2["input"] == u2_off["input"] and u2_off["cached"] == 0, (u2, u2_off)
    return {"turn1": t1, "turn2 cached": t2, "turn2 cache off": t2_off,
            "turn1 tokens": u1, "turn2 tokens": u2, "turn2 cache-off tokens": u2_off}


def main() -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "llm-phi-bench"))
    args, _ = ap.parse_known_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    import os

    os.environ.setdefault("LLM_USER_PATH", str(work / "llm-user"))
    from llm_phi_gguf import store

    path = synthetic_q4(work, args.layers)
    # the synthetic model has no chat template: phi-3's hub template is used
    alias = store.register_file(path, alias="bench-synthetic", family="phi-3", force=True).alias
    prompt = "a b " * 20
    tokens = prompt_tokens(alias, prompt)
    raw, ours = [], []
    for _ in range(args.repeats):  # interleaved, so drift hits both alike
        raw.append(raw_tokens_per_s(path, tokens, args.tokens))
        ours.append(llm_tokens_per_s(alias, prompt, args.tokens)[0])
    turns = [second_turn(alias) for _ in range(args.repeats)]
    med = {k: statistics.median(turn[k] for turn in turns) for k in ("turn1", "turn2 cached", "turn2 cache off")}
    result = {
        "model": f"synthetic phi3, {args.layers} layers, Phi-3-mini width, Q4_K_M, {path.stat().st_size / 1e6:.0f} MB",
        "repeats (interleaved)": args.repeats,
        "raw llama-cpp-python tok/s (per run)": [round(x, 1) for x in raw],
        "through llm tok/s (per run)": [round(x, 1) for x in ours],
        "raw llama-cpp-python tok/s (median)": round(statistics.median(raw), 1),
        "through llm tok/s (median)": round(statistics.median(ours), 1),
        "ratio llm/raw": round(statistics.median(ours) / statistics.median(raw), 3),
        "target ratio": ">= 0.97",
        "turns (s to first token, tokens; per repeat)": [
            {k: (round(v, 3) if isinstance(v, float) else v) for k, v in turn.items()} for turn in turns],
        "turn 1 time to first token (s, median)": round(med["turn1"], 3),
        "turn 2 time to first token, KV cache kept (s, median)": round(med["turn2 cached"], 3),
        "turn 2 time to first token, KV cache emptied (s, median)": round(med["turn2 cache off"], 3),
        "ratio turn 2 cached / same turn 2 cache off": round(med["turn2 cached"] / med["turn2 cache off"], 3),
        "ratio turn 2 cached / turn 1": round(med["turn2 cached"] / med["turn1"], 3),
        "target turn ratio (cached / cache off)": "<= 0.3",
    }
    record("generation", result)
    return result


if __name__ == "__main__":
    run(main)
