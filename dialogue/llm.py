"""One streaming chat client for the LLM, two backends.

- ``OpenAICompatibleClient``: a served model behind ``POST /v1/chat/completions`` with
  ``stream: true`` (vLLM on GPU, llama.cpp server on CPU); production's normal case.
- ``LocalGGUFClient``: an embedded llama.cpp model (cyllama), the offline default. Generation
  runs on one worker thread and hands text to asyncio through a queue, so the event loop never
  waits on the model.

``make_client()`` picks one from ``LLMSettings`` (env prefix ``CALLWISE_LLM_``).

Cache reuse across turns of a call (embedded backend). The llama.cpp context keeps the KV cache
of the tokens it has evaluated. Each turn's prompt is the previous turn's prompt plus the reply
plus the new user message, so the client keeps, per ``session``, the token list whose KV is in
the cache, and evaluates only what follows the longest common prefix with the new prompt (a
diverging suffix is removed from the KV first). One context serves all calls: when another
session's turn comes, the live session's KV is copied out (``get_state_seq_data``, about 12 KB a
token for this model) into a small LRU, and restored when that session speaks again. A session
with nothing saved starts from whatever is live, so a system prompt shared by all calls is not
evaluated again either. We chose this over one context per session because each context
reserves KV for the whole n_ctx plus compute buffers (~100 MB here at 4096) however short the
call, while a saved state costs 12 KB per token actually used; and over several sequences in one
unified cache because a full cache then fails mid-decode and needs eviction on the hot path.
Saving takes ~11 ms per 1,000 tokens, restoring under 1 ms; generation is serial anyway.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, Self, runtime_checkable

import aiohttp
from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from .llm_models import ModelFileError, check_gguf, model_by_name, resolve_model_path

if TYPE_CHECKING:
    from cyllama.llama.llama_cpp import LlamaModel, LlamaSampler, LlamaVocab

log = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "qwen2.5-coder-0.5b-instruct"
Finish = Literal["stop", "length", "cancelled"]


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class LLMSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CALLWISE_LLM_",
        env_file=os.environ.get("CALLWISE_SETTINGS", ".env"),
        extra="ignore",
        protected_namespaces=(),
    )

    base_url: str | None = Field(
        default=None,
        description="OpenAI-compatible server (vLLM, llama.cpp server); unset: embedded",
    )
    model: str = Field(default=DEFAULT_MODEL_NAME, description="model name sent to the server")
    api_key: SecretStr | None = None
    timeout_s: float = Field(default=30.0, gt=0, description="connect, first token, and any stall")
    max_tokens: int = Field(default=256, gt=0)
    temperature: float = Field(default=0.2, ge=0)
    model_path: Path | None = Field(
        default=None, description="GGUF file; unset: the packaged model"
    )
    packaged: Literal["0.5b", "1.5b"] = Field(
        default="0.5b", description="which packaged model when no model_path is set (1.5b: "
        "install its parts, see README)")
    n_ctx: int = Field(default=4096, gt=0)
    n_threads: int = Field(default=2, gt=0)


class LLMError(RuntimeError):
    """The LLM could not produce a reply; the message says what failed and where."""


@runtime_checkable
class LLMClient(Protocol):
    def stream(
        self,
        messages: list[ChatMessage],
        *,
        session: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        stop: list[str] | None = None,
    ) -> AsyncIterator[str]:
        """Text pieces of the reply, as they are generated. ``session``: the call id."""
        ...

    async def complete(
        self,
        messages: list[ChatMessage],
        *,
        session: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        stop: list[str] | None = None,
    ) -> str: ...

    async def close(self) -> None: ...


class _ClientBase:
    max_tokens: int
    temperature: float

    def stream(
        self,
        messages: list[ChatMessage],
        *,
        session: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        stop: list[str] | None = None,
    ) -> AsyncIterator[str]:
        raise NotImplementedError

    async def complete(
        self,
        messages: list[ChatMessage],
        *,
        session: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        stop: list[str] | None = None,
    ) -> str:
        pieces = self.stream(
            messages, session=session, max_tokens=max_tokens, temperature=temperature, stop=stop
        )
        return "".join([piece async for piece in pieces])

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


# ---- OpenAI-compatible server ---------------------------------------------------------------


class OpenAICompatibleClient(_ClientBase):
    """Streams ``/v1/chat/completions`` over Server-Sent Events; one aiohttp session per client.

    ``session`` is not sent: vLLM (prefix caching) and llama.cpp server (slot prompt cache) reuse
    a shared prompt prefix on their own.
    """

    def __init__(
        self,
        base_url: str,
        model: str = DEFAULT_MODEL_NAME,
        api_key: str | None = None,
        timeout_s: float = 30.0,
        *,
        max_tokens: int = 256,
        temperature: float = 0.2,
    ) -> None:
        base = base_url.rstrip("/")
        # Accept both "http://host:8000" and "http://host:8000/v1", as users copy either.
        self.base_url = base.removesuffix("/v1")
        self.url = f"{self.base_url}/v1/chat/completions"
        self.model = model
        self.timeout_s = timeout_s
        self.max_tokens = max_tokens
        self.temperature = temperature
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http: aiohttp.ClientSession | None = None

    async def stream(
        self,
        messages: list[ChatMessage],
        *,
        session: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        stop: list[str] | None = None,
    ) -> AsyncGenerator[str, None]:
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": [m.model_dump() for m in messages],
            "stream": True,
            "max_tokens": max_tokens or self.max_tokens,
            "temperature": self.temperature if temperature is None else temperature,
        }
        if stop:
            payload["stop"] = stop
        deadline = asyncio.get_running_loop().time() + self.timeout_s
        response = await self._post(payload, deadline)
        pieces = self._content(response)
        finished = False
        try:
            first = True
            while True:
                try:
                    piece = await self._next_piece(pieces, deadline if first else None)
                except StopAsyncIteration:
                    break
                first = False
                yield piece
            finished = True
        finally:
            await pieces.aclose()
            if finished:
                response.release()
            else:
                response.close()  # dropping the connection tells the server to stop generating

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            # No total timeout: a long reply is fine as long as tokens keep coming (sock_read).
            timeout = aiohttp.ClientTimeout(
                total=None, sock_connect=self.timeout_s, sock_read=self.timeout_s
            )
            self._http = aiohttp.ClientSession(timeout=timeout, headers=self._headers)
        return self._http

    async def _post(self, payload: dict[str, Any], deadline: float) -> aiohttp.ClientResponse:
        try:
            async with asyncio.timeout_at(deadline):
                response = await self._session().post(self.url, json=payload)
                if response.status >= 400:
                    try:
                        body = await response.text(errors="replace")
                    finally:
                        response.release()
                    raise LLMError(
                        f"LLM server {self.url} answered HTTP {response.status} "
                        f"{response.reason}: {_error_message(body)}"
                    )
        except TimeoutError as exc:
            raise LLMError(f"LLM server {self.url}: no answer within {self.timeout_s:g} s") from exc
        except aiohttp.ClientConnectorError as exc:
            refused = isinstance(exc.os_error, ConnectionRefusedError)
            reason = "connection refused" if refused else str(exc.os_error or exc)
            raise LLMError(
                f"cannot connect to the LLM server at {self.url}: {reason} (is it running? "
                "CALLWISE_LLM_BASE_URL)"
            ) from exc
        except aiohttp.ClientError as exc:
            raise LLMError(f"request to the LLM server {self.url} failed: {exc}") from exc
        return response

    async def _next_piece(self, pieces: AsyncIterator[str], deadline: float | None) -> str:
        try:
            if deadline is None:
                return await anext(pieces)  # after the first token, sock_read catches a stall
            async with asyncio.timeout_at(deadline):
                return await anext(pieces)
        except TimeoutError as exc:
            what = "no first token" if deadline is not None else "the reply stalled: no data"
            raise LLMError(
                f"LLM server {self.url}: {what} within {self.timeout_s:g} s "
                "(CALLWISE_LLM_TIMEOUT_S)"
            ) from exc
        except aiohttp.ClientPayloadError as exc:
            raise LLMError(f"LLM server {self.url} dropped the reply mid-stream: {exc}") from exc

    async def _content(self, response: aiohttp.ClientResponse) -> AsyncGenerator[str, None]:
        if response.content_type == "application/json":
            # Some servers (cyllama's own) ignore stream=true and send the whole completion.
            body = await response.text(errors="replace")
            yield self._message_content(body)
            return
        async for data in _sse_data(response, self.url):
            if data.strip() == "[DONE]":
                return
            piece = self._delta_content(data)
            if piece:
                yield piece

    def _delta_content(self, data: str) -> str | None:
        try:
            chunk = json.loads(data)
        except json.JSONDecodeError:
            chunk = None
        if not isinstance(chunk, dict):
            raise LLMError(f"malformed SSE chunk from {self.url}: {data[:200]!r}")
        if chunk.get("error"):
            raise LLMError(f"LLM server {self.url} failed mid-reply: {_error_message(data)}")
        choices = chunk.get("choices")
        if not choices:
            return None  # e.g. a final usage-only chunk
        first = choices[0] if isinstance(choices, list) else None
        delta = first.get("delta", {}) if isinstance(first, dict) else None
        content = delta.get("content") if isinstance(delta, dict) else False  # not a delta
        if content is not None and not isinstance(content, str):
            raise LLMError(f"malformed SSE chunk from {self.url}: {data[:200]!r}")
        return content

    def _message_content(self, body: str) -> str:
        try:
            content = json.loads(body)["choices"][0]["message"]["content"]
        except (json.JSONDecodeError, KeyError, IndexError, TypeError) as exc:
            raise LLMError(f"unexpected JSON reply from {self.url}: {body[:200]!r}") from exc
        if not isinstance(content, str):
            raise LLMError(f"unexpected JSON reply from {self.url}: {body[:200]!r}")
        return content


async def _sse_data(response: aiohttp.ClientResponse, url: str) -> AsyncIterator[str]:
    """The ``data`` of each Server-Sent Event (multi-line data joined with newlines)."""
    lines: list[str] = []
    try:
        async for raw in response.content:
            line = raw.decode("utf-8").rstrip("\r\n")
            if not line:
                if lines:
                    yield "\n".join(lines)
                    lines = []
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                lines.append(value)
            elif name == "error":  # llama.cpp server reports some failures this way
                raise LLMError(f"LLM server {url} failed mid-reply: {_error_message(value)}")
            # comments (":"), event, id and retry carry nothing we use
    except (UnicodeDecodeError, ValueError) as exc:
        raise LLMError(f"malformed SSE stream from {url}: {exc}") from exc
    if lines:
        yield "\n".join(lines)


def _error_message(body: str) -> str:
    """The human part of an error body: OpenAI/vLLM/llama.cpp ``{"error": {"message"}}`` etc."""
    try:
        data = json.loads(body)
    except json.JSONDecodeError:
        return body.strip()[:500] or "(empty body)"
    if isinstance(data, dict):
        error = data.get("error", data)
        if isinstance(error, dict):
            message = error.get("message") or error.get("detail")
            if message:
                return str(message)
        elif error:
            return str(error)
    return body.strip()[:500]


# ---- embedded llama.cpp (cyllama) -----------------------------------------------------------


@dataclass(frozen=True)
class GenerationStats:
    """What one embedded generation did; ``LocalGGUFClient.last_stats`` holds the latest."""

    session: str | None
    prompt_tokens: int
    reused_tokens: int  # prompt tokens whose KV was already in the cache
    evaluated_tokens: int  # prompt tokens evaluated for this reply
    generated_tokens: int
    queued_s: float  # waiting for the worker (another generation was running)
    prefill_s: float
    first_token_s: float | None  # from the call to the first text piece
    decode_s: float
    finish_reason: Finish


_END = object()


@dataclass
class _Job:
    messages: list[dict[str, str]]
    session: str | None
    max_tokens: int
    temperature: float
    stop: list[str]
    emit: Callable[[object], None]
    submitted: float = field(default_factory=time.perf_counter)
    cancel: threading.Event = field(default_factory=threading.Event)
    started: threading.Event = field(default_factory=threading.Event)
    prefix_dir: Path | None = None  # keep this prompt's KV on disk (the shared system prompt)


@dataclass
class _SavedSession:
    tokens: list[int]
    state: bytes


class LocalGGUFClient(_ClientBase):
    """An embedded GGUF model; one generation at a time, others wait their turn.

    Up to ``max_sessions`` calls keep a saved cache (about 12 KB a token for the packaged model,
    so 8 calls of 1,000 tokens hold ~100 MB); the least recently used one is dropped first.

    Loading takes a couple of seconds and blocks; from async code construct it in a thread
    (``await asyncio.to_thread(LocalGGUFClient, path)``).
    """

    def __init__(
        self,
        model_path: str | Path,
        n_ctx: int = 4096,
        n_threads: int = 2,
        *,
        max_tokens: int = 256,
        temperature: float = 0.2,
        max_sessions: int = 8,
        seed: int | None = None,
    ) -> None:
        try:
            self.model_path = check_gguf(model_path, source="model_path")
        except ModelFileError as exc:
            raise LLMError(f"embedded LLM: {exc}") from exc
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.n_threads = n_threads
        self._engine = _Engine(self.model_path, n_ctx, n_threads, max_sessions, seed)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="callwise-llm")
        self._closed = False

    @property
    def load_s(self) -> float:
        return self._engine.load_s

    @property
    def last_stats(self) -> GenerationStats | None:
        return self._engine.last_stats

    async def stream(
        self,
        messages: list[ChatMessage],
        *,
        session: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        stop: list[str] | None = None,
    ) -> AsyncGenerator[str, None]:
        if self._closed:
            raise LLMError(f"embedded LLM {self.model_path.name}: the client is closed")
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()
        job = _Job(
            messages=[m.model_dump() for m in messages],
            session=session,
            max_tokens=max_tokens or self.max_tokens,
            temperature=self.temperature if temperature is None else temperature,
            stop=list(stop or []),
            emit=lambda item: _hand_over(loop, queue, item),
        )
        future = loop.run_in_executor(self._executor, self._engine.run, job)
        try:
            while (item := await queue.get()) is not _END:
                if isinstance(item, BaseException):
                    raise item
                assert isinstance(item, str)
                yield item
        finally:
            self._engine.cancel(job)  # no-op once it has finished
            if job.started.is_set():
                # Wait for the worker to notice (it checks between tokens, and llama.cpp aborts a
                # running decode), so the next turn starts from a consistent cache.
                await asyncio.wait([future])

    async def warm(self, messages: list[ChatMessage], *, session: str,
                   prefix_dir: Path | None = None) -> None:
        """Evaluates `messages` (the prompt every call starts with) into the cache. With
        `prefix_dir`, their KV is kept there on disk and read back by the next process with the
        same model and prompt: a one-shot `callwise suggest` then skips the ~15 s of prefill."""
        if self._closed:
            raise LLMError(f"embedded LLM {self.model_path.name}: the client is closed")
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()
        job = _Job(messages=[m.model_dump() for m in messages], session=session, max_tokens=1,
                   temperature=0.0, stop=[], emit=lambda item: _hand_over(loop, queue, item),
                   prefix_dir=prefix_dir)
        await loop.run_in_executor(self._executor, self._engine.run, job)
        while (item := await queue.get()) is not _END:
            if isinstance(item, BaseException):
                raise item

    async def forget(self, session: str) -> None:
        """Drop a call's saved cache when the call ends."""
        await self._on_worker(self._engine.forget, session)

    async def reset_cache(self) -> None:
        """Forget every session and empty the KV cache (benchmarks use it for cold starts)."""
        await self._on_worker(self._engine.reset)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True  # refuse new work first: nothing may reach a freed context
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._engine.close)  # after queued work
        self._executor.shutdown(wait=False)

    async def _on_worker(self, fn: Callable[..., None], *args: Any) -> None:
        if self._closed:
            raise LLMError(f"embedded LLM {self.model_path.name}: the client is closed")
        await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)


