"""Bad input: one clear ConversionError/PhiError line, and nothing left behind in the output folder."""

from __future__ import annotations

import json
import shutil
import struct

import numpy as np
import pytest

from llm_phi_gguf import convert as convert_mod
from llm_phi_gguf.convert import convert_checkpoint
from llm_phi_gguf.errors import ConversionError, DiskSpaceError, OutputExistsError, PhiError


@pytest.fixture
def src(checkpoint, tmp_path):
    """A private copy of the tiny phi-3 checkpoint, free to damage."""
    dst = tmp_path / "src"
    shutil.copytree(checkpoint("phi-3-mini-4k"), dst)
    return dst


def edit_json(path, **changes):
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def fails(src, out, match, exc=ConversionError, **kw):
    existed = out.exists()
    with pytest.raises(exc, match=match) as info:
        convert_checkpoint(src, out, progress=False, **kw)
    assert "\n" not in str(info.value)
    assert out.exists() == existed and not list(out.parent.glob(".*.partial"))
    return info.value


def test_missing_config(src, tmp_path):
    (src / "config.json").unlink()
    fails(src, tmp_path / "o.gguf", "No config.json")


@pytest.mark.parametrize("arch, title, reason", [
    ("Phi3SmallForCausalLM", "Phi-3-small", "llama.cpp has no architecture for it"),
    ("Phi3VForCausalLM", "Phi-3/3.5-vision", "neither its text model nor its vision projector"),
    ("Phi4MMForCausalLM", "Phi-4-multimodal", "llama.cpp does not support it"),
    ("Phi4FlashForCausalLM", "Phi-4-mini-flash-reasoning", "hybrid (SambaY) architecture"),
])
def test_unsupported_phi_is_refused_by_name_with_the_reason(arch, title, reason, src, tmp_path):
    edit_json(src / "config.json", architectures=[arch])
    err = str(fails(src, tmp_path / "o.gguf", arch))
    assert f"is {title} ({arch}), which this plugin cannot run: " in err and reason in err
    assert "llm phi families" in err


def test_other_architecture_names_it_and_the_supported_list(src, tmp_path):
    edit_json(src / "config.json", architectures=["LlamaForCausalLM"])
    err = str(fails(src, tmp_path / "o.gguf", "architecture LlamaForCausalLM is not supported"))
    assert "PhiForCausalLM" in err and "PhimoeForCausalLM" in err and "llm phi families" in err


def test_missing_weights(src, tmp_path):
    (src / "model.safetensors").unlink()
    fails(src, tmp_path / "o.gguf", "No \\*.safetensors|No .*safetensors")


def test_pickle_weights_refused(src, tmp_path):
    (src / "model.safetensors").rename(src / "pytorch_model.bin")
    fails(src, tmp_path / "o.gguf", "pickle")


def test_index_naming_missing_shard(checkpoint, tmp_path):
    dst = tmp_path / "src"
    shutil.copytree(checkpoint("phi-3-mini-4k", max_shard_size="300KB"), dst)
    shard = sorted(dst.glob("model-*.safetensors"))[-1]
    shard.unlink()
    fails(dst, tmp_path / "o.gguf", f"shard {shard.name}")


def test_truncated_safetensors(src, tmp_path):
    path = src / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    fails(src, tmp_path / "o.gguf", "truncated")


@pytest.mark.parametrize("header", [b"\xff" * 8, struct.pack("<Q", 20) + b"{not json at all!!!}"])
def test_corrupt_safetensors_header(header, src, tmp_path):
    path = src / "model.safetensors"
    path.write_bytes(header + path.read_bytes()[8:])
    fails(src, tmp_path / "o.gguf", "corrupt safetensors header")


def test_shapes_disagree_with_config(src, tmp_path):
    edit_json(src / "config.json", intermediate_size=640)
    fails(src, tmp_path / "o.gguf", "has shape .* config.json implies")


def test_unknown_tokenizer(src, tmp_path):
    (src / "tokenizer.model").unlink()
    fails(src, tmp_path / "o.gguf", "Unknown tokenizer")


