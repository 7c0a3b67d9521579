"""The query service: projects the task stream into Postgres read models and serves them over HTTP."""

from .errors import MigrationError, ProjectionLagError, QueryError, RebuildError
from .rebuild import RebuildReport, rebuild, rebuild_from_urls

__all__ = [
    "MigrationError",
    "ProjectionLagError",
    "QueryError",
    "RebuildError",
    "RebuildReport",
    "rebuild",
    "rebuild_from_urls",
]
