"""The code passes the linter with the project's settings (pyproject.toml), so a change that
leaves an unused import, a shadowed loop variable or unsorted imports fails here, not in review."""
from __future__ import annotations

import subprocess
import sys

from tests.helpers.specs import REPO


def test_ruff_finds_nothing():
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", "."],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-1000:]