def _hand_over(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[object], item: object) -> None:
    """From the worker thread to the event loop; never blocks the worker."""
    try:
        loop.call_soon_threadsafe(queue.put_nowait, item)
    except RuntimeError:
        pass  # the loop is closed: nobody is reading any more


class _Engine:
    """The llama.cpp model, its one context and the session caches.

    Everything except ``cancel`` runs on the client's single worker thread, which is what keeps
    llama.cpp (not thread-safe per context) safe without a lock around every call.
    """

    def __init__(
        self, model_path: Path, n_ctx: int, n_threads: int, max_sessions: int, seed: int | None
    ) -> None:
        from cyllama.defaults import LLAMA_DEFAULT_SEED
        from cyllama.llama import llama_cpp as llama

        self._llama = llama
        llama.disable_logging()
        llama.ggml_backend_load_all()
        params = llama.LlamaModelParams()
        params.use_mmap = False  # with mmap, decoding fell to 2-5 tok/s here (MODELS.md)
        started = time.perf_counter()
        try:
            self.model: LlamaModel = llama.LlamaModel(str(model_path), params)
        except Exception as exc:
            raise LLMError(f"embedded LLM: cannot load {model_path}: {exc}") from exc
        self.vocab: LlamaVocab = self.model.get_vocab()
        ctx_params = llama.LlamaContextParams()
        ctx_params.n_ctx = n_ctx
        ctx_params.n_batch = min(512, n_ctx)
        ctx_params.n_threads = n_threads
        ctx_params.n_threads_batch = n_threads
        self.ctx = llama.LlamaContext(self.model, ctx_params)
        self.ctx.install_cancel_callback()  # lets cancel() abort a long prompt decode
        self.load_s = time.perf_counter() - started
        self.model_path = model_path
        self.n_ctx = n_ctx
        self.n_batch = ctx_params.n_batch
        self.seed = LLAMA_DEFAULT_SEED if seed is None else seed  # llama.cpp: default = random
        self.template = _ChatTemplate(self.model, self.vocab)
        self.saved: OrderedDict[str, _SavedSession] = OrderedDict()
        self.max_sessions = max_sessions
        self.live_session: str | None = None
        self.live_tokens: list[int] = []  # exactly the tokens whose KV is in sequence 0
        self.last_stats: GenerationStats | None = None
        self._current: _Job | None = None
        self._current_lock = threading.Lock()
        self.closed = False

    # ---- called from the event loop -----------------------------------------------------------
    def cancel(self, job: _Job) -> None:
        job.cancel.set()
        with self._current_lock:  # only ever abort the decode of *this* job
            if self._current is job:
                self.ctx.cancel = True

    # ---- worker thread --------------------------------------------------------------------------
    def run(self, job: _Job) -> None:
        if self.closed:  # the context is freed: touch nothing
            job.emit(LLMError(f"embedded LLM {self.model_path.name}: the client is closed"))
            return
        outcome: object = _END  # always emitted, or the reader would wait forever
        try:
            with self._current_lock:
                if job.cancel.is_set():
                    return
                self._current = job
                self.ctx.cancel = False
            job.started.set()
            self.last_stats = self._generate(job)
        except LLMError as exc:
            outcome = exc
        except Exception as exc:
            outcome = LLMError(f"embedded LLM {self.model_path.name}: generation failed: {exc!r}")
        finally:
            if outcome is not _END:
                self._recover()
            with self._current_lock:
                self._current = None
                self.ctx.cancel = False
            job.emit(outcome)

    def forget(self, session: str) -> None:
        self.saved.pop(session, None)
        if self.live_session == session:
            self.live_session = None  # keep the KV: its prefix may serve the next call

    def reset(self) -> None:
        self.saved.clear()
        self.live_session = None
        self.live_tokens = []
        self.ctx.memory_seq_rm(0, -1, -1)

    def close(self) -> None:
        self.closed = True
        self.saved.clear()
        self.ctx.close()
        self.model.close()

    def _generate(self, job: _Job) -> GenerationStats:
        began = time.perf_counter()
        prompt = self._tokenize(job.messages)
        self._switch_to(job.session)
        kept = self._prefix_file(job.prefix_dir, prompt) if job.prefix_dir else None
        if kept is not None and self._restore(kept, prompt):
            return GenerationStats(session=job.session, prompt_tokens=len(prompt),
                                   reused_tokens=len(prompt), evaluated_tokens=0,
                                   generated_tokens=0, queued_s=began - job.submitted,
                                   prefill_s=time.perf_counter() - began, first_token_s=None,
                                   decode_s=0.0, finish_reason="stop")
        reused = self._keep_prefix(prompt)
        prefilled = self._prefill(prompt, reused, job)
        if kept is not None and prefilled:
            self._keep(kept, prompt)
        prefill_s = time.perf_counter() - began
        generated, first_token_s, finish = (
            self._decode(job) if prefilled else (0, None, "cancelled")
        )
        return GenerationStats(
            session=job.session,
            prompt_tokens=len(prompt),
            reused_tokens=reused,
            evaluated_tokens=len(prompt) - reused if prefilled else 0,
            generated_tokens=generated,
            queued_s=began - job.submitted,
            prefill_s=prefill_s,
            first_token_s=first_token_s,
            decode_s=time.perf_counter() - began - prefill_s,
            finish_reason=finish,
        )

    def _prefix_file(self, folder: Path, prompt: list[int]) -> Path:
        import hashlib

        key = hashlib.sha256(f"{self.model_path.name}:{self.n_ctx}:{prompt}".encode())
        return folder / f"prefix-{key.hexdigest()[:20]}.kv"

    def _restore(self, path: Path, prompt: list[int]) -> bool:
        """The KV of exactly `prompt` from a file an earlier process kept, or False."""
        if not path.is_file():
            return False
        try:
            data = path.read_bytes()
            size = int.from_bytes(data[:4], "little")
            tokens = json.loads(data[4 : 4 + size])
            if tokens != prompt:
                return False
            self.ctx.memory_seq_rm(0, -1, -1)
            self.ctx.set_state_seq_data(data[4 + size :], 0)
        except Exception as exc:  # a truncated or foreign file: evaluate again, write it anew
            log.warning("embedded LLM: cached prompt %s unreadable (%s); evaluating it", path, exc)
            self.ctx.memory_seq_rm(0, -1, -1)
            self.live_tokens = []
            return False
        self.live_tokens = list(tokens)
        return True

    def _keep(self, path: Path, prompt: list[int]) -> None:
        try:
            # the token list, then the sequence's state as the session cache copies it out
            head = json.dumps(prompt).encode()
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(len(head).to_bytes(4, "little") + head
                            + self.ctx.get_state_seq_data(0))
            os.replace(tmp, path)
        except Exception as exc:  # a read-only cache: the next process evaluates it again
            log.warning("embedded LLM: cannot keep the evaluated prompt in %s: %s", path, exc)

    def _tokenize(self, messages: list[dict[str, str]]) -> list[int]:
        prompt = self.template.render(messages)
        tokens: list[int] = self.vocab.tokenize(prompt, add_special=True, parse_special=True)
        if len(tokens) >= self.n_ctx:
            raise LLMError(
                f"embedded LLM: the prompt is {len(tokens)} tokens and the context holds "
                f"{self.n_ctx} (CALLWISE_LLM_N_CTX)"
            )
        return tokens

    def _switch_to(self, session: str | None) -> None:
        if session == self.live_session:
            return
        if self.live_session is not None and self.live_tokens:
            state = self.ctx.get_state_seq_data(0)
            self.saved[self.live_session] = _SavedSession(list(self.live_tokens), state)
            self.saved.move_to_end(self.live_session)
            while len(self.saved) > self.max_sessions:
                self.saved.popitem(last=False)
        restored = self.saved.pop(session, None) if session is not None else None
        if restored is not None:
            self.ctx.memory_seq_rm(0, -1, -1)
            self.ctx.set_state_seq_data(restored.state, 0)
            self.live_tokens = restored.tokens
        # else: keep what is live; _keep_prefix keeps the part the new prompt shares with it
        self.live_session = session

    def _keep_prefix(self, prompt: list[int]) -> int:
        """Keep the cached KV of the longest common prefix; returns its length."""
        n = 0
        for cached, new in zip(self.live_tokens, prompt, strict=False):
            if cached != new:
                break
            n += 1
        n = min(n, len(prompt) - 1)  # the last prompt token must be evaluated for its logits
        if n < len(self.live_tokens):
            if not self.ctx.memory_seq_rm(0, n, -1):
                n = 0  # the model's memory cannot drop a suffix: start over
                self.ctx.memory_seq_rm(0, -1, -1)
            del self.live_tokens[n:]
        return n

    def _prefill(self, prompt: list[int], start: int, job: _Job) -> bool:
        for begin in range(start, len(prompt), self.n_batch):
            if job.cancel.is_set():
                return False
            chunk = prompt[begin : begin + self.n_batch]
            try:
                self.ctx.decode(self._llama.llama_batch_get_one(chunk, begin))
            except InterruptedError:
                self._resync()  # an aborted decode may leave part of the chunk in the cache
                return False
            self.live_tokens.extend(chunk)
        return True

    def _decode(self, job: _Job) -> tuple[int, float | None, Finish]:
        sampler = _sampler(self._llama, job.temperature, self.seed)
        text = _Utf8Pieces(self.vocab)
        stops = _StopScanner(job.stop)
        first_token_s: float | None = None
        generated = 0
        finish: Finish = "length"

        def emit(piece: str) -> None:
            nonlocal first_token_s
            if piece:
                if first_token_s is None:
                    first_token_s = time.perf_counter() - job.submitted
                job.emit(piece)

        try:
            while generated < job.max_tokens:
                if job.cancel.is_set():
                    finish = "cancelled"
                    break
                if len(self.live_tokens) >= self.n_ctx:
                    break
                token = sampler.sample(self.ctx, -1)
                if self.vocab.is_eog(token):
                    finish = "stop"
                    break
                generated += 1
                emit(stops.push(text.push(token)))  # before decoding: the reader gets it sooner
                if stops.stopped:
                    finish = "stop"
                    break
                try:
                    self.ctx.decode(self._llama.llama_batch_get_one([token], len(self.live_tokens)))
                except InterruptedError:
                    self._resync()
                    finish = "cancelled"
                    break
                self.live_tokens.append(token)
            if finish != "cancelled" and not stops.stopped:
                emit(stops.push(text.flush()) + stops.flush())
        finally:
            sampler.close()
        return generated, first_token_s, finish

    def _resync(self) -> None:
        """Make the KV cache hold exactly ``live_tokens`` again after a failed decode."""
        self.ctx.memory_seq_rm(0, len(self.live_tokens), -1)

    def _recover(self) -> None:
        try:
            self._resync()
        except Exception:
            log.exception("embedded LLM: could not trim the KV cache; starting it afresh")
            self.live_session = None
            self.live_tokens = []
            self.ctx.kv_cache_clear()


