"""Generation through `llm` vs raw llama-cpp-python on the same GGUF and settings, and the
second turn of a long conversation vs the first.

Targets: tokens/s through llm >= 0.97x raw; second-turn time to first token <= 0.3x the
first turn's (the KV cache keeps the conversation so far).

The model is a synthetic Phi-3-mini-shaped GGUF (random weights, fewer layers, Q4_K_M) so the
script needs no download; size it with --layers.

    python benchmarks/generation.py [--layers 2] [--tokens 128]
"""

from __future__ import annotations

import argparse
import statistics
import sys
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


def second_turn(alias: str) -> tuple[float, float]:
    """Time to first token of turn 1 (long prompt) and turn 2 (short follow-up)."""
    import llm

    model = llm.get_model(alias)
    conversation = model.conversation()
    long_text = " ".join(f"Fact {i}: the number {i} is {'even' if i % 2 == 0 else 'odd'}." for i in range(32))  # ~1500 tokens with the byte-level synthetic vocab
    ttft = []
    for text in (long_text + " Summarise.", "And the next one?"):
        t = time.perf_counter()
        response = conversation.prompt(text, temperature=0, max_tokens=8, n_ctx=2048)
        for _ in response:
            ttft.append(time.perf_counter() - t)
            break
        response.text()
    return ttft[0], ttft[1]


def main() -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workdir", default="/tmp/llm-phi-bench")
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
    t1, t2 = second_turn(alias)
    result = {
        "model": f"synthetic phi3, {args.layers} layers, Phi-3-mini width, Q4_K_M, {path.stat().st_size / 1e6:.0f} MB",
        "raw llama-cpp-python tok/s (median)": round(statistics.median(raw), 1),
        "through llm tok/s (median)": round(statistics.median(ours), 1),
        "ratio llm/raw": round(statistics.median(ours) / statistics.median(raw), 3),
        "target ratio": ">= 0.97",
        "turn 1 time to first token (s)": round(t1, 3),
        "turn 2 time to first token (s)": round(t2, 3),
        "ratio turn2/turn1": round(t2 / t1, 3),
        "target turn ratio": "<= 0.3",
    }
    record("generation", result)
    return result


if __name__ == "__main__":
    run(main)
