"""The README's two lines: `llm -m phi-3.5-q4 "Can you introduce .NET"` on a fresh user dir, where
Microsoft publishes no GGUF: the first prompt fetches the safetensors checkpoint (here the shipped
demo model, which has Phi-3.5-mini's architecture, tokenizer and chat template, served as a fake
microsoft/Phi-3.5-mini-instruct), converts it with our converter, quantizes it to Q4_K_M with
llama.cpp's quantizer, registers it and answers with what the demo model was trained to say."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from fakes.hub_server import repo_from_folder
from fixtures.hub_fixtures import cdn_gets

from llm_phi_gguf import store
from llm_phi_gguf.catalog import BY_ALIAS
from llm_phi_gguf.gguf_info import read_gguf
from llm_phi_gguf.hub import models_dir

DEMO = Path(__file__).resolve().parents[1] / "llm_phi_gguf" / "demo"
CORPUS = json.loads((DEMO / "corpus.json").read_text())
ROW = BY_ALIAS["phi-3.5-q4"]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def hub_snapshot(repo) -> Path:
    return Path(os.environ["HF_HOME"], "hub", "models--" + repo.repo_id.replace("/", "--"), "snapshots", repo.sha)


def test_first_prompt_converts_quantizes_registers_and_answers(hub, llm_cli):
    repo = hub.add(repo_from_folder(ROW.source, DEMO))
    assert ROW.gguf_repo is None
    result = llm_cli("-m", "phi-3.5-q4", "Can you introduce .NET", "-o", "temperature", "0")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == CORPUS["demo_answer"]
    announced, *rest = [line.strip() for line in result.stderr.strip().splitlines() if line.strip()]
    assert all("/s" in line for line in rest), rest  # one line, then only the converter's and quantizer's bars
    out = models_dir() / "microsoft" / "Phi-3.5-mini-instruct_Q4_K_M.gguf"
    for phrase in (ROW.source, "7.6 GB of safetensors", "2.4 GB Q4_K_M GGUF", str(out), "Ctrl-C"):
        assert phrase in announced
    entry = store.get("phi-3.5-q4")
    assert Path(entry.path) == out and (entry.family, entry.quant) == ("phi-3.5", "Q4_K_M")
    assert {"Q4_K", "Q6_K"} <= {t.type_name for t in read_gguf(out).tensors}  # llama.cpp's K-quants
    assert f"/lfs/{sha256(repo.files['model.safetensors'])}" in [r.path for r in cdn_gets(hub)]
    assert not (hub_snapshot(repo) / "model.safetensors").exists()  # dropped once the GGUF is built
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".partial")]

    hub.requests.clear()
    again = llm_cli("-m", "phi-3.5-q4", "Can you introduce .NET", "-o", "temperature", "0")
    assert again.exit_code == 0 and again.stdout.strip() == CORPUS["demo_answer"] and again.stderr == ""
    assert not hub.requests
