"""How much work a chat template may do in one rendering, checked before each step allocates.

A GGUF's template is a stranger's code: `{{ 'a'|center(1000000000) }}` or a chain of `replace`
allocates gigabytes in one C call, long before the output cap sees a character. So every
operation that builds a string or list (filters, str methods, `*`, `+`, `%`, `~`, format specs,
joins, lipsum) first predicts its size from its arguments and is refused if that exceeds what is
left of the rendering's budget; what it really built is then spent from the budget. Filters that
are slow per character and every call also spend steps, bounding the time.

The budget lives in a ContextVar set by templates.render (and while compiling, where Jinja folds
constant expressions); outside both nothing is checked.
"""

from __future__ import annotations

import contextlib
import inspect
import re
from contextvars import ContextVar
from typing import Callable, Iterator

from .errors import TemplateError

MAX_BUILD_CHARS = 16_000_000  # characters (a list item counts 8) built over one rendering
MAX_STEPS = 1_000_000  # about a microsecond each: filter calls, calls, slow per-character filters
FILTER_STEPS = 10  # a filter call: ~0.3 us direct, ~10 us through map()/select()
CALL_STEPS = 50  # a sandboxed call (macro, method, global)
PIECE = 64  # what one small new string costs in a list (object + slot), in characters
MAX_INT_BITS = 4096  # integers a template computes (the ** rule of templates.py)


HINT = "give the model another template: llm phi register FILE --template TEMPLATE.jinja"


class Budget:
    def __init__(self, chars: int = MAX_BUILD_CHARS, steps: int = MAX_STEPS):
        self.chars, self.steps = chars, steps

    def check(self, chars: int, what: str) -> None:
        if chars > self.chars:
            raise TemplateError(
                f"Chat template refused: {what} would build {chars:,} characters, more than the "
                f"{self.chars:,} left of its budget ({MAX_BUILD_CHARS:,} per rendering)",
                hint=HINT)

    def spend(self, chars: int, what: str) -> None:
        self.check(chars, what)
        self.chars -= chars

    def step(self, steps: int, what: str) -> None:
        self.steps -= steps
        if self.steps < 0:
            raise TemplateError(f"Chat template refused: it does too much work ({what}; over {MAX_STEPS:,} steps "
                                "per rendering)",
                                hint=HINT)


_BUDGET: ContextVar[Budget | None] = ContextVar("llm_phi_template_budget", default=None)


@contextlib.contextmanager
def budget() -> Iterator[Budget]:
    """A fresh budget for one rendering (or one compilation) in this context."""
    b = Budget()
    token = _BUDGET.set(b)
    try:
        yield b
    finally:
        _BUDGET.reset(token)


def current() -> Budget:
    """The active budget; an unlimited stand-in when none is (plain Python use of the helpers)."""
    return _BUDGET.get() or Budget(chars=2**62, steps=2**62)


# ----------------------------------------------------------------------------- sizes


def size(x) -> int:
    """What a value costs: its length for a string, 8 per item (a pointer) for a list, tuple or dict."""
    if isinstance(x, str):
        return len(x)
    if isinstance(x, (list, tuple, dict, set, frozenset)):
        return 8 * len(x)
    return 0


def _int(x) -> int:
    return x if isinstance(x, int) else 0


def _slen(x) -> int:
    return len(x) if isinstance(x, str) else len(str(x)) if isinstance(x, (int, float)) else size(x)


def replace_size(s, old, new, count=-1) -> int:
    if not all(isinstance(v, str) for v in (s, old, new)):
        return _slen(s)
    hits = s.count(old) if old else len(s) + 1
    if isinstance(count, int) and count >= 0:
        hits = min(hits, count)
    return len(s) + hits * max(len(new) - len(old), 0)


# `%` and format specs: every width and precision (digits, or * taken from the arguments)
_PERCENT = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?(.)", re.DOTALL)
_DIGITS = re.compile(r"\d+")


