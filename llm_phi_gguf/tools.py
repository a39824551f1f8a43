"""Tool calling in a family's tool format (families.TOOL_FORMATS): tool definitions as the JSON
string the HF template puts on the system message, the model's calls found in its output and
parsed tolerantly, earlier calls written back as the model wrote them.

What the model writes is untrusted: a call that cannot be parsed becomes a ToolCall whose name
says what is wrong, so llm's chain answers it with a tool error instead of anything crashing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Optional

from .families import ToolFormat
from .tagstream import TagSplitter

MAX_CALL_CHARS = 100_000  # a call body longer than this is not parsed (untrusted, unbounded)


def definitions_json(tools) -> str:
    """llm Tool objects as the JSON list the model reads: [{name, description, parameters}]."""
    return json.dumps(
        [{"name": t.name, "description": t.description or "", "parameters": t.input_schema or {}} for t in tools],
        ensure_ascii=False,
    )


def call_text(fmt: ToolFormat, calls: list[tuple[str, dict]]) -> str:
    """Earlier calls written back the way the model writes them."""
    body = json.dumps([{"name": name, "arguments": arguments} for name, arguments in calls], ensure_ascii=False)
    return fmt.call_open + body + fmt.call_close


@dataclass(frozen=True)
class ParsedCall:
    name: str
    arguments: Optional[dict] = None
    error: Optional[str] = None  # set when the call is malformed; arguments is then None


def parse_calls(body: str) -> list[ParsedCall]:
    """The calls in one call block: a JSON list of {name, arguments}, or a bare object, or several
    objects in a row; arguments may be a JSON string. Never raises."""
    text = _unfence(body.strip())
    if not text:
        return [ParsedCall("", error="the tool call is empty")]
    if len(text) > MAX_CALL_CHARS:
        return [ParsedCall("", error=f"the tool call is longer than {MAX_CALL_CHARS} characters")]
    values, rest, problem = _json_values(text)
    items = [item for value in values for item in (value if isinstance(value, list) else [value])]
    calls = [_one_call(item) for item in items]
    if problem:  # the calls before the broken JSON stand; the broken one becomes an error
        calls.append(ParsedCall(_guess_name(rest), error=f"the tool call is not valid JSON ({problem})"))
    return calls or [ParsedCall("", error="the tool call list is empty")]


def _unfence(text: str) -> str:
    """Drop a Markdown code fence around the JSON, which small models like to add."""
    if text.startswith("```"):
        text = text.split("\n", 1)[1] if "\n" in text else text[3:]
        text = text[: text.rfind("```")] if text.rstrip().endswith("```") else text
    return text.strip()


def _json_values(text: str) -> tuple[list[Any], str, str]:
    """JSON values separated by whitespace or commas: (values, unparsed rest, why it failed)."""
    decoder = json.JSONDecoder()
    values, i = [], 0
    while i < len(text):
        try:
            value, i = decoder.raw_decode(text, i)
        except (ValueError, RecursionError) as e:
            return values, text[i:], _short(e)
        values.append(value)
        while i < len(text) and text[i] in " \t\r\n,;":
            i += 1
    return values, "", ""


def _one_call(item: Any) -> ParsedCall:
    if not isinstance(item, dict):
        return ParsedCall("", error=f"a tool call must be a JSON object, got {type(item).__name__}")
    if isinstance(item.get("function"), dict):  # OpenAI style {"type": "function", "function": {...}}
        item = item["function"]
    name = item.get("name")
    if not isinstance(name, str) or not name.strip():
        return ParsedCall("", error="the tool call has no name")
    arguments = item.get("arguments", item.get("parameters", {}))
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except (ValueError, RecursionError) as e:
            return ParsedCall(name.strip(), error=f"its arguments are not valid JSON ({_short(e)})")
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        return ParsedCall(name.strip(), error=f"its arguments must be a JSON object, got {type(arguments).__name__}")
    return ParsedCall(name.strip(), arguments)


def _guess_name(text: str) -> str:
    """The name of a call whose JSON is broken, if it can be read (for the error message)."""
    start = text.find('"name"')
    if start < 0:
        return ""
    rest = text[start + 6:].lstrip(" :")
    if not rest.startswith('"'):
        return ""
    end = rest.find('"', 1)
    return rest[1:end] if 0 < end <= 100 else ""


def _short(error: BaseException) -> str:
    return str(error).splitlines()[0][:120] if str(error) else type(error).__name__


MALFORMED = "malformed tool call"


def to_llm_call(call: ParsedCall, raw: str = ""):
    """An llm.ToolCall; a malformed call gets a name that cannot match a tool and says why, so
    llm's chain answers it with 'Error: tool "..." does not exist' naming the problem. Its
    arguments keep what the model wrote ({"raw": ...}) so the history can give it back verbatim."""
    import llm

    if call.error is None:
        return llm.ToolCall(name=call.name, arguments=call.arguments)
    who = f"{call.name}: " if call.name else ""
    return llm.ToolCall(name=f"{who}{MALFORMED}, {call.error}", arguments={"raw": raw[:MAX_CALL_CHARS]})


def written_call(fmt: ToolFormat, name: str, arguments: dict) -> str | None:
    """A malformed earlier call as the model wrote it (its closing tag, if any, is not kept)."""
    raw = arguments.get("raw") if isinstance(arguments, dict) else None
    return fmt.call_open + raw if MALFORMED in name and isinstance(raw, str) else None


class CallExtractor:
    """Stream filter: feed(text) -> the text outside call blocks; finish() -> (rest, call bodies).

    A block runs from call_open to call_close; a missing call_close ends it at the next
    call_open or at the end of the output.
    """

    def __init__(self, fmt: ToolFormat):
        self.fmt = fmt
        self.tags = TagSplitter((fmt.call_open, fmt.call_close))
        self.body: Optional[str] = None
        self.bodies: list[str] = []

    def feed(self, text: str) -> str:
        return self._route(self.tags.feed(text))

    def finish(self) -> tuple[str, list[str]]:
        rest = self._route(self.tags.flush())
        if self.body is not None:
            self.bodies.append(self.body)
            self.body = None
        return rest, self.bodies

    def _route(self, pieces) -> str:
        out = []
        for tag, text in pieces:
            if tag == self.fmt.call_open:
                if self.body is not None:
                    self.bodies.append(self.body)
                self.body = ""
            elif tag == self.fmt.call_close:
                if self.body is not None:
                    self.bodies.append(self.body)
                self.body = None
            elif self.body is not None:
                self.body += text
            else:
                out.append(text)
        return "".join(out)
