"""`llm phi publish` refusals: one line that names the problem and the next step, and nothing
half-published (no commit; for local problems, not even a request to the hub)."""

from __future__ import annotations

import hashlib
import time

from fixtures.hub_fixtures import one_line, split_gguf

REPO = "alice/tiny-phi-gguf"


def writes(hub) -> list:
    return [r for r in hub.requests if r.method in ("POST", "PUT")]


def test_no_token(writer, quants, llm_cli, monkeypatch):
    monkeypatch.delenv("HF_TOKEN")
    error = one_line(llm_cli("phi", "publish", quants["Q4_K_M"].path, "--repo", REPO))
    assert "needs a Hugging Face token with write access" in error
    assert "HF_TOKEN" in error and "hf auth login" in error and f"{writer.url}/settings/tokens" in error
    assert writer.requests == []


def test_token_file_from_hf_auth_login_is_used(writer, quants, llm_cli, monkeypatch, tmp_path):
    import os
    from pathlib import Path

    monkeypatch.delenv("HF_TOKEN")
    Path(os.environ["HF_HOME"]).mkdir(parents=True, exist_ok=True)
    Path(os.environ["HF_HOME"], "token").write_text("hf_alice_write\n")
    result = llm_cli("phi", "publish", quants["Q4_K_M"].path, "--repo", REPO)
    assert result.exit_code == 0, result.output + result.stderr
    assert len(writer.commits) == 1


def test_token_without_write_access(writer, quants, llm_cli, monkeypatch):
    writer.add_writer("hf_bob_write", "bob")
    monkeypatch.setenv("HF_TOKEN", "hf_bob_write")
    error = one_line(llm_cli("phi", "publish", quants["Q4_K_M"].path, "--repo", REPO))
    assert f"no write access to {REPO}" in error
    assert "hf auth login" in error and "--repo YOUR-NAME/tiny-phi-gguf" in error
    assert writer.commits == [] and REPO not in writer.repos


def test_no_write_access_to_an_existing_repo_leaves_it_alone(writer, quants, llm_cli, monkeypatch):
    from fakes.hub_server import FakeRepo

    writer.add(FakeRepo(REPO, {"README.md": b"# alice's\n"}))
    writer.add_writer("hf_bob_write", "bob")
    monkeypatch.setenv("HF_TOKEN", "hf_bob_write")
    error = one_line(llm_cli("phi", "publish", quants["Q4_K_M"].path, "--repo", REPO))
    assert f"no write access to {REPO}" in error
    assert writer.commits == [] and writer.repos[REPO].files == {"README.md": b"# alice's\n"}


