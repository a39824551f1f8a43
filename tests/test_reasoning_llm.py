"""Reasoning output end to end through the real `llm` CLI and API with the trained think toy
(tests/fixtures/toys/think: Phi-4-mini-reasoning format, which writes <think> as plain-text
tokens, so the tags always arrive split across several tokens)."""

import asyncio
import json

import llm

GREEDY = ("-o", "temperature", "0")


def logged(llm_cli, n=1):
    r = llm_cli("logs", "-n", str(n), "--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_toy_registers_as_a_reasoning_family(toy):
    assert llm.get_model(toy("think")).entry.family == "phi-4-mini-reasoning"


def test_thinking_goes_to_reasoning_and_the_log(toy, llm_cli):
    r = llm_cli("-m", toy("think"), "What is 2 + 2?", *GREEDY)
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == "2 + 2 = 4."
    assert "Two plus two makes four." in r.stderr  # shown dimmed on stderr
    [entry] = logged(llm_cli)
    assert entry["response"] == "2 + 2 = 4."
    assert entry["reasoning"].strip() == "Two plus two makes four."
    assert "<think>" not in entry["response"] + entry["reasoning"]


def test_hide_reasoning_hides_it_but_the_model_still_thinks(toy, llm_cli):
    r = llm_cli("-m", toy("think"), "What is 3 + 5?", "-R", *GREEDY)
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == "3 + 5 = 8." and "plus" not in r.stderr
    assert logged(llm_cli)[0]["reasoning"].strip() == "Three plus five makes eight."


def test_no_stream(toy, llm_cli):
    r = llm_cli("-m", toy("think"), "What is 2 + 2?", "--no-stream", *GREEDY)
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == "2 + 2 = 4."
    assert logged(llm_cli)[0]["reasoning"].strip() == "Two plus two makes four."


def test_max_tokens_cuts_inside_the_thinking(toy, llm_cli):
    r = llm_cli("-m", toy("think"), "What is 2 + 2?", "-o", "max_tokens", "6", *GREEDY)
    assert r.exit_code == 0, r.output
    [entry] = logged(llm_cli)
    assert entry["response"] == "" and entry["reasoning"] and "<" not in entry["reasoning"]


def test_conversation_continues_without_old_thinking(toy, llm_cli):
    alias = toy("think")
    assert llm_cli("-m", alias, "What is 2 + 2?", *GREEDY).exit_code == 0
    r = llm_cli("-c", "And 3 + 5?", *GREEDY)
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == "3 + 5 = 8."
    assert logged(llm_cli)[0]["reasoning"].strip() == "Three plus five makes eight."


def test_llm_chat(toy, llm_cli):
    r = llm_cli("chat", "-m", toy("think"), *GREEDY, input="What is 2 + 2?\nAnd 3 + 5?\nquit\n")
    assert r.exit_code == 0, r.output
    assert "2 + 2 = 4." in r.stdout and "3 + 5 = 8." in r.stdout
    assert "<think>" not in r.stdout


def test_async_stream_events(toy):
    model = llm.get_async_model(toy("think"))

    async def run():
        response = model.prompt("What is 2 + 2?", temperature=0)
        return [(e.type, e.chunk) async for e in response.astream_events()]

    events = asyncio.run(run())
    assert "".join(c for t, c in events if t == "text") == "2 + 2 = 4."
    assert "".join(c for t, c in events if t == "reasoning").strip() == "Two plus two makes four."
