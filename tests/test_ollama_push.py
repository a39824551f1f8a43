"""`llm phi ollama push/list` against a fake Ollama server that follows API.md, with faults."""

from __future__ import annotations

import hashlib

import httpx
import pytest
from click.testing import CliRunner

from fakes.ollama_server import FakeOllama, Fault, NotOllama
from fixtures.gguf_builders import DROP, write_phi3
from llm_phi_gguf import ollama_client as client_api, store
from llm_phi_gguf.errors import OllamaError
from llm_phi_gguf.ollama_digests import cached_digest, sha256_file
from llm_phi_gguf.ollama_modelfile import family_modelfile
from llm_phi_gguf.families import BY_KEY, read_template
from llm_phi_gguf.ollama_commands import ollama as ollama_group


@pytest.fixture
def server(tmp_path):
    with FakeOllama(tmp_path / "ollama") as fake:
        yield fake


@pytest.fixture
def gguf(tmp_path):
    # Padding after the tensor data makes the upload a few MiB, so faults can hit mid-body.
    path = write_phi3(tmp_path / "tiny.gguf", **{"tokenizer.chat_template": read_template(BY_KEY["phi-3"])})
    with open(path, "ab") as f:
        f.write(bytes(range(256)) * (12 * 4096))
    return path


def push(server, model, *args, name="phi:test"):
    return CliRunner().invoke(ollama_group, ["push", str(model), "--name", name, "--host", server.url, *args])


def model_blob_ok(server, name: str, path) -> bool:
    """The created model's layer is the complete file: its digest names its own bytes."""
    model = server.models[name]
    digest = model["manifest"]["layers"][0]["digest"]
    data = server.blob_path(digest).read_bytes()
    return digest == "sha256:" + hashlib.sha256(data).hexdigest() and data == path.read_bytes()


def test_push_uploads_once_then_sends_nothing(server, gguf):
    first = push(server, gguf, "-p", "temperature=0.25", "-p", "num_ctx=2048", "--verify")
    assert first.exit_code == 0, first.output
    assert "parsing GGUF" in first.output and "success" in first.output
    assert "Created phi:test" in first.output
    model = server.models["phi:test"]
    assert model["template"] == family_modelfile("phi-3").template
    assert model["params"]["stop"] == family_modelfile("phi-3").parameters["stop"]
    assert model["params"]["num_ctx"] == 2048 and type(model["params"]["num_ctx"]) is int
    assert model["params"]["temperature"] == 0.25
    assert model_blob_ok(server, "phi:test", gguf)
    received = server.blob_bytes_received
    assert received == gguf.stat().st_size
    second = push(server, gguf)
    assert second.exit_code == 0, second.output
    assert server.blob_bytes_received == received and len(server.requests("POST", "/api/blobs")) == 1
    assert "already on the server" in second.output and "(0 bytes uploaded)" in second.output


def test_push_an_alias_uses_the_registry(server, gguf):
    store.add(store.ModelEntry(alias="mini", path=str(gguf), family="phi-4-mini", n_ctx=12288))
    # the registry's family wins over detection: this file alone would be detected as phi-3
    assert push(server, "mini", name="user/mini:q4").exit_code == 0
    assert server.models["user/mini:q4"]["params"]["num_ctx"] == 12288
    assert server.models["user/mini:q4"]["template"] == family_modelfile("phi-4-mini").template
    result = CliRunner().invoke(ollama_group, ["list", "--host", server.url])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("mini\t") and "user/mini:q4" in result.output


@pytest.mark.parametrize("fault", [Fault("500", after=3 << 20), Fault("drop", after=2 << 20),
                                   Fault("corrupt", after=1 << 20)], ids=lambda f: f.kind)
def test_a_failed_upload_is_retried_and_completes(server, gguf, fault):
    server.upload_faults = [fault]
    result = push(server, gguf)
    assert result.exit_code == 0, result.output
    assert len(server.requests("POST", "/api/blobs")) == 2
    assert model_blob_ok(server, "phi:test", gguf)


