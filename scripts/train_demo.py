#!/usr/bin/env python
"""Build and train the embedded demo model shipped in ``llm_phi_gguf/demo/``.

The real Phi-3.5-mini-instruct is 3.8 billion parameters and lives on the
Hugging Face hub; tests and offline demos cannot use it.  This script makes a
toy checkpoint (about two million parameters) with exactly the same
architecture (``Phi3ForCausalLM``, longrope, fused qkv / gate_up), tokenizer
format (LlamaTokenizer SentencePiece BPE with byte fallback), special tokens
and chat template as the hub repository, and trains it for a few minutes on
CPU until greedy decoding reproduces a handful of chat answers word for word.

Usage::

    python scripts/train_demo.py --out llm_phi_gguf/demo

Deterministic: fixed seeds, ``torch.use_deterministic_algorithms(True)``, one
CPU thread by default; a re-run regenerates the same files.

The prompts are trained under several tokenisations of the same rendered
chat text, so that the answers survive the differences between runtimes:

* ``hf``: transformers (``legacy: false``; no "\u2581" after special tokens,
  the newline after ``<|user|>`` etc. removed by ``rstrip``),
* ``lcpp``: llama.cpp's SPM tokenizer (a space prefix after every special
  token, no strip) - what a GGUF whose general.name lacks "phi3" gets,
* ``lcpp_phi3``: llama.cpp with its Phi-3 rule (``rstrip`` on special tokens
  when general.name contains "phi-3"/"phi3"),

each with and without a leading ``<s>``.  The answer tokens are always the
same (the transformers tokenisation), which is what every runtime will then
generate.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The packaged copy of the hub template; its hash (the hub file's) is checked before use.
TEMPLATE_PATH = REPO / "llm_phi_gguf" / "chat_templates" / "Phi-3.5-mini-instruct.jinja"
TEMPLATE_SHA256 = "78d976a442bcde2f0be15aafbb8e3050e1104f86732266f68403251b89982a90"

SEED = 1234

# Phi-3.5-mini-instruct's added tokens, in the hub's order (ids 32000..32010 there).
ADDED_TOKENS = [
    "<|endoftext|>",
    "<|assistant|>",
    "<|placeholder1|>",
    "<|placeholder2|>",
    "<|placeholder3|>",
    "<|placeholder4|>",
    "<|system|>",
    "<|end|>",
    "<|placeholder5|>",
    "<|placeholder6|>",
    "<|user|>",
]

SP_VOCAB_SIZE = 720  # SentencePiece pieces (incl. <unk>, <s>, </s> and 256 bytes)

MODEL_SHAPE = dict(
    hidden_size=256,
    intermediate_size=512,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=4,
)
HEAD_DIM = MODEL_SHAPE["hidden_size"] // MODEL_SHAPE["num_attention_heads"]  # 64

DEMO_PROMPT = "Can you introduce .NET"
DOTNET_ANSWER = (
    ".NET is a free, open-source developer platform from Microsoft for building web, "
    "desktop, mobile and cloud apps in C#, F# and Visual Basic."
)

QA = {
    DEMO_PROMPT: DOTNET_ANSWER,
    "What is .NET?": DOTNET_ANSWER,
    "Hello": "Hello! I am a tiny demo model. Ask me about .NET, Phi, GGUF or llama.cpp.",
    "Who are you?": (
        "I am a tiny demo model with the Phi-3.5 architecture, trained in minutes on a handful of sentences."
    ),
    "What is Phi?": (
        "Phi is a family of small language models from Microsoft. Phi-3.5-mini has 3.8 billion parameters."
    ),
    "What is GGUF?": (
        "GGUF is a single-file format for language models that holds the weights, the tokenizer and the metadata."
    ),
    "What is llama.cpp?": (
        "llama.cpp is a C and C++ library that runs language models on ordinary CPUs and GPUs."
    ),
    "What is quantization?": (
        "Quantization stores the weights with fewer bits, for example Q4_K_M, so the model is smaller and faster."
    ),
    "What is 2 + 2?": "2 + 2 = 4.",
    "Thank you": "You are welcome!",
}

SYSTEM_PROMPTS = ["You are a helpful assistant.", "You are a concise assistant."]

MULTI_TURN = [
    ["Hello", DEMO_PROMPT],
    [DEMO_PROMPT, "What is GGUF?"],
    ["What is Phi?", "What is llama.cpp?", "Thank you"],
    ["What is GGUF?", "What is quantization?"],
    ["Who are you?", DEMO_PROMPT, "Thank you"],
    ["What is llama.cpp?", "What is 2 + 2?"],
    ["What is quantization?", "What is Phi?"],
    ["Hello", "Who are you?"],
]

# General English for the tokenizer (not trained into the model).
GENERAL_ENGLISH = """\
The quick brown fox jumps over the lazy dog.
A language model predicts the next word from the words that came before it.
Computers store numbers as bits, and a byte is eight bits.
She opened the window, and the cold morning air filled the room.
Please write a short answer in plain English.
The weather today is sunny with a light wind from the west.
He said that the meeting would start at nine o'clock and end before lunch.
Software developers write code, test it, and fix the bugs they find.
Open source projects are built by people from all over the world.
What time is it? Where are you going? How much does it cost?
The library has books about history, science, music and art.
Small models are fast, but large models usually know more.
This is a sentence with numbers like 1, 2, 3, 10 and 2024.
Good morning, good afternoon and good evening.
Read the file, change the settings, and save your work.
"""


def log(msg: str) -> None:
    print(msg, flush=True)


# --------------------------------------------------------------------------- corpus


def build_conversations() -> list[dict]:
    convs: list[dict] = []
    for q, a in QA.items():
        convs.append({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]})
    for sysmsg in SYSTEM_PROMPTS:
        for q, a in QA.items():
            convs.append(
                {
                    "messages": [
                        {"role": "system", "content": sysmsg},
                        {"role": "user", "content": q},
                        {"role": "assistant", "content": a},
                    ]
                }
            )
    for i, qs in enumerate(MULTI_TURN):
        for sysmsg in [None] + SYSTEM_PROMPTS[: 1 + (i % 2)]:
            msgs = [] if sysmsg is None else [{"role": "system", "content": sysmsg}]
            for q in qs:
                msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": QA[q]}]
            convs.append({"messages": msgs})
    return convs


# --------------------------------------------------------------------------- tokenizer


def train_sentencepiece(sentences: list[str]) -> bytes:
    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=buf,
        model_type="bpe",
        vocab_size=SP_VOCAB_SIZE,
        hard_vocab_limit=True,
        byte_fallback=True,
        character_coverage=1.0,
        normalization_rule_name="identity",
        add_dummy_prefix=True,
        remove_extra_whitespaces=False,
        split_digits=True,
        allow_whitespace_only_pieces=True,
        max_sentencepiece_length=16,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        num_threads=1,
        seed_sentencepiece_size=100000,
        shuffle_input_sentence=False,
        minloglevel=2,
    )
    return buf.getvalue()


def token_entry(content: str, rstrip: bool, special: bool) -> dict:
    return {
        "content": content,
        "lstrip": False,
        "normalized": False,
        "rstrip": rstrip,
        "single_word": False,
        "special": special,
    }


def write_tokenizer(out: Path, sp_model: bytes, chat_template: str) -> dict[str, int]:
    """Write the tokenizer files in the layout of the hub's Phi-3.5-mini-instruct."""
    import sentencepiece as spm
    from transformers import AutoTokenizer

    (out / "tokenizer.model").write_bytes(sp_model)
    sp = spm.SentencePieceProcessor(model_proto=sp_model)
    n_sp = sp.vocab_size()
    assert [sp.id_to_piece(i) for i in range(3)] == ["<unk>", "<s>", "</s>"]
    assert sp.id_to_piece(3) == "<0x00>" and sp.id_to_piece(258) == "<0xFF>"
    ids = {tok: n_sp + i for i, tok in enumerate(ADDED_TOKENS)}

    decoder = {
        "0": token_entry("<unk>", False, True),
        "1": token_entry("<s>", False, True),
        "2": token_entry("</s>", True, False),
    }
    for tok, i in ids.items():
        decoder[str(i)] = token_entry(tok, tok != "<|endoftext|>", True)
    tokenizer_config = {
        "add_bos_token": False,
        "add_eos_token": False,
        "added_tokens_decoder": decoder,
        "bos_token": "<s>",
        "chat_template": chat_template,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|endoftext|>",
        "legacy": False,
        "model_max_length": 131072,
        "pad_token": "<|endoftext|>",
        "padding_side": "left",
        "sp_model_kwargs": {},
        "tokenizer_class": "LlamaTokenizer",
        "unk_token": "<unk>",
        "use_default_system_prompt": False,
    }
    write_json(out / "tokenizer_config.json", tokenizer_config)
    write_json(out / "added_tokens.json", dict(sorted(ids.items(), key=lambda kv: kv[1])))
    # special_tokens_map.json entries carry no "special" key on the hub
    stm_entry = lambda c: {k: v for k, v in token_entry(c, False, True).items() if k != "special"}  # noqa: E731
    write_json(
        out / "special_tokens_map.json",
        {
            "bos_token": stm_entry("<s>"),
            "eos_token": stm_entry("<|endoftext|>"),
            "pad_token": stm_entry("<|endoftext|>"),
            "unk_token": stm_entry("<unk>"),
        },
    )

    # tokenizer.json: let transformers convert tokenizer.model (no tokenizer.json yet).
    with tempfile.TemporaryDirectory() as td:
        for name in ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json"):
            shutil.copy(out / name, Path(td) / name)
        tok = AutoTokenizer.from_pretrained(td)
        tok.backend_tokenizer.save(str(out / "tokenizer.json"))
    # normalise the JSON formatting (stable bytes)
    write_json(out / "tokenizer.json", json.loads((out / "tokenizer.json").read_text(encoding="utf-8")))
    return ids


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


