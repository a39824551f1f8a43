"""Bad inputs to `llm phi quantize`: one clear line, and never a file (or a partial one) left behind.

Also the native call's robustness: a llama.cpp abort becomes an error, Ctrl-C kills the child,
and shape fallbacks on rows that are not a multiple of 256 are reported.
"""

from __future__ import annotations

import os
import shutil
import signal

import numpy as np
import pytest
from click.testing import CliRunner

from llm_phi_gguf import quantize
from llm_phi_gguf.cli import phi
from llm_phi_gguf.errors import QuantizationError
from llm_phi_gguf.imatrix import Entry, Imatrix, save_imatrix

from test_quantize import TINY, _seeded_probe, probe_verdict, weight_types  # noqa: F401 (fixtures)

KIND = "phi-3-mini-4k"


@pytest.fixture
def f16(converted):
    return converted(KIND, "f16", **TINY)


def invoke(*args):
    result = CliRunner().invoke(phi, ["quantize", *map(str, args)])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


def assert_one_line_error(result, *fragments):
    assert result.exit_code == 1
    message = result.output.strip().splitlines()[-1]
    assert message.startswith("Error: ")
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in message, message
    return message


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir())


def test_unknown_type_lists_the_valid_ones(f16, tmp_path):
    msg = assert_one_line_error(invoke(f16, "-q", "Q4_K_X", "-o", tmp_path), "Q4_K_X")
    assert "Q4_K_M" in msg and "IQ4_XS" in msg and "Q8_0" in msg
    assert leftovers(tmp_path) == []


def test_iq_type_without_imatrix(f16, tmp_path):
    assert_one_line_error(invoke(f16, "-q", "IQ2_XXS", "-o", tmp_path), "IQ2_XXS", "importance matrix", "--imatrix")
    with pytest.raises(QuantizationError, match="needs an importance matrix"):
        quantize.quantize_file(f16, tmp_path / "x.gguf", "IQ1_S", progress=False)
    assert leftovers(tmp_path) == []


def test_requantizing_needs_allow_requantize(f16, tmp_path):
    q8 = quantize.quantize_file(f16, tmp_path / "m_Q8_0.gguf", "Q8_0", progress=False).path
    msg = assert_one_line_error(invoke(q8, "-q", "Q4_K_M", "--no-register", "--no-report"),
                                "already quantized (Q8_0)", "--allow-requantize")
    assert leftovers(tmp_path) == ["m_Q8_0.gguf"]
    ok = invoke(q8, "-q", "Q4_K_M", "--no-register", "--no-report", "--allow-requantize")
    assert ok.exit_code == 0, ok.output
    assert weight_types(tmp_path / "m_Q4_K_M.gguf")["blk.0.ffn_up.weight"][0] == "Q4_K"
    assert msg


def test_imatrix_with_foreign_tensor_names(f16, tmp_path):
    im = Imatrix({"blk.7.attn_qkv.weight": Entry(np.ones((1, 256), np.float32), np.ones(1, np.float32))},
                 ["x"], 1, 512)
    path = save_imatrix(im, tmp_path / "other.imatrix.gguf")
    assert_one_line_error(invoke(f16, "-q", "Q4_K_M", "-o", tmp_path / "out.gguf", "--imatrix", path),
                          "does not match", "blk.7.attn_qkv.weight")
    assert leftovers(tmp_path) == ["other.imatrix.gguf"]


def test_imatrix_with_wrong_sizes(f16, tmp_path):
    im = Imatrix({"blk.0.ffn_down.weight": Entry(np.ones((1, 256), np.float32), np.ones(1, np.float32))},
                 ["x"], 1, 512)
    path = save_imatrix(im, tmp_path / "bad.imatrix.dat")
    assert_one_line_error(invoke(f16, "-q", "IQ4_XS", "-o", tmp_path / "out.gguf", "--imatrix", path),
                          "blk.0.ffn_down.weight has 256 values", "needs 512")
    assert leftovers(tmp_path) == ["bad.imatrix.dat"]


