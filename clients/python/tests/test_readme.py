"""The README's quick start runs as written against a real server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import Server

README = Path(__file__).resolve().parents[1] / "README.md"


def quick_start() -> str:
    text = README.read_text()
    section = text.split("## Quick start", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "no python block in the README's quick start"
    return match.group(1)


def test_the_readme_example_runs(server: Server) -> None:
    code = quick_start()
    assert 8 <= len(code.strip().splitlines()) <= 15
    env = dict(os.environ, HUBCAST_URL=server.url)
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "market:42 1 {'yes': 0.61}",
        "[('market:42', 2), ('user:7', 1)]",
        "[{'yes': 0.61}, {'yes': 0.62}]",
    ]
