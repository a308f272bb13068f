"""The one web application of a callwise process (FastAPI on uvicorn): media in, screens out.

    GET  /healthz                          {"status": "ok", "live_calls": n, "database": "up|down"}
    POST /api/login                        {username, password} -> {token, role, agent_id,
                                           expires_at}; also sets the callwise_token cookie
    POST /api/logout                       signs this token out (refused from now on, here and
                                           after a restart) and closes its open streams
    GET  /api/me                           who the token names
    GET  /api/calls[?recent=true]          the live calls this user may see, as the supervisor's
                                           list shows them (agent, start, intent, open alerts,
                                           cards and acceptance); recent: ended ones too
    POST /api/calls/{call_id}/suggestions/{suggestion_id}/feedback   {feedback} -> 202 event
    POST /api/calls/{call_id}/wrap-up      {disposition, note?} -> 202 event (the agent's outcome
                                           and after-call note)
    GET  /api/campaigns                    supervisors: every campaign
    GET  /api/campaigns/{id}/report[?...]  supervisors: the campaign report
    GET  /login                            the login page (agents land on /sidebar, supervisors
                                           on /live)
    GET  /sidebar[?call_id=]               the agent's sidebar: their current call (or the one
                                           named; read-only for a supervisor)
    GET  /live                             the supervisor's list of live calls
    GET  /dashboard[?campaign=ID]          the supervisor page (loads without a token and asks
                                           for a login)
    WS   /events[?call_id=]                a user's live events: the story so far (with an
                                           agent's calls still to wrap up, or the named call's),
                                           then live; feedback messages in
    WS   /twilio, /media                   Twilio Media Streams (signed, or a media token)
    WS   /pcm?rate=&channels=&call_id=...  raw little-endian 16-bit PCM (a media token)

Users authenticate with `Authorization: Bearer <token>` (from /api/login or minted by an SSO
desktop, see assist.auth); websockets may also pass `?token=` or the `callwise_token` cookie,
since browsers cannot set headers on them. Agents see only the calls assigned to their agent
id and act on them (feedback, wrap-up); supervisors see all, read-only. Media ingress has its
own credential, never a user's token. Every error is JSON `{"error": "..."}`; nothing answers
with a stack trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from campaigns.analytics import UnknownCampaignError, campaign_report
from campaigns.dashboard import (
    CSP,
    ReportOptionError,
    list_campaigns,
    load_assets,
    open_database,
    report_query,
)
from campaigns.db import Database, is_unavailable
from core.events import (
    CallEnded,
    CallEvent,
    Disposition,
    Feedback,
    SuggestionFeedback,
    WrapUpNote,
)

from .auth import (
    AuthError,
    Principal,
    Revocations,
    Role,
    TokenSigner,
    UserStore,
    check_twilio_signature,
    load_secret,
    media_token_ok,
    origin_allowed,
    token_digest,
)
from .bus import CallMeta, Lagged
from .call_summary import CallSummary
from .pages import PAGES, csp_for
from .runtime import Runtime, UnknownCall
from .settings import AppSettings
from .transports import (
    NORMAL,
    POLICY,
    CallRegistry,
    ErrorLog,
    PcmTransport,
    TwilioTransport,
    close,
)

log = logging.getLogger(__name__)

COOKIE = "callwise_token"
CAUGHT_UP = json.dumps({"type": "caught_up"})  # /events: the story so far has been sent
TRY_AGAIN_LATER = 1013  # websocket close code: "try again later"
LOGIN_CONCURRENCY = 4  # scrypt is CPU work: a burst of logins must not starve the calls
# a path segment or query value that names a call, suggestion or campaign: printable, no NUL
ID_PATTERN = r"^[^\x00-\x1f\x7f]{1,128}$"
request_errors = ErrorLog("request failed")
socket_errors = ErrorLog("websocket handler failed")


# -- bodies -----------------------------------------------------------------------------------
class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorBody(BaseModel):
    error: str


class LoginRequest(Strict):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class LoginResponse(BaseModel):
    token: str
    role: Role
    agent_id: str | None
    expires_at: float = Field(description="unix seconds")


class Me(BaseModel):
    username: str
    role: Role
    agent_id: str | None
    expires_at: float


class FeedbackRequest(Strict):
    feedback: Feedback


class WrapUpRequest(Strict):
    disposition: Disposition
    note: WrapUpNote | None = None


class FeedbackMessage(Strict):
    """What a sidebar sends on /events when the agent accepts or dismisses a card."""

    type: Literal["feedback"]
    call_id: str = Field(min_length=1, max_length=128, pattern=ID_PATTERN)
    suggestion_id: str = Field(min_length=1, max_length=128, pattern=ID_PATTERN)
    feedback: Feedback


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    live_calls: int
    database: Literal["up", "down"]


class ApiError(StarletteHTTPException):
    """An answer {"error": message, **extra} with this status."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None,
                 **extra: Any) -> None:
        super().__init__(status, message, headers)
        self.extra = extra


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": http.HTTPStatus(code).phrase}
    for code in (401, 403, 404, 422, 503)
}