def test_not_an_imatrix(f16, tmp_path):
    junk = tmp_path / "junk.dat"
    junk.write_bytes(b"\x07\x00\x00\x00hello")
    assert_one_line_error(invoke(f16, "-q", "Q4_K_M", "-o", tmp_path / "o.gguf", "--imatrix", junk),
                          "neither a GGUF nor a legacy .dat")
    assert_one_line_error(invoke(f16, "-q", "Q4_K_M", "-o", tmp_path / "o.gguf", "--imatrix", f16),
                          "not an importance matrix")
    assert leftovers(tmp_path) == ["junk.dat"]


def test_not_enough_disk_space(f16, tmp_path, monkeypatch):
    import llm_phi_gguf.files as files

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(files.shutil, "disk_usage", lambda p: usage._replace(free=100_000))
    assert_one_line_error(invoke(f16, "-q", "Q4_K_M", "-o", tmp_path / "o.gguf", "--no-register"),
                          "Not enough disk space")
    assert leftovers(tmp_path) == []


def test_existing_output_needs_force(f16, tmp_path):
    out = tmp_path / "o.gguf"
    out.write_bytes(b"keep me")
    assert_one_line_error(invoke(f16, "-q", "Q8_0", "-o", out, "--no-register", "--no-report"),
                          "already exists", "--force")
    assert out.read_bytes() == b"keep me" and leftovers(tmp_path) == ["o.gguf"]
    ok = invoke(f16, "-q", "Q8_0", "-o", out, "--no-register", "--no-report", "--force")
    assert ok.exit_code == 0, ok.output
    assert weight_types(out)["output.weight"][0] == "Q8_0"


def test_output_equal_to_source(f16, tmp_path):
    src = shutil.copy(f16, tmp_path / "m.gguf")
    before = (tmp_path / "m.gguf").read_bytes()
    assert_one_line_error(invoke(src, "-q", "Q8_0", "-o", src, "--force", "--no-report"), "same file as the input")
    assert (tmp_path / "m.gguf").read_bytes() == before and leftovers(tmp_path) == ["m.gguf"]


def test_several_types_need_an_output_folder(f16, tmp_path):
    assert_one_line_error(invoke(f16, "-q", "Q8_0", "-q", "Q6_K", "-o", tmp_path / "o.gguf"), "must be a folder")
    (tmp_path / "file").write_text("x")
    assert_one_line_error(invoke(f16, "-q", "Q8_0", "-q", "Q6_K", "-o", tmp_path / "file"),
                          "is a file, not a folder", "give a folder")
    assert leftovers(tmp_path) == ["file"]


def test_an_output_folder_that_does_not_exist_yet_is_created(f16, tmp_path):
    out = tmp_path / "new" / "sub"
    result = invoke(f16, "-q", "Q8_0", "-q", "Q6_K", "-o", out, "--no-register", "--no-report")
    assert result.exit_code == 0, result.output
    name = quantize.base_name(f16)
    assert leftovers(out) == [f"{name}_Q6_K.gguf", f"{name}_Q8_0.gguf"]


