def test_smoke(writer, quants, llm_cli):
    r = llm_cli("phi", "publish", quants["Q4_K_M"].path, quants["Q8_0"].path, "--repo", "alice/tiny-gguf")
    print(r.output, r.stderr)
    assert r.exit_code == 0
    print(writer.repos["alice/tiny-gguf"].files["README.md"].decode())
    print(writer.repos["alice/tiny-gguf"].files["Modelfile"].decode())
    print(writer.commits)