def test_a_slow_server_outlasts_httpx_default_timeout(server, gguf):
    server.upload_faults = [Fault("slow", seconds=5.5)]
    result = push(server, gguf)
    assert result.exit_code == 0, result.output
    assert len(server.requests("POST", "/api/blobs")) == 1


def test_persistent_failure_is_one_line_and_creates_nothing(server, gguf):
    server.upload_faults = [Fault("500", after=1 << 20)] * client_api.UPLOAD_ATTEMPTS
    result = push(server, gguf)
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [result.output.strip()]
    assert f"failed after {client_api.UPLOAD_ATTEMPTS} attempts" in result.output and "HTTP 500" in result.output
    assert server.models == {} and server.requests("POST", "/api/create") == []
    assert [p for p in server.blobs.iterdir()] == []  # no partial blob was kept


def test_an_error_inside_the_create_stream_is_one_line(server, gguf):
    server.create_errors = ["unexpected EOF"]
    result = push(server, gguf)
    assert result.exit_code == 1
    assert result.output.strip().endswith("Error: Ollama could not create phi:test: unexpected EOF")
    assert server.models == {}


def test_errors_before_the_stream_come_back_with_the_server_message(server):
    with client_api.client(server.url) as cl:
        with pytest.raises(OllamaError, match="HTTP 400: neither 'from' or 'files' was specified"):
            client_api.create_model(cl, {"model": "x", "stream": True})
        with pytest.raises(OllamaError, match="HTTP 400: invalid model name"):
            client_api.create_model(cl, {"model": "bad name", "files": {"m.gguf": "sha256:" + "0" * 64}})
        with pytest.raises(OllamaError, match="HTTP 400: file path must be relative"):
            client_api.create_model(cl, {"model": "x", "files": {"/m.gguf": "sha256:" + "0" * 64}})
        with pytest.raises(OllamaError, match="no such file or directory"):
            client_api.create_model(cl, {"model": "x", "files": {"m.gguf": "sha256:" + "0" * 64}})


def test_old_server_gets_the_modelfile_form(server, gguf):
    server.version = "0.5.4"
    result = push(server, gguf, "-p", "seed=7", "--system", 'Say "hi"\nfirst.')
    assert result.exit_code == 0, result.output
    create = server.requests("POST", "/api/create")
    assert len(create) == 1
    model = server.models["phi:test"]
    assert model["template"] == family_modelfile("phi-3").template
    assert model["system"] == 'Say "hi"\nfirst.'
    assert model["params"]["seed"] == 7 and model["params"]["stop"][0] == "<|end|>"
    assert model_blob_ok(server, "phi:test", gguf)


def test_our_templates_keep_their_place_on_new_servers(server, tmp_path):
    # The GGUF's Phi-4-mini-reasoning template mentions tools; ours uses .Tools and .Thinking,
    # so Ollama >= 0.30 has no reason to prefer the Jinja one (API.md 7.4) and keeps ours.
    family = BY_KEY["phi-4-mini-reasoning"]
    path = write_phi3(tmp_path / "r.gguf", **{"tokenizer.chat_template": read_template(family)})
    store.add(store.ModelEntry(alias="r", path=str(path), family=family.key, n_ctx=4096))
    server.version = "0.30.2"
    result = push(server, "r", name="p4")
    assert result.exit_code == 0, result.output
    assert "own chat template" not in result.output
    shown = httpx.post(f"{server.url}/api/show", json={"model": "p4"}).json()
    assert shown["template"] == family_modelfile(family.key).template
    assert shown["capabilities"] == ["completion", "tools", "thinking"]


