"""The web app on a real uvicorn server on a free port, and plain clients for it.

`LiveApp.start(app)` serves it in the test's own event loop (so a test may also reach into the
runtime it passed); `ThreadedApp` serves it from a thread with its own loop, for synchronous
clients such as schemathesis'. HTTP goes through urllib (in a worker thread when the server
shares the loop), websockets through the `websockets` package: real sockets, real handshakes.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import uvicorn
from fastapi import FastAPI


def _config(app: FastAPI) -> uvicorn.Config:
    return uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="on", ws="websockets-sansio",
                          ws_max_size=2**20, log_config=None, log_level="warning",
                          timeout_graceful_shutdown=5)


def _port(server: uvicorn.Server) -> int:
    return int(server.servers[0].sockets[0].getsockname()[1])


@dataclass
class LiveApp:
    app: FastAPI
    server: uvicorn.Server
    task: asyncio.Task[None]
    base: str  # http://127.0.0.1:PORT

    @property
    def ws(self) -> str:
        return "ws" + self.base.removeprefix("http")

    @property
    def netloc(self) -> str:
        return urlsplit(self.base).netloc

    @classmethod
    async def start(cls, app: FastAPI) -> LiveApp:
        server = uvicorn.Server(_config(app))
        # the test process keeps its own SIGINT handling (uvicorn would take it over)
        server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]
        task = asyncio.create_task(server.serve())
        while not server.started:
            if task.done():
                task.result()  # startup failed: raise why
                raise RuntimeError("uvicorn stopped during startup")
            await asyncio.sleep(0.01)
        return cls(app, server, task, f"http://127.0.0.1:{_port(server)}")

    async def stop(self) -> None:
        self.server.should_exit = True
        await asyncio.wait_for(self.task, 30)


class ThreadedApp:
    """The app served from its own thread and event loop."""

    def __init__(self, app: FastAPI) -> None:
        self.server = uvicorn.Server(_config(app))
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("uvicorn stopped during startup")
            self.thread.join(0.01)
        return f"http://127.0.0.1:{_port(self.server)}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        assert self.headers["content-type"] == "application/json", self.headers
        return json.loads(self.body)


def request_sync(base: str, method: str, path: str, body: Any = None, token: str | None = None,
                 headers: dict[str, str] | None = None) -> Reply:
    conn = http.client.HTTPConnection(urlsplit(base).netloc, timeout=30)
    sent = dict(headers or {})
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        sent.setdefault("Content-Type", "application/json")
    elif method == "POST":
        data = b""
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    try:
        conn.request(method, path, body=data, headers=sent)
        res = conn.getresponse()
        return Reply(res.status, {k.lower(): v for k, v in res.getheaders()}, res.read())
    finally:
        conn.close()


async def request(base: str, method: str, path: str, body: Any = None, token: str | None = None,
                  headers: dict[str, str] | None = None) -> Reply:
    """HTTP from a worker thread: the server answers on this very event loop."""
    return await asyncio.to_thread(request_sync, base, method, path, body, token, headers)
