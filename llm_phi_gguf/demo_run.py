"""`llm phi demo`: the whole pipeline, offline, on the tiny model shipped in llm_phi_gguf/demo.

convert (our converter, f16) -> quantize Q4_K_M (llama.cpp's quantizer) -> register as
`phi-demo` -> answer the prompt through llm, streaming.
"""

from __future__ import annotations

import time
from importlib import resources
from pathlib import Path

DEMO_ALIAS = "phi-demo"


def demo_dir() -> Path:
    from .store import registry_dir

    path = registry_dir() / "demo"
    path.mkdir(parents=True, exist_ok=True)
    return path


def build_demo(force: bool, echo) -> Path:
    """Convert and quantize the shipped checkpoint; reuse earlier outputs unless force."""
    from .convert import convert_checkpoint
    from .quantize import quantize_file

    out = demo_dir()
    f16, q4 = out / "phi-demo_F16.gguf", out / "phi-demo_Q4_K_M.gguf"
    with resources.as_file(resources.files("llm_phi_gguf.demo")) as src:
        if force or not f16.exists():
            echo(f"[1/4] Converting the demo checkpoint ({src}) to {f16.name}")
            t = time.perf_counter()
            convert_checkpoint(src, f16, outtype="f16", force=True, progress=False)
            echo(f"      done in {time.perf_counter() - t:.1f} s")
        else:
            echo(f"[1/4] Reusing {f16}")
    if force or not q4.exists():
        echo(f"[2/4] Quantizing to Q4_K_M with llama.cpp -> {q4.name}")
        t = time.perf_counter()
        quantize_file(f16, q4, "Q4_K_M", force=True, progress=False)
        echo(f"      done in {time.perf_counter() - t:.1f} s")
    else:
        echo(f"[2/4] Reusing {q4}")
    return q4


def run_demo(prompt: str, force: bool = False, echo=print) -> str:
    import llm

    from . import store

    q4 = build_demo(force, echo)
    entry = store.register_file(q4, alias=DEMO_ALIAS, force=True)
    echo(f"[3/4] Registered {entry.path} as {entry.alias} ({entry.family}, {entry.quant}, {entry.size / 1e6:.1f} MB)")
    echo(f'[4/4] llm -m {DEMO_ALIAS} "{prompt}"')
    model = llm.get_model(DEMO_ALIAS)
    response = model.prompt(prompt, temperature=0)
    answer = []
    for chunk in response:
        answer.append(chunk)
        echo(chunk, nl=False) if _accepts_nl(echo) else None
    text = "".join(answer)
    if not _accepts_nl(echo):
        echo(text)
    else:
        echo("")
    return text


def _accepts_nl(echo) -> bool:
    import inspect

    try:
        return "nl" in inspect.signature(echo).parameters
    except (TypeError, ValueError):
        return False
