"""Split a stream of text pieces on a few marker strings, even when a marker arrives split
across pieces (tokens). The one job shared by the reasoning and the tool-call filters."""

from __future__ import annotations


def partial_tag_length(text: str, tags: tuple[str, ...]) -> int:
    """Length of the longest end of `text` that could be the start of one of `tags`.

    Runs once per generated token for each filter, so it looks only where a tag's first
    character occurs in the last len(tag) - 1 characters (str.find, in C): about 1 us for
    text without one, where trying every prefix with endswith took 25 us a token."""
    n, best = len(text), 0
    for tag in filter(None, tags):
        i = text.find(tag[0], max(n - len(tag) + 1, 0))
        while i >= 0:  # the first match that starts a prefix of tag is the longest for it
            if tag.startswith(text[i:]):
                best = max(best, n - i)
                break
            i = text.find(tag[0], i + 1)
    return best


class TagSplitter:
    """feed(text) -> [(tag, "") or ("", text)], in order; text that may begin a tag is held back."""

    def __init__(self, tags: tuple[str, ...]):
        self.tags = tuple(t for t in tags if t)
        self.pending = ""

    def feed(self, text: str) -> list[tuple[str, str]]:
        self.pending += text
        out: list[tuple[str, str]] = []
        while True:
            hits = [(i, tag) for tag in self.tags if (i := self.pending.find(tag)) >= 0]
            if not hits:
                break
            i, tag = min(hits, key=lambda h: (h[0], -len(h[1])))
            if i:
                out.append(("", self.pending[:i]))
            out.append((tag, ""))
            self.pending = self.pending[i + len(tag):]
        keep = partial_tag_length(self.pending, self.tags)
        if len(self.pending) > keep:
            out.append(("", self.pending[: len(self.pending) - keep]))
            self.pending = self.pending[len(self.pending) - keep:]
        return out

    def flush(self) -> list[tuple[str, str]]:
        out, self.pending = ([("", self.pending)] if self.pending else []), ""
        return out