def _sampler(llama: Any, temperature: float, seed: int) -> LlamaSampler:
    sampler = llama.LlamaSampler(llama.LlamaSamplerChainParams())
    if temperature <= 0:
        sampler.add_greedy()
        return sampler
    sampler.add_top_k(40)
    sampler.add_top_p(0.95, 1)
    sampler.add_min_p(0.05, 1)
    sampler.add_temp(temperature)
    sampler.add_dist(seed)
    return sampler


class _ChatTemplate:
    """The model's own Jinja chat template (ChatML for Qwen), rendered as transformers does."""

    def __init__(self, model: LlamaModel, vocab: LlamaVocab) -> None:
        from jinja2 import TemplateError
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        source = model.get_default_chat_template()
        if not source:
            raise LLMError("embedded LLM: the GGUF has no chat template; use an instruct model")

        def raise_exception(message: str) -> None:
            raise TemplateError(message)

        env = ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
        )
        env.filters["tojson"] = lambda value, **kw: json.dumps(value, ensure_ascii=False, **kw)
        env.globals["raise_exception"] = raise_exception
        self._template = env.from_string(source)
        self._bos = _special_piece(vocab, vocab.token_bos())
        self._eos = _special_piece(vocab, vocab.token_eos())
        # The prompt is tokenized with special tokens parsed (the template's <|im_start|> must
        # become one token), so a caller's words containing "<|im_end|>" would forge turns.
        self._control = sorted(
            (
                text
                for t in range(vocab.n_vocab)
                if vocab.is_control(t)
                if (text := vocab.token_to_piece(t, 0, True))
            ),
            key=len,
            reverse=True,
        )

    def render(self, messages: list[dict[str, str]]) -> str:
        from jinja2 import TemplateError

        safe = [{**m, "content": _strip_control(m["content"], self._control)} for m in messages]
        try:
            return self._template.render(
                messages=safe,
                add_generation_prompt=True,
                bos_token=self._bos,
                eos_token=self._eos,
            )
        except TemplateError as exc:
            raise LLMError(f"embedded LLM: the chat template rejected the messages: {exc}") from exc


