"""Importance matrices: compute one in-process, read/write llama.cpp's GGUF and legacy .dat formats.

An importance matrix holds, per weight matrix W, the sum over calibration tokens of the squared
input activations of each column of W (and how many tokens that was). The quantizer weights
each column's rounding error by sum/count, so columns that see large activations are kept
more precisely. We collect it exactly as llama.cpp's `llama-imatrix` tool does (eval callback on
every MUL_MAT / MUL_MAT_ID node) and save it in the same GGUF layout, so llama.cpp's tools can
read our files and we can read theirs (llama.cpp's tools/imatrix/imatrix.cpp defines the layout).
"""

from __future__ import annotations

import ctypes
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Callable

from .errors import PhiError
from .imatrix_dat import read_dat, write_dat

MIN_ROWS = 16  # llama.cpp ignores matmuls with fewer token rows (single-token decode steps)
GGML_TYPE_F32 = 0
MAX_NAME = 64  # ggml tensor names are char[64]


class ImatrixError(PhiError):
    """An importance matrix cannot be computed, read or used."""


@dataclass
class Entry:
    sums: "np.ndarray"  # float32 [n_mat, ne0]: sums of squared activations per column (per expert)
    counts: "np.ndarray"  # float32 [n_mat]: tokens seen (per expert)

    def weights(self):
        """The per-column values llama.cpp's quantizer receives: sum/count (count 0 -> 1.0)."""
        import numpy as np

        counts = self.counts.reshape(-1, 1).astype(np.float64)
        values = np.where(counts > 0, self.sums / np.where(counts > 0, counts, 1), 1.0)
        return values.astype(np.float32).ravel()


@dataclass
class Imatrix:
    entries: dict[str, Entry] = field(default_factory=dict)
    datasets: list[str] = field(default_factory=list)
    chunk_count: int = 0
    chunk_size: int = 0

    def weights(self) -> dict:
        return {name: e.weights() for name, e in sorted(self.entries.items())}


def builtin_calibration_text() -> str:
    return resources.files("llm_phi_gguf.data").joinpath("calibration.txt").read_text("utf-8")


# ----------------------------------------------------------------------------- GGUF format


def write_imatrix_gguf(im: Imatrix, path: Path) -> None:
    """llama.cpp's default format: imatrix.* keys and W.in_sum2 / W.counts F32 tensors."""
    import gguf
    import numpy as np

    w = gguf.GGUFWriter(str(path), arch="imatrix")  # gguf-py always writes an architecture; harmless
    w.add_type("imatrix")
    # gguf-py drops empty arrays, and llama-quantize rejects a file without imatrix.datasets
    w.add_array("imatrix.datasets", im.datasets or ["unknown"])
    w.add_uint32("imatrix.chunk_count", im.chunk_count)
    w.add_uint32("imatrix.chunk_size", im.chunk_size)
    for name, e in sorted(im.entries.items()):
        w.add_tensor(f"{name}.in_sum2", np.ascontiguousarray(e.sums, dtype=np.float32))
        w.add_tensor(f"{name}.counts", np.ascontiguousarray(e.counts, dtype=np.float32).reshape(-1, 1))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def read_imatrix_gguf(path: Path) -> Imatrix:
    import gguf
    import numpy as np

    reader = gguf.GGUFReader(str(path))
    keys = ("imatrix.datasets", "imatrix.chunk_count", "imatrix.chunk_size")
    if any(k not in reader.fields for k in keys):
        raise ImatrixError(f"{path} is a GGUF file but not an importance matrix (missing imatrix metadata)")
    tensors = {t.name: t for t in reader.tensors}
    im = Imatrix(
        datasets=[str(v) for v in reader.fields["imatrix.datasets"].contents()],
        chunk_count=int(reader.fields["imatrix.chunk_count"].contents()),
        chunk_size=int(reader.fields["imatrix.chunk_size"].contents()),
    )
    for tname, t in tensors.items():
        if not tname.endswith(".in_sum2"):
            continue
        name = tname[: -len(".in_sum2")]
        counts = tensors.get(f"{name}.counts")
        if counts is None or t.tensor_type != GGML_TYPE_F32 or counts.tensor_type != GGML_TYPE_F32:
            raise ImatrixError(f"{path}: entry {name} lacks F32 .in_sum2/.counts tensors")
        sums = np.array(t.data, dtype=np.float32).reshape(-1, int(t.shape[0]))
        im.entries[name] = Entry(sums, np.array(counts.data, dtype=np.float32).ravel())
    return im


