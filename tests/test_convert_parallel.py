"""The converter reads, converts and writes in parallel: the file is byte-for-byte the one a
strictly sequential conversion writes, for converted (bf16 -> f16, -> q8_0) and copied tensors."""

import pytest

from llm_phi_gguf import convert


def sequential(pool, jobs, ahead):
    return (job() for job in jobs)


@pytest.mark.parametrize("kind, dtype, outtype", [("phi-3-128k", "bfloat16", "f16"), ("phi-4-mini", "float32", "q8_0"),
                                                  ("phi-4", "bfloat16", "bf16")])
def test_parallel_output_is_byte_identical(kind, dtype, outtype, checkpoint, tmp_path, monkeypatch):
    src = checkpoint(kind, dtype=dtype)
    monkeypatch.setattr(convert, "CHUNK_BYTES", 4096)  # many chunks per tensor, so order matters
    parallel = convert.convert_checkpoint(src, tmp_path / "parallel.gguf", outtype=outtype, progress=False)
    monkeypatch.setattr(convert, "in_parallel", sequential)
    serial = convert.convert_checkpoint(src, tmp_path / "serial.gguf", outtype=outtype, progress=False)
    assert parallel.read_bytes() == serial.read_bytes()


def test_in_parallel_keeps_order_and_bounds_work_ahead():
    from concurrent.futures import ThreadPoolExecutor

    started = []

    def job(i):
        def run():
            started.append(i)
            return i
        return run

    def jobs():
        for i in range(50):
            # the generator is pulled at most `ahead` + 1 jobs beyond what was consumed
            yield job(i)

    with ThreadPoolExecutor(4) as pool:
        out = []
        for value in convert.in_parallel(pool, jobs(), ahead=3):
            out.append(value)
            assert len(started) <= len(out) + 3
    assert out == list(range(50))
