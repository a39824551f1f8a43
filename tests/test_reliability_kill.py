"""Reliability: SIGKILL at random moments during convert, quantize, download and push.

Each stage runs the real `llm` console script in its own session (process group) against fakes
started in this process (hub, Ollama) on 127.0.0.1. One clean run first measures how long the
work phase lasts (from the moment its temporary output appears until it is renamed, or until the
exit) and gives the reference output; then KILLS runs are each SIGKILLed after a delay drawn from [0, 0.9 x that
duration] once their work has begun (seeded: PHI_RELIABILITY_SEED, default 8). After every kill:

- the final path holds nothing or the complete file (same sha256 as the reference, and our
  validator accepts it); for a push: every model the server holds points at a complete blob;
- what else is in the output folder is at most a recognisable temporary leftover
  (`.<name>.<random>.partial`, huggingface_hub's `*.incomplete`);
- the registry JSON (and Ollama digest cache) still parses;
and at the end one more run of the same command (with --force where a completed output now
exists) succeeds and produces the reference output. Stale leftovers are counted and reported:
SIGKILL cannot clean up, and the next run neither needs nor removes them.

Default 3 kills per stage; PHI_RELIABILITY_LONG=1 makes it 12.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

from fakes import hub_server, ollama_server
from fixtures.gguf_builders import write_phi3
from fixtures.hub_fixtures import FTYPES
from llm_phi_gguf.gguf_info import validate_gguf

LONG = os.environ.get("PHI_RELIABILITY_LONG") == "1"
KILLS = 12 if LONG else 3
SEED = int(os.environ.get("PHI_RELIABILITY_SEED", "8"))
LLM = shutil.which("llm") or str(Path(sys.executable).with_name("llm"))
TEMP_LEFTOVER = re.compile(r"^\..+\.partial$")
# The kill tests' model: big enough that the work phase is long (86 MB of f16 weights).
BIG = dict(hidden_size=1024, intermediate_size=2048, num_hidden_layers=4, dtype="float16")

pytestmark = pytest.mark.skipif(not Path(LLM).exists(), reason="the llm console script is not installed")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def record(stage: str, **figures) -> None:
    stats = os.environ.get("PHI_RELIABILITY_STATS")
    if stats:
        with open(stats, "a") as f:
            f.write(json.dumps({"test": f"kill_{stage}", "long": LONG, "seed": SEED, **figures}) + "\n")


def cli_env(user_path: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "HF_HUB_CACHE", "OLLAMA_HOST")}
    return {**env, "LLM_LOAD_PLUGINS": "llm-phi-gguf", "LLM_USER_PATH": str(user_path),
            "HF_HUB_DISABLE_PROGRESS_BARS": "1", "PYTHONUNBUFFERED": "1", **extra}


@dataclass
class Run:
    rc: int
    killed: bool  # the kill landed before the command finished
    output: str
    work_s: float  # from the start signal to the exit (or the kill)


def run_cli(args: list[str], env: dict, started=lambda: True, delay: float | None = None,
            parent_only: bool = False, timeout: float = 180) -> Run:
    """Run `llm ARGS`; with `delay`, SIGKILL it that long after started() first holds.

    parent_only: kill the `llm` process alone (as `kill -9 PID` does); its children must then
    die by themselves (the quantizer child asks for PR_SET_PDEATHSIG). Else the whole group."""
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen([LLM, *args], env=env, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        try:
            while proc.poll() is None and not started():
                assert time.monotonic() < deadline, "the command never started its work"
                time.sleep(0.002)
            t0 = time.monotonic()
            killed = False
            if delay is not None and proc.poll() is None:
                end = t0 + delay
                while proc.poll() is None and time.monotonic() < end:
                    time.sleep(0.002)
                if proc.poll() is None:
                    os.kill(proc.pid, signal.SIGKILL) if parent_only else os.killpg(proc.pid, signal.SIGKILL)
                    killed = True
            work_end = None  # a clean run: the work ends when its signal goes away (the temporary is renamed)
            while delay is None and proc.poll() is None:
                if work_end is None and not started():
                    work_end = time.monotonic()
                assert time.monotonic() < deadline, "the command did not finish"
                time.sleep(0.002)
            rc = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            work = (work_end or time.monotonic()) - t0
            if parent_only:
                assert group_gone(proc.pid), "a child of the killed command kept running"
        finally:
            with contextlib_suppress():
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.seek(0)
        return Run(rc, killed, log.read(), work)


class contextlib_suppress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return exc[0] is not None and issubclass(exc[0], ProcessLookupError)


def wait_until(condition, timeout: float = 30.0) -> bool:
    """Poll `condition` until it holds or `timeout` seconds pass; whether it held. Tests wait on
    conditions, never for a fixed time: on a loaded machine any fixed wait is sometimes too short."""
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= end:
            return False
        time.sleep(0.02)
    return True


def group_gone(pgid: int, wait_s: float = 10.0) -> bool:
    def gone() -> bool:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        return False

    return wait_until(gone, wait_s)


def registry_ok(user_path: Path) -> dict:
    """models.json (if any) parses and has the registry layout; returns its models."""
    folder = user_path / "llm-phi-gguf"
    registry = folder / "models.json"
    cache = folder / "ollama-digests.json"
    if cache.exists():
        json.loads(cache.read_text())
    if not registry.exists():
        return {}
    return json.loads(registry.read_text())["models"]


def leftovers(folder: Path, final: Path) -> list[str]:
    """Files in `folder` other than the final output; each must look like a temporary."""
    others = sorted(p.name for p in folder.iterdir() if p != final and p.is_file())
    bad = [n for n in others if not TEMP_LEFTOVER.match(n)]
    assert bad == [], f"unrecognisable files beside {final.name}: {bad}"
    return others


def final_ok(final: Path, reference: str) -> bool:
    """Nothing at the final path, or the complete file. Returns whether it exists."""
    if not final.exists():
        return False
    assert sha256(final) == reference, f"{final.name} is at its final path but incomplete or different"
    validate_gguf(final)
    return True


def delays(stage: str, work_s: float) -> list[float]:
    rng = random.Random(f"{SEED}-{stage}")
    return [rng.uniform(0.0, 0.9 * work_s) for _ in range(KILLS)]


def partial_in(folder: Path, name: str):
    return lambda: any(p.name.startswith(f".{name}.") for p in folder.iterdir())


# ---------------------------------------------------------------- convert


def test_kill_during_convert(checkpoint, tmp_path, user_path):
    src = checkpoint("phi-3-mini-4k", **BIG)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    final = out_dir / "big.gguf"
    env = cli_env(user_path)
    args = ["phi", "quantize", "convert", str(src), "-o", str(final), "--outtype", "q8_0"]

    clean = run_cli(args, env, partial_in(out_dir, final.name))
    assert clean.rc == 0, clean.output
    reference = sha256(final)
    landed = mid_write = before = 0
    for i, delay in enumerate(delays("convert", clean.work_s)):
        fresh = i % 2 == 0  # alternately: no output yet, or a complete one replaced with --force
        if fresh:
            final.unlink(missing_ok=True)
        run = run_cli(args + ([] if fresh else ["--force"]), env, partial_in(out_dir, final.name), delay)
        landed += run.killed
        assert run.killed or run.rc == 0, run.output
        final_ok(final, reference)
        mid_write += len(leftovers(out_dir, final)) > before
        before = len(leftovers(out_dir, final))
        registry_ok(user_path)
    stale = leftovers(out_dir, final)
    rerun = run_cli(args + (["--force"] if final.exists() else []), env)
    assert rerun.rc == 0, rerun.output
    assert final_ok(final, reference)
    record("convert", kills=KILLS, landed_during_work=landed, killed_mid_write=mid_write,
           work_s=round(clean.work_s, 2),
           stale_partials=len(stale), failures=0)
    assert landed >= 1  # the kills do hit the work phase


# ---------------------------------------------------------------- quantize


def test_kill_during_quantize(converted, tmp_path, user_path):
    src = converted("phi-3-mini-4k", "f16", **BIG)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    final = out_dir / "big_Q4_K_M.gguf"
    env = cli_env(user_path)
    args = ["phi", "quantize", str(src), "-q", "Q4_K_M", "-o", str(final), "--threads", "1", "--no-report",
            "--alias", "killq"]

    clean = run_cli(args, env, partial_in(out_dir, final.name))
    assert clean.rc == 0, clean.output
    reference = sha256(final)
    landed = mid_write = before = 0
    for i, delay in enumerate(delays("quantize", clean.work_s)):
        fresh = i % 2 == 0
        if fresh:
            final.unlink(missing_ok=True)
        # every other kill hits the `llm` process alone: the native child must not outlive it
        run = run_cli(args + ([] if fresh else ["--force"]), env, partial_in(out_dir, final.name), delay,
                      parent_only=i % 2 == 1)
        landed += run.killed
        assert run.killed or run.rc == 0, run.output
        final_ok(final, reference)
        mid_write += len(leftovers(out_dir, final)) > before
        before = len(leftovers(out_dir, final))
        models = registry_ok(user_path)
        if "killq" in models:  # (the file may be gone: fresh runs delete it; then it was never re-made)
            assert Path(models["killq"]["path"]) == final
    stale = leftovers(out_dir, final)
    rerun = run_cli(args + (["--force"] if final.exists() else []), env)
    assert rerun.rc == 0, rerun.output
    assert final_ok(final, reference)
    assert Path(registry_ok(user_path)["killq"]["path"]) == final
    record("quantize", kills=KILLS, landed_during_work=landed, killed_mid_write=mid_write,
           work_s=round(clean.work_s, 2),
           stale_partials=len(stale), failures=0)
    assert landed >= 1


# ---------------------------------------------------------------- download


class SlowCDNHandler(hub_server.Handler):
    """The fake hub's CDN, sending bodies in 256 KiB pieces with a pause (about 25 MB/s)."""

    def send(self, status, data, headers, body, ctype):
        if self.server.role != "cdn" or not body or len(data) < 1 << 20:
            return super().send(status, data, headers, body, ctype)
        self.send_response(status)
        for k, v in {"Content-Type": ctype, **headers, "Content-Length": str(len(data))}.items():
            self.send_header(k, v)
        self.end_headers()
        try:
            for i in range(0, len(data), 1 << 18):
                self.wfile.write(data[i:i + (1 << 18)])
                time.sleep(0.01)
        except (BrokenPipeError, ConnectionResetError):  # the client was killed
            self.close_connection = True


