"""A hostile chat template is refused before it allocates: every string-building operation is
checked against the rendering's budget (template_limits.py), so none takes more than about a
second or 100 MB. Each refusal is one line that names the operation and the next step.

Time and memory are measured in a child process (CPU seconds and the growth of ru_maxrss over a
warmed-up baseline), so the figures are the template's alone."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from llm_phi_gguf import families, templates
from llm_phi_gguf.errors import TemplateError

USER = [{"role": "user", "content": "x"}]
NEXT_STEP = "llm phi register FILE --template"

# name -> (template, what the one-line refusal names)
HOSTILE = {
    "format then center (issue 15)": ("{{ '%s'|format('a')|center(1000000000) }}", "the center filter would build"),
    "chained replace": ("{{ ('a' * 1000000)|replace('a', 'aaaaaaaaaa')|replace('a', 'aaaaaaaaaa')"
                        "|replace('a', 'aaaaaaaaaa') }}", "the replace filter would build"),
    "str.center": ("{{ 'a'.center(1000000000) }}", "str.center would build"),
    "str.ljust": ("{{ 'a'.ljust(1000000000) }}", "str.ljust would build"),
    "str.rjust": ("{{ 'a'.rjust(1000000000) }}", "str.rjust would build"),
    "str.zfill": ("{{ 'a'.zfill(1000000000) }}", "str.zfill would build"),
    "str.replace": ("{% set s = 'a' * 1000000 %}{{ s.replace('a', s) }}", "str.replace would build"),
    "str.expandtabs": ("{{ ('\t' * 100000).expandtabs(100000) }}", "str.expandtabs would build"),
    "str.translate": ("{{ ('a' * 100000).translate({97: 'b' * 100000}) }}", "str.translate would build"),
    "indent": ("{{ ('a\n' * 100000)|indent(100000) }}", "the indent filter would build"),
    "percent width": ("{{ '%1000000000s' % 'a' }}", "a % format would build"),
    "percent star": ("{{ '%*s' % (1000000000, 'a') }}", "a % format would build"),
    "format filter": ("{{ '%1000000000s'|format('a') }}", "the format filter would build"),
    "str.format width": ("{{ '{:>1000000000}'.format('a') }}", "a format spec would build"),
    "str.format nested width": ("{{ '{:>{}}'.format('a', 1000000000) }}", "a format spec would build"),
    "str.format precision": ("{{ '{:.1000000000f}'.format(1.0) }}", "a format spec would build"),
    "join filter": ("{{ (['a'] * 50000)|join('b' * 1000) }}", "the join filter would build"),
    "str.join": ("{{ ('b' * 1000).join(['a'] * 50000) }}", "str.join would build"),
    "string repetition": ("{{ 'a' * 1000000000 }}", "repeating a string or list with * would build"),
    "list repetition": ("{{ ([1] * 100000000)|length }}", "repeating a string or list with * would build"),
    "~ doubling": ("{% macro d(s, n) %}{% if n %}{{ d(s ~ s, n - 1) }}{% else %}{{ s|length }}{% endif %}"
                   "{% endmacro %}{{ d('a', 40) }}", "joining strings with ~ would build"),
    "+ doubling": ("{% macro d(s, n) %}{% if n %}{{ d(s + s, n - 1) }}{% else %}{{ s|length }}{% endif %}"
                   "{% endmacro %}{{ d('a', 40) }}", "joining two strings or lists with + would build"),
    "set-block doubling": ("{% set ns = namespace(x='a') %}{% for i in range(60) %}{% set ns.x %}{{ ns.x }}"
                           "{{ ns.x }}{% endset %}{% endfor %}{{ ns.x|length }}", "a {% set %} block would build"),
    "tojson indent": ("{{ [[[[1]]]]|tojson(indent=1000000000) }}", "the tojson filter would build"),
    "batch fill": ("{{ [1]|batch(1000000000, 'x')|list|length }}", "the batch filter would build"),
    "slice count": ("{{ [1]|slice(1000000000)|list|length }}", "too much work (the slice filter"),
    "quadratic sum": ("{{ ([[1] * 1000] * 10000)|sum(start=[])|length }}", "too much work (the sum filter"),
    "wordwrap": ("{{ ('ab ' * 1000000)|wordwrap(1) }}", "too much work (the wordwrap filter"),
    "lipsum": ("{{ lipsum(100000, max=1000) }}", "too much work (lipsum"),
    "macro call tree": ("{% macro f(n) %}{% if n %}{{ f(n-1) }}{{ f(n-1) }}{% else %}a{% endif %}{% endmacro %}"
                        "{{ f(30)|length }}", "too much work (a call"),
    "str.split into small strings": ("{{ ('abc' * 5000000).split('a')|length }}", "str.split would build"),
    "str.split on whitespace": ("{{ ('bc ' * 5000000).split()|length }}", "str.split would build"),
    "str.splitlines": ("{{ ('bc\n' * 5000000).splitlines()|length }}", "str.splitlines would build"),
    "list of characters": ("{{ ('\u20ac' * 4000000)|list|length }}", "the list filter would build"),
    "map over characters": ("{{ ('\u20ac' * 4000000)|map('upper')|list|length }}", "too much work (the upper filter"),
    "integer growth": ("{% macro f(x, n) %}{% if n %}{{ f(x*x, n-1) }}{% else %}{{ x }}{% endif %}{% endmacro %}"
                       "{{ f(3, 40) }}", "multiplies integers too large"),
}


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_template_is_refused_in_one_line_naming_the_operation(name):
    source, names = HOSTILE[name]
    with pytest.raises(TemplateError) as err:
        templates.render(source, USER)
    message = str(err.value)
    assert "\n" not in message and names in message
    if "would build" in names:
        assert "left of its budget" in message and NEXT_STEP in message


def test_reserved_names_cannot_be_reassigned():
    with pytest.raises(TemplateError, match="assigns the reserved name __phi_concat__"):
        templates.render("{% set __phi_concat__ = 1 %}{{ 'a' ~ 'b' }}", USER)
    with pytest.raises(TemplateError, match="defines the reserved name __phi_loop_budget__"):
        templates.render("{% macro __phi_loop_budget__(x) %}{% endmacro %}", USER)


def test_the_operations_keep_their_meaning_within_the_budget():
    source = ("{{ 'ab'|center(6) }}|{{ 'x'.rjust(3, '.') }}|{{ 'a-b'|replace('-', '+') }}|{{ '%3d' % 7 }}|"
              "{{ '{:>4}'.format('z') }}|{{ '{}{}'.format_map({}) if false else 'm' }}|{{ [1, 2]|join(',') }}|"
              "{{ ','.join(['p', 'q']) }}|{{ 'a' ~ 1 ~ none }}|{{ 'a' + 'b' }}|{{ [1] + [2] }}|{{ 'ab' * 2 }}|"
              "{% set b %}{{ 'B' }}{% endset %}{{ b }}|{{ [[1, 2], [3]]|sum(start=[]) }}|{{ {'a': [1]}|tojson(indent=1) }}")
    assert templates.render(source, USER) == ('  ab  |..x|a+b|  7|   z|m|1,2|p,q|a1None|ab|[1, 2]|abab|B|[1, 2, 3]|'
                                              '{\n "a": [\n  1\n ]\n}')


def test_a_long_real_conversation_still_renders():
    """The budget leaves room for prompts near the output cap with the families' own templates."""
    family = families.BY_KEY["phi-3.5"]
    convo = [{"role": "system", "content": "s" * 100_000}]
    for i in range(20):
        convo += [{"role": "user", "content": f"{i} " + "u" * 50_000}, {"role": "assistant", "content": "a" * 50_000}]
    out = templates.render(families.read_template(family), convo + [{"role": "user", "content": "end"}])
    assert len(out) > 2_100_000 and out.endswith("<|assistant|>\n")


