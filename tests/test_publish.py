"""`llm phi publish` end to end: huggingface_hub's real client against the fake hub's commit API
(tests/fakes/hub_server.py). What the repo holds is checked through huggingface_hub's own reads
(model_info with LFS sha256, hf_hub_download) and the card through huggingface_hub.ModelCard."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
from huggingface_hub import HfApi, ModelCard, hf_hub_download

from fakes.hub_server import FakeRepo
from fixtures.hub_fixtures import one_line, split_gguf
from fixtures.publish_fixtures import MEASURED, TOKEN, write_report

from llm_phi_gguf import ollama_modelfile, store

REPO = "alice/tiny-phi-gguf"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def publish(llm_cli, *args):
    result = llm_cli("phi", "publish", *args)
    assert result.exit_code == 0, result.output + result.stderr
    return result


def api(hub) -> HfApi:
    return HfApi(endpoint=hub.url, token=TOKEN)


def remote_sha256(hub, repo=REPO, revision="main") -> dict[str, str]:
    """path -> sha256 of every file, as huggingface_hub reads the repo (LFS sha256, else the downloaded bytes)."""
    info = api(hub).model_info(repo, revision=revision, files_metadata=True)
    out = {}
    for s in info.siblings:
        if s.lfs:
            out[s.rfilename] = s.lfs.sha256
        else:
            path = hf_hub_download(repo, s.rfilename, revision=revision, endpoint=hub.url, token=TOKEN)
            out[s.rfilename] = sha(Path(path).read_bytes())
    return out


def card(hub, repo=REPO, revision="main") -> ModelCard:
    path = hf_hub_download(repo, "README.md", revision=revision, endpoint=hub.url, token=TOKEN)
    return ModelCard(Path(path).read_text("utf-8"))


def table(text: str) -> dict[str, dict[str, str]]:
    """The card's files table: file name -> {column header: cell}."""
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    headers = [h.strip() for h in lines[0].strip("|").split("|")]
    rows = {}
    for ln in lines[2:]:
        cells = dict(zip(headers, (c.strip() for c in ln.strip("|").split("|"))))
        rows[re.match(r"\[([^\]]+)\]", cells["File"])[1]] = cells
    return rows


def puts(hub, data: bytes) -> int:
    return sum(1 for r in hub.requests if r.method == "PUT" and r.path == f"/upload/{sha(data)}")


def test_repo_holds_exactly_the_files_with_their_sha256(writer, quants, llm_cli):
    q4, q8 = quants["Q4_K_M"], quants["Q8_0"]
    out = publish(llm_cli, q4.path, q8.path, "--repo", REPO).output
    assert f"Published 6 file(s) to {REPO}@main" in out

    local = {p.name: sha(p.read_bytes()) for q in (q4, q8) for p in (q.path, q.report)}
    remote = remote_sha256(writer)
    # .gitattributes is the hub's own, written when it creates a repo
    assert set(remote) == set(local) | {"README.md", "Modelfile", ".gitattributes"}
    assert {k: remote[k] for k in local} == local
    info = api(writer).model_info(REPO, files_metadata=True)
    assert all(s.lfs for s in info.siblings if s.rfilename.endswith(".gguf"))  # GGUFs went through LFS
    assert len(writer.commits) == 1 and writer.commits[0].summary.startswith("Publish Q4_K_M, Q8_0 GGUF")