class SlowHub(hub_server.FakeHub):
    def _server(self, role: str) -> ThreadingHTTPServer:
        server = super()._server(role)
        server.RequestHandlerClass = SlowCDNHandler
        return server


def padded_gguf(path: Path, mib: int, **meta) -> Path:
    """A tiny loadable phi3 GGUF followed by `mib` MiB of padding (a big upload/download)."""
    write_phi3(path, **meta)
    with open(path, "ab") as f:
        f.write(bytes(range(256)) * (4096 * mib))
    return path


def test_kill_during_download(tmp_path, user_path):
    gguf = padded_gguf(tmp_path / "src.gguf", 24, **{"general.file_type": FTYPES["Q4_K_M"]})
    reference = sha256(gguf)
    hf_home = tmp_path / "hf-home"
    with SlowHub() as hub:
        hub.add(hub_server.FakeRepo("tiny/phi-kill-GGUF", {"README.md": b"# tiny\n",
                                                           "phi-kill-Q4_K_M.gguf": gguf.read_bytes()}))
        env = cli_env(user_path, HF_ENDPOINT=hub.url, HF_HOME=str(hf_home))
        args = ["phi", "download", "tiny/phi-kill-GGUF", "-q", "Q4_K_M"]
        cache = hf_home / "hub" / "models--tiny--phi-kill-GGUF"

        def fetching():
            return any(True for _ in cache.glob("blobs/*.incomplete")) if cache.exists() else False

        def snapshot() -> Path | None:
            found = list(cache.glob("snapshots/*/phi-kill-Q4_K_M.gguf"))
            return found[0] if found else None

        def state_ok():
            snap = snapshot()
            if snap is not None and snap.exists():  # the symlink appears only for a complete blob
                assert sha256(snap) == reference
            others = [p.name for p in cache.glob("blobs/*") if not p.name.endswith(".incomplete")]
            for name in others:  # completed blobs are named by their sha256
                assert sha256(cache / "blobs" / name) == name
            models = registry_ok(user_path)
            for entry in models.values():
                assert sha256(Path(entry["path"])) == reference
            return models

        clean = run_cli(args, env, fetching)
        assert clean.rc == 0, clean.output
        assert set(state_ok()) == {"phi-3-q4"}
        landed = mid_write = 0
        for delay in delays("download", clean.work_s):
            shutil.rmtree(hf_home)
            (user_path / "llm-phi-gguf" / "models.json").unlink(missing_ok=True)
            run = run_cli(args, env, fetching, delay)
            landed += run.killed
            assert run.killed or run.rc == 0, run.output
            state_ok()
            mid_write += snapshot() is None
        stale = sorted(p.name for p in cache.glob("blobs/*.incomplete"))
        rerun = run_cli(args, env)
        assert rerun.rc == 0, rerun.output
        assert set(state_ok()) == {"phi-3-q4"} and sha256(snapshot()) == reference
        resumed = [r for r in hub.requests if r.path.startswith("/lfs/") and "range" in r.headers]
    # Weights are fetched into a stable `<sha256>.incomplete` (hub_resume.py), which the next run
    # resumes with a Range request and renames; a kill before the first 10 MB chunk reached the disk
    # leaves nothing to resume. Leftovers of huggingface_hub's own per-process temporaries
    # (`<sha256>.<random>.incomplete`, small files) are recorded, not a failure.
    left = sorted(p.name for p in cache.glob("blobs/*.incomplete"))
    assert all(re.fullmatch(r"[0-9a-f]{64}(\.[0-9a-f]+)?\.incomplete", n) for n in left), left
    record("download", kills=KILLS, landed_during_work=landed, killed_mid_download=mid_write,
           work_s=round(clean.work_s, 2),
           stale_partials=len(stale), stale_after_rerun=len(left), resumed_with_range=len(resumed) > 0,
           failures=0)
    assert landed >= 1


