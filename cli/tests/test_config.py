from __future__ import annotations

import json
from pathlib import Path

from bgagent_cli.config import CliConfig


def test_environment_wins_over_the_dev_stack_file(tmp_path: Path) -> None:
    stack = tmp_path / "dev" / "stack.json"
    stack.parent.mkdir(parents=True)
    stack.write_text(
        json.dumps({"client": {"api_url": "http://stack:1", "token": "stack-token", "prefix": "p"}})
    )
    config = CliConfig.load({"BGAGENT_HOME": str(tmp_path), "BGAGENT_TOKEN": "env-token"})
    assert config.api_url == "http://stack:1"
    assert config.token == "env-token"
    assert config.prefix == "p"


def test_nothing_configured_gives_empty_urls(tmp_path: Path) -> None:
    config = CliConfig.load({"BGAGENT_HOME": str(tmp_path)})
    assert config.api_url is None
    assert config.token is None
    assert config.nats_url is None
    assert config.stream == "BGAGENT_TASKS"
