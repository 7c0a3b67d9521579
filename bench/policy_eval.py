"""What a policy decision costs: ``PolicyEngine.evaluate`` with the policy sets built once, vs per call.

Every tool call of the agent goes through ``evaluate`` before it runs. Measured in the same run on
the same mixed workload (allowed, gated, hard-denied bash commands and file edits/views):

- reused: one ``PolicyEngine.load()``, then ``evaluate()`` per call (what the runner does);
- parse per call: the same two Cedar sets handed to cedarpy as policy text on every call, so
  Cedar parses them each time (evaluation order as in the engine, no annotation checks);
- load per call: ``PolicyEngine.load()`` + ``evaluate()`` per call (read, check and build everything).

Goal: p99 of the reused engine <= 0.2 ms.

Usage: python bench/policy_eval.py [--calls 4000]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Mapping
from importlib import resources
from typing import Any

import cedarpy

from bgagent_policy import PolicyEngine, cedar_request

GOAL_P99_S = 0.2e-3
EDIT = "str_replace_based_edit_tool"
WORKLOAD: list[tuple[str, dict[str, Any]]] = [
    ("bash", {"command": "pytest -q tests/"}),
    ("bash", {"command": "git push origin main"}),
    ("bash", {"command": "rm -rf /"}),
    ("bash", {"command": "git push --force origin feature"}),
    (EDIT, {"command": "create", "path": "/workspace/repo/src/app.py", "file_text": "x = 1\n"}),
    (EDIT, {"command": "str_replace", "path": ".env", "old_str": "a", "new_str": "b"}),
    (EDIT, {"command": "view", "path": "/workspace/repo/README.md"}),
    (EDIT, {"command": "create", "path": "/workspace/repo/.git/config", "file_text": ""}),
]


def _policy_texts() -> tuple[str, str]:
    root = resources.files("bgagent_policy") / "policies"
    base = "\npermit(principal, action, resource);\n"
    return (root / "hard_deny.cedar").read_text() + base, (root / "hard_gate.cedar").read_text() + base


def _parse_per_call(deny_text: str, gate_text: str) -> Callable[[str, Mapping[str, Any]], str]:
    def decide(tool: str, tool_input: Mapping[str, Any]) -> str:
        request = cedar_request(tool, tool_input)
        if not cedarpy.is_authorized(request, deny_text, []).allowed:
            return "deny"
        return "allow" if cedarpy.is_authorized(request, gate_text, []).allowed else "require_approval"

    return decide


def _time(fn: Callable[[str, Mapping[str, Any]], object], calls: int) -> list[float]:
    for tool, tool_input in WORKLOAD:  # warm up
        fn(tool, tool_input)
    out = []
    for n in range(calls):
        tool, tool_input = WORKLOAD[n % len(WORKLOAD)]
        started = time.perf_counter()
        fn(tool, tool_input)
        out.append(time.perf_counter() - started)
    return out


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _row(name: str, samples: list[float]) -> str:
    p50, p99, mean = _pct(samples, 0.50), _pct(samples, 0.99), statistics.fmean(samples)
    return f"  {name:<36} p50 {p50 * 1e3:7.3f} ms   p99 {p99 * 1e3:7.3f} ms   mean {mean * 1e3:7.3f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=4000)
    args = parser.parse_args()

    engine = PolicyEngine.load()
    reused = _time(engine.evaluate, args.calls)
    parsed = _time(_parse_per_call(*_policy_texts()), args.calls)
    loaded = _time(lambda t, i: PolicyEngine.load().evaluate(t, i), max(200, args.calls // 10))

    print(f"policy evaluation ({len(engine.rules())} starter rules, {len(WORKLOAD)}-call mixed workload)")
    print(_row(f"reused engine ({args.calls} calls)", reused))
    print(_row(f"policy text parsed per call ({args.calls})", parsed))
    print(_row(f"load() per call ({max(200, args.calls // 10)} calls)", loaded))
    p99 = _pct(reused, 0.99)
    verdict = "met" if p99 <= GOAL_P99_S else "MISSED"
    print(f"  goal p99 <= {GOAL_P99_S * 1e3:.1f} ms with the reused engine: {verdict} ({p99 * 1e3:.3f} ms)")
    print(f"  per-call parsing costs {_pct(parsed, 0.5) / _pct(reused, 0.5):.1f}x the reused engine at p50")


if __name__ == "__main__":
    main()
