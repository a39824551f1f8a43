"""The model card text on its own (model_card.py): where our section goes in a card that exists,
broken markers, code fences, and what a GGUF made by llama-quantize with an imatrix records."""

from __future__ import annotations

import pytest
from huggingface_hub import ModelCard

from fixtures.gguf_builders import V, write_phi3

from llm_phi_gguf import model_card, publish_sources
from llm_phi_gguf.errors import PhiError


def facts(**changes) -> model_card.Facts:
    row = model_card.FileRow("m-Q4_K_M.gguf", ["m-Q4_K_M.gguf"], "Q4_K_M", 2_390_000_000, 4.89, "phi-3.5-q4",
                             dict(ppl=6.1, kld_mean=0.01, kld_p99=0.1, top1=0.95), modelfile_from=True)
    base = dict(repo_id="me/m-gguf", family_key="phi-3.5", family_title="microsoft/Phi-3.5-mini-instruct",
                base_model="microsoft/Phi-3.5-mini-instruct", rows=[row], chat_example="<|user|>\nhi<|end|>\n", template_in_gguf=True,
                stops=("<|end|>",), tool_version="1.0", llama_cpp_version="0.3.36", converter="ours",
                modelfile="Modelfile")
    return model_card.Facts(**{**base, **changes})


def test_a_card_without_markers_gets_ours_first_and_keeps_the_rest():
    text = model_card.render(facts(), "---\ntags: [mine]\nlicense: other\n---\n# Notes\n\nMine.\n")
    card = ModelCard(text)
    assert card.text.lstrip().startswith(model_card.START) and card.text.endswith("<!-- llm-phi-gguf:end -->\n\n# Notes\n\nMine.\n")
    # our tags replace the list; the user's other keys stay
    assert card.data.license == "other" and "gguf" in card.data.tags
    again = model_card.render(facts(), text)
    assert again == text  # re-rendering the same facts changes nothing


def test_broken_markers_are_refused_with_the_fix():
    with pytest.raises(PhiError, match="broken .* pair.*fix README.md"):
        model_card.render(facts(), f"# x\n{model_card.END}\n{model_card.START}\n")


def test_a_template_with_backticks_gets_a_longer_fence():
    text = model_card.render(facts(chat_example="```\ncode\n```\n"))
    assert "````text\n```\ncode\n```\n````" in text


def test_a_file_without_report_shows_na_and_says_why():
    row = facts().rows[0]
    row.quality = None
    text = model_card.render(facts(rows=[row]))
    assert "| 4.89 | n/a | n/a | n/a | n/a |" in text and "No quality report was found" in text
    assert "| 2.39 GB |" in text


def test_llama_quantize_imatrix_record_is_described(tmp_path):
    path = write_phi3(tmp_path / "m.gguf", **{"quantize.imatrix.file": ("/data/phi.imatrix", V.STRING),
                                              "quantize.imatrix.dataset": ("wiki.train.raw", V.STRING),
                                              "quantize.imatrix.chunks_count": (100, V.INT32)})
    model = publish_sources.load_model(str(path))
    assert publish_sources.recorded_imatrix([model]) == [
        "`phi.imatrix` from wiki.train.raw, 100 chunks (recorded in m.gguf)"]
