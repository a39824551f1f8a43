"""Test set-up shared by every test module.

- Puts tests/ on sys.path so `from fixtures.x import y` works.
- Loads every tests/fixtures/*_fixtures.py as a pytest plugin (each stage keeps its own fixtures).
- Isolates llm's user dir (LLM_USER_PATH) per test and registers our plugin with llm's plugin
  manager (under pytest llm does not load entry points).
"""

from __future__ import annotations

import sys
from pathlib import Path

import llm.plugins
import pytest

import llm_phi_gguf

TESTS = Path(__file__).parent
sys.path.insert(0, str(TESTS))

# llm loads no entry points when it sees sys._called_from_test (its own tests set it): register
# the plugin ourselves, before anything imports llm.cli, whose import runs register_commands.
sys._called_from_test = True
if not llm.plugins.pm.is_registered(llm_phi_gguf):
    llm.plugins.pm.register(llm_phi_gguf, name="llm-phi-gguf")

pytest_plugins = sorted(
    f"fixtures.{p.stem}" for p in (TESTS / "fixtures").glob("*_fixtures.py")
)


@pytest.fixture(autouse=True)
def user_path(tmp_path_factory, monkeypatch):
    path = tmp_path_factory.mktemp("llm-user")
    monkeypatch.setenv("LLM_USER_PATH", str(path))
    return path


@pytest.fixture
def llm_cli():
    """Run `llm ...` in-process; returns (exit_code, stdout, stderr)."""
    from click.testing import CliRunner
    from llm.cli import cli

    def run(*args, input=None):
        result = CliRunner().invoke(cli, [str(a) for a in args], input=input, catch_exceptions=False)
        return result

    return run