def test_native_template_on_new_servers_is_a_note_not_an_error(server, tmp_path):
    # A GGUF whose Jinja template advertises tools, pushed as a family whose template has none:
    # Ollama >= 0.30 shows and uses the Jinja template (API.md 7.4); we say so.
    path = write_phi3(tmp_path / "r.gguf", **{"tokenizer.chat_template": read_template(BY_KEY["phi-4-mini"])})
    store.add(store.ModelEntry(alias="r", path=str(path), family="phi-3", n_ctx=4096))
    server.version = "0.30.2"
    result = push(server, "r", name="p4")
    assert result.exit_code == 0, result.output
    assert "uses the GGUF's own chat template" in result.output


@pytest.mark.parametrize("name", ["bad name", "x:", "/x", "a/b/c/d", "ns.dot/x", "-x", "x" * 81,
                                  "x:" + "t" * 81])
def test_invalid_names_are_refused_before_anything_is_sent(server, gguf, name):
    result = push(server, gguf, name=name)
    assert result.exit_code == 1 and "Invalid model name" in result.output
    assert server.log == []


@pytest.mark.parametrize("name, display", [
    ("phi", "phi:latest"), ("phi:q4_K_M", "phi:q4_K_M"), ("user/phi", "user/phi:latest"),
    ("registry.ollama.ai/library/phi:1", "phi:1"), ("my.host:5000/ns/phi.v2:x", "my.host:5000/ns/phi.v2:x"),
    ("_x/Y-1:2.0", "_x/Y-1:2.0"),
])
def test_valid_names(name, display):
    assert client_api.display_name(name) == display


@pytest.mark.parametrize("value, url", [  # API.md 1.1
    (None, "http://127.0.0.1:11434"), ("", "http://127.0.0.1:11434"), ("  '1.2.3.4'  ", "http://1.2.3.4:11434"),
    ("1.2.3.4", "http://1.2.3.4:11434"), ("example.com", "http://example.com:11434"),
    (":1234", "http://:1234"), ("1.2.3.4:1234", "http://1.2.3.4:1234"), ("[::1]", "http://[::1]:11434"),
    ("::1", "http://[::1]:11434"), ("http://1.2.3.4", "http://1.2.3.4:80"),
    ("https://1.2.3.4", "https://1.2.3.4:443"), ("https://example.com/ollama", "https://example.com:443/ollama"),
    ("ollama.com", "https://ollama.com:443"), (":66000", "http://:11434"), (":-1", "http://:11434"),
    (":abc", "http://:11434"), ('"0.0.0.0"', "http://0.0.0.0:11434"),
])
def test_ollama_host_forms(value, url):
    assert client_api.parse_host(value) == url


def test_ollama_host_env_is_used_and_host_option_wins(server, gguf, monkeypatch):
    port = server.url.rsplit(":", 1)[1]
    monkeypatch.setenv("OLLAMA_HOST", f":{port}")  # empty host: the local machine
    result = CliRunner().invoke(ollama_group, ["push", str(gguf), "--name", "envhost"])
    assert result.exit_code == 0, result.output
    monkeypatch.setenv("OLLAMA_HOST", "127.0.0.1:9")  # nothing listens there
    result = CliRunner().invoke(ollama_group, ["list"])
    assert result.exit_code == 1 and "Cannot reach Ollama at http://127.0.0.1:9" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert CliRunner().invoke(ollama_group, ["list", "--host", server.url]).exit_code == 0


def test_wrongly_typed_parameters_break_generate_so_we_never_send_them(server, gguf):
    """What API.md 5 warns about, shown on the fake: create stores anything, generate fails."""
    digest = sha256_file(gguf, progress=False)
    with client_api.client(server.url) as cl:
        client_api.upload_blob(cl, gguf, digest, progress=False)
        client_api.create_model(cl, {"model": "bad", "files": {"m.gguf": digest},
                                 "parameters": {"stop": "<|end|>", "num_ctx": "4096"}})
        with pytest.raises(OllamaError, match='HTTP 500: option "(stop|num_ctx)" must be of type'):
            client_api.generate_one(cl, "bad")


