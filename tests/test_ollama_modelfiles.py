"""modelfiles/: one per family, whose TEMPLATE makes Ollama's /api/chat build exactly what the
family's Hugging Face template renders (oracle: transformers' render_jinja_template; Ollama's side:
the real Go text/template in tests/fakes/ollama_render); `llm phi ollama modelfile`."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from click.testing import CliRunner

from fixtures.gguf_builders import write_phi3
from llm_phi_gguf import ollama_modelfile as ollama, store
from llm_phi_gguf.families import BY_KEY, FAMILIES, read_template
from llm_phi_gguf.ollama_commands import ollama as ollama_group

LIBRARY_DIR = Path(__file__).parent / "fixtures" / "ollama"  # listed in fixtures/reference/SOURCES.md
CONVERSATIONS_PER_FAMILY = 400  # the README's Ollama section quotes this number
SEED = 11

# family -> the Ollama library model covering it (for stops; templates deliberately differ).
LIBRARY = {
    "phi-3": "phi3", "phi-3-128k": "phi3", "phi-3-medium": "phi3", "phi-3-medium-128k": "phi3",
    "phi-3.5": "phi3.5", "phi-4": "phi4", "phi-4-reasoning": "phi4-reasoning",
    "phi-4-reasoning-plus": "phi4-reasoning", "phi-4-mini": "phi4-mini",
    "phi-4-mini-reasoning": "phi4-mini-reasoning",
}
PIECES = ["", " ", "  ", "\n", "\n\n", " \n\t ", "\r\n", "Hello", "What is 2+2?", "Answer briefly.\n",
          "ünïcödé 🚀 日本語", "emoji 👩‍👩‍👧", "{{ .Content }}", "{% raw %}", "a\\b", '"quoted"', "tab\there",
          "<b>&amp;</b>", " leading", "trailing ", "x" * 200]


def hf_prompt(family, messages: list[dict]) -> str:
    from transformers.utils.chat_template_utils import render_jinja_template

    rendered = render_jinja_template([messages], chat_template=read_template(family), add_generation_prompt=True,
                                     bos_token="<s>", eos_token="<|endoftext|>")
    rendered = rendered[0] if isinstance(rendered, tuple) else rendered
    return rendered[0] if isinstance(rendered, list) else rendered


def content(rng: random.Random) -> str:
    return "".join(rng.choice(PIECES) for _ in range(rng.choice([0, 1, 1, 2, 3, 5])))


def conversation(rng: random.Random) -> tuple[str | None, list[dict]]:
    """(Modelfile SYSTEM or None, messages): an optional system message, given in the request or
    as the model's SYSTEM, then alternating user/assistant turns ending with a user turn."""
    messages = [{"role": "user", "content": content(rng)}]
    for _ in range(rng.choice([0, 0, 1, 2, 3, 7])):
        messages += [{"role": "assistant", "content": content(rng)}, {"role": "user", "content": content(rng)}]
    system, choice = None, rng.random()
    if choice < 0.3:
        messages.insert(0, {"role": "system", "content": content(rng)})
    elif choice < 0.45:
        system = content(rng) or "Be brief."  # Ollama ignores an empty SYSTEM
    return system, messages


def generated(count: int = CONVERSATIONS_PER_FAMILY):
    rng = random.Random(SEED)
    fixed = [(None, [{"role": "user", "content": ""}]), (None, [{"role": "user", "content": " "}]),
             (None, [{"role": "system", "content": ""}, {"role": "user", "content": "x"}]),
             ("S", [{"role": "user", "content": "x"}, {"role": "assistant", "content": ""},
                    {"role": "user", "content": "\n"}])]
    return fixed + [conversation(rng) for _ in range(count - len(fixed))]


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.key)
def test_every_family_has_a_modelfile_with_all_its_stops(family):
    spec = ollama.family_modelfile(family.key)
    assert spec.from_ == "./model.gguf"
    stops = spec.parameters["stop"]
    assert set(family.stops) <= set(stops)
    if family.key in LIBRARY:
        library = json.loads((LIBRARY_DIR / f"library-{LIBRARY[family.key]}.params.json").read_text())
        assert set(library.get("stop", [])) <= set(stops)
    # What `llm phi ollama modelfile` prints reads back unchanged (no """ inside the template).
    assert ollama.parse_modelfile(ollama.format_modelfile(spec)) == spec


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.key)
def test_ollama_builds_the_hf_prompt_for_every_generated_conversation(go_render, family):
    spec = ollama.family_modelfile(family.key)
    convos = generated()
    cases = [{"template": spec.template, "system": system or spec.system or "", "messages": messages}
             for system, messages in convos]
    results = go_render.render(cases)
    mismatches = []
    for (system, messages), result in zip(convos, results):
        full = ([{"role": "system", "content": system}] if system else []) + messages
        expected = hf_prompt(family, full)
        if result.get("error") or result["prompt"] != expected:
            mismatches.append((full, result.get("error"), result["prompt"], expected))
    assert len(convos) == CONVERSATIONS_PER_FAMILY
    assert mismatches[:3] == [] and len(mismatches) == 0


