"""Paths that had no test: each bad input gives one line that names the problem and the next step,
and the extra_bufts override reaches llama.cpp's model parameters."""

from __future__ import annotations

import json

import pytest

from fakes.hub_server import FakeRepo
from fixtures.gguf_builders import write_llama, write_phi3
from fixtures.hub_fixtures import gguf_repo, one_line
from llm_phi_gguf import runtime, store


# ----------------------------------------------------------------------------- extra_bufts


@pytest.fixture
def tiny(tmp_path):
    """A registered tiny f16 phi3 model (f16: extra buffer types never crash it)."""
    store.register_file(write_phi3(tmp_path / "tiny.gguf"), alias="tiny")
    runtime.CACHE.clear()
    yield "tiny"
    runtime.CACHE.clear()


def loaded_use_extra_bufts(llm_cli, *options) -> bool:
    """Prompt the model through `llm`, then read use_extra_bufts from the Llama it loaded."""
    runtime.CACHE.clear()
    result = llm_cli("-m", "tiny", "hi", "-o", "max_tokens", "1", *options)
    assert result.exit_code == 0, result.output
    (llama,) = runtime.CACHE._models.values()
    return bool(llama.model_params.use_extra_bufts)


@pytest.mark.parametrize("env, options, expected", [
    (None, ("-o", "extra_bufts", "0"), False),
    (None, ("-o", "extra_bufts", "1"), True),
    ("0", (), False),
    ("1", (), True),
    ("1", ("-o", "extra_bufts", "0"), False),  # the option wins over the environment
    ("0", ("-o", "extra_bufts", "1"), True),
])
def test_extra_bufts_override_reaches_the_model_params(tiny, llm_cli, monkeypatch, env, options, expected):
    if env is None:
        monkeypatch.delenv(runtime.ENV_EXTRA_BUFTS, raising=False)
        monkeypatch.setattr(runtime, "probe", lambda refresh=False: pytest.fail("the option must decide"))
    else:
        monkeypatch.setenv(runtime.ENV_EXTRA_BUFTS, env)
    assert loaded_use_extra_bufts(llm_cli, *options) is expected


# ----------------------------------------------------------------------------- quantize


def test_quantize_refuses_a_file_that_is_not_gguf(tmp_path, llm_cli):
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"PK\x03\x04 not a model at all")
    line = one_line(llm_cli("phi", "quantize", junk, "-q", "Q8_0", "--no-register", "--no-report"))
    assert "junk.gguf: not a GGUF file (starts with b'PK\\x03\\x04'" in line
    assert "quantize takes a Phi GGUF" in line and "Hugging Face checkpoint folder" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.gguf"]


def test_quantize_refuses_a_gguf_that_is_not_phi(tmp_path, llm_cli):
    llama = write_llama(tmp_path / "llama.gguf")
    line = one_line(llm_cli("phi", "quantize", llama, "-q", "Q8_0", "--no-register", "--no-report"))
    assert "llama.gguf is a GGUF of architecture 'llama', not a Phi model" in line
    assert "supported: phi2, phi3, phimoe" in line and "quantize takes a Phi GGUF" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["llama.gguf"]


# ----------------------------------------------------------------------------- download


def test_download_refuses_a_gguf_repo_the_hub_reports_as_another_architecture(hub, tmp_path, llm_cli):
    repo = gguf_repo(tmp_path / "r", "owner/qwen-gguf", {"q-Q4_K_M.gguf": "Q4_K_M"})
    hub.add(FakeRepo(repo.repo_id, repo.files, gguf_arch="qwen2"))
    line = one_line(llm_cli("phi", "download", "owner/qwen-gguf"))
    assert "owner/qwen-gguf is not a Phi model (GGUF architecture qwen2)" in line
    assert "this plugin runs phi2, phi3, phimoe" in line
    assert not [r for r in hub.requests if r.path.endswith(".gguf")] and store.load() == {}


def test_download_refuses_a_gguf_of_another_architecture_the_hub_did_not_report(hub, tmp_path, llm_cli):
    data = write_llama(tmp_path / "l.gguf").read_bytes()
    hub.add(FakeRepo("owner/llama-gguf", {"llama-Q4_K_M.gguf": data}))
    line = one_line(llm_cli("phi", "download", "owner/llama-gguf"))
    assert "llama-Q4_K_M.gguf is a GGUF of architecture 'llama', not a Phi model" in line
    assert "supported: phi2, phi3, phimoe" in line and store.load() == {}


# ----------------------------------------------------------------------------- register


def test_register_of_an_unrecognisable_family_names_the_option(tmp_path, llm_cli):
    path = write_phi3(tmp_path / "odd.gguf", **{"tokenizer.ggml.model": "no_vocab"})
    line = one_line(llm_cli("phi", "register", path))
    assert "Cannot tell which Phi family odd.gguf is" in line
    assert "pass --family, one of: phi-3.5-moe" in line and "phi-3" in line
    result = llm_cli("phi", "register", path, "--family", "phi-3")
    assert result.exit_code == 0, result.output
    assert store.get("phi-3-f16").family == "phi-3"


# ----------------------------------------------------------------------------- render --messages


@pytest.mark.parametrize("text, problem", [
    ("[{'role': 'user'}]", "--messages is not valid JSON (Expecting property name enclosed in double quotes"),
    ('{"role": "user", "content": "hi"}', "--messages holds an object, not a list"),
    ('"hi"', "--messages holds a string, not a list"),
    ('[{"role": "user", "content": "a"}, {"role": "user"}]',
     '--messages item 1 is not an object with "role" and "content"'),
    ('[["user", "hi"]]', '--messages item 0 is not an object with "role" and "content"'),
])
def test_render_messages_are_checked_without_assert(tmp_path, llm_cli, text, problem):
    store.register_file(write_phi3(tmp_path / "tiny.gguf"), alias="tiny")
    line = one_line(llm_cli("phi", "render", "tiny", "--messages", "-", input=text))
    assert problem in line
    assert 'give a JSON list of {"role": ..., "content": ...} objects' in line


def test_render_messages_python_O_still_checks(tmp_path):
    """The checks are real code, not asserts: they hold under python -O too."""
    import subprocess
    import sys

    code = ("import io, click\nfrom llm_phi_gguf.cli import read_messages\n"
            "try:\n    read_messages(io.StringIO('{\"a\": 1}'))\nexcept click.ClickException as e:\n"
            "    print(e.message)\n")
    out = subprocess.run([sys.executable, "-O", "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.startswith("--messages holds an object, not a list")


def test_render_with_messages_renders(tmp_path, llm_cli):
    store.register_file(write_phi3(tmp_path / "tiny.gguf"), alias="tiny")
    convo = [{"role": "user", "content": "hi"}]
    result = llm_cli("phi", "render", "tiny", "--messages", "-", input=json.dumps(convo))
    assert result.exit_code == 0, result.output
    assert "hi" in result.output
