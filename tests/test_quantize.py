"""`llm phi quantize`: real k-quant files from tiny Phi checkpoints, read back, loaded, evaluated.

One CLI run per family (HF folder -> f16 -> Q4_K_M, Q5_K_M, Q6_K, Q8_0 + quality report +
registration) is shared by the tests of this module. Hidden size 256 and intermediate 512 make
every matrix row a multiple of 256, so the K-quant blocks are real (no fallbacks).
initializer_range 0.02 (what the real Phi configs use) keeps the random model's outputs from
being chaotic, so quantization noise, not amplified chaos, is what the report measures.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from llm_phi_gguf.cli import phi

TYPES = ("Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0")
FAMILIES = {  # checkpoint kind -> (registry family key, output tied to token_embd)
    "phi-3-mini-4k": ("phi-3", False),
    "phi-4-mini": ("phi-4-mini", True),
}
TINY = dict(initializer_range=0.02)

# llama.cpp's mixture (gguf-phi.md 5.3) for these types on a 2-layer Phi:
# type -> (default tensor type, type of attn_qkv/ffn_down in "more bits" layers, output type)
MIXES = {
    "Q4_K_M": ("Q4_K", "Q6_K", "Q6_K"),
    "Q5_K_M": ("Q5_K", "Q6_K", "Q6_K"),
    "Q6_K": ("Q6_K", "Q6_K", "Q6_K"),
    "Q8_0": ("Q8_0", "Q8_0", "Q8_0"),
}
# bits per weight of a tensor type (block bytes * 8 / block size)
BPW = {"F16": 16, "Q8_0": 8.5, "Q6_K": 6.5625, "Q5_K": 5.5, "Q4_K": 4.5}


def more_bits(i: int, n: int) -> bool:
    """llama.cpp's use_more_bits (integer arithmetic)."""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def expected_type(name: str, qtype: str, tied: bool, n_layer: int) -> str:
    default, bumped, output = MIXES[qtype]
    if name == "output.weight" or (name == "token_embd.weight" and tied):
        return output
    if name.startswith("blk.") and name.split(".")[2] in ("attn_qkv", "ffn_down"):
        return bumped if more_bits(int(name.split(".")[1]), n_layer) else default
    return default


def weight_types(path: Path) -> dict[str, tuple[str, int]]:
    """Quantizable weights of a GGUF read back with gguf-py: name -> (type name, bytes)."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    return {
        t.name: (t.tensor_type.name, int(t.n_bytes))
        for t in reader.tensors
        if len(t.shape) >= 2 and t.name.endswith("weight") and "_norm" not in t.name
    }


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def probe_verdict(tmp_path_factory):
    """The AMX probe's real verdict, computed once for the module (tests get fresh user dirs)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLM_USER_PATH", str(tmp_path_factory.mktemp("probe-user")))
        from llm_phi_gguf import runtime, store

        runtime.probe()
        return (store.registry_dir() / "probe.json").read_text()


def seed_probe(verdict: str) -> None:
    from llm_phi_gguf import store

    (store.registry_dir() / "probe.json").write_text(verdict)


@pytest.fixture(autouse=True)
def _seeded_probe(user_path, probe_verdict):
    seed_probe(probe_verdict)


@pytest.fixture(scope="module", params=list(FAMILIES))
def family_run(request, checkpoint, probe_verdict, tmp_path_factory):
    """Run `llm phi quantize FOLDER -q ... --keep-f16` once per family, in a private folder."""
    kind = request.param
    root = tmp_path_factory.mktemp(f"quant-{kind}")
    folder = shutil.copytree(checkpoint(kind, **TINY), root / kind)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLM_USER_PATH", str(root / "user"))
        seed_probe(probe_verdict)
        args = ["quantize", str(folder), *[a for t in TYPES for a in ("-q", t)], "--keep-f16"]
        result = CliRunner().invoke(phi, args)
        models = CliRunner().invoke(phi, ["models", "--verbose"])
    assert result.exit_code == 0, result.output
    return dict(kind=kind, root=root, folder=folder, output=result.output, models=models.output,
                outs={t: root / f"{kind}_{t}.gguf" for t in TYPES}, f16=root / f"{kind}_F16.gguf")


# ----------------------------------------------------------------------------- tests


