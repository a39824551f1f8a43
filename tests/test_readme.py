"""The README's two top commands stay true: CI runs exactly the README's test command."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    blocks = text.split("```bash\n")[1:3]
    return [b.split("\n```")[0].strip() for b in blocks]


def test_ci_runs_the_readme_test_command():
    demo, tests = readme_commands()
    assert "llm phi demo" in demo
    assert "pytest" in tests
    ci_lines = [l.strip() for l in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert tests in ci_lines


def test_ci_runs_the_tests_in_a_copy_with_nothing_beside_it():
    """CI proves the repository stands alone: the README command runs in a copy of the checkout
    in a new temporary folder (nothing of the workspace beside it), and a failing command fails the script."""
    _, tests = readme_commands()
    lines = [l.strip() for l in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert "set -euo pipefail" in lines
    copy = next(i for i, l in enumerate(lines) if "mktemp -d" in l)
    enter = lines.index('cd "$copy/llm-phi-gguf"')  # its own line: set -e ignores failures inside && lists
    assert copy < enter < lines.index(tests) == len(lines) - 1