# ----------------------------------------------------------------------------- legacy .dat


def write_imatrix_dat(im: Imatrix, path: Path) -> None:
    """llama.cpp's legacy format: per entry (sum/count)*ncall and ncall; chunk count and dataset trailer."""
    import numpy as np

    chunk = max(im.chunk_size, 1)
    rows = []
    for name, e in sorted(im.entries.items()):
        if not e.counts.any():
            continue  # llama.cpp skips entries without data
        ncall = max(1, math.ceil(float(e.counts.max()) / chunk))
        rows.append((name, ncall, (e.weights() * np.float32(ncall)).astype(np.float32)))
    write_dat(path, rows, im.chunk_count, (im.datasets or ["unknown"])[0])


def read_imatrix_dat(path: Path) -> Imatrix:
    import numpy as np

    try:
        entries, chunk_count, datasets = read_dat(Path(path).read_bytes())
    except ValueError:
        raise ImatrixError(f"{path} is neither a GGUF nor a legacy .dat importance matrix") from None
    im = Imatrix(datasets=datasets, chunk_count=chunk_count)
    for name, ncall, values in entries:
        sums = np.frombuffer(values, dtype=np.float32).reshape(1, -1).astype(np.float32)
        im.entries[name] = Entry(sums, np.array([max(ncall, 1)], np.float32))
    return im


def read_imatrix(path) -> Imatrix:
    """Read an importance matrix made by us or by llama.cpp's llama-imatrix (GGUF or .dat)."""
    path = Path(path).expanduser()
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise ImatrixError(f"Cannot read the importance matrix {path}: {e.strerror}") from None
    im = read_imatrix_gguf(path) if magic == b"GGUF" else read_imatrix_dat(path)
    if not im.entries:
        raise ImatrixError(f"The importance matrix {path} has no entries")
    return im


def save_imatrix(im: Imatrix, out: Path, force: bool = False) -> Path:
    """Write atomically; `.dat` suffix -> legacy format, anything else -> GGUF (like llama-imatrix)."""
    from .files import atomic_output, check_output_path

    out = check_output_path(Path(out), force)
    writer = write_imatrix_dat if out.suffix == ".dat" else write_imatrix_gguf
    with atomic_output(out, force=force) as tmp:
        writer(im, tmp)
    return out


# ----------------------------------------------------------------------------- checks


def check_against_model(im: Imatrix, tensors, source: str, model: str) -> None:
    """Refuse an imatrix made for another model: unknown tensor names, wrong sizes, NaN/Inf.

    `tensors` are the model's TensorInfo (shape in ggml ne order). llama.cpp would silently
    ignore unknown names and throw mid-run on wrong sizes; we fail before starting.
    """
    import numpy as np

    by_name = {t.name: t for t in tensors}
    unknown = [n for n in im.entries if n not in by_name]
    if unknown:
        raise ImatrixError(
            f"The importance matrix {source} does not match {model}: {len(unknown)} of its "
            f"{len(im.entries)} entries name tensors the model lacks (e.g. {sorted(unknown)[0]})"
        )
    for name, e in im.entries.items():
        shape = by_name[name].shape
        want = shape[0] * (shape[2] if len(shape) > 2 else 1)
        if e.sums.size != want and not name.startswith("token_embd"):
            raise ImatrixError(
                f"The importance matrix {source} does not match {model}: {name} has "
                f"{e.sums.size} values, the model's tensor needs {want}"
            )
        if not (np.isfinite(e.sums).all() and np.isfinite(e.counts).all()):
            raise ImatrixError(f"The importance matrix {source} has NaN or infinite values in {name}")


