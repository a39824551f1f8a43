"""Tool calling end to end through the real `llm` CLI and API with the trained tools toy
(tests/fixtures/toys/tools: Phi-4-mini format), and the prompt with tools checked against
transformers' rendering of the HF template."""

import asyncio
import json
import re

import llm
import pytest
from llm.parts import Message, TextPart, ToolCallPart, ToolResultPart
from llm.tools import llm_time

from llm_phi_gguf import chat, families, store, tools

GREEDY = ("-o", "temperature", "0")


def last_log(llm_cli, n=1):
    """The last n logged responses, oldest first."""
    r = llm_cli("logs", "-n", str(n), "--json")
    assert r.exit_code == 0, r.output
    return sorted(json.loads(r.stdout), key=lambda e: (e["datetime_utc"], e["id"]))


def answer_time(output: str) -> str:
    return json.loads(output)["local_time"].split(" ")[1]


def test_toy_registers_as_a_tool_family(toy):
    assert store.get(toy("tools")).family == "phi-4-mini"
    assert llm.get_model(toy("tools")).supports_tools


@pytest.mark.parametrize("stream", [True, False])
def test_time_tool_runs_and_the_answer_uses_its_output(toy, llm_cli, utc, stream):
    alias = toy("tools")
    r = llm_cli("-m", alias, "-T", "llm_time", "What time is it?", "--td", *GREEDY, *([] if stream else ["--no-stream"]))
    assert r.exit_code == 0, r.output
    assert "Tool call: llm_time({})" in r.stderr  # --td shows the call
    first, second = last_log(llm_cli, 2)
    assert [(c["name"], c["arguments"]) for c in first["tool_calls"]] == [("llm_time", {})]
    assert first["response"] == ""  # the call is not text
    [result] = second["tool_results"]
    assert result["name"] == "llm_time"
    expected = f"It is {answer_time(result['output'])}."
    assert r.stdout.strip() == expected and second["response"] == expected


def test_without_tools_the_toy_answers_in_text(toy, llm_cli):
    r = llm_cli("-m", toy("tools"), "What time is it?", *GREEDY)
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == "I cannot tell the time without a tool."
    assert last_log(llm_cli)[0]["tool_calls"] in (None, [])


def test_a_malformed_call_becomes_a_tool_error_in_the_chain(toy, llm_cli):
    r = llm_cli("-m", toy("tools"), "-T", "llm_time", "Break the tool", *GREEDY)
    assert r.exit_code == 0, r.output
    first, second = last_log(llm_cli, 2)
    [call] = first["tool_calls"]
    assert "malformed tool call" in call["name"] and "arguments are not valid JSON" in call["name"]
    [result] = second["tool_results"]
    assert result["output"].startswith('Error: tool "llm_time: malformed tool call')
    assert r.stdout.strip() == "Sorry, the tool call failed."


def test_llm_chat_with_tools(toy, llm_cli, utc):
    r = llm_cli("chat", "-m", toy("tools"), "-T", "llm_time", *GREEDY, input="What time is it?\nquit\n")
    assert r.exit_code == 0, r.output
    result = last_log(llm_cli)[-1]["tool_results"][0]
    assert f"It is {answer_time(result['output'])}." in r.stdout


def test_async_chain(toy, utc):
    model = llm.get_async_model(toy("tools"))

    async def run():
        chain = model.chain("What time is it?", tools=[llm_time], options={"temperature": 0})
        seen = []
        async for response in chain.responses():
            seen.append((await response.text(), await response.tool_calls(), response.prompt.tool_results))
        return seen

    (text1, calls, _), (text2, _, results) = asyncio.run(run())
    assert text1 == "" and [(c.name, c.arguments) for c in calls] == [("llm_time", {})]
    assert text2 == f"It is {answer_time(results[0].output)}."


def test_families_without_a_tool_format_refuse_tools(converted, llm_cli):
    alias = store.register_file(converted("phi-4"), alias="t-phi-4", force=True).alias
    assert families.BY_KEY["phi-4"].tool_format is None
    r = llm_cli("-m", alias, "-T", "llm_time", "What time is it?")
    assert r.exit_code != 0
    assert "does not support tools" in r.output


# ---- the prompt with tools equals transformers' rendering ------------------------------------

def chain_messages(system: str | None):
    output = json.dumps(llm_time(), default=repr)
    head = [Message("system", [TextPart(system)])] if system else []
    return head + [
        Message("user", [TextPart("What time is it?")]),
        Message("assistant", [TextPart("Checking."), ToolCallPart("llm_time", {}, "tc_1"), ToolCallPart("f", {"a": "é"})]),
        Message("tool", [ToolResultPart("llm_time", output, "tc_1"), ToolResultPart("f", "ok")]),
    ], output


@pytest.mark.parametrize("name", ["tools", "think"])
@pytest.mark.parametrize("system", [None, "Be brief."])
def test_prompt_tokens_with_tools_equal_transformers(name, system, toy):
    from transformers import AutoTokenizer

    from fixtures.toy_fixtures import TOYS

    model = llm.get_model(toy(name))
    messages, output = chain_messages(system)
    tool = llm.Tool.function(llm_time)
    prompt = llm.Prompt(None, model=model, options=model.Options(), messages=messages, tools=[tool])
    _, tokens, _ = model.prepare(prompt)

    # what a transformers user writes: the tools JSON string on the system message (the only
    # place this template reads it), calls in the model's syntax, results in <|tool_response|> turns
    defs = json.dumps([{"name": "llm_time", "description": llm_time.__doc__, "parameters": tool.input_schema}])
    hf = [{"role": "system", "content": system or "", "tools": defs},
          {"role": "user", "content": "What time is it?"},
          {"role": "assistant", "content": 'Checking.<|tool_call|>[{"name": "llm_time", "arguments": {}}, '
                                           '{"name": "f", "arguments": {"a": "é"}}]<|/tool_call|>'},
          {"role": "tool_response", "content": output}, {"role": "tool_response", "content": "ok"}]
    tok = AutoTokenizer.from_pretrained(str(TOYS / name))
    text = tok.apply_chat_template(hf, tokenize=False, add_generation_prompt=True)
    assert "<|tool|>" + defs + "<|/tool|>" in text
    assert tokens == tok(text, add_special_tokens=False)["input_ids"]


def test_earlier_thinking_is_not_given_back():
    from llm.parts import ReasoningPart

    prompt = llm.Prompt(None, model=None, options=object(), messages=[
        Message("user", [TextPart("q")]), Message("assistant", [ReasoningPart("secret"), TextPart("a")])])
    assert chat.messages_from_llm(prompt, families.BY_KEY["phi-4-reasoning"]) == [
        {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]


def test_definitions_json_matches_the_documented_shape():
    [d] = json.loads(tools.definitions_json([llm.Tool.function(llm_time)]))
    assert d == {"name": "llm_time", "description": llm_time.__doc__, "parameters": {"properties": {}, "type": "object"}}
