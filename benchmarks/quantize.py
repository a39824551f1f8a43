#!/usr/bin/env python
"""Benchmark: `llm phi quantize GGUF -q Q4_K_M --no-report` vs a direct llama_model_quantize call.

Both quantize the same f16 GGUF in the same run, interleaved (direct, ours, direct, ours ...), so
machine load affects both alike. "Ours" is the whole command (click parsing, validation, the child
process, its llama_cpp import, registration); "direct" is only the C call, in this process, with
llama_cpp already imported and llama.cpp's default params (nthread 0 = all cores). Target: ours
<= 1.03 x direct. The quality report's cost (f16 + Q4_K_M over the built-in evaluation text) is
measured separately.

    python benchmarks/quantize.py [--layers 4 --hidden 2048 --ffn 8192 --rounds 3 --workdir DIR]

The model is a random-weight Phi-3 checkpoint (tests/fixtures/checkpoints.py) converted by our
converter; it is cached in the work dir between runs.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]


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


def direct(src: Path, dst: Path) -> float:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M
    start = time.perf_counter()
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    elapsed = time.perf_counter() - start
    assert rc == 0, "direct llama_model_quantize failed"
    return elapsed


def ours(src: Path, dst: Path) -> float:
    from click.testing import CliRunner

    from llm_phi_gguf.cli import phi

    start = time.perf_counter()
    result = CliRunner().invoke(phi, ["quantize", str(src), "-q", "Q4_K_M", "--no-report", "-o", str(dst), "--force"])
    elapsed = time.perf_counter() - start
    assert result.exit_code == 0, result.output
    return elapsed


def quality_cost(src: Path, q4: Path) -> tuple[float, str]:
    from llm_phi_gguf import quality

    start = time.perf_counter()
    report = quality.evaluate(src, [q4])
    return time.perf_counter() - start, quality.format_table(report)


def silence_llama_log() -> None:
    import llama_cpp

    @llama_cpp.llama_log_callback
    def quiet(level, text, user_data):
        pass

    silence_llama_log.keep = quiet  # the C side keeps the pointer
    llama_cpp.llama_log_set(quiet, None)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
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

    src = build_model(args.workdir, args.layers, args.hidden, args.ffn)
    silence_llama_log()
    times: dict[str, list[float]] = {"direct": [], "ours": []}
    for _ in range(args.rounds):
        times["direct"].append(direct(src, args.workdir / "direct_Q4_K_M.gguf"))
        times["ours"].append(ours(src, args.workdir / "ours_Q4_K_M.gguf"))
    same = (args.workdir / "direct_Q4_K_M.gguf").read_bytes() == (args.workdir / "ours_Q4_K_M.gguf").read_bytes()
    overhead = fixed_overhead(args)
    q_seconds, table = quality_cost(src, args.workdir / "ours_Q4_K_M.gguf")
    report(args, src, times, same, overhead, q_seconds, table)


def fixed_overhead(args) -> float:
    """Median (ours - direct) on a tiny model, where the C call takes ~0.1 s: what we add, minus load noise."""
    tiny = build_model(args.workdir, 2, 256, 512)
    diffs = []
    for _ in range(args.tiny_rounds):
        d = direct(tiny, args.workdir / "tiny_direct.gguf")
        diffs.append(ours(tiny, args.workdir / "tiny_ours.gguf") - d)
    return statistics.median(diffs)


def report(args, src: Path, times: dict, same: bool, overhead: float, q_seconds: float, table: str) -> None:
    import importlib.metadata

    from llm_phi_gguf.gguf_reader import read_gguf

    med = {k: statistics.median(v) for k, v in times.items()}
    best = {k: min(v) for k, v in times.items()}
    ratio_med, ratio_best = med["ours"] / med["direct"], best["ours"] / best["direct"]
    print("=" * 72)
    print("benchmarks/quantize.py results")
    print(f"date:     {datetime.datetime.now().isoformat(timespec='seconds')}")
    print(f"machine:  {cpu_model()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
          f"load avg {os.getloadavg()[0]:.1f} at end")
    print(f"software: python {platform.python_version()}, llama-cpp-python "
          f"{importlib.metadata.version('llama_cpp_python')}")
    print(f"model:    {src.name}: {read_gguf(src).n_params / 1e6:.0f}M params, {src.stat().st_size / 1e6:.0f} MB f16")
    print(f"rounds:   {args.rounds}, interleaved; threads: all cores for both")
    for k in ("direct", "ours"):
        print(f"{k:8}  " + "  ".join(f"{t:6.2f}s" for t in times[k]) + f"   median {med[k]:.2f}s  best {best[k]:.2f}s")
    verdict = "PASS" if ratio_med <= 1.03 else "FAIL"
    print(f"ratio ours/direct: median {ratio_med:.3f}, best {ratio_best:.3f}  (target <= 1.03: {verdict})")
    print(f"fixed overhead (median of {args.tiny_rounds} tiny-model rounds, ours - direct): {overhead * 1000:.0f} ms"
          f" = {overhead / med['direct']:.2%} of this model's direct median")
    print(f"outputs byte-identical: {same}")
    print(f"quality report (f16 + Q4_K_M, built-in eval text): {q_seconds:.1f}s")
    print(table)
    print("=" * 72)


if __name__ == "__main__":
    main()