# ---------------------------------------------------------------- push


def slow_ollama(root: Path) -> ollama_server.FakeOllama:
    """The fake Ollama server, reading upload bodies at about 50 MB/s."""
    fake = ollama_server.FakeOllama(root)
    base = fake.httpd.RequestHandlerClass

    class Slow(base):
        def body_chunks(self):
            for chunk in super().body_chunks():
                if len(chunk) >= 1 << 16:
                    time.sleep(0.02)
                yield chunk

    fake.httpd.RequestHandlerClass = Slow
    return fake


def test_kill_during_push(tmp_path, user_path):
    gguf = padded_gguf(tmp_path / "big.gguf", 48)
    reference = "sha256:" + sha256(gguf)
    name = "phi:kill"
    with slow_ollama(tmp_path / "ollama") as server:
        env = cli_env(user_path)
        args = ["phi", "ollama", "push", str(gguf), "--name", name, "--host", server.url]

        def uploading():
            return server.blob_bytes_received > 0

        def state_ok():
            for model in server.models.values():  # a created model points at a complete blob
                digest = model["manifest"]["layers"][0]["digest"]
                assert digest == reference and "sha256:" + sha256(server.blob_path(digest)) == digest
            for blob in server.blobs.iterdir():  # stored blobs are complete (named by content)
                if not blob.name.startswith(".upload-"):
                    assert sha256(blob) == blob.name.split("-", 1)[1]
            registry_ok(user_path)

        def reset():
            server.models.clear()
            for blob in server.blobs.iterdir():
                blob.unlink()
            server.blob_bytes_received = 0

        clean = run_cli(args, env, uploading)
        assert clean.rc == 0, clean.output
        state_ok()
        assert list(server.models) == [name]
        landed = mid_push = 0
        for delay in delays("push", clean.work_s):
            reset()
            run = run_cli(args, env, uploading, delay)
            landed += run.killed
            assert run.killed or run.rc == 0, run.output
            state_ok()
            mid_push += name not in server.models
        def upload_temporaries():
            return [p.name for p in server.blobs.iterdir() if p.name.startswith(".upload-")]

        # the server deletes a killed upload's temporary once it notices the dropped connection
        wait_until(lambda: not upload_temporaries())
        stale = upload_temporaries()
        rerun = run_cli(args, env)
        assert rerun.rc == 0, rerun.output
        state_ok()
        assert list(server.models) == [name]
    record("push", kills=KILLS, landed_during_work=landed, killed_before_create=mid_push,
           work_s=round(clean.work_s, 2),
           stale_server_temporaries=len(stale), failures=0)
    assert stale == []
    assert landed >= 1
