"""modelfiles/: one per family, TEMPLATE byte-identical to Ollama's library where it has one,
otherwise rendering exactly what the family's HF Jinja template renders; `llm phi ollama modelfile`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from fakes import gotemplate
from fixtures.gguf_builders import write_phi3
from llm_phi_gguf import ollama, store
from llm_phi_gguf.families import BY_KEY, FAMILIES, read_template
from llm_phi_gguf.ollama_commands import ollama as ollama_group
from llm_phi_gguf.templates import render

SHARED = Path(__file__).resolve().parent / "fixtures" / "ollama"  # vendored: fixtures/reference/SOURCES.md

# family -> the Ollama library model whose template it ships (API.md 9). Phi-3 medium and the
# 128k variants are tags of library/phi3; -reasoning-plus is a tag of library/phi4-reasoning.
LIBRARY = {
    "phi-3": "phi3", "phi-3-128k": "phi3", "phi-3-medium": "phi3", "phi-3-medium-128k": "phi3",
    "phi-3.5": "phi3.5", "phi-4": "phi4", "phi-4-reasoning": "phi4-reasoning",
    "phi-4-reasoning-plus": "phi4-reasoning", "phi-4-mini": "phi4-mini",
    "phi-4-mini-reasoning": "phi4-mini-reasoning",
}


def _no_newline_after_assistant_end(hf: str) -> str:
    # library/phi3 (148 B) lacks the trailing newline, so a finished assistant turn's <|end|>
    # runs straight into the next <|user|>.
    return re.sub(r"(<\|assistant\|>\n(?:(?!<\|).)*<\|end\|>)\n", r"\1", hf, flags=re.S)


def _newlines_after_im_sep_and_im_end(hf: str) -> str:
    # library/phi4 adds "\n" after every <|im_sep|> and after every <|im_end|>.
    return hf.replace("<|im_sep|>", "<|im_sep|>\n").replace("<|im_end|>", "<|im_end|>\n")


def _no_end_after_system(hf: str) -> str:
    # library/phi4-mini and phi4-mini-reasoning close the system text with no <|end|>.
    return re.sub(r"^(<\|system\|>(?:(?!<\|).)*)<\|end\|>", r"\1", hf, flags=re.S)


# The library templates' documented divergences from the HF templates (API.md 9): applied to
# the HF rendering they must give Ollama's rendering exactly, so nothing else differs.
DIVERGENCE = {
    "phi-3": _no_newline_after_assistant_end, "phi-3-128k": _no_newline_after_assistant_end,
    "phi-3-medium": _no_newline_after_assistant_end, "phi-3-medium-128k": _no_newline_after_assistant_end,
    "phi-4": _newlines_after_im_sep_and_im_end, "phi-4-reasoning": _newlines_after_im_sep_and_im_end,
    "phi-4-reasoning-plus": _newlines_after_im_sep_and_im_end,
    "phi-4-mini": _no_end_after_system, "phi-4-mini-reasoning": _no_end_after_system,
}

S = {"role": "system", "content": "You are a terse assistant."}
U1 = {"role": "user", "content": "Hello, how are you?"}
A1 = {"role": "assistant", "content": "Fine. What do you need?"}
U2 = {"role": "user", "content": "What is 2+2?\nAnswer briefly."}
CONVERSATIONS = {"user": [U1], "user-assistant-user": [U1, A1, U2],
                 "system-user": [S, U1], "system-user-assistant-user": [S, U1, A1, U2]}


def _conversations(family):
    """System messages only where the HF template renders them and the Modelfile has no SYSTEM
    of its own (the reasoning models' fixed system text comes from the Modelfile instead)."""
    has_own_system = ollama.family_modelfile(family.key).system is not None
    skip_system = not family.supports_system or has_own_system or family.key == "phi-2"
    return {k: v for k, v in CONVERSATIONS.items() if not (skip_system and k.startswith("system"))}


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.key)
def test_every_family_has_a_modelfile_with_all_its_stops(family):
    spec = ollama.family_modelfile(family.key)
    assert spec.from_ == "./model.gguf"
    stops = spec.parameters["stop"]
    assert set(family.stops) <= set(stops)
    if family.key in LIBRARY:
        library = json.loads((SHARED / f"library-{LIBRARY[family.key]}.params.json").read_text())
        assert set(library.get("stop", [])) <= set(stops)
    gotemplate.parse(spec.template)  # valid Go template syntax


@pytest.mark.parametrize("key", sorted(LIBRARY))
def test_template_is_byte_identical_to_the_ollama_library(key):
    spec = ollama.family_modelfile(key)
    assert spec.template == (SHARED / f"library-{LIBRARY[key]}.gotmpl").read_bytes().decode()
    if LIBRARY[key] == "phi4-mini-reasoning":
        assert spec.system == (SHARED / "library-phi4-mini-reasoning.system.txt").read_text()


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.key)
def test_go_template_renders_what_the_hf_template_renders(family):
    spec = ollama.family_modelfile(family.key)
    source = read_template(family)
    for name, messages in _conversations(family).items():
        hf = render(source, messages, add_generation_prompt=True, bos_token="", eos_token="<|endoftext|>")
        expected = DIVERGENCE.get(family.key, lambda text: text)(hf)
        assert gotemplate.render_chat(spec.template, messages, spec.system) == expected, name