@pytest.mark.parametrize("key", sorted(LIBRARY))
def test_ollamas_library_template_misses_the_hf_prompt_where_modelfiles_readme_says(go_render, key):
    """Why we do not ship the library templates: each misses the HF prompt for some conversation
    (modelfiles/README.md lists how); ours are exact for the same conversations."""
    library = (LIBRARY_DIR / f"library-{LIBRARY[key]}.gotmpl").read_text()
    system_file = LIBRARY_DIR / f"library-{LIBRARY[key]}.system.txt"
    convos = generated(60)
    cases = [{"template": library, "system": system or (system_file.read_text() if system_file.exists() else ""),
              "messages": messages} for system, messages in convos]
    wrong = sum(result["prompt"] != hf_prompt(BY_KEY[key], ([{"role": "system", "content": s}] if s else []) + m)
                for (s, m), result in zip(convos, go_render.render(cases)))
    assert wrong > 0


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.key)
def test_a_trailing_assistant_message_is_left_open_to_be_continued(go_render, family):
    spec = ollama.family_modelfile(family.key)
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello, I am"}]
    assert go_render.prompt(spec.template, messages).endswith("Hello, I am")


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
    assert spec.template == ollama.family_modelfile("phi-3.5").template
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


@pytest.mark.parametrize("family", ["phi-3-medium", "phi-4-reasoning"])
def test_system_for_a_family_whose_template_drops_it_is_a_one_line_error(tiny_gguf, family):
    store.add(store.ModelEntry(alias="m", path=str(tiny_gguf), family=family, n_ctx=4096))
    result = CliRunner().invoke(ollama_group, ["modelfile", "m", "--system", "Be brief."])
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
    assert f"The {family} chat template drops system prompts" in result.output
    assert "put the instructions in the first user message" in result.output


def test_unknown_alias_is_a_one_line_error():
    result = CliRunner().invoke(ollama_group, ["modelfile", "nope"])
    assert result.exit_code == 1 and "Unknown model 'nope'" in result.output


# ---------------------------------------------------------------- tools and thinking

TOOL_FAMILIES = ["phi-4-mini", "phi-4-mini-reasoning"]  # their HF templates render a `tools` key
THINKING_FAMILIES = ["phi-4-reasoning", "phi-4-reasoning-plus", "phi-4-mini-reasoning"]
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city",
    "parameters": {"type": "object", "required": ["city"],
                   "properties": {"unit": {"type": "string", "enum": ["c", "f"]}, "city": {"type": "string"}}}}}
# Go's JSON of the function object, as the TEMPLATE writes it: struct order, map keys sorted.
WEATHER_JSON = ('{"name":"get_weather","description":"Current weather for a city","parameters":{"type":"object",'
                '"required":["city"],"properties":{"city":{"type":"string"},"unit":{"type":"string","enum":["c","f"]}}}}')
CALL = {"function": {"name": "get_weather", "arguments": {"unit": "c", "city": "Paris"}}}
CALL_TEXT = '<|tool_call|>[{"name":"get_weather","arguments":{"city":"Paris","unit":"c"}}]<|/tool_call|>'