def percent_size(fmt, args) -> int:
    """An upper bound of `fmt % args` for the widths it asks for (the values are spent afterwards)."""
    if not isinstance(fmt, str):
        return 0
    star = iter(args if isinstance(args, tuple) else (args,))
    total = len(fmt)
    for m in _PERCENT.finditer(fmt):
        for field in (m[1], m[2]):
            if field == "*":
                total += _int(next(star, 0))
            elif field:
                total += int(field) if len(field) < 12 else 10**12
    if isinstance(args, tuple):
        total += sum(_slen(a) for a in args)
    elif isinstance(args, dict):
        total += sum(_slen(a) for a in args.values())
    else:
        total += _slen(args)
    return total


def spec_size(spec: str) -> int:
    """The largest width or precision a str.format spec asks for."""
    return max((int(d) if len(d) < 12 else 10**12 for d in _DIGITS.findall(spec or "")), default=0)


def join_size(sep, items: list) -> int:
    parts = sum(_slen(x) for x in items)
    return parts + _slen(sep) * max(len(items) - 1, 0)


def items_size(x) -> int:
    """What a list of x's items costs: a new string per character of a string, a slot per item."""
    return PIECE * len(x) if isinstance(x, str) else size(x) if hasattr(x, "__len__") else 0


def split_size(s, sep=None, maxsplit=-1) -> int:
    """An upper bound of s.split(sep) (and rsplit, splitlines): the pieces, each a new string."""
    if not isinstance(s, str):
        return 0
    if isinstance(sep, str) and sep:
        pieces = s.count(sep) + 1
    else:  # whitespace (or line) boundaries
        pieces = sum(s.count(c) for c in " \t\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029") + 1
    if isinstance(maxsplit, int) and maxsplit >= 0:
        pieces = min(pieces, maxsplit + 1)
    return len(s) + PIECE * pieces


def json_size(value, indent) -> int:
    """An upper bound of json.dumps(value, indent=indent): each item's line indented to its depth."""
    width = len(indent) if isinstance(indent, str) else _int(indent)
    total, stack = 0, [(value, 1)]
    while stack:
        v, depth = stack.pop()
        total += _slen(v) + 8 + width * depth
        if total > MAX_BUILD_CHARS * 4:
            break
        if isinstance(v, dict):
            stack.extend((x, depth + 1) for kv in v.items() for x in kv)
        elif isinstance(v, (list, tuple)):
            stack.extend((x, depth + 1) for x in v)
    return total


def sized(value):
    """A list of an iterable (so it can be measured and then consumed), other values unchanged."""
    if isinstance(value, (str, list, tuple, dict)) or not hasattr(value, "__iter__"):
        return value
    items = []
    b = current()
    for item in value:
        b.step(1, "an iteration")
        items.append(item)
    return items


# ----------------------------------------------------------------------------- the rows

# name -> predict(arguments) -> (characters it may build, steps it takes). `arguments` are the
# call's bound arguments by parameter name, defaults applied; a predictor may replace an iterable
# argument by a list (so that it can measure it).
Predict = Callable[[dict], "tuple[int, int]"]


def _per_char(chars_each: int, steps_each: int, arg: str = "s") -> Predict:
    return lambda a: (chars_each * _slen(a[arg]), steps_each * _slen(a[arg]))


def _per_item(steps_each: int, arg: str = "value") -> Predict:
    def predict(a):
        a[arg] = sized(a[arg])
        n = len(a[arg]) if hasattr(a[arg], "__len__") else 0
        return items_size(a[arg]), steps_each * n
    return predict


def _join(a):
    a["value"] = sized(a["value"])
    return join_size(a["d"], a["value"] if isinstance(a["value"], list) else list(a["value"])), 0


