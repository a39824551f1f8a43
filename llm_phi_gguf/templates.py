"""Render chat templates exactly as transformers does, in a sandbox that bounds the work.

A GGUF's `tokenizer.chat_template` is code from a stranger. It runs in Jinja's
ImmutableSandboxedEnvironment (no attribute escapes, no mutation of our objects), with the
same options and globals transformers uses (trim_blocks, lstrip_blocks, loopcontrols,
raise_exception, tojson, strftime_now, a {% generation %} block), plus limits transformers
does not have: a budget on range() and loop iterations, on the output length, and
(template_limits.py) on what every string-building operation may allocate and on the number of
calls, each checked before the operation runs, so a hostile template cannot hang or exhaust memory.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache

from . import template_limits as limits
from .errors import TemplateError

MAX_OUTPUT_CHARS = 4_000_000  # a real prompt is far below this; a runaway template is not
MAX_RANGE_ITEMS = 100_000  # total range() items over one rendering
MAX_LOOP_ITEMS = 1_000_000  # total items over all {% for %} loops of one rendering
LOOP_BUDGET = "__phi_loop_budget__"  # the name every {% for %} iterable is wrapped in
CONCAT = "__phi_concat__"  # every `a ~ b` becomes a call of this (counted) function
CHARGE = "__phi_charge__"  # the filter every {% set x %}...{% endset %} block goes through
RESERVED = "__phi_"  # names a template may not assign


def _jinja():
    import jinja2
    from jinja2 import nodes
    from jinja2.ext import Extension
    from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedEscapeFormatter, SandboxedFormatter
    from jinja2.visitor import NodeTransformer

    class GenerationBlock(Extension):
        """transformers' {% generation %}...{% endgeneration %}: renders its body unchanged."""

        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return nodes.Scope(body).set_lineno(lineno)

    class BoundedFormat:
        """str.format / format_map: each field's width and precision checked before it is formatted."""

        def format_field(self, value, format_spec):
            limits.current().check(limits.spec_size(format_spec) + limits.size(value), "a format spec")
            return super().format_field(value, format_spec)

    class Formatter(BoundedFormat, SandboxedFormatter):
        pass

    class EscapeFormatter(BoundedFormat, SandboxedEscapeFormatter):
        pass

    class Rewrite(NodeTransformer):
        """Route the constructs that build text outside any call through counted ones."""

        def visit_For(self, node):  # loops over anything but range() (e.g. 'a' * 999999, nested)
            self.generic_visit(node)
            node.iter = nodes.Call(nodes.Name(LOOP_BUDGET, "load"), [node.iter], [], None, None, lineno=node.lineno)
            return node

        def visit_Concat(self, node):  # a ~ b
            self.generic_visit(node)
            return nodes.Call(nodes.Name(CONCAT, "load"), node.nodes, [], None, None, lineno=node.lineno)

        def visit_AssignBlock(self, node):  # {% set x %}{{ x }}{{ x }}{% endset %} in a loop doubles x
            self.generic_visit(node)
            node.filter = nodes.Filter(node.filter, CHARGE, [], [], None, None, lineno=node.lineno)
            return node

        def visit_Name(self, node):
            if node.ctx != "load" and node.name.startswith(RESERVED):
                raise TemplateError(f"Chat template assigns the reserved name {node.name}")
            return node

        def visit_Macro(self, node):
            if node.name.startswith(RESERVED):
                raise TemplateError(f"Chat template defines the reserved name {node.name}")
            return self.generic_visit(node)

    class BoundedSandbox(ImmutableSandboxedEnvironment):
        intercepted_binops = frozenset(["*", "**", "+", "%"])

        def call_binop(self, context, operator, left, right):
            if operator == "**" and _huge_power(left, right):
                raise TemplateError("Chat template computes a power too large to allow")
            limits.check_binop(operator, left, right)
            result = super().call_binop(context, operator, left, right)
            limits.current().spend(limits.size(result), f"the {operator} operator")
            return result

        def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 (Jinja's own signature)
            limits.current().step(limits.CALL_STEPS, "a call")
            if limits.is_guarded_str_method(__obj):
                args = limits.check_str_method(__obj, args, kwargs)
            result = super().call(__context, __obj, *args, **kwargs)
            if __obj is not limits.concat:  # it counted itself, before joining
                limits.current().spend(limits.size(result), f"calling {getattr(__obj, '__name__', 'a function')}")
            return result

        def wrap_str_format(self, value):
            if not (callable(value) and getattr(value, "__name__", None) in ("format", "format_map")
                    and isinstance(getattr(value, "__self__", None), str)):
                return None
            text, is_map = value.__self__, value.__name__ == "format_map"
            formatter = EscapeFormatter(self, escape=text.escape) if hasattr(text, "__html__") else Formatter(self)

            def format(*args, **kwargs):
                if is_map:
                    if kwargs or len(args) != 1:
                        raise TypeError("format_map() takes exactly one argument")
                    args, kwargs = (), args[0]
                return type(text)(formatter.vformat(text, args, kwargs))

            return format

        def _parse(self, source, name, filename):
            return Rewrite().visit(super()._parse(source, name, filename))

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


def _same(value):
    return value


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
    env.filters[CHARGE] = _same
    env.filters = {name: limits.guard_filter(name, f, "a {% set %} block" if name == CHARGE else None)
                   for name, f in env.filters.items()}
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["lipsum"] = limits.lipsum_guard(env.globals["lipsum"])
    env.globals[CONCAT] = limits.concat
    try:
        with limits.budget():  # Jinja folds constant expressions (filters too) while compiling
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
        with limits.budget():
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
