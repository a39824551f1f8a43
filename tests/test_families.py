"""Family detection from GGUF metadata as real Phi GGUFs carry it (values from llama.cpp's
converter facts and the models' hub templates, vendored in tests/fixtures/reference/)."""

from pathlib import Path

import pytest

from llm_phi_gguf import families

REFERENCE = Path(__file__).resolve().parent / "fixtures" / "reference" / "chat-templates"


def meta(arch, vocab, n_embd, n_ctx, name, template=None, pre=None):
    m = {
        "general.architecture": arch,
        "tokenizer.ggml.model": vocab,
        f"{arch}.embedding_length": n_embd,
        f"{arch}.context_length": n_ctx,
        "general.name": name,
    }
    if template:
        m["tokenizer.chat_template"] = (REFERENCE / template).read_text()
    if pre:
        m["tokenizer.ggml.pre"] = pre
    return m


REAL = {
    "phi-2": meta("phi2", "gpt2", 2560, 2048, "Phi 2", pre="phi-2"),
    "phi-3": meta("phi3", "llama", 3072, 4096, "Phi 3 Mini 4k Instruct", "Phi-3-mini-4k-instruct-rev2.jinja", "default"),
    "phi-3-128k": meta("phi3", "llama", 3072, 131072, "Phi 3 Mini 128k Instruct", "Phi-3-mini-128k-instruct-rev2.jinja"),
    "phi-3.5": meta("phi3", "llama", 3072, 131072, "Phi 3.5 Mini Instruct", "Phi-3.5-mini-instruct.jinja"),
    "phi-3-medium": meta("phi3", "llama", 5120, 4096, "Phi 3 Medium 4k Instruct", "Phi-3-medium-4k-instruct.jinja"),
    "phi-3-medium-128k": meta("phi3", "llama", 5120, 131072, "Phi 3 Medium 128k Instruct"),
    "phi-3.5-moe": meta("phimoe", "llama", 4096, 131072, "Phi 3.5 MoE Instruct"),
    "phi-4": meta("phi3", "gpt2", 5120, 16384, "Phi 4", "phi-4-rev2.jinja", "dbrx"),
    "phi-4-mini": meta("phi3", "gpt2", 3072, 131072, "Phi 4 Mini Instruct", "Phi-4-mini-instruct.jinja", "gpt-4o"),
    "phi-4-mini-reasoning": meta("phi3", "gpt2", 3072, 131072, "Phi 4 Mini Reasoning", "Phi-4-mini-reasoning.jinja", "gpt-4o"),
    "phi-4-reasoning": meta("phi3", "gpt2", 5120, 32768, "Phi 4 Reasoning", "Phi-4-reasoning.jinja", "dbrx"),
    "phi-4-reasoning-plus": meta("phi3", "gpt2", 5120, 32768, "Phi 4 Reasoning Plus", "Phi-4-reasoning-plus.jinja", "dbrx"),
}


def test_every_family_has_a_real_case():
    assert set(REAL) == set(families.BY_KEY)


@pytest.mark.parametrize("key", REAL)
def test_detect(key):
    assert families.detect_family(REAL[key]).key == key


@pytest.mark.parametrize("key", ["phi-3.5", "phi-4-mini", "phi-4"])
def test_detect_from_template_alone(key):
    """A GGUF with a meaningless name (a local fine-tune) is still recognised by its template."""
    m = dict(REAL[key], **{"general.name": "my-finetune"})
    assert families.detect_family(m).key == key


def test_non_phi_is_not_detected():
    assert families.detect_family(meta("llama", "llama", 4096, 8192, "Llama 3")) is None


def test_unknown_family_lists_known():
    with pytest.raises(Exception, match="phi-3.5"):
        families.get_family("phi-9")


def test_every_template_file_exists():
    for f in families.FAMILIES:
        assert families.read_template(f)
