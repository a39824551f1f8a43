"""The llm model: prompts equal the HF template rendering, tokens equal the HF tokenizer's,
generation streams through `llm`, stops cleanly, logs usage, continues conversations with the
KV cache, honours schemas, and runs async."""

import asyncio
from pathlib import Path
import json
import subprocess
import sys

import llm
import pytest

from llm_phi_gguf import store
from llm_phi_gguf.model import StopScanner

KINDS = ["phi-3-128k", "phi-4", "phi-4-mini"]
CONVO = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Can you introduce .NET"},
    {"role": "assistant", "content": "It is a developer platform.\nBy Microsoft."},
    {"role": "user", "content": "Und auf Deutsch? 🚀  two  spaces"},
]


@pytest.fixture
def registered(converted):
    def get(kind: str, outtype: str = "f16") -> str:
        entry = store.register_file(converted(kind, outtype), alias=f"t-{kind}", force=True)
        return entry.alias

    return get


def hf_tokenizer(checkpoint, kind):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(checkpoint(kind)))


@pytest.mark.parametrize("kind", KINDS)
def test_render_equals_transformers(kind, registered, checkpoint, llm_cli, tmp_path):
    alias = registered(kind)
    expected = hf_tokenizer(checkpoint, kind).apply_chat_template(CONVO, tokenize=False, add_generation_prompt=True)
    messages = tmp_path / "m.json"
    messages.write_text(json.dumps(CONVO))
    r = llm_cli("phi", "render", alias, "--messages", messages)
    assert r.exit_code == 0, r.output
    assert r.output == expected


@pytest.mark.parametrize("kind", KINDS)
def test_prompt_tokens_equal_transformers(kind, registered, checkpoint):
    """What llama.cpp is fed equals what transformers would feed the model (no double BOS)."""
    alias = registered(kind)
    model = llm.get_model(alias)
    expected = hf_tokenizer(checkpoint, kind).apply_chat_template(CONVO, tokenize=True, add_generation_prompt=True)
    expected = list(expected["input_ids"] if hasattr(expected, "keys") else expected)
    prompt = llm.Prompt(None, model=model, options=model.Options(), messages=_messages(CONVO))
    _, tokens, _ = model.prepare(prompt)
    assert tokens == expected


def _messages(convo):
    from llm.parts import Message, TextPart

    return [Message(role=m["role"], parts=[TextPart(text=m["content"])]) for m in convo]


def test_generate_through_llm_cli_and_log_usage(registered, llm_cli):
    alias = registered("phi-3-128k")
    r = llm_cli("-m", alias, "Can you introduce .NET", "-o", "max_tokens", "7", "-o", "temperature", "0")
    assert r.exit_code == 0, r.output
    assert "<|" not in r.output
    logged = json.loads(llm_cli("logs", "-n", "1", "--json").output)[0]
    assert logged["model"] == store.model_id(alias)
    assert logged["input_tokens"] > 5 and 1 <= logged["output_tokens"] <= 7


def test_greedy_is_repeatable_and_stop_strings_cut(registered):
    model = llm.get_model(registered("phi-4"))
    first = model.prompt("Hello there", temperature=0, max_tokens=24).text()
    assert model.prompt("Hello there", temperature=0, max_tokens=24).text() == first
    assert len(first) > 4
    stop = first[len(first) // 2 : len(first) // 2 + 2]
    cut = model.prompt("Hello there", temperature=0, max_tokens=24, stop=stop).text()
    assert cut == first[: first.index(stop)]


def test_conversation_reuses_kv_cache(registered):
    model = llm.get_model(registered("phi-3-128k"))
    conversation = model.conversation()
    r1 = conversation.prompt("Can you introduce .NET", temperature=0, max_tokens=8)
    r1.text()
    r2 = conversation.prompt("And GGUF?", temperature=0, max_tokens=8)
    r2.text()
    assert r2.input_tokens > r1.input_tokens + r1.output_tokens
    # the whole first turn's prompt was already in the KV cache
    assert r2.token_details["cached_tokens"] >= r1.input_tokens


def test_schema_output_is_valid_json(registered):
    model = llm.get_model(registered("phi-4-mini"))
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}, "n": {"type": "integer"}}, "required": ["ok", "n"]}
    text = model.prompt("Answer in JSON", schema=schema, temperature=0, max_tokens=48).text()
    data = json.loads(text)
    assert isinstance(data["ok"], bool) and isinstance(data["n"], int)


