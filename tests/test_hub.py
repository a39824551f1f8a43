"""`llm phi download` and repo ids as sources, with huggingface_hub's real client against the fake hub
(tests/fakes/hub_server.py): GGUF choice, split GGUFs, the safetensors pipeline up to generation,
resume after a dropped connection, and HF_HUB_OFFLINE with the server stopped."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from fakes.hub_server import FakeRepo, repo_from_folder
from fixtures.hub_fixtures import cdn_gets, gguf_repo, one_line, split_gguf

from llm_phi_gguf import hub as hubmod
from llm_phi_gguf import store

QUANTS = {"tiny-Q4_K_M.gguf": "Q4_K_M", "tiny-Q8_0.gguf": "Q8_0", "tiny-F16.gguf": "F16",
          "mmproj-tiny-F16.gguf": "F16"}


def snapshot(repo: FakeRepo) -> Path:
    """Where huggingface_hub's cache layout puts this repo's main snapshot."""
    owner, name = repo.repo_id.split("/")
    return Path(os.environ["HF_HOME"], "hub", f"models--{owner}--{name}", "snapshots", repo.sha)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_gguf_repo_registers_the_requested_quant_from_the_cache(hub, tmp_path, llm_cli):
    repo = hub.add(gguf_repo(tmp_path, "owner/tiny-gguf", QUANTS))
    result = llm_cli("phi", "download", "owner/tiny-gguf")
    assert result.exit_code == 0, result.output
    entry = store.get("phi-3-q4")
    cached = snapshot(repo) / "tiny-Q4_K_M.gguf"
    assert cached.is_symlink() and Path(entry.path) == cached  # the cache's file, no second copy
    assert cached.read_bytes() == repo.files["tiny-Q4_K_M.gguf"] and entry.quant == "Q4_K_M"
    assert [r.path for r in cdn_gets(hub)] == [f"/lfs/{sha(repo.files['tiny-Q4_K_M.gguf'])}"]  # only that file

    assert llm_cli("phi", "download", "owner/tiny-gguf", "--quant", "q8_0").exit_code == 0
    assert store.get("phi-3-q8").quant == "Q8_0"
    missing = one_line(llm_cli("phi", "download", "owner/tiny-gguf", "-q", "Q5_K_M"))
    assert "no Q5_K_M GGUF" in missing and "tiny-Q8_0.gguf" in missing and "mmproj" not in missing


def test_ambiguous_quant_is_refused_and_file_picks_one(hub, tmp_path, llm_cli):
    hub.add(gguf_repo(tmp_path, "owner/two", {"a/tiny-Q4_K_M.gguf": "Q4_K_M", "b/tiny-Q4_K_M.gguf": "Q4_K_M"}))
    error = one_line(llm_cli("phi", "download", "owner/two"))
    assert "several Q4_K_M GGUFs: a/tiny-Q4_K_M.gguf, b/tiny-Q4_K_M.gguf" in error and "--file" in error
    result = llm_cli("phi", "download", "owner/two", "--file", "b/tiny-Q4_K_M.gguf", "--alias", "two")
    assert result.exit_code == 0, result.output
    assert Path(store.get("two").path).read_bytes() == hub.repos["owner/two"].files["b/tiny-Q4_K_M.gguf"]


def download_split(hub, tmp_path, llm_cli):
    parts = split_gguf(tmp_path / "split", "tiny-Q4_K_M")
    assert len(parts) >= 2
    repo = hub.add(FakeRepo("owner/split", {p.name: p.read_bytes() for p in parts}))
    result = llm_cli("phi", "download", "owner/split", "--alias", "split")
    assert result.exit_code == 0, result.output
    return repo, parts


def test_split_gguf_downloads_every_part(hub, tmp_path, llm_cli):
    repo, parts = download_split(hub, tmp_path, llm_cli)
    assert sorted(p.name for p in snapshot(repo).iterdir()) == [p.name for p in parts]
    assert len(cdn_gets(hub)) == len(parts)
    # llama.cpp finds parts 2..N beside part 1 by name, so the registered path must be the snapshot's
    assert Path(store.get("split").path) == snapshot(repo) / parts[0].name


def test_split_gguf_generates(hub, tmp_path, llm_cli):
    download_split(hub, tmp_path, llm_cli)
    out = llm_cli("-m", "split", "hi", "-o", "max_tokens", "3", "-o", "temperature", "0")
    assert out.exit_code == 0, out.output


def test_safetensors_repo_converts_quantizes_registers_and_generates(hub, checkpoint, llm_cli):
    folder = checkpoint("phi-3-mini-4k", initializer_range=0.02)
    repo = repo_from_folder("owner/tiny-phi3", folder)
    repo.files |= {"pytorch_model.bin": b"pickle", "modeling_phi3.py": b"import os", "onnx/model.safetensors": b"x"}
    repo = hub.add(FakeRepo(repo.repo_id, repo.files))
    result = llm_cli("phi", "download", "owner/tiny-phi3")
    assert result.exit_code == 0, result.output
    entry = store.get("phi-3-q4")
    assert entry.quant == "Q4_K_M" and Path(entry.path).name == "tiny-phi3_Q4_K_M.gguf"
    fetched = {r.path.split(f"/resolve/{repo.sha}/")[1] for r in hub.requests if "/resolve/" in r.path}
    assert fetched == {p.name for p in folder.iterdir()}  # config, tokenizer, safetensors: no .bin/.py/onnx
    snap = snapshot(repo)
    assert (snap / "config.json").is_file() and not (snap / "model.safetensors").exists()  # no --keep-source
    out = llm_cli("-m", "phi-3-q4", "hi", "-o", "max_tokens", "3", "-o", "temperature", "0")
    assert out.exit_code == 0, out.output
    again = llm_cli("phi", "download", "owner/tiny-phi3")
    assert again.exit_code == 0 and "already built" in again.output


def test_quantize_and_convert_accept_a_repo_id(hub, checkpoint, tmp_path, llm_cli):
    hub.add(repo_from_folder("owner/ck", checkpoint("phi-3-mini-4k", initializer_range=0.02)))
    f16, q8 = tmp_path / "ck-f16.gguf", tmp_path / "ck-q8.gguf"
    result = llm_cli("phi", "quantize", "convert", "owner/ck", "-o", f16, "--outtype", "f16")
    assert result.exit_code == 0, result.output
    result = llm_cli("phi", "quantize", "owner/ck", "-q", "Q8_0", "-o", q8, "--no-report", "--no-register")
    assert result.exit_code == 0, result.output
    assert f16.is_file() and q8.is_file()


def test_quantize_repo_id_outputs_go_to_the_models_folder_named_after_the_repo(hub, checkpoint, llm_cli):
    """Not into the HF cache's commit-hash snapshot folder."""
    from llm_phi_gguf.store import models_dir

    hub.add(repo_from_folder("owner/ck", checkpoint("phi-3-mini-4k", initializer_range=0.02)))
    result = llm_cli("phi", "quantize", "owner/ck", "-q", "Q8_0", "--no-report", "--no-register")
    assert result.exit_code == 0, result.output
    assert (models_dir() / "owner" / "ck_Q8_0.gguf").is_file()