def _special_piece(vocab: LlamaVocab, token: int) -> str:
    return vocab.token_to_piece(token, 0, True) if token >= 0 else ""


def _strip_control(text: str, control: list[str]) -> str:
    for marker in control:
        if marker in text:
            text = text.replace(marker, "")
    return text


class _Utf8Pieces:
    """Token → text without splitting a character: byte-level BPE spreads one CJK character or
    emoji over up to four tokens, and each of those alone decodes to U+FFFD."""

    def __init__(self, vocab: LlamaVocab) -> None:
        self._vocab = vocab
        # cyllama's detokenize strips leading whitespace, which would glue words together;
        # decoding behind a fixed visible token and cutting it off keeps the spaces.
        self._anchor = vocab.tokenize("x", add_special=False, parse_special=False)
        self._anchor_len = len(vocab.detokenize(self._anchor))
        self._pending: list[int] = []

    def push(self, token: int) -> str:
        self._pending.append(token)
        text = self._decode()
        if text.endswith("\ufffd") and len(self._pending) < 4:
            return ""  # wait for the rest of the character
        self._pending.clear()
        return text

    def flush(self) -> str:
        text = self._decode() if self._pending else ""
        self._pending.clear()
        return text

    def _decode(self) -> str:
        text: str = self._vocab.detokenize(self._anchor + self._pending)
        return text[self._anchor_len :]