def test_async_model_matches_sync(registered):
    alias = registered("phi-4-mini")
    sync = llm.get_model(alias).prompt("Hi", temperature=0, max_tokens=10).text()

    async def run():
        response = llm.get_async_model(alias).prompt("Hi", temperature=0, max_tokens=10)
        return "".join([chunk async for chunk in response])

    assert asyncio.run(run()) == sync


def test_context_warning_names_rope_regime(registered, capsys):
    model = llm.get_model(registered("phi-3-128k"))
    model.prompt("Hi", temperature=0, max_tokens=2, n_ctx=2048).text()
    err = capsys.readouterr().err
    assert "larger than the model's trained context 1024" in err and "LongRoPE" in err


def test_prompt_longer_than_context_is_one_line(registered, llm_cli):
    alias = registered("phi-4")
    r = llm_cli("-m", alias, "word " * 200, "-o", "n_ctx", "64")
    assert r.exit_code == 1
    assert "tokens, the context holds" in r.output and r.output.count("\n") == 1


def test_unknown_option_refused(registered, llm_cli):
    r = llm_cli("-m", registered("phi-4"), "hi", "-o", "gpu_layer", "1")
    assert r.exit_code == 1 and "gpu_layer" in r.output and "Extra inputs are not permitted" in r.output


@pytest.mark.parametrize(
    "chunks,stops,expected",
    [
        (["Hel", "lo<|e", "nd|>more"], ("<|end|>",), "Hello"),
        (["a<", "b"], ("<|end|>",), "a<b"),
        (["x\nIns", "truct: y"], ("\nInstruct:",), "x"),
        (["plain"], (), "plain"),
    ],
)
def test_stop_scanner_never_leaks_stop_text(chunks, stops, expected):
    scanner = StopScanner(stops)
    out = "".join(scanner.feed(c) for c in chunks if not scanner.stopped)
    if not scanner.stopped:
        out += scanner.flush()
    assert out == expected


