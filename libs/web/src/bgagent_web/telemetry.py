"""OpenTelemetry for the HTTP services: Litestar's own plugin (a server span per request)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from litestar.plugins.opentelemetry import OpenTelemetryConfig, OpenTelemetryPlugin

if TYPE_CHECKING:
    from litestar.types import Scope

UNTRACED_PATHS = ["^/(healthz|readyz)$", "^/schema"]
_ID_SEGMENT = re.compile(r"^(?:[0-9A-HJKMNP-TV-Z]{26}|\d+|[0-9a-f]{16,}|[A-Za-z0-9_-]{32,})$", re.IGNORECASE)


def span_details(scope: Scope) -> tuple[str, dict[str, Any]]:
    """Span name and ``http.route`` as ``<METHOD> <path>`` with ids (ULIDs, numbers, long tokens) as
    ``{id}``: a name per route, not per task (Litestar's default names a span by its raw path)."""
    path = str(scope.get("path", "")).strip()
    route = "/".join("{id}" if _ID_SEGMENT.match(part) else part for part in path.split("/"))
    method = str(scope.get("method", "")).strip()
    name = f"{method} {route}" if method else route
    return name, {"http.route": route}


def otel_plugin() -> OpenTelemetryPlugin:
    """A server span per request (W3C ``traceparent`` of the caller honoured), with the global
    providers that ``bgagent_eventstore.telemetry.setup_telemetry`` installs; health probes and the
    schema are not traced, nor the ASGI receive/send steps (one span per request, not per chunk).
    The request span is current while the handler runs, so what it appends to NATS carries it."""
    return OpenTelemetryPlugin(
        OpenTelemetryConfig(
            exclude=UNTRACED_PATHS,
            exclude_spans=["receive", "send"],
            scope_span_details_extractor=span_details,
        )
    )
