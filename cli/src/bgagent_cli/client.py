"""HTTP calls to admission (writes) and query (reads), with the error envelope turned into CliError."""

from __future__ import annotations

from typing import Any

import httpx

from .config import CliConfig
from .errors import ApiCallError, CliError, NotConfiguredError

_HINTS = {
    "UNAUTHORIZED": "set BGAGENT_TOKEN to a token listed in the server's BGAGENT_API_TOKENS",
    "NOT_FOUND": "check the task id with 'bgagent list'",
    "TASK_ALREADY_TERMINAL": "the task has ended; see 'bgagent status <id>'",
    "VALIDATION_ERROR": "fix the named field and try again",
    "IDEMPOTENCY_KEY_REUSED": "use a new --idempotency-key for a different request",
    "REQUEST_ALREADY_DECIDED": "someone decided first, or the deadline passed; see 'bgagent status <task>'",
    "TASK_NOT_AWAITING_APPROVAL": "the task is not waiting on this request (was it cancelled?)",
    "RATE_LIMITED": "too many decisions in the last minute; wait a little and try again",
}


def error_from(response: httpx.Response, body: Any) -> ApiCallError:
    """The error envelope of a 4xx/5xx answer (``body``: its parsed JSON, or None) as an ApiCallError."""
    err = body.get("error", {}) if isinstance(body, dict) else {}
    err = err if isinstance(err, dict) else {}
    code = str(err.get("code") or f"HTTP_{response.status_code}")
    message = str(err.get("message") or response.text[:200])
    return ApiCallError(response.status_code, code, message, err.get("request_id"), _HINTS.get(code))


class Api:
    """Thin client; one httpx.Client for the process."""

    def __init__(self, config: CliConfig, timeout: float = 15.0) -> None:
        self._config = config
        self._http = httpx.Client(timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        if not self._config.token:
            raise NotConfiguredError(
                "no API token", hint="set BGAGENT_TOKEN, or start the local stack with 'bgagent dev up'"
            )
        headers = {"Authorization": f"Bearer {self._config.token}"}
        headers.update(extra or {})
        return headers

    def _url(self, base: str | None, path: str, what: str, env_name: str) -> str:
        if not base:
            raise NotConfiguredError(
                f"no {what} URL", hint=f"set {env_name}, or start the local stack with 'bgagent dev up'"
            )
        return base.rstrip("/") + path

    def _call(self, method: str, url: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            raise CliError(
                f"cannot reach {url}: {exc}",
                hint="is the service running? ('bgagent dev up' starts a local stack)",
            ) from exc
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code >= 400:
            raise error_from(response, body)
        return body

    def write(self, path: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
        url = self._url(self._config.api_url, path, "admission API", "BGAGENT_API_URL")
        return self._call("POST", url, json=body, headers=self._headers(headers))

    def read(self, path: str, params: dict[str, Any] | None = None) -> Any:
        url = self._url(self._config.query_url, path, "query API", "BGAGENT_QUERY_URL")
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        return self._call("GET", url, params=clean, headers=self._headers())
