"""The README's "Use it from the OpenAI SDK / the Anthropic SDK / the AI SDK" examples, run as written (each
fenced block under its heading) against the functions served as deployed, with an API key of a funded user.
A changed example is tested as changed; an example that stops working fails here."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.v1server import Server, ai_sdk_fixture, charges, server_fixture, settled_books  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


def example(heading: str, language: str) -> str:
    """The first fenced block of `language` under the README's `### heading`."""
    text = README.read_text(encoding="utf-8")
    section = text.split(f"### {heading}\n", 1)[1].split("\n### ", 1)[0].split("\n## ", 1)[0]
    found = re.search(rf"```{language}\n(.*?)```", section, re.DOTALL)
    assert found, f"no {language} block under '### {heading}' in README.md"
    return found.group(1)


def run(server: Server, key: str, command: list[str], cwd: Path) -> str:
    env = os.environ | {"ASSISTANT_URL": server.url, "ASSISTANT_API_KEY": key}
    out = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.parametrize("heading", ["Use it from the OpenAI SDK", "Use it from the Anthropic SDK"])
def test_the_python_sdk_examples_run(server: Server, heading: str, tmp_path: Path) -> None:
    user = server.db.make_user(balance=5)
    script = tmp_path / "example.py"
    script.write_text(example(heading, "python"), encoding="utf-8")
    printed = run(server, server.key(user), [sys.executable, str(script)], tmp_path)
    assert printed.count("[offline development model: not a real model]") == 2
    assert re.search(r"\n\d+ tokens (in, \d+ )?out\n$", printed), printed
    assert len(charges(server.db, user)) == 2
    settled_books(server.db, user)


def test_the_ai_sdk_example_runs(server: Server, ai_sdk: Path) -> None:
    user = server.db.make_user(balance=5)
    script = ai_sdk / f"readme-example-{os.getpid()}.mjs"  # inside the harness, so its node_modules resolve
    script.write_text(example("Use it from the AI SDK", "js"), encoding="utf-8")
    try:
        printed = run(server, server.key(user), ["node", script.name], ai_sdk)
    finally:
        script.unlink()
    assert "You said: Explain a LEFT JOIN." in printed and re.search(r"\n\d+ tokens out\n$", printed), printed
    assert len(charges(server.db, user)) == 1
    settled_books(server.db, user)
