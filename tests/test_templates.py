"""Chat prompts equal what the models' own Hugging Face Jinja templates render.

Oracles: tests/fixtures/reference/chat-templates/cases.json (rendered by transformers' method) and
transformers' own render_jinja_template on the same messages.
"""

import json
from pathlib import Path

import pytest

from llm_phi_gguf import families, templates
from llm_phi_gguf.errors import TemplateError

REFERENCE = Path(__file__).resolve().parent / "fixtures" / "reference" / "chat-templates"
CASES = json.loads((REFERENCE / "cases.json").read_text())["cases"]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c['template']}:{c['case']}:{c['add_generation_prompt']}")
def test_reference_cases(case):
    source = (REFERENCE / case["template"]).read_text()
    out = templates.render(
        source,
        case["messages"],
        add_generation_prompt=case["add_generation_prompt"],
        bos_token=case["bos_token"],
        eos_token=case["eos_token"],
    )
    assert out == case["expected"]


CONVERSATIONS = {
    "single": [{"role": "user", "content": "Can you introduce .NET"}],
    "system+user": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Can you introduce .NET"},
    ],
    "multi-turn": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi\nthere"},
        {"role": "assistant", "content": "Hello! {{ not code }}"},
        {"role": "user", "content": "What is GGUF? ünïcödé 🚀"},
    ],
}


@pytest.mark.parametrize("family", families.FAMILIES, ids=lambda f: f.key)
@pytest.mark.parametrize("convo", CONVERSATIONS, ids=str)
def test_family_templates_match_transformers(family, convo):
    from transformers.utils.chat_template_utils import render_jinja_template

    source = families.read_template(family)
    kwargs = dict(bos_token="<s>", eos_token="<|endoftext|>")
    ours = templates.render(source, CONVERSATIONS[convo], add_generation_prompt=True, **kwargs)
    theirs = render_jinja_template([CONVERSATIONS[convo]], chat_template=source, add_generation_prompt=True, **kwargs)
    theirs = theirs[0][0] if isinstance(theirs, tuple) else theirs
    assert ours == (theirs[0] if isinstance(theirs, list) else theirs)


@pytest.mark.parametrize("family", [f for f in families.FAMILIES if f.key != "phi-2"], ids=lambda f: f.key)
def test_packaged_templates_are_byte_identical_to_hub(family):
    assert families.read_template(family) == (REFERENCE / family.template).read_text()


HOSTILE = {
    "dunder": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "globals": "{{ cycler.__init__.__globals__ }}",
    "mutation": "{{ messages.append(1) }}",
    "nested-loops": "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "huge-string": "{{ 'a' * 1000000000 }}",
    "huge-power": "{{ 10 ** 100000000 }}",
    "raise": "{{ raise_exception('no system role') }}",
    "syntax": "{% for x in %}",
    "recursion": "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",
}


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_templates_fail_cleanly(name):
    with pytest.raises(TemplateError) as err:
        templates.render(HOSTILE[name], [{"role": "user", "content": "x"}])
    assert "\n" not in str(err.value)


def test_format_string_cannot_reach_attributes():
    out = templates.render("{{ '{0.__class__}'.format(messages) }}", [{"role": "user", "content": "x"}])
    assert "class" not in out


def test_output_is_bounded():
    source = "{% for i in range(99999) %}{{ messages[0]['content'] }}{% endfor %}"
    with pytest.raises(TemplateError, match="too long"):
        templates.render(source, [{"role": "user", "content": "x" * 100}])
