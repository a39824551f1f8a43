"""Shared by the benchmark scripts: machine description and a JSON log of results.

Each script appends one raw record per run to benchmarks/results.jsonl: the script, its
arguments, machine, load, date, versions, and every individual measurement (not only the
summary); the figures quoted in benchmarks/RESULTS.md and the README come from there.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent


def machine() -> dict:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for pkg in ("llm", "llama_cpp_python", "gguf", "huggingface_hub", "httpx"):
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            pass
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_avg_1min": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "versions": versions,
    }


def header() -> str:
    m = machine()
    return f"# {m['date']} on {m['cpu']} ({m['cores']} cores), Python {m['python']}, {m['versions']}"


def record(name: str, result: dict) -> None:
    with open(HERE / "results.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({"benchmark": name, "args": sys.argv[1:], **machine(), "result": result}) + "\n")


def run(main) -> None:
    """Script entry point: print the machine line, run `main()`, print its result dict."""
    print(header())
    for key, value in main().items():
        print(f"{key}: {value}")
