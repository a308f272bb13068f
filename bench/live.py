"""The live call as the agent gets it: end of the customer's words -> first card, -> LLM first
token, and how many concurrent calls with suggestions one process sustains in real time.

    python bench/live.py [--calls 1,2,4] [--file ../fixtures/calls/demo_call_stereo.flac]
    python bench/live.py --mono            # the same call mixed to one channel
    python bench/live.py --no-llm          # exemplar cards only
    python bench/live.py --churn 100       # memory after 100 short calls, 4 at a time

Each call is the recording replayed into the runtime (assist.replay) at real-time speed as 20 ms
frames, started STAGGER seconds apart. "The customer stopped speaking" is the wall time the
replay handed over the audio at the utterance's end; latencies run from there to the moment a
subscriber of the hub (the agent's sidebar) receives the event: the endpointing silence, the
ASR, for mono calls the diarizer's guess, intent, retrieval and the event bus are all inside.
Loop lag is how late a 50 ms timer on the event loop that reads every call's audio fires (a
stalled loop delays every call). Backlog is the audio seconds queued for the ASR, sampled.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import warnings
from pathlib import Path

from common import ROOT, machine, percentile

warnings.filterwarnings("ignore")
STAGGER = 2.3  # seconds between the starts of concurrent calls


class Watch:
    """A sidebar that notes when each event arrives."""

    def __init__(self) -> None:
        self.t0: dict[str, float] = {}
        self.customer_end: dict[tuple[str, int], float] = {}
        self.first_card: dict[tuple[str, int], float] = {}
        self.first_token: dict[tuple[str, int], float] = {}
        self.llm_card: dict[tuple[str, int], float] = {}
        self.final_text: list[float] = []
        self.withheld: dict[str, int] = {}

    def see(self, event, speed: float) -> None:  # type: ignore[no-untyped-def]
        now = time.monotonic()
        t0 = self.t0.get(event.call_id)
        if t0 is None:
            return
        if event.type == "utterance" and event.revision == 0:
            ended = t0 + event.end_s / speed
            self.final_text.append(now - ended)
            if event.role != "agent":
                self.customer_end[(event.call_id, event.seq)] = ended
        key = (event.call_id, getattr(event, "seq", None) or 0)
        if event.type == "suggestion_shown":
            self.first_card.setdefault(key, now)
            if event.source == "llm":
                self.llm_card.setdefault(key, now)
        elif event.type == "suggestion_draft":
            self.first_token.setdefault(key, now)
        elif event.type == "suggestion_withheld":
            self.withheld[event.reason] = self.withheld.get(event.reason, 0) + 1

    def latencies(self, marks: dict[tuple[str, int], float]) -> list[float]:
        return [marks[k] - t for k, t in self.customer_end.items() if k in marks]


async def loop_lag(samples: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        t = time.monotonic()
        await asyncio.sleep(0.05)
        samples.append(time.monotonic() - t - 0.05)


async def run(runtime, path: Path, n: int, mono: bool, speed: float) -> dict:  # type: ignore[no-untyped-def]
    from assist.replay import replay_file
    from assist.runtime import CallInfo

    watch = Watch()
    sub, _ = runtime.subscribe(lambda e, m: True, maxsize=100_000)

    async def reader() -> None:
        async for event in sub:
            watch.see(event, speed)

    lag: list[float] = []
    stop = asyncio.Event()
    tasks = [asyncio.create_task(reader()), asyncio.create_task(loop_lag(lag, stop))]

    async def one(i: int) -> None:
        await asyncio.sleep(i * STAGGER)
        call_id = f"bench-{n}-{i}-{time.time_ns()}"
        info = CallInfo(call_id=call_id, agent_id="A01", language="en",
                        layout="mono" if mono else "stereo",
                        channel_roles=None if mono else ["agent", "customer"])
        watch.t0[call_id] = time.monotonic()
        await replay_file(runtime, path, info, speed=speed, layout=info.layout)

    started = time.monotonic()
    await asyncio.gather(*(one(i) for i in range(n)))
    wall = time.monotonic() - started
    stop.set()
    sub.close()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {"watch": watch, "lag": lag, "wall": wall}


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def churn(runtime, path: Path, calls: int) -> None:  # type: ignore[no-untyped-def]
    """Many short calls, four at a time: is what a call holds given back when it ends?"""
    import tempfile

    import soundfile as sf

    from assist.replay import replay_file
    from assist.runtime import CallInfo
    from speech.audio_file import load_audio

    clip = load_audio(path)
    with tempfile.TemporaryDirectory() as tmp:
        short = Path(tmp) / "short.flac"
        sf.write(short, clip.samples[:, : clip.sample_rate * 8].T, clip.sample_rate)
        sem = asyncio.Semaphore(4)

        async def one(i: int) -> None:
            async with sem:
                info = CallInfo(call_id=f"churn-{i}-{time.time_ns()}", agent_id="A01",
                                language="en", layout="stereo",
                                channel_roles=["agent", "customer"])
                await replay_file(runtime, short, info, speed=20.0)

        marks = []
        for done in range(0, calls, 25):
            await asyncio.gather(*(one(i) for i in range(done, min(calls, done + 25))))
            marks.append((min(calls, done + 25), rss_mb(), len(runtime.live_calls())))
    for n, rss, live in marks:
        print(f"after {n:>4} calls: RSS {rss:7.0f} MB, live calls held {live}")


def fmt(values: list[float]) -> str:
    if not values:
        return "   -  /   -  (n=0)"
    return f"{percentile(values, 50):5.2f} / {percentile(values, 95):5.2f} s (n={len(values)})"


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--file", type=Path, default=ROOT / "fixtures/calls/demo_call_stereo.flac")
    parser.add_argument("--calls", default="1,2,4")
    parser.add_argument("--mono", action="store_true", help="mix the call to one channel")
    parser.add_argument("--no-llm", action="store_true")
    parser.add_argument("--speed", type=float, default=1.0)
    parser.add_argument("--churn", type=int, default=0, help="only the memory check: N calls")
    args = parser.parse_args()

    from assist.runtime import Runtime
    from dialogue.defaults import default_facts, default_intent_model, default_playbook, policy_text
    from dialogue.llm import make_client
    from dialogue.suggest import Suggester
    from speech import SpeechModels

    speech = SpeechModels.load()
    classifier = default_intent_model()
    llm = None if args.no_llm else make_client()
    suggester = Suggester(classifier, default_playbook(classifier), llm, policy_text(),
                          facts=default_facts())
    print(f"machine: {machine()}")
    print(f"models: packaged whisper base (CPU int8), pyannote segmentation + resemblyzer, "
          f"LLM {'none' if llm is None else type(llm).__name__}; call: {args.file.name} "
          f"({'mono' if args.mono else 'two-track'}), {args.speed:g}x real time, "
          f"calls started {STAGGER} s apart")
    if args.churn:
        runtime = Runtime(speech, Suggester(classifier, suggester.playbook, None, policy_text(),
                                            facts=suggester.facts),
                          None)
        print(f"before: RSS {rss_mb():7.0f} MB (models loaded)")
        await churn(runtime, args.file, args.churn)
        return
    print(f"{'calls':>5}  {'final text p50/p95':>24}  {'first card p50/p95':>24}  "
          f"{'LLM 1st token p50/p95':>24}  {'LLM card p50/p95':>24}  loop lag p99  withheld")
    for n in [int(x) for x in args.calls.split(",")]:
        runtime = Runtime(speech, suggester, None)
        await runtime.ready()  # a server warms its LLM at start-up, before calls come
        result = await run(runtime, args.file, n, args.mono, args.speed)
        runtime.executor.shutdown()  # the models stay loaded for the next round
        w: Watch = result["watch"]
        print(f"{n:>5}  {fmt(w.final_text):>24}  {fmt(w.latencies(w.first_card)):>24}  "
              f"{fmt(w.latencies(w.first_token)):>24}  {fmt(w.latencies(w.llm_card)):>24}  "
              f"{percentile(result['lag'], 99) * 1000:8.0f} ms  {w.withheld}", flush=True)
    if llm is not None:
        await llm.close()
    speech.close()


if __name__ == "__main__":
    asyncio.run(main())
