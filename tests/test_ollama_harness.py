"""The Go harness (tests/fakes/ollama_render) reproduces Ollama's prompt building: checked against
Ollama's own template test fixtures (vendored in tests/fixtures/ollama/, listed in
tests/fixtures/reference/SOURCES.md), and the Python fake server's template handling agrees with it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fakes import gotemplate
from llm_phi_gguf.families import FAMILIES
from llm_phi_gguf.ollama_modelfile import family_modelfile

FIXTURES = Path(__file__).parent / "fixtures" / "ollama"
AUTODETECT = sorted((FIXTURES / "autodetect").glob("*.gotmpl"))

# template/template_test.go TestTemplate: the three conversations, named by their roles.
HELLO = {"role": "user", "content": "Hello, how are you?"}
GREAT = {"role": "assistant", "content": "I'm doing great. How can I help you today?"}
SHOW = {"role": "user", "content": "I'd like to show off how chat templating works!"}
SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
CONVERSATIONS = {"user": [HELLO], "user-assistant-user": [HELLO, GREAT, SHOW],
                 "system-user-assistant-user": [SYSTEM, HELLO, GREAT, SHOW]}
# Ollama's test drops one trailing space from these templates' output before comparing.
TRAILING_SPACE = {"chatqa.gotmpl", "llama2-chat.gotmpl", "mistral-instruct.gotmpl", "openchat.gotmpl",
                  "vicuna.gotmpl"}


def test_the_vendored_fixtures_are_all_there():
    assert len(AUTODETECT) == 20
    for path in AUTODETECT:
        assert sorted(p.name for p in (FIXTURES / "autodetect" / "expected" / path.name).iterdir()) == sorted(CONVERSATIONS)


def test_harness_renders_ollamas_expected_prompts_for_every_builtin_template(go_render):
    cases, keys = [], []
    for path in AUTODETECT:
        for name, messages in CONVERSATIONS.items():
            cases.append({"template": path.read_text(), "messages": messages})
            keys.append((path.name, name))
    failures = []
    for (template, name), result in zip(keys, go_render.render(cases)):
        expected = (FIXTURES / "autodetect" / "expected" / template / name).read_text()
        got = result["prompt"]
        if template in TRAILING_SPACE and got.endswith(" "):
            got = got[:-1]
        if result.get("error") or got != expected:
            failures.append((template, name, result.get("error"), got[-80:], expected[-80:]))
    assert failures == []
    assert len(keys) == 60


def test_harness_follows_ollamas_execute_cases(go_render):
    data = json.loads((FIXTURES / "execute_cases.json").read_text())
    cases, expected = [], []
    for case in data["cases"]:
        for label, template in case["templates"].items():
            cases.append({"template": template, "messages": case["messages"], "tools": case.get("tools")})
            expected.append((case["name"], label, case["expected"]))
    got = [(name, label, r["prompt"]) for (name, label, _), r in zip(expected, go_render.render(cases))]
    assert got == expected


def test_legacy_templates_render_each_turn_and_cut_the_last_at_the_response(go_render):
    # The .Prompt/.Response path: one execution per turn, the last one ends right after
    # .Response, so the text after it (here "<|end|>") only closes earlier turns.
    template = "{{ if .System }}S:{{ .System }}|{{ end }}U:{{ .Prompt }}|A:{{ .Response }}<|end|>"
    messages = [SYSTEM, HELLO, GREAT, SHOW]
    assert go_render.prompt(template, messages) == (
        "S:You are a helpful assistant.|U:Hello, how are you?|A:I'm doing great. How can I help you today?<|end|>"
        "U:I'd like to show off how chat templating works!|A:")
    # A template without .Response or .Messages gets {{ .Response }} appended.
    assert go_render.prompt("{{ .Prompt }}", [HELLO]) == "Hello, how are you?"


def test_model_system_is_prepended_only_when_the_chat_has_none(go_render):
    template = "{{ range .Messages }}[{{ .Role }}:{{ .Content }}]{{ end }}"
    assert go_render.prompt(template, [HELLO], system="S") == "[system:S][user:Hello, how are you?]"
    assert go_render.prompt(template, [SYSTEM, HELLO], system="S") == (
        "[system:You are a helpful assistant.][user:Hello, how are you?]")


def test_consecutive_messages_of_one_role_are_joined_and_systems_collected(go_render):
    template = "{{ .System }}#{{ range .Messages }}[{{ .Role }}:{{ .Content }}]{{ end }}"
    messages = [SYSTEM, {"role": "system", "content": "B"}, HELLO, {"role": "user", "content": "again"},
                {"role": "tool", "content": "1"}, {"role": "tool", "content": "2"}]
    assert go_render.prompt(template, messages) == (
        "You are a helpful assistant.\n\nB#[system:You are a helpful assistant.\n\nB]"
        "[user:Hello, how are you?\n\nagain][tool:1][tool:2]")


def test_tools_and_tool_calls_print_as_go_json(go_render):
    template = ("{{ .Tools }}|{{ range .Tools }}{{ json .Function }}{{ end }}|{{ range .Messages }}"
                "{{ range .ToolCalls }}{{ .Function.Name }}{{ .Function.Arguments }}{{ end }}{{ end }}")
    tools = [{"type": "function", "function": {"name": "f", "description": "a<b & c", "parameters": {
        "type": "object", "required": ["z"], "properties": {"z": {"type": "string"}, "a": {"type": ["integer", "null"]}}}}}]
    calls = [{"function": {"name": "f", "arguments": {"z": "1", "a": 2}}}]
    prompt = go_render.prompt(template, [HELLO, {"role": "assistant", "content": "", "tool_calls": calls}], tools=tools)
    function = ('{"name":"f","description":"a\\u003cb \\u0026 c","parameters":{"type":"object","required":["z"],'
                '"properties":{"a":{"type":["integer","null"]},"z":{"type":"string"}}}}')
    assert prompt == f'[{{"type":"function","function":{function}}}]|{function}|f{{"a":2,"z":"1"}}'


@pytest.mark.parametrize("template, caps, tags, tool_tag", [
    ("{{ .Prompt }}", ["completion"], ["", ""], "{"),
    ("{{ range .Messages }}{{ .Content }}{{ end }}{{ .Tools }}", ["completion", "tools"], ["", ""], "{"),
    ("{{ .Suffix }}{{ .Prompt }}", ["completion", "insert"], ["", ""], "{"),
    ("{{ range .Messages }}{{ if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}{{ end }}",
     ["completion", "thinking"], ["<think>", "</think>"], "{"),
    ("{{ if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}", ["completion"], ["", ""], "{"),  # not in a range
    ("{{ range .Messages }}{{ if .ToolCalls }}<|tool_call|>[{{ range .ToolCalls }}{}{{ end }}]{{ end }}{{ end }}",
     ["completion"], ["", ""], "<|tool_call|>["),
])
def test_capabilities_thinking_tags_and_tool_tag(go_render, template, caps, tags, tool_tag):
    info = go_render.info(template)
    assert (info["capabilities"], info["thinking_tags"], info["tool_tag"]) == (caps, tags, tool_tag)


def test_a_broken_template_is_an_error(go_render):
    (result,) = go_render.render([{"template": "{{ range .Messages }}", "messages": []}])
    assert "unexpected EOF" in result["error"]


@pytest.mark.parametrize("path", AUTODETECT, ids=lambda p: p.stem)
def test_the_fake_servers_python_renderer_agrees_with_go(go_render, path):
    template = path.read_text()
    for name, messages in CONVERSATIONS.items():
        assert gotemplate.render_chat(template, messages) == go_render.prompt(template, messages), name


TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather <now> & here",
          "parameters": {"type": "object", "required": ["city"],
                         "properties": {"unit": {"type": "string", "enum": ["c", "f"]}, "city": {"type": "string"}}}}}]
TOOL_CHAT = [{"role": "system", "content": "Use tools."}, {"role": "user", "content": "Weather in Paris?"},
             {"role": "assistant", "content": "", "tool_calls": [
                 {"function": {"name": "get_weather", "arguments": {"unit": "c", "city": "Paris"}}}]},
             {"role": "tool", "content": "18 C"}, {"role": "user", "content": "Thanks ünï"}]


@pytest.mark.parametrize("family", [f.key for f in FAMILIES])
def test_the_python_renderer_agrees_with_go_on_our_modelfiles(go_render, family):
    spec = family_modelfile(family)
    chats = [([HELLO], None, ""), ([SYSTEM, HELLO, GREAT, SHOW], None, "S"), ([HELLO, GREAT, SHOW], None, "Model"),
             ([{"role": "user", "content": ""}], None, ""), (TOOL_CHAT, TOOLS, ""), (TOOL_CHAT[1:], TOOLS, "")]
    for messages, tools, system in chats:
        go = go_render.render([{"template": spec.template, "messages": messages, "tools": tools, "system": system}])[0]
        assert gotemplate.render_chat(spec.template, messages, system, tools=tools) == go["prompt"]
    assert gotemplate.capabilities(spec.template) == go_render.info(spec.template)["capabilities"]
