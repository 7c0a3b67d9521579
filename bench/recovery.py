"""Recovery from lost runners, on the real stack (processes, nats-server, Postgres, the reconciler).

One task whose every turn runs ``bash: sleep 120``; its runner is SIGKILLed and restarted at once,
five times. Prints:

- runner SIGKILL → attempt n+1's ``task_started`` (attempts 2…5), next to the work consumer's ack
  wait in the same run (goal: ≤ ack wait + 2 s): a killed runner's message comes back when its ack
  wait runs out, counted from the runner's last in-progress ack;
- the fifth SIGKILL → ``task_failed`` ``RUNNER_LOST`` by the reconciler (goal: ≤ 60 s), with the
  heartbeat TTL, the reconciler's grace and interval of the run (production defaults unless given).

The ack wait is shortened to keep the run short (``--ack-wait``, default 10 s; production: 75 s);
every other setting is the production default. Times come from event timestamps stamped on this
machine and the wall clock of the kill.

Usage: python bench/recovery.py [--ack-wait 10] [--heartbeat-ttl 15] [--grace 15] [--interval 5]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bgagent_cli.demo import make_demo_repo
from bgagent_cli.stack import Stack, StackSpec
from bgagent_testing.servers import drop_database, ensure_database

SLEEP = [{"text": "Waiting.", "tool_uses": [{"name": "bash", "input": {"command": "sleep 120"}}]}]


class Bench:
    def __init__(self, stack: Stack) -> None:
        assert stack.state is not None
        self.stack = stack
        self.client = stack.state.client
        self.http = httpx.Client(headers={"Authorization": f"Bearer {self.client['token']}"}, timeout=10)

    def submit(self, repo: Path) -> str:
        token = f"[script-{secrets.token_hex(4)}]"
        r = self.http.post(self.client["model_url"] + "/_scripts", json={"match": token, "turns": SLEEP * 6})
        r.raise_for_status()
        body = {"repo": str(repo), "description": f"wait {token}"}
        r = self.http.post(self.client["api_url"] + "/v1/tasks", json=body)
        r.raise_for_status()
        return str(r.json()["data"]["task_id"])

    def events(self, task_id: str) -> list[dict[str, Any]]:
        r = self.http.get(f"{self.client['query_url']}/v1/tasks/{task_id}/events", params={"limit": 1000})
        if r.status_code == 404:
            return []
        r.raise_for_status()
        return list(r.json()["data"])

    def wait(self, task_id: str, what: str, pred: Any, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = next((e for e in self.events(task_id) if pred(e)), None)
            if found is not None:
                return found
            time.sleep(0.05)
        raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what} on {task_id}")


def _ts(event: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(event["event"]["ts"].replace("Z", "+00:00"))


def run(args: argparse.Namespace) -> None:
    root = Path(tempfile.mkdtemp(prefix="bgagent-recovery-"))
    database_url = f"postgresql://postgres@127.0.0.1:5432/bgagent_bench_{secrets.token_hex(4)}"
    created = asyncio.run(ensure_database(database_url))
    env = {
        "BGAGENT_RUNNER_ACK_WAIT_S": str(args.ack_wait),
        "BGAGENT_HEARTBEAT_TTL_S": str(args.heartbeat_ttl),
        "BGAGENT_RECONCILE_GRACE_S": str(args.grace),
        "BGAGENT_RECONCILE_INTERVAL_S": str(args.interval),
        "BGAGENT_LOG_LEVEL": "WARNING",
    }
    stack = Stack(StackSpec(home=str(root / "home"), database_url=database_url, extra_env=env))
    stack.start()
    try:
        bench = Bench(stack)
        repo = make_demo_repo(stack.spec.repos_dir / "recovery")
        task_id = bench.submit(repo)
        recoveries: list[float] = []
        for attempt in range(1, 6):
            bench.wait(
                task_id,
                f"attempt {attempt}'s tool call",
                lambda e, a=attempt: e["type"] == "tool_called" and e["event"]["attempt"] == a,
                timeout=args.ack_wait + 60,
            )
            killed_at = datetime.now(UTC)
            stack.kill("runner")
            stack.restart("runner")
            if attempt < 5:
                started = bench.wait(
                    task_id,
                    f"attempt {attempt + 1}",
                    lambda e, a=attempt + 1: e["type"] == "task_started" and e["event"]["attempt"] == a,
                    timeout=args.ack_wait + 60,
                )
                recoveries.append((_ts(started) - killed_at).total_seconds())
        failed = bench.wait(task_id, "task_failed", lambda e: e["type"] == "task_failed", timeout=180)
        lost_s = (_ts(failed) - killed_at).total_seconds()
    finally:
        stack.stop()
        if created:
            asyncio.run(drop_database(database_url))
    worst = max(recoveries)
    print(
        f"runner SIGKILL → next attempt's task_started   n={len(recoveries)}  "
        f"min={min(recoveries):5.1f} s  max={worst:5.1f} s   (ack wait {args.ack_wait:.0f} s, same run)"
    )
    print(
        f"  goal ≤ ack wait + 2 s = {args.ack_wait + 2:.0f} s: "
        f"{'met' if worst <= args.ack_wait + 2 else 'MISSED'}"
    )
    print(
        f"fifth SIGKILL → task_failed {failed['event']['code']:<12}      {lost_s:5.1f} s   "
        f"(heartbeat TTL {args.heartbeat_ttl:.0f} s, grace {args.grace:.0f} s, every {args.interval:.0f} s)"
    )
    print(f"  goal ≤ 60 s: {'met' if lost_s <= 60 else 'MISSED'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--ack-wait", type=float, default=10.0)
    parser.add_argument("--heartbeat-ttl", type=float, default=15.0)
    parser.add_argument("--grace", type=float, default=15.0)
    parser.add_argument("--interval", type=float, default=5.0)
    run(parser.parse_args())


if __name__ == "__main__":
    main()