def test_import_is_cheap():
    """llm imports every plugin on every command: ours must not pull heavy modules."""
    code = (
        "import sys, llm; before = set(sys.modules); import llm_phi_gguf; "
        "heavy = {'llama_cpp', 'numpy', 'torch', 'transformers', 'huggingface_hub', 'gguf', 'httpx', 'jinja2'}; "
        "print(sorted(m for m in set(sys.modules) - before if m.split('.')[0] in heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_llm_chat_keeps_the_conversation(registered, llm_cli):
    alias = registered("phi-3-128k")
    r = llm_cli("chat", "-m", alias, "-o", "max_tokens", "4", "-o", "temperature", "0", input="Hello\nAgain\nquit\n")
    assert r.exit_code == 0, r.output
    rows = json.loads(llm_cli("logs", "-n", "2", "--json").output)
    assert len(rows) == 2 and rows[0]["conversation_id"] == rows[1]["conversation_id"]
    first, second = sorted(rows, key=lambda row: row["datetime_utc"])
    assert second["input_tokens"] > first["input_tokens"] + first["output_tokens"]


def test_template_error_at_render_is_one_line(registered, llm_cli, tmp_path):
    alias = registered("phi-4")
    bad = tmp_path / "raises.jinja"
    bad.write_text("{{ raise_exception('System role not supported') }}")
    store.register_file(store.get(alias).path, alias="raising", template=str(bad))
    r = llm_cli("-m", "raising", "hi")
    assert r.exit_code == 1
    assert "System role not supported" in r.output and r.output.count("\n") == 1


def test_gguf_whose_own_template_does_not_compile_runs_with_a_registered_one(llm_cli, tmp_path):
    """llama-cpp-python compiles every template a GGUF carries when it loads a model; we never
    use those (ours render, within limits), so a broken one must not stop a model whose
    registration gives a working template."""
    import llama_cpp.llama_chat_format

    from fixtures.gguf_builders import write_phi3

    formatter = llama_cpp.llama_chat_format.Jinja2ChatFormatter
    path = write_phi3(tmp_path / "broken.gguf", **{"tokenizer.chat_template": "{% for m in messages %}{{ m.content }"})
    good = tmp_path / "good.jinja"
    good.write_text("{% for m in messages %}<|{{ m.role }}|>\n{{ m.content }}<|end|>\n{% endfor %}<|assistant|>\n")
    store.register_file(path, alias="own-template-broken", family="phi-3", template=str(good))
    r = llm_cli("-m", "own-template-broken", "hi", "-o", "max_tokens", "3", "-o", "temperature", "0")
    assert r.exit_code == 0, r.output  # before: "Error: unexpected '}'" from Llama() itself
    assert llama_cpp.llama_chat_format.Jinja2ChatFormatter is formatter  # restored after loading


def test_doctor_reports_build_probe_and_files(registered, llm_cli, tmp_path):
    alias = registered("phi-4")
    r = llm_cli("phi", "doctor")
    assert r.exit_code == 0, r.output
    assert "llama-cpp-python" in r.output and "GPU offload" in r.output
    assert "Quantized-inference probe" in r.output and f"ok      {alias}" in r.output
    moved = tmp_path / "moved.gguf"
    moved.write_bytes(Path(store.get(alias).path).read_bytes())
    store.register_file(moved, alias="gone")
    moved.unlink()
    r = llm_cli("phi", "doctor")
    assert r.exit_code == 1 and "MISSING gone" in r.output


DEMO = Path(__file__).resolve().parents[1] / "llm_phi_gguf" / "demo"


@pytest.fixture(scope="module")
def hub_style_phi35(tmp_path_factory):
    """The demo checkpoint with a tokenizer.json laid out like the hub's Phi-3.5 one (prepend "▁"
    to every text segment, no pre-tokenizer) and Phi-3.5's rstrip flags on its special tokens."""
    import shutil

    from tokenizers import Tokenizer, normalizers

    folder = tmp_path_factory.mktemp("phi35") / "Phi-3.5-demo"
    shutil.copytree(DEMO, folder)
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    tok.pre_tokenizer = None
    tok.save(str(folder / "tokenizer.json"))
    config = json.loads((folder / "tokenizer_config.json").read_text())
    assert all(t["rstrip"] for t in config["added_tokens_decoder"].values() if t["content"] == "<|end|>")
    return folder


@pytest.mark.parametrize("source", ["ours", "llama.cpp"])
def test_phi3_whitespace_rule_matches_hub_tokenizer(source, hub_style_phi35, llama_cpp_tree, tmp_path):
    """Phi-3's hub tokenizer absorbs whitespace after <|user|>, <|end|>... (rstrip); llama.cpp does
    so only for models whose general.name says Phi-3. Our converter names them so, and our runtime
    tells llama.cpp so for GGUFs converted elsewhere: either way the prompt tokens equal transformers'."""
    from transformers import AutoTokenizer

    from llm_phi_gguf.convert import convert_checkpoint
    from llm_phi_gguf.gguf_reader import read_gguf

    path = tmp_path / "demo.gguf"
    if source == "ours":
        convert_checkpoint(hub_style_phi35, path, outtype="f16", progress=False)
        assert "phi-3" in read_gguf(path).name.lower()
    else:
        subprocess.run([sys.executable, str(llama_cpp_tree / "convert_hf_to_gguf.py"), str(hub_style_phi35),
                        "--outfile", str(path), "--outtype", "f16"], check=True, capture_output=True)
        assert not any(m in read_gguf(path).name.lower() for m in ("phi-3", "phi3"))
    model = llm.get_model(store.register_file(path, alias=f"demo-{source}").alias)
    expected = AutoTokenizer.from_pretrained(str(hub_style_phi35)).apply_chat_template(CONVO, tokenize=True, add_generation_prompt=True)
    expected = list(expected["input_ids"] if hasattr(expected, "keys") else expected)
    prompt = llm.Prompt(None, model=model, options=model.Options(), messages=_messages(CONVO))
    assert model.prepare(prompt)[1] == expected


def test_register_warns_when_n_ctx_exceeds_training(converted, llm_cli):
    r = llm_cli("phi", "register", converted("phi-4", "f16"), "--alias", "big", "--n-ctx", "99999")
    assert r.exit_code == 0
    assert "larger than the model's trained context 16384" in r.stderr and "plain RoPE" in r.stderr


def test_llm_aliases_work(registered, llm_cli):
    alias = registered("phi-4")
    assert llm_cli("aliases", "set", "myphi", store.model_id(alias)).exit_code == 0
    r = llm_cli("-m", "myphi", "hi", "-o", "max_tokens", "2", "-o", "temperature", "0")
    assert r.exit_code == 0, r.output