def test_imatrix_and_calibration_are_exclusive(f16, tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("hello " * 100)
    assert_one_line_error(invoke(f16, "-q", "Q8_0", "-o", tmp_path, "--imatrix", text, "--calibration", text),
                          "either --imatrix or --calibration")


def test_missing_source(tmp_path):
    assert_one_line_error(invoke(tmp_path / "nope.gguf", "-q", "Q8_0"), "does not exist")


def test_llama_cpp_abort_becomes_an_error(f16, tmp_path):
    """pure IQ2_XXS puts IQ2_XXS on output.weight, which has no imatrix entry: ggml aborts."""
    im = Imatrix({"blk.0.ffn_up.weight": Entry(np.ones((1, 256), np.float32), np.ones(1, np.float32))}, ["x"], 1, 512)
    with pytest.raises(QuantizationError, match=r"crashed \(SIGABRT\).*GGML_ASSERT"):
        quantize.quantize_file(f16, tmp_path / "o.gguf", "IQ2_XXS", imatrix=im, pure=True, progress=False)
    assert leftovers(tmp_path) == []


def test_ctrl_c_kills_the_child_and_leaves_no_file(f16, tmp_path, monkeypatch):
    children, running = [], []
    popen = quantize.subprocess.Popen

    def spy(*args, **kwargs):
        children.append(popen(*args, **kwargs))
        return children[-1]

    def interrupt(n, total, name):
        running.append(children[0].poll() is None)
        raise KeyboardInterrupt  # what Ctrl-C raises in the parent while it reads the child's log

    monkeypatch.setattr(quantize.subprocess, "Popen", spy)
    with pytest.raises(KeyboardInterrupt):
        quantize.quantize_file(f16, tmp_path / "o.gguf", "Q4_K_M", progress=interrupt)
    assert leftovers(tmp_path) == []
    assert children[0].returncode == (-signal.SIGTERM if running[0] else 0)  # killed and reaped


def test_progress_reports_every_tensor(f16, tmp_path):
    from llm_phi_gguf.gguf_reader import read_gguf

    seen = []
    quantize.quantize_file(f16, tmp_path / "o.gguf", "Q4_K_M", progress=lambda *event: seen.append(event))
    names = [t.name for t in read_gguf(f16).tensors]
    assert [n for n, _, _ in seen] == list(range(1, len(names) + 1))
    assert {total for _, total, _ in seen} == {len(names)} and sorted(name for *_, name in seen) == sorted(names)


def test_cli_ctrl_c_is_one_line(f16, tmp_path, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(quantize, "run_child", interrupt)
    assert_one_line_error(invoke(f16, "-q", "Q8_0", "-o", tmp_path, "--no-register"), "Interrupted")
    assert leftovers(tmp_path) == []


def test_fallbacks_for_rows_not_a_multiple_of_256(converted, tmp_path):
    """intermediate 320: ffn_down rows are 320 long, so Q4_K -> Q5_0 and (bumped) Q6_K -> Q8_0."""
    src = converted(KIND, "f16", intermediate_size=320, **TINY)
    result = quantize.quantize_file(src, tmp_path / "o.gguf", "Q4_K_M", progress=False)
    got = {f.tensor: (f.wanted, f.used, f.ncols) for f in result.fallbacks}
    assert got == {"blk.0.ffn_down.weight": ("q4_K", "q5_0", 320), "blk.1.ffn_down.weight": ("q6_K", "q8_0", 320)}
    types = weight_types(result.path)
    assert types["blk.0.ffn_down.weight"][0] == "Q5_0" and types["blk.1.ffn_down.weight"][0] == "Q8_0"
    assert types["blk.0.ffn_up.weight"][0] == "Q4_K"


def test_cli_reports_fallbacks(converted, tmp_path):
    src = converted(KIND, "f16", intermediate_size=320, **TINY)
    result = invoke(src, "-q", "Q6_K", "-o", tmp_path, "--no-register", "--no-report")
    assert result.exit_code == 0, result.output
    assert "2 tensor(s) fell back" in result.output and "blk.0.ffn_down.weight q6_K->q8_0" in result.output


# file type -> the type llama.cpp gives blk.0.ffn_up (no mixture rule touches it for these)
DEFAULT_TYPES = {"Q4_0": "Q4_0", "Q5_0": "Q5_0", "Q2_K": "Q2_K", "Q3_K_M": "Q3_K", "IQ4_NL": "IQ4_NL",
                 "BF16": "BF16", "F16": "F16"}


@pytest.mark.parametrize("qtype", list(DEFAULT_TYPES))
def test_other_file_types(f16, tmp_path, qtype):
    from llm_phi_gguf.gguf_reader import read_gguf

    result = quantize.quantize_file(f16, tmp_path / "o.gguf", qtype, progress=False)
    assert result.fallbacks == []
    assert weight_types(result.path)["blk.0.ffn_up.weight"][0] == DEFAULT_TYPES[qtype]
    assert read_gguf(result.path).file_type_name == qtype
    assert leftovers(tmp_path) == ["o.gguf"]


def test_child_structs_match_the_binding():
    """The child mirrors two llama.h structs to avoid importing llama_cpp; they must not drift."""
    import ctypes

    import llama_cpp

    from llm_phi_gguf import _quantize_child as child

    for ours, theirs in ((child.QuantizeParams, llama_cpp.llama_model_quantize_params),
                         (child.ImatrixData, llama_cpp.llama_model_imatrix_data)):
        layout = [(name, getattr(ours, name).offset, getattr(ours, name).size) for name, _ in ours._fields_]
        assert layout == [(n, getattr(theirs, n).offset, getattr(theirs, n).size) for n, _ in theirs._fields_]
        assert ctypes.sizeof(ours) == ctypes.sizeof(theirs)
    defaults = child.load_libllama().llama_model_quantize_default_params()
    assert (defaults.nthread, defaults.ftype, defaults.quantize_output_tensor) == (0, 7, True)


def test_cli_module_imports_nothing_heavy():
    import subprocess
    import sys

    # llm itself may import numpy; what matters is what our command modules add at `llm` start-up
    code = ("import sys, llm, llm_phi_gguf; before = set(sys.modules); import llm_phi_gguf.cli; "
            "new = set(sys.modules) - before; "
            "print(sorted(m for m in ('llama_cpp', 'numpy', 'gguf', 'torch', 'tqdm') if m in new))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.fixture(scope="module")
def slow_f16(converted):
    """~70M parameters: Q4_K_M on one thread takes seconds, long enough to interrupt mid-way."""
    return converted(KIND, "f16", hidden_size=1024, intermediate_size=4096, num_hidden_layers=4,
                     num_attention_heads=16, num_key_value_heads=16, **TINY)


def test_real_ctrl_c_on_the_command(slow_f16, tmp_path):
    """SIGINT to the whole process group, as a terminal sends it, while llama.cpp is writing."""
    import subprocess
    import sys
    import time
    from pathlib import Path

    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code = "import sys; from llm_phi_gguf.cli import phi; phi(sys.argv[1:])"
    args = ["quantize", str(slow_f16), "-q", "Q4_K_M", "-o", str(out_dir), "--no-register", "--no-report",
            "--threads", "1"]
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True, env={**os.environ, "LLM_USER_PATH": str(tmp_path)})
    deadline = time.monotonic() + 60
    while not any(p.stat().st_size > 0 for p in out_dir.glob("*.partial")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    assert children  # the quantizer child is running
    os.killpg(proc.pid, signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=15)
    assert proc.returncode == 1
    assert stderr.strip().splitlines()[-1] == "Error: Interrupted; no partial output was kept"
    assert "Traceback" not in stderr
    assert leftovers(out_dir) == []
    for pid in children:  # the quantizer child is gone, not left running
        assert not Path(f"/proc/{pid}").exists()


@pytest.mark.parametrize("outtype", ["f32", "bf16"])
def test_f32_and_bf16_sources_and_default_names(converted, tmp_path, outtype):
    src = shutil.copy(converted(KIND, outtype, **TINY), tmp_path / f"model_{outtype.upper()}.gguf")
    result = invoke(src, "-q", "Q8_0", "-q", "Q4_K_M", "--no-register", "--no-report")
    assert result.exit_code == 0, result.output
    assert leftovers(tmp_path) == sorted(["model_Q4_K_M.gguf", "model_Q8_0.gguf", f"model_{outtype.upper()}.gguf"])
    assert weight_types(tmp_path / "model_Q8_0.gguf")["blk.0.ffn_up.weight"][0] == "Q8_0"


def test_alias_option_and_a_taken_alias(f16, tmp_path):
    from llm_phi_gguf import store

    one = invoke(f16, "-q", "Q8_0", "-o", tmp_path / "a.gguf", "--alias", "mine", "--no-report")
    assert one.exit_code == 0, one.output
    assert store.get("mine").path == str(tmp_path / "a.gguf")
    two = invoke(f16, "-q", "Q8_0", "-q", "Q6_K", "-o", tmp_path, "--alias", "pair", "--no-report")
    assert two.exit_code == 0, two.output
    assert {store.get("pair-q8").quant, store.get("pair-q6").quant} == {"Q8_0", "Q6_K"}
    before = leftovers(tmp_path)
    assert_one_line_error(invoke(f16, "-q", "Q4_K_M", "-o", tmp_path / "b.gguf", "--alias", "mine", "--no-report"),
                          "'mine' is already registered", "--force")
    assert leftovers(tmp_path) == before  # refused before any work
