"""Which transport ``bgagent watch --transport auto`` picks; the SSE transport giving up."""

from __future__ import annotations

import asyncio
import io

import pytest

from bgagent_cli.config import CliConfig
from bgagent_cli.errors import CliError
from bgagent_cli.render import Printer
from bgagent_cli.watch import Transport, choose_transport, watch_sse
from bgagent_testing.servers import free_port

TASK_ID = "01J0000000000000000000000Z"

STACK = CliConfig(query_url="http://q:1", token="tok", nats_url="nats://stack:4222")


@pytest.mark.parametrize(
    ("config", "env", "expected"),
    [
        (STACK, {}, Transport.sse),  # the dev stack: URL and token known, NATS only from the stack file
        (STACK, {"NATS_URL": "nats://n:4222"}, Transport.nats),
        (STACK, {"NATS_CREDS": "/x.creds"}, Transport.nats),
        (STACK, {"NATS_USER": "operator", "NATS_PASSWORD_FILE": "/p"}, Transport.nats),
        (CliConfig(query_url="http://q:1", nats_url="nats://n:4222"), {}, Transport.nats),  # no token
        (CliConfig(token="tok", nats_url="nats://n:4222"), {}, Transport.nats),  # no query URL
        (CliConfig(query_url="http://q:1", token="tok"), {"NATS_URL": ""}, Transport.sse),  # empty = unset
    ],
)
def test_auto_prefers_sse_unless_nats_is_configured_explicitly(
    config: CliConfig, env: dict[str, str], expected: Transport
) -> None:
    assert choose_transport(config, Transport.auto, env) is expected


@pytest.mark.parametrize("requested", [Transport.sse, Transport.nats])
def test_an_explicit_transport_is_kept(requested: Transport) -> None:
    assert choose_transport(CliConfig(), requested, {"NATS_URL": "nats://n:1"}) is requested


async def test_sse_gives_up_with_a_hint_when_query_cannot_be_reached() -> None:
    config = CliConfig(query_url=f"http://127.0.0.1:{free_port()}", token="tok")  # nothing listens there
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(CliError) as caught:
        async with asyncio.timeout(10):
            await watch_sse(config, TASK_ID, Printer(True, out=out, err=err), after=7, reconnect_for_s=0.3)
    assert "could not reconnect" in caught.value.message
    assert caught.value.hint == f"resume with 'bgagent watch {TASK_ID} --after 7'"
    assert out.getvalue() == ""
    assert "reconnecting after seq 7" in err.getvalue()
