"""Errors of the query service (translated to HTTP only in api.py).

QueryError
├── MigrationError       a schema migration file is missing, misnamed or failed
├── RebuildError         the stream could not be replayed (missing stream, replay stalled)
└── ProjectionLagError   the projection did not reach a requested ``min_seq`` in time (HTTP 503)
"""

from __future__ import annotations


class QueryError(Exception):
    """Base of every error raised by bgagent_query."""


class MigrationError(QueryError):
    """The schema could not be brought to the latest version."""


class RebuildError(QueryError):
    """The read models could not be rebuilt from the stream."""


class ProjectionLagError(QueryError):
    """The projection is behind the sequence a reader asked for."""

    def __init__(self, wanted: int, reached: int, waited_s: float) -> None:
        self.wanted = wanted
        self.reached = reached
        self.waited_s = waited_s
        super().__init__(
            f"the read model has projected up to seq {reached}, not yet {wanted} "
            f"(waited {waited_s:.1f}s); retry shortly"
        )