def test_fake_follows_the_blob_and_router_facts(server):
    data = b"GGUF" + b"\0" * 60
    hexd = hashlib.sha256(data).hexdigest()
    with httpx.Client(base_url=server.url) as cl:
        assert cl.head(f"/api/blobs/sha256:{hexd}").status_code == 404
        assert cl.post("/api/blobs/sha256:abc", content=data).json() == {"error": "invalid digest format"}
        dash = cl.post(f"/api/blobs/sha256-{hexd}", content=data)  # only sha256: matches (API.md 2)
        assert dash.status_code == 400 and dash.json()["error"].startswith('digest mismatch, expected "sha256-')
        assert cl.head(f"/api/blobs/sha256-{hexd}").status_code == 200  # kept under its real digest
        assert cl.post(f"/api/blobs/sha256:{hexd}", content=data).status_code == 200  # exists already
        assert (cl.get("/nope").status_code, cl.get("/nope").text) == (404, "404 page not found")
        assert (cl.get("/api/create").status_code, cl.get("/api/create").text) == (405, "405 method not allowed")
        assert cl.post("/api/show", json={"model": "x"}).json() == {"error": "model 'x' not found"}
        assert cl.post("/api/show", json={}).json() == {"error": "model is required"}
        assert cl.get("/api/tags").content == b'{"models":[]}'


def hf_cache_layout(tmp_path, gguf, blob_name=None):
    """The file as huggingface_hub caches it: blobs/<sha256> and a snapshot symlink to it."""
    blobs, snap = tmp_path / "hub" / "blobs", tmp_path / "hub" / "snapshots" / "abc"
    blobs.mkdir(parents=True)
    snap.mkdir(parents=True)
    blob = blobs / (blob_name or hashlib.sha256(gguf.read_bytes()).hexdigest())
    blob.write_bytes(gguf.read_bytes())
    (snap / "model.gguf").symlink_to(blob)
    return snap / "model.gguf"


def test_a_hub_cached_gguf_is_pushed_by_its_blob_name_digest(server, gguf, tmp_path):
    path = hf_cache_layout(tmp_path, gguf)
    result = push(server, path)
    assert result.exit_code == 0, result.output
    assert model_blob_ok(server, "phi:test", gguf)
    assert cached_digest(path) == "sha256:" + hashlib.sha256(gguf.read_bytes()).hexdigest()


def test_a_blob_named_with_a_wrong_digest_is_caught_by_the_server(server, gguf, tmp_path):
    path = hf_cache_layout(tmp_path, gguf, blob_name="0" * 64)
    result = push(server, path)
    assert result.exit_code == 1 and result.output.count("\n") <= 2
    assert "phi:test" not in server.models


# ---------------------------------------------------------------- bad input, one line each


def one_line(result) -> str:
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    return lines[0]


def test_a_split_gguf_is_refused_before_anything_is_sent(server, tmp_path):
    part = write_phi3(tmp_path / "phi-Q4_K_M-00001-of-00003.gguf", **{"split.count": 3})
    line = one_line(push(server, part))
    assert "is one part of a GGUF split into 3 files" in line
    assert "llama-gguf-split --merge phi-Q4_K_M-00001-of-00003.gguf merged.gguf" in line
    assert server.log == []
    second = write_phi3(tmp_path / "x.gguf", **{"split.count": 2})  # split by metadata only
    assert "split into 2 files" in one_line(push(server, second))