def _sum(a):
    a["iterable"] = items = sized(a["iterable"])
    if isinstance(a["start"], (int, float)):
        return 0, len(items)
    total = sum(size(x) for x in items)
    return total, len(items) * total // 16  # each + copies the growing sequence


def _batch(a):
    a["value"] = sized(a["value"])
    return 8 * _int(a["linecount"]) + items_size(a["value"]), len(a["value"])


FILTERS: dict[str, Predict] = {
    "center": lambda a: (max(_slen(a["value"]), _int(a["width"])), 0),
    "indent": lambda a: (_slen(a["s"]) + (_slen(a["width"]) if isinstance(a["width"], str) else _int(a["width"]))
                         * (str(a["s"]).count("\n") + 1), 0),
    "format": lambda a: (percent_size(a["value"], a["kwargs"] or a["args"]), 0),
    "replace": lambda a: (replace_size(a["s"], a["old"], a["new"], a["count"] if a["count"] is not None else -1), 0),
    "join": _join,
    "sum": _sum,
    "batch": _batch,
    "slice": lambda a: (8 * _int(a["slices"]), _int(a["slices"])),
    "tojson": lambda a: (json_size(a["x"], a["indent"]), 0),
    "wordwrap": lambda a: (_slen(a["s"]) * (1 + _slen(a["wrapstring"] or "\n")), 8 * _slen(a["s"])),
    "urlize": _per_char(4, 3, "value"),
    "title": _per_char(1, 1),
    "wordcount": _per_char(0, 1),
    "urlencode": _per_char(3, 1, "value"),
    "pprint": lambda a: (0, _slen(a["value"])),
    "list": _per_item(0),
    "unique": _per_item(2),
    "sort": _per_item(8),
    "dictsort": _per_item(8),
    "groupby": _per_item(8),
}

STR_METHODS: dict[str, Predict] = {
    "center": lambda a: (max(len(a["self"]), _int(a["width"])), 0),
    "ljust": lambda a: (max(len(a["self"]), _int(a["width"])), 0),
    "rjust": lambda a: (max(len(a["self"]), _int(a["width"])), 0),
    "zfill": lambda a: (max(len(a["self"]), _int(a["width"])), 0),
    "expandtabs": lambda a: (len(a["self"]) + a["self"].count("\t") * max(_int(a["tabsize"]), 0), 0),
    "replace": lambda a: (replace_size(a["self"], a["old"], a["new"], a["count"]), 0),
    "translate": lambda a: (len(a["self"]) * max([1] + [_slen(v) for v in getattr(a["table"], "values", list)()]), 0),
    "join": lambda a: (join_size(a["self"], a["iterable"] if isinstance(a["iterable"], list) else []), 0),
    "split": lambda a: (split_size(a["self"], a["sep"], a["maxsplit"]), 0),
    "rsplit": lambda a: (split_size(a["self"], a["sep"], a["maxsplit"]), 0),
    "splitlines": lambda a: (split_size(a["self"]), 0),
}
# Signatures of the str methods above (builtins have none to inspect in every Python version).
_STR_PARAMS = {"center": ("width", "fillchar"), "ljust": ("width", "fillchar"), "rjust": ("width", "fillchar"),
               "zfill": ("width",), "expandtabs": ("tabsize",), "replace": ("old", "new", "count"),
               "translate": ("table",), "join": ("iterable",), "split": ("sep", "maxsplit"),
               "rsplit": ("sep", "maxsplit"), "splitlines": ("keepends",)}
_STR_DEFAULTS = {"tabsize": 8, "count": -1, "fillchar": " ", "sep": None, "maxsplit": -1, "keepends": False}


_PASSED = ("eval_ctx", "environment", "env", "context", "ctx")


def _filter_signature(func):
    """(signature, leading arguments Jinja passes that it does not show). Jinja's async-aware
    filters take an eval context first while their signature is the plain function's."""
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        return None, 0
    first = next(iter(signature.parameters), None)
    hidden = getattr(func, "jinja_pass_arg", None) is not None and first not in _PASSED
    return signature, int(hidden)


