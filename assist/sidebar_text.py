"""The agent's sidebar as terminal lines: what `callwise demo` prints of a live call's events."""

from __future__ import annotations

from core.events import CallEvent

from .bus import Lagged, Subscription


def render(event: CallEvent) -> str | None:
    """One event as the line the sidebar would show, or None for what it does not show."""
    match event.type:
        case "utterance":
            if event.revision:
                return f"          (turn {event.seq}: the speaker is settled: {event.role})"
            guess = " (speaker guessed)" if event.provisional else ""
            return f"{event.role:>8}: {event.text}{guess}"
        case "intent":
            return f"          intent {event.intent} ({event.confidence:.2f})"
        case "suggestion_shown":
            after = (f", {event.latency_ms / 1000:.1f} s after the customer stopped"
                     if event.latency_ms is not None else "")
            if event.source == "exemplar" and event.citations:
                c = event.citations[0]
                if event.rank > 1:
                    return None
                return (f"          top agent {c.agent_id} ({c.call_id}, {c.outcome}{after}): "
                        f"{event.text}")
            return f"          suggestion ({event.source}{after}): {event.text}"
        case "suggestion_withheld":
            if event.reason == "superseded":
                return f"          (LLM reply dropped: {event.detail})"
            return f"          LLM reply withheld ({event.reason}): {event.detail}"
        case "compliance_alert":
            return f"          ALERT {event.severity} {event.kind} ({event.rule}): {event.why}"
        case "disclosure" if event.status != "due":
            when = f" at {event.said_at_s:.0f} s" if event.said_at_s is not None else ""
            return f"          disclosure {event.rule}: {event.status}{when}"
        case "wrap_up_draft":
            n = event.note
            return (f"          wrap-up draft ({event.source}): reason: {n.reason or '-'} | "
                    f"agreed: {n.agreed or '-'} | next: {n.next_step or '-'}")
        case "override":
            return f"          OVERRIDE {event.action}: {event.why}"
        case "call_ended":
            return f"-- call ended{': ' + event.reason if event.reason else ''}"
    return None


async def print_events(sub: Subscription) -> None:
    try:
        async for event in sub:
            line = render(event)
            if line is not None:
                print(line, flush=True)
    except Lagged:
        print("(the terminal fell behind; some events were not printed)")
