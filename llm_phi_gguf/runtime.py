"""Load GGUF models with llama-cpp-python: the right parameters, the AMX probe, a per-process cache.

The AMX trap: llama.cpp's default CPU build places quantized weights in "extra" buffer types
(AMX tiles, repacked layouts). On some CPUs and VMs (Intel Xeons with AMX here) the first
decode of a quantized model then dies with SIGSEGV; f16/f32 are unaffected. Turning
`llama_model_params.use_extra_bufts` off avoids it. We decide per machine with a probe in a
child process (a tiny quantized model, one token), cache the verdict in the user dir keyed by
llama-cpp-python version and CPU flags, and let users force it either way.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import os
import subprocess
import sys
import threading
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path

ENV_EXTRA_BUFTS = "LLM_PHI_EXTRA_BUFTS"  # "1" forces extra buffers on, "0" off
_PATCH_LOCK = threading.Lock()


@dataclass(frozen=True)
class LoadOptions:
    n_ctx: int = 4096
    gpu_layers: int = 0  # -1 = all layers
    n_threads: int | None = None
    n_batch: int = 512
    flash_attn: bool = False
    extra_bufts: bool | None = None  # None = decided by the probe
    logits_all: bool = False
    kv_overrides: tuple[tuple[str, object], ...] = ()  # GGUF metadata overrides (hashable)


# ---------------------------------------------------------------------------- the probe


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def probe_key() -> str:
    import importlib.metadata

    version = importlib.metadata.version("llama_cpp_python")
    flags = hashlib.sha256(_cpu_flags().encode()).hexdigest()[:16]
    return f"llama-cpp-python {version} / cpu {flags}"


def _probe_cache_path() -> Path:
    from .store import registry_dir

    return registry_dir() / "probe.json"


@dataclass
class ProbeResult:
    key: str
    extra_bufts_ok: bool  # quantized inference with extra buffers works on this machine
    detail: str


def run_probe() -> ProbeResult:
    """Run a quantized one-token decode in a child process with the default (extra) buffers."""
    proc = subprocess.run(
        [sys.executable, "-m", "llm_phi_gguf.probe"],
        capture_output=True,
        text=True,
        timeout=300,
        # ggml's abort handler may try to attach gdb for a backtrace and hang instead of dying
        env={**os.environ, "GGML_NO_BACKTRACE": "1"},
    )
    if proc.returncode == 0:
        return ProbeResult(probe_key(), True, "quantized decode with extra buffer types works")
    if proc.returncode < 0:
        detail = f"quantized decode with extra buffer types died with signal {-proc.returncode}"
    else:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        detail = f"quantized decode with extra buffer types failed: {last}"
    return ProbeResult(probe_key(), False, detail)


def probe(refresh: bool = False) -> ProbeResult:
    """The cached probe verdict for this machine, running the probe if needed."""
    path = _probe_cache_path()
    key = probe_key()
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        if not refresh:
            cached = json.loads(path.read_text())[key]
            return ProbeResult(**cached)
    result = run_probe()
    with contextlib.suppress(OSError, ValueError):
        from .files import write_json_atomic

        data = json.loads(path.read_text()) if path.exists() else {}
        data[key] = asdict(result)
        write_json_atomic(path, data)
    return result


def use_extra_bufts(option: bool | None = None) -> bool:
    """Whether to load with extra buffer types: option, else env var, else the probe."""
    if option is not None:
        return option
    env = os.environ.get(ENV_EXTRA_BUFTS, "").strip().lower()
    if env in ("0", "false", "no", "off"):
        return False
    if env in ("1", "true", "yes", "on"):
        return True
    return probe().extra_bufts_ok


# ---------------------------------------------------------------------------- loading


@contextlib.contextmanager
def _model_params_without_extra_bufts():
    """Make Llama() build its model params with use_extra_bufts=False.

    It is not a Llama() keyword: Llama.__init__ takes the struct from
    llama_model_default_params(), so we wrap that function for the duration of the call.
    """
    import llama_cpp.llama_cpp as lib

    original = lib.llama_model_default_params

    def patched():
        params = original()
        params.use_extra_bufts = False
        return params

    with _PATCH_LOCK:
        lib.llama_model_default_params = patched
        try:
            yield
        finally:
            lib.llama_model_default_params = original


def load_llama(path: str | os.PathLike, options: LoadOptions):
    """A llama_cpp.Llama for `path` with `options`, honouring the AMX probe."""
    from llama_cpp import Llama

    kwargs = dict(
        model_path=str(path),
        n_ctx=options.n_ctx,
        n_gpu_layers=options.gpu_layers,
        n_batch=options.n_batch,
        flash_attn=options.flash_attn,
        logits_all=options.logits_all,
        verbose=False,
    )
    if options.n_threads:
        kwargs.update(n_threads=options.n_threads, n_threads_batch=options.n_threads)
    if options.kv_overrides:
        kwargs.update(kv_overrides=dict(options.kv_overrides))
    if use_extra_bufts(options.extra_bufts):
        return Llama(**kwargs)
    with _model_params_without_extra_bufts():
        return Llama(**kwargs)


class ModelCache:
    """Keep recently used models loaded, so a conversation's next turn reuses the KV cache.

    Keyed by (path, file mtime, load options); at most `size` models stay in memory.
    """

    def __init__(self, size: int = 2):
        self.size = size
        self._models: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: str | os.PathLike, options: LoadOptions):
        resolved = Path(path).resolve()
        key = (str(resolved), resolved.stat().st_mtime_ns, options)
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            while len(self._models) >= self.size:
                _, old = self._models.popitem(last=False)
                with contextlib.suppress(Exception):
                    old.close()
            # load by the given name, not the symlink target: llama.cpp finds parts 2..N of a
            # split GGUF next to part 1 by name (the HF cache's blobs/ are named by hash)
            llama = load_llama(Path(path).absolute(), options)
            self._models[key] = llama
            return llama

    def clear(self) -> None:
        with self._lock:
            for llama in self._models.values():
                with contextlib.suppress(Exception):
                    llama.close()
            self._models.clear()


CACHE = ModelCache()
# Close models before interpreter teardown, when llama-cpp-python's own finalizers would run
# against half-unloaded modules and print "Exception ignored" noise.
atexit.register(CACHE.clear)


def gpu_offload_supported() -> bool:
    import llama_cpp

    return bool(llama_cpp.llama_supports_gpu_offload())


def system_info() -> str:
    import llama_cpp

    return llama_cpp.llama_print_system_info().decode(errors="replace").strip()


def all_cores() -> int:
    """The CPUs this process may run on: the thread count for batch work (quantizing, evaluating)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
