"""The catalog (llm_phi_gguf/catalog.py): listed by `llm models` before any download, fetched by the
first prompt through `llm phi download`'s path, with huggingface_hub's real client against the fake
hub (tests/fakes/hub_server.py) and llm's real CLI: GGUF repos, auto-download off, registered
models winning, and offline use of a cache filled file by file (hf_hub_download)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fakes.hub_server import FakeRepo, repo_from_folder
from fixtures.hub_fixtures import cdn_gets, one_line, tiny_gguf

from llm_phi_gguf import store
from llm_phi_gguf.catalog import BY_ALIAS, CATALOG
from llm_phi_gguf.families import BY_KEY

PHI3 = BY_ALIAS["phi-3-q4"]  # a row with Microsoft's own GGUF repo
SHORT = ["-o", "max_tokens", "3", "-o", "temperature", "0"]


def add_phi3_gguf_repo(hub, tmp_path) -> FakeRepo:
    """A fake microsoft/Phi-3-mini-4k-instruct-gguf: its q4 (Q4_K_M) and fp16 files, as tiny GGUFs."""
    files = {PHI3.gguf_file: tiny_gguf(tmp_path / "q4.gguf", "Q4_K_M", "q4"),
             "Phi-3-mini-4k-instruct-fp16.gguf": tiny_gguf(tmp_path / "f16.gguf", "F16", "f16"),
             "README.md": b"# Phi-3-mini-4k-instruct-gguf\n", "Modelfile_q4": b"FROM ./q4.gguf\n"}
    return hub.add(FakeRepo(PHI3.gguf_repo, files))


def snapshot_file(repo: FakeRepo, name: str) -> Path:
    owner, rest = repo.repo_id.split("/")
    return Path(os.environ["HF_HOME"], "hub", f"models--{owner}--{rest}", "snapshots", repo.sha, name)


def test_catalog_rows_are_consistent():
    assert len({r.alias for r in CATALOG}) == len(CATALOG) == 11
    for row in CATALOG:
        family = BY_KEY[row.family]
        assert row.source == family.title and row.source.startswith("microsoft/")
        assert row.alias == store.default_alias(row.family, row.quant)  # what a download registers anyway
        assert (row.gguf_repo is None) == (row.gguf_file is None)
        assert row.gguf_repo is None or row.gguf_repo.startswith("microsoft/")
        assert 0 < row.file_gb <= row.download_gb


def test_llm_models_lists_the_catalog_without_the_network(hub, llm_cli):
    result = llm_cli("models")
    assert result.exit_code == 0, result.output
    for row in CATALOG:
        assert f"phi-gguf/{row.alias} (not downloaded" in result.output
    line = next(l for l in result.output.splitlines() if "phi-gguf/phi-3.5-q4 " in l)
    assert "first use fetches 7.6 GB, keeps 2.4 GB" in line and "aliases: phi-3.5-q4" in line
    assert not hub.requests


def test_a_registered_model_wins_over_the_catalog_row(hub, tmp_path, llm_cli):
    path = tmp_path / "mine.gguf"
    tiny_gguf(path, "Q4_K_M", "mine")
    assert llm_cli("phi", "register", path).exit_code == 0  # default alias: phi-3-q4
    listed = [l for l in llm_cli("models").output.splitlines() if "phi-gguf/phi-3-q4" in l]
    assert len(listed) == 1 and "not downloaded" not in listed[0]
    result = llm_cli("-m", "phi-3-q4", "hi", *SHORT)
    assert result.exit_code == 0, result.output
    assert not hub.requests and result.stderr == ""


def test_first_prompt_downloads_the_official_gguf_registers_and_answers(hub, tmp_path, llm_cli):
    repo = add_phi3_gguf_repo(hub, tmp_path)
    result = llm_cli("-m", "phi-3-q4", "Can you introduce .NET", *SHORT)
    assert result.exit_code == 0, result.output
    announced = result.stderr.strip().splitlines()
    assert len(announced) == 1, result.stderr  # one line (progress bars are off in tests)
    for phrase in ("phi-3-q4 is not downloaded yet", f"{PHI3.gguf_repo} {PHI3.gguf_file} (2.4 GB)", hub.url,
                   str(Path(os.environ["HF_HOME"], "hub")), "Ctrl-C", "LLM_PHI_AUTO_DOWNLOAD=0"):
        assert phrase in announced[0]
    assert result.stdout.strip()  # the answer
    entry = store.get("phi-3-q4")
    cached = snapshot_file(repo, PHI3.gguf_file)
    assert Path(entry.path) == cached and cached.read_bytes() == repo.files[PHI3.gguf_file]
    assert (entry.family, entry.quant) == ("phi-3", "Q4_K_M")
    assert len(cdn_gets(hub)) == 1  # only the q4 file, not the fp16 one

    hub.requests.clear()
    again = llm_cli("-m", "phi-3-q4", "Can you introduce .NET", *SHORT)
    assert again.exit_code == 0 and again.stderr == "" and again.stdout == result.stdout
    assert not hub.requests  # a second prompt downloads nothing, asks nothing
    listed = [l for l in llm_cli("models").output.splitlines() if "phi-gguf/phi-3-q4" in l]
    assert len(listed) == 1 and "not downloaded" not in listed[0]


@pytest.mark.parametrize("how", ["environment", "setting"])
def test_auto_download_off_is_one_line_naming_the_command(how, hub, tmp_path, monkeypatch, llm_cli):
    add_phi3_gguf_repo(hub, tmp_path)
    if how == "environment":
        monkeypatch.setenv("LLM_PHI_AUTO_DOWNLOAD", "0")
    else:
        assert "is off (llm phi auto-download off)" in llm_cli("phi", "auto-download", "off").output
    line = one_line(llm_cli("-m", "phi-3-q4", "hi", *SHORT))
    assert "phi-3-q4 is not downloaded yet and automatic download is off" in line
    assert "run: llm phi download phi-3-q4" in line
    assert ("LLM_PHI_AUTO_DOWNLOAD=0" if how == "environment" else "llm phi auto-download off") in line
    assert not hub.requests
    # the command it names works, and then the prompt does
    result = llm_cli("phi", "download", "phi-3-q4")
    assert result.exit_code == 0, result.output
    assert "Registered" in result.output and store.get("phi-3-q4").quant == "Q4_K_M"
    assert llm_cli("-m", "phi-3-q4", "hi", *SHORT).exit_code == 0


def test_environment_overrides_the_setting(hub, tmp_path, monkeypatch, llm_cli):
    add_phi3_gguf_repo(hub, tmp_path)
    llm_cli("phi", "auto-download", "off")
    monkeypatch.setenv("LLM_PHI_AUTO_DOWNLOAD", "1")
    assert "is on (LLM_PHI_AUTO_DOWNLOAD=1)" in llm_cli("phi", "auto-download").output
    assert llm_cli("-m", "phi-3-q4", "hi", *SHORT).exit_code == 0


def test_models_available_shows_what_is_local(hub, tmp_path, llm_cli):
    add_phi3_gguf_repo(hub, tmp_path)
    before = llm_cli("phi", "models", "--available").output
    assert all(row.alias in before for row in CATALOG) and "registered" not in before
    assert llm_cli("-m", "phi-3-q4", "hi", *SHORT).exit_code == 0
    hub.requests.clear()
    after = llm_cli("phi", "models", "--available").output.splitlines()
    i = next(i for i, l in enumerate(after) if l.startswith("phi-3-q4 "))
    assert PHI3.gguf_repo in after[i] and after[i + 1].strip().startswith("registered: ")
    assert not hub.requests


def per_file_cache(repo: FakeRepo, names) -> None:
    """Fill the cache as transformers' from_pretrained does: hf_hub_download file by file (no tree listing)."""
    from huggingface_hub import hf_hub_download

    for name in names:
        hf_hub_download(repo.repo_id, name, cache_dir=Path(os.environ["HF_HOME"], "hub"), endpoint=os.environ["HF_ENDPOINT"])


