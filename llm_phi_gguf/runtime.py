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
    n_threads: int | None = None  # None = physical cores (cpus.decode_threads)
    n_threads_batch: int | None = None  # None = n_threads when given, else every usable CPU
    n_batch: int = 512
    cache_type: str = "f16"  # KV cache element type (type_k and type_v), see CACHE_TYPES
    flash_attn: bool | None = None  # None = llama.cpp's own default, "auto": on where the backend runs it
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
def _llama_init(extra_bufts: bool, flash_attn_auto: bool):
    """Make Llama() build its params as llama.cpp's own tools would, where it has no keyword:

    - extra_bufts=False: model params with use_extra_bufts=False (Llama.__init__ takes the
      struct from llama_model_default_params(), so we wrap that function);
    - flash_attn_auto: the context with flash_attn_type AUTO, llama.cpp's CLI default (on where
      the backend runs it: ~7% faster decoding on this CPU), where Llama() offers only on or off.
      We wrap the LlamaContext constructor it calls.
    - always: no chat handlers compiled from the GGUF's templates. Llama() compiles each one
      with jinja2 for create_chat_completion, which we never call (templates.py renders, within
      its limits), so a GGUF whose own template does not compile would fail to load even with
      a working --template registered.
    All only for the duration of the call, under a lock.
    """
    import llama_cpp._internals as internals
    import llama_cpp.llama_chat_format as chat_format
    import llama_cpp.llama_cpp as lib

    original_params, original_context = lib.llama_model_default_params, internals.LlamaContext
    original_formatter = chat_format.Jinja2ChatFormatter

    def params():
        p = original_params()
        p.use_extra_bufts = False
        return p

    def context(**kwargs):
        kwargs["params"].flash_attn_type = lib.LLAMA_FLASH_ATTN_TYPE_AUTO
        return original_context(**kwargs)

    with _PATCH_LOCK:
        if not extra_bufts:
            lib.llama_model_default_params = params
        if flash_attn_auto:
            internals.LlamaContext = context
        chat_format.Jinja2ChatFormatter = _NoChatHandler
        try:
            yield
        finally:
            lib.llama_model_default_params, internals.LlamaContext = original_params, original_context
            chat_format.Jinja2ChatFormatter = original_formatter


class _NoChatHandler:
    """Stands in for llama-cpp-python's Jinja2ChatFormatter while Llama() loads: compiles nothing."""

    def __init__(self, **kwargs):
        pass

    def to_chat_handler(self):
        def refuse(*args, **kwargs):
            raise RuntimeError("llm-phi-gguf renders prompts itself; Llama.create_chat_completion is not used")
        return refuse


# KV cache element types llama.cpp accepts for both K and V (ggml_type ids). Quantized V needs
# flash attention in llama.cpp, so a quantized cache_type turns it on (see load_llama).
CACHE_TYPES = {"f16": 1, "q8_0": 8, "q4_0": 2}


def thread_counts(options: LoadOptions) -> tuple[int, int]:
    """(n_threads, n_threads_batch): the user's choice, else llama.cpp's (physical cores, all CPUs)."""
    from .cpus import default_threads

    decode, batch = default_threads()
    n_threads = options.n_threads or decode
    return n_threads, options.n_threads_batch or (options.n_threads or batch)


def load_llama(path: str | os.PathLike, options: LoadOptions):
    """A llama_cpp.Llama for `path` with `options`, honouring the AMX probe."""
    from llama_cpp import Llama

    flash_attn = True if options.cache_type != "f16" else options.flash_attn
    kwargs = dict(
        model_path=str(path),
        n_ctx=options.n_ctx,
        n_gpu_layers=options.gpu_layers,
        n_batch=options.n_batch,
        flash_attn=bool(flash_attn),
        logits_all=options.logits_all,
        verbose=False,
    )
    kwargs.update(zip(("n_threads", "n_threads_batch"), thread_counts(options)))
    kwargs.update(type_k=CACHE_TYPES[options.cache_type], type_v=CACHE_TYPES[options.cache_type])
    if options.kv_overrides:
        kwargs.update(kv_overrides=dict(options.kv_overrides))
    with _llama_init(use_extra_bufts(options.extra_bufts), flash_attn is None):
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
    """The CPUs this process may use (affinity, cgroup quota): the thread count for batch work
    (quantizing, evaluating)."""
    from .cpus import usable_cpus

    return usable_cpus()