def test_unknown_bpe_pre_tokenizer(checkpoint, tmp_path):
    dst = tmp_path / "src"
    shutil.copytree(checkpoint("phi-4"), dst)
    tj = json.loads((dst / "tokenizer.json").read_text())
    tj["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "\\s+"
    (dst / "tokenizer.json").write_text(json.dumps(tj))
    fails(dst, tmp_path / "o.gguf", "Unknown tokenizer")


def test_vocab_larger_than_embedding(src, tmp_path):
    tj = json.loads((src / "tokenizer.json").read_text())
    tj["added_tokens"].append({**tj["added_tokens"][-1], "id": 9999, "content": "<|extra|>"})
    (src / "tokenizer.json").write_text(json.dumps(tj))
    fails(src, tmp_path / "o.gguf", "beyond the model's vocab_size")


def test_not_enough_disk_space(src, tmp_path, monkeypatch):
    import shutil as sh

    usage = sh.disk_usage(tmp_path)
    monkeypatch.setattr(sh, "disk_usage", lambda p: usage._replace(free=1000))
    fails(src, tmp_path / "o.gguf", "Not enough disk space", exc=DiskSpaceError)
    assert list(tmp_path.glob("*.gguf*")) == [] and list(tmp_path.glob(".*partial")) == []


def test_output_exists_needs_force(src, tmp_path):
    out = tmp_path / "o.gguf"
    out.write_bytes(b"keep me")
    fails(src, out, "already exists", exc=OutputExistsError)
    assert out.read_bytes() == b"keep me"
    assert convert_checkpoint(src, out, force=True, progress=False) == out
    assert out.read_bytes()[:4] == b"GGUF"


def test_output_equal_to_input(src, tmp_path):
    with pytest.raises(PhiError, match="same file"):
        convert_checkpoint(src, src / "model.safetensors", force=True, progress=False)
    assert (src / "model.safetensors").read_bytes()[:8] != b"GGUF\x03\x00\x00\x00"


def test_error_while_writing_leaves_no_partial_file(src, tmp_path, monkeypatch):
    def boom(t):
        raise KeyboardInterrupt

    monkeypatch.setattr(convert_mod, "chunk_jobs", boom)  # where the writer gets its chunks
    with pytest.raises(KeyboardInterrupt):
        convert_checkpoint(src, tmp_path / "o.gguf", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_unknown_outtype(src, tmp_path):
    fails(src, tmp_path / "o.gguf", "Unknown outtype", outtype="q4_k")


@pytest.mark.parametrize("outtype", ["f16", "auto"])
def test_values_beyond_f16_are_refused_naming_the_tensor(outtype, checkpoint, tmp_path):
    """A cast to f16 would turn them into inf; the converter names the tensor and the way out."""
    from safetensors.numpy import load_file, save_file

    src = tmp_path / "src"
    shutil.copytree(checkpoint("phi-3-mini-4k", dtype="float32"), src)
    weights = load_file(src / "model.safetensors")
    name = next(n for n in weights if n.endswith("layers.1.mlp.down_proj.weight"))
    weights[name][3, 5] = 1e6
    save_file(weights, src / "model.safetensors", metadata={"format": "pt"})
    err = str(fails(src, tmp_path / "o.gguf", "blk.1.ffn_down.weight holds values beyond float16's range",
                    outtype=outtype))
    assert "up to 1e+06" in err and "inf" in err and "--outtype bf16" in err
    for ok in ("bf16", "f32"):
        convert_checkpoint(src, tmp_path / f"{ok}.gguf", outtype=ok, progress=False)


def test_values_beyond_q8_0_scales_are_refused_naming_the_tensor(checkpoint, tmp_path):
    """q8_0 stores max|x| / 127 per block as float16: past 127 x 65504 that scale is inf."""
    import gguf
    from safetensors.numpy import load_file, save_file

    src = tmp_path / "src"
    shutil.copytree(checkpoint("phi-3-mini-4k", dtype="float32"), src)
    weights = load_file(src / "model.safetensors")
    name = next(n for n in weights if n.endswith("layers.1.mlp.down_proj.weight"))
    weights[name][3, 5] = 1e6  # beyond float16, within q8_0's reach: converts, and reads back
    save_file(weights, src / "model.safetensors", metadata={"format": "pt"})
    out = convert_checkpoint(src, tmp_path / "ok.gguf", outtype="q8_0", progress=False)
    t = next(t for t in gguf.GGUFReader(str(out)).tensors if t.name == "blk.1.ffn_down.weight")
    values = gguf.quants.dequantize(t.data, t.tensor_type)
    assert np.isfinite(values).all() and abs(values.max() - 1e6) < 1e6 / 127
    weights[name][3, 5] = 1e7
    save_file(weights, src / "model.safetensors", metadata={"format": "pt"})
    err = str(fails(src, tmp_path / "o.gguf", "blk.1.ffn_down.weight holds values beyond what q8_0 can store",
                    outtype="q8_0"))
    assert "up to 1e+07" in err and "--outtype bf16" in err
