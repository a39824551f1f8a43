"""The on-disk prompt cache: `llm -c` in a new process loads the saved conversation state and
answers exactly as without it; bad files are ignored and deleted; the folder stays bounded."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import llm
import pytest

from llm_phi_gguf import prompt_cache, store

LLM = shutil.which("llm") or str(Path(sys.executable).with_name("llm"))
pytestmark = pytest.mark.skipif(not Path(LLM).exists(), reason="the llm console script is not installed")

# a history long enough that its state is worth a file even on the tiny test models
HISTORY = "Tell me about the history of the .NET platform and its runtime. " * 12
GREEDY = ["-o", "temperature", "0", "-o", "max_tokens", "12"]


def env_for(user_path: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLM_PHI_PROMPT_CACHE")}
    return {**env, "LLM_LOAD_PLUGINS": "llm-phi-gguf", "LLM_USER_PATH": str(user_path),
            prompt_cache.ENV_MIN_SAVING: "-1", **extra}  # -1: save whatever it costs


def llm_run(env: dict, *args) -> str:
    proc = subprocess.run([LLM, *map(str, args)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def last_log(env: dict) -> dict:
    return json.loads(llm_run(env, "logs", "-n", "1", "--json"))[0]


def cached_tokens(log: dict) -> int:
    details = log.get("token_details")
    details = json.loads(details) if isinstance(details, str) else (details or {})
    return details.get("cached_tokens", 0)


@pytest.fixture
def model_file(converted, user_path):
    return converted("phi-3-128k", "f16")


def register(user_path: Path, path: Path) -> str:
    store.register_file(path, alias="cached", force=True)  # writes into LLM_USER_PATH = user_path
    return "cached"


def cache_files(user_path: Path) -> list[Path]:
    return sorted((user_path / "llm-phi-gguf" / "prompt-cache").glob("*.kvstate"))


def conversation(env: dict, alias: str) -> tuple[str, str, dict]:
    first = llm_run(env, "-m", alias, HISTORY, *GREEDY)
    second = llm_run(env, "-c", "And what came after that?", *GREEDY)
    return first, second, last_log(env)


def test_new_process_loads_the_state_and_answers_the_same(model_file, tmp_path, monkeypatch):
    on, off = tmp_path / "on", tmp_path / "off"
    results = {}
    for user, extra in ((on, {}), (off, {prompt_cache.ENV_SIZE: "0"})):
        user.mkdir()
        env = env_for(user, **extra)
        monkeypatch.setenv("LLM_USER_PATH", str(user))
        results[user] = conversation(env, register(user, model_file))
    first_on, second_on, log_on = results[on]
    first_off, second_off, log_off = results[off]
    assert (first_on, second_on) == (first_off, second_off)
    assert len(second_on.strip()) > 0
    # the second turn (a new process) reused the whole first turn from disk; off reused nothing
    assert log_on["input_tokens"] == log_off["input_tokens"]
    assert cached_tokens(log_on) > 100 and cached_tokens(log_off) == 0
    assert cache_files(on) and not cache_files(off)
    assert not (off / "llm-phi-gguf" / "prompt-cache").exists()


def test_in_process_and_from_disk_give_identical_tokens(model_file, user_path, monkeypatch):
    """Same greedy continuation from a fresh evaluation, from the context kept in memory, and
    from a state loaded off disk into a freshly loaded model."""
    from llm_phi_gguf import runtime

    monkeypatch.setenv(prompt_cache.ENV_MIN_SAVING, "-1")
    alias = register(user_path, model_file)
    model = llm.get_model(alias)
    conv = model.conversation()
    conv.prompt(HISTORY, temperature=0, max_tokens=12).text()
    in_memory = conv.prompt("And then?", temperature=0, max_tokens=12)
    text_memory = in_memory.text()
    assert cache_files(user_path)
    runtime.CACHE.clear()  # as a new process would: nothing in memory, the file on disk
    conv.responses.pop()
    from_disk = conv.prompt("And then?", temperature=0, max_tokens=12)
    assert from_disk.text() == text_memory
    assert from_disk.token_details["cached_tokens"] > 100
    runtime.CACHE.clear()
    conv.responses.pop()
    fresh = conv.prompt("And then?", temperature=0, max_tokens=12, prompt_cache=False)
    assert fresh.text() == text_memory
    assert not (fresh.token_details or {}).get("cached_tokens")


def saved_state(user_path: Path, model_file: Path, monkeypatch) -> Path:
    monkeypatch.setenv(prompt_cache.ENV_MIN_SAVING, "-1")
    model = llm.get_model(register(user_path, model_file))
    model.prompt(HISTORY, temperature=0, max_tokens=4).text()
    files = cache_files(user_path)
    assert len(files) == 1
    return files[0]


def corrupt_truncate(data: bytes) -> bytes:
    return data[: len(data) // 2]


def corrupt_flip_state(data: bytes) -> bytes:
    b = bytearray(data)
    b[-100] ^= 0xFF
    return bytes(b)


def corrupt_header(data: bytes) -> bytes:
    return b"NOTOURS!" + data[8:]


def corrupt_foreign_key(data: bytes) -> bytes:
    # a state for another model (or other load options), renamed to look like ours
    i = data.index(b'"key": "') + 8
    return data[:i] + bytes(ord("0") if c != ord("0") else ord("1") for c in data[i:i + 24]) + data[i + 24:]


def corrupt_format(data: bytes) -> bytes:
    return data.replace(b'"format": 1', b'"format": 9', 1)


def corrupt_runtime(data: bytes) -> bytes:
    # written by another llama-cpp-python: same length, so only the version check can catch it
    i = data.index(b'"runtime": "') + 12
    return data[:i] + b"9" + data[i + 1:]


@pytest.mark.parametrize("corrupt", [corrupt_truncate, corrupt_flip_state, corrupt_header, corrupt_foreign_key,
                                     corrupt_format, corrupt_runtime])
def test_bad_files_are_ignored_and_deleted(corrupt, model_file, user_path, monkeypatch):
    from llm_phi_gguf import runtime

    path = saved_state(user_path, model_file, monkeypatch)
    path.write_bytes(corrupt(path.read_bytes()))
    runtime.CACHE.clear()
    model = llm.get_model("cached")
    prompt = llm.Prompt(HISTORY, model=model, options=model.Options())
    llama, tokens, gen = model.prepare(prompt)
    assert prompt_cache.restore(llama, gen.cache_slot, tokens, 0) == 0
    assert not path.exists()
    # and the turn itself runs as if there had never been a file
    assert model.prompt(HISTORY, temperature=0, max_tokens=4).text()


def test_other_models_states_are_left_alone(model_file, user_path, monkeypatch):
    path = saved_state(user_path, model_file, monkeypatch)
    other = path.with_name("0" * 24 + "-" + path.name.split("-", 1)[1])
    path.rename(other)
    key = path.name.split("-")[0]
    assert prompt_cache.entries(key) == [] and other.exists()  # another model's business
    # but read under its own name, its header (another key) gives it away: deleted
    assert prompt_cache.entries("0" * 24) == [] and not other.exists()


def test_off_writes_nothing(model_file, user_path, monkeypatch):
    monkeypatch.setenv(prompt_cache.ENV_MIN_SAVING, "-1")
    model = llm.get_model(register(user_path, model_file))
    model.prompt(HISTORY, temperature=0, max_tokens=4, prompt_cache=False).text()
    monkeypatch.setenv(prompt_cache.ENV_SIZE, "0")
    model.prompt(HISTORY + " more", temperature=0, max_tokens=4).text()
    assert not (user_path / "llm-phi-gguf" / "prompt-cache").exists()


def test_short_chat_saves_nothing(model_file, user_path):
    """With the default policy a state is written only when loading it would save real time."""
    model = llm.get_model(register(user_path, model_file))
    model.prompt("Hi", temperature=0, max_tokens=4).text()
    assert cache_files(user_path) == []


def test_size_bound_evicts_least_recently_used(user_path):
    folder = prompt_cache.cache_dir()
    folder.mkdir(parents=True)
    for i, name in enumerate(["old", "mid", "new"]):
        p = folder / f"k-{name}{prompt_cache.SUFFIX}"
        p.write_bytes(b"x" * 1000)
        os.utime(p, (1_000_000 + i, 1_000_000 + i))
    removed = prompt_cache.evict(2000)
    assert [p.name for p in removed] == [f"k-old{prompt_cache.SUFFIX}"]
    assert sorted(p.name for p in cache_files(user_path)) == [f"k-mid{prompt_cache.SUFFIX}", f"k-new{prompt_cache.SUFFIX}"]


def test_two_processes_saving_one_conversation_leave_one_valid_file(model_file, tmp_path, monkeypatch):
    user = tmp_path / "user"
    user.mkdir()
    monkeypatch.setenv("LLM_USER_PATH", str(user))
    alias = register(user, model_file)
    env = env_for(user)
    llm_run(env, "-m", alias, HISTORY, *GREEDY)
    # -n: the two turns are not logged. llm's SQLite log takes one writer at a time and gives up
    # after its 5 s timeout ("database is locked"), which two turns ending together on a loaded
    # CI machine hit; that is llm's log, not the prompt cache under test.
    procs = [subprocess.Popen([LLM, "-c", "And what came after that?", "-n", *GREEDY], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    # (their answers may differ in a near-tie: one may have loaded the other's newer state, whose
    # last prompt token it then evaluates alone instead of inside a batch)
    assert all(out.strip() for out, _ in outs)
    files = cache_files(user)
    assert len(files) == 1
    leftovers = [p for p in files[0].parent.iterdir() if p.name.endswith(".partial")]
    assert leftovers == []
    # and the survivor is sound: the next new process loads it
    llm_run(env, "-c", "Anything else?", *GREEDY)
    assert cached_tokens(last_log(env)) > 100


def test_cache_command_shows_and_clears(model_file, user_path, monkeypatch, llm_cli):
    saved_state(user_path, model_file, monkeypatch)
    r = llm_cli("phi", "cache")
    assert r.exit_code == 0 and "1 saved conversation states" in r.output and "LLM_PHI_PROMPT_CACHE_GB" in r.output
    r = llm_cli("phi", "cache", "clear")
    assert r.exit_code == 0 and "Deleted 1 saved conversation state " in r.output
    assert cache_files(user_path) == []
