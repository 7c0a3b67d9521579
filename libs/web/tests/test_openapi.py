"""The OpenAPI documents of admission and query: valid OpenAPI 3.1, true to the routes, examples that
validate, errors documented with the codes they carry. (What the running services really answer is
fuzzed against these documents in tests/e2e/test_fuzz_openapi.py.)"""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator
from litestar import Litestar
from openapi_spec_validator import validate
from openapi_spec_validator.validation import OpenAPIV31SpecValidator

from bgagent_admission import api as admission_api
from bgagent_admission.requests import CancelBody, CreateTaskBody, NudgeBody
from bgagent_contracts.auth import TokenTable
from bgagent_contracts.decide import MAX_NUDGE_CHARS
from bgagent_contracts.events import MAX_NUMBER
from bgagent_contracts.submission import (
    BUDGET_RANGE_USD,
    MAX_DESCRIPTION_CHARS,
    MAX_REASON_CHARS,
    MAX_REPO_CHARS,
    MAX_TURNS_RANGE,
)
from bgagent_query import api as query_api
from bgagent_web import CODES, openapi

TOKENS = TokenTable.parse("tok=alice")
METHODS = {"get", "post", "put", "patch", "delete"}


async def _ready() -> bool:
    return True


def _admission_app(**kwargs: Any) -> Litestar:
    # The Admission object is only used by requests to /v1; these tests never send one.
    return admission_api.create_app(object(), tokens=TOKENS, ready=_ready, **kwargs)  # type: ignore[arg-type]


def _query_app() -> Litestar:
    return query_api.create_app(pool=object(), watch=object(), tokens=TOKENS, prefix="p", ready=_ready)  # type: ignore[arg-type]


APPS = {"admission": _admission_app, "query": _query_app}


async def _served(app: Litestar) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
        response = await client.get("/schema/openapi.json")
        page = await client.get("/schema")
    assert page.status_code == 200
    assert "/schema/openapi.json" in page.text
    return response


@pytest.fixture(params=sorted(APPS))
async def served(request: pytest.FixtureRequest) -> tuple[str, Litestar, dict[str, Any]]:
    app = APPS[request.param]()
    response = await _served(app)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/vnd.oai.openapi+json")
    return request.param, app, response.json()


def _operations(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method.upper(), path): op
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if method in METHODS
    }


def _validator(doc: dict[str, Any], pointer: str) -> Draft202012Validator:
    """A JSON Schema validator for the schema at ``pointer`` inside ``doc`` (its $refs resolve in doc)."""
    root = {**doc, "$ref": pointer}
    return Draft202012Validator(root, format_checker=Draft202012Validator.FORMAT_CHECKER)


def _escape(part: str) -> str:
    return part.replace("~", "~0").replace("/", "~1")


# --- the documents as documents ---------------------------------------------------------------------


async def test_documents_are_valid_openapi_3_1(served: tuple[str, Litestar, dict[str, Any]]) -> None:
    name, _, doc = served
    assert doc["openapi"] == "3.1.0"
    validate(doc, cls=OpenAPIV31SpecValidator)
    assert doc["info"]["title"] == f"bgagent {name}"
    assert doc["info"]["version"] == version(f"bgagent-{name}")


def test_admission_document_is_valid_with_local_repositories_too() -> None:
    local = admission_api.openapi_document(local_repos=True, max_body_bytes=1024)
    slugs = admission_api.openapi_document(local_repos=False, max_body_bytes=1024)
    assert validate(local, cls=OpenAPIV31SpecValidator) is None
    assert local["paths"]["/v1/tasks"] != slugs["paths"]["/v1/tasks"], "local repos change the repo pattern"


async def test_every_route_is_documented_and_every_documented_route_exists(
    served: tuple[str, Litestar, dict[str, Any]],
) -> None:
    _, app, doc = served
    routes = {
        (method, route.path_format)
        for route in app.routes
        for method in getattr(route, "methods", ())
        if method not in ("OPTIONS", "HEAD") and not route.path_format.startswith(openapi.SCHEMA_PATH)
    }
    assert routes == set(_operations(doc))
    for (_, path), op in _operations(doc).items():
        in_path = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
        assert in_path == {part[1:-1] for part in path.split("/") if part.startswith("{")}, path


