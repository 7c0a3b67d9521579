"""``python -m bgagent_testing.fake_github --port P --root DIR --token T``: the fake GitHub as a process.

Prints ``listening on <url>`` on stdout once it serves; writes BGAGENT_READY_FILE (if set) then too.
Stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from .server import FakeGitHub


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bgagent_testing.fake_github", description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="TCP port (0: a free one)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--root", required=True, help="directory holding the bare repositories")
    parser.add_argument("--token", default=os.environ.get("GITHUB_TOKEN", "ghs_fake_token"))
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=os.environ.get("BGAGENT_LOG_LEVEL", "INFO").upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with FakeGitHub(Path(args.root), token=args.token, host=args.host, port=args.port) as gh:
        sys.stdout.write(f"listening on {gh.url}\n")
        sys.stdout.flush()
        ready = os.environ.get("BGAGENT_READY_FILE")
        if ready:
            Path(ready).write_text(gh.url)
        stop.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