def test_outputs_named_beside_the_source_and_nothing_else_left(family_run):
    names = sorted(p.name for p in family_run["root"].iterdir() if p.is_file())
    kind = family_run["kind"]
    expected = sorted([f"{kind}_F16.gguf"] + [f"{kind}_{t}.gguf" for t in TYPES]
                      + [f"{kind}_{t}.gguf.quality.json" for t in TYPES])
    assert names == expected  # the temporary conversion is gone; no .partial files


@pytest.mark.parametrize("qtype", TYPES)
def test_tensor_types_follow_llama_cpp_mixture(family_run, qtype):
    tied = FAMILIES[family_run["kind"]][1]
    types = weight_types(family_run["outs"][qtype])
    assert ("output.weight" not in types) == tied
    assert {n: t for n, (t, _) in types.items()} == {n: expected_type(n, qtype, tied, 2) for n in types}


@pytest.mark.parametrize("qtype", TYPES)
def test_weights_shrink_by_the_expected_ratio(family_run, qtype):
    f16 = weight_types(family_run["f16"])
    quant = weight_types(family_run["outs"][qtype])
    assert {t for t, _ in f16.values()} == {"F16"}
    ratio = sum(b for _, b in quant.values()) / sum(b for _, b in f16.values())
    # exactly the mixture's bits per weight over 16 (every row is a whole number of blocks)
    n_el = {n: b / 2 for n, (_, b) in f16.items()}
    expected = sum(n_el[n] * BPW[t] / 8 for n, (t, _) in quant.items()) / sum(b for _, b in f16.values())
    assert ratio == pytest.approx(expected, rel=1e-6)
    default, _, _ = MIXES[qtype]
    if qtype == "Q8_0":
        assert ratio == pytest.approx(8.5 / 16)
    else:  # between all-default and all-Q6_K
        assert BPW[default] / 16 <= ratio <= BPW["Q6_K"] / 16


def test_file_sizes_are_ordered(family_run):
    sizes = [family_run["outs"][t].stat().st_size for t in TYPES] + [family_run["f16"].stat().st_size]
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)


@pytest.mark.parametrize("qtype", ["Q4_K_M", "Q8_0"])
def test_quantized_files_load_and_generate(family_run, qtype):
    from llm_phi_gguf.runtime import LoadOptions, load_llama

    llama = load_llama(family_run["outs"][qtype], LoadOptions(n_ctx=128))
    try:
        out = llama("The quick brown fox", max_tokens=6, temperature=0.0)
    finally:
        llama.close()
    assert out["usage"]["prompt_tokens"] > 3
    assert out["usage"]["completion_tokens"] >= 1


def test_quality_report_is_sane(family_run):
    rows = {t: json.loads(Path(str(family_run["outs"][t]) + ".quality.json").read_text())["rows"] for t in TYPES}
    q = {t: r[0] for t, r in rows.items()}
    source = rows["Q8_0"][1]
    assert source["kld_mean"] == 0 and source["top1"] == 1 and source["bpw"] == pytest.approx(16, abs=0.1)
    assert q["Q8_0"]["kld_mean"] < q["Q6_K"]["kld_mean"] < q["Q4_K_M"]["kld_mean"]
    assert q["Q8_0"]["kld_mean"] < q["Q5_K_M"]["kld_mean"] < q["Q4_K_M"]["kld_mean"]
    assert q["Q8_0"]["top1"] >= 0.95
    assert q["Q8_0"]["top1"] >= q["Q4_K_M"]["top1"]
    for row in q.values():
        assert 0 <= row["kld_mean"] <= row["kld_p99"]
        assert 1 < row["ppl"] < 10 * source["ppl"] and row["ppl"] == pytest.approx(source["ppl"], rel=0.2)
    assert q["Q8_0"]["bpw"] == pytest.approx(8.5, abs=0.1)


def test_report_table_and_registration_are_printed(family_run):
    out = family_run["output"]
    key = FAMILIES[family_run["kind"]][0]
    assert "KLD mean" in out and "top-1" in out
    for t in TYPES:
        assert f"{family_run['kind']}_{t}.gguf" in out
    for suffix in ("q4", "q5", "q6", "q8"):
        assert f"Registered as {key}-{suffix}" in out
    assert f"{key}-q4 " in family_run["models"] and "quality:" in family_run["models"]
