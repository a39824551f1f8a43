"""`llm phi doctor`: what this llama.cpp build can do here, and whether registered files exist."""

from __future__ import annotations

import importlib.metadata
import platform

GPU_BUILD_HINTS = (
    "To offload layers to a GPU (-o gpu_layers -1), rebuild llama-cpp-python with GPU support:",
    '  NVIDIA CUDA:  CMAKE_ARGS="-DGGML_CUDA=on" pip install --force-reinstall --no-cache-dir llama-cpp-python',
    '  Apple Metal:  CMAKE_ARGS="-DGGML_METAL=on" pip install --force-reinstall --no-cache-dir llama-cpp-python',
    '  Vulkan:       CMAKE_ARGS="-DGGML_VULKAN=on" pip install --force-reinstall --no-cache-dir llama-cpp-python',
    "  (inside llm's own environment: llm install --force-reinstall llama-cpp-python with the same CMAKE_ARGS)",
)


def report(runtime, store, refresh_probe: bool, echo) -> bool:
    """Print the report; False when something needs the user's attention."""
    ok = True
    echo(f"llama-cpp-python {importlib.metadata.version('llama_cpp_python')} on {platform.machine()}")
    echo(f"llama.cpp system info: {runtime.system_info()}")
    if runtime.gpu_offload_supported():
        echo("GPU offload: supported by this build (use -o gpu_layers -1 to offload every layer)")
    else:
        echo("GPU offload: NOT supported by this build (CPU only)")
        for line in GPU_BUILD_HINTS:
            echo(line)
    threads, threads_batch = runtime.thread_counts(runtime.LoadOptions())
    echo(f"CPU threads: {threads} for generation (physical cores), {threads_batch} for prompt evaluation (usable CPUs);"
         " change with -o n_threads / -o n_threads_batch")
    result = runtime.probe(refresh=refresh_probe)
    forced = runtime.os.environ.get(runtime.ENV_EXTRA_BUFTS)
    verdict = "on" if runtime.use_extra_bufts() else "off"
    echo(f"Quantized-inference probe ({result.key}): {result.detail}")
    echo(f"Extra CPU buffer types (AMX/repack): {verdict}" + (f" (forced by {runtime.ENV_EXTRA_BUFTS}={forced})" if forced else " (auto)"))
    try:
        entries = store.load()
    except Exception as e:  # a corrupt registry is reported, not fatal to the doctor
        echo(f"Registry: {e}")
        return False
    echo(f"Registry: {store.registry_path()} ({len(entries)} models)")
    from pathlib import Path

    for e in entries.values():
        exists = Path(e.path).exists()
        ok &= exists
        echo(f"  {'ok     ' if exists else 'MISSING'} {e.alias}: {e.path}")
    return ok
