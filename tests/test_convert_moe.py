"""Phi-3.5-MoE: llama.cpp routes experts unlike transformers' sparsemixer, so logits cannot be compared.
The oracle is llama.cpp's own converter: every metadata value and every tensor (name, shape, type,
bytes) must be identical, and the file must load and generate."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")


def run_llama_cpp_converter(tree, folder, out, outtype):
    cmd = [sys.executable, str(tree / "convert_hf_to_gguf.py"), str(folder), "--outfile", str(out), "--outtype", outtype]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def fields(reader) -> dict:
    out = {}
    for name, field in reader.fields.items():
        if name.startswith("GGUF."):
            continue
        value = field.contents()
        out[name] = (field.types[0], [float(x) for x in value] if name.endswith("scores") else value)
    return out


def tensors(reader) -> dict:
    return {t.name: (t.tensor_type, tuple(int(x) for x in t.shape), bytes(np.asarray(t.data).tobytes()))
            for t in reader.tensors}


@pytest.mark.parametrize("outtype", ["f32", "bf16"])
def test_moe_equals_llama_cpp_converter(outtype, checkpoint, converted, llama_cpp_tree, tmp_path):
    folder = checkpoint("phi-3.5-moe")  # hub layout: llama.cpp only knows "PhiMoEForCausalLM"
    ours = gguf.GGUFReader(converted("phi-3.5-moe", outtype))
    theirs = gguf.GGUFReader(run_llama_cpp_converter(llama_cpp_tree, folder, tmp_path / "ref.gguf", outtype))
    ours_f, theirs_f = fields(ours), fields(theirs)
    # One deliberate difference: our general.name keeps the hyphen of "Phi-3" (the tokenizer marks its
    # specials rstrip, which llama.cpp honours only for models named like Phi-3); see phi3_marked_name.
    assert ours_f.pop("general.name")[1] == theirs_f.pop("general.name")[1].replace("Phi 3", "Phi-3", 1)
    assert ours_f == theirs_f
    ours_t, theirs_t = tensors(ours), tensors(theirs)
    assert sorted(ours_t) == sorted(theirs_t)
    for name in theirs_t:
        assert ours_t[name][:2] == theirs_t[name][:2], name
        assert ours_t[name][2] == theirs_t[name][2], name


def test_moe_both_config_layouts_give_the_same_file(converted):
    hub = gguf.GGUFReader(converted("phi-3.5-moe"))
    new = gguf.GGUFReader(converted("phi-3.5-moe", layout="transformers"))
    assert tensors(hub) == tensors(new)
    named = ("general.name", "general.finetune", "general.basename")  # from the (differing) folder names
    a, b = ({k: v for k, v in fields(r).items() if k not in named} for r in (hub, new))
    assert a == b and "phimoe.rope.scaling.attn_factor" in a


def test_moe_loads_and_generates(converted):
    llama_cpp = pytest.importorskip("llama_cpp")
    llm = llama_cpp.Llama(model_path=str(converted("phi-3.5-moe")), n_ctx=256, verbose=False, n_threads=2)
    try:
        out = llm.create_completion("Hello world", max_tokens=8, temperature=0.0)
        assert out["usage"]["completion_tokens"] > 0
        assert llm.metadata["phimoe.expert_count"] == "4"
    finally:
        llm.close()
