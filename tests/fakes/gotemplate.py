"""A small renderer for the subset of Go's text/template that Ollama's Phi templates use.

Written from the text/template documentation (https://pkg.go.dev/text/template), not from Go's
code. Supported: text, `{{ }}` actions with `{{-`/`-}}` trimming, comments, `if`/`else if`/
`else`/`end`, `range` (with `$i, $v :=`) and `with`, variables (`$`, `$x := ...`, `$x = ...`),
field chains (`.Role`, `$.Messages`, `.Function.Name`), string/number/bool literals,
parenthesised pipelines, `|` pipes and the functions and, or, not, eq, ne, lt, le, gt, ge, len,
slice, index, print, json. Go's truthiness: false, 0, "", nil and empty collections are false.

`render_chat` then applies what Ollama does around the template for a chat request (facts in
Ollama's template/template.go and server/routes.go): the model's SYSTEM is prepended when the
conversation does not start with a system message, consecutive messages of one role (tool
results excepted) are joined, tools and tool calls are given as Ollama's template data (printing
as Go's JSON), and templates without `.Messages` run once per system/prompt/response turn, the
last turn cut right after `{{ .Response }}`. `capabilities` is /api/show's list for a template.

The real thing is the Go harness in tests/fakes/ollama_render; tests/test_ollama_harness.py checks
that this emulation agrees with it. It serves the fake Ollama server, which must not need Go.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.S)
_TOKEN = re.compile(r"""\s*(?:(?P<str>"(?:[^"\\]|\\.)*"|`[^`]*`)|(?P<num>-?\d+(?:\.\d+)?)|(?P<decl>:=|=)
    |(?P<punct>[()|,])|(?P<var>\$[A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)|(?P<field>(?:\.[A-Za-z0-9_]+)+|\.)
    |(?P<ident>[A-Za-z_][A-Za-z0-9_]*))""", re.X)


class GoTemplateError(Exception):
    pass


@dataclass
class Node:
    kind: str  # text | action | if | range | with
    text: str = ""
    pipe: list = field(default_factory=list)  # [decl_vars, decl_op, [commands]]
    body: list = field(default_factory=list)
    else_body: list = field(default_factory=list)


# ---------------------------------------------------------------- lexing and parsing


def _split(source: str) -> list[tuple[str, str]]:
    """[(kind, text)]: text pieces and action bodies, with trim markers already applied."""
    out: list[tuple[str, str]] = []
    pos, trim_next = 0, False
    for m in _ACTION.finditer(source):
        text = source[pos:m.start()]
        if trim_next:
            text = text.lstrip(" \t\r\n")
        if m.group(1):
            text = text.rstrip(" \t\r\n")
        out.append(("text", text))
        body = m.group(2).strip()
        if not body.startswith("/*"):
            out.append(("action", body))
        pos, trim_next = m.end(), bool(m.group(3))
    tail = source[pos:]
    out.append(("text", tail.lstrip(" \t\r\n") if trim_next else tail))
    if "{{" in tail:
        raise GoTemplateError("unclosed action")
    return [p for p in out if p != ("text", "")]


def _tokens(body: str) -> list[tuple[str, str]]:
    toks, pos = [], 0
    while pos < len(body.rstrip()):
        m = _TOKEN.match(body, pos)
        if not m or m.end() == pos:
            raise GoTemplateError(f"unexpected {body[pos:]!r} in action")
        toks.append((m.lastgroup, m.group(m.lastgroup)))
        pos = m.end()
    return toks


def _parse_pipe(toks: list) -> list:
    """[declared variables, ':=' / '=' / None, commands]; each command is a list of operands."""
    names, op = [], None
    decl = next((i for i, t in enumerate(toks) if t[0] == "decl"), None)
    if decl is not None and all(k in ("var", "punct") for k, _ in toks[:decl]):
        names, op, toks = [v for k, v in toks[:decl] if k == "var"], toks[decl][1], toks[decl + 1:]
    commands: list = [[]]
    stack: list = []
    for kind, text in toks:
        if text == "(":
            stack.append(commands)
            commands = [[]]
        elif text == ")":
            inner, commands = commands, stack.pop()
            commands[-1].append(("pipe", [[], None, inner]))
        elif text == "|":
            commands.append([])
        else:
            commands[-1].append((kind, text))
    if stack or not all(commands):
        raise GoTemplateError("malformed pipeline")
    return [names, op, commands]


def parse(source: str) -> list[Node]:
    pieces = _split(source)
    root: list[Node] = []
    stack: list[tuple[Node, list]] = []  # (open block, list currently filled)
    current = root
    for kind, text in pieces:
        if kind == "text":
            current.append(Node("text", text))
            continue
        toks = _tokens(text)
        word = toks[0][1] if toks[0][0] == "ident" else ""
        if word in ("if", "range", "with"):
            node = Node(word, pipe=_parse_pipe(toks[1:]))
            current.append(node)
            stack.append((node, current))
            current = node.body
        elif word == "else":
            if not stack:
                raise GoTemplateError("unexpected {{else}}")
            node = stack[-1][0]
            current = node.else_body
            if len(toks) > 1:  # else if / else with: a nested block closed by the same end
                inner = Node(toks[1][1], pipe=_parse_pipe(toks[2:]))
                current.append(inner)
                stack.append((inner, None))
                current = inner.body
        elif word == "end":
            if not stack:
                raise GoTemplateError("unexpected {{end}}")
            node, parent = stack.pop()
            while parent is None:  # close the whole else-if chain
                node, parent = stack.pop()
            current = parent
        elif word in ("break", "continue") and len(toks) == 1:
            current.append(Node(word))
        else:
            current.append(Node("action", pipe=_parse_pipe(toks)))
    if stack:
        raise GoTemplateError("unexpected EOF")
    return root


def cut_after_field(nodes: list[Node], name: str) -> list[Node]:
    """Ollama's legacy-template trick: drop every node that follows the first `.Name` field."""
    found = [False]

    def walk(items: list[Node]) -> list[Node]:
        out = []
        for n in items:
            if found[0]:
                break
            if n.kind == "action" and any(("field", f".{name}") in c for c in n.pipe[2]):
                found[0] = True
                out.append(n)
            elif n.kind in ("if", "range", "with"):
                out.append(Node(n.kind, pipe=n.pipe, body=walk(n.body), else_body=walk(n.else_body)))
            else:
                out.append(n)
        return out

    return walk(nodes)


