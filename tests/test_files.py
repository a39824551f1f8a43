"""Temporaries go through files.atomic_output: named so a killed run's leftover is found and
removed, renamed only on success, and (keep=False) scratch files that never become outputs."""

from __future__ import annotations

import os
import shutil
import time

import pytest

from llm_phi_gguf import quantize
from llm_phi_gguf.files import STALE_AFTER_S, atomic_output


def partials(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".partial"))


def test_scratch_output_is_deleted_on_success_and_on_error(tmp_path):
    out = tmp_path / "m_F16.gguf"
    with atomic_output(out, keep=False) as tmp:
        tmp.write_bytes(b"x")
        assert partials(tmp_path) == [tmp.name] and tmp.name.startswith(".m_F16.gguf.")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(KeyboardInterrupt), atomic_output(out, keep=False) as tmp:
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_scratch_output_ignores_an_existing_output(tmp_path):
    out = tmp_path / "m_F16.gguf"
    out.write_bytes(b"kept from an earlier run")
    with atomic_output(out, keep=False) as tmp:
        tmp.write_bytes(b"scratch")
    assert out.read_bytes() == b"kept from an earlier run" and partials(tmp_path) == []


def test_quantize_conversion_is_a_temporary_that_a_later_run_cleans_up(checkpoint, tmp_path):
    """The conversion `llm phi quantize FOLDER` makes is atomic_output's temporary for
    <name>_F16.gguf; one left by a killed run (older than STALE_AFTER_S) is removed by the next."""
    src = shutil.copytree(checkpoint("phi-3-mini-4k"), tmp_path / "ck")
    out = tmp_path / "out"
    out.mkdir()
    stale = out / ".ck_F16.gguf.killed.partial"
    stale.write_bytes(b"half a conversion")
    os.utime(stale, (time.time() - STALE_AFTER_S - 60,) * 2)
    with quantize.source_gguf(src, out, keep_f16=False, force=False, progress=False, echo=lambda s: None) as gguf:
        assert gguf.name.startswith(".ck_F16.gguf.") and gguf.name.endswith(".partial")
        assert quantize.read_source(gguf).file_type_name == "F16"
        assert not stale.exists()
    assert list(out.iterdir()) == []


def test_quantize_keeps_the_conversion_with_keep_f16(checkpoint, tmp_path):
    src = shutil.copytree(checkpoint("phi-3-mini-4k", dtype="bfloat16"), tmp_path / "ck")
    out = tmp_path / "out"
    out.mkdir()
    lines = []
    with quantize.source_gguf(src, out, keep_f16=True, force=False, progress=False, echo=lines.append):
        pass
    assert [p.name for p in out.iterdir()] == ["ck_BF16.gguf"]
    assert lines[-1] == f"Kept the converted model as {out / 'ck_BF16.gguf'}"
    with pytest.raises(quantize.PhiError, match="already exists"):  # refused before converting again
        with quantize.source_gguf(src, out, keep_f16=True, force=False, progress=False, echo=lines.append):
            pass
    assert "Converting" not in lines[-1]
