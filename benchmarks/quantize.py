#!/usr/bin/env python
"""Benchmark: the `llm phi quantize GGUF -q Q4_K_M --no-report` command vs a direct
`llama_model_quantize` call, each as a whole process, as a user would run them.

"Ours" is the `llm` console script in its own process (start-up, plugin loading, click parsing,
validation, the quantizer child process, registration); "direct" is `python -c` importing
llama_cpp and making the one C call with llama.cpp's default params (nthread 0 = all cores),
also in its own process. Both are timed from the parent, wall clock, from spawn to exit, on the
same f16 GGUF, interleaved (direct, ours, direct, ours ...) so machine load hits both alike.
Target: ours <= 1.03 x direct. The fixed cost of our command (what it adds whatever the model
size) is the median of (ours - direct) over rounds on a tiny model. The quality report's cost
(f16 + Q4_K_M over the built-in evaluation text, in this process) is measured separately.

    python benchmarks/quantize.py [--layers 4 --hidden 2048 --ffn 8192 --rounds 3 --workdir DIR]

The model is a random-weight Phi-3 checkpoint (tests/fixtures/checkpoints.py) converted by our
converter; it is cached in the work dir between runs. Raw per-round times go to results.jsonl.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import record, run

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]
LLM = shutil.which("llm") or str(Path(sys.executable).with_name("llm"))
DIRECT = """import ctypes, sys, llama_cpp
params = llama_cpp.llama_model_quantize_default_params()
params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M
sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), ctypes.byref(params)))
"""


def build_model(workdir: Path, layers: int, hidden: int, ffn: int) -> Path:
    out = workdir / f"bench-phi3-L{layers}-H{hidden}-F{ffn}_F16.gguf"
    if out.exists():
        return out
    from fixtures.checkpoints import make_checkpoint

    from llm_phi_gguf.convert import convert_checkpoint

    folder = make_checkpoint("phi-3-mini-4k", workdir / out.stem, hidden_size=hidden, intermediate_size=ffn,
                             num_hidden_layers=layers, num_attention_heads=hidden // 64,
                             num_key_value_heads=hidden // 64, initializer_range=0.02, dtype="float16")
    return convert_checkpoint(folder, out, outtype="f16", progress=False)


def timed_process(cmd: list[str]) -> float:
    """Wall seconds from spawn to exit of one command; it must succeed."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[:4]} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return elapsed


def direct(src: Path, dst: Path) -> float:
    return timed_process([sys.executable, "-c", DIRECT, str(src), str(dst)])


def ours(src: Path, dst: Path) -> float:
    return timed_process([LLM, "phi", "quantize", str(src), "-q", "Q4_K_M", "--no-report", "-o", str(dst), "--force"])


def startup_only() -> float:
    """The same console script doing no work: llm's start-up, plugin loading, click."""
    return timed_process([LLM, "phi", "quantize", "--help"])


def interleaved(src: Path, workdir: Path, rounds: int, tag: str, startup: bool = False) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"direct": [], "ours": [], "startup": []}
    for _ in range(rounds):
        times["direct"].append(direct(src, workdir / f"{tag}_direct_Q4_K_M.gguf"))
        times["ours"].append(ours(src, workdir / f"{tag}_ours_Q4_K_M.gguf"))
        if startup:
            times["startup"].append(startup_only())
    return times


def quality_cost(src: Path, q4: Path) -> tuple[float, str]:
    from llm_phi_gguf import quality

    start = time.perf_counter()
    report = quality.evaluate(src, [q4])
    return time.perf_counter() - start, quality.format_table(report)


def main() -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--ffn", type=int, default=8192)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tiny-rounds", type=int, default=10, help="rounds on a tiny model to measure the fixed overhead")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "llm-phi-bench")
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    os.environ["LLM_USER_PATH"] = str(args.workdir / "llm-user")  # registration goes to a scratch registry
    os.environ["LLM_LOAD_PLUGINS"] = "llm-phi-gguf"

    src = build_model(args.workdir, args.layers, args.hidden, args.ffn)
    times = interleaved(src, args.workdir, args.rounds, "model")
    same = (args.workdir / "model_direct_Q4_K_M.gguf").read_bytes() == (args.workdir / "model_ours_Q4_K_M.gguf").read_bytes()
    tiny_src = build_model(args.workdir, 2, 256, 512)
    tiny = interleaved(tiny_src, args.workdir, args.tiny_rounds, "tiny", startup=True)
    overhead = [o - d for d, o in zip(tiny["direct"], tiny["ours"])]
    q_seconds, table = quality_cost(src, args.workdir / "model_ours_Q4_K_M.gguf")
    print(table)
    med = {k: statistics.median(v) for k, v in times.items() if v}
    result = {
        "model": f"{src.name}, {src.stat().st_size / 1e6:.0f} MB f16",
        "measured": "each side a whole process timed from spawn to exit, interleaved",
        "rounds": args.rounds,
        "direct process (s, per round)": [round(t, 3) for t in times["direct"]],
        "llm phi quantize process (s, per round)": [round(t, 3) for t in times["ours"]],
        "direct median (s)": round(med["direct"], 3),
        "ours median (s)": round(med["ours"], 3),
        "ratio ours/direct (medians)": round(med["ours"] / med["direct"], 3),
        "target ratio": "<= 1.03",
        "outputs byte-identical": same,
        "tiny model": f"{tiny_src.name}, {tiny_src.stat().st_size / 1e6:.1f} MB f16",
        "tiny rounds": args.tiny_rounds,
        "tiny direct process (s, per round)": [round(t, 3) for t in tiny["direct"]],
        "tiny llm phi quantize process (s, per round)": [round(t, 3) for t in tiny["ours"]],
        "fixed overhead ours-direct (ms, per round)": [round(d * 1000) for d in overhead],
        "fixed overhead (ms, median)": round(statistics.median(overhead) * 1000),
        "llm phi quantize --help process (s, per round)": [round(t, 3) for t in tiny["startup"]],
        "start-up alone: llm phi quantize --help process (ms, median)": round(statistics.median(tiny["startup"]) * 1000),
        "quality report f16 + Q4_K_M, in-process (s)": round(q_seconds, 1),
        "load average at end": round(os.getloadavg()[0], 1),
    }
    record("quantize", result)
    return result


if __name__ == "__main__":
    run(main)
