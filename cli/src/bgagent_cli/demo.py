"""``bgagent demo``: the whole system end to end on this machine, in one command."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

DEMO_FILES = {
    "calc.py": 'def add(a, b):\n    """Return the sum of a and b."""\n    return a - b\n',
    "test_calc.py": (
        "import unittest\n\nfrom calc import add\n\n\n"
        "class AddTest(unittest.TestCase):\n"
        "    def test_adds(self):\n        self.assertEqual(add(2, 3), 5)\n\n\n"
        'if __name__ == "__main__":\n    unittest.main()\n'
    ),
    "README.md": "# calc\n\nA tiny library with a failing test.\n",
}

DEMO_DESCRIPTION = "The unit tests fail: make `python3 -m unittest` pass by fixing the bug in calc.py."

# The scripted model plays these turns (the same request shape Claude would get).
DEMO_SCRIPT = [
    {
        "match": "",
        "turns": [
            {
                "text": "I'll start by running the test suite to see what fails.",
                "tool_uses": [
                    {"name": "bash", "input": {"command": "python3 -m unittest -v 2>&1 | tail -20"}}
                ],
            },
            {
                "text": "test_adds expects 5 from add(2, 3); calc.add subtracts. Let me look at it.",
                "tool_uses": [
                    {"name": "str_replace_based_edit_tool", "input": {"command": "view", "path": "calc.py"}}
                ],
            },
            {
                "text": "The operator is wrong; fixing it.",
                "tool_uses": [
                    {
                        "name": "str_replace_based_edit_tool",
                        "input": {
                            "command": "str_replace",
                            "path": "calc.py",
                            "old_str": "    return a - b",
                            "new_str": "    return a + b",
                        },
                    }
                ],
            },
            {
                "text": "Running the tests again.",
                "tool_uses": [
                    {"name": "bash", "input": {"command": "python3 -m unittest -v 2>&1 | tail -20"}}
                ],
            },
            {"text": "Fixed `add` in calc.py (it subtracted instead of adding); the test suite passes now."},
        ],
    }
]


def git(repo: Path, *args: str) -> str:
    env = dict(os.environ, GIT_AUTHOR_NAME="demo", GIT_AUTHOR_EMAIL="demo@localhost")
    env.update(GIT_COMMITTER_NAME="demo", GIT_COMMITTER_EMAIL="demo@localhost")
    out = subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True)
    return out.stdout


def make_demo_repo(root: Path) -> Path:
    """A git repository on branch main with one commit and a failing test."""
    repo = root / "calc"
    repo.mkdir(parents=True)
    for name, text in DEMO_FILES.items():
        (repo / name).write_text(text)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "calc: add()")
    # Let the runner push its branch back into this (non-bare) repository.
    git(repo, "config", "receive.denyCurrentBranch", "updateInstead")
    return repo


def write_script(root: Path) -> Path:
    path = root / "demo-script.json"
    path.write_text(json.dumps(DEMO_SCRIPT, indent=2))
    return path


def demo_root() -> Path:
    return Path(tempfile.mkdtemp(prefix="bgagent-demo-"))
