"""The JetStream adapter of bgagent: append, read, follow, provision."""

from .connect import connect
from .errors import (
    ConcurrencyError,
    NatsAuthError,
    ServerTooOldError,
    StoreError,
    StoreUnavailableError,
    TaskExistsError,
)
from .memory import MemoryEventStore
from .poison import PoisonRecord, list_poison, record_poison
from .provision import ProvisionReport, provision
from .settings import NatsAuth, NatsSettings, env_flag, local_repo_roots
from .store import EventStore, JetStreamEventStore, TaskLog, new_traceparent, read_direct
from .tail import Delivered, follow
from .tokens import TokenBucketMissingError, TokenNotFoundError, TokenStore, TokenWatcher, watch_tokens

__all__ = [
    "ConcurrencyError",
    "Delivered",
    "EventStore",
    "JetStreamEventStore",
    "MemoryEventStore",
    "NatsAuth",
    "NatsAuthError",
    "NatsSettings",
    "PoisonRecord",
    "ProvisionReport",
    "ServerTooOldError",
    "StoreError",
    "StoreUnavailableError",
    "TaskExistsError",
    "TaskLog",
    "TokenBucketMissingError",
    "TokenNotFoundError",
    "TokenStore",
    "TokenWatcher",
    "connect",
    "env_flag",
    "follow",
    "list_poison",
    "local_repo_roots",
    "new_traceparent",
    "provision",
    "read_direct",
    "record_poison",
    "watch_tokens",
]
