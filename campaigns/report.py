"""`callwise report --campaign ID`: the supervisor's figures in a terminal, or as JSON.

The text and the JSON come from the same `CampaignReport`; the text adds nothing the JSON lacks.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import textwrap
from collections.abc import Sequence
from datetime import datetime

from pydantic import ValidationError

from dialogue.leaderboard import LeaderboardRule

from .analytics import (
    CampaignReport,
    EngagementRule,
    Metrics,
    ReportQuery,
    UnknownCampaignError,
    campaign_report,
)


def _aware(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r}: give a UTC offset, e.g. {text}+08:00")
    return value


def add_report_command(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    rp = sub.add_parser(
        "report",
        help="campaign analytics: rates, AI vs human, leaderboard, days",
        description="Conversion and engagement per campaign, AI vs human with confidence "
        "intervals and a significance test, the agent leaderboard, and daily figures.",
    )
    rp.add_argument("--campaign", required=True, help="campaign id")
    rp.add_argument("--json", action="store_true", help="print the CampaignReport as JSON")
    rp.add_argument(
        "--database-url",
        help="postgresql://user:password@host:port/db (default: DATABASE_URL, else the "
        "embedded server)",
    )
    rp.add_argument("--channel", choices=["ai", "human"], help="only this channel")
    rp.add_argument("--since", type=_aware, help="calls started at or after (ISO 8601)")
    rp.add_argument("--until", type=_aware, help="calls started before (ISO 8601)")
    rp.add_argument("--tz", default="UTC", help="time zone of the daily figures (IANA name)")
    rp.add_argument("--min-customer-turns", type=int, default=2, help="engagement rule")
    rp.add_argument("--min-seconds", type=float, default=30.0, help="engagement rule")
    rp.add_argument("--min-calls", type=int, default=20, help="leaderboard: answered calls")
    rp.add_argument("--top-share", type=float, default=0.3, help="leaderboard: top share")
    rp.add_argument(
        "--rank-by", choices=["converted", "engaged"], default="converted", help="leaderboard"
    )


def query_from_args(args: argparse.Namespace) -> ReportQuery:
    return ReportQuery(
        campaign_id=args.campaign,
        channel=args.channel,
        since=args.since,
        until=args.until,
        time_zone=args.tz,
        engagement=EngagementRule(
            min_customer_turns=args.min_customer_turns, min_seconds=args.min_seconds
        ),
        leaderboard=LeaderboardRule(
            min_calls=args.min_calls, top_share=args.top_share, outcome=args.rank_by
        ),
    )


def run_report(args: argparse.Namespace) -> int:
    try:
        query = query_from_args(args)
    except ValidationError as exc:
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"])
            print(f"callwise report: {where}: {err['msg']}", file=sys.stderr)
        return 2
    return asyncio.run(_run(query, args.database_url, args.json))


async def _run(query: ReportQuery, url: str | None, as_json: bool) -> int:
    from .db import DatabaseError, connect
    from .migrate import MigrationError

    try:
        db = await connect(url)
    except (DatabaseError, MigrationError) as exc:
        print(f"callwise report: {exc}", file=sys.stderr)
        return 1
    try:
        report = await campaign_report(db.pool, query)
    except UnknownCampaignError as exc:
        print(f"callwise report: {exc}", file=sys.stderr)
        return 2
    finally:
        await db.close()
    print(report.model_dump_json(indent=2) if as_json else render(report))
    return 0


# --- text -----------------------------------------------------------------------------------


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:.1f}%"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> list[str]:
    """Columns sized to fit; the first `left` columns align left, numbers align right."""
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        out = [
            c.ljust(w) if i < left else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(out).rstrip()

    return [line(headers), *(line(r) for r in rows)]


_METRIC_HEADERS = (
    "dialed",
    "answered",
    "engaged",
    "converted",
    "opt-out",
    "hand-off",
    "answer%",
    "engage%",
    "conv%",
    "conv%/dialed",
    "AHT",
    "accept%",
)


_LABELS = {
    "answer": "Answer rate",
    "engagement": "Engagement",
    "conversion": "Conversion",
    "conversion_per_dialed": "Conversion per dialed call",
    "opt_out": "Opt-outs",
    "hand_off": "Hand-offs",
}


def _metric_cells(m: Metrics) -> list[str]:
    aht = "-" if m.avg_handle_seconds is None else f"{m.avg_handle_seconds:.1f} s"
    return [
        *(
            f"{v:,}"
            for v in (m.dialed, m.answered, m.engaged, m.converted, m.opted_out, m.handed_off)
        ),
        _pct(m.answer_rate.rate),
        _pct(m.engagement_rate.rate),
        _pct(m.conversion_rate.rate),
        _pct(m.conversion_per_dialed.rate),
        aht,
        _pct(m.suggestion_acceptance.rate),
    ]


def _wrap(text: str, indent: str = "  ") -> list[str]:
    return textwrap.wrap(text, width=100, initial_indent=indent, subsequent_indent=indent)


def render(r: CampaignReport) -> str:
    q = r.query
    c = r.campaign
    scope = [f"channel {q.channel}" if q.channel else "both channels"]
    if q.since:
        scope.append(f"from {q.since.isoformat()}")
    if q.until:
        scope.append(f"before {q.until.isoformat()}")
    out = [f"Campaign {c.id}: {c.name} ({c.product}, {c.language}); {', '.join(scope)}", ""]

    rows = [["all", *_metric_cells(r.totals)]]
    rows += [[ch, *_metric_cells(m)] for ch, m in r.by_channel.items()]
    out += _table(["", *_METRIC_HEADERS], rows)
    out += [""]
    out += _wrap(
        "answer% and conv%/dialed are per dialed call; engage%, conv%, opt-out and hand-off "
        "rates per answered call; AHT = mean answer-to-hang-up time of answered calls; accept% "
        f"= suggestions accepted / shown (human calls). Engaged: {r.definitions['engaged']}.",
        "",
    )

    out += ["", "Funnel"]
    for name, stages in r.funnel.items():
        steps = [f"{stages[0].stage} {stages[0].calls:,}"]
        steps += [f"{s.stage} {s.calls:,} ({_pct(s.of_previous)})" for s in stages[1:]]
        out.append(f"  {name:<6} " + " -> ".join(steps))

    if r.ai_vs_human:
        out += ["", "AI vs human (gap = AI - human: Newcombe interval, pooled z-test)"]
        for comp in r.ai_vs_human:
            label = _LABELS.get(comp.metric, comp.metric)
            out += _wrap(f"{label}: {comp.verdict}", "  ")

    lb = r.by_agent
    out += ["", "Leaderboard", *_wrap(lb.rule_text)]
    if lb.agents:
        rows = [
            [
                str(a.rank) if a.rank else "-",
                a.agent_id,
                a.channel,
                f"{a.calls:,}",
                f"{a.successes:,}",
                _pct(a.rate),
                "-" if a.lower is None else f"{_pct(a.lower)}-{_pct(a.upper)}",
                _pct(a.metrics.suggestion_acceptance.rate),
                "top" if a.top else "",
            ]
            for a in lb.agents
        ]
        headers = [
            "rank",
            "agent",
            "channel",
            "answered",
            lb.rule.outcome,
            "rate",
            f"{lb.rule.confidence:.0%} CI",
            "accept%",
            "",
        ]
        out += ["  " + line for line in _table(headers, rows, left=3)]
    else:
        out.append("  no calls yet")

    out += ["", f"By day ({q.time_zone})"]
    if r.by_day:
        rows = [
            [
                d.day.isoformat(),
                *(
                    f"{v:,}"
                    for v in (
                        d.totals.dialed,
                        d.totals.answered,
                        d.totals.engaged,
                        d.totals.converted,
                    )
                ),
                _pct(d.totals.conversion_rate.rate),
                *(_pct(m.conversion_rate.rate) for m in d.by_channel.values()),
            ]
            for d in r.by_day
        ]
        channels = [f"{ch} conv%" for ch in r.by_day[0].by_channel]
        headers = ["day", "dialed", "answered", "engaged", "converted", "conv%", *channels]
        out += ["  " + line for line in _table(headers, rows)]
    else:
        out.append("  no calls yet")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """`python -m campaigns.report`: the same command without the rest of the CLI."""
    parser = argparse.ArgumentParser(prog="callwise")
    add_report_command(parser.add_subparsers(dest="command", required=True))
    return run_report(parser.parse_args(["report", *(sys.argv[1:] if argv is None else argv)]))


if __name__ == "__main__":
    sys.exit(main())
