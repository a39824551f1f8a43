"""Prove `gpu_layers` offload works through our runtime with a CUDA build of llama-cpp-python.

Writes a synthetic Phi-3-mini-shaped GGUF (random f16 weights, fewer layers), quantizes it to
Q4_K_M with llama.cpp, then for gpu_layers 0 (CPU) and -1 (all layers) loads it with
llm_phi_gguf.runtime.load_llama and measures: GPU memory taken (nvidia-smi), prompt tokens/s
and generated tokens/s (greedy). Both runs in one process, on one machine, same file. The
result is printed, appended to results.jsonl as a raw record, and written to --out if given.

    python benchmarks/gpu_offload.py --layers 8 --out results.json
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from common import record


def nvidia_smi(query: str) -> str | None:
    try:
        return subprocess.run(
            ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def gpu_memory_mib() -> int | None:
    out = nvidia_smi("memory.used")
    return int(out.split()[0]) if out else None


def write_model(path: Path, n_layer: int) -> None:
    """Phi-3-mini width (hidden 3072, FFN 8192, 32 heads, 32064 tokens), random f16 weights."""
    from llm_phi_gguf.probe import write_random_phi3

    write_random_phi3(path, n_layer=n_layer, n_embd=3072, n_ff=8192, n_head=32, n_vocab=32064, f16=True)


def quantize(src: Path, dst: Path) -> float:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M
    t = time.perf_counter()
    assert llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), params) == 0
    return time.perf_counter() - t


def measure(path: Path, gpu_layers: int, n_prompt: int, n_gen: int) -> dict:
    from llm_phi_gguf.runtime import LoadOptions, load_llama

    before = gpu_memory_mib()
    t = time.perf_counter()
    llama = load_llama(path, LoadOptions(n_ctx=1024, gpu_layers=gpu_layers, n_batch=512))
    load_s = time.perf_counter() - t
    after = gpu_memory_mib()
    prompt = [1] + [3 + (i * 7) % 250 for i in range(n_prompt - 1)]
    t = time.perf_counter()
    llama.eval(prompt)
    prompt_s = time.perf_counter() - t
    t = time.perf_counter()
    n = 0
    for _ in llama.generate([], temp=0.0, reset=False):
        n += 1
        if n >= n_gen:
            break
    gen_s = time.perf_counter() - t
    llama.close()
    return {
        "gpu_layers": gpu_layers,
        "load_s": round(load_s, 2),
        "gpu_mem_used_mib": (after - before) if before is not None and after is not None else None,
        "prompt_tok_s": round(n_prompt / prompt_s, 1),
        "gen_tok_s": round(n / gen_s, 1),
    }


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main() -> None:
    import llama_cpp

    from llm_phi_gguf import runtime

    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "gpu-bench"))
    ap.add_argument("--out")
    args = ap.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    f16, q4 = work / "synthetic-f16.gguf", work / "synthetic-q4_k_m.gguf"
    t = time.perf_counter()
    write_model(f16, args.layers)
    write_s = time.perf_counter() - t
    quant_s = quantize(f16, q4)
    f16.unlink()  # only the Q4_K_M file is measured
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": platform.node(),
        "gpu": nvidia_smi("name"),
        "llama_cpp_python": llama_cpp.__version__,
        "supports_gpu_offload": bool(llama_cpp.llama_supports_gpu_offload()),
        "cpu": cpu_name(),
        "extra_bufts_probe": runtime.probe().detail,
        "model": {"layers": args.layers, "q4_k_m_bytes": q4.stat().st_size,
                  "write_s": round(write_s, 1), "quantize_s": round(quant_s, 1)},
        "runs": [measure(q4, g, 512, 128) for g in (0, -1)],
    }
    record("gpu_offload", result)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
