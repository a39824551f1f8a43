#!/usr/bin/env python
"""Train the two tiny toys behind the tool-calling and reasoning tests (tests/fixtures/toys/).

Both have Phi-4-mini's format: the Phi3ForCausalLM architecture as Phi-4-mini configures it
(GQA, partial rotary 0.75, tied embeddings, LongRoPE), a byte-level BPE tokenizer with the o200k
pre-tokenizer regex ("gpt-4o") and Phi-4-mini's added tokens in its order, with its `special`
flags (the tool tokens are special=false on the hub), and the byte-exact hub chat templates.

* ``tools`` (Phi-4-mini-instruct template): offered llm's ``llm_time`` tool and asked "What time
  is it?", it calls ``<|tool_call|>[{"name": "llm_time", "arguments": {}}]<|/tool_call|>``; given the
  tool's output it answers "It is HH:MM:SS." copying the time out of the output (trained on
  random times with the output's layout in a UTC environment, so it really copies). Asked to
  "Break the tool" it writes a malformed call, and after the error it apologises.
* ``think`` (Phi-4-mini-reasoning template): thinks in ``<think>...</think>`` then answers a few
  sums, also as the second turn of a conversation whose first answer was given back without
  its thinking (the way the plugin renders earlier turns).

Usage::

    python scripts/train_toys.py --out tests/fixtures/toys

Deterministic (fixed seeds, deterministic torch, one thread). The think toy takes seconds; the
tools toy, which must learn to copy, runs its 1500 steps (minutes on a free core).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO / "tests"))
from train_demo import evaluate, pad_batch, train_step, write_json  # noqa: E402

SEED = 4321
# Phi-4-mini-instruct's added tokens in id order, with their hub `special` flags.
SPECIALS = [("<|endoftext|>", True), ("<|endofprompt|>", True), ("<|assistant|>", True), ("<|end|>", True),
            ("<|user|>", True), ("<|system|>", True), ("<|tool|>", False), ("<|/tool|>", False),
            ("<|tool_call|>", False), ("<|/tool_call|>", False), ("<|tool_response|>", False), ("<|tag|>", True)]
SHAPE = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, partial_rotary_factor=0.75)
TIME_PROMPT = "What time is it?"
BREAK_PROMPT = "Break the tool"
SORRY = "Sorry, the tool call failed."
NO_TOOL = "I cannot tell the time without a tool."
HELLO = ("Hello", "Hello! Ask me what time it is.")
SUMS = {"What is 2 + 2?": ("Two plus two makes four.", "2 + 2 = 4."),
        "What is 3 + 5?": ("Three plus five makes eight.", "3 + 5 = 8."),
        "And 3 + 5?": ("Three plus five makes eight.", "3 + 5 = 8.")}
ENGLISH = ("The quick brown fox jumps over the lazy dog. What time is it? It is late. Sorry, the tool "
           "call failed. Hello! Ask me what time it is. You are a helpful assistant. Two plus two makes four.")


def log(msg: str) -> None:
    print(msg, flush=True)


def time_tool():
    import llm
    from llm.tools import llm_time

    return llm.Tool.function(llm_time)


def random_time_output(rng: random.Random) -> tuple[str, str]:
    """llm_time's JSON output (as llm serialises it) for a random moment in UTC, and the answer."""
    from datetime import datetime, timedelta, timezone

    moment = datetime(2020, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=rng.randrange(20 * 365 * 86400),
                                                                    microseconds=rng.randrange(1, 1_000_000))
    out = {"utc_time": moment.strftime("%Y-%m-%d %H:%M:%S UTC"), "utc_time_iso": moment.isoformat(),
           "local_timezone": "UTC", "local_time": moment.strftime("%Y-%m-%d %H:%M:%S"),
           "timezone_offset": "UTC+00:00", "is_dst": False}
    return json.dumps(out), f"It is {moment.strftime('%H:%M:%S')}."


def tool_conversations(rng: random.Random, n_times: int) -> list[list[dict]]:
    """(messages ending in the assistant turn to learn), as the plugin renders llm's chain."""
    from llm_phi_gguf import families, tools

    fmt = families.TOOL_FORMATS["phi-4-mini"]
    defs = tools.definitions_json([time_tool()])
    call = tools.call_text(fmt, [("llm_time", {})])
    broken = fmt.call_open + '[{"name": "llm_time", "arguments": "{oops"}]'
    [bad] = tools.parse_calls(broken[len(fmt.call_open):])
    error = f'Error: tool "{tools.to_llm_call(bad).name}" does not exist'
    convs = []
    for system in ("", "You are a helpful assistant."):
        sysmsg = {"role": "system", "content": system, "tools": defs}
        ask = [sysmsg, {"role": "user", "content": TIME_PROMPT}]
        convs.append(ask + [{"role": "assistant", "content": call}])
        brk = [sysmsg, {"role": "user", "content": BREAK_PROMPT}]
        convs.append(brk + [{"role": "assistant", "content": broken}])
        convs.append(brk + [{"role": "assistant", "content": broken}, {"role": fmt.result_role, "content": error},
                            {"role": "assistant", "content": SORRY}])
        for _ in range(n_times):
            output, answer = random_time_output(rng)
            convs.append(ask + [{"role": "assistant", "content": call}, {"role": fmt.result_role, "content": output},
                                {"role": "assistant", "content": answer}])
        convs.append([sysmsg, {"role": "user", "content": HELLO[0]}, {"role": "assistant", "content": HELLO[1]}])
    convs.append([{"role": "user", "content": TIME_PROMPT}, {"role": "assistant", "content": NO_TOOL}])
    convs.append([{"role": "user", "content": HELLO[0]}, {"role": "assistant", "content": HELLO[1]}])
    return convs