@pytest.mark.parametrize("kind, says", [
    ("html", "GET /api/version answered text/html"),
    ("404", "GET /api/version answered HTTP 404: 404 page not found"),
    ("garbage", "GET /api/version answered application/json"),
])
@pytest.mark.parametrize("command", ["push", "list"])
def test_a_host_that_is_not_ollama_is_named_in_one_line(gguf, kind, says, command):
    with NotOllama(kind) as host:
        args = ["push", str(gguf), "--name", "x"] if command == "push" else ["list"]
        line = one_line(CliRunner().invoke(ollama_group, [*args, "--host", host.url]))
    assert f"{host.url} is not an Ollama server" in line and says in line
    assert "point --host or OLLAMA_HOST at the machine running `ollama serve`" in line


def test_an_unreachable_host_is_named_with_the_next_step(gguf, tmp_path):
    line = one_line(CliRunner().invoke(ollama_group, ["push", str(gguf), "--name", "x", "--host", "127.0.0.1:9"]))
    assert "Cannot reach Ollama at http://127.0.0.1:9" in line and "is `ollama serve` running?" in line


def test_a_name_taken_by_another_model_needs_force(server, gguf, tmp_path):
    other = write_phi3(tmp_path / "other.gguf", **{"tokenizer.chat_template": read_template(BY_KEY["phi-3"])})
    assert push(server, other, name="taken").exit_code == 0
    line = one_line(push(server, gguf, name="taken"))
    assert f"taken already exists on {server.url}" in line and "add --force to replace it" in line
    assert push(server, gguf, "--force", name="taken").exit_code == 0
    assert push(server, gguf, name="taken").exit_code == 0  # our own push of this file: an update
    assert model_blob_ok(server, "taken:latest", gguf)


# ---------------------------------------------------------------- current servers


def test_list_finds_our_models_on_servers_that_rewrite_ggufs(server, gguf):
    server.version = "0.30.2"
    store.add(store.ModelEntry(alias="mine", path=str(gguf), family="phi-3", n_ctx=4096))
    assert push(server, "mine", name="user/mine:q4").exit_code == 0
    stored = server.models["user/mine:q4"]["manifest"]["layers"][0]["digest"]
    assert stored != "sha256:" + hashlib.sha256(gguf.read_bytes()).hexdigest()  # re-written
    result = CliRunner().invoke(ollama_group, ["list", "--host", server.url])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("mine\t") and "user/mine:q4" in result.output
    # Another model under that name (other details) is not ours any more.
    server.models["user/mine:q4"]["details"] = {**server.models["user/mine:q4"]["details"], "parameter_size": "14B"}
    again = CliRunner().invoke(ollama_group, ["list", "--host", server.url])
    assert again.output.strip().endswith("\t-")


def test_a_gguf_without_chat_template_gets_a_note_and_embed_template_writes_a_copy(server, tmp_path):
    import gguf as gguf_lib

    bare = write_phi3(tmp_path / "bare.gguf", **{"tokenizer.chat_template": DROP})
    with open(bare, "ab") as f:  # tensor data after the header, so the copy must move it intact
        f.write(bytes(range(256)) * 64)
    result = push(server, bare, name="bare")
    assert result.exit_code == 0, result.output
    assert "bare.gguf has no tokenizer.chat_template" in result.output and "--embed-template" in result.output
    result = push(server, bare, "--embed-template", "--force", name="bare")
    assert result.exit_code == 0, result.output
    copy = tmp_path / "bare.chat-template.gguf"
    assert f"Wrote {copy}" in result.output
    template = read_template(BY_KEY["phi-3"])
    reader, original = gguf_lib.GGUFReader(copy), gguf_lib.GGUFReader(bare)  # an independent reader
    field = reader.fields["tokenizer.chat_template"]
    assert bytes(field.parts[field.data[0]]).decode() == template
    assert set(reader.fields) == set(original.fields) | {"tokenizer.chat_template"}
    assert [(t.name, bytes(t.data)) for t in reader.tensors] == [(t.name, bytes(t.data)) for t in original.tensors]
    assert model_blob_ok(server, "bare:latest", copy)
    assert [p.name for p in tmp_path.iterdir() if "partial" in p.name or p.name.startswith(".")] == []