# ---------------------------------------------------------------- evaluation


def truth(v) -> bool:
    return bool(v) if v is not None else False


def _slice(x, *ij):
    return x[ij[0]:ij[1]] if len(ij) == 2 else x[ij[0]:] if ij else x


def _eq(a, *bs):
    return any(a == b for b in bs)


FUNCS = {
    "not": lambda x: not truth(x),
    "eq": _eq,
    "ne": lambda a, b: a != b,
    "lt": lambda a, b: a < b, "le": lambda a, b: a <= b,
    "gt": lambda a, b: a > b, "ge": lambda a, b: a >= b,
    "len": len,
    "slice": _slice,
    "index": lambda x, *ks: _index(x, ks),
    "print": lambda *a: "".join(fmt(x) for x in a),
    "json": lambda x: go_json(x.json_value if isinstance(x, (GoValue, GoList)) else x),
}


def go_json(x) -> str:
    """Go's json.Marshal: compact, non-ASCII kept, <, > and & (and U+2028/9) escaped. Key order is
    the caller's: build dicts in Go's struct field order, with map keys sorted (see _tool_data)."""
    text = json.dumps(x, separators=(",", ":"), ensure_ascii=False, sort_keys=False)
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"),
                    ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return text


def _index(x, keys):
    for k in keys:
        x = x[k]
    return x


def fmt(v) -> str:
    if v is None:
        return "<no value>"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (GoValue, GoList)):
        return go_json(v.json_value)
    if isinstance(v, (dict, list)):
        return json.dumps(v, separators=(",", ":"))
    return str(v)


class GoValue(dict):
    """A Go value with String() in Ollama's template data (tools, arguments): fields by their Go
    names for the template, and the JSON it prints as."""

    def __init__(self, fields, json_value):
        super().__init__(fields)
        self.json_value = json_value


class GoList(list):
    def __init__(self, items, json_value):
        super().__init__(items)
        self.json_value = json_value


class _Scope:
    def __init__(self, root):
        self.frames = [{"$": root}]

    def get(self, name):
        for frame in reversed(self.frames):
            if name in frame:
                return frame[name]
        raise GoTemplateError(f"undefined variable: {name}")

    def set(self, name, value):
        for frame in reversed(self.frames):
            if name in frame:
                frame[name] = value
                return
        raise GoTemplateError(f"undefined variable: {name}")


def _field(obj, path: str):
    for part in [p for p in path.split(".") if p]:
        if isinstance(obj, dict):
            obj = obj.get(part)
        else:
            raise GoTemplateError(f"can't evaluate field {part} in {type(obj).__name__}")
    return obj


