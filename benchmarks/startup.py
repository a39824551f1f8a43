"""Start-up cost of the plugin: `llm --help` with and without llm-phi-gguf loaded, and
`import llm_phi_gguf` on top of `import llm`. Target: <= +30 ms for `llm --help`.

Also `llm models` with and without the plugin (same run, fresh user dir): the listing that now
includes the catalog's not-yet-downloaded models, which must cost no network and little time.

    python benchmarks/startup.py [--runs 15]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from common import record, run


def time_command(cmd: list[str], env: dict, runs: int) -> tuple[float, float]:
    """Median wall time and median CPU time (user + system of the child) in ms, after one warm-up
    run. CPU time barely moves when other work shares the machine; wall time does."""
    subprocess.run(cmd, env=env, capture_output=True, check=True)
    wall, cpu = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        subprocess.run(cmd, env=env, capture_output=True, check=True)
        wall.append((time.perf_counter() - t) * 1000)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append((after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) * 1000)
    return statistics.median(wall), statistics.median(cpu)


def main() -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--label", default="", help="Recorded with the result, e.g. which checkout was measured")
    args, _ = ap.parse_known_args()
    llm_bin = shutil.which("llm") or sys.exit("llm is not on PATH")
    base = dict(os.environ)
    without = time_command([llm_bin, "--help"], {**base, "LLM_LOAD_PLUGINS": ""}, args.runs)
    with_plugin = time_command([llm_bin, "--help"], {**base, "LLM_LOAD_PLUGINS": "llm-phi-gguf"}, args.runs)
    with tempfile.TemporaryDirectory() as user_dir:  # a fresh llm user dir: the catalog rows only
        fresh = {**base, "LLM_USER_PATH": user_dir}
        models_without = time_command([llm_bin, "models"], {**fresh, "LLM_LOAD_PLUGINS": ""}, args.runs)
        models_with = time_command([llm_bin, "models"], {**fresh, "LLM_LOAD_PLUGINS": "llm-phi-gguf"}, args.runs)
    py = sys.executable
    import_llm = time_command([py, "-c", "import llm"], base, args.runs)
    import_both = time_command([py, "-c", "import llm, llm_phi_gguf"], base, args.runs)
    result = {
        **({"label": args.label} if args.label else {}),
        "llm --help without plugin (ms, median)": round(without[0], 1),
        "llm --help with llm-phi-gguf (ms, median)": round(with_plugin[0], 1),
        "added by the plugin (ms)": round(with_plugin[0] - without[0], 1),
        "target (ms)": "<= 30",
        "llm --help CPU without / with plugin (ms, median)": [round(without[1], 1), round(with_plugin[1], 1)],
        "llm models (fresh user dir) without / with plugin and catalog (ms, median)":
            [round(models_without[0], 1), round(models_with[0], 1)],
        "llm models CPU without / with plugin and catalog (ms, median)":
            [round(models_without[1], 1), round(models_with[1], 1)],
        "import llm (ms)": round(import_llm[0], 1),
        "import llm + llm_phi_gguf (ms)": round(import_both[0], 1),
    }
    record("startup", result)
    return result


if __name__ == "__main__":
    run(main)