# ----------------------------------------------------------------------------- computing


class GGMLTensor(ctypes.Structure):
    """Mirror of `struct ggml_tensor` (ggml/include/ggml.h, this build); the binding has none."""

    _fields_ = [
        ("type", ctypes.c_int32),
        ("buffer", ctypes.c_void_p),
        ("ne", ctypes.c_int64 * 4),
        ("nb", ctypes.c_size_t * 4),
        ("op", ctypes.c_int32),
        ("op_params", ctypes.c_int32 * 16),
        ("flags", ctypes.c_int32),
        ("src", ctypes.c_void_p * 10),
        ("view_src", ctypes.c_void_p),
        ("view_offs", ctypes.c_size_t),
        ("data", ctypes.c_void_p),
        ("name", ctypes.c_char * MAX_NAME),
        ("extra", ctypes.c_void_p),
        ("padding", ctypes.c_char * 8),
    ]


class _GGML:
    """The few libggml-base functions the collector needs, and the op ids resolved by name."""

    def __init__(self):
        import llama_cpp

        lib_dir = Path(llama_cpp.__file__).parent / "lib"
        candidates = sorted(lib_dir.glob("*ggml-base*"))
        if not candidates:
            raise ImatrixError(f"libggml-base not found in {lib_dir}")
        lib = ctypes.CDLL(str(candidates[0]))
        lib.ggml_op_name.restype = ctypes.c_char_p
        lib.ggml_op_name.argtypes = [ctypes.c_int]
        lib.ggml_nbytes.restype = ctypes.c_size_t
        lib.ggml_nbytes.argtypes = [ctypes.c_void_p]
        lib.ggml_backend_buffer_is_host.restype = ctypes.c_bool
        lib.ggml_backend_buffer_is_host.argtypes = [ctypes.c_void_p]
        lib.ggml_backend_tensor_get.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t]
        self.lib = lib
        names = {lib.ggml_op_name(i): i for i in range(128) if lib.ggml_op_name(i)}
        self.MUL_MAT, self.MUL_MAT_ID = names[b"MUL_MAT"], names[b"MUL_MAT_ID"]

    def array(self, t: GGMLTensor, ptr: int, dtype):
        """The tensor's data as a strided numpy view [ne3, ne2, ne1, ne0] (copied from a device if needed)."""
        import numpy as np

        nbytes = self.lib.ggml_nbytes(ptr)
        if t.buffer and not self.lib.ggml_backend_buffer_is_host(t.buffer):
            raw = np.empty(nbytes, dtype=np.uint8)
            self.lib.ggml_backend_tensor_get(ptr, raw.ctypes.data, 0, nbytes)
        else:
            raw = np.ctypeslib.as_array((ctypes.c_uint8 * nbytes).from_address(t.data))
        base = np.frombuffer(raw, dtype=dtype, count=nbytes // np.dtype(dtype).itemsize) if nbytes else raw
        return np.lib.stride_tricks.as_strided(base, shape=tuple(reversed(t.ne)), strides=tuple(reversed(t.nb)))


def _weight_name(raw: bytes) -> str:
    """`CUDA0#blk.0.attn_k.weight#0` -> `blk.0.attn_k.weight` (backend decorations)."""
    name = raw.decode(errors="replace")
    return name.split("#")[1] if "#" in name else name


class Collector:
    """The eval callback: accumulate squared matmul inputs per weight, as llama-imatrix does."""

    def __init__(self, ggml: _GGML):
        self.ggml = ggml
        self.entries: dict[str, Entry] = {}
        self.error: BaseException | None = None

    def __call__(self, t_ptr, ask, user_data) -> bool:
        # An exception here would silently stop the graph while llama_decode still reports success.
        try:
            return self._ask(t_ptr) if ask else self._collect(t_ptr)
        except BaseException as e:  # noqa: BLE001 - reported after llama_decode returns
            self.error = self.error or e
            return True

    def _ask(self, t_ptr) -> bool:
        t = GGMLTensor.from_address(t_ptr)
        if t.op == self.ggml.MUL_MAT_ID:
            return True
        if t.op != self.ggml.MUL_MAT:
            return False
        src0, src1 = GGMLTensor.from_address(t.src[0]), GGMLTensor.from_address(t.src[1])
        return src1.type == GGML_TYPE_F32 and src1.ne[1] >= MIN_ROWS and _weight_name(src0.name).startswith("blk.")

    def _collect(self, t_ptr) -> bool:
        import numpy as np

        t = GGMLTensor.from_address(t_ptr)
        src0 = GGMLTensor.from_address(t.src[0])
        x = self.ggml.array(GGMLTensor.from_address(t.src[1]), t.src[1], np.float32).astype(np.float64)
        name = _weight_name(src0.name)
        if t.op == self.ggml.MUL_MAT_ID:
            ids = self.ggml.array(GGMLTensor.from_address(t.src[2]), t.src[2], np.int32)
            self._add_moe(name, x[0], ids[0, 0], int(src0.ne[2]))
        else:
            self._add_dense(name, x, int(src0.ne[2]), int(src0.ne[3]))
        return True

    def _entry(self, name: str, n_mat: int, ne0: int) -> Entry:
        import numpy as np

        e = self.entries.get(name)
        if e is None:
            e = self.entries[name] = Entry(np.zeros((n_mat, ne0), np.float64), np.zeros(n_mat, np.float64))
        return e

    def _add_dense(self, name: str, x, ne2: int, ne3: int) -> None:
        """x: [ne3, ne2, rows, ne0]; a 2-D weight takes all rows as one matrix."""
        import numpy as np

        e = self._entry(name, ne2 * ne3, x.shape[-1])
        for i3 in range(x.shape[0]):
            for i2 in range(x.shape[1]):
                e.sums[(i3 % ne3) * ne2 + (i2 % ne2)] += np.square(x[i3, i2]).sum(axis=0)
        e.counts += x.shape[0] * x.shape[1] * x.shape[2] / (ne2 * ne3)

    def _add_moe(self, name: str, x, ids, n_expert: int) -> None:
        """x: [tokens, n_used or 1, ne0]; ids: [tokens, n_used] selected experts."""
        import numpy as np

        e = self._entry(name, n_expert, x.shape[-1])
        for k in range(ids.shape[1]):
            experts = ids[:, k]
            np.add.at(e.sums, experts, np.square(x[:, k % x.shape[1], :]))
            e.counts += np.bincount(experts, minlength=n_expert)


def tokenize(llama_cpp, vocab, text: str) -> list[int]:
    data = text.encode("utf-8")
    n = -llama_cpp.llama_tokenize(vocab, data, len(data), None, 0, False, False)
    buf = (llama_cpp.llama_token * max(n, 1))()
    n = llama_cpp.llama_tokenize(vocab, data, len(data), buf, len(buf), False, False)
    return list(buf[:max(n, 0)])


def compute_imatrix(
    model_path,
    text: str,
    *,
    n_ctx: int = 512,
    chunks: int | None = None,
    threads: int | None = None,
    dataset: str = "calibration.txt",
    progress: Callable[[int, int], None] | None = None,
) -> Imatrix:
    """Run the model over `text` in chunks of n_ctx tokens and collect an importance matrix."""
    import llama_cpp

    from . import runtime

    from llama_cpp._logger import set_verbose

    set_verbose(False)  # llama.cpp's load and context logs, as Llama(verbose=False) does
    llama_cpp.llama_backend_init()
    mparams = llama_cpp.llama_model_default_params()
    mparams.use_extra_bufts = runtime.use_extra_bufts()
    model = llama_cpp.llama_model_load_from_file(str(model_path).encode(), mparams)
    if not model:
        raise ImatrixError(f"llama.cpp could not load {model_path}")
    try:
        return _run_chunks(llama_cpp, model, text, n_ctx, chunks, threads, dataset, progress)
    finally:
        llama_cpp.llama_model_free(model)


def _plan_chunks(tokens: list[int], n_ctx: int, chunks: int | None, add_bos: bool, bos: int) -> list[list[int]]:
    """Split into chunks of n_ctx tokens (BOS first when the model adds one), like llama-imatrix."""
    body = n_ctx - 1 if add_bos else n_ctx
    if len(tokens) < MIN_ROWS * 2:
        raise ImatrixError(f"The calibration text is too short: {len(tokens)} tokens (need at least {MIN_ROWS * 2})")
    pieces = [tokens[i: i + body] for i in range(0, len(tokens), body)]
    if len(pieces) > 1 and len(pieces[-1]) < MIN_ROWS:
        pieces.pop()  # a tiny tail would be ignored by the 16-row filter anyway
    pieces = pieces[:chunks] if chunks else pieces
    return [([bos] if add_bos else []) + p for p in pieces]


def _run_chunks(llama_cpp, model, text, n_ctx, chunks, threads, dataset, progress) -> Imatrix:
    import numpy as np

    n_ctx = max(MIN_ROWS * 2, min(n_ctx, llama_cpp.llama_model_n_ctx_train(model)))
    vocab = llama_cpp.llama_model_get_vocab(model)
    plan = _plan_chunks(tokenize(llama_cpp, vocab, text), n_ctx, chunks,
                        llama_cpp.llama_vocab_get_add_bos(vocab), llama_cpp.llama_vocab_bos(vocab))
    collector = Collector(_GGML())
    callback = llama_cpp.ggml_backend_sched_eval_callback(collector)  # must outlive the context
    cparams = llama_cpp.llama_context_default_params()
    cparams.n_ctx = cparams.n_batch = cparams.n_ubatch = n_ctx
    cparams.cb_eval = callback
    from .cpus import default_threads

    # all of it is batch work, but keep llama.cpp's split when the user did not choose
    cparams.n_threads, cparams.n_threads_batch = (threads, threads) if threads else default_threads()
    ctx = llama_cpp.llama_init_from_model(model, cparams)
    if not ctx:
        raise ImatrixError("llama.cpp could not create a context for the importance matrix")
    try:
        for i, chunk in enumerate(plan):
            _decode_all(llama_cpp, ctx, chunk)
            if collector.error:
                raise ImatrixError(f"Collecting the importance matrix failed: {collector.error!r}")
            if progress:
                progress(i + 1, len(plan))
    finally:
        llama_cpp.llama_free(ctx)
    entries = {n: Entry(e.sums.astype(np.float32), e.counts.astype(np.float32)) for n, e in collector.entries.items()}
    if not entries:
        raise ImatrixError("No matrix multiplications were seen; is this a Phi model?")
    return Imatrix(entries, [dataset], len(plan), n_ctx)


def _decode_all(llama_cpp, ctx, tokens: list[int]) -> None:
    """One chunk with logits for every token, so the last layer sees all rows (not just one)."""
    llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
    batch = llama_cpp.llama_batch_init(len(tokens), 0, 1)
    try:
        for i, tok in enumerate(tokens):
            batch.token[i], batch.pos[i], batch.n_seq_id[i] = tok, i, 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = 1
        batch.n_tokens = len(tokens)
        rc = llama_cpp.llama_decode(ctx, batch)
        if rc != 0:
            raise ImatrixError(f"llama_decode failed with code {rc} while computing the importance matrix")
    finally:
        llama_cpp.llama_batch_free(batch)