def _operand(op, dot, scope):
    kind, text = op
    if kind == "str":
        return json.loads(text) if text[0] == '"' else text[1:-1]
    if kind == "num":
        return float(text) if "." in text else int(text)
    if kind == "field":
        return _field(dot, text)
    if kind == "var":
        name, _, rest = text.partition(".")
        return _field(scope.get(name), rest)
    if kind == "pipe":
        return _pipe(op[1], dot, scope)
    if kind == "ident" and text in ("true", "false", "nil"):
        return {"true": True, "false": False, "nil": None}[text]
    raise GoTemplateError(f"unexpected {text!r}")


def _command(cmd, dot, scope, piped=()):
    head = cmd[0]
    if head[0] == "ident" and head[1] in ("and", "or"):  # short-circuit, return the deciding value
        value = None
        for op in cmd[1:] + ([("value", piped[0])] if piped else []):
            value = piped[0] if op[0] == "value" else _operand(op, dot, scope)
            if truth(value) != (head[1] == "and"):
                return value
        return value
    if head[0] == "ident" and head[1] in FUNCS:
        args = [_operand(op, dot, scope) for op in cmd[1:]] + list(piped)
        return FUNCS[head[1]](*args)
    if len(cmd) > 1 or piped:
        raise GoTemplateError(f"{head[1]} is not a function")
    return _operand(head, dot, scope)


def _pipe(pipe, dot, scope):
    names, op, commands = pipe
    value, piped = None, ()
    for cmd in commands:
        value = _command(cmd, dot, scope, piped)
        piped = (value,)
    for name in names:
        scope.frames[-1][name] = value if op == ":=" else scope.set(name, value)
    return value


class _LoopControl(Exception):
    def __init__(self, kind: str):
        self.kind = kind


def _exec(nodes, dot, scope, out):
    for n in nodes:
        if n.kind in ("break", "continue"):
            raise _LoopControl(n.kind)
        if n.kind == "text":
            out.append(n.text)
        elif n.kind == "action":
            value = _pipe(n.pipe, dot, scope)
            if not n.pipe[0]:
                out.append(fmt(value))
        elif n.kind in ("if", "with"):
            scope.frames.append({})
            try:
                value = _pipe([[], None, n.pipe[2]], dot, scope)
                if truth(value):
                    _exec(n.body, value if n.kind == "with" else dot, scope, out)
                else:
                    _exec(n.else_body, dot, scope, out)
            finally:
                scope.frames.pop()
        elif n.kind == "range":
            _range(n, dot, scope, out)


def _range(n, dot, scope, out):
    names, _, commands = n.pipe
    items = _pipe([[], None, commands], dot, scope) or []
    pairs = list(items.items()) if isinstance(items, dict) else list(enumerate(items))
    if not pairs:
        _exec(n.else_body, dot, scope, out)
    for key, item in pairs:
        frame = dict(zip(names, (key, item))) if len(names) == 2 else {names[0]: item} if names else {}
        scope.frames.append(frame)
        try:
            _exec(n.body, item, scope, out)
        except _LoopControl as control:
            if control.kind == "break":
                break
        finally:
            scope.frames.pop()


def execute(nodes: list[Node], data: dict) -> str:
    out: list[str] = []
    _exec(nodes, data, _Scope(data), out)
    return "".join(out)


def render(source: str, data: dict) -> str:
    return execute(parse(source), data)


# ---------------------------------------------------------------- Ollama's chat wrapper


def uses(source: str, name: str) -> bool:
    return re.search(r"\.%s\b" % name, source) is not None


def thinking_tags(source: str) -> tuple[str, str]:
    """Ollama's inference of thinking tags: a `.Thinking` field inside a range over `.Messages`;
    the list holding it starts and ends with the tags (first and last text, trimmed)."""
    tags = ("", "")

    def names(pipe, field):
        return any(op == ("field", field) or (op[0] == "field" and op[1].startswith(field + "."))
                   for cmd in pipe[2] for op in cmd) if pipe else False

    def visit(items, in_messages_range):
        nonlocal tags
        for n in items:
            here = n.kind != "text" and names(n.pipe, ".Thinking") and in_messages_range
            if here:
                first, last = items[0], items[-1]
                tags = (first.text.strip() if first.kind == "text" else "",
                        last.text.strip() if last.kind == "text" else "")
            if n.kind in ("if", "with", "range"):
                inner = in_messages_range or (n.kind == "range" and names(n.pipe, ".Messages"))
                if n.kind == "range" and not names(n.pipe, ".Messages"):
                    inner = False
                visit(n.body, inner)
                visit(n.else_body, inner)

    visit(parse(source), False)
    return tags


