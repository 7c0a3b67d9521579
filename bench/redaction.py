"""What redaction costs: ``bgagent_contracts.redact.redact`` on previews, tool outputs and hostile input.

Every event preview, trace entry, log line and PR text of the runner goes through ``redact``.
Prints the best and median time of N runs per input, next to a baseline measured in the same
run on the same text: one precompiled regular expression (GitHub token shape) substituted once,
the least any pattern-based redactor must do.

Usage: python bench/redaction.py [--runs 5]
"""

from __future__ import annotations

import argparse
import re
import statistics
import time
from collections.abc import Callable

from bgagent_contracts.redact import redact

_BASELINE = re.compile(r"gh[pousr]_[A-Za-z0-9]{36}")
_PYTEST_LINE = "tests/test_app.py::test_case_%d PASSED                                   [ %d%%]\n"


def _inputs() -> dict[str, str]:
    tool_output = "".join(_PYTEST_LINE % (i, i % 100) for i in range(400))[:30_000]
    return {
        "preview (200 chars)": tool_output[:200],
        "tool output (30,000 chars)": tool_output,
        "1 MB letters": "a" * 1_000_000,
        "1 MB 'Authorization: '": "Authorization: " * 66_000,
        "1 MB 'https://a:b@'": "https://a:b@" * 83_000,
        "1 MB 'a_token=x1 '": "a_token=x1 " * 90_000,
        "1 MB unclosed quotes": 'a_token="' * 110_000,
        "1 MB 'eyJa.'": "eyJa." * 200_000,
        "1 MB backslashes": "\\" * 1_000_000,
    }


def _time(fn: Callable[[str], str], text: str, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        started = time.perf_counter()
        fn(text)
        out.append(time.perf_counter() - started)
    return out


def _fmt(seconds: float) -> str:
    return f"{seconds * 1e3:9.3f} ms" if seconds >= 1e-3 else f"{seconds * 1e6:9.1f} µs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    def baseline(text: str) -> str:
        return _BASELINE.sub("[REDACTED]", text)

    print(f"{'input':<28} {'redact best':>12} {'median':>12}   {'baseline best':>13} {'ratio':>7}")
    for name, text in _inputs().items():
        ours = _time(redact, text, args.runs)
        base = _time(baseline, text, args.runs)
        ratio = min(ours) / min(base) if min(base) > 0 else float("inf")
        print(
            f"{name:<28} {_fmt(min(ours)):>12} {_fmt(statistics.median(ours)):>12}"
            f"   {_fmt(min(base)):>13} {ratio:>6.0f}x"
        )


if __name__ == "__main__":
    main()
