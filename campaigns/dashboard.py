"""The supervisor's dashboard over plain HTTP, answered inside the media server's websockets stack.

One process serves media, sidebar and dashboard (DESIGN), so there is no second web framework:
`Dashboard.process_request` is the `process_request` hook of `websockets.asyncio.server.serve`.
It answers plain HTTP requests and lets websocket upgrades through to the media handler.

    GET /                                   302 to /dashboard
    GET /dashboard?campaign=ID[&...]        the page (static HTML; it fetches the JSON below)
    GET /dashboard/{app.js,charts.js,style.css}
    GET /api/campaigns                      [{id, name, product, language, created_at, calls,
                                              first_call_at, last_call_at}], newest activity first
    GET /api/campaigns/{id}/report[?...]    CampaignReport.model_dump(mode="json")

Report options (also accepted by the page, which passes them on): tz, channel, since, until,
min_customer_turns, min_seconds, min_calls, top_share, rank_by; the same as `callwise report`.
Errors are JSON {"error": ...}: 400 bad option, 404 unknown campaign or route, 405 not GET,
503 no database (or unreachable), 500 anything else (details go to the log, not the client).
"""

from __future__ import annotations

import email.utils
import http
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import asyncpg
from pydantic import ValidationError
from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from dialogue.leaderboard import LeaderboardRule

from .analytics import EngagementRule, ReportQuery, UnknownCampaignError, campaign_report
from .db import Database, connect, is_unavailable

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).with_name("static")
# URL -> (file in STATIC_DIR, content type); a fixed table, so no request path reaches the disk
ASSETS: dict[str, tuple[str, str]] = {
    "/dashboard": ("dashboard.html", "text/html; charset=utf-8"),
    "/dashboard/app.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "/dashboard/charts.js": ("charts.js", "text/javascript; charset=utf-8"),
    "/dashboard/style.css": ("dashboard.css", "text/css; charset=utf-8"),
}
# the page builds its SVG through the DOM and loads nothing from elsewhere, so it can forbid
# inline script and every other origin
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
REPORT_OPTIONS = frozenset(
    {"tz", "channel", "since", "until", "min_customer_turns", "min_seconds", "min_calls",
     "top_share", "rank_by"}
)  # fmt: skip

CAMPAIGNS_SQL = """
SELECT c.id, c.name, c.product, c.language, c.created_at,
       count(k.id) AS calls, min(k.started_at) AS first_call_at, max(k.started_at) AS last_call_at
FROM campaigns c LEFT JOIN calls k ON k.campaign_id = c.id
GROUP BY c.id
ORDER BY max(k.started_at) DESC NULLS LAST, c.created_at DESC, c.id
"""


