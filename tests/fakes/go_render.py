"""Python side of tests/fakes/ollama_render (a Go program): build it, and render chat requests
into the prompts Ollama's /api/chat would build, in one process per batch.

`go` comes from Debian's golang-go (.ci/run installs it); the build uses only the standard
library, so it needs no network (GOPROXY=off).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

SOURCE = Path(__file__).parent / "ollama_render"


class GoMissing(RuntimeError):
    pass


def build(out_dir: Path) -> Path:
    """Compile the harness into out_dir; returns the binary's path."""
    go = shutil.which("go")
    if go is None:
        raise GoMissing("`go` not found: install Debian's golang-go (apt-get install -y golang-go), "
                        "as .ci/run does")
    binary = Path(out_dir) / "ollama_render"
    # Go's own build cache (GOCACHE) is kept: a second session builds in about a second.
    env = {**os.environ, "GOPROXY": "off", "GOTOOLCHAIN": "local", "CGO_ENABLED": "0"}
    subprocess.run([go, "build", "-o", str(binary), "."], cwd=SOURCE, env=env, check=True,
                   capture_output=True, timeout=600)
    return binary


class Renderer:
    """render(cases) -> results; each case is a dict with template, system, messages, tools,
    think (None, True or False); each result has prompt, error, vars, capabilities,
    thinking_tags and tool_tag."""

    def __init__(self, binary: Path):
        self.binary = binary

    def render(self, cases: list[dict]) -> list[dict]:
        payload = json.dumps({"cases": cases}, ensure_ascii=False).encode()
        done = subprocess.run([str(self.binary)], input=payload, capture_output=True, timeout=600)
        if done.returncode:
            raise RuntimeError(f"ollama_render failed: {done.stderr.decode(errors='replace').strip()}")
        return json.loads(done.stdout)

    def prompt(self, template: str, messages: list[dict], system: str | None = None, **extra) -> str:
        (result,) = self.render([{"template": template, "system": system or "", "messages": messages, **extra}])
        if result.get("error"):
            raise ValueError(result["error"])
        return result["prompt"]

    def info(self, template: str) -> dict:
        (result,) = self.render([{"template": template, "messages": []}])
        return result