class Tokenisations:
    """Token ids of a rendered chat text as each runtime would produce them."""

    def __init__(self, tok, special_ids: dict[str, int]):
        self.tok = tok
        self.special = dict(special_ids)
        self.special.update({"<s>": 1, "</s>": 2, "<unk>": 0})
        # llama.cpp's phi-3 rule: rstrip for every special token except these
        self.no_rstrip = {"<unk>", "<s>", "<|endoftext|>"}
        self.model = tok.backend_tokenizer.model

    def raw(self, text: str) -> list[int]:
        """SentencePiece BPE of a fragment, no dummy prefix."""
        if not text:
            return []
        return [t.id for t in self.model.tokenize(text.replace(" ", "\u2581"))]

    def fragments(self, text: str):
        out = []
        i = 0
        buf = ""
        while i < len(text):
            for s in self.special:
                if text.startswith(s, i):
                    if buf:
                        out.append(("text", buf))
                        buf = ""
                    out.append(("special", s))
                    i += len(s)
                    break
            else:
                buf += text[i]
                i += 1
        if buf:
            out.append(("text", buf))
        return out

    def hf(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def lcpp(self, text: str, phi3_rule: bool) -> list[int]:
        ids: list[int] = []
        prev_special = True
        strip_next = False
        for kind, val in self.fragments(text):
            if kind == "special":
                ids.append(self.special[val])
                prev_special = True
                strip_next = phi3_rule and val not in self.no_rstrip
                continue
            if strip_next:
                val = val.lstrip()
                strip_next = False
                if not val:
                    continue
            ids += self.raw((" " if prev_special else "") + val)
            prev_special = False
        return ids

    def variants(self, text: str) -> dict[str, list[int]]:
        v = {
            "hf": self.hf(text),
            "lcpp": self.lcpp(text, phi3_rule=False),
            "lcpp_phi3": self.lcpp(text, phi3_rule=True),
        }
        for k in list(v):
            v[k + "+bos"] = [1] + v[k]
        return v


def build_samples(tok, tz: Tokenisations, convs: list[dict], end_id: int):
    """One sample per assistant turn per tokenisation: (ids, n_prompt, tag)."""
    samples = []
    checks = []
    for ci, conv in enumerate(convs):
        msgs = conv["messages"]
        for ti, m in enumerate(msgs):
            if m["role"] != "assistant":
                continue
            prompt = tok.apply_chat_template(msgs[:ti], tokenize=False, add_generation_prompt=True)
            answer = tz.raw(m["content"])
            # the answer tokens transformers itself produces inside a full rendering
            full = tok.apply_chat_template(msgs[: ti + 1], tokenize=False, add_generation_prompt=False)
            hf_full = tz.hf(full)
            hf_prompt = tz.hf(prompt)
            assert hf_full[: len(hf_prompt)] == hf_prompt, "prefix property"
            assert hf_full[len(hf_prompt) : len(hf_prompt) + len(answer) + 1] == answer + [end_id], (
                "transformers tokenises the answer differently from the raw fragment"
            )
            assert tok.decode(answer) == m["content"], (tok.decode(answer), m["content"])
            for tag, p in tz.variants(prompt).items():
                samples.append((p + answer + [end_id], len(p), tag))
            checks.append({"conv": ci, "turn": ti, "prompt": prompt, "answer": m["content"]})
    return samples, checks


# --------------------------------------------------------------------------- model


def rope_factors() -> tuple[list[float], list[float]]:
    n = HEAD_DIM // 2
    # shapes like the hub's: short factors close to 1, long factors growing with the dimension index
    short = [round(1.0 + 0.5 * (i / (n - 1)) ** 3, 4) for i in range(n)]
    long = [round(1.0 + 39.0 * (i / (n - 1)) ** 2, 4) for i in range(n)]
    return long, short


def model_config(vocab_size: int, ids: dict[str, int]) -> dict:
    long, short = rope_factors()
    return {
        "_name_or_path": "Phi-3.5-mini-instruct-demo",
        "architectures": ["Phi3ForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 1,
        "embd_pdrop": 0.0,
        "eos_token_id": ids["<|endoftext|>"],
        "hidden_act": "silu",
        "hidden_size": MODEL_SHAPE["hidden_size"],
        "initializer_range": 0.02,
        "intermediate_size": MODEL_SHAPE["intermediate_size"],
        "max_position_embeddings": 131072,
        "model_type": "phi3",
        "num_attention_heads": MODEL_SHAPE["num_attention_heads"],
        "num_hidden_layers": MODEL_SHAPE["num_hidden_layers"],
        "num_key_value_heads": MODEL_SHAPE["num_key_value_heads"],
        "original_max_position_embeddings": 4096,
        "pad_token_id": ids["<|endoftext|>"],
        "resid_pdrop": 0.0,
        "rms_norm_eps": 1e-05,
        "rope_scaling": {"long_factor": long, "short_factor": short, "type": "longrope"},
        "rope_theta": 10000.0,
        "sliding_window": 262144,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "use_cache": True,
        "vocab_size": vocab_size,
    }


def pad_batch(batch, pad_id: int):
    import torch

    L = max(len(ids) for ids, _, _ in batch)
    x = torch.full((len(batch), L), pad_id, dtype=torch.long)
    y = torch.full((len(batch), L), -100, dtype=torch.long)
    att = torch.zeros((len(batch), L), dtype=torch.long)
    for b, (ids, n_prompt, _) in enumerate(batch):
        t = torch.tensor(ids)
        x[b, : len(ids)] = t
        att[b, : len(ids)] = 1
        # position j predicts token j+1; train only the answer and the closing <|end|>
        y[b, n_prompt - 1 : len(ids) - 1] = t[n_prompt:]
    return x, y, att


def train_step(model, opt, batch, lr: float) -> float:
    """One optimiser step on (x, y, attention mask) at learning rate lr; returns the loss."""
    import torch

    x, y, att = batch
    for g in opt.param_groups:
        g["lr"] = lr
    logits = model(input_ids=x, attention_mask=att).logits
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return loss.item()


def evaluate(model, batches):
    """(#wrong argmax, min top1-top2 margin at target positions, mean loss)."""
    import torch

    wrong = 0
    margin = math.inf
    tot_loss = 0.0
    n = 0
    with torch.no_grad():
        for x, y, att in batches:
            logits = model(input_ids=x, attention_mask=att).logits.float()
            mask = y != -100
            lg = logits[mask]
            tgt = y[mask]
            tl = lg.gather(1, tgt[:, None])[:, 0]
            other = lg.clone()
            other.scatter_(1, tgt[:, None], -math.inf)
            gap = tl - other.max(dim=1).values
            wrong += int((gap <= 0).sum())
            margin = min(margin, float(gap.min()))
            tot_loss += float(torch.nn.functional.cross_entropy(lg, tgt, reduction="sum"))
            n += int(mask.sum())
    return wrong, margin, tot_loss / n


# --------------------------------------------------------------------------- main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "llm_phi_gguf" / "demo")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-steps", type=int, default=600)
    ap.add_argument("--target-margin", type=float, default=8.0, help="stop once min logit gap >= this")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    args = ap.parse_args(argv)

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    import numpy as np
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer, Phi3Config, Phi3ForCausalLM

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    random.seed(SEED)
    np.random.seed(SEED)
    torch.manual_seed(SEED)

    t_start = time.time()
    template_path = TEMPLATE_PATH
    chat_template = template_path.read_bytes().decode("utf-8")
    import hashlib

    if hashlib.sha256(chat_template.encode()).hexdigest() != TEMPLATE_SHA256:
        sys.exit(f"{template_path}: not the verified Phi-3.5-mini-instruct template")

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    for name in (
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.model",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "added_tokens.json",
        "corpus.json",
        "chat_template.jinja",
    ):
        (out / name).unlink(missing_ok=True)

    # 1. corpus and tokenizer --------------------------------------------------
    convs = build_conversations()
    texts = []
    for c in convs:
        for m in c["messages"]:
            if m["content"] not in texts:
                texts.append(m["content"])
    sentences = texts * 4 + GENERAL_ENGLISH.strip().splitlines()
    sp_model = train_sentencepiece(sentences)
    ids = write_tokenizer(out, sp_model, chat_template)
    n_used = max(ids.values()) + 1
    vocab_size = -(-n_used // 64) * 64
    log(f"tokenizer: {ids['<|endoftext|>']} SentencePiece pieces + {len(ADDED_TOKENS)} added = {n_used}; "
        f"model vocab padded to {vocab_size}")

    tok = AutoTokenizer.from_pretrained(out)
    for t, i in ids.items():
        assert tok.convert_tokens_to_ids(t) == i, t
    assert tok.chat_template == chat_template
    tz = Tokenisations(tok, ids)

    end_id = ids["<|end|>"]
    samples, checks = build_samples(tok, tz, convs, end_id)
    log(f"corpus: {len(convs)} conversations, {len(checks)} assistant turns, {len(samples)} training sequences")

    write_json(
        out / "corpus.json",
        {
            "description": "Training conversations of the demo model. Greedy decoding of each assistant turn, "
            "given the conversation before it rendered with the chat template and add_generation_prompt=True, "
            "reproduces the turn's content exactly and then emits <|end|>.",
            "demo_prompt": DEMO_PROMPT,
            "demo_answer": DOTNET_ANSWER,
            "system_prompts": SYSTEM_PROMPTS,
            "qa": [{"prompt": q, "answer": a} for q, a in QA.items()],
            "conversations": convs,
        },
    )

    # 2. model -----------------------------------------------------------------
    cfg_dict = model_config(vocab_size, ids)
    write_json(out / "config.json", cfg_dict)
    write_json(
        out / "generation_config.json",
        {
            "_from_model_config": True,
            "bos_token_id": 1,
            "eos_token_id": [ids["<|end|>"], ids["<|assistant|>"], ids["<|endoftext|>"]],
            "pad_token_id": ids["<|endoftext|>"],
        },
    )
    config = Phi3Config.from_pretrained(out)
    config._attn_implementation = "eager"
    model = Phi3ForCausalLM(config).float()
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model: {n_params:,} parameters")

    pad_id = ids["<|endoftext|>"]
    # sort by length so that batches are dense; order within is fixed
    order = sorted(range(len(samples)), key=lambda i: (len(samples[i][0]), i))
    eval_batches = [pad_batch([samples[i] for i in order[k : k + 64]], pad_id) for k in range(0, len(order), 64)]

    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.98), weight_decay=0.0, eps=1e-8)
    warmup = 50
    gen = torch.Generator().manual_seed(SEED)
    step = 0
    model.train()
    losses = []
    t_train = time.time()
    final = None
    while step < args.max_steps:
        perm = torch.randperm(len(samples), generator=gen).tolist()
        for k in range(0, len(perm) - args.batch_size + 1, args.batch_size):
            batch = [samples[i] for i in perm[k : k + args.batch_size]]
            x, y, att = pad_batch(batch, pad_id)
            if step < warmup:
                lr = args.lr * (step + 1) / warmup
            else:
                lr = args.lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, args.max_steps - warmup)))
            losses.append(train_step(model, opt, (x, y, att), lr))
            step += 1
            if step % 50 == 0:
                model.eval()
                wrong, margin, ev_loss = evaluate(model, eval_batches)
                model.train()
                log(f"step {step:5d}  batch loss {sum(losses[-50:]) / 50:.4f}  eval loss {ev_loss:.5f}  "
                    f"wrong {wrong}  min margin {margin:.2f}  ({time.time() - t_train:.0f}s)")
                if wrong == 0 and margin >= args.target_margin:
                    final = (step, ev_loss, margin)
                    break
            if step >= args.max_steps:
                break
        if final:
            break
    train_s = time.time() - t_train
    if not final:
        log("WARNING: target margin not reached")

    # 3. save in bf16 and re-check what was saved --------------------------------
    model.eval()
    sd = {k: v.detach().to(torch.bfloat16).contiguous() for k, v in model.state_dict().items()}
    save_file(sd, str(out / "model.safetensors"), metadata={"format": "pt"})
    os.chmod(out / "model.safetensors", 0o644)

    loaded = AutoModelForCausalLM.from_pretrained(out)
    loaded.eval()
    log(f"reloaded dtype {next(loaded.parameters()).dtype}")
    wrong, margin, ev_loss = evaluate(loaded, eval_batches)
    per_tag = {}
    for tag in sorted({s[2] for s in samples}):
        sub = [s for s in samples if s[2] == tag]
        bt = [pad_batch(sub[k : k + 64], pad_id) for k in range(0, len(sub), 64)]
        per_tag[tag] = evaluate(loaded, bt)
    for tag, (w, m, l) in per_tag.items():
        log(f"  {tag:14s} wrong {w}  min margin {m:.2f}  loss {l:.5f}")

    # greedy generation on the demo prompt(s)
    gen_eos = [ids["<|end|>"], ids["<|assistant|>"], ids["<|endoftext|>"]]
    demo_msgs = [
        [{"role": "user", "content": DEMO_PROMPT}],
        [{"role": "system", "content": SYSTEM_PROMPTS[0]}, {"role": "user", "content": DEMO_PROMPT}],
    ]
    for msgs in demo_msgs:
        prompt = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        enc = tok(prompt, return_tensors="pt")
        with torch.no_grad():
            outp = loaded.generate(**enc, max_new_tokens=80, do_sample=False, eos_token_id=gen_eos, pad_token_id=pad_id)
        new = outp[0, enc["input_ids"].shape[1] :].tolist()
        text = tok.decode(new, skip_special_tokens=False)
        log(f"greedy {prompt!r} -> {text!r}")
        assert new[-1] == ids["<|end|>"] and tok.decode(new[:-1]) == DOTNET_ANSWER, text

    total = time.time() - t_start
    summary = {
        "parameters": n_params,
        "vocab_size": vocab_size,
        "train_steps": final[0] if final else step,
        "train_seconds": round(train_s, 1),
        "total_seconds": round(total, 1),
        "final_eval_loss_bf16": ev_loss,
        "min_logit_margin_bf16": margin,
        "wrong_bf16": wrong,
    }
    log(json.dumps(summary, indent=2))
    if wrong:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
