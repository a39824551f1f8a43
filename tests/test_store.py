"""The registry: validation before registering, aliases, atomic + locked writes, bad input."""

import json
import multiprocessing
from pathlib import Path

import pytest
from fixtures.gguf_builders import DROP, write_llama, write_phi3

from llm_phi_gguf import store
from llm_phi_gguf.errors import GGUFError, PhiError, RegistryError


@pytest.fixture
def phi3(tmp_path):
    return write_phi3(tmp_path / "tiny.gguf")


def test_register_detects_family_and_default_alias(phi3):
    entry = store.register_file(phi3)
    assert (entry.family, entry.quant, entry.alias) == ("phi-3", "F16", "phi-3-f16")
    assert store.get("phi-3-f16").path == str(phi3.resolve())
    assert store.get("phi-gguf/phi-3-f16").alias == "phi-3-f16"


@pytest.mark.parametrize(
    "family,quant,alias",
    [("phi-3.5", "Q4_K_M", "phi-3.5-q4"), ("phi-3.5", "Q5_K_M", "phi-3.5-q5"), ("phi-4", "Q6_K", "phi-4-q6"),
     ("phi-4", "Q8_0", "phi-4-q8"), ("phi-4-mini", "IQ4_XS", "phi-4-mini-iq4_xs"), ("phi-3", "BF16", "phi-3-bf16")],
)
def test_default_alias_scheme(family, quant, alias):
    assert store.default_alias(family, quant) == alias


def test_duplicate_alias_needs_force(phi3, tmp_path):
    store.register_file(phi3, alias="mine")
    other = write_phi3(tmp_path / "other.gguf")
    with pytest.raises(RegistryError, match="already registered.*--force"):
        store.register_file(other, alias="mine")
    store.register_file(other, alias="mine", force=True)
    assert store.get("mine").path == str(other.resolve())


def test_non_phi_and_non_gguf_are_refused(tmp_path):
    with pytest.raises(GGUFError, match="not a Phi model"):
        store.register_file(write_llama(tmp_path / "llama.gguf"))
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf at all" * 10)
    with pytest.raises(GGUFError):
        store.register_file(junk)
    with pytest.raises(PhiError):
        store.register_file(tmp_path / "missing.gguf")
    assert store.load() == {}


def test_family_override_and_unknown_family(phi3):
    assert store.register_file(phi3, family="phi-3.5").alias == "phi-3.5-f16"
    with pytest.raises(PhiError, match="Unknown family"):
        store.register_file(phi3, family="phi-9", alias="x")


def test_bad_template_refused(phi3, tmp_path):
    bad = tmp_path / "bad.jinja"
    bad.write_text("{% for %}")
    with pytest.raises(PhiError, match="not valid Jinja"):
        store.register_file(phi3, template=str(bad))


def test_corrupt_registry_is_reported_and_kept(phi3):
    path = store.registry_path()
    path.write_text('{"version": 1, "models": {')
    with pytest.raises(RegistryError, match=str(path)):
        store.register_file(phi3)
    assert path.read_text() == '{"version": 1, "models": {'


def test_remove_unknown_lists_registered(phi3):
    store.register_file(phi3, alias="a")
    with pytest.raises(RegistryError, match="registered: a"):
        store.remove("b")
    store.remove("a")
    assert store.load() == {}


def _register_in_child(args):
    path, alias = args
    store.register_file(path, alias=alias)


def test_parallel_registrations_lose_nothing(phi3):
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        pool.map(_register_in_child, [(str(phi3), f"m{i}") for i in range(20)])
    data = json.loads(store.registry_path().read_text())
    assert sorted(data["models"]) == sorted(f"m{i}" for i in range(20))


def test_cli_register_list_remove(llm_cli, phi3):
    r = llm_cli("phi", "register", phi3, "--alias", "tiny")
    assert r.exit_code == 0, r.output
    assert "Registered" in r.output
    r = llm_cli("phi", "models")
    assert "tiny" in r.output and "phi-3" in r.output
    r = llm_cli("models")
    assert "phi-gguf/tiny" in r.output
    r = llm_cli("phi", "register", phi3, "--alias", "tiny")
    assert r.exit_code == 1 and r.output.count("\n") == 1 and "Error:" in r.output
    r = llm_cli("phi", "remove", "tiny")
    assert r.exit_code == 0 and "Removed tiny" in r.output


def test_cli_bad_files_one_line(llm_cli, tmp_path):
    truncated = tmp_path / "t.gguf"
    write_phi3(truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])
    cases = {truncated: "t.gguf: invalid header: claims 8 tensors, more than the 176 bytes left",
             tmp_path / "nope.gguf": "nope.gguf: no such file",
             write_llama(tmp_path / "l.gguf"): "l.gguf is a GGUF of architecture 'llama', not a Phi model "
                                               "(supported: phi2, phi3, phimoe)"}
    for path, problem in cases.items():
        r = llm_cli("phi", "register", path)
        assert r.exit_code == 1 and r.output.count("\n") == 1 and r.output.startswith("Error: "), r.output
        assert problem in r.output
        assert "register takes a Phi GGUF file; llm phi download or llm phi quantize make one" in r.output


def test_stale_temporaries_of_killed_runs_are_removed(tmp_path):
    import os
    import time

    from llm_phi_gguf.files import STALE_AFTER_S, atomic_output

    out = tmp_path / "m[1].gguf"
    stale, live, other = (tmp_path / f".m[1].gguf.{k}.partial" for k in ("old", "live", "x"))
    for p in (stale, live):
        p.write_bytes(b"x")
    other = tmp_path / ".other.gguf.old.partial"
    other.write_bytes(b"x")
    old = time.time() - STALE_AFTER_S - 60
    os.utime(stale, (old, old))
    os.utime(other, (old, old))
    with atomic_output(out) as tmp:
        tmp.write_bytes(b"done")
    assert out.read_bytes() == b"done"
    assert not stale.exists() and live.exists() and other.exists()