def test_card_is_a_hub_model_card_whose_numbers_are_the_reports(writer, quants, llm_cli):
    publish(llm_cli, quants["Q4_K_M"].path, quants["Q8_0"].path, "--repo", REPO)
    c = card(writer)
    assert c.data.base_model == "microsoft/Phi-3-mini-4k-instruct"
    assert {"gguf", "llama.cpp", "phi", "phi-3"} <= set(c.data.tags)
    # taken from the source repo's card on the hub
    assert (c.data.license, c.data.pipeline_tag) == ("mit", "text-generation")
    assert c.data.to_dict()["quantized_by"] == "alice"

    rows = table(c.text)
    assert set(rows) == {"tiny-Q4_K_M.gguf", "tiny-Q8_0.gguf"}
    for qtype, q in quants.items():
        report = json.loads(q.report.read_text())["rows"][0]
        row = rows[q.path.name]
        assert row["Type"] == qtype and float(row["Bits per weight"]) == pytest.approx(report["bpw"], abs=0.005)
        for header, key, digits in (("PPL", "ppl", 4), ("KL mean", "kld_mean", 6), ("KL p99", "kld_p99", 6)):
            assert float(row[header]) == pytest.approx(report[key], abs=0.51 * 10**-digits), header
        assert float(row["Top-1"].rstrip("%")) / 100 == pytest.approx(report["top1"], abs=0.0051 / 100)


def test_card_shows_the_hf_template_and_how_to_run_each_file(writer, quants, llm_cli):
    publish(llm_cli, quants["Q4_K_M"].path, quants["Q8_0"].path, "--repo", REPO)
    text = card(writer).text
    # microsoft/Phi-3-mini-4k-instruct's chat template, rendered for a system + user turn
    expected = ("<|system|>\nYou are a helpful assistant.<|end|>\n<|user|>\nCan you introduce .NET?<|end|>\n"
                "<|assistant|>\n")
    assert f"```text\n{expected}```" in text
    for name, alias in (("tiny-Q4_K_M.gguf", "phi-3-q4"), ("tiny-Q8_0.gguf", "phi-3-q8")):
        assert f"llm phi download {REPO} --file {name}\n" in text and f'llm -m {alias} "' in text
        assert f"llama-cli --hf-repo {REPO} --hf-file {name} --jinja" in text
        assert f"ollama create {alias} -f {alias}/Modelfile" in text
    assert "Converter: llm-phi-gguf's streaming converter" in text and "Importance matrix: none" in text
    # these GGUFs carry no template of their own: the card says so and how llama.cpp gets one
    assert "these GGUFs carry none" in text and "--chat-template-file" in text


def test_modelfile_is_the_familys_from_the_first_file(writer, quants, llm_cli):
    publish(llm_cli, quants["Q4_K_M"].path, quants["Q8_0"].path, "--repo", REPO)
    spec = ollama_modelfile.parse_modelfile(writer.repos[REPO].files["Modelfile"].decode())
    family = ollama_modelfile.family_modelfile("phi-3")
    assert spec.from_ == "./tiny-Q4_K_M.gguf"
    assert spec.template == family.template and spec.parameters["stop"] == family.parameters["stop"]


def test_republishing_changes_only_what_changed(writer, quants, llm_cli):
    q4, q8 = quants["Q4_K_M"], quants["Q8_0"]
    publish(llm_cli, q4.path, "--repo", REPO)
    first = dict(writer.repos[REPO].files)

    write_report(q4, Path("source"), ppl=7.5)  # the same file measured again
    out = publish(llm_cli, q4.path, q8.path, "--repo", REPO).output
    assert len(writer.commits) == 2
    assert sorted(writer.commits[1].paths) == sorted(
        ["README.md", "tiny-Q4_K_M.gguf.quality.json", "tiny-Q8_0.gguf", "tiny-Q8_0.gguf.quality.json"])
    assert re.search(r"unchanged +tiny-Q4_K_M\.gguf ", out) and re.search(r"unchanged +Modelfile ", out)
    assert puts(writer, q4.path.read_bytes()) == 1  # sent once, by the first run
    files = writer.repos[REPO].files
    assert files["tiny-Q4_K_M.gguf"] == first["tiny-Q4_K_M.gguf"] and files["Modelfile"] == first["Modelfile"]
    assert table(card(writer).text)["tiny-Q4_K_M.gguf"]["PPL"] == "7.5000"

    again = publish(llm_cli, q4.path, q8.path, "--repo", REPO).output
    assert "already holds these files; nothing was committed" in again and len(writer.commits) == 2


