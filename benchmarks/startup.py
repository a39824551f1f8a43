"""Start-up cost of the plugin: `llm --help` with and without llm-phi-gguf loaded, and
`import llm_phi_gguf` on top of `import llm`. Target: <= +30 ms for `llm --help`. Also
`llm models` on a fresh user dir with and without the plugin: the listing that includes the
catalog's not-yet-downloaded models (no network, little time).

    python benchmarks/startup.py [--runs 15]
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

from common import record, run


def interleaved(commands: dict[str, tuple[list[str], dict]], runs: int) -> dict[str, list[float]]:
    """Wall ms of each command per run, the commands alternating (after one warm-up run each),
    so load on the machine hits them alike."""
    for cmd, env in commands.values():
        subprocess.run(cmd, env=env, capture_output=True, check=True)
    samples: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, (cmd, env) in commands.items():
            t = time.perf_counter()
            subprocess.run(cmd, env=env, capture_output=True, check=True)
            samples[name].append(round((time.perf_counter() - t) * 1000, 1))
    return samples


def main() -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--label", default="", help="Recorded with the result, e.g. which checkout was measured")
    args, _ = ap.parse_known_args()
    llm_bin = shutil.which("llm") or sys.exit("llm is not on PATH")
    base = dict(os.environ)
    py = sys.executable
    with tempfile.TemporaryDirectory() as user_dir:  # a fresh llm user dir: of ours, the catalog only
        fresh = {**base, "LLM_USER_PATH": user_dir}
        samples = interleaved({
            "llm --help without plugin": ([llm_bin, "--help"], {**base, "LLM_LOAD_PLUGINS": ""}),
            "llm --help with llm-phi-gguf": ([llm_bin, "--help"], {**base, "LLM_LOAD_PLUGINS": "llm-phi-gguf"}),
            "llm models without plugin": ([llm_bin, "models"], {**fresh, "LLM_LOAD_PLUGINS": ""}),
            "llm models with llm-phi-gguf (catalog)": ([llm_bin, "models"], {**fresh, "LLM_LOAD_PLUGINS": "llm-phi-gguf"}),
            "import llm": ([py, "-c", "import llm"], base),
            "import llm + llm_phi_gguf": ([py, "-c", "import llm, llm_phi_gguf"], base),
        }, args.runs)
    med = {name: statistics.median(s) for name, s in samples.items()}
    result = {
        **({"label": args.label} if args.label else {}),
        "runs (interleaved)": args.runs,
        **{f"{name} (ms, median)": round(m, 1) for name, m in med.items()},
        "added by the plugin (ms)": round(med["llm --help with llm-phi-gguf"] - med["llm --help without plugin"], 1),
        "target (ms)": "<= 30",
        "per run (ms)": samples,
    }
    record("startup", result)
    return result


if __name__ == "__main__":
    run(main)