class HttpError(Exception):
    def __init__(self, status: http.HTTPStatus, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.payload = status, {"error": message, **extra}


def response(
    status: http.HTTPStatus,
    body: bytes,
    content_type: str,
    extra: Mapping[str, str] | None = None,
) -> Response:
    headers = Headers(
        [
            ("Date", email.utils.formatdate(usegmt=True)),
            # websockets closes the connection after any non-101 answer; say so
            ("Connection", "close"),
            ("Content-Length", str(len(body))),
            ("Content-Type", content_type),
            ("Cache-Control", "no-store"),
            ("X-Content-Type-Options", "nosniff"),
        ]
    )
    for key, value in (extra or {}).items():
        headers[key] = value
    return Response(status.value, status.phrase, headers, body)


def json_response(status: http.HTTPStatus, payload: Any) -> Response:
    return response(status, json.dumps(payload).encode(), "application/json")


def is_websocket_upgrade(request: Request) -> bool:
    upgrade = request.headers.get("Upgrade", "")
    return any(token.strip().lower() == "websocket" for token in upgrade.split(","))


def report_query(campaign_id: str, params: Mapping[str, str]) -> ReportQuery:
    """The ReportQuery the URL asks for; raises HttpError 400 naming what is wrong."""
    unknown = sorted(set(params) - REPORT_OPTIONS)
    if unknown:
        raise HttpError(
            http.HTTPStatus.BAD_REQUEST,
            f"unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(REPORT_OPTIONS))}",
        )

    def pick(**names: str) -> dict[str, str]:
        return {field: params[name] for field, name in names.items() if name in params}

    try:
        return ReportQuery(
            campaign_id=campaign_id,
            engagement=EngagementRule(
                **pick(min_customer_turns="min_customer_turns", min_seconds="min_seconds")
            ),
            leaderboard=LeaderboardRule(
                **pick(min_calls="min_calls", top_share="top_share", outcome="rank_by")
            ),
            **pick(time_zone="tz", channel="channel", since="since", until="until"),
        )
    except ValidationError as exc:
        problems = exc.errors(include_url=False, include_context=False, include_input=False)
        raise HttpError(
            http.HTTPStatus.BAD_REQUEST,
            "; ".join(f"{'.'.join(map(str, p['loc']))}: {p['msg']}" for p in problems),
        ) from exc


class Dashboard:
    """HTTP routes of the dashboard. `db`: the callwise database (or an asyncpg pool), or None,
    in which case the page still loads and every data route answers 503."""

    def __init__(
        self,
        db: Database | asyncpg.Pool | None,
        websocket_paths: frozenset[str] | set[str] | tuple[str, ...] = (),
        static_dir: Path = STATIC_DIR,
    ) -> None:
        self.pool = db.pool if isinstance(db, Database) else db
        # plain GETs on these are left to websockets, which answers 426 Upgrade Required
        self.websocket_paths = frozenset(websocket_paths)
        self.assets = {
            url: ((static_dir / name).read_bytes(), ctype) for url, (name, ctype) in ASSETS.items()
        }

    async def process_request(self, _: ServerConnection, request: Request) -> Response | None:
        """The websockets hook: None lets the websocket handshake go on; a Response ends it."""
        path = urlsplit(request.path).path
        if is_websocket_upgrade(request) or path in self.websocket_paths:
            return None
        return await self.respond(request)

    async def respond(self, request: Request) -> Response:
        url = urlsplit(request.path)
        params = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        try:
            if request.method not in ("GET", "HEAD"):
                raise HttpError(
                    http.HTTPStatus.METHOD_NOT_ALLOWED, f"{request.method} is not supported here"
                )
            reply = await self._route(url.path, params)
        except HttpError as exc:
            reply = json_response(exc.status, exc.payload)
        except Exception as exc:
            if not is_unavailable(exc):
                log.exception("dashboard: %s failed", url.path)
                reply = json_response(
                    http.HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal error; see log"}
                )
            else:
                log.warning("dashboard: database unavailable: %s", exc)
                reply = json_response(
                    http.HTTPStatus.SERVICE_UNAVAILABLE,
                    {"error": f"the database is unavailable now ({type(exc).__name__}); "
                              "the page retries on its own"},
                )  # fmt: skip
        if reply.status_code == http.HTTPStatus.METHOD_NOT_ALLOWED:
            reply.headers["Allow"] = "GET, HEAD"
        if request.method == "HEAD":
            reply.body = b""  # Content-Length still tells the size of the GET answer
        return reply

    async def _route(self, path: str, params: dict[str, str]) -> Response:
        if path == "/":
            return response(http.HTTPStatus.FOUND, b"", "text/plain", {"Location": "/dashboard"})
        if path in self.assets:
            body, ctype = self.assets[path]
            return response(http.HTTPStatus.OK, body, ctype, {"Content-Security-Policy": CSP})
        if path == "/api/campaigns":
            return json_response(http.HTTPStatus.OK, await self.campaigns())
        parts = path.split("/")
        if len(parts) == 5 and parts[:3] == ["", "api", "campaigns"] and parts[4] == "report":
            campaign_id = unquote(parts[3])
            query = report_query(campaign_id, params)
            try:
                report = await campaign_report(self._db(), query)
            except UnknownCampaignError as exc:
                raise HttpError(
                    http.HTTPStatus.NOT_FOUND, str(exc), campaign_id=campaign_id
                ) from exc
            body = report.model_dump_json().encode()
            return response(http.HTTPStatus.OK, body, "application/json")
        raise HttpError(
            http.HTTPStatus.NOT_FOUND,
            f"no route {path}; try /dashboard, /api/campaigns or /api/campaigns/ID/report",
        )

    async def campaigns(self) -> list[dict[str, Any]]:
        rows = await self._db().fetch(CAMPAIGNS_SQL)
        return [
            {k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in row.items()}
            for row in rows
        ]

    def _db(self) -> asyncpg.Pool:
        if self.pool is None:
            raise HttpError(
                http.HTTPStatus.SERVICE_UNAVAILABLE,
                "this server runs without a database, so the dashboard has no data; set "
                "DATABASE_URL (or let callwise start its embedded PostgreSQL) and restart it",
            )
        return self.pool


async def open_database() -> Database | None:
    """The database for a server that also serves media: on failure the server still starts
    (calls matter more than charts), logging why its dashboard will answer 503."""
    try:
        return await connect()
    except Exception as exc:
        log.warning("dashboard disabled, no database: %s", exc)
        return None
