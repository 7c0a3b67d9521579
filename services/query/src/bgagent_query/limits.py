"""The query API's limits: page sizes and the largest sequence, shared by the handlers and the
OpenAPI document."""

from __future__ import annotations

from bgagent_web import openapi as oa

APPROVALS_DEFAULT_LIMIT = 100
APPROVALS_MAX_LIMIT = 500
TASKS_DEFAULT_LIMIT = 50
TASKS_MAX_LIMIT = 500
EVENTS_DEFAULT_LIMIT = 100
EVENTS_MAX_LIMIT = 1000
MAX_SEQ = oa.MAX_SEQ
