"""What the sandbox adds to each agent command: ``BashTool`` with bubblewrap versus without.

The same command runs through the runner's own ``BashTool`` twice per round, once plain (``bash -c``
in the workspace, the baseline: what every command cost before the sandbox) and once in the
sandbox (the ``sh`` prelude with the rlimits, a fresh pids cgroup, ``bwrap`` with new namespaces,
the cgroup removed after). Rounds alternate the two so machine noise hits both alike. Prints the
min and median wall time per command and the added milliseconds next to the baseline; the goal is
≤ 15 ms added per command (printed, never asserted).

Usage: python bench/sandbox_overhead.py [--runs 30]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from bgagent_runner.sandbox import Sandbox, SandboxSettings, probe
from bgagent_runner.tools import BashTool, scrubbed_env

GOAL_MS = 15.0
COMMANDS = ("true", "python3 -c pass")


def _tools(root: Path) -> dict[str, BashTool]:
    repo, home = root / "repo", root / "sandbox" / "home"
    repo.mkdir(parents=True)
    home.mkdir(parents=True)
    env = scrubbed_env(home, workspace=repo)

    def tool(sandbox: Sandbox | None, network: bool = False) -> BashTool:
        return BashTool(
            repo, env, timeout_s=60, output_cap=10_000, sandbox=sandbox, home=home, network=network
        )

    sandbox = Sandbox(SandboxSettings())
    return {
        "plain (baseline)": tool(None),
        "bwrap": tool(sandbox),
        "bwrap, network granted": tool(sandbox, network=True),
    }


async def _once(tool: BashTool, command: str) -> float:
    started = time.perf_counter()
    out = await tool.run({"command": command})
    elapsed = time.perf_counter() - started
    if out.is_error:
        raise SystemExit(f"{command!r} failed: {out.text}")
    return elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    print(probe(SandboxSettings()))
    with tempfile.TemporaryDirectory(prefix="bgagent-bench-") as raw:
        tools = _tools(Path(raw))
        for command in COMMANDS:
            times: dict[str, list[float]] = {name: [] for name in tools}
            for tool in tools.values():  # warm-up: page cache, cgroup parent, imports
                await _once(tool, command)
            for _ in range(args.runs):
                for name, tool in tools.items():
                    times[name].append(await _once(tool, command))
            base_min = min(times["plain (baseline)"]) * 1e3
            base_med = statistics.median(times["plain (baseline)"]) * 1e3
            print(f"\n{command!r}, {args.runs} runs each (ms per command)")
            print(f"  {'':26} {'min':>8} {'median':>8} {'added (min)':>12} {'added (median)':>15}")
            for name, samples in times.items():
                low, mid = min(samples) * 1e3, statistics.median(samples) * 1e3
                added = "" if name.startswith("plain") else f"{low - base_min:12.1f} {mid - base_med:15.1f}"
                print(f"  {name:26} {low:8.1f} {mid:8.1f} {added}")
    print(f"\ngoal: at most {GOAL_MS:g} ms added per command by the sandbox (median)")


if __name__ == "__main__":
    asyncio.run(main())
