"""Every hub failure is one line with the next step, from huggingface_hub's real errors against the
fake hub: unknown repo, gated (no token / token without access), unknown revision, not Phi,
pickle-only, unreachable, not enough disk space."""

from __future__ import annotations

import json
from collections import namedtuple

import pytest

from fakes.hub_server import FakeRepo
from fixtures.hub_fixtures import gguf_repo, one_line

from llm_phi_gguf import store

CONFIG = json.dumps({"architectures": ["Phi3ForCausalLM"]}).encode()
LLAMA = json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "llama"}).encode()


def add_gated(hub, tmp_path):
    hub.add(gguf_repo(tmp_path, "owner/gated", {"tiny-Q4_K_M.gguf": "Q4_K_M"}, gated=True, tokens=("hf_ok",)))


def add_llama(hub, tmp_path):
    hub.add(FakeRepo("owner/llama", {"config.json": LLAMA, "model.safetensors": b"\0" * 64}))


def add_pickles(hub, tmp_path):
    hub.add(FakeRepo("owner/pickles", {"config.json": CONFIG, "pytorch_model.bin": b"\x80\x04pickle"}))


def add_big(hub, tmp_path):
    hub.add(gguf_repo(tmp_path, "owner/big", {"tiny-Q4_K_M.gguf": "Q4_K_M"}))


Disk = namedtuple("Disk", "total used free")
CASES = {  # id -> (set-up, args, token, phrases the one line must hold)
    "repo not found": (None, ["owner/nope"], None, ["No repo owner/nope on http://127.0.0.1", "HF_TOKEN"]),
    "gated, no token": (add_gated, ["owner/gated"], None,
                        ["owner/gated is gated and no Hugging Face token was sent", "/owner/gated, then set HF_TOKEN",
                         "hf auth login"]),
    "gated, token without access": (add_gated, ["owner/gated"], "hf_other",
                                    ["owner/gated is gated and your token has no access", "accept its conditions"]),
    "revision not found": (add_big, ["owner/big", "--revision", "v9"], None,
                           ["owner/big has no revision 'v9'", "leave out --revision"]),
    "not Phi": (add_llama, ["owner/llama"], None, ["owner/llama is not a Phi model (architectures: LlamaForCausalLM)",
                                                   "Phi3ForCausalLM"]),
    "pickle only": (add_pickles, ["owner/pickles"], None,
                    ["only pickle weights (pytorch_model.bin)", "never downloaded", "safetensors or GGUF"]),
    "unknown quant": (None, ["owner/x", "-q", "Q9_Z"], None, ["Unknown quantization type 'Q9_Z'"]),
    "bad repo id": (None, ["not a repo"], None, ["'not a repo' is not a Hugging Face repo id"]),
}


@pytest.mark.parametrize("case", CASES)
def test_hub_errors_are_one_line_with_the_next_step(case, hub, tmp_path, monkeypatch, llm_cli):
    setup, args, token, phrases = CASES[case]
    if setup:
        setup(hub, tmp_path)
    if token:
        monkeypatch.setenv("HF_TOKEN", token)
    line = one_line(llm_cli("phi", "download", *args))
    for phrase in phrases:
        assert phrase in line
    assert not any(r.path.endswith((".safetensors", ".bin")) and "/resolve/" in r.path for r in hub.requests)


def test_gated_repo_opens_with_a_token(hub, tmp_path, monkeypatch, llm_cli):
    add_gated(hub, tmp_path)
    monkeypatch.setenv("HF_TOKEN", "hf_ok")
    result = llm_cli("phi", "download", "owner/gated")
    assert result.exit_code == 0, result.output
    assert store.get("phi-3-q4").quant == "Q4_K_M"


def test_unreachable_hub_points_at_offline_mode(hub, llm_cli):
    hub.stop()
    line = one_line(llm_cli("phi", "download", "owner/any"))
    assert "Cannot reach the Hugging Face hub at http://127.0.0.1" in line and "HF_HUB_OFFLINE=1" in line


def test_not_enough_disk_space_is_refused_before_downloading(hub, tmp_path, monkeypatch, llm_cli):
    add_big(hub, tmp_path)
    monkeypatch.setattr("llm_phi_gguf.files.shutil.disk_usage", lambda path: Disk(10**9, 10**9 - 100, 100))
    line = one_line(llm_cli("phi", "download", "owner/big"))
    assert "Not enough disk space" in line and "owner/big" in line
    assert not [r for r in hub.requests if "/resolve/" in r.path]


def test_missing_source_is_neither_a_path_nor_a_repo(hub, tmp_path, llm_cli):
    line = one_line(llm_cli("phi", "quantize", "convert", "owner/nope", "-o", tmp_path / "x.gguf"))
    assert "owner/nope is not a local path and there is no repo owner/nope" in line
    hub.requests.clear()
    line = one_line(llm_cli("phi", "quantize", "convert", "./nope", "-o", tmp_path / "x.gguf"))
    assert "./nope does not exist" in line and not hub.requests