def test_renderer_reproduces_ollamas_own_phi3_fixtures():
    index = json.loads((SHARED / "index.json").read_text())
    cases = index["rendered_examples"]["inputs (messages, from template/template_test.go)"]
    source = (SHARED / "phi-3.gotmpl").read_text()
    for name, messages in cases.items():
        assert gotemplate.render_chat(source, messages) == (SHARED / "phi-3.rendered" / name).read_text()


@pytest.mark.parametrize("value", ["<|end|>", "\nInstruct:", " padded ", 'say "hi"\nnow', ""])
def test_modelfile_values_read_back_unchanged(value):
    spec = ollama.Modelfile("x.gguf", "{{ .Prompt }}", value or None, {"stop": [value], "num_ctx": 8})
    assert ollama.parse_modelfile(ollama.format_modelfile(spec)) == spec


def test_modelfile_parser_follows_ollamas_quoting_rules():
    text = ('# comment\nfrom  /m.gguf\nPARAMETER temperature 0.5\nSYSTEM """ keep  \n\n"""\n'
            'PARAMETER stop "\nUser:"\nparameter stop <|end|>\n')
    spec = ollama.parse_modelfile(text)
    assert spec.from_ == "/m.gguf" and spec.system == " keep  \n\n"
    assert spec.parameters == {"temperature": 0.5, "stop": ["\nUser:", "<|end|>"]}
    with pytest.raises(ollama.PhiError, match=r"invalid float value \[0.7 # x\]"):
        ollama.parse_modelfile("FROM x\nPARAMETER temperature 0.7 # x\n")


@pytest.fixture
def tiny_gguf(tmp_path):
    template = read_template(BY_KEY["phi-3"])
    return write_phi3(tmp_path / "tiny.gguf", **{"tokenizer.chat_template": template})


def test_modelfile_command_for_an_alias(tiny_gguf, tmp_path):
    store.add(store.ModelEntry(alias="tiny", path=str(tiny_gguf), family="phi-3.5", n_ctx=8192))
    result = CliRunner().invoke(ollama_group, ["modelfile", "tiny", "-p", "temperature=0.7",
                                               "-p", "top_k=20", "-p", "stop=###", "--system", "Be brief."])
    assert result.exit_code == 0, result.output
    spec = ollama.parse_modelfile(result.output)
    assert spec.from_ == str(tiny_gguf.absolute())
    assert spec.template == (SHARED / "library-phi3.5.gotmpl").read_text()
    assert spec.system == "Be brief."
    assert spec.parameters["num_ctx"] == 8192 and spec.parameters["temperature"] == 0.7
    assert spec.parameters["top_k"] == 20 and spec.parameters["stop"][-1] == "###"
    assert set(BY_KEY["phi-3.5"].stops) < set(spec.parameters["stop"])


def test_modelfile_command_for_a_path_writes_atomically(tiny_gguf, tmp_path):
    out = tmp_path / "Modelfile"
    runner = CliRunner()
    result = runner.invoke(ollama_group, ["modelfile", str(tiny_gguf), "-o", str(out)])
    assert result.exit_code == 0, result.output
    spec = ollama.parse_modelfile(out.read_text())
    assert spec.parameters["num_ctx"] == 4096  # the GGUF's context, capped at the default
    assert spec.template == ollama.family_modelfile("phi-3").template  # detected family
    again = runner.invoke(ollama_group, ["modelfile", str(tiny_gguf), "-o", str(out)])
    assert again.exit_code == 1 and "already exists" in again.output
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")] == []


@pytest.mark.parametrize("option, message", [
    ("temperature=hot", "invalid float value [hot] for parameter temperature"),
    ("num_ctx=4k", "invalid int value [4k] for parameter num_ctx"),
    ("use_mmap=yes", "invalid bool value [yes] for parameter use_mmap"),
    ("mirostat=1", "unknown parameter 'mirostat'"),
    ("temperature", "Bad parameter 'temperature': use -p name=value"),
])
def test_bad_parameters_are_one_line_errors(tiny_gguf, option, message):
    result = CliRunner().invoke(ollama_group, ["modelfile", str(tiny_gguf), "-p", option])
    assert result.exit_code == 1
    assert message in result.output and len(result.output.strip().splitlines()) == 1


def test_unknown_alias_is_a_one_line_error():
    result = CliRunner().invoke(ollama_group, ["modelfile", "nope"])
    assert result.exit_code == 1 and "Unknown model 'nope'" in result.output
