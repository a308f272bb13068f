"""`callwise intents | playbook | suggest | flow`: the dialogue side of the command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    intents = sub.add_parser("intents", help="train, evaluate or try an intent model")
    isub = intents.add_subparsers(dest="action", required=True)
    tr = isub.add_parser("train", help="train from a CSV/JSONL of (text, label)")
    tr.add_argument("--train", required=True, type=Path)
    tr.add_argument("--out", required=True, type=Path)
    tr.add_argument("--test", type=Path, help="evaluate on this file after training")
    tr.add_argument("--threshold", type=float,
                    help="out-of-scope below this in-scope score, 0-1 (default: set by CV to "
                    "reject 5%% of the training lines)")
    ev = isub.add_parser("eval", help="accuracy, macro-F1 and per-class report as JSON")
    ev.add_argument("--model", required=True, type=Path)
    ev.add_argument("--test", required=True, type=Path)
    pr = isub.add_parser("predict", help="intent of each text")
    pr.add_argument("text", nargs="+")
    pr.add_argument("--model", type=Path, help="default: the shipped contact-center model")

    playbook = sub.add_parser("playbook", help="mine top agents' replies from past calls")
    psub = playbook.add_subparsers(dest="action", required=True)
    bd = psub.add_parser("build", help="rank agents, index the top performers' replies")
    bd.add_argument("--calls", required=True, type=Path, help="JSONL of call records")
    bd.add_argument("--out", required=True, type=Path)
    bd.add_argument("--min-calls", type=int, default=20)
    bd.add_argument("--top-share", type=float, default=0.3)
    bd.add_argument("--intent-model", type=Path)
    sh = psub.add_parser("leaderboard", help="the agent ranking a playbook was built from")
    sh.add_argument("--playbook", type=Path)
    sh.add_argument("--json", action="store_true")
    rf = psub.add_parser("refresh", help="a new playbook version from the store's calls and "
                         "agents' feedback (DATABASE_URL, else the embedded server)")
    rf.add_argument("--versions", type=Path, help="default: playbooks/ in the data dir")
    rf.add_argument("--calls", type=Path, help="the historical corpus (default: the shipped one)")
    rf.add_argument("--eval", type=Path, help="a reply set (fixtures/replies): score the first "
                    "cards before and after")
    vs = psub.add_parser("versions", help="the refreshes so far, and which one is in use")
    vs.add_argument("--versions", type=Path)
    vs.add_argument("--use", help="put this version in use (a rollback)")
    qu = psub.add_parser("query", help="exemplars for a customer line")
    qu.add_argument("text")
    qu.add_argument("--playbook", type=Path)
    qu.add_argument("-k", type=int, default=3)

    sg = sub.add_parser("suggest", help="suggest the agent's next reply for a call so far")
    sg.add_argument("turns", nargs="+", help="'customer: ...' / 'agent: ...', oldest first")
    sg.add_argument("--playbook", type=Path)
    sg.add_argument("--intent-model", type=Path)
    sg.add_argument("--no-llm", action="store_true", help="exemplars only")
    sg.add_argument("--json", action="store_true")

    fl = sub.add_parser("flow", help="play an outbound flow: type the customer's lines")
    fl.add_argument("file", type=Path)
    fl.add_argument("--var", action="append", default=[], help="call variable name=value")
    fl.add_argument("--intent-model", type=Path)


def _intent_model(path: Path | None):  # type: ignore[no-untyped-def]
    from dialogue.defaults import default_intent_model
    from dialogue.intents import IntentModel

    return IntentModel.load(path) if path else default_intent_model()


def _playbook(path: Path | None, intent_model):  # type: ignore[no-untyped-def]
    from dialogue.defaults import current_playbook
    from dialogue.playbook import Playbook

    return Playbook.load(path) if path else current_playbook(intent_model, _versions_root(None))


def _versions_root(path: Path | None) -> Path:
    from assist.settings import AppSettings

    return path or AppSettings().playbooks()


def _first_card_score(playbook, classifier, cases) -> float:  # type: ignore[no-untyped-def]
    from dialogue.defaults import default_facts, policy_text
    from dialogue.reply_eval import score_instant
    from dialogue.suggest import Suggester

    suggester = Suggester(classifier, playbook, None, policy_text(), facts=default_facts())
    return score_instant("refresh", suggester, cases).first_right


async def _refresh(args: argparse.Namespace) -> int:
    from campaigns.db import connect
    from campaigns.playbook_refresh import refresh
    from dialogue.defaults import PLAYBOOK_CALLS, current_playbook
    from dialogue.playbook import read_calls
    from dialogue.playbook_versions import PlaybookVersions
    from dialogue.reply_eval import read_cases

    versions = PlaybookVersions(_versions_root(args.versions))
    classifier = _intent_model(None)
    before = current_playbook(classifier, versions.root)
    cases = read_cases(args.eval) if args.eval else []
    async with await connect() as db:
        playbook, record = await refresh(db.pool, versions,
                                         read_calls(args.calls or PLAYBOOK_CALLS), classifier,
                                         previous=before)
    if cases:
        record.figures = {"first_card_right_before": _first_card_score(before, classifier, cases),
                          "first_card_right_after": _first_card_score(playbook, classifier,
                                                                      cases)}
        versions.annotate(record)
    print(record.model_dump_json(indent=2))
    return 0


def _versions(args: argparse.Namespace) -> int:
    from dialogue.playbook_versions import PlaybookVersions

    versions = PlaybookVersions(_versions_root(args.versions))
    if args.use:
        versions.point(args.use)
    current = versions.current()
    for r in versions.history():
        c = r.changes
        mark = "*" if r.version == current else " "
        print(f"{mark} {r.version}  {r.created_at:%Y-%m-%d %H:%M}  from {r.parent or 'shipped'}"
              f"  {r.calls} calls ({r.store_calls} live), top agents {','.join(c.top_agents_after)}"
              f" (+{len(c.agents_in)} -{len(c.agents_out)}), replies {c.exemplars_after} "
              f"(+{c.added} -{c.removed}), demoted {c.demoted_total}, cards judged "
              f"{r.feedback_cards}" + "".join(f", {k} {v:.3f}" for k, v in r.figures.items()))
    if not current:
        print("no refreshed version in use: the shipped playbook")
    return 0


def _intents(args: argparse.Namespace) -> int:
    from dialogue.intents import IntentConfig, IntentModel, read_examples

    if args.action == "train":
        texts, labels = read_examples(args.train)
        config = IntentConfig(threshold=args.threshold)
        model = IntentModel.train(texts, labels, config, source=str(args.train))
        model.save(args.out)
        out: dict[str, object] = {"model": str(args.out), "threshold": model.threshold,
                                  **model.provenance}
        if args.test:
            out["test"] = model.evaluate(*read_examples(args.test)).model_dump()
        print(json.dumps(out, ensure_ascii=False, indent=2))
        return 0
    if args.action == "eval":
        report = IntentModel.load(args.model).evaluate(*read_examples(args.test))
        print(report.model_dump_json(indent=2))
        return 0
    model = _intent_model(args.model)
    for text in args.text:
        p = model.predict(text)
        top = ", ".join(f"{label} {prob:.2f}" for label, prob in p.top)
        print(f"{p.label:<20} {p.confidence:.2f}  {text}   [{top}]")
    return 0


def _playbook_cmd(args: argparse.Namespace) -> int:
    from dialogue.leaderboard import LeaderboardRule
    from dialogue.playbook import Playbook, read_calls

    if args.action == "build":
        rule = LeaderboardRule(min_calls=args.min_calls, top_share=args.top_share)
        classifier = _intent_model(args.intent_model)
        playbook = Playbook.build(read_calls(args.calls), rule, classifier)
        playbook.save(args.out)
        print(rule.describe())
        print(json.dumps(playbook.stats.model_dump() if playbook.stats else {}, indent=2))
        return 0
    if args.action == "refresh":
        return asyncio.run(_refresh(args))
    if args.action == "versions":
        return _versions(args)
    playbook = _playbook(args.playbook, None if args.playbook else _intent_model(None))
    if args.action == "leaderboard":
        if args.json:
            print(json.dumps([s.model_dump() for s in playbook.standings], indent=2))
            return 0
        print(playbook.rule.describe())
        print(f"{'rank':>4}  {'agent':<10} {'calls':>5} {'conv':>5} {'rate':>6}  95% Wilson")
        for s in playbook.standings:
            star = "  top" if s.top else ""
            print(f"{s.rank or '-':>4}  {s.agent_id:<10} {s.calls:>5} {s.successes:>5} "
                  f"{s.rate:>6.1%}  [{s.lower:.1%}, {s.upper:.1%}]{star}")
        return 0
    from dialogue.playbook import RetrievalConfig
    from dialogue.suggest import detect_language

    intent = _intent_model(None).predict(args.text)
    for e in playbook.retrieve(args.text, intent.label, detect_language(args.text),
                               RetrievalConfig(k=args.k)):
        print(f"{e.score:.3f} [{e.agent_id} {e.call_id} {e.outcome}] {e.context}\n      -> "
              f"{e.reply}")
    return 0


def _parse_turns(raw: list[str]):  # type: ignore[no-untyped-def]
    from dialogue.types import Turn

    turns = []
    for item in raw:
        speaker, sep, text = item.partition(":")
        if not sep or speaker.strip().lower() not in ("agent", "customer"):
            raise SystemExit(f"callwise: a turn is 'customer: text' or 'agent: text', got {item!r}")
        turns.append(Turn(speaker=speaker.strip().lower(), text=text.strip()))  # type: ignore[arg-type]
    return turns


async def _suggest(args: argparse.Namespace) -> int:
    from dialogue.defaults import default_facts, policy_text
    from dialogue.llm import make_client
    from dialogue.suggest import Suggester

    history = _parse_turns(args.turns)
    classifier = _intent_model(args.intent_model)
    llm = None if args.no_llm else make_client()
    suggester = Suggester(classifier, _playbook(args.playbook, classifier), llm, policy_text(),
                          facts=default_facts())
    warm_ms = None
    try:
        if llm is not None:  # the shared prompt, from the disk cache after the first run
            started = time.perf_counter()
            await suggester.warm_up()
            warm_ms = (time.perf_counter() - started) * 1000
        result = await suggester.suggest("cli", history)
    finally:
        if llm is not None:
            await llm.close()
    if args.json:
        print(result.model_dump_json(indent=2))
        return 0
    a = result.assist
    print(f"intent: {a.intent.label} ({a.intent.confidence:.2f})   language: {a.language}")
    if a.override:
        print(f"override: {a.override.action} ({a.override.why})")
    for e in a.exemplars:
        print(f"exemplar [{e.agent_id} {e.call_id} {e.outcome}, sim {e.score:.2f}]: {e.reply}")
    for s in result.suggestions:
        print(f"suggestion ({s.source}): {s.text}")
    for f in result.withheld:
        print(f"LLM reply withheld ({f.rule}): {f.why}")
    if result.llm_error:
        print(f"LLM unavailable: {result.llm_error}")
    first = f"first token {result.first_token_ms:.0f} ms, " if result.first_token_ms else ""
    warm = f"shared prompt ready in {warm_ms:.0f} ms, " if warm_ms is not None else ""
    print(f"-- {warm}intent {a.intent_ms:.0f} ms, retrieval {a.retrieval_ms:.0f} ms, {first}"
          f"total {result.total_ms:.0f} ms")
    return 0


async def _flow(args: argparse.Namespace) -> int:
    from dialogue.flows import Flow, FlowSession

    variables = dict(v.split("=", 1) for v in args.var if "=" in v)
    flow = Flow.load(args.file)
    session = FlowSession(flow, _intent_model(args.intent_model), variables)
    turn = session.start()
    print(f"bot: {turn.text}")
    while not turn.done:
        try:
            line = await asyncio.to_thread(input, "customer> ")
        except EOFError:
            break
        turn = await session.hear(line)
        intent = f"{turn.intent.label} {turn.intent.confidence:.2f}" if turn.intent else "-"
        print(f"     [{intent} | {turn.reason}]\nbot: {turn.text}")
    if turn.done:
        print(f"-- exit: {turn.exit}; slots: {json.dumps(turn.slots, ensure_ascii=False)}")
    return 0


def run(args: argparse.Namespace) -> int:
    from dialogue.corpora import CorpusError
    from dialogue.encoders import EncoderError
    from dialogue.intents import IntentDataError
    from dialogue.llm import LLMError
    from dialogue.playbook import PlaybookError

    try:
        if args.command == "intents":
            return _intents(args)
        if args.command == "playbook":
            return _playbook_cmd(args)
        if args.command == "suggest":
            return asyncio.run(_suggest(args))
        return asyncio.run(_flow(args))
    except (IntentDataError, PlaybookError, CorpusError, EncoderError, LLMError,
            FileNotFoundError) as exc:
        print(f"callwise: {exc}", file=sys.stderr)
        return 2


DEMO_FLOW_LINES = ["yes, speaking", "sure, go ahead", "what's the fee if I do six months?",
                   "yes, please set that up"]


async def demo_flow() -> int:
    from dialogue.defaults import flow_path
    from dialogue.flows import Flow, FlowSession

    flow = Flow.load(flow_path("installment_offer_en.yaml"))
    session = FlowSession(flow, _intent_model(None), {"customer_name": "Jordan Lee",
                                                      "statement_amount": "4,800 dollars"})
    turn = session.start()
    print(f"     bot: {turn.text}")
    for line in DEMO_FLOW_LINES:
        if turn.done:
            break
        turn = await session.hear(line)
        intent = f"{turn.intent.label} {turn.intent.confidence:.2f}" if turn.intent else "-"
        print(f"customer: {line}\n          [{intent} | {turn.reason}]\n     bot: {turn.text}")
    print(f"-- exit: {turn.exit or 'still in ' + turn.state}; slots: "
          f"{ {k: v.text for k, v in turn.slots.items()} }")
    return 0
