"""Benchmark `llm phi ollama push` against the fake Ollama server (tests/fakes), in one run:

- sha256 pass: our `sha256_file` vs a plain read of the same file (disk/page-cache speed);
- upload: our `upload_blob` vs a plain `httpx.post(content=<file object>)` of the same file
  to the same server (best of --repeat runs each, alternating), and one full `push`;
- second push: bytes the server received (must be 0).

The server is our own fake Ollama (tests/fakes/ollama_server.py, Python, writing blobs to a
temporary folder), not a real Ollama: the ratio compares two clients against the same server,
and real Ollama's own speed is not measured. It runs in its own process so it does not share our
GIL. Usage:
    python benchmarks/ollama_push.py --size-mb 1024 [--dir DIR] [--repeat 2]
Target (issue 6): upload throughput >= 0.9x the plain httpx upload; second push sends 0 bytes.
Every run's times go to results.jsonl.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import httpx  # noqa: E402

from common import record, run  # noqa: E402
from fixtures.gguf_builders import write_phi3  # noqa: E402
from llm_phi_gguf import ollama, ollama_client  # noqa: E402
from llm_phi_gguf.ollama_digests import sha256_file  # noqa: E402


def make_gguf(path: Path, size: int) -> Path:
    """A valid tiny phi3 GGUF padded with incompressible bytes to `size`."""
    write_phi3(path)
    block = os.urandom(4 << 20)
    with open(path, "ab") as f:
        while f.tell() < size:
            f.write(block[: size - f.tell()])
    return path


def start_server(root: Path):
    proc = subprocess.Popen([sys.executable, "-m", "fakes.ollama_server", str(root)], cwd=ROOT / "tests",
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    return proc, proc.stdout.readline().strip()


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def plain_read(path: Path) -> None:
    with open(path, "rb") as f:
        while f.read(4 << 20):
            pass


def clear_blobs(root: Path) -> None:
    for p in (root / "blobs").iterdir():
        p.unlink()


def plain_upload(url: str, path: Path, digest: str) -> None:
    with open(path, "rb") as f:
        response = httpx.post(f"{url}/api/blobs/{digest}", content=f, timeout=600)
    assert response.status_code == 201, response.text


def main() -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--dir", default=None)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ollama-bench-", dir=args.dir))
    os.environ.setdefault("LLM_USER_PATH", str(work / "llm"))
    Path(os.environ["LLM_USER_PATH"]).mkdir(exist_ok=True)
    proc = None
    try:
        size = args.size_mb << 20
        gguf = make_gguf(work / "model.gguf", size)
        t_read = min(timed(lambda: plain_read(gguf)) for _ in range(2))
        digest_box = []
        t_hash = min(timed(lambda: digest_box.append(sha256_file(gguf, progress=False))) for _ in range(2))
        digest = digest_box[0]
        t_stdlib = timed(lambda: hashlib.file_digest(open(gguf, "rb"), "sha256"))
        proc, url = start_server(work / "server")
        plain, ours = [], []
        with ollama_client.client(url) as cl:
            for _ in range(args.repeat):
                clear_blobs(work / "server")
                plain.append(timed(lambda: plain_upload(url, gguf, digest)))
                clear_blobs(work / "server")
                ours.append(timed(lambda: ollama_client.upload_blob(cl, gguf, digest, progress=False)))
            clear_blobs(work / "server")
        t_push = timed(lambda: ollama.push(str(gguf), "bench:1", host=url, echo=lambda s: None, progress=False))
        second = ollama.push(str(gguf), "bench:1", host=url, echo=lambda s: None, progress=False)
        mb = size / 2**20
        result = {
            "server": "our fake Ollama (tests/fakes/ollama_server.py), own process, 127.0.0.1",
            "file size (MiB)": round(mb),
            "plain read, best of 2 (MiB/s)": round(mb / t_read),
            "sha256_file, best of 2 (MiB/s)": round(mb / t_hash),
            "hashlib.file_digest (MiB/s)": round(mb / t_stdlib),
            "upload rounds (alternating)": args.repeat,
            "plain httpx upload (s, per round)": [round(t, 3) for t in plain],
            "upload_blob (s, per round)": [round(t, 3) for t in ours],
            "plain httpx upload, best (MiB/s)": round(mb / min(plain)),
            "upload_blob, best (MiB/s)": round(mb / min(ours)),
            "upload ratio ours/plain (best)": round(min(plain) / min(ours), 3),
            "upload ratio ours/plain (median)": round(statistics.median(plain) / statistics.median(ours), 3),
            "target ratio": ">= 0.90",
            "full first push (s: hash, HEAD, upload, create, show)": round(t_push, 3),
            "full first push (MiB/s end to end)": round(mb / t_push),
            "second push blob bytes sent": second.bytes_sent,
        }
        record("ollama_push", result)
        return result
    finally:
        if proc:
            proc.stdin.close()
            proc.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    run(main)