# -- the process's parts ----------------------------------------------------------------------
@dataclass
class Services:
    settings: AppSettings
    runtime: Runtime | None = None
    database: Database | None = None
    signer: TokenSigner | None = None
    users: UserStore | None = None
    calls: CallRegistry | None = None
    revocations: Revocations = field(default_factory=lambda: Revocations(None))
    # token digest -> the open streams it opened, set when it is signed out
    streams: dict[str, set[asyncio.Event]] = field(default_factory=dict)
    connect_database: bool = True
    owned: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    login_slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(
        LOGIN_CONCURRENCY))


async def load_runtime(settings: AppSettings) -> Runtime:
    """The runtime `callwise serve` runs: the bundled models, the LLM and the store."""
    return await Runtime.load(settings)


def services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


def _runtime(s: Services) -> Runtime:
    if s.runtime is None:
        raise ApiError(503, "the call runtime is not running")
    return s.runtime


# -- authentication ---------------------------------------------------------------------------
bearer = HTTPBearer(auto_error=False, description="a token from POST /api/login")


def _bearer_token(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def _signer(s: Services) -> TokenSigner:
    if s.signer is None:
        s.signer = TokenSigner(load_secret(), ttl_s=s.settings.token_ttl_s)
    return s.signer


async def current_user(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    s = services(request)
    token = credentials.credentials if credentials else None
    try:
        principal = _signer(s).verify(token)
    except AuthError as exc:
        raise ApiError(401, f"not logged in: {exc}",
                       {"WWW-Authenticate": 'Bearer realm="callwise"'}) from None
    if token is not None and s.revocations.is_revoked(token):
        raise ApiError(401, "not logged in: signed out; log in again",
                       {"WWW-Authenticate": 'Bearer realm="callwise"'})
    return principal


async def supervisor(principal: Annotated[Principal, Depends(current_user)]) -> Principal:
    if not principal.is_supervisor:
        raise ApiError(403, "supervisors only")
    return principal


User = Annotated[Principal, Depends(current_user)]
Supervisor = Annotated[Principal, Depends(supervisor)]
CallId = Annotated[str, Path(min_length=1, max_length=128, pattern=ID_PATTERN)]
SuggestionId = Annotated[str, Path(min_length=1, max_length=128, pattern=ID_PATTERN)]


def _readable_call(s: Services, principal: Principal, call_id: str) -> CallMeta:
    meta = _runtime(s).meta(call_id)
    if meta is None:
        raise ApiError(404, f"no live or recent call {call_id!r}")
    if not principal.can_read_call(meta.agent_id):
        raise ApiError(403, "this call is not assigned to you")
    return meta


def _own_call(s: Services, principal: Principal, call_id: str) -> CallMeta:
    """A call this user may act on: their own (a supervisor watches, read-only)."""
    meta = _readable_call(s, principal, call_id)
    if not _acts_on(principal, meta):
        raise ApiError(403, "read-only: only the call's agent gives feedback and wraps it up")
    return meta


def _acts_on(principal: Principal, meta: CallMeta) -> bool:
    return principal.agent_id is not None and principal.agent_id == meta.agent_id


def _socket_token(ws: WebSocket) -> str | None:
    return (_bearer_token(ws.headers.get("authorization")) or ws.query_params.get("token")
            or ws.cookies.get(COOKIE))


async def _websocket_user(s: Services, ws: WebSocket) -> Principal | None:
    """The user a websocket's token names, re-checked against the user table (a token outlives
    a disabled account otherwise); None when refused (the socket then is closed with 1008)."""
    token = _socket_token(ws)
    try:
        principal = _signer(s).verify(token)
    except AuthError as exc:
        await close(ws, POLICY, f"not logged in: {exc}")
        return None
    if token is not None and s.revocations.is_revoked(token):
        await close(ws, POLICY, "signed out; log in again")
        return None
    if s.users is not None:
        try:
            row = await s.users.get(principal.username)
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            # The sidebar matters more than a revocation check during a database blip: the
            # token is still signed and unexpired.
            log.warning("user %s not re-checked, database unavailable: %s",
                        principal.username, exc)
            row = None
        if row is not None:
            role, agent_id, disabled = row
            if disabled:
                await close(ws, POLICY, "account disabled")
                return None
            if (role, agent_id) != (principal.role, principal.agent_id):
                await close(ws, POLICY, "account changed since login; log in again")
                return None
    return principal


def _origin_refused(s: Services, ws: WebSocket) -> bool:
    return not origin_allowed(ws.headers.get("origin"), s.settings.allowed_origins,
                              ws.headers.get("host"))


def _signed_url(s: Services, ws: WebSocket) -> str:
    """The URL Twilio signed: the public base URL (or our own scheme and Host) + path + query."""
    scope = ws.scope
    base = s.settings.public_url
    if not base:
        scheme = "wss" if scope.get("scheme") == "wss" else "ws"
        base = f"{scheme}://{ws.headers.get('host', '')}"
    path = scope.get("raw_path") or scope["path"].encode()
    url = base.rstrip("/") + path.decode("latin-1")
    query = scope.get("query_string", b"").decode("latin-1")
    return f"{url}?{query}" if query else url


def _media_refusal(s: Services, ws: WebSocket) -> str | None:
    """Why this media socket may not stream, or None: a per-trunk media token (?token= or
    Authorization: Bearer), or Twilio's signature of the URL."""
    settings = s.settings
    token = _bearer_token(ws.headers.get("authorization")) or ws.query_params.get("token")
    if token and media_token_ok(settings.media_tokens, token):
        return None
    auth_token = settings.twilio_auth_token.get_secret_value() if settings.twilio_auth_token \
        else ""
    signature = ws.headers.get("x-twilio-signature")
    if signature and auth_token and check_twilio_signature(auth_token, _signed_url(s, ws),
                                                           signature):
        return None
    if not settings.media_tokens and not auth_token:
        return ("media ingress is off: set CALLWISE_MEDIA_TOKENS or "
                "CALLWISE_TWILIO_AUTH_TOKEN")
    if signature:
        return "bad Twilio signature"
    return "media credential missing or invalid"


# -- errors as JSON ---------------------------------------------------------------------------
def _error(status: int, message: str, headers: dict[str, str] | None = None,
           **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status, headers=headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    extra = getattr(exc, "extra", {})
    message = exc.detail if isinstance(exc.detail, str) else http.HTTPStatus(exc.status_code).phrase
    if exc.status_code == 404 and not isinstance(exc, ApiError):
        message = (f"no route {request.url.path}; try /dashboard, /api/calls, /api/campaigns "
                   "or /healthz")
    elif exc.status_code == 405 and not isinstance(exc, ApiError):
        message = f"{request.method} is not allowed on {request.url.path}"
    elif exc.status_code == 400 and not isinstance(exc, ApiError):
        # FastAPI's answer to a body it cannot decode (not UTF-8, say): a bad body, like
        # every other, is a 422
        return _error(422, "the body could not be read as JSON")
    return _error(exc.status_code, message, dict(exc.headers or {}), **extra)


def _describe(errors: Any) -> str:
    """pydantic's problems as one line, without the input (it may be a password)."""
    parts = []
    for problem in list(errors)[:5]:
        kind = problem.get("type")
        if kind == "json_invalid":
            parts.append("the body is not valid JSON")
            continue
        loc = ".".join(str(p) for p in problem.get("loc", ()) if p != "body")
        msg = str(problem.get("msg", "invalid")).removeprefix("Value error, ")
        if kind == "string_pattern_mismatch":
            msg = ("must be 1 to 128 printable characters" if
                   problem.get("ctx", {}).get("pattern") == ID_PATTERN
                   else "has characters it may not have")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts) or "invalid request"


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return _error(422, _describe(exc.errors()))


async def _server_error(request: Request, exc: Exception) -> Response:
    request_errors(f"{request.method} {request.url.path}")
    return _error(500, "internal error; see the server log")


class Guard:
    """The outermost layer inside Starlette's own: an exception no handler took becomes a 500
    JSON answer without details (logged, rate-limited), and every HTTP answer says not to cache
    or sniff it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                if b"cache-control" not in names:
                    headers.append((b"cache-control", b"no-store"))
                headers.append((b"x-content-type-options", b"nosniff"))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, guarded_send)
        except Exception:
            request_errors(f"{scope.get('method')} {scope.get('path')}")
            if started:
                raise
            body = json.dumps({"error": "internal error; see the server log"}).encode()
            await send({"type": "http.response.start", "status": 500,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode()),
                                    (b"cache-control", b"no-store")]})
            await send({"type": "http.response.body", "body": body})


def _schedule_playbook_refresh(s: Services) -> None:
    """`serve` learns from use: the store's calls and agents' feedback make a new playbook
    version every `playbook_refresh_hours` (campaigns.playbook_refresh)."""
    suggester = s.runtime.suggester if s.runtime is not None else None
    if s.database is None or suggester is None or s.settings.playbook_refresh_hours <= 0:
        return
    from campaigns.playbook_refresh import refresh_every
    from dialogue.defaults import PLAYBOOK_CALLS
    from dialogue.playbook import read_calls
    from dialogue.playbook_versions import PlaybookVersions

    task = asyncio.create_task(refresh_every(
        s.settings.playbook_refresh_hours * 3600, s.database.pool,
        PlaybookVersions(s.settings.playbooks()), read_calls(PLAYBOOK_CALLS), suggester),
        name="playbook-refresh")

    async def stop() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    s.owned.append(stop)


# -- the app ----------------------------------------------------------------------------------
def create_app(
    settings: AppSettings | None = None,
    *,
    runtime: Runtime | None = None,
    database: Database | None = None,
    signer: TokenSigner | None = None,
    connect_database: bool = True,
) -> FastAPI:
    """The app. What is passed in is used and left open; what is missing is made on startup
    (the runtime from the bundled models, the database from the settings unless
    `connect_database` is False) and closed on shutdown, after every live call has ended."""
    s = Services(settings or AppSettings(), runtime, database, signer,
                 connect_database=connect_database and database is None)
    assets = load_assets()
    pages = PAGES.load()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if s.runtime is None:
            s.runtime = await load_runtime(s.settings)
            s.owned.append(s.runtime.aclose)
        s.calls = CallRegistry(s.runtime)
        if s.database is None and s.connect_database:
            s.database = await open_database(s.settings.database_url)
            if s.database is not None:
                s.owned.append(s.database.close)
        if s.database is not None:
            s.users = UserStore(s.database.pool)
            s.revocations = Revocations(s.database.pool)
            try:
                await s.revocations.load()
                if not await s.database.pool.fetchval("SELECT count(*) FROM users"):
                    log.warning("nobody can log in yet: add users with `callwise users add "
                                "NAME --role agent --agent-id ID` (or run `callwise demo`)")
            except Exception as exc:
                if not is_unavailable(exc):
                    raise
                log.warning("signed-out tokens not loaded, database unavailable: %s", exc)
        _signer(s)
        _schedule_playbook_refresh(s)
        log.warning("callwise serving media (/twilio, /pcm), sidebars (/events), the API and "
                    "the dashboard (/dashboard)%s",
                    "" if s.settings.media_tokens or s.settings.twilio_auth_token else
                    "; media ingress is off until CALLWISE_MEDIA_TOKENS or "
                    "CALLWISE_TWILIO_AUTH_TOKEN is set")
        try:
            yield
        finally:
            await s.calls.end_all("server shutting down")
            for aclose in reversed(s.owned):
                try:
                    await aclose()
                except Exception:
                    log.exception("shutdown: closing %s failed", aclose)
            s.owned.clear()

    app = FastAPI(
        title="callwise",
        version="0.1.0",
        summary="Live call assist: media ingress, agent sidebar events, supervisor API.",
        lifespan=lifespan,
        docs_url=None,  # the interactive docs page loads scripts from a CDN; the schema stays
        redoc_url=None,
        responses={422: {"model": ErrorBody, "description": "Unprocessable Content"}},
    )
    app.state.services = s
    app.add_middleware(Guard)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _server_error)

    # ---- health and login --------------------------------------------------------------
    @app.get("/healthz", response_model=Health, tags=["health"])
    async def healthz() -> Health:
        live = len(s.runtime.live_calls()) if s.runtime is not None else 0
        up = False
        if s.database is not None:
            try:
                await asyncio.wait_for(s.database.pool.fetchval("SELECT 1"), 2.0)
                up = True
            except Exception as exc:  # down is an answer here, not an error
                log.info("health: database down: %s", type(exc).__name__)
        return Health(live_calls=live, database="up" if up else "down")

    @app.post("/api/login", response_model=LoginResponse, tags=["auth"],
              responses={k: ERRORS[k] for k in (401, 422, 503)})
    async def login(body: LoginRequest, response: Response) -> LoginResponse:
        if s.users is None:
            raise ApiError(503, "this server runs without a database, where users are kept")
        try:
            async with s.login_slots:
                role, agent_id = await s.users.authenticate(body.username, body.password)
        except AuthError as exc:
            raise ApiError(401, str(exc)) from None
        except Exception as exc:
            if is_unavailable(exc):
                raise ApiError(503, "the user database is unavailable now; try again") from None
            raise
        signer = _signer(s)
        token = signer.issue(body.username, role, agent_id)
        principal = signer.verify(token)
        response.set_cookie(COOKIE, token, max_age=int(signer.ttl_s), httponly=True,
                            samesite="strict", secure=s.settings.cookie_secure, path="/")
        return LoginResponse(token=token, role=role, agent_id=agent_id,
                             expires_at=principal.expires_at)

    @app.post("/api/logout", status_code=204, tags=["auth"],
              responses={k: ERRORS[k] for k in (401, 503)})
    async def logout(principal: User, response: Response,
                     credentials: Annotated[HTTPAuthorizationCredentials | None,
                                            Depends(bearer)]) -> Response:
        assert credentials is not None  # current_user verified it
        token = credentials.credentials
        try:
            await s.revocations.revoke(token, principal)
        except Exception as exc:
            if is_unavailable(exc):
                raise ApiError(503, "the user database is unavailable now, so signing out "
                               "would not survive a restart; try again") from None
            raise
        for stream in s.streams.pop(token_digest(token), set()):
            stream.set()
        answer = Response(status_code=204)
        answer.delete_cookie(COOKIE, path="/", samesite="strict", httponly=True,
                             secure=s.settings.cookie_secure)
        return answer

    @app.get("/api/me", response_model=Me, tags=["auth"], responses={401: ERRORS[401]})
    async def me(principal: User) -> Me:
        return Me(**principal.model_dump())

    # ---- calls -------------------------------------------------------------------------
    @app.get("/api/calls", response_model=list[CallSummary], tags=["calls"],
             responses={401: ERRORS[401]})
    async def calls(principal: User, recent: bool = False) -> list[CallSummary]:
        return [c for c in _runtime(s).summaries(live_only=not recent)
                if principal.can_read_call(c.agent_id)]

    @app.post("/api/calls/{call_id}/suggestions/{suggestion_id}/feedback", status_code=202,
              response_model=SuggestionFeedback, tags=["calls"],
              responses={k: ERRORS[k] for k in (401, 403, 404, 422)})
    async def feedback(call_id: CallId, suggestion_id: SuggestionId, body: FeedbackRequest,
                       principal: User) -> SuggestionFeedback:
        _own_call(s, principal, call_id)
        try:
            return await _runtime(s).feedback(call_id, suggestion_id, body.feedback,
                                              principal.username)
        except UnknownCall as exc:
            raise ApiError(404, str(exc)) from None

    @app.post("/api/calls/{call_id}/wrap-up", status_code=202, response_model=CallEnded,
              tags=["calls"], responses={k: ERRORS[k] for k in (401, 403, 404, 422)})
    async def wrap_up(call_id: CallId, body: WrapUpRequest, principal: User) -> CallEnded:
        _own_call(s, principal, call_id)
        try:
            return await _runtime(s).wrap_up(call_id, body.disposition, principal.username,
                                             body.note)
        except UnknownCall as exc:
            raise ApiError(404, str(exc)) from None

    # ---- the dashboard -----------------------------------------------------------------
    def pool() -> Any:
        if s.database is None:
            raise ApiError(
                503,
                "this server runs without a database, so the dashboard has no data; set "
                "DATABASE_URL (or let callwise start its embedded PostgreSQL) and restart it",
            )
        return s.database.pool

    def unavailable(exc: Exception) -> ApiError:
        log.warning("dashboard: database unavailable: %s", exc)
        return ApiError(503, f"the database is unavailable now ({type(exc).__name__}); the page "
                        "retries on its own")

    @app.get("/api/campaigns", tags=["campaigns"], responses={k: ERRORS[k] for k in (401, 403,
                                                                                      503)})
    async def campaigns(_: Supervisor) -> list[dict[str, Any]]:
        try:
            return await list_campaigns(pool())
        except Exception as exc:
            if is_unavailable(exc):
                raise unavailable(exc) from None
            raise

    @app.get("/api/campaigns/{campaign_id}/report", tags=["campaigns"],
             responses={k: ERRORS[k] for k in (401, 403, 404, 422, 503)})
    async def report(
        request: Request,
        _: Supervisor,
        campaign_id: Annotated[str, Path(min_length=1, max_length=128, pattern=ID_PATTERN)],
        tz: Annotated[str | None, Query(max_length=64, pattern=r"^[A-Za-z0-9_+\-/]+$",
                                        description="IANA time zone of the days")] = None,
        channel: Literal["ai", "human"] | None = None,
        since: Annotated[datetime | None, Query(description="calls started at or after; "
                                                "with a UTC offset")] = None,
        until: Annotated[datetime | None, Query(description="calls started before")] = None,
        min_customer_turns: Annotated[int | None, Query(ge=0, le=10_000)] = None,
        min_seconds: Annotated[float | None, Query(ge=0, le=86_400, allow_inf_nan=False)] = None,
        min_calls: Annotated[int | None, Query(ge=1, le=1_000_000)] = None,
        top_share: Annotated[float | None, Query(gt=0, le=1, allow_inf_nan=False)] = None,
        rank_by: Literal["converted", "engaged", "not_converted"] | None = None,
    ) -> Response:
        for name, when in (("since", since), ("until", until)):
            if when is not None and not _in_range(when):
                raise ApiError(422, f"{name}: a time with a UTC offset between the years 1900 "
                               "and 9000")
        try:
            query = report_query(campaign_id, dict(request.query_params))
        except ReportOptionError as exc:
            raise ApiError(422, str(exc)) from None
        try:
            result = await campaign_report(pool(), query)
        except UnknownCampaignError as exc:
            raise ApiError(404, str(exc), campaign_id=campaign_id) from None
        except Exception as exc:
            if is_unavailable(exc):
                raise unavailable(exc) from None
            raise
        return Response(result.model_dump_json(), media_type="application/json")

    @app.get("/", include_in_schema=False)
    async def root() -> Response:
        return RedirectResponse("/login", status_code=302)

    def static(body: bytes, ctype: str, csp: str) -> Callable[[], Awaitable[Response]]:
        async def serve() -> Response:
            return Response(body, headers={"Content-Security-Policy": csp,
                                           "Content-Type": ctype})

        return serve

    for path, (body, ctype) in pages.items():
        app.add_api_route(path, static(body, ctype, csp_for(path, s.settings.frame_ancestors)),
                          methods=["GET", "HEAD"], include_in_schema=False)
    for path, (body, ctype) in assets.items():
        app.add_api_route(path, static(body, ctype, CSP), methods=["GET", "HEAD"],
                          include_in_schema=False)

    async def upgrade_required() -> Response:
        return _error(426, "this is a websocket endpoint; connect with a websocket client",
                      {"Upgrade": "websocket"})

    for path in ("/events", "/twilio", "/media", "/pcm"):
        app.add_api_route(path, upgrade_required, methods=["GET"], include_in_schema=False)

    # ---- websockets --------------------------------------------------------------------
    @app.websocket("/events")
    async def events(ws: WebSocket) -> None:
        try:
            await _events(s, ws)
        except Exception:
            socket_errors("/events")
            await close(ws, 1011, "internal error")

    async def media(ws: WebSocket, kind: type[TwilioTransport | PcmTransport]) -> None:
        try:
            if _origin_refused(s, ws):
                await close(ws, POLICY, "origin not allowed")
                return
            refusal = _media_refusal(s, ws)
            if refusal is not None:
                log.info("media socket refused from %s: %s",
                         ws.client.host if ws.client else "?", refusal)
                await close(ws, POLICY, refusal)
                return
            assert s.calls is not None
            await ws.accept()
            await kind(ws, s.calls, s.settings.default_language).run()
        except Exception:
            socket_errors(ws.url.path)
            await close(ws, 1011, "internal error")

    @app.websocket("/twilio")
    async def twilio(ws: WebSocket) -> None:
        await media(ws, TwilioTransport)

    @app.websocket("/media")
    async def twilio_alias(ws: WebSocket) -> None:
        await media(ws, TwilioTransport)

    @app.websocket("/pcm")
    async def pcm(ws: WebSocket) -> None:
        await media(ws, PcmTransport)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, summary=app.summary,
                                 routes=app.routes)
            app.openapi_schema = _errors_as_documented(schema)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _in_range(when: datetime) -> bool:
    if when.tzinfo is None or when.utcoffset() is None:
        return True  # ReportQuery says it needs an offset
    try:
        utc = when.astimezone(UTC)
    except (OverflowError, ValueError):
        return False
    return 1900 <= utc.year <= 9000


def _errors_as_documented(schema: dict[str, Any]) -> dict[str, Any]:
    """FastAPI documents its own 422 body ({"detail": [...]}); ours is {"error": "..."}."""
    ref = "#/components/schemas/ErrorBody"
    for item in schema.get("paths", {}).values():
        for operation in item.values():
            answer = operation.get("responses", {}).get("422")
            if answer is not None:
                answer["content"] = {"application/json": {"schema": {"$ref": ref}}}
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    components.setdefault("ErrorBody", ErrorBody.model_json_schema())
    return schema


# -- /events ----------------------------------------------------------------------------------
async def _events(s: Services, ws: WebSocket) -> None:
    if _origin_refused(s, ws):
        await close(ws, POLICY, "origin not allowed")
        return
    call_id = ws.query_params.get("call_id")
    if call_id is not None and not _valid_id(call_id):
        await close(ws, POLICY, "bad call_id")
        return
    principal = await _websocket_user(s, ws)
    if principal is None:
        return
    runtime = s.runtime
    assert runtime is not None

    def accepts(event: CallEvent, meta: CallMeta) -> bool:
        return principal.can_read_call(meta.agent_id) and call_id in (None, meta.call_id)

    def ended_story(meta: CallMeta, summary: CallSummary) -> bool:
        # a sidebar coming back after the call: that call's story, or an agent's calls still
        # to wrap up; a supervisor's list is about live calls
        if call_id is not None:
            return meta.call_id == call_id
        return not principal.is_supervisor and not summary.wrapped_up

    token = _socket_token(ws) or ""
    signed_out = asyncio.Event()
    s.streams.setdefault(token_digest(token), set()).add(signed_out)
    try:
        await ws.accept()
        await _stream(s, ws, principal, runtime, accepts, ended_story, signed_out)
    finally:
        streams = s.streams.get(token_digest(token))
        if streams is not None:
            streams.discard(signed_out)
            if not streams:
                s.streams.pop(token_digest(token), None)


async def _stream(s: Services, ws: WebSocket, principal: Principal, runtime: Runtime,
                  accepts: Callable[[CallEvent, CallMeta], bool],
                  ended_story: Callable[[CallMeta, CallSummary], bool],
                  signed_out: asyncio.Event) -> None:
    sub, story = runtime.subscribe(accepts, ended=ended_story)
    lock = asyncio.Lock()

    async def send(text: str) -> None:
        async with lock:
            await ws.send_text(text)

    async def out() -> tuple[int, str]:
        for event in story:
            await send(event.model_dump_json())
        # what follows happens now: a screen measures and alerts on it, not on the story
        await send(CAUGHT_UP)
        try:
            async for event in sub:
                await send(event.model_dump_json())
        except Lagged:
            return TRY_AGAIN_LATER, "lagged; reconnect"
        return NORMAL, "server shutting down"

    async def into() -> tuple[int, str]:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return NORMAL, ""
            reply = await _on_sidebar_message(runtime, principal, message.get("text"))
            if reply is not None:
                await send(json.dumps(reply))

    async def until_signed_out() -> tuple[int, str]:
        await signed_out.wait()
        return POLICY, "signed out; log in again"

    tasks = [asyncio.create_task(out(), name="events-out"),
             asyncio.create_task(into(), name="events-in"),
             asyncio.create_task(until_signed_out(), name="events-signed-out")]
    try:
        left = max(0.0, principal.expires_at - time.time())
        done, _ = await asyncio.wait(tasks, timeout=left, return_when=asyncio.FIRST_COMPLETED)
        if not done:
            code, reason = POLICY, "token expired; log in again"
        else:
            task = done.pop()
            try:
                code, reason = task.result()
            except WebSocketDisconnect:
                code, reason = NORMAL, ""
    finally:
        sub.close()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, Exception):
                await task
    await close(ws, code, reason)


async def _on_sidebar_message(runtime: Runtime, principal: Principal,
                              text: str | None) -> dict[str, Any] | None:
    """The answer to one message from a sidebar: None when all went well (the feedback event
    itself comes back through the subscription), else an error message. Never raises for
    anything the client sent."""
    if text is None:
        return {"type": "error", "detail": "send JSON text messages"}
    try:
        message = FeedbackMessage.model_validate_json(text)
    except ValidationError as exc:
        return {"type": "error", "detail": _describe(exc.errors(include_url=False,
                                                                  include_input=False))}
    meta = runtime.meta(message.call_id)
    if meta is None or not principal.can_read_call(meta.agent_id):
        return {"type": "error", "detail": f"no call {message.call_id!r} of yours"}
    if not _acts_on(principal, meta):
        return {"type": "error", "detail": "read-only: only the call's agent gives feedback"}
    try:
        await runtime.feedback(message.call_id, message.suggestion_id, message.feedback,
                               principal.username)
    except UnknownCall as exc:
        return {"type": "error", "detail": str(exc)}
    return None


def _valid_id(value: str) -> bool:
    return 0 < len(value) <= 128 and value.isprintable()


_TOKEN_IN_URL = re.compile(r"(?i)\b(token=)[^&\s\"']+")


class HideTokens(logging.Filter):
    """uvicorn logs every websocket's path with its query, where browsers and trunks put their
    token: the log gets `token=***` instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        hidden = _TOKEN_IN_URL.sub(r"\1***", message)
        if hidden != message:
            record.msg, record.args = hidden, ()
        return True


def serve(settings: AppSettings) -> None:
    """`callwise serve`: the app on uvicorn until SIGINT/SIGTERM, then a graceful stop (open
    sockets get `shutdown_timeout_s`, live calls are ended with their words kept, the runtime
    and database are closed)."""
    import uvicorn

    for name in ("uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).addFilter(HideTokens())

    config = uvicorn.Config(
        create_app(settings), host=settings.host, port=settings.port, lifespan="on",
        ws="websockets-sansio", ws_max_size=settings.ws_max_message_bytes,
        timeout_graceful_shutdown=settings.shutdown_timeout_s, log_config=None,
        server_header=False,
    )
    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            super().handle_exit(sig, frame)
            # The graceful stop is the whole answer to SIGINT/SIGTERM: uvicorn would raise the
            # signal again once stopped, which asyncio turns into a KeyboardInterrupt traceback.
            self._captured_signals.clear()

    Server(config).run()