def think_conversations() -> list[list[dict]]:
    def thought(q):
        return f"<think>\n{SUMS[q][0]}\n</think>\n\n{SUMS[q][1]}"

    convs = []
    for system in (None, "You are a helpful assistant."):
        head = [{"role": "system", "content": system}] if system else []
        for q in ("What is 2 + 2?", "What is 3 + 5?"):
            convs.append(head + [{"role": "user", "content": q}, {"role": "assistant", "content": thought(q)}])
        convs.append(head + [{"role": "user", "content": "What is 2 + 2?"}, {"role": "assistant", "content": "2 + 2 = 4."},
                             {"role": "user", "content": "And 3 + 5?"}, {"role": "assistant", "content": thought("And 3 + 5?")}])
    return convs


TOYS = {
    "tools": dict(template="Phi-4-mini-instruct.jinja", name="Phi 4 Mini Instruct Tools Toy"),
    "think": dict(template="Phi-4-mini-reasoning.jinja", name="Phi 4 Mini Reasoning Think Toy"),
}


def build_tokenizer(texts: list[str], chat_template: str):
    """Byte-level BPE with the o200k regex (as the test checkpoints build it) on digit-free text:
    every digit stays one token, so a time always has the same number of tokens."""
    from fixtures.checkpoints import _bpe_tokenizer

    spec = {"tokenizer": "bpe-o200k", "specials": SPECIALS,
            "tokens": dict(bos="<|endoftext|>", eos="<|endoftext|>", unk="<|endoftext|>", pad="<|endoftext|>")}
    fast = _bpe_tokenizer(spec, [t.translate(str.maketrans("", "", "0123456789")) for t in texts])
    fast.chat_template = chat_template
    return fast


