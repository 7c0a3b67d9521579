"""Bearer authentication as a Litestar dependency."""

from __future__ import annotations

from typing import Any

from litestar import Request

from bgagent_contracts.auth import Principal, TokenTable

from .errors import Unauthorized


def principal_dependency(tokens: TokenTable) -> Any:
    """A dependency provider that yields the caller's Principal or raises 401."""

    async def provide(request: Request[Any, Any, Any]) -> Principal:
        who = tokens.authenticate(request.headers.get("Authorization"))
        if who is None:
            raise Unauthorized("missing or unknown bearer token: send 'Authorization: Bearer <token>'")
        return who

    return provide