async def test_v1_routes_need_the_bearer_token_health_routes_are_open(
    served: tuple[str, Litestar, dict[str, Any]],
) -> None:
    _, _, doc = served
    assert doc["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": doc["components"]["securitySchemes"]["bearer"]["description"],
    }
    for (_, path), op in _operations(doc).items():
        if path.startswith("/v1/"):
            assert op["security"] == [{"bearer": []}], path
            assert {"401", "431"} <= set(op["responses"]), path
        else:
            assert op["security"] == [], path


async def test_error_responses_are_the_envelope_with_the_codes_of_their_status(
    served: tuple[str, Litestar, dict[str, Any]],
) -> None:
    _, _, doc = served
    envelope = doc["components"]["schemas"]["Error"]
    assert envelope["properties"]["error"]["required"] == ["code", "message", "request_id"]
    assert set(envelope["properties"]["error"]["properties"]["code"]["enum"]) == set(CODES)
    errors = 0
    for (method, path), op in _operations(doc).items():
        for status, response in op["responses"].items():
            assert response["headers"]["X-Request-Id"] == {"$ref": "#/components/headers/RequestId"}
            if int(status) < 400 or not path.startswith("/v1/"):
                continue  # (a success may be another media type: the event stream's is text/event-stream)
            schema = response["content"]["application/json"]["schema"]
            errors += 1
            ref, narrowed = schema["allOf"]
            assert ref == {"$ref": "#/components/schemas/Error"}
            codes = narrowed["properties"]["error"]["properties"]["code"]["enum"]
            assert codes, (method, path, status)
            assert all(CODES[c].status == int(status) for c in codes), (method, path, status)
    assert errors > 10


async def test_every_example_validates_against_its_schema(
    served: tuple[str, Litestar, dict[str, Any]],
) -> None:
    _, _, doc = served
    checked = 0
    for (method, path), op in _operations(doc).items():
        base = f"#/paths/{_escape(path)}/{method.lower()}"
        media_types = []
        if "requestBody" in op:
            media_types.append((f"{base}/requestBody/content/application~1json", op["requestBody"]))
        for status, response in op["responses"].items():
            media_types.append((f"{base}/responses/{status}/content/application~1json", response))
        for pointer, holder in media_types:
            if "application/json" not in holder["content"]:
                continue  # text/event-stream: a string
            media = holder["content"]["application/json"]
            if "example" in media:
                _validator(doc, f"{pointer}/schema").validate(media["example"])
                checked += 1
    assert checked >= 8


def test_the_task_and_event_schemas_fit_the_real_views_exactly() -> None:
    doc = openapi.document(title="t", version="0", description="", operations=[])
    task = openapi.example_task(4, queue_position=3)
    assert set(doc["components"]["schemas"]["Task"]["properties"]) == set(task)
    _validator(doc, "#/components/schemas/Task").validate(task)
    _validator(doc, "#/components/schemas/Task").validate(openapi.example_task(1))
    for event in openapi.example_events():
        _validator(doc, "#/components/schemas/Event").validate(event)
    with pytest.raises(Exception, match="is not of type"):
        _validator(doc, "#/components/schemas/Task").validate({**task, "turn": "3"})


# --- admission's request bodies follow the structs and the contracts' limits --------------------------


def _body_schema(doc: dict[str, Any], path: str) -> dict[str, Any]:
    schema: dict[str, Any] = doc["paths"][path]["post"]["requestBody"]["content"]["application/json"][
        "schema"
    ]
    return schema


def _bounds(prop: dict[str, Any]) -> dict[str, Any]:
    """The constraints of a property, whether it is nullable (``type: [.., null]``) or not."""
    return {k: prop[k] for k in ("minimum", "maximum", "minLength", "maxLength") if k in prop}


def test_request_bodies_have_exactly_the_fields_of_the_request_structs() -> None:
    doc = admission_api.openapi_document(local_repos=False, max_body_bytes=1024)
    for path, struct in (
        ("/v1/tasks", CreateTaskBody),
        ("/v1/tasks/{task_id}/cancel", CancelBody),
        ("/v1/tasks/{task_id}/nudges", NudgeBody),
    ):
        schema = _body_schema(doc, path)
        assert list(schema["properties"]) == list(struct.__struct_fields__), path
        assert schema["additionalProperties"] is False


