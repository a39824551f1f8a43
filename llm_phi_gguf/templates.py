"""Render chat templates exactly as transformers does, in a sandbox that bounds the work.

A GGUF's `tokenizer.chat_template` is code from a stranger. It runs in Jinja's
ImmutableSandboxedEnvironment (no attribute escapes, no mutation of our objects), with the
same options and globals transformers uses (trim_blocks, lstrip_blocks, loopcontrols,
raise_exception, tojson, strftime_now, a {% generation %} block), plus limits transformers
does not have: a budget on range() iterations, on the size of repeated strings and on the
output length, so a hostile template cannot hang or exhaust memory.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache

from .errors import TemplateError

MAX_OUTPUT_CHARS = 4_000_000  # a real prompt is far below this; a runaway template is not
MAX_RANGE_ITEMS = 100_000  # total range() items over one rendering
MAX_REPEAT_CHARS = 1_000_000  # largest string/list one `*` may build
MAX_LOOP_ITEMS = 1_000_000  # total items over all {% for %} loops of one rendering
LOOP_BUDGET = "__phi_loop_budget__"  # the name every {% for %} iterable is wrapped in


def _jinja():
    import jinja2
    from jinja2 import nodes
    from jinja2.ext import Extension
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class GenerationBlock(Extension):
        """transformers' {% generation %}...{% endgeneration %}: renders its body unchanged."""

        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return nodes.Scope(body).set_lineno(lineno)

    class BoundedSandbox(ImmutableSandboxedEnvironment):
        intercepted_binops = frozenset(["*", "**"])

        def call_binop(self, context, operator, left, right):
            if operator == "**" and _huge_power(left, right):
                raise TemplateError("Chat template computes a power too large to allow")
            if operator == "*" and isinstance(right, int) and isinstance(left, (str, list, tuple)):
                left, right = right, left
            if operator == "*" and isinstance(left, int) and isinstance(right, (str, list, tuple)):
                if left * len(right) > MAX_REPEAT_CHARS:
                    raise TemplateError("Chat template builds a string too large to allow")
            return super().call_binop(context, operator, left, right)

        def _parse(self, source, name, filename):
            # Loops over anything but range() (e.g. 'a' * 999999, nested) are bounded too.
            tree = super()._parse(source, name, filename)
            for loop in list(tree.find_all(nodes.For)):
                loop.iter = nodes.Call(nodes.Name(LOOP_BUDGET, "load"), [loop.iter], [], None, None,
                                       lineno=loop.lineno)
            return tree

    return jinja2, BoundedSandbox, GenerationBlock


def _huge_power(base, exponent) -> bool:
    """An integer power whose result would need more than 4096 bits (floats just overflow)."""
    if not (isinstance(base, int) and isinstance(exponent, int)) or abs(base) < 2:
        return False
    return exponent * abs(base).bit_length() > 4096


def _raise_exception(message):
    raise TemplateError(f"Chat template raised an error: {message}")


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    # transformers' tojson: no HTML escaping (unlike Jinja's own filter).
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt):
    return datetime.now().strftime(fmt)


class _RangeBudget:
    def __init__(self):
        self.left = MAX_RANGE_ITEMS

    def __call__(self, *args):
        r = range(*args)
        self.left -= len(r)
        if self.left < 0:
            raise TemplateError("Chat template loops too long (range budget exceeded)")
        return r


class _LoopBudget:
    def __init__(self):
        self.left = MAX_LOOP_ITEMS

    def __call__(self, iterable):
        for item in iterable:
            self.left -= 1
            if self.left < 0:
                raise TemplateError("Chat template loops too long (loop budget exceeded)")
            yield item


@lru_cache(maxsize=32)
def compile_template(source: str):
    """Compile once per template text; raises TemplateError for invalid Jinja."""
    jinja2, Sandbox, Generation = _jinja()
    env = Sandbox(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=["jinja2.ext.loopcontrols", Generation],
        undefined=jinja2.Undefined,
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    try:
        return env.from_string(source)
    except jinja2.TemplateSyntaxError as e:
        raise TemplateError(f"Chat template is not valid Jinja: {e.message} (line {e.lineno})") from None


def render(
    source: str,
    messages: list[dict],
    *,
    add_generation_prompt: bool = True,
    bos_token: str = "",
    eos_token: str = "",
    **extra,
) -> str:
    """Render `messages` with a chat template the way transformers' apply_chat_template does."""
    import jinja2
    from jinja2.sandbox import SecurityError

    template = compile_template(source)
    variables = {
        "messages": messages,
        "add_generation_prompt": add_generation_prompt,
        "bos_token": bos_token,
        "eos_token": eos_token,
        "range": _RangeBudget(),
        **extra,
        LOOP_BUDGET: _LoopBudget(),
    }
    out: list[str] = []
    size = 0
    try:
        for chunk in template.generate(**variables):
            size += len(chunk)
            if size > MAX_OUTPUT_CHARS:
                raise TemplateError("Chat template output is too long (over 4M characters)")
            out.append(chunk)
    except TemplateError:
        raise
    except SecurityError as e:
        raise TemplateError(f"Chat template blocked by the sandbox: {e}") from None
    except jinja2.TemplateError as e:
        raise TemplateError(f"Chat template failed: {e}") from None
    except (RecursionError, MemoryError):
        raise TemplateError("Chat template recursed or allocated too much") from None
    except Exception as e:  # a stranger's template can raise anything; report it in one line
        raise TemplateError(f"Chat template failed: {type(e).__name__}: {e}") from None
    return "".join(out)
