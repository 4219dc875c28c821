"""docs/floor-api.md and the service's own /openapi.json describe the same API.

Clients are written from either: every route of the spec has its section in the doc
(and no section names a route that does not exist), every field table of the doc
lists exactly the model's fields, the query parameters match, and the spec declares
the error answers the routes really give, with the body they really have
(``{"detail": "<one line>"}``, not FastAPI's default validation-error list).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("xsquare_logger.floor.api", reason="the floor extra is not installed")

from fastapi.testclient import TestClient

from xsquare_logger.floor import protocol
from xsquare_logger.floor.api import create_app
from xsquare_logger.floor.catalog import Catalog

DOC = (Path(__file__).resolve().parent.parent / "docs" / "floor-api.md").read_text()
# Routes the doc describes in prose only (FastAPI serves them; not in the spec).
NOT_IN_SPEC = {("GET", "/openapi.json"), ("GET", "/docs"), ("GET", "/")}


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    catalog = Catalog(f"sqlite:///{tmp_path_factory.mktemp('oa')}/floor.db")
    try:
        return dict(TestClient(create_app(catalog, dashboard=None)).get("/openapi.json").json())
    finally:
        catalog.close()


def _doc_routes() -> set[tuple[str, str]]:
    routes = set()
    for heading in re.findall(r"^### (.+)$", DOC, re.M):
        for method, path in re.findall(r"`(GET|POST|PUT|DELETE|PATCH) ([^`?]+)[^`]*`", heading):
            routes.add((method, path))
    return routes


def _table_after(marker: str) -> list[str]:
    """First-column names of the table right after ``marker``."""
    start = DOC.index(marker)
    rows = re.search(r"((?:^\|.*\|\n)+)", DOC[start:], re.M)
    assert rows, marker
    names: list[str] = []
    for line in rows.group(1).splitlines()[2:]:
        names += re.findall(r"`([a-z0-9_]+)`", line.split("|")[1])
    return names


def test_every_route_is_documented_and_every_documented_route_exists(spec: dict) -> None:
    in_spec = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    assert _doc_routes() == in_spec | NOT_IN_SPEC


@pytest.mark.parametrize("model,marker", [
    ("Heartbeat", "`Heartbeat` fields"),
    ("SessionReport", "`SessionReport` fields"),
    ("RobotTile", "`RobotTile` fields"),
    ("EpisodeRow", "`EpisodeRow` fields"),
    ("SessionRow", "`SessionRow` fields"),
    ("FloorSummary", "Answer: a `FloorSummary`"),
])
def test_field_tables_list_exactly_the_model_fields(model: str, marker: str) -> None:
    fields = set(getattr(protocol, model).model_fields)
    documented = _table_after(marker)
    assert sorted(documented) == sorted(fields)


def test_query_parameters_match(spec: dict) -> None:
    def params(path: str) -> set[str]:
        return {p["name"] for p in spec["paths"][path]["get"].get("parameters", [])
                if p["in"] == "query"}

    assert set(_table_after("| parameter | meaning |")) == params("/api/v1/episodes")
    prose = DOC[DOC.index("### `GET /api/v1/sessions`"):DOC.index("`SessionRow` fields")]
    listed = re.search(r"Parameters: (.*?)\. Answer", prose, re.S)
    assert listed is not None
    assert set(re.findall(r"`([a-z_]+)`", listed.group(1))) == params("/api/v1/sessions")
    assert params("/api/v1/summary") == {"day"}


def _schema(spec: dict, answer: dict) -> dict:
    schema = answer["content"]["application/json"]["schema"]
    if "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return dict(schema)


# What each route answers besides success (docs/floor-api.md, "Authentication", "Errors").
ERRORS = {
    ("post", "/api/v1/robots/{robot_id}/heartbeats"): {"401", "403", "422", "503"},
    ("put", "/api/v1/robots/{robot_id}/sessions/{session_id}"):
        {"401", "403", "409", "422", "503"},
    ("get", "/api/v1/robots"): {"401", "403", "503"},
    # A path parameter is a string FastAPI validates too: 422 possible, never seen.
    ("get", "/api/v1/robots/{robot_id}"): {"401", "403", "404", "422", "503"},
    ("get", "/api/v1/sessions"): {"401", "403", "422", "503"},
    ("get", "/api/v1/sessions/{session_id}"): {"401", "403", "404", "422", "503"},
    ("get", "/api/v1/episodes"): {"401", "403", "422", "503"},
    ("get", "/api/v1/summary"): {"401", "403", "422", "503"},
    ("get", "/metrics"): {"401", "403", "503"},
    ("get", "/healthz"): {"503"},
}


def test_the_spec_declares_the_real_error_answers(spec: dict) -> None:
    declared = {(m, p): {c for c in op["responses"] if c >= "400"}
                for p, ops in spec["paths"].items() for m, op in ops.items()}
    assert declared == ERRORS
    for (method, path), codes in ERRORS.items():
        for code in codes - ({"503"} if path == "/healthz" else set()):
            schema = _schema(spec, spec["paths"][path][method]["responses"][code])
            assert schema["properties"]["detail"]["type"] == "string", (method, path, code)
            assert schema["required"] == ["detail"]
    health = _schema(spec, spec["paths"]["/healthz"]["get"]["responses"]["503"])
    assert set(health["properties"]) == {"status", "detail"}