def test_a_failure_mid_upload_leaves_no_commit_and_the_rerun_sends_only_the_rest(writer, quants, llm_cli):
    q4, q8 = quants["Q4_K_M"], quants["Q8_0"]
    writer.fail_upload(q8.path.read_bytes(), 403)  # e.g. the storage URL expired
    error = one_line(llm_cli("phi", "publish", q4.path, q8.path, "--repo", REPO))
    assert "upload to alice/tiny-phi-gguf failed" in error and "nothing was published" in error
    assert "run the command again" in error
    assert writer.commits == [] and set(writer.repos[REPO].files) == {".gitattributes"}

    writer.upload_failures.clear()
    publish(llm_cli, q4.path, q8.path, "--repo", REPO)
    assert len(writer.commits) == 1 and remote_sha256(writer)["tiny-Q8_0.gguf"] == sha(q8.path.read_bytes())
    assert puts(writer, q4.path.read_bytes()) == 1  # stored by the failed run, not sent again


def test_a_dropped_connection_is_retried_into_one_commit(writer, quants, llm_cli):
    q4 = quants["Q4_K_M"]
    writer.drop_upload_once(q4.path.read_bytes())
    publish(llm_cli, q4.path, "--repo", REPO)
    assert puts(writer, q4.path.read_bytes()) == 2 and len(writer.commits) == 1
    assert remote_sha256(writer)["tiny-Q4_K_M.gguf"] == sha(q4.path.read_bytes())


def test_download_of_the_published_repo_gets_the_same_bytes(writer, quants, llm_cli):
    q4 = quants["Q4_K_M"]
    publish(llm_cli, "--repo", REPO, q4.path)
    result = llm_cli("phi", "download", REPO, "--alias", "back")
    assert result.exit_code == 0, result.output + result.stderr
    assert Path(store.get("back").path).read_bytes() == q4.path.read_bytes()


def test_split_model_publishes_every_part_and_downloads_back(writer, tmp_path, llm_cli):
    parts = split_gguf(tmp_path / "split", "tiny-Q4_K_M")
    publish(llm_cli, parts[1], "--repo", REPO)  # any part brings them all
    remote = remote_sha256(writer)
    assert {p.name: sha(p.read_bytes()) for p in parts}.items() <= remote.items()
    assert f"[{parts[0].name}](./{parts[0].name}) (+{len(parts) - 1} parts)" in card(writer).text
    result = llm_cli("phi", "download", REPO, "--alias", "split")
    assert result.exit_code == 0, result.output + result.stderr
    got = Path(store.get("split").path)
    assert [(got.parent / p.name).read_bytes() for p in parts] == [p.read_bytes() for p in parts]


def test_registered_alias_and_imatrix(writer, quants, tmp_path, llm_cli):
    import numpy as np

    from llm_phi_gguf import imatrix

    q4 = quants["Q4_K_M"]
    assert llm_cli("phi", "register", q4.path, "--alias", "mine").exit_code == 0
    im = imatrix.Imatrix({"blk.0.ffn_up.weight": imatrix.Entry(np.ones((1, 64), np.float32), np.ones(1, np.float32))},
                         ["calibration.txt"], 7, 64)
    path = imatrix.save_imatrix(im, tmp_path / "tiny.imatrix.gguf")
    publish(llm_cli, "mine", "--repo", REPO, "--imatrix", path)
    assert remote_sha256(writer)["tiny.imatrix.gguf"] == sha(path.read_bytes())
    assert "Importance matrix: `tiny.imatrix.gguf`: 7 chunks of 64 tokens from calibration.txt" in card(writer).text