CHILD = """
import json, resource, sys, time
from llm_phi_gguf import templates
from llm_phi_gguf.errors import TemplateError

def usage():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime, r.ru_maxrss * 1024  # ru_maxrss is in KiB on Linux

templates.render("{{ ('w' * 1000)|center(2000)|replace('w', 'v') ~ messages[0]['content'] }}",
                 [{"role": "user", "content": "x"}])  # warm up: imports, the compiler, the allocator
cpu0, rss0 = usage()
try:
    templates.render(sys.argv[1], [{"role": "user", "content": "x"}])
    error = None
except TemplateError as e:
    error = str(e)
cpu1, rss1 = usage()
print(json.dumps({"error": error, "cpu_s": cpu1 - cpu0, "rss_growth": rss1 - rss0}))
"""
MEASURED = ["format then center (issue 15)", "chained replace", "str.replace", "percent star", "str.format nested width",
            "str.join", "~ doubling", "set-block doubling", "quadratic sum", "wordwrap", "macro call tree",
            "str.split into small strings", "list of characters", "map over characters"]
MAX_CPU_S = 3.0  # "about a second" on a quiet machine; unbounded, these ran 30 s and more
MAX_RSS_GROWTH = 100 * 2**20


@pytest.mark.parametrize("name", MEASURED)
def test_hostile_template_stays_within_time_and_memory_in_a_child(name):
    source, names = HOSTILE[name]
    proc = subprocess.run([sys.executable, "-c", CHILD, source], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["error"] and names in result["error"]
    assert result["cpu_s"] < MAX_CPU_S, result
    assert result["rss_growth"] < MAX_RSS_GROWTH, result
