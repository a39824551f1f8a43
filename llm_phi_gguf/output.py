"""One response's generated text -> what llm gets: answer text, reasoning StreamEvents, and tool
calls added to the response. Pure stream filters over text pieces, so it does not care which
sampler produced them (model.generate hands special marker tokens over as their text)."""

from __future__ import annotations

from typing import Iterable, Iterator, Union

from .families import Family
from .reasoning import REASONING, ThinkSplitter
from .tools import CallExtractor, parse_calls, to_llm_call


def marker_strings(family: Family) -> tuple[str, ...]:
    """The tags the filters below look for: generate() must pass these tokens on as text even
    when the vocab marks them special (invisible when detokenized)."""
    out: tuple[str, ...] = ()
    if family.tool_format:
        out += (family.tool_format.call_open, family.tool_format.call_close)
    if family.reasoning:
        out += (family.reasoning.open_tag, family.reasoning.close_tag)
    return out


def shape(pieces: Iterable[str], response, family: Family, thinking: bool = False) -> Iterator[Union[str, object]]:
    """Yield answer text (str) and reasoning StreamEvents; add parsed tool calls to `response`
    when the prompt offered tools. `thinking`: the prompt already opened the think block."""
    from llm.parts import StreamEvent

    think = ThinkSplitter(family.reasoning, thinking) if family.reasoning else None
    calls = CallExtractor(family.tool_format) if family.tool_format and response.prompt.tools else None

    def route(parts: list[tuple[str, str]]) -> Iterator[Union[str, object]]:
        for kind, text in parts:
            if kind == REASONING:
                yield StreamEvent(type="reasoning", chunk=text)
            else:
                text = calls.feed(text) if calls else text
                if text:
                    yield text

    for piece in pieces:
        yield from route(think.feed(piece) if think else [("text", piece)])
    if think:
        yield from route(think.flush())
    if calls:
        rest, bodies = calls.finish()
        if rest:
            yield rest
        for body in bodies:
            for call in parse_calls(body):
                response.add_tool_call(to_llm_call(call, body))
