"""Run every benchmark, one script per stage, each as its own process.

    python -m benchmarks            # small sizes: a few minutes on 2 cores
    python -m benchmarks --full     # the sizes the targets are stated for (GB-sized files)

Each script prints its results and appends a raw record (every run's figures, machine, load,
arguments) to benchmarks/results.jsonl; the recorded figures are summarised in
benchmarks/RESULTS.md. CI does not run benchmarks.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

# script -> (small-size arguments, full-size arguments)
RUNS = {
    "startup.py": (["--runs", "7"], ["--runs", "25"]),
    "generation.py": (["--layers", "1", "--tokens", "64", "--repeats", "3"], ["--layers", "4", "--tokens", "256", "--repeats", "5"]),
    "quantize.py": (["--layers", "2", "--hidden", "1024", "--ffn", "4096", "--rounds", "3", "--tiny-rounds", "5"], ["--rounds", "5"]),
    "convert.py": (["--layers", "1", "--runs", "3"], ["--layers", "6", "--runs", "3"]),
    "ollama_push.py": (["--size-mb", "128", "--repeat", "3"], ["--size-mb", "1024", "--repeat", "3"]),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="full sizes (GB files, tens of minutes)")
    ap.add_argument("only", nargs="*", help="run only these scripts (e.g. convert.py)")
    args = ap.parse_args()
    failed = []
    for script, (small, full) in RUNS.items():
        if args.only and script not in args.only:
            continue
        print(f"\n=== {script} ({'full' if args.full else 'small'})", flush=True)
        rc = subprocess.run([sys.executable, str(HERE / script), *(full if args.full else small)], cwd=HERE).returncode
        if rc:
            failed.append(script)
    if failed:
        print(f"\nFailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
