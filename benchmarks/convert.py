"""Converter: ours vs llama.cpp's convert_hf_to_gguf.py vs `cp`, side by side in one run.

On a synthetic Phi-3-mini-shaped checkpoint (benchmarks/synthetic.py, sharded like the hub):
- bf16 checkpoint -> f16 GGUF: ours vs llama.cpp's converter (wall time, peak RSS);
- f16 checkpoint -> f16 GGUF (a pure copy of the weights): ours vs `cp` of the same bytes.
Targets (issue 16): <= 0.5x llama.cpp's time and <= 0.2x its peak RSS on the 8-layer (2.2 GB)
checkpoint; f16 passthrough <= 1.5x cp.

Each command runs in its own process under /usr/bin/time, page cache dropped where allowed.
The four commands run --runs times (default 3), interleaved (ours, llama.cpp, ours f16, cp, then
again), so load on the machine hits every side alike; each figure is the median of its runs,
reported with the spread (min-max), and every run's figures go to results.jsonl.

    python benchmarks/convert.py [--layers 8] [--runs 3] [--llama-cpp DIR] [--keep]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import record, run

sys.path.insert(0, str(Path(__file__).parent))

OURS = "from llm_phi_gguf.convert import convert_checkpoint as c; import sys; c(sys.argv[1], sys.argv[2], outtype='f16', force=True, progress=False)"


def timed(cmd: list[str], outputs: list[Path]) -> tuple[float, float]:
    """(wall seconds, peak RSS MB) of one command, measured by GNU time. `outputs`, the files
    the command writes, are deleted first: every run writes new files, as a user converting does.
    (Overwriting makes ext4 flush the whole file at close or rename, whichever side writes it:
    a measure of the disk, not of the converter.)"""
    for path in outputs:
        path.unlink(missing_ok=True)
    drop_caches()
    proc = subprocess.run(["/usr/bin/time", "-f", "%e %M", *cmd], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[:3]} failed:\n{proc.stderr[-2000:]}")
    wall, rss_kb = proc.stderr.strip().splitlines()[-1].split()
    return float(wall), int(rss_kb) / 1024


def drop_caches() -> None:
    """Start each run from the same (cold) page cache when the kernel lets us."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        pass


def find_llama_cpp(given: str | None) -> Path:
    for candidate in filter(None, [given, os.environ.get("LLAMA_CPP_DIR")]):
        if (Path(candidate) / "convert_hf_to_gguf.py").exists():
            return Path(candidate)
    vendor = Path(__file__).resolve().parents[1] / ".vendor"
    for found in vendor.glob("llama_cpp_python-*/vendor/llama.cpp"):
        return found
    raise SystemExit("llama.cpp source not found: pass --llama-cpp or set LLAMA_CPP_DIR (the tests download it into .vendor/)")


def summary(runs: list[tuple[float, float]]) -> dict:
    """Median and min-max spread of (wall s, peak RSS MB) over runs, plus the raw runs."""
    wall, rss = [r[0] for r in runs], [r[1] for r in runs]
    return {"wall s median": statistics.median(wall), "wall s min-max": [min(wall), max(wall)],
            "RSS MB median": round(statistics.median(rss)), "RSS MB min-max": [round(min(rss)), round(max(rss))],
            "runs (s, MB)": [[w, round(m)] for w, m in runs]}


def main() -> dict:
    from synthetic import make

    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=8)  # 2.2 GB in bf16
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--llama-cpp")
    ap.add_argument("--workdir")
    ap.add_argument("--keep", action="store_true")
    args, _ = ap.parse_known_args()
    llama_cpp = find_llama_cpp(args.llama_cpp)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="convert-bench-"))
    bf16, f16 = make(work / "bf16", args.layers, "bf16"), make(work / "f16", args.layers, "f16")
    size = sum(p.stat().st_size for p in bf16.glob("*.safetensors"))
    out = work / "out.gguf"
    copy_dir = work / "copy"
    copy_dir.mkdir(exist_ok=True)
    commands = {
        "ours bf16->f16": [sys.executable, "-c", OURS, str(bf16), str(out)],
        "llama.cpp bf16->f16": [sys.executable, str(llama_cpp / "convert_hf_to_gguf.py"), str(bf16),
                                "--outfile", str(out), "--outtype", "f16"],
        "ours f16->f16": [sys.executable, "-c", OURS, str(f16), str(out)],
        "cp of the same bytes": ["cp", *map(str, sorted(f16.glob("*.safetensors"))), str(copy_dir)],
    }
    copies = [copy_dir / p.name for p in f16.glob("*.safetensors")]
    outputs = {name: copies if name.startswith("cp") else [out] for name in commands}
    runs: dict[str, list] = {name: [] for name in commands}
    for _ in range(args.runs):  # interleaved: drift and load hit every side alike
        for name, cmd in commands.items():
            runs[name].append(timed(cmd, outputs[name]))
    s = {name: summary(r) for name, r in runs.items()}
    ours, theirs, ours_f16, cp = (s[n] for n in commands)
    result = {
        "checkpoint": f"synthetic Phi-3-mini shape, {args.layers} layers, {size / 1e9:.2f} GB, sharded",
        "runs per side": args.runs,
        **s,
        "time ratio ours/llama.cpp (medians)": round(ours["wall s median"] / theirs["wall s median"], 3),
        "RSS ratio ours/llama.cpp (medians)": round(ours["RSS MB median"] / theirs["RSS MB median"], 3),
        "time ratio per run": [round(a[0] / b[0], 3) for a, b in zip(runs["ours bf16->f16"], runs["llama.cpp bf16->f16"])],
        "targets": "time <= 0.5, RSS <= 0.2 (issue 16; earlier 0.8 / 0.5)",
        "ratio ours/cp (medians)": round(ours_f16["wall s median"] / cp["wall s median"], 3) if cp["wall s median"] else None,
        "target ours/cp": "<= 1.5",
    }
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    record("convert", result)
    return result


if __name__ == "__main__":
    run(main)