def capabilities(source: str) -> list[str]:
    """/api/show's capabilities for a GGUF model whose Go template is in use (server/images.go)."""
    caps = ["completion"]
    caps += ["tools"] if uses(source, "Tools") else []
    caps += ["insert"] if uses(source, "Suffix") else []
    caps += ["thinking"] if all(thinking_tags(source)) else []
    return caps


def _collate(messages: list[dict]) -> tuple[str, list[dict]]:
    system = [m["content"] for m in messages if m["role"] == "system"]
    merged: list[dict] = []
    for m in messages:
        if merged and merged[-1]["Role"] == m["role"] and m["role"] != "tool":
            merged[-1]["Content"] += "\n\n" + m["content"]
        else:
            merged.append({"Role": m["role"], "Content": m.get("content", ""), "Thinking": m.get("thinking", ""),
                           "Images": None, "ToolCalls": _calls_data(m.get("tool_calls")),
                           "ToolName": m.get("tool_name", ""), "ToolCallID": m.get("tool_call_id", "")})
    return "\n\n".join(system), merged


def _calls_data(calls):
    if not calls:
        return None
    out = []
    for c in calls:
        f = c.get("function", {})
        args = f.get("arguments") or {}
        args = {k: args[k] for k in sorted(args)}
        out.append({"ID": c.get("id", ""), "Function": {"Index": f.get("index", 0), "Name": f.get("name", ""),
                                                         "Arguments": GoValue(args, args)}})
    return out


def _property_json(p: dict) -> dict:
    out = {}
    for key in ("anyOf", "type", "items", "description", "enum", "properties", "required"):
        value = p.get(key)
        if key == "anyOf" and value:
            value = [_property_json(x) for x in value]
        if key == "type" and isinstance(value, list) and len(value) == 1:
            value = value[0]
        if key == "properties" and value is not None:
            value = {k: _property_json(v) for k, v in value.items()}  # an ordered map: request order
        if value not in (None, "", [], {}) or (key == "properties" and value == {}):
            out[key] = value
    return out


def _tool_data(tool: dict) -> GoValue:
    """One tool as Ollama's template sees it: Go field names, and its JSON in struct field order
    with the properties map's keys sorted."""
    f = tool.get("function", {})
    p = f.get("parameters") or {}
    props = p.get("properties")
    props_json = None if props is None else {k: _property_json(props[k]) for k in sorted(props)}
    params_json = {"type": p.get("type", "")}
    for key in ("$defs", "items"):
        if p.get(key) is not None:
            params_json[key] = p[key]
    if p.get("required"):
        params_json["required"] = p["required"]
    params_json["properties"] = props_json
    function_json = {"name": f.get("name", ""), "description": f.get("description", ""), "parameters": params_json}
    tool_json = {"type": tool.get("type", "")}
    if tool.get("items") is not None:
        tool_json["items"] = tool["items"]
    tool_json["function"] = function_json
    properties = GoValue(props_json or {}, props_json if props_json is not None else {})
    params = GoValue({"Type": params_json["type"], "Required": p.get("required"), "Properties": properties}, params_json)
    function = GoValue({"Name": function_json["name"], "Description": function_json["description"],
                        "Parameters": params}, function_json)
    return GoValue({"Type": tool_json["type"], "Function": function}, tool_json)


def render_chat(source: str, messages: list[dict], system: str | None = None, tools=None) -> str:
    """The prompt Ollama builds for a chat request with this template (and model SYSTEM)."""
    if system and messages and messages[0]["role"] != "system":
        messages = [{"role": "system", "content": system}] + list(messages)
    collated_system, msgs = _collate(messages)
    nodes = parse(source)
    if uses(source, "Messages"):
        tool_data = None if tools is None else GoList([_tool_data(t) for t in tools],
                                                     [_tool_data(t).json_value for t in tools])
        return execute(nodes, {"System": collated_system, "Messages": msgs, "Tools": tool_data,
                               "Response": "", "Think": False, "ThinkLevel": "", "IsThinkSet": False})
    out, turn = [], {"System": "", "Prompt": "", "Response": ""}
    for m in msgs:
        starts_turn = {"system": turn["Prompt"] or turn["Response"], "user": turn["Response"]}
        if starts_turn.get(m["Role"]):
            out.append(execute(nodes, turn))
            turn = {"System": "", "Prompt": "", "Response": ""}
        key = {"system": "System", "user": "Prompt", "assistant": "Response"}.get(m["Role"])
        if key:
            turn[key] = m["Content"]
    if not uses(source, "Response"):
        nodes = nodes + [Node("action", pipe=[[], None, [[("field", ".Response")]]])]
    out.append(execute(cut_after_field(nodes, "Response"), turn))
    return "".join(out)