def as_hf_messages(messages: list[dict], tools_json: str | None) -> list[dict]:
    """The documented mapping (modelfiles/README.md) of an Ollama chat onto the HF template's
    terms: tool definitions as the first system message's `tools` string (an empty system
    message when there is none), calls appended to the assistant text, results as the
    `tool_response` role."""
    out = []
    for m in messages:
        if m["role"] == "tool":
            out.append({"role": "tool_response", "content": m["content"]})
        elif m.get("tool_calls"):
            out.append({"role": m["role"], "content": m["content"] + CALL_TEXT * len(m["tool_calls"])})
        else:
            out.append({"role": m["role"], "content": m["content"]})
    if tools_json is not None:
        if out[0]["role"] != "system":
            out.insert(0, {"role": "system", "content": ""})
        out[0]["tools"] = tools_json
    return out


TOOL_CHATS = {
    "system-tools": [{"role": "system", "content": "Use tools."}, {"role": "user", "content": "Weather?"}],
    "no-system": [{"role": "user", "content": "Weather in Paris?"}],
    "call-and-result": [{"role": "user", "content": "Weather in Paris?"},
                        {"role": "assistant", "content": "", "tool_calls": [CALL]},
                        {"role": "tool", "content": "18 C"}],
    "text-call-two-results": [{"role": "system", "content": ""}, {"role": "user", "content": "Twice"},
                              {"role": "assistant", "content": "Checking.", "tool_calls": [CALL]},
                              {"role": "tool", "content": "18"}, {"role": "tool", "content": "\n"},
                              {"role": "assistant", "content": "Done."}, {"role": "user", "content": "ünï"}],
}


@pytest.mark.parametrize("key", TOOL_FAMILIES)
@pytest.mark.parametrize("chat", sorted(TOOL_CHATS))
@pytest.mark.parametrize("with_tools", [True, False])
def test_tool_chats_render_what_the_hf_template_renders_for_the_documented_mapping(go_render, key, chat, with_tools):
    spec = ollama.family_modelfile(key)
    tools = [WEATHER] if with_tools else None
    got = go_render.prompt(spec.template, TOOL_CHATS[chat], tools=tools)
    expected = hf_prompt(BY_KEY[key], as_hf_messages(TOOL_CHATS[chat], f"[{WEATHER_JSON}]" if with_tools else None))
    assert got == expected


def test_phi4_mini_tool_prompt_in_full(go_render):
    got = go_render.prompt(ollama.family_modelfile("phi-4-mini").template, TOOL_CHATS["call-and-result"], tools=[WEATHER])
    assert got == (f"<|system|><|tool|>[{WEATHER_JSON}]<|/tool|><|end|><|user|>Weather in Paris?<|end|>"
                   f"<|assistant|>{CALL_TEXT}<|end|><|tool_response|>18 C<|end|><|assistant|>")


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.key)
def test_capabilities_and_tags_ollama_derives_from_each_template(go_render, family):
    info = go_render.info(ollama.family_modelfile(family.key).template)
    expected = ["completion"] + (["tools"] if family.key in TOOL_FAMILIES else []) + (
        ["thinking"] if family.key in THINKING_FAMILIES else [])
    assert info["capabilities"] == expected
    if family.key in THINKING_FAMILIES:
        assert info["thinking_tags"] == ["<think>", "</think>"]
    if family.key in TOOL_FAMILIES:
        assert info["tool_tag"] == "<|tool_call|>"  # where Ollama looks for calls in the output


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.key)
def test_new_servers_keep_our_template_rather_than_the_ggufs(family):
    """Ollama >= 0.30 prefers the GGUF's Jinja template when it advertises more (API.md 7.4):
    ours advertise at least as much as the family's HF template, so ours stays in use."""
    from fakes.ollama_server import prefers_chat_template

    assert not prefers_chat_template(read_template(family), ollama.family_modelfile(family.key).template)


@pytest.mark.parametrize("key", THINKING_FAMILIES)
def test_earlier_thinking_is_dropped_and_a_continued_reply_keeps_its_own(go_render, key):
    template = ollama.family_modelfile(key).template
    plain = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"},
             {"role": "user", "content": "3+3?"}]
    thought = [dict(m) for m in plain]
    thought[1]["thinking"] = "add them"
    assert go_render.prompt(template, thought) == go_render.prompt(template, plain) == hf_prompt(BY_KEY[key], plain)
    partial = plain + [{"role": "assistant", "content": "The", "thinking": "3 and 3"}]
    assert go_render.prompt(template, partial).endswith("<think>3 and 3</think>The")
