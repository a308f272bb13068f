"""The supervisor's dashboard, without a web framework: its page, its options and its data.

The web app (assist.app) serves these on its routes:

    GET /dashboard?campaign=ID[&...]        the page (static HTML; it fetches the JSON below)
    GET /dashboard/{app.js,charts.js,style.css}
    GET /api/campaigns                      `list_campaigns`: [{id, name, product, language,
                                              created_at, calls, first_call_at, last_call_at}],
                                              newest activity first
    GET /api/campaigns/{id}/report[?...]    `campaign_report(pool, report_query(id, options))`

Report options (also accepted by the page, which passes them on): tz, channel, since, until,
min_customer_turns, min_seconds, min_calls, top_share, rank_by; the same as `callwise report`.
`report_query` turns them into a ReportQuery or raises `ReportOptionError` naming what is wrong.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import asyncpg
from pydantic import ValidationError

from dialogue.leaderboard import LeaderboardRule

from .analytics import EngagementRule, ReportQuery
from .db import Database, connect

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


class ReportOptionError(ValueError):
    """A report option is unknown or has a value the report cannot take; the message says
    which and why."""


def load_assets(static_dir: Path = STATIC_DIR) -> dict[str, tuple[bytes, str]]:
    """URL -> (body, content type) of every file the page needs, read once."""
    return {url: ((static_dir / name).read_bytes(), ctype) for url, (name, ctype) in ASSETS.items()}


def report_query(campaign_id: str, params: Mapping[str, str]) -> ReportQuery:
    """The ReportQuery the options ask for; ReportOptionError naming what is wrong."""
    unknown = sorted(set(params) - REPORT_OPTIONS)
    if unknown:
        raise ReportOptionError(
            f"unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(REPORT_OPTIONS))}"
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
        raise ReportOptionError(
            "; ".join(f"{'.'.join(map(str, p['loc']))}: {p['msg']}" for p in problems)
        ) from exc


async def list_campaigns(pool: asyncpg.Pool | Database) -> list[dict[str, Any]]:
    """Every campaign with its call count and first/last call, newest activity first."""
    pool = pool.pool if isinstance(pool, Database) else pool
    rows = await pool.fetch(CAMPAIGNS_SQL)
    return [
        {k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in row.items()}
        for row in rows
    ]


async def open_database(url: str | None = None) -> Database | None:
    """The database for a server that also serves media: on failure the server still starts
    (calls matter more than charts), logging why its dashboard will answer 503."""
    try:
        return await connect(url)
    except Exception as exc:
        log.warning("dashboard and logins disabled, no database: %s", exc)
        return None