def test_a_token_the_hub_refuses(writer, quants, llm_cli, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_revoked")
    error = one_line(llm_cli("phi", "publish", quants["Q4_K_M"].path, "--repo", REPO))
    assert "refused your Hugging Face token" in error and "settings/tokens" in error
    assert writer.commits == []


def test_dataset_and_space_repos_are_refused(writer, quants, llm_cli):
    for target, kind in (("datasets/alice/x", "dataset"), ("https://huggingface.co/spaces/alice/x", "space")):
        error = one_line(llm_cli("phi", "publish", quants["Q4_K_M"].path, "--repo", target))
        assert f"is a {kind} repo" in error and "--repo OWNER/NAME" in error
    error = one_line(llm_cli("phi", "publish", quants["Q4_K_M"].path, "--repo", "not a repo"))
    assert "is not a Hugging Face repo id" in error and "--repo OWNER/NAME" in error
    assert writer.requests == []


def test_missing_file_unknown_alias_and_missing_split_part(writer, quants, tmp_path, llm_cli):
    error = one_line(llm_cli("phi", "publish", quants["Q4_K_M"].path, tmp_path / "gone.gguf", "--repo", REPO))
    assert "gone.gguf does not exist" in error and "llm phi models" in error
    error = one_line(llm_cli("phi", "publish", "no-such-alias", "--repo", REPO))
    assert "neither a GGUF file nor a registered model" in error and "llm phi models" in error
    parts = split_gguf(tmp_path / "split", "tiny-Q4_K_M")
    parts[-1].unlink()
    error = one_line(llm_cli("phi", "publish", parts[0], "--repo", REPO))
    assert f"{parts[-1].name} is missing" in error and "every part in one folder" in error
    assert writer.requests == []


def test_a_broken_quality_report_and_mixed_families(writer, quants, tmp_path, llm_cli):
    q4 = quants["Q4_K_M"]
    q4.report.write_text("{not json")
    error = one_line(llm_cli("phi", "publish", q4.path, "--repo", REPO))
    assert "is not a quality report" in error and "quantization again" in error
    from fixtures.gguf_builders import write_phi3

    other = write_phi3(tmp_path / "phi35.gguf", **{"general.name": "Phi 3.5 mini"})  # family phi-3.5
    error = one_line(llm_cli("phi", "publish", quants["Q8_0"].path, other, "--repo", REPO))
    assert "different Phi families" in error and "its own --repo" in error
    assert writer.requests == []


def test_network_down_mid_upload(writer, quants, llm_cli, monkeypatch):
    """The storage server stops answering: huggingface_hub retries, then gives up; no commit."""
    q4 = quants["Q4_K_M"]
    cut_uploads(writer, monkeypatch, q4.path)
    error = one_line(llm_cli("phi", "publish", q4.path, "--repo", REPO), noise=hub_retry)
    assert "connection to the hub" in error and "nothing was published" in error and "run the command again" in error
    # the repo this command created is left (a rerun does not send the uploaded blobs again), and the line says so
    assert f"{REPO} was created by this command and stays empty" in error and f"/{REPO}/settings" in error
    assert writer.commits == [] and REPO in writer.repos


def test_network_down_mid_upload_to_an_existing_repo(writer, quants, llm_cli, monkeypatch):
    """A repo that was there before is not called new or empty."""
    from fakes.hub_server import FakeRepo

    q4 = quants["Q4_K_M"]
    writer.add(FakeRepo(REPO, {"README.md": b"# alice's\n"}))
    cut_uploads(writer, monkeypatch, q4.path)
    error = one_line(llm_cli("phi", "publish", q4.path, "--repo", REPO), noise=hub_retry)
    assert "connection to the hub" in error and "run the command again" in error
    assert "was created by this command" not in error
    assert writer.commits == [] and writer.repos[REPO].files == {"README.md": b"# alice's\n"}


def cut_uploads(writer, monkeypatch, path) -> None:
    """Every PUT of `path`'s blob is cut, and huggingface_hub's back-off between retries skipped."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    monkeypatch.setattr(writer, "upload_drops", DropAlways({digest}))
    monkeypatch.setattr(time, "sleep", lambda s: None)


def hub_retry(line: str) -> bool:
    """huggingface_hub's retry warnings, two lines a retry: they reach this run's stderr only when
    its logger's handler was made during this run (once a process)."""
    return " thrown while requesting " in line or line.startswith("Retrying in ")


class DropAlways(set):
    """An upload_drops set that never forgets: every PUT of the blob is cut."""

    def discard(self, item) -> None:
        pass


def test_a_repo_card_with_bad_front_matter(writer, quants, llm_cli):
    from fakes.hub_server import FakeRepo

    writer.add(FakeRepo(REPO, {"README.md": b"---\n- just\n- a list\n---\nbody\n"}))
    error = one_line(llm_cli("phi", "publish", quants["Q4_K_M"].path, "--repo", REPO))
    assert "not a YAML mapping" in error and "fix README.md" in error
    assert writer.commits == []


def test_offline(writer, quants, llm_cli, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    error = one_line(llm_cli("phi", "publish", quants["Q4_K_M"].path, "--repo", REPO))
    assert "HF_HUB_OFFLINE is set" in error and "unset HF_HUB_OFFLINE" in error
    result = llm_cli("phi", "publish", quants["Q4_K_M"].path, "--repo", REPO, "--dry-run")
    assert result.exit_code == 0 and "the repo was not read" in result.output
    assert writer.requests == []
