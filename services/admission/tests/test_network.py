"""``network: true`` on POST /v1/tasks: refused by default, recorded where the server allows it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
from nats.aio.client import Client

from bgagent_admission.api import create_app
from bgagent_admission.handlers import Admission
from bgagent_admission.requests import CreateTaskBody, validate_create
from bgagent_admission.settings import Settings, SettingsError
from bgagent_contracts import TaskSubmitted
from bgagent_contracts.auth import TokenTable
from bgagent_eventstore import JetStreamEventStore

ALICE = {"Authorization": "Bearer alice-token"}
BODY = {"repo": "acme/widgets", "description": "fetch the deps", "network": True}


async def _client(admission: Admission, nc: Client, *, allow: bool | None) -> httpx.AsyncClient:
    async def ready() -> bool:
        return bool(nc.is_connected)

    tokens = TokenTable.parse("alice-token=alice")
    if allow is None:  # the default: what __main__ passes without BGAGENT_ALLOW_TASK_NETWORK
        app = create_app(admission, tokens=tokens, ready=ready)
    else:
        app = create_app(admission, tokens=tokens, ready=ready, allow_task_network=allow)
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=transport, base_url="http://admission")


@pytest.fixture
async def open_client(admission: Admission, nc: Client) -> AsyncIterator[httpx.AsyncClient]:
    async with await _client(admission, nc, allow=True) as c:
        yield c


@pytest.mark.integration
@pytest.mark.parametrize("allow", [None, False])
async def test_network_is_refused_with_400_naming_the_field_and_nothing_appended(
    admission: Admission, nc: Client, stream_count: Callable[[], Awaitable[int]], allow: bool | None
) -> None:
    before = await stream_count()
    async with await _client(admission, nc, allow=allow) as client:
        r = await client.post("/v1/tasks", json=BODY, headers=ALICE)
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert "network" in error["message"]
    assert "not allowed" in error["message"]
    assert await stream_count() == before


@pytest.mark.integration
async def test_network_false_or_absent_is_accepted_and_recorded_as_false(
    client: httpx.AsyncClient, event_store: JetStreamEventStore
) -> None:
    for body in ({**BODY, "network": False}, {"repo": "acme/widgets", "description": "x"}):
        r = await client.post("/v1/tasks", json=body, headers=ALICE)
        assert r.status_code == 201, r.text
        log = await event_store.read(r.json()["data"]["task_id"])
        event = log.records[0].event
        assert isinstance(event, TaskSubmitted)
        assert event.network is False


@pytest.mark.integration
async def test_network_is_recorded_where_the_server_allows_it(
    open_client: httpx.AsyncClient, event_store: JetStreamEventStore
) -> None:
    r = await open_client.post("/v1/tasks", json=BODY, headers=ALICE)
    assert r.status_code == 201, r.text
    event = (await event_store.read(r.json()["data"]["task_id"])).records[0].event
    assert isinstance(event, TaskSubmitted)
    assert event.network is True


@pytest.mark.integration
async def test_an_idempotency_key_reused_with_another_network_value_is_refused(
    open_client: httpx.AsyncClient,
) -> None:
    headers = {**ALICE, "Idempotency-Key": "net-1"}
    first = await open_client.post("/v1/tasks", json=BODY, headers=headers)
    assert first.status_code == 201
    again = await open_client.post("/v1/tasks", json=BODY, headers=headers)
    assert again.status_code == 200
    assert again.json()["data"]["task_id"] == first.json()["data"]["task_id"]
    other = await open_client.post("/v1/tasks", json={**BODY, "network": False}, headers=headers)
    assert other.status_code == 409, other.text
    assert other.json()["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"


@pytest.mark.integration
async def test_network_must_be_a_boolean(open_client: httpx.AsyncClient) -> None:
    r = await open_client.post("/v1/tasks", json={**BODY, "network": "yes"}, headers=ALICE)
    assert r.status_code == 400
    assert r.json()["error"]["message"].startswith("network")


def test_validate_create_passes_the_servers_permission_through() -> None:
    body = CreateTaskBody(repo="acme/widgets", description="x", network=True)
    assert validate_create(body, allow_network=True).network is True


@pytest.mark.parametrize(("raw", "allowed"), [(None, False), ("false", False), ("true", True), ("1", True)])
def test_the_setting_comes_from_bgagent_allow_task_network(raw: str | None, allowed: bool) -> None:
    env = {"BGAGENT_API_TOKENS": "a=b"}
    if raw is not None:
        env["BGAGENT_ALLOW_TASK_NETWORK"] = raw
    assert Settings.from_env(env).allow_task_network is allowed


def test_a_bad_value_of_the_setting_names_it() -> None:
    with pytest.raises(SettingsError, match="BGAGENT_ALLOW_TASK_NETWORK"):
        Settings.from_env({"BGAGENT_API_TOKENS": "a=b", "BGAGENT_ALLOW_TASK_NETWORK": "perhaps"})
