"""Where readers record the messages they skip, so an operator sees them.

The query service keeps its own table (``poison_messages``); fanout and the runner write
one KV entry per skipped message, ``<reader>.<seq>``, in the poison bucket (kept 30 days).
Recording is best effort: a reader never stops or retries because the record failed.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import msgspec
import nats.errors
import nats.js.errors
from nats.js import JetStreamContext

from bgagent_contracts.subjects import poison_bucket

logger = logging.getLogger(__name__)

POISON_TTL_S = 30 * 86400.0
MAX_REASON_CHARS = 2000


class PoisonRecord(msgspec.Struct, frozen=True, kw_only=True):
    reader: str
    seq: int
    subject: str
    reason: str
    size_bytes: int
    recorded_at: datetime


async def record_poison(
    js: JetStreamContext, prefix: str, *, reader: str, seq: int, subject: str, reason: str, size_bytes: int
) -> None:
    """Log the skipped message and store it in the poison bucket; never raises."""
    logger.warning("%s skipped poison message seq=%d subject=%.200s: %s", reader, seq, subject, reason)
    record = PoisonRecord(
        reader=reader,
        seq=seq,
        subject=subject[:1000],
        reason=reason[:MAX_REASON_CHARS],
        size_bytes=size_bytes,
        recorded_at=datetime.now(UTC),
    )
    try:
        kv = await js.key_value(poison_bucket(prefix))
        await kv.put(f"{reader}.{seq}", msgspec.json.encode(record))
    except (nats.errors.Error, nats.js.errors.Error, OSError) as exc:
        logger.warning("could not record poison message seq=%d in the poison bucket: %r", seq, exc)


async def list_poison(js: JetStreamContext, prefix: str) -> list[PoisonRecord]:
    """Every recorded poison message, oldest sequence first (empty when none or not provisioned)."""
    try:
        kv = await js.key_value(poison_bucket(prefix))
        keys = await kv.keys()
    except (nats.js.errors.BucketNotFoundError, nats.js.errors.NoKeysError):
        return []
    out: list[PoisonRecord] = []
    for key in keys:
        try:
            entry = await kv.get(key)
        except nats.js.errors.KeyNotFoundError:
            continue
        if entry.value:
            out.append(msgspec.json.decode(entry.value, type=PoisonRecord))
    return sorted(out, key=lambda r: (r.seq, r.reader))
