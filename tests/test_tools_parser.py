"""The tool-call parser and stream filter: what a model writes is untrusted, so any string parses
to calls or to errors that name the problem, never an exception; well-formed calls survive the
variations small models produce (no closing tag, a bare object, several calls, arguments as a
JSON string, split tags)."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_phi_gguf import families, tools

FMT = families.TOOL_FORMATS["phi-4-mini"]
names = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=20).filter(lambda s: s.strip() == s and s)
json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10)
arguments = st.dictionaries(st.text(max_size=8), st.recursive(json_scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3), max_leaves=8), max_size=4)
calls = st.lists(st.tuples(names, arguments), min_size=1, max_size=4)


def stream(text: str, cuts: list[int]) -> tuple[str, list[tools.ParsedCall]]:
    """Feed `text` to a CallExtractor in pieces cut at `cuts`; return (answer text, parsed calls)."""
    extractor = tools.CallExtractor(FMT)
    bounds = sorted({0, len(text), *(c % (len(text) + 1) for c in cuts)})
    shown = "".join(extractor.feed(text[a:b]) for a, b in zip(bounds, bounds[1:]))
    rest, bodies = extractor.finish()
    return shown + rest, [c for b in bodies for c in tools.parse_calls(b)]


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=300))
def test_any_string_parses_without_raising(body):
    for call in tools.parse_calls(body):
        assert isinstance(call.name, str)
        assert (call.error is None) == isinstance(call.arguments, dict)
        assert call.error is None or call.error.strip()


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=st.sampled_from('[]{}",:\\ ntrueafls0123456789.-eE'), max_size=120))
def test_json_shaped_garbage_parses_without_raising(body):
    """Near-JSON (brackets, quotes, escapes, deep nesting) is where a naive json.loads blows up."""
    for call in tools.parse_calls(body):
        llm_call = tools.to_llm_call(call)
        assert isinstance(llm_call.arguments, dict)
        if call.error:
            assert "malformed tool call" in llm_call.name and call.error in llm_call.name


def test_deep_nesting_is_an_error_not_a_recursion_crash():
    [call] = tools.parse_calls("[" * 100_000)
    assert call.error


@settings(max_examples=100, deadline=None)
@given(calls, st.sampled_from(["list", "bare", "concatenated", "string_args"]), st.booleans(),
       st.lists(st.integers(min_value=0, max_value=10_000), max_size=8), st.text(max_size=15))
def test_well_formed_calls_survive_every_variation(expected, shape, close_tag, cuts, before):
    before = before.replace("<", "")  # text around calls, without anything that could start a tag
    items = [{"name": n, "arguments": json.dumps(a) if shape == "string_args" else a} for n, a in expected]
    if shape == "bare":
        items = items[:1]
        expected = expected[:1]
        body = json.dumps(items[0])
    elif shape == "concatenated":
        body = " ".join(json.dumps(i) for i in items)
    else:
        body = json.dumps(items)
    text = before + FMT.call_open + body + (FMT.call_close if close_tag else "")
    shown, parsed = stream(text, cuts)
    assert shown == before
    assert [(c.name, c.arguments, c.error) for c in parsed] == [(n, a, None) for n, a in expected]


def test_several_blocks_and_text_between():
    text = f'Let me check.{FMT.call_open}[{{"name": "a", "arguments": {{}}}}]{FMT.call_close} and ' \
           f'{FMT.call_open}{{"name": "b", "arguments": {{"x": 1}}}}'
    shown, parsed = stream(text, [3, 17, 20, 40])
    assert shown == "Let me check. and "
    assert [(c.name, c.arguments) for c in parsed] == [("a", {}), ("b", {"x": 1})]


@pytest.mark.parametrize("body, name, problem", [
    ('[{"name": "llm_time", "arguments": "{oops"}]', "llm_time", "arguments are not valid JSON"),
    ('[{"name": "llm_time", "arguments": [1]}]', "llm_time", "arguments must be a JSON object"),
    ('[{"name": "llm_time", "argu', "llm_time", "not valid JSON"),
    ('[{"arguments": {}}]', "", "has no name"),
    ("[]", "", "list is empty"),
    ("", "", "empty"),
    ('["llm_time"]', "", "must be a JSON object"),
])
def test_malformed_calls_name_the_problem(body, name, problem):
    [call] = tools.parse_calls(body)
    assert call.name == name and problem in call.error
    llm_call = tools.to_llm_call(call, body)
    assert llm_call.arguments == {"raw": body} and problem in llm_call.name and llm_call.name.startswith(name)
    # given back in the history as the model wrote it
    assert tools.written_call(FMT, llm_call.name, llm_call.arguments) == FMT.call_open + body


def test_good_calls_before_trailing_garbage_are_kept():
    parsed = tools.parse_calls('{"name": "a", "arguments": {}} {"name": "b", "argu')
    assert parsed[0] == tools.ParsedCall("a", {})
    assert parsed[1].error and "not valid JSON" in parsed[1].error


def test_code_fence_and_openai_shape():
    [call] = tools.parse_calls('```json\n[{"type": "function", "function": {"name": "f", "arguments": "{\\"a\\": 2}"}}]\n```')
    assert (call.name, call.arguments) == ("f", {"a": 2})


def test_call_text_round_trips_through_the_parser():
    text = tools.call_text(FMT, [("f", {"a": [1, "é"]}), ("g", {})])
    assert text.startswith(FMT.call_open) and text.endswith(FMT.call_close)
    _, parsed = stream(text, [5, 9])
    assert [(c.name, c.arguments) for c in parsed] == [("f", {"a": [1, "é"]}), ("g", {})]
