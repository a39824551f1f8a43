"""Split a stream of text pieces on a few marker strings, even when a marker arrives split
across pieces (tokens). The one job shared by the reasoning and the tool-call filters."""

from __future__ import annotations


def partial_tag_length(text: str, tags: tuple[str, ...]) -> int:
    """Length of the longest end of `text` that could be the start of one of `tags`."""
    return max((k for tag in tags for k in range(1, len(tag)) if text.endswith(tag[:k])), default=0)


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