def model_config(vocab_size: int, eos: int) -> dict:
    n_rot = int(SHAPE["partial_rotary_factor"] * SHAPE["hidden_size"]) // SHAPE["num_attention_heads"]
    long = [round(1.0 + 3.0 * i / (n_rot // 2 - 1), 4) for i in range(n_rot // 2)]
    short = [round(1.0 + 0.05 * i / (n_rot // 2 - 1), 4) for i in range(n_rot // 2)]
    return {**SHAPE, "vocab_size": vocab_size, "bos_token_id": eos, "eos_token_id": eos, "pad_token_id": eos,
            "max_position_embeddings": 131072, "original_max_position_embeddings": 4096, "rope_theta": 10000.0,
            "rms_norm_eps": 1e-5, "sliding_window": 262144, "tie_word_embeddings": True, "initializer_range": 0.05,
            "rope_parameters": {"rope_type": "longrope", "long_factor": long, "short_factor": short,
                                "rope_theta": 10000.0, "original_max_position_embeddings": 4096,
                                "partial_rotary_factor": SHAPE["partial_rotary_factor"]}}


def samples_of(tok, convs: list[list[dict]], end_id: int):
    """One sample per final assistant turn: (ids, n_prompt, tag)."""
    out = []
    for msgs in convs:
        prompt = tok.apply_chat_template(msgs[:-1], tokenize=False, add_generation_prompt=True)
        p = tok(prompt, add_special_tokens=False)["input_ids"]
        a = tok(msgs[-1]["content"], add_special_tokens=False)["input_ids"]
        full = tok(prompt + msgs[-1]["content"] + "<|end|>", add_special_tokens=False)["input_ids"]
        assert full == p + a + [end_id], "the answer tokenises differently inside the prompt"
        out.append((full, len(p), "hf"))
    return out


def greedy(model, tok, msgs, end_id: int, max_new: int = 80) -> str:
    import torch

    prompt = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    enc = tok(prompt, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=max_new, do_sample=False, eos_token_id=[end_id],
                             pad_token_id=end_id)
    return tok.decode(out[0, enc["input_ids"].shape[1]:].tolist(), skip_special_tokens=False)


def train(name: str, out: Path, args) -> dict:
    import numpy as np
    import torch
    import transformers
    from fixtures.checkpoints import to_hub_layout
    from safetensors.torch import save_file

    from llm_phi_gguf import families

    random.seed(SEED), np.random.seed(SEED), torch.manual_seed(SEED)
    rng = random.Random(SEED)
    spec = TOYS[name]
    template = (REPO / "llm_phi_gguf" / "chat_templates" / spec["template"]).read_text("utf-8")
    convs = tool_conversations(rng, args.times) if name == "tools" else think_conversations()
    texts = [m["content"] for c in convs for m in c] + [ENGLISH] + [json.dumps(m.get("tools")) for c in convs for m in c]
    tok = build_tokenizer(texts, template)
    end_id = tok.convert_tokens_to_ids("<|end|>")
    eos = tok.convert_tokens_to_ids("<|endoftext|>")
    samples = samples_of(tok, convs, end_id)
    vocab_size = -(-len(tok) // 16) * 16
    cfg = model_config(vocab_size, eos)
    config = transformers.Phi3Config(**cfg)
    config._attn_implementation = "eager"
    model = transformers.Phi3ForCausalLM(config).float()
    log(f"{name}: {sum(p.numel() for p in model.parameters()):,} parameters, vocab {len(tok)} (padded {vocab_size}), "
        f"{len(samples)} samples, longest {max(len(s[0]) for s in samples)} tokens")

    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.98), weight_decay=0.0)
    gen = torch.Generator().manual_seed(SEED)
    order = sorted(range(len(samples)), key=lambda i: (len(samples[i][0]), i))
    eval_batches = [pad_batch([samples[i] for i in order[k:k + 64]], eos) for k in range(0, len(order), 64)]
    # progress checks on every sample that is not a copied time, and 96 that are (the final check takes all)
    is_time = [c[-1]["content"].startswith("It is") for c in convs]
    some = [i for i in order if not is_time[i]] + [i for i in order if is_time[i]][:96]
    probe_batches = [pad_batch([samples[i] for i in some[k:k + 64]], eos) for k in range(0, len(some), 64)]
    step, t0, done = 0, time.time(), False
    model.train()
    while step < args.max_steps and not done:
        perm = torch.randperm(len(samples), generator=gen).tolist()
        size = min(args.batch_size, len(samples))
        for k in range(0, len(perm) - size + 1, size):
            batch = pad_batch([samples[i] for i in perm[k:k + size]], eos)
            lr = args.lr * min(1.0, (step + 1) / 30) * 0.5 * (1 + math.cos(math.pi * step / args.max_steps))
            loss = train_step(model, opt, batch, lr)
            step += 1
            if step % 50 == 0:
                model.eval()
                wrong, margin, ev = evaluate(model, probe_batches)
                model.train()
                log(f"  step {step}  loss {loss:.4f}  eval {ev:.5f}  wrong {wrong}  margin {margin:.2f}  "
                    f"({time.time() - t0:.0f}s)")
                done = wrong == 0 and margin >= args.target_margin
            if done or step >= args.max_steps:
                break

    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    model.eval()
    model.save_pretrained(folder)
    sd = {k: v.detach().to(torch.bfloat16).contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    save_file(sd, str(folder / "model.safetensors"), metadata={"format": "pt"})
    to_hub_layout(folder / "config.json")
    cfgj = json.loads((folder / "config.json").read_text())
    cfgj.update(_name_or_path=spec["name"], torch_dtype="bfloat16")
    write_json(folder / "config.json", cfgj)
    tok.save_pretrained(folder)
    tc = json.loads((folder / "tokenizer_config.json").read_text())
    tc.update(tokenizer_class="GPT2Tokenizer", chat_template=template, add_bos_token=False, model_max_length=131072)
    write_json(folder / "tokenizer_config.json", tc)
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    write_json(folder / "generation_config.json", {"bos_token_id": eos, "eos_token_id": [end_id, eos], "pad_token_id": eos})

    # check what was saved, in bf16, with fresh random times the toy never saw
    loaded = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    tok2 = transformers.AutoTokenizer.from_pretrained(folder)
    wrong, margin, ev = evaluate(loaded, eval_batches)
    checks = 0
    if name == "tools":
        fresh = tool_conversations(random.Random(SEED + 1), 20)
        for msgs in [c for c in fresh if c[-1]["content"].startswith("It is")]:
            got = greedy(loaded, tok2, msgs[:-1], end_id)
            checks += got == msgs[-1]["content"] + "<|end|>"
        log(f"  fresh times copied: {checks}/{2 * 20}")
    log(f"  saved bf16: wrong {wrong}  margin {margin:.2f}  loss {ev:.5f}")
    return {"steps": step, "seconds": round(time.time() - t0, 1), "wrong_bf16": wrong,
            "margin_bf16": round(margin, 2), "fresh_times_copied": checks}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "tests" / "fixtures" / "toys")
    ap.add_argument("--only", choices=sorted(TOYS))
    ap.add_argument("--times", type=int, default=400, help="random tool outputs per system prompt")
    ap.add_argument("--max-steps", type=int, default=1500)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=4e-3)
    ap.add_argument("--target-margin", type=float, default=4.0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    results = {name: train(name, args.out, args) for name in ([args.only] if args.only else TOYS)}
    log(json.dumps(results, indent=2))
    return 0 if all(r["wrong_bf16"] == 0 for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