def guard_filter(name: str, func: Callable, what: str | None = None) -> Callable:
    """`func` (a Jinja filter) checked against the budget: its row's prediction before it runs,
    one step per call, and the size of what it returns afterwards."""
    predict = FILTERS.get(name)
    signature, lead = _filter_signature(func)
    what = what or f"the {name} filter"

    def guarded(*args, **kwargs):
        b = current()
        b.step(FILTER_STEPS, what)
        if predict is not None and signature is not None:
            try:
                bound = signature.bind(*args[lead:], **kwargs)
            except TypeError:  # let the filter raise its own error
                bound = None
            if bound is not None:
                bound.apply_defaults()
                chars, steps = predict(bound.arguments)
                b.step(steps, what)
                b.check(chars, what)
                args, kwargs = args[:lead] + bound.args, bound.kwargs
        result = func(*args, **kwargs)
        b.spend(size(result), what)
        return result

    guarded.__wrapped__ = func
    guarded.__name__ = getattr(func, "__name__", name)
    if hasattr(func, "jinja_pass_arg"):  # pass_context / pass_eval_context / pass_environment
        guarded.jinja_pass_arg = func.jinja_pass_arg
    return guarded


def check_str_method(method, args: tuple, kwargs: dict) -> tuple:
    """Before `'text'.method(*args)` runs from a template: predict it; returns the args to call with."""
    name = method.__name__
    params = _STR_PARAMS[name]
    if name == "join" and args:
        args = (sized(args[0]),) + args[1:]
    values = {**_STR_DEFAULTS, **dict(zip(params, args)), **kwargs, "self": method.__self__}
    if set(values) - set(params) - {"self"} - set(_STR_DEFAULTS):
        return args  # a wrong keyword: let the method raise its own TypeError
    if any(p not in values for p in params if p not in _STR_DEFAULTS):
        return args
    chars, steps = STR_METHODS[name](values)
    current().step(steps, f"str.{name}")
    current().check(chars, f"str.{name}")
    return args


def is_guarded_str_method(obj) -> bool:
    return isinstance(getattr(obj, "__self__", None), str) and getattr(obj, "__name__", None) in STR_METHODS


def check_binop(operator: str, left, right) -> None:
    """Before `left <operator> right`: sequence repetition and concatenation, `%`, integer growth."""
    b = current()
    b.step(1, f"the {operator} operator")
    if operator == "*":
        if isinstance(left, int) and isinstance(right, int):
            if left.bit_length() + right.bit_length() > MAX_INT_BITS:
                raise TemplateError("Chat template refused: it multiplies integers too large to allow")
            return
        seq, n = (left, right) if isinstance(right, int) else (right, left)
        if isinstance(seq, (str, list, tuple)) and isinstance(n, int):
            b.check(size(seq) * max(n, 0), "repeating a string or list with *")
    elif operator == "+" and isinstance(left, (str, list, tuple)) and type(left) is type(right):
        b.check(size(left) + size(right), "joining two strings or lists with +")
    elif operator == "%" and isinstance(left, str):
        b.check(percent_size(left, right), "a % format")


def concat(*parts) -> str:
    """Jinja's `~` (with autoescape off, as in transformers): str() of each part, joined, counted
    before joining (the sandbox's call does not count it again)."""
    strings = [str(p) for p in parts]
    current().spend(sum(map(len, strings)), "joining strings with ~")
    return "".join(strings)


def lipsum_guard(func: Callable) -> Callable:
    """Jinja's lipsum(n, html, min, max) global: n paragraphs of up to `max` words of about 12 characters."""
    def lipsum(n=5, html=True, min=20, max=100):
        chars = _int(n) * _int(max) * 12
        current().step(chars // 12, "lipsum")
        current().check(chars, "lipsum")
        return func(n, html, min, max)

    return lipsum
