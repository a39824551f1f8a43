"""The <think> splitter: reasoning and answer apart whatever the token boundaries, with the think
block opened by the prompt, and with the closing tag never coming."""

from hypothesis import given, settings
from hypothesis import strategies as st

from llm_phi_gguf import families
from llm_phi_gguf.reasoning import REASONING, TEXT, ThinkSplitter, opened_in_prompt

FMT = families.THINK


def split(text: str, cuts, thinking=False) -> tuple[str, str]:
    s = ThinkSplitter(FMT, thinking)
    bounds = sorted({0, len(text), *(c % (len(text) + 1) for c in cuts)})
    parts = [p for a, b in zip(bounds, bounds[1:]) for p in s.feed(text[a:b])] + s.flush()
    assert all(kind in (REASONING, TEXT) and piece for kind, piece in parts)
    return "".join(p for k, p in parts if k == REASONING), "".join(p for k, p in parts if k == TEXT)


plain = st.text(max_size=40).map(lambda t: t.replace("<", "(").strip() or "x")
cuts = st.lists(st.integers(min_value=0, max_value=500), max_size=12)


@settings(max_examples=150, deadline=None)
@given(plain, plain, cuts)
def test_think_then_answer_at_any_token_boundaries(thought, answer, cuts):
    assert split(f"<think>\n{thought}\n</think>\n\n{answer}", cuts) == (thought + "\n", answer)


@settings(max_examples=100, deadline=None)
@given(plain, plain, cuts)
def test_think_opened_by_the_prompt(thought, answer, cuts):
    assert split(f"{thought}</think>{answer}", cuts, thinking=True) == (thought, answer)


@settings(max_examples=100, deadline=None)
@given(plain, cuts)
def test_no_closing_tag_is_all_reasoning(thought, cuts):
    assert split(f"<think>{thought}", cuts) == (thought, "")


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=80), cuts)
def test_nothing_is_lost_or_invented(text, cuts):
    """Without tags the text comes through (less leading whitespace); with any text no crash."""
    reasoning, answer = split(text, cuts)
    if "<think>" not in text and "</think>" not in text:
        assert reasoning == "" and answer == text.lstrip()


def test_a_partial_tag_that_is_not_a_tag_is_answer_text():
    assert split("a <thin b </thinkx", [3, 5]) == ("", "a <thin b </thinkx")


def test_prompt_detection():
    assert opened_in_prompt("<|assistant|><think>\n", FMT)
    assert not opened_in_prompt("<|assistant|><think>old</think>new<|end|><|assistant|>", FMT)
    assert not opened_in_prompt("<|assistant|>", FMT)


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet="<|/>ab", max_size=12), st.lists(st.text(alphabet="<|/>ab", max_size=6), max_size=4))
def test_partial_tag_length_is_the_longest_end_that_starts_a_tag(text, tags):
    """The fast search equals the definition: every k with text ending in tag[:k], 0 < k < len(tag)."""
    from llm_phi_gguf.tagstream import partial_tag_length

    by_definition = max((k for tag in tags for k in range(1, len(tag)) if text.endswith(tag[:k])), default=0)
    assert partial_tag_length(text, tuple(tags)) == by_definition
