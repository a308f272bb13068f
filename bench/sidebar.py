"""What the agent sees, measured in the browser: end of the customer's words -> the first card
painted in the sidebar, and -> the first LLM text painted in its card.

    python bench/sidebar.py [--calls 1] [--rounds 2] [--file fixtures/calls/offer_call_stereo.flac]
                            [--shots DIR]

Each call is the recording streamed at real-time speed as 8 kHz mu-law Twilio frames into the
real app (uvicorn, the bundled models, the embedded LLM) for its own agent, whose sidebar is
open in headless Chromium (Debian's, driven by Playwright). The page itself records, after the
frame that shows a card is painted, the wall time minus the moment the customer's audio ended
(the server's `at - latency_ms` of the event: same machine, same clock). The store is left out
(the record is off the screen's path). `--shots` saves the sidebar mid-call and after the call,
and the supervisor's live list.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import warnings
from pathlib import Path

from common import ROOT, machine, percentile

sys.path.insert(0, str(ROOT))
warnings.filterwarnings("ignore")

from assist.app import create_app  # noqa: E402
from assist.auth import TokenSigner  # noqa: E402
from assist.runtime import Runtime  # noqa: E402
from assist.settings import AppSettings  # noqa: E402
from speech.audio_file import load_audio  # noqa: E402
from tests.browser import chromium, new_page  # noqa: E402
from tests.live_app import LiveApp  # noqa: E402
from tests.test_live_e2e import MEDIA_TOKEN, stream_realtime  # noqa: E402
from tests.twilio_frames import twilio_messages  # noqa: E402

STAGGER = 2.3


async def one_round(live: LiveApp, signer: TokenSigner, browser, clip, calls: int,
                    round_no: int, shots: Path | None) -> list[dict]:
    pages, streams = [], []
    boss = None
    if shots is not None:
        boss = await new_page(browser, live.base, width=1100)
        await boss.goto("/live#token=" + signer.issue("boss", "supervisor", None))
    for i in range(calls):
        agent_id = f"B{i:02d}"
        page = await new_page(browser, live.base)
        await page.goto("/sidebar#token=" + signer.issue(f"agent{i}", "agent", agent_id))
        await page.wait_for_selector("body[data-connection=live]")
        pages.append(page)
        call_id = f"bench-{round_no}-{i}-{int(time.time())}"
        messages = twilio_messages([clip.samples[1], clip.samples[0]], clip.sample_rate,
                                   ["inbound", "outbound"], call_sid="CA" + call_id,
                                   custom={"call_id": call_id, "agent_id": agent_id})
        streams.append(asyncio.create_task(stream_realtime(live, messages, 2)))
        await asyncio.sleep(STAGGER)
    if shots is not None and boss is not None:
        await asyncio.sleep(12)
        await pages[0].screenshot(path=shots / "sidebar-mid-call.png", full_page=True)
        await boss.screenshot(path=shots / "live-view.png", full_page=True)
    await asyncio.gather(*streams)
    await asyncio.sleep(12)  # the last turn's AI reply
    if shots is not None:
        await pages[0].screenshot(path=shots / "sidebar-wrap-up.png", full_page=True)
    metrics = []
    for page in pages:
        metrics += await page.evaluate("window.callwiseMetrics")
        await page.context.close()
    if boss is not None:
        await boss.context.close()
    return metrics


def fmt(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{percentile(values, 50):5.2f} / {percentile(values, 95):5.2f} s (n={len(values)})"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=1, help="concurrent calls per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--file", type=Path, default=ROOT / "fixtures/calls/offer_call_stereo.flac")
    parser.add_argument("--shots", type=Path, default=None)
    args = parser.parse_args()
    if args.shots is not None:
        args.shots.mkdir(parents=True, exist_ok=True)
    settings = AppSettings(_env_file=None, media_tokens=[MEDIA_TOKEN])  # type: ignore[call-arg]
    runtime = await Runtime.load(settings, database=False)
    await runtime.ready()
    signer = TokenSigner(b"bench-secret-0123456789abcdef-xy!")
    live = await LiveApp.start(create_app(settings, runtime=runtime, signer=signer,
                                          connect_database=False))
    clip = load_audio(args.file)
    from dialogue.llm_models import resolve_model_path

    print(f"{machine()}; whisper {settings.speech.whisper_model or 'base (packaged)'}, LLM "
          f"{resolve_model_path(settings.llm.model_path).name}; {args.file.name} "
          f"({clip.duration:.0f} s) at real time, {args.calls} call(s) x {args.rounds} rounds")
    metrics: list[dict] = []
    try:
        async with chromium() as browser:
            for r in range(args.rounds):
                metrics += await one_round(live, signer, browser, clip, args.calls, r,
                                           args.shots if r == 0 else None)
    finally:
        await live.stop()
        await runtime.aclose()
    for kind, title in (("first_card", "first card painted"),
                        ("first_llm_text", "first LLM text painted")):
        page = [m["ms"] / 1000 for m in metrics if m["kind"] == kind]
        server = [m["server_ms"] / 1000 for m in metrics if m["kind"] == kind]
        print(f"  {title:24s} in the page p50/p95 {fmt(page)}; at the server {fmt(server)}")


if __name__ == "__main__":
    asyncio.run(main())