def test_user_sections_of_an_existing_card_are_kept(writer, quants, llm_cli):
    mine = ("---\nlicense: apache-2.0\ndatasets:\n- my/data\n---\n# My notes\n\nHand-written intro.\n\n"
            "<!-- llm-phi-gguf:start -->\nold generated text\n<!-- llm-phi-gguf:end -->\n\n## Thanks\n\nTo everyone.\n")
    writer.add(FakeRepo(REPO, {"README.md": mine.encode()}))
    publish(llm_cli, quants["Q4_K_M"].path, "--repo", REPO)
    c = card(writer)
    assert c.data.datasets == ["my/data"] and c.data.base_model == "microsoft/Phi-3-mini-4k-instruct"
    assert c.data.license == "mit"  # ours: the source's license
    assert c.text.lstrip("\n").startswith("# My notes\n\nHand-written intro.\n\n<!-- llm-phi-gguf:start -->")
    assert c.text.endswith("<!-- llm-phi-gguf:end -->\n\n## Thanks\n\nTo everyone.\n")
    assert "old generated text" not in c.text and c.text.count("llm-phi-gguf:start") == 1


def test_revision_commits_to_a_new_branch_and_leaves_main(writer, quants, llm_cli):
    q4 = quants["Q4_K_M"]
    publish(llm_cli, q4.path, "--repo", REPO)
    main = dict(writer.repos[REPO].files)
    publish(llm_cli, q4.path, quants["Q8_0"].path, "--repo", REPO, "--revision", "more-quants")
    assert writer.repos[REPO].files == main
    assert "tiny-Q8_0.gguf" in remote_sha256(writer, revision="more-quants")
    assert [c.revision for c in writer.commits] == ["main", "more-quants"]


def test_private_creates_a_private_repo(writer, quants, llm_cli):
    publish(llm_cli, quants["Q4_K_M"].path, "--repo", REPO, "--private")
    assert writer.repos[REPO].private
    assert api(writer).model_info(REPO).private


def test_dry_run_prints_card_and_files_and_uploads_nothing(writer, quants, llm_cli, monkeypatch):
    monkeypatch.delenv("HF_TOKEN")  # a dry run needs no token
    out = publish(llm_cli, quants["Q4_K_M"].path, "--repo", REPO, "--dry-run").output
    assert out.startswith("---\nbase_model: microsoft/Phi-3-mini-4k-instruct\n")
    assert re.search(r"new +tiny-Q4_K_M\.gguf +\S+ kB +GGUF Q4_K_M", out)
    assert out.rstrip().endswith(f"Dry run: nothing was uploaded to {REPO}@main")
    assert REPO not in writer.repos and not [r for r in writer.requests if r.method in ("POST", "PUT")]
    assert MEASURED["Q4_K_M"]["ppl"] == pytest.approx(float(table(out)["tiny-Q4_K_M.gguf"]["PPL"]), abs=1e-4)


def test_private_does_not_change_an_existing_public_repo_and_says_so(writer, quants, llm_cli):
    publish(llm_cli, quants["Q4_K_M"].path, "--repo", REPO)
    out = publish(llm_cli, quants["Q8_0"].path, "--repo", REPO, "--private").output
    assert "already exists and is public; --private does not change that" in out
    assert not writer.repos[REPO].private


def test_the_card_keeps_listing_files_published_earlier(writer, quants, llm_cli):
    q4, q8 = quants["Q4_K_M"], quants["Q8_0"]
    publish(llm_cli, q4.path, "--repo", REPO)
    publish(llm_cli, q8.path, "--repo", REPO)
    rows = table(card(writer).text)
    assert set(rows) == {q4.path.name, q8.path.name}
    assert rows[q4.path.name]["PPL"] == f"{MEASURED['Q4_K_M']['ppl']:.4f}"  # read back from the repo's report
    assert rows[q4.path.name]["Type"] == "Q4_K_M"
    assert sorted(writer.commits[1].paths) == ["Modelfile", "README.md", "tiny-Q8_0.gguf", "tiny-Q8_0.gguf.quality.json"]
