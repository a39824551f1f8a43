"""A first use caught in the middle of its download, by Ctrl-C (SIGINT) or kill -9, leaves nothing
at a final path (no snapshot link, no registry entry, no GGUF) and the next prompt resumes with an
HTTP Range request for the missing bytes only, then registers and answers.

The interrupted run is the real `llm` console script in its own process; the fake hub's CDN sends
the first part of the file and waits (FakeHub.hold) until the test has seen those bytes on disk and
stopped the process, so the moment of the interruption is exact, with no sleeps.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fakes.hub_server import FakeRepo
from fixtures.hub_fixtures import cdn_gets, tiny_gguf

from llm_phi_gguf import store
from llm_phi_gguf.catalog import BY_ALIAS

LLM = shutil.which("llm") or str(Path(sys.executable).with_name("llm"))
ROW = BY_ALIAS["phi-3-q4"]
MIB = 1 << 20
# huggingface_hub's http_get writes what arrives in DOWNLOAD_CHUNK_SIZE (10 MB) pieces: the part
# sent before the hold must hold one of them for anything to reach the disk.
SENT_FIRST = 11 * MIB

pytestmark = pytest.mark.skipif(not Path(LLM).exists(), reason="the llm console script is not installed")


def big_gguf(path: Path) -> bytes:
    """A tiny loadable Q4_K_M phi3 GGUF followed by 16 MiB of padding (llama.cpp ignores the tail)."""
    data = tiny_gguf(path, "Q4_K_M", "big") + bytes(range(256)) * (16 * MIB // 256)
    path.write_bytes(data)
    return data


def wait_for(condition, proc, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"the command ended before {what}: {proc.communicate()[0]}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "kill-9"])
def test_interrupted_first_use_leaves_nothing_final_and_the_next_prompt_resumes(sig, hub, tmp_path, user_path,
                                                                               llm_cli):
    data = big_gguf(tmp_path / "big.gguf")
    repo = hub.add(FakeRepo(ROW.gguf_repo, {"README.md": b"# q4\n", ROW.gguf_file: data}))
    go_on = hub.hold(ROW.gguf_repo, ROW.gguf_file, SENT_FIRST)
    storage = Path(os.environ["HF_HOME"], "hub", "models--" + ROW.gguf_repo.replace("/", "--"))
    partials = lambda: list(storage.glob("blobs/*.incomplete"))  # noqa: E731
    env = {**os.environ, "LLM_LOAD_PLUGINS": "llm-phi-gguf", "LLM_USER_PATH": str(user_path),
           "HF_HUB_DISABLE_PROGRESS_BARS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([LLM, "-m", "phi-3-q4", "hi", "-o", "max_tokens", "3"], env=env, text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: any(p.stat().st_size >= 10 * MIB for p in partials()), proc, "10 MB on disk")
        proc.send_signal(sig)
        output = proc.communicate(timeout=60)[0]
    finally:
        go_on.set()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    if sig == signal.SIGINT:
        assert "Interrupted" in output and "llm phi download phi-3-q4" in output and "Traceback" not in output
    kept = partials()[0].stat().st_size
    assert not list(storage.glob(f"snapshots/*/{ROW.gguf_file}"))  # nothing at a final path
    assert all(p.name.endswith(".incomplete") for p in storage.glob("blobs/*"))
    assert "phi-3-q4" not in store.load()

    hub.requests.clear()
    result = llm_cli("-m", "phi-3-q4", "hi", "-o", "max_tokens", "3", "-o", "temperature", "0")
    assert result.exit_code == 0, result.output
    assert [g.headers.get("range") for g in cdn_gets(hub)] == [f"bytes={kept}-"]  # only the missing bytes
    entry = store.get("phi-3-q4")
    assert Path(entry.path).read_bytes() == data and entry.path.endswith(ROW.gguf_file)
    assert not partials()


def test_a_partial_that_is_not_a_prefix_of_the_file_is_caught_by_its_sha256_and_removed(hub, tmp_path, llm_cli):
    import hashlib

    data = tiny_gguf(tmp_path / "q4.gguf", "Q4_K_M", "q4")
    hub.add(FakeRepo(ROW.gguf_repo, {ROW.gguf_file: data}))
    sha = hashlib.sha256(data).hexdigest()
    blobs = Path(os.environ["HF_HOME"], "hub", "models--" + ROW.gguf_repo.replace("/", "--"), "blobs")
    blobs.mkdir(parents=True)
    (blobs / f"{sha}.incomplete").write_bytes(b"\0" * 1000)  # what a broken disk or another tool left
    failed = llm_cli("-m", "phi-3-q4", "hi", "-o", "max_tokens", "3")
    announced, line = failed.stderr.strip().splitlines()  # the first-use line, then the error
    assert failed.exit_code == 1 and "is not downloaded yet" in announced and line.startswith("Error: ")
    assert f"{ROW.gguf_file} arrived corrupted" in line and "run the command again" in line
    assert not list(blobs.iterdir()) and "phi-3-q4" not in store.load()
    result = llm_cli("-m", "phi-3-q4", "hi", "-o", "max_tokens", "3")
    assert result.exit_code == 0, result.output
    assert Path(store.get("phi-3-q4").path).read_bytes() == data
