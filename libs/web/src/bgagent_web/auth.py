"""Bearer authentication as a Litestar dependency."""

from __future__ import annotations

from typing import Any

from litestar import Request

from bgagent_contracts.auth import Authenticator, Principal

from .errors import Unauthorized


def principal_dependency(tokens: Authenticator) -> Any:
    """A dependency provider that yields the caller's Principal or raises 401.

    ``tokens`` is asked on every request, so a live index (``TokenIndex`` kept current by the token
    watcher) makes a revocation count from the next request on.
    """

    async def provide(request: Request[Any, Any, Any]) -> Principal:
        who = tokens.authenticate(request.headers.get("Authorization"))
        if who is None:
            raise Unauthorized("missing or unknown bearer token: send 'Authorization: Bearer <token>'")
        return who

    return provide