def test_dropped_connection_resumes_with_a_range_request(hub, checkpoint):
    from huggingface_hub import constants

    config = (checkpoint("phi-3-mini-4k", initializer_range=0.02) / "config.json").read_bytes()
    # huggingface_hub keeps what it received in whole DOWNLOAD_CHUNK_SIZE (10 MB) pieces: the file must
    # be large enough for half of it to hold one
    data = os.urandom(2 * constants.DOWNLOAD_CHUNK_SIZE + 12345)
    hub.add(FakeRepo("owner/resume", {"config.json": config, "model.safetensors": data}))
    hub.drop_once("owner/resume", "model.safetensors")
    folder = hubmod.resolve_source("owner/resume", want="checkpoint", echo=lambda s: None)
    assert (folder / "model.safetensors").read_bytes() == data
    kept = len(data) // 2 // constants.DOWNLOAD_CHUNK_SIZE * constants.DOWNLOAD_CHUNK_SIZE
    gets = [r for r in cdn_gets(hub) if r.path == f"/lfs/{sha(data)}"]
    assert kept > 0 and [g.headers.get("range") for g in gets] == [None, f"bytes={kept}-"]  # only the rest


def test_offline_uses_the_cache_with_the_server_stopped(hub, tmp_path, checkpoint, monkeypatch, llm_cli):
    hub.add(gguf_repo(tmp_path, "owner/tiny-gguf", QUANTS))
    hub.add(repo_from_folder("owner/ck", checkpoint("phi-3-mini-4k", initializer_range=0.02)))
    assert llm_cli("phi", "download", "owner/tiny-gguf").exit_code == 0
    folder = hubmod.resolve_source("owner/ck", want="checkpoint", echo=lambda s: None)
    store.remove("phi-3-q4")
    hub.stop()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = llm_cli("phi", "download", "owner/tiny-gguf")
    assert result.exit_code == 0, result.output
    assert store.get("phi-3-q4").quant == "Q4_K_M"
    assert hubmod.resolve_source("owner/ck", want="checkpoint", echo=lambda s: None) == folder
    assert json.loads((folder / "config.json").read_text())["architectures"] == ["Phi3ForCausalLM"]
    error = one_line(llm_cli("phi", "download", "owner/never-fetched"))
    assert "not in the Hugging Face cache" in error and "HF_HUB_OFFLINE" in error
