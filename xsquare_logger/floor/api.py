"""The floor service's HTTP API (FastAPI): thin handlers over the :class:`Catalog`.

Stateless by design: every answer comes from the database, so replicas behind a
load balancer need nothing shared but the database URL. Errors are JSON
``{"detail": "<one line>"}``: 401 no/unknown/revoked token, 403 a token that may
not do this, 404 unknown record, 409 contradicts the catalog, 422 bad input (the
field is named), 503 database down. docs/floor-api.md documents every route.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles

from xsquare_logger import __version__
from xsquare_logger.floor.catalog import (
    Catalog,
    CatalogConflict,
    CatalogError,
    CatalogUnavailable,
    EpisodeFilter,
    Principal,
    parse_time_ns,
)
from xsquare_logger.floor.catalog.query import MAX_LIMIT, QUALITY_VERDICTS
from xsquare_logger.floor.metrics import CONTENT_TYPE, render
from xsquare_logger.floor.protocol import (
    API_PREFIX,
    EpisodePage,
    ErrorBody,
    FloorSummary,
    Health,
    Heartbeat,
    RobotTile,
    SessionDetail,
    SessionPage,
    SessionReport,
    SessionRow,
)

__all__ = ["DASHBOARD", "create_app"]

DASHBOARD = Path(__file__).with_name("dashboard")


class ApiError(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def _one_line(exc: RequestValidationError) -> str:
    errors = exc.errors()
    if not errors:
        return "invalid request"
    first = errors[0]
    where = ".".join(str(p) for p in first.get("loc", ())) or "request"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {first.get('msg', 'invalid')}{more}".replace("\n", " ")


def _time(value: str | None, name: str) -> int | None:
    return None if value is None or value == "" else parse_time_ns(value, name)


_bearer = HTTPBearer(auto_error=False, description="A robot or reader token.")


def _principal(
    request: Request,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if creds is None or creds.scheme.lower() != "bearer" or not creds.credentials:
        raise ApiError(401, "missing token: send Authorization: Bearer <token>")
    catalog: Catalog = request.app.state.catalog
    who = catalog.authenticate(creds.credentials)
    if who is None:
        raise ApiError(401, "unknown or revoked token")
    return who


Who = Annotated[Principal, Depends(_principal)]


async def _reader(who: Who) -> Principal:
    # async: no I/O here, so no hop through the thread pool.
    if who.kind != "reader":
        raise ApiError(403, f"robot token of {who.name!r} may not read floor data; "
                            "use a reader token")
    return who


Reader = Annotated[Principal, Depends(_reader)]

_ERRORS = {
    401: "Missing, unknown or revoked token",
    403: "The token may not do this",
    404: "No such robot or session",
    409: "The request contradicts the catalog",
    422: "Bad input (the first bad field is named)",
    503: "The database does not answer; retry later",
}


def _answers(*codes: int) -> dict[int | str, dict[str, Any]]:
    # The spec declares what each route really answers, with the real body: FastAPI's
    # default 422 schema (a list of errors) is not what _invalid() sends.
    return {c: {"model": ErrorBody, "description": _ERRORS[c]} for c in codes}


_AUTH = (401, 403, 503)


def _json_errors(spec: dict[str, Any]) -> dict[str, Any]:
    """Error answers are JSON on every route; FastAPI files them under the route's own
    media type (text/plain for /metrics)."""
    for ops in spec.get("paths", {}).values():
        for op in ops.values():
            for code, answer in op.get("responses", {}).items():
                content = answer.get("content", {})
                if code >= "400" and "application/json" not in content and content:
                    answer["content"] = {"application/json": next(iter(content.values()))}
    return spec
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Rows per page.")]
Since = Annotated[str | None, Query(description="Start >= this: YYYY-MM-DD, ISO 8601 "
                                                "date-time, or ns since the epoch.")]
Until = Annotated[str | None, Query(description="Start < this (same forms as since).")]
# A plain string, not an enum: an empty ?quality= means no filter, like every filter here.
Quality = Annotated[str | None, Query(description="The recorder's verdict: "
                                                  f"{' | '.join(QUALITY_VERDICTS)}.")]
IncludeDiscarded = Annotated[bool, Query(description="Also list discarded (re-recorded) "
                                                     "episodes.")]


def _own_robot(robot_id: str, who: Principal) -> None:
    if who.kind != "robot":
        raise ApiError(403, "reader tokens may not write; use the robot's own token")
    if who.name != robot_id:
        raise ApiError(403, f"token of robot {who.name!r} may not write robot {robot_id!r}")


def create_app(catalog: Catalog, dashboard: Path | None = DASHBOARD) -> FastAPI:
    """The app over ``catalog``; serves the dashboard page when its folder exists."""
    app = FastAPI(
        title="xsquare_logger floor service",
        version=__version__,
        description="Robots report heartbeats and sessions; readers query robots, sessions "
        "and episodes. See docs/floor-api.md.",
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
    )
    # The only per-app state: the catalog handle (a connection pool, no data).
    app.state.catalog = catalog
    app.openapi = lambda: _json_errors(FastAPI.openapi(app))  # type: ignore[method-assign]
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse({"detail": exc.detail}, exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _one_line(exc)}, 422)

    @app.exception_handler(CatalogError)
    async def _catalog(_: Request, exc: CatalogError) -> JSONResponse:
        status = 503 if isinstance(exc, CatalogUnavailable) else (
            409 if isinstance(exc, CatalogConflict) else 422)
        return JSONResponse({"detail": str(exc).replace("\n", " ")}, status)

    p = API_PREFIX

    @app.post(f"{p}/robots/{{robot_id}}/heartbeats", status_code=204, tags=["robots"],
              summary="Report the robot's state (its own robot_id only)",
              responses=_answers(*_AUTH, 422))
    def post_heartbeat(robot_id: str, hb: Heartbeat, who: Who) -> Response:
        _own_robot(robot_id, who)
        if hb.robot_id != robot_id:
            raise ApiError(422, f"body.robot_id: {hb.robot_id!r} is not the path's {robot_id!r}")
        catalog.record_heartbeat(hb)
        return Response(status_code=204)

    @app.put(f"{p}/robots/{{robot_id}}/sessions/{{session_id}}", response_model=SessionRow,
             tags=["sessions"], summary="Add or update a session and its episodes (idempotent)",
             responses={201: {"model": SessionRow, "description": "Created"},
                        **_answers(*_AUTH, 409, 422)})
    def put_session(
        robot_id: str, session_id: str, report: SessionReport, who: Who, response: Response
    ) -> SessionRow:
        _own_robot(robot_id, who)
        m = report.manifest
        if m.robot_id != robot_id:
            raise ApiError(422, f"body.manifest.robot_id: {m.robot_id!r} is not the path's "
                                f"{robot_id!r}")
        if m.session_id != session_id:
            raise ApiError(422, f"body.manifest.session_id: {m.session_id!r} is not the "
                                f"path's {session_id!r}")
        _, created, row = catalog.report_session(report)
        response.status_code = 201 if created else 200
        return row

    @app.get(f"{p}/robots", response_model=list[RobotTile], tags=["robots"],
             summary="Every registered robot as a dashboard tile", responses=_answers(*_AUTH))
    def get_robots(_: Reader) -> list[RobotTile]:
        return catalog.robots()

    @app.get(f"{p}/robots/{{robot_id}}", response_model=RobotTile, tags=["robots"],
             summary="One robot (readers, or that robot's own token)",
             responses=_answers(*_AUTH, 404, 422))
    def get_robot(robot_id: str, who: Who) -> RobotTile:
        if who.kind == "robot" and who.name != robot_id:
            raise ApiError(403, f"token of robot {who.name!r} may not read robot {robot_id!r}")
        tile = catalog.robot(robot_id)
        if tile is None:
            raise ApiError(404, f"no robot {robot_id!r}")
        return tile

    @app.get(f"{p}/sessions", response_model=SessionPage, tags=["sessions"],
             summary="Sessions by start time, oldest first (keyset pages)",
             responses=_answers(*_AUTH, 422))
    def get_sessions(
        _: Reader, robot: str | None = None, since: Since = None, until: Until = None,
        limit: Limit = 100, cursor: str | None = None,
    ) -> SessionPage:
        return catalog.sessions(robot or None, _time(since, "since"), _time(until, "until"),
                                limit, cursor or None)

    @app.get(f"{p}/sessions/{{session_id}}", response_model=SessionDetail, tags=["sessions"],
             summary="One session with its files, episodes and session.json",
             responses=_answers(*_AUTH, 404, 422))
    def get_session(session_id: str, _: Reader) -> SessionDetail:
        detail = catalog.session(session_id)
        if detail is None:
            raise ApiError(404, f"no session {session_id!r}")
        return detail

    @app.get(f"{p}/episodes", response_model=EpisodePage, tags=["episodes"],
             summary="Episodes matching every given filter, oldest first (keyset pages)",
             responses=_answers(*_AUTH, 422))
    def get_episodes(
        _: Reader, task: str | None = None, outcome: str | None = None,
        operator: str | None = None, robot: str | None = None, site: str | None = None,
        since: Since = None, until: Until = None, limit: Limit = 100,
        cursor: str | None = None, quality: Quality = None,
        include_discarded: IncludeDiscarded = False,
    ) -> EpisodePage:
        where = EpisodeFilter(task=task or None, outcome=outcome or None,
                              operator=operator or None, robot=robot or None,
                              site=site or None, since_ns=_time(since, "since"),
                              until_ns=_time(until, "until"), quality=quality or None,
                              include_discarded=include_discarded)
        return catalog.episodes(where, limit, cursor or None)

    @app.get(f"{p}/summary", response_model=FloorSummary, tags=["floor"],
             summary="Floor totals of one day (service local time)",
             responses=_answers(*_AUTH, 422))
    def get_summary(_: Reader, day: str | None = None) -> FloorSummary:
        return catalog.summary(day or None)

    @app.get("/metrics", response_class=PlainTextResponse, tags=["floor"],
             summary="Prometheus text format (reader token)", responses=_answers(*_AUTH))
    def get_metrics(_: Reader) -> PlainTextResponse:
        return PlainTextResponse(render(catalog), media_type=CONTENT_TYPE)

    @app.get("/healthz", tags=["floor"], summary="200 when the database answers (no auth)",
             response_model=Health, responses={503: {"model": Health,
                                                     "description": _ERRORS[503]}})
    def healthz() -> JSONResponse:
        try:
            catalog.ping()
        except CatalogError as exc:
            return JSONResponse({"status": "unavailable", "detail": str(exc)}, 503)
        return JSONResponse({"status": "ok"})

    if dashboard is not None and (dashboard / "index.html").is_file():
        index = dashboard / "index.html"

        @app.get("/", include_in_schema=False)
        def page() -> FileResponse:
            return FileResponse(index, media_type="text/html")

        if (dashboard / "static").is_dir():
            app.mount("/static", StaticFiles(directory=dashboard / "static"), name="static")
    return app