def test_request_body_limits_come_from_the_contracts() -> None:
    doc = admission_api.openapi_document(local_repos=False, max_body_bytes=1024)
    create = _body_schema(doc, "/v1/tasks")["properties"]
    assert create["repo"]["maxLength"] == MAX_REPO_CHARS
    assert (
        _bounds(create["issue_number"])
        == _bounds(create["pr_number"])
        == {"minimum": 1, "maximum": MAX_NUMBER}
    )
    assert _bounds(create["description"]) == {"maxLength": MAX_DESCRIPTION_CHARS}
    assert _bounds(create["max_turns"]) == {"minimum": MAX_TURNS_RANGE[0], "maximum": MAX_TURNS_RANGE[1]}
    assert _bounds(create["max_budget_usd"]) == {
        "minimum": BUDGET_RANGE_USD[0],
        "maximum": BUDGET_RANGE_USD[1],
    }
    assert _body_schema(doc, "/v1/tasks")["required"] == ["repo"]
    reason = _body_schema(doc, "/v1/tasks/{task_id}/cancel")
    assert (_bounds(reason["properties"]["reason"]), reason["required"]) == (
        {"maxLength": MAX_REASON_CHARS},
        [],
    )
    message = _body_schema(doc, "/v1/tasks/{task_id}/nudges")
    assert _bounds(message["properties"]["message"]) == {"minLength": 1, "maxLength": MAX_NUDGE_CHARS}
    assert message["required"] == ["message"]
    assert doc["paths"]["/v1/tasks/{task_id}/cancel"]["post"]["requestBody"]["required"] is False


def test_the_repo_rule_says_whether_local_repositories_are_accepted() -> None:
    remote = _body_schema(admission_api.openapi_document(local_repos=False, max_body_bytes=1), "/v1/tasks")
    local = _body_schema(admission_api.openapi_document(local_repos=True, max_body_bytes=1), "/v1/tasks")
    for value, remote_ok, local_ok in (
        ("acme/widgets", True, True),
        (" acme/widgets\n", True, True),
        ("/srv/repos/demo", False, True),
        ("file:///srv/repos/demo", False, True),
        ("acme", False, False),
        ("https://github.com/acme/widgets", False, False),
    ):
        assert Draft202012Validator(remote["properties"]["repo"]).is_valid(value) is remote_ok, value
        assert Draft202012Validator(local["properties"]["repo"]).is_valid(value) is local_ok, value


def test_links_lead_from_a_created_task_to_its_cancel_and_nudge() -> None:
    doc = admission_api.openapi_document(local_repos=False, max_body_bytes=1)
    ids = {op["operationId"] for op in _operations(doc).values()}
    for status in ("200", "201"):
        links = doc["paths"]["/v1/tasks"]["post"]["responses"][status]["links"]
        assert {link["operationId"] for link in links.values()} == {"cancelTask", "nudgeTask"} <= ids
        assert all(
            link["parameters"] == {"task_id": "$response.body#/data/task_id"} for link in links.values()
        )


# --- the builder ------------------------------------------------------------------------------------


def test_errors_refuses_a_code_that_is_unknown_or_of_another_status() -> None:
    assert set(openapi.errors({409: ["TASK_ALREADY_TERMINAL", "CONCURRENT_UPDATE"]})) == {"409"}
    with pytest.raises(ValueError, match="NOPE"):
        openapi.errors({400: ["NOPE"]})
    with pytest.raises(ValueError, match="404 VALIDATION_ERROR"):
        openapi.errors({404: ["VALIDATION_ERROR"]})


def test_an_operation_documented_twice_is_refused() -> None:
    op = openapi.health_operations()[0]
    with pytest.raises(ValueError, match="documented twice"):
        openapi.document(title="t", version="0", description="", operations=[op, op])


def test_nullable_keeps_constraints() -> None:
    assert openapi.nullable({"type": "integer", "minimum": 1}) == {"type": ["integer", "null"], "minimum": 1}
    assert openapi.nullable({"enum": ["a"]}) == {"anyOf": [{"enum": ["a"]}, {"type": "null"}]}
