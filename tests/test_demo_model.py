"""The embedded demo model (llm_phi_gguf/demo) loads with transformers and says what it was trained to say."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "llm_phi_gguf" / "demo"
REFERENCE = REPO / "tests" / "fixtures" / "reference" / "chat-templates"
REFERENCE_TEMPLATE = REFERENCE / "Phi-3.5-mini-instruct.jinja"

# Phi-3.5-mini-instruct's added tokens in hub id order (32000..32010), from the vendored facts.
_FACTS = json.loads((REFERENCE / "families.json").read_text())
PHI35_ADDED = [
    token for token, i in sorted(
        _FACTS["families"]["Phi-3.5-mini-instruct"]["special_chat_tokens"]["value"].items(), key=lambda kv: kv[1]
    ) if i >= 32000
]


@pytest.fixture(scope="module")
def corpus():
    return json.loads((DEMO / "corpus.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(DEMO)


@pytest.fixture(scope="module")
def model():
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    m = AutoModelForCausalLM.from_pretrained(DEMO)
    m.eval()
    return m


def test_files_present_and_small():
    names = {
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.model",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "added_tokens.json",
        "corpus.json",
        "README.md",
    }
    present = {p.name for p in DEMO.iterdir()}
    assert names <= present, names - present
    assert not any(n.endswith((".bin", ".pt", ".pth")) for n in present)
    total = sum(p.stat().st_size for p in DEMO.iterdir() if p.is_file())
    assert total < 8 * 1024 * 1024, total


def test_config_is_phi35_layout():
    cfg = json.loads((DEMO / "config.json").read_text())
    assert cfg["architectures"] == ["Phi3ForCausalLM"]
    assert cfg["model_type"] == "phi3"
    assert cfg["rope_scaling"]["type"] == "longrope"
    head_dim = cfg["hidden_size"] // cfg["num_attention_heads"]
    assert head_dim == 64
    assert len(cfg["rope_scaling"]["long_factor"]) == len(cfg["rope_scaling"]["short_factor"]) == head_dim // 2
    assert cfg["max_position_embeddings"] == 131072
    assert cfg["original_max_position_embeddings"] == 4096
    assert cfg["num_attention_heads"] == cfg["num_key_value_heads"]
    assert cfg["hidden_size"] % 256 == 0 and cfg["intermediate_size"] % 256 == 0
    assert cfg["vocab_size"] % 64 == 0
    assert cfg["tie_word_embeddings"] is False


def test_chat_template_byte_identical_to_reference():
    cfg = json.loads((DEMO / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert cfg["chat_template"].encode("utf-8") == REFERENCE_TEMPLATE.read_bytes()


def test_special_tokens(tokenizer):
    cfg = json.loads((DEMO / "config.json").read_text())
    gen = json.loads((DEMO / "generation_config.json").read_text())
    tc = json.loads((DEMO / "tokenizer_config.json").read_text())
    first = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert [tokenizer.convert_tokens_to_ids(t) for t in PHI35_ADDED] == list(range(first, first + len(PHI35_ADDED)))
    assert first + len(PHI35_ADDED) <= cfg["vocab_size"]
    assert tokenizer.convert_tokens_to_ids(["<unk>", "<s>", "</s>"]) == [0, 1, 2]
    assert tokenizer.eos_token == "<|endoftext|>" and tokenizer.bos_token == "<s>"
    assert tc["add_bos_token"] is False
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in PHI35_ADDED}
    assert gen["eos_token_id"] == [ids["<|end|>"], ids["<|assistant|>"], ids["<|endoftext|>"]]
    assert cfg["eos_token_id"] == ids["<|endoftext|>"]
    assert json.loads((DEMO / "added_tokens.json").read_text()) == ids


def _assistant_turns(corpus):
    for conv in corpus["conversations"]:
        msgs = conv["messages"]
        for i, m in enumerate(msgs):
            if m["role"] == "assistant":
                yield msgs[:i], m["content"]


def test_every_corpus_answer_is_the_greedy_answer(corpus, tokenizer, model):
    """Teacher-forced argmax == the answer at every position, i.e. greedy decoding reproduces it."""
    end_id = tokenizer.convert_tokens_to_ids("<|end|>")
    failures = []
    for history, answer in _assistant_turns(corpus):
        prompt = tokenizer.apply_chat_template(history, tokenize=False, add_generation_prompt=True)
        p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        full = tokenizer.apply_chat_template(
            history + [{"role": "assistant", "content": answer}], tokenize=False, add_generation_prompt=False
        )
        f_ids = tokenizer(full, add_special_tokens=False)["input_ids"]
        assert f_ids[: len(p_ids)] == p_ids
        target = f_ids[len(p_ids) :]
        n = target.index(end_id) + 1  # answer tokens and the closing <|end|>
        target = target[:n]
        assert tokenizer.decode(target[:-1]) == answer
        with torch.no_grad():
            logits = model(torch.tensor([p_ids + target[:-1]])).logits[0]
        pred = logits[len(p_ids) - 1 :].argmax(-1).tolist()
        if pred != target:
            failures.append((history[-1]["content"], tokenizer.decode(pred)))
    assert not failures, failures


@pytest.mark.parametrize("system", [None, "You are a helpful assistant."])
def test_demo_prompt_generate(corpus, tokenizer, model, system):
    msgs = [] if system is None else [{"role": "system", "content": system}]
    msgs.append({"role": "user", "content": corpus["demo_prompt"]})
    prompt = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    if system is None:
        assert prompt == "<|user|>\nCan you introduce .NET<|end|>\n<|assistant|>\n"
    enc = tokenizer(prompt, return_tensors="pt")
    gen = json.loads((DEMO / "generation_config.json").read_text())
    with torch.no_grad():
        out = model.generate(
            **enc,
            max_new_tokens=80,
            do_sample=False,
            eos_token_id=gen["eos_token_id"],
            pad_token_id=tokenizer.pad_token_id,
        )
    new = out[0, enc["input_ids"].shape[1] :].tolist()
    assert new[-1] == tokenizer.convert_tokens_to_ids("<|end|>")
    answer = tokenizer.decode(new, skip_special_tokens=True)
    assert answer == corpus["demo_answer"]
    assert answer.startswith(".NET is")


def test_second_turn(corpus, tokenizer, model):
    qa = {x["prompt"]: x["answer"] for x in corpus["qa"]}
    msgs = [
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": qa["Hello"]},
        {"role": "user", "content": corpus["demo_prompt"]},
    ]
    enc = tokenizer.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(
            **enc,
            max_new_tokens=80,
            do_sample=False,
            eos_token_id=tokenizer.convert_tokens_to_ids("<|end|>"),
            pad_token_id=tokenizer.pad_token_id,
        )
    new = out[0, enc["input_ids"].shape[1] :]
    assert tokenizer.decode(new, skip_special_tokens=True) == corpus["demo_answer"]
