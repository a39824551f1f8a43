"""Reasoning output: the text a reasoning family writes inside <think>...</think> streams as
llm reasoning, the rest as the answer. Works on text pieces, so tags split across tokens, a
<think> the template already opened in the prompt, and a closing tag that never comes
(max_tokens) are all handled here, whatever produced the pieces."""

from __future__ import annotations

from typing import Iterator

from .families import Reasoning
from .tagstream import TagSplitter

REASONING, TEXT = "reasoning", "text"


def opened_in_prompt(prompt_text: str, fmt: Reasoning) -> bool:
    """Whether the prompt ends inside an open think block (the template started the thinking)."""
    last_open = prompt_text.rfind(fmt.open_tag)
    return last_open >= 0 and prompt_text.find(fmt.close_tag, last_open) < 0


class ThinkSplitter:
    """feed(text) -> [(REASONING | TEXT, text)]. Whitespace right after a tag is dropped, so the
    answer does not start with the blank lines that follow </think>."""

    def __init__(self, fmt: Reasoning, thinking: bool = False):
        self.fmt = fmt
        self.tags = TagSplitter((fmt.open_tag, fmt.close_tag))
        self.thinking = thinking
        self.strip = True

    def feed(self, text: str) -> list[tuple[str, str]]:
        return list(self._route(self.tags.feed(text)))

    def flush(self) -> list[tuple[str, str]]:
        return list(self._route(self.tags.flush()))

    def _route(self, pieces) -> Iterator[tuple[str, str]]:
        for tag, text in pieces:
            if tag:
                # a stray <think> while thinking or </think> while answering changes nothing
                self.thinking = tag == self.fmt.open_tag
                self.strip = True
                continue
            if self.strip:
                text = text.lstrip()
                if not text:
                    continue
                self.strip = False
            yield (REASONING if self.thinking else TEXT), text