def test_offline_first_use_from_a_per_file_cache(hub, tmp_path, monkeypatch, llm_cli):
    repo = add_phi3_gguf_repo(hub, tmp_path)
    per_file_cache(repo, [PHI3.gguf_file])
    assert not list(Path(os.environ["HF_HOME"], "hub").rglob("trees"))  # no cached tree listing
    hub.stop()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = llm_cli("-m", "phi-3-q4", "hi", *SHORT)
    assert result.exit_code == 0, result.output
    assert "from the Hugging Face cache (HF_HUB_OFFLINE is set)" in result.stderr
    assert Path(store.get("phi-3-q4").path) == snapshot_file(repo, PHI3.gguf_file)


def test_offline_download_of_a_checkpoint_from_a_per_file_cache(hub, checkpoint, monkeypatch, llm_cli):
    repo = hub.add(repo_from_folder("owner/ck", checkpoint("phi-3-mini-4k", initializer_range=0.02)))
    per_file_cache(repo, sorted(repo.files))
    hub.stop()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = llm_cli("phi", "download", "owner/ck", "--alias", "ck")
    assert result.exit_code == 0, result.output
    assert store.get("ck").quant == "Q4_K_M"
    missing = one_line(llm_cli("phi", "download", "owner/never-fetched"))
    assert "not in the Hugging Face cache" in missing and "HF_HUB_OFFLINE" in missing


def test_readme_opens_with_the_two_line_path_to_a_catalog_model():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    top = readme.split("```bash\n")[0]  # before the demo and test commands (tests/test_readme.py)
    two_lines = top.split("```sh\n")[1].split("\n```")[0].splitlines()
    assert two_lines[0] == "llm install llm-phi-gguf"
    assert two_lines[1].startswith("llm -m phi-3.5-q4 ") and "phi-3.5-q4" in BY_ALIAS
    for row in CATALOG:  # the Run section's table lists every row
        assert f"| `{row.alias}` |" in readme


def test_llm_help_does_not_load_the_catalog(tmp_path):
    """The startup budget: `llm --help` never runs register_models, so the catalog costs it nothing."""
    import subprocess
    import sys

    code = ("import sys; import llm.plugins, llm_phi_gguf; sys._called_from_test = True; "
            "llm.plugins.pm.register(llm_phi_gguf, name='llm-phi-gguf'); from llm.cli import cli\n"
            "try: cli(['--help'])\nexcept SystemExit: pass\n"
            "print(sorted(m for m in sys.modules if m.startswith('llm_phi_gguf.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "LLM_USER_PATH": str(tmp_path)}).stdout.splitlines()[-1]
    assert "llm_phi_gguf.cli" in out  # the plugin's commands were loaded...
    assert "catalog" not in out and "first_use" not in out and "model'" not in out  # ...but not its models
