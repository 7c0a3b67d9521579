"""How soon a revoked managed token stops authenticating in a service's in-memory index.

Starts its own nats-server, provisions the buckets, and N times: creates a token as the
admin would, waits until a service-side index (``watch_tokens`` on its own connection, as
admission and query run it) authenticates it, then times ``TokenStore.revoke`` → the index
refusing it (polled every 1 ms). Prints the figures next to a baseline measured in the same
run: a plain KV put → a KV watcher on another connection receiving the update.

Usage: python bench/token_revocation.py [--runs 50]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bgagent_contracts.auth import TokenIndex, TokenTable
from bgagent_eventstore import NatsSettings, TokenStore, connect, provision, watch_tokens
from bgagent_testing.servers import NatsServer


def show(label: str, values: list[float]) -> None:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    print(
        f"{label:<46} n={len(values):<4} p50={statistics.median(values):6.2f} ms  "
        f"p90={p90:6.2f} ms  max={max(values):6.2f} ms"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    with NatsServer() as server:
        settings = NatsSettings(url=server.url)
        admin = await connect(settings.url, name="bench-admin")
        service = await connect(settings.url, name="bench-service")
        try:
            await provision(admin.jetstream(), settings)

            # baseline: KV put → watcher on another connection
            kv_w = await admin.jetstream().create_key_value(bucket="bench_baseline", history=1)
            kv_r = await service.jetstream().key_value("bench_baseline")
            watcher = await kv_r.watch("k")
            updates: Callable[..., Awaitable[Any]] = watcher.updates  # nats-py leaves it untyped
            while await updates(timeout=5) is not None:  # drain the initial values
                pass
            base: list[float] = []
            for i in range(args.runs):
                started = time.perf_counter()
                await kv_w.put("k", str(i).encode())
                entry = await updates(timeout=5)
                if entry is None or entry.value != str(i).encode():
                    raise SystemExit(f"the KV watcher missed put {i}")
                base.append((time.perf_counter() - started) * 1000)
            stop: Callable[[], Awaitable[None]] = watcher.stop
            await stop()

            store = TokenStore(admin.jetstream(), settings.prefix)
            index = TokenIndex(TokenTable.parse(""))
            tokens = await watch_tokens(service.jetstream(), settings.prefix, index)
            revoked: list[float] = []
            try:
                for _ in range(args.runs):
                    token, record = await store.create("bench")
                    deadline = time.monotonic() + 10
                    while index.authenticate(f"Bearer {token}") is None:
                        if time.monotonic() > deadline:
                            raise SystemExit("a new token never reached the index")
                        await asyncio.sleep(0.001)
                    started = time.perf_counter()
                    await store.revoke(record.token_id)
                    while index.authenticate(f"Bearer {token}") is not None:
                        if time.perf_counter() - started > 10:
                            raise SystemExit("a revoked token still authenticates after 10 s")
                        await asyncio.sleep(0.001)
                    revoked.append((time.perf_counter() - started) * 1000)
            finally:
                await tokens.close()
        finally:
            await service.close()
            await admin.close()
    print(f"managed token revocation ({args.runs} runs; one nats-server, two connections)")
    show("baseline: KV put → KV watcher update", base)
    show("revoke() → service index refuses (1 ms poll)", revoked)


if __name__ == "__main__":
    asyncio.run(main())
