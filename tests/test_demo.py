"""`llm phi demo`: the README's first command, offline, through our converter and quantizer."""

import json
from pathlib import Path

from llm_phi_gguf import store
from llm_phi_gguf.gguf_reader import read_gguf

CORPUS = json.loads((Path(__file__).resolve().parents[1] / "llm_phi_gguf" / "demo" / "corpus.json").read_text())


def test_demo_converts_quantizes_registers_and_answers(llm_cli):
    r = llm_cli("phi", "demo")
    assert r.exit_code == 0, r.output
    assert "[1/4] Converting" in r.output and "[2/4] Quantizing" in r.output
    # the answer is the trained one, exactly, and stops at <|end|> (nothing printed after it)
    assert r.output.rstrip("\n").endswith("\n" + CORPUS["demo_answer"])
    entry = store.get("phi-demo")
    assert (entry.family, entry.quant) == ("phi-3.5", "Q4_K_M")
    types = {t.type_name for t in read_gguf(entry.path).tensors}
    assert {"Q4_K", "Q6_K"} <= types  # real K-quants: the demo is 256 wide
    # a second run reuses the files and gives the same answer
    again = llm_cli("phi", "demo")
    assert "[1/4] Reusing" in again.output and again.output.rstrip("\n").endswith(CORPUS["demo_answer"])


def test_demo_answers_through_llm_with_a_system_prompt(llm_cli):
    llm_cli("phi", "demo")
    r = llm_cli("-m", "phi-demo", "-s", "You are a helpful assistant.", "Can you introduce .NET", "-o", "temperature", "0")
    assert r.exit_code == 0
    assert r.output.strip() == CORPUS["demo_answer"]
