"""Phi models llama.cpp cannot run (Phi-3-small, the vision and multimodal models, Phi-4-mini-flash)
are refused by name with the reason from families.UNSUPPORTED, wherever they come in: a checkpoint
to convert (test_convert_errors.py), a repo to download or quantize, a GGUF to register."""

from __future__ import annotations

import json

import pytest

from fakes.hub_server import FakeRepo
from fixtures.gguf_builders import V, phi3_metadata, phi3_tensors, write_gguf, write_phi3
from fixtures.hub_fixtures import gguf_repo, one_line
from llm_phi_gguf import families, store
from llm_phi_gguf.errors import GGUFError, RegistryError

SMALL = json.dumps({"architectures": ["Phi3SmallForCausalLM"], "model_type": "phi3small"}).encode()
MULTIMODAL = json.dumps({"architectures": ["Phi4MMForCausalLM"], "model_type": "phi4mm"}).encode()


def test_one_list_of_architectures():
    """The converter, the hub check and the GGUF check all read the families table."""
    assert families.SUPPORTED_ARCHITECTURES == {
        "PhiMoEForCausalLM": "phimoe", "PhimoeForCausalLM": "phimoe", "PhiForCausalLM": "phi2",
        "Phi3ForCausalLM": "phi3"}
    assert set(families.GGUF_ARCHITECTURES) == {"phi2", "phi3", "phimoe"}
    assert not {u.hf_architecture for u in families.UNSUPPORTED} & set(families.SUPPORTED_ARCHITECTURES)


def test_download_of_an_unsupported_checkpoint_is_refused_before_the_weights(hub, llm_cli):
    hub.add(FakeRepo("microsoft/Phi-3-small-8k-instruct", {"config.json": SMALL, "model.safetensors": b"\0" * 64}))
    line = one_line(llm_cli("phi", "download", "microsoft/Phi-3-small-8k-instruct"))
    assert ("microsoft/Phi-3-small-8k-instruct is Phi-3-small (Phi3SmallForCausalLM), which this plugin cannot "
            "run: llama.cpp has no architecture for it") in line
    assert "llm phi families" in line
    assert not [r for r in hub.requests if r.path.endswith(".safetensors")]


def test_quantize_of_an_unsupported_repo_is_refused(hub, tmp_path, llm_cli):
    hub.add(FakeRepo("owner/mm", {"config.json": MULTIMODAL, "model.safetensors": b"\0" * 64}))
    out = tmp_path / "out"
    out.mkdir()
    line = one_line(llm_cli("phi", "quantize", "owner/mm", "-o", out))
    assert "owner/mm is Phi-4-multimodal (Phi4MMForCausalLM)" in line and "llama.cpp does not support it" in line
    assert list(out.iterdir()) == []


def test_download_of_an_unsupported_gguf_repo_is_refused_by_name(hub, tmp_path, llm_cli):
    hub.add(gguf_repo(tmp_path / "r", "someone/Phi-4-mini-flash-reasoning-GGUF", {"x-Q4_K_M.gguf": "Q4_K_M"}))
    line = one_line(llm_cli("phi", "download", "someone/Phi-4-mini-flash-reasoning-GGUF"))
    assert "is Phi-4-mini-flash-reasoning (Phi4FlashForCausalLM)" in line and "SambaY" in line
    assert not [r for r in hub.requests if r.path.endswith(".gguf")]
    assert store.load() == {}


def test_register_refuses_a_gguf_named_as_an_unsupported_model(tmp_path):
    path = write_phi3(tmp_path / "v.gguf", **{"general.name": "Phi 4 Multimodal Instruct",
                                              "general.basename": ("Phi-4-multimodal", V.STRING)})
    with pytest.raises(RegistryError) as e:
        store.register_file(path)
    assert "v.gguf is Phi-4-multimodal (Phi4MMForCausalLM), which this plugin cannot run" in str(e.value)
    assert "pass --family" in str(e.value)
    assert store.register_file(path, family="phi-3").family == "phi-3"  # the user's word wins


def test_register_refuses_an_unsupported_architecture_by_name(tmp_path, llm_cli):
    meta = {k.replace("phi3.", "phi3small."): v for k, v in phi3_metadata().items()}
    meta["general.name"] = ("Phi 3 Small 8k Instruct", meta["general.name"][1])
    meta["general.basename"] = ("Phi-3-small", meta["general.name"][1])
    path = write_gguf(tmp_path / "s.gguf", "phi3small", meta, phi3_tensors())
    with pytest.raises(GGUFError, match=r"s.gguf is Phi-3-small \(Phi3SmallForCausalLM\), which this plugin "
                                        r"cannot run: llama.cpp has no architecture for it"):
        store.register_file(path)
    line = one_line(llm_cli("phi", "register", path))
    assert "Phi-3-small" in line and "llm phi families" in line