class _StopScanner:
    """Cuts the reply at the first stop string, holding back only text that could start one."""

    def __init__(self, stops: list[str]) -> None:
        self._stops = [s for s in stops if s]
        self._held = ""
        self.stopped = False

    def push(self, text: str) -> str:
        if not self._stops or not text:
            return text
        buffer = self._held + text
        hits = [i for i in (buffer.find(s) for s in self._stops) if i >= 0]
        if hits:
            self.stopped = True
            self._held = ""
            return buffer[: min(hits)]
        hold = self._partial_stop(buffer)
        self._held = buffer[len(buffer) - hold :] if hold else ""
        return buffer[: len(buffer) - hold]

    def flush(self) -> str:
        held, self._held = self._held, ""
        return held

    def _partial_stop(self, buffer: str) -> int:
        """Length of the longest end of ``buffer`` that is the beginning of a stop string."""
        for size in range(min(len(buffer), max(map(len, self._stops)) - 1), 0, -1):
            tail = buffer[-size:]
            if any(s.startswith(tail) for s in self._stops):
                return size
        return 0


# ---- choosing a backend ---------------------------------------------------------------------


def make_client(settings: LLMSettings | None = None) -> LLMClient:
    """``base_url`` set: the OpenAI-compatible server; else the embedded GGUF model."""
    settings = settings or LLMSettings()
    if settings.base_url:
        return OpenAICompatibleClient(
            settings.base_url,
            settings.model,
            api_key=settings.api_key.get_secret_value() if settings.api_key else None,
            timeout_s=settings.timeout_s,
            max_tokens=settings.max_tokens,
            temperature=settings.temperature,
        )
    try:
        path = resolve_model_path(settings.model_path, model=model_by_name(settings.packaged))
    except ModelFileError as exc:
        raise LLMError(f"embedded LLM: {exc}") from exc
    return LocalGGUFClient(
        path,
        n_ctx=settings.n_ctx,
        n_threads=settings.n_threads,
        max_tokens=settings.max_tokens,
        temperature=settings.temperature,
    )
