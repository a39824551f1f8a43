"""`llm phi demo`: the whole pipeline, offline, on the tiny model shipped in llm_phi_gguf/demo.

convert (our converter, f16) -> quantize Q4_K_M (llama.cpp's quantizer) -> register as
`phi-demo` -> answer the prompt through llm, streaming.
"""

from __future__ import annotations

import time
from importlib import resources
from pathlib import Path

DEMO_ALIAS = "phi-demo"


def demo_source() -> Path:
    return Path(str(resources.files("llm_phi_gguf.demo")))


def demo_dir() -> Path:
    from .store import registry_dir

    path = registry_dir() / "demo"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _fresh(output: Path, source: Path) -> bool:
    """An earlier output is reused only if it is newer than the shipped checkpoint."""
    return output.exists() and output.stat().st_mtime >= (source / "model.safetensors").stat().st_mtime


def _step(echo, label: str, work) -> None:
    echo(label)
    t = time.perf_counter()
    work()
    echo(f"      done in {time.perf_counter() - t:.1f} s")


def build_demo(force: bool, echo) -> Path:
    """Convert and quantize the shipped checkpoint into the user dir; returns the Q4_K_M file."""
    from .convert import convert_checkpoint
    from .quantize import quantize_file

    src, out = demo_source(), demo_dir()
    f16, q4 = out / "phi-demo_F16.gguf", out / "phi-demo_Q4_K_M.gguf"
    if force or not _fresh(f16, src):
        _step(echo, f"[1/4] Converting {src} -> {f16.name} (our converter)",
              lambda: convert_checkpoint(src, f16, outtype="f16", force=True, progress=False))
    else:
        echo(f"[1/4] Reusing {f16}")
    if force or not _fresh(q4, src) or q4.stat().st_mtime < f16.stat().st_mtime:
        _step(echo, f"[2/4] Quantizing -> {q4.name} (llama.cpp's quantizer, Q4_K_M)",
              lambda: quantize_file(f16, q4, "Q4_K_M", force=True, progress=False))
    else:
        echo(f"[2/4] Reusing {q4}")
    return q4


def run_demo(prompt: str, force: bool = False, echo=None) -> str:
    """Build, register and run the demo; streams the answer through `echo(text, nl=...)`."""
    import click
    import llm

    from . import store

    echo = echo or click.echo
    q4 = build_demo(force, echo)
    entry = store.register_file(q4, alias=DEMO_ALIAS, force=True)
    echo(f"[3/4] Registered {entry.path} as {entry.alias} ({entry.family}, {entry.quant}, {entry.size / 1e6:.1f} MB)")
    echo(f'[4/4] llm -m {DEMO_ALIAS} -o temperature 0 "{prompt}"\n')
    chunks = []
    for chunk in llm.get_model(DEMO_ALIAS).prompt(prompt, temperature=0):
        chunks.append(chunk)
        echo(chunk, nl=False)
    echo("")
    return "".join(chunks)
