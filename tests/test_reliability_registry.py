"""Reliability: 20 processes registering and removing at once through the real CLI.

10 workers each register their own temporary aliases and remove them again (several rounds),
while 10 others register permanent aliases. Afterwards every permanent alias is present, no
temporary one is, and models.json is valid JSON with exactly those entries. (Parallel
registrations alone are in test_store.py.) Each worker is one Python process that runs llm's
click CLI in-process for every command: the same code path as `llm phi register/remove`, with one
interpreter start per worker instead of one per command (2 cores).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from fixtures.gguf_builders import write_phi3

LONG = os.environ.get("PHI_RELIABILITY_LONG") == "1"
ROUNDS = 10 if LONG else 3  # register+remove rounds per temporary worker
WORKERS = 10  # of each kind

WORKER = textwrap.dedent("""
    import sys, time
    from llm.cli import cli

    gguf, role, wid, rounds, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    deadline = time.monotonic() + 120
    while not __import__("os").path.exists(go):  # start together
        if time.monotonic() > deadline:
            sys.exit("the start signal never came")
        time.sleep(0.01)

    def llm(*args):
        try:
            cli.main(["phi", *args], standalone_mode=False)
        except SystemExit as e:
            if e.code:
                raise

    if role == "perm":
        llm("register", gguf, "--alias", f"perm-{wid}")
        llm("register", gguf, "--alias", f"perm-{wid}-b", "--n-ctx", "2048")
    else:
        for r in range(rounds):
            llm("register", gguf, "--alias", f"tmp-{wid}-{r}")
            llm("register", gguf, "--alias", f"tmp-{wid}-{r}-b")
            llm("remove", f"tmp-{wid}-{r}")
            llm("remove", f"phi-gguf/tmp-{wid}-{r}-b")
    print("ok", role, wid)
""")


def test_parallel_register_and_remove_lose_nothing(tmp_path, user_path):
    gguf = write_phi3(tmp_path / "tiny.gguf")
    go = tmp_path / "go"
    env = {**os.environ, "LLM_LOAD_PLUGINS": "llm-phi-gguf", "LLM_USER_PATH": str(user_path)}
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(gguf), role, str(i), str(ROUNDS), str(go)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(WORKERS) for role in ("perm", "tmp")]
    go.touch()
    results = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    failed = [(rc, err[-500:]) for rc, _, err in results if rc != 0]
    assert failed == [], failed
    registry = user_path / "llm-phi-gguf" / "models.json"
    data = json.loads(registry.read_text())  # valid JSON
    permanent = {f"perm-{i}" for i in range(WORKERS)} | {f"perm-{i}-b" for i in range(WORKERS)}
    assert set(data["models"]) == permanent
    assert all(data["models"][f"perm-{i}-b"]["n_ctx"] == 2048 for i in range(WORKERS))
    leftovers = [p.name for p in registry.parent.iterdir() if p.name not in ("models.json", "models.json.lock")]
    assert leftovers == []
    stats = os.environ.get("PHI_RELIABILITY_STATS")
    if stats:
        with open(stats, "a") as f:
            f.write(json.dumps({"test": "parallel_register_remove", "processes": 2 * WORKERS,
                                "commands": WORKERS * 2 + WORKERS * ROUNDS * 4, "lost": 0, "resurrected": 0}) + "\n")
