"""Access control for the live call runtime: users, passwords, signed tokens, ingress checks.

Agents see only the calls assigned to their agent id; supervisors see every call. The web app
logs a user in with `UserStore.authenticate`, hands out a token from `TokenSigner.issue`, and
turns each request's token back into a `Principal` with `TokenSigner.verify`. Media ingress is
guarded separately: a per-trunk token (`media_token_ok`), Twilio's request signature
(`check_twilio_signature`) and the websocket Origin (`origin_allowed`).

Token format (version 1), for a contact-center desktop that mints tokens itself (SSO) with the
shared secret:

    token     = payload_b64 "." signature_b64
    payload   = UTF-8 JSON object:
                  "v"     1                      (the format version; anything else is refused)
                  "sub"   username               ([A-Za-z0-9._@-], 1..64 characters)
                  "role"  "agent" | "supervisor"
                  "agent" the agent id (string) for role "agent"; null for "supervisor"
                  "iat"   issued at, unix seconds (number); at most 60 s in the future
                  "exp"   expires at, unix seconds (number)
                other members are ignored.
    payload_b64   = base64url(payload) without "=" padding (RFC 4648 section 5)
    signature_b64 = base64url(HMAC-SHA256(key=secret, msg=ASCII bytes of payload_b64)),
                    without padding

The signature covers payload_b64 exactly as sent, so the JSON needs no canonical form (key
order, whitespace). A token is at most 4096 characters. The secret is the one `load_secret`
returns: the value of CALLWISE_AUTH_SECRET (hex-decoded when it is an even-length hex string,
else its UTF-8 bytes), or the hex string kept in <data dir>/auth_secret (its decoded bytes). For
example, in Python:

    payload = json.dumps({"v": 1, "sub": "agent1", "role": "agent", "agent": "A01",
                          "iat": now, "exp": now + 3600}).encode()
    p = base64.urlsafe_b64encode(payload).rstrip(b"=")
    s = base64.urlsafe_b64encode(hmac.new(secret, p, hashlib.sha256).digest()).rstrip(b"=")
    token = (p + b"." + s).decode()

Tokens are stateless but for signing out: `Revocations` keeps the sha256 of each token signed
out before it expired (in PostgreSQL, so a restart does not bring it back), and the app refuses
those. Disabling a user or changing a password does not revoke a token already issued, which
stays valid until it expires. Callers that must act on that at once (a websocket that stays
open for hours) check `UserStore.get(username)` when they accept it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import hashlib
import hmac
import json
import logging
import math
import os
import re
import secrets
import tempfile
import time
import unicodedata
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Literal, get_args
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from pydantic import BaseModel, ConfigDict, FiniteFloat, ValidationError

from campaigns.embedded import default_data_dir

log = logging.getLogger(__name__)

Role = Literal["agent", "supervisor"]
ROLES: frozenset[str] = frozenset(get_args(Role))
AuthErrorKind = Literal["missing", "invalid", "expired"]

TOKEN_VERSION = 1
MAX_TOKEN_CHARS = 4096
MIN_SECRET_BYTES = 16
MIN_PASSWORD_CHARS = 8
# scrypt's cost grows with the input only through one HMAC pass, but a megabyte "password" is
# never a password; refusing it keeps the login endpoint from hashing request bodies.
MAX_PASSWORD_CHARS = 1024
# a desktop whose clock runs a little ahead still gets its freshly minted token accepted
CLOCK_SKEW_S = 60.0

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
_SALT_BYTES = 16
_HASH_BYTES = 32
# Stored hashes decide how much memory verify_password spends; a row edited to n=2**30 must
# not take the process down, so parameters beyond these are a malformed hash, not a slow one.
_SCRYPT_MAX_MEM = 64 * 1024 * 1024
_SCRYPT_MAX_P = 16

_NAME = re.compile(r"[A-Za-z0-9._@-]{1,64}")
_B64URL = re.compile(r"[A-Za-z0-9_-]+")
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


# -- errors and principals --------------------------------------------------------------------


class AuthError(Exception):
    """A request cannot be authenticated. `kind` says why: "missing" (no credentials),
    "invalid" (forged, malformed, wrong password) or "expired". Messages never contain the
    token, password or secret, so they may be logged and returned to the client."""

    kind: AuthErrorKind = "invalid"

    def __init__(self, message: str, kind: AuthErrorKind | None = None) -> None:
        super().__init__(message)
        if kind is not None:
            self.kind = kind


class CredentialsMissing(AuthError):
    kind: AuthErrorKind = "missing"


class CredentialsInvalid(AuthError):
    kind: AuthErrorKind = "invalid"


class TokenExpired(AuthError):
    kind: AuthErrorKind = "expired"


class Principal(BaseModel):
    """Who is asking, as a verified token says."""

    model_config = ConfigDict(frozen=True)

    username: str
    role: Role
    agent_id: str | None  # the agent id calls are assigned to (agents); None for supervisors
    expires_at: float  # unix seconds

    @property
    def is_supervisor(self) -> bool:
        return self.role == "supervisor"

    def can_read_call(self, agent_id_of_call: str | None) -> bool:
        """Supervisors read every call; an agent only the calls assigned to their agent id (a
        call with no agent, such as one still with the bot, is for supervisors only)."""
        if self.is_supervisor:
            return True
        if self.agent_id is None or agent_id_of_call is None:
            return False
        return agent_id_of_call == self.agent_id


def _check_identity(username: str, role: str, agent_id: str | None) -> None:
    """ValueError unless (username, role, agent_id) can be a user or a token subject."""
    if not isinstance(username, str) or not _NAME.fullmatch(username):
        raise ValueError("a username is 1 to 64 of the characters A-Z a-z 0-9 . _ @ -")
    if role not in ROLES:
        raise ValueError(f"role must be one of {sorted(ROLES)}, not {role!r}")
    if role == "agent":
        if agent_id is None:
            raise ValueError("an agent needs an agent_id (the id calls are assigned to)")
        if (
            not isinstance(agent_id, str)
            or not 0 < len(agent_id) <= 64
            or agent_id != agent_id.strip()
            or not agent_id.isprintable()
        ):
            raise ValueError("an agent_id is 1 to 64 printable characters, no outer spaces")
    elif agent_id is not None:
        # can_read_call ignores it for supervisors; accepting one would only mislead readers
        raise ValueError("a supervisor has no agent_id")


# -- passwords --------------------------------------------------------------------------------


def _password_bytes(password: str) -> bytes:
    # The same password typed on another keyboard or input method may arrive composed
    # differently (é as one code point or two); NFC makes both hash the same.
    return unicodedata.normalize("NFC", password).encode("utf-8")


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    return hashlib.scrypt(_password_bytes(password), salt=salt, n=n, r=r, p=p,
                          maxmem=_SCRYPT_MAX_MEM, dklen=dklen)


def hash_password(password: str) -> str:
    """scrypt(n=2**14, r=8, p=1) with a random 16-byte salt, as
    "scrypt$n$r$p$salt_b64$hash_b64" (standard base64), so parameters can change later
    without breaking the hashes already stored."""
    if not isinstance(password, str):
        raise TypeError("a password is a str")
    salt = secrets.token_bytes(_SALT_BYTES)
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P, _HASH_BYTES)
    b64 = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, encoded: str) -> bool:
    """True when `password` matches `encoded` (from hash_password); False for a wrong password
    and for anything that is not a well-formed scrypt hash with sane parameters."""
    if not isinstance(password, str) or not isinstance(encoded, str):
        return False
    parts = encoded.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        return False
    _, n_s, r_s, p_s, salt_s, hash_s = parts
    if not all(s.isascii() and s.isdigit() for s in (n_s, r_s, p_s)):
        return False
    n, r, p = int(n_s), int(r_s), int(p_s)
    if n < 2 or n & (n - 1) or not 1 <= r or not 1 <= p <= _SCRYPT_MAX_P:
        return False
    if 128 * r * (n + p + 2) > _SCRYPT_MAX_MEM:
        return False
    try:
        salt = base64.b64decode(salt_s, validate=True)
        expected = base64.b64decode(hash_s, validate=True)
    except (binascii.Error, ValueError):
        return False
    if len(salt) < 8 or not 16 <= len(expected) <= 64:
        return False
    try:
        digest = _scrypt(password, salt, n, r, p, len(expected))
    except (ValueError, MemoryError):
        return False
    return hmac.compare_digest(digest, expected)


@functools.cache
def _dummy_hash() -> str:
    # Unknown users are checked against this, so "no such user" costs the same scrypt as
    # "wrong password" and the response time does not reveal which usernames exist.
    return hash_password(secrets.token_urlsafe(16))


# -- tokens -----------------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class _Claims(BaseModel):
    # strict: a "sub" of 123 or an "exp" of true is a broken minter, not something to coerce
    model_config = ConfigDict(strict=True, extra="ignore")

    v: int
    sub: str
    role: str
    agent: str | None
    iat: FiniteFloat  # finite: an "exp" of NaN would compare as never expired
    exp: FiniteFloat


class TokenSigner:
    """Issues and verifies HMAC-SHA256 signed, expiring tokens (format: the module docstring).
    `clock` returns unix seconds; tests inject one to move time."""

    def __init__(
        self,
        secret: bytes,
        ttl_s: float = 8 * 3600,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not isinstance(secret, bytes | bytearray) or len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"the signing secret must be at least {MIN_SECRET_BYTES} bytes")
        if not 0 < ttl_s < math.inf:
            raise ValueError("ttl_s must be positive and finite")
        self._secret = bytes(secret)
        self.ttl_s = float(ttl_s)
        self._clock = clock

    def _sign(self, payload_b64: str) -> str:
        return _b64url(hmac.new(self._secret, payload_b64.encode("ascii"), hashlib.sha256).digest())

    def issue(
        self,
        username: str,
        role: Role,
        agent_id: str | None,
        ttl_s: float | None = None,
    ) -> str:
        """A token for this user, valid for ttl_s (default: the signer's) from now."""
        _check_identity(username, role, agent_id)
        ttl = self.ttl_s if ttl_s is None else float(ttl_s)
        if not 0 < ttl < math.inf:
            raise ValueError("ttl_s must be positive and finite")
        now = float(self._clock())
        claims = {
            "v": TOKEN_VERSION,
            "sub": username,
            "role": role,
            "agent": agent_id,
            "iat": now,
            "exp": now + ttl,
        }
        payload = _b64url(
            json.dumps(claims, separators=(",", ":"), sort_keys=True, allow_nan=False).encode()
        )
        token = f"{payload}.{self._sign(payload)}"
        if len(token) > MAX_TOKEN_CHARS:  # cannot happen with 64-character names; kept honest
            raise ValueError("the token would exceed the maximum length")
        return token

    def verify(self, token: str | None) -> Principal:
        """The principal a token names; AuthError (kind "missing", "invalid" or "expired")
        unless it is well formed, signed with this secret, unexpired and names a valid role."""
        if token is None or token == "":
            raise CredentialsMissing("no token")
        if not isinstance(token, str):
            raise CredentialsInvalid("malformed token")
        if len(token) > MAX_TOKEN_CHARS:
            raise CredentialsInvalid(f"token longer than {MAX_TOKEN_CHARS} characters")
        parts = token.split(".")
        # the character check also keeps non-ASCII out before anything is decoded
        if len(parts) != 2 or not all(_B64URL.fullmatch(part) for part in parts):
            raise CredentialsInvalid("malformed token")
        payload_b64, signature = parts
        # Compared as text, not decoded bytes: base64 decoders skip stray characters, and a
        # second spelling of a valid signature must not verify.
        if not hmac.compare_digest(self._sign(payload_b64).encode(), signature.encode()):
            raise CredentialsInvalid("bad token signature")
        # Past this point the payload was written by someone holding the secret, so a problem
        # is a broken minter rather than an attack; the messages say what to fix.
        try:
            claims = _Claims.model_validate_json(_b64url_decode(payload_b64))
        except (ValidationError, binascii.Error, ValueError):
            raise CredentialsInvalid("malformed token payload") from None
        if claims.v != TOKEN_VERSION:
            raise CredentialsInvalid(f"unsupported token version {claims.v}")
        try:
            _check_identity(claims.sub, claims.role, claims.agent)
        except ValueError as err:
            raise CredentialsInvalid(f"token subject refused: {err}") from None
        now = float(self._clock())
        if claims.iat > now + CLOCK_SKEW_S:
            raise CredentialsInvalid("token issued in the future (check the minter's clock)")
        if claims.exp <= now:
            raise TokenExpired("token expired")
        return Principal(
            username=claims.sub,
            role=claims.role,  # type: ignore[arg-type]  # checked by _check_identity
            agent_id=claims.agent,
            expires_at=claims.exp,
        )


# -- users ------------------------------------------------------------------------------------


_BAD_LOGIN = "invalid username or password"


def _check_password(password: str) -> None:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD_CHARS:
        raise ValueError(f"a password has at least {MIN_PASSWORD_CHARS} characters")
    if len(password) > MAX_PASSWORD_CHARS:
        raise ValueError(f"a password has at most {MAX_PASSWORD_CHARS} characters")


class UserStore:
    """Users in PostgreSQL (table `users`, migration 0003). Usernames are case-sensitive at
    login but unique regardless of case."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def _insert(self, username: str, password: str, role: Role, agent_id: str | None) -> bool:
        """True if the user was created, False if the name was taken."""
        _check_identity(username, role, agent_id)
        _check_password(password)
        encoded = await asyncio.to_thread(hash_password, password)
        async with self.pool.acquire() as conn:
            status = await conn.execute(
                "INSERT INTO users (username, password_hash, role, agent_id) "
                "VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                username,
                encoded,
                role,
                agent_id,
            )
        return status == "INSERT 0 1"

    async def create(
        self, username: str, password: str, role: Role, agent_id: str | None = None
    ) -> None:
        """ValueError for a taken username (in any letter case), a password shorter than 8
        characters, an agent without agent_id, a supervisor with one, or a bad username."""
        if not await self._insert(username, password, role, agent_id):
            raise ValueError(f"user {username!r} already exists")

    async def set_password(self, username: str, password: str) -> None:
        """LookupError for an unknown user; ValueError for a too short password."""
        _check_password(password)
        encoded = await asyncio.to_thread(hash_password, password)
        async with self.pool.acquire() as conn:
            status = await conn.execute(
                "UPDATE users SET password_hash = $2 WHERE username = $1", username, encoded
            )
        if status != "UPDATE 1":
            raise LookupError(f"no user {username!r}")

    async def disable(self, username: str) -> None:
        """The user can no longer log in (tokens already issued run until they expire).
        LookupError for an unknown user."""
        async with self.pool.acquire() as conn:
            status = await conn.execute(
                "UPDATE users SET disabled = true WHERE username = $1", username
            )
        if status != "UPDATE 1":
            raise LookupError(f"no user {username!r}")

    async def authenticate(self, username: str, password: str) -> tuple[Role, str | None]:
        """(role, agent_id) for the right password of an enabled user; otherwise
        AuthError("invalid username or password"), the same for every reason."""
        if not isinstance(username, str) or not isinstance(password, str):
            raise CredentialsInvalid(_BAD_LOGIN)
        if len(password) > MAX_PASSWORD_CHARS:
            raise CredentialsInvalid(_BAD_LOGIN)
        row = None
        if _NAME.fullmatch(username):
            async with self.pool.acquire() as conn:
                row = await conn.fetchrow(
                    "SELECT password_hash, role, agent_id, disabled FROM users WHERE username = $1",
                    username,
                )
        encoded = row["password_hash"] if row is not None else await asyncio.to_thread(_dummy_hash)
        # the hash runs for unknown and disabled users too: each answer costs one scrypt
        ok = await asyncio.to_thread(verify_password, password, encoded)
        if row is None or row["disabled"] or not ok or row["role"] not in ROLES:
            raise CredentialsInvalid(_BAD_LOGIN)
        return row["role"], row["agent_id"]

    async def get(self, username: str) -> tuple[Role, str | None, bool] | None:
        """(role, agent_id, disabled), or None for an unknown user."""
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT role, agent_id, disabled FROM users WHERE username = $1", username
            )
        return None if row is None else (row["role"], row["agent_id"], row["disabled"])


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


class Revocations:
    """Tokens signed out before they expired (table `revoked_tokens`, migration 0004), with an
    in-memory copy so that checking one costs no query. `pool` None: memory only."""

    def __init__(self, pool: asyncpg.Pool | None, clock: Callable[[], float] = time.time
                 ) -> None:
        self.pool = pool
        self._clock = clock
        self._revoked: dict[str, float] = {}  # digest -> unix expiry

    async def load(self) -> None:
        """Read the tokens still unexpired that were signed out (at start-up)."""
        if self.pool is None:
            return
        async with self.pool.acquire() as conn:
            await conn.execute("DELETE FROM revoked_tokens WHERE expires_at < now()")
            rows = await conn.fetch("SELECT token_sha256, extract(epoch FROM expires_at) AS exp "
                                    "FROM revoked_tokens")
        self._revoked.update({r["token_sha256"]: float(r["exp"]) for r in rows})

    async def revoke(self, token: str, principal: Principal) -> None:
        """Sign this token out: refused from now on, here at once and after a restart."""
        digest = token_digest(token)
        self._revoked[digest] = principal.expires_at
        now = self._clock()
        for key in [k for k, exp in self._revoked.items() if exp < now]:
            del self._revoked[key]
        if self.pool is None:
            return
        async with self.pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO revoked_tokens (token_sha256, username, expires_at) "
                "VALUES ($1, $2, to_timestamp($3)) ON CONFLICT DO NOTHING",
                digest, principal.username, principal.expires_at)

    def is_revoked(self, token: str) -> bool:
        return token_digest(token) in self._revoked


DEMO_USERS: tuple[tuple[str, Role, str | None], ...] = (
    ("agent1", "agent", "A01"),
    ("agent2", "agent", "A02"),
    ("supervisor", "supervisor", None),
)


async def ensure_demo_users(pool: asyncpg.Pool) -> dict[str, str]:
    """Create the demo users that do not exist yet (agent1/A01, agent2/A02, supervisor), with
    the password in CALLWISE_DEMO_PASSWORD or else a random one each; returns {username:
    password} for the users created by this call, for the demo to print."""
    shared = os.environ.get("CALLWISE_DEMO_PASSWORD") or None
    if shared is not None and len(shared) < MIN_PASSWORD_CHARS:
        raise ValueError(f"CALLWISE_DEMO_PASSWORD needs at least {MIN_PASSWORD_CHARS} characters")
    store = UserStore(pool)
    created: dict[str, str] = {}
    for username, role, agent_id in DEMO_USERS:
        if await store.get(username) is not None:
            continue
        password = shared or secrets.token_urlsafe(12)
        # another process starting the demo at the same moment may win the insert; then its
        # password is the one that holds, and this call did not create the user
        if await store._insert(username, password, role, agent_id):
            created[username] = password
    return created


# -- media ingress ----------------------------------------------------------------------------


def media_token_ok(expected_tokens: Collection[str], presented: str | None) -> bool:
    """True when `presented` is one of the per-trunk ingress tokens. Every token is compared,
    and as fixed-length digests, so the time taken says neither which one matched nor how
    long they are. An empty token never matches (nothing presented is refused first)."""
    if not presented or not isinstance(presented, str):
        return False
    offered = hashlib.sha256(presented.encode("utf-8")).digest()
    found = False
    for token in expected_tokens:
        candidate = hashlib.sha256(token.encode("utf-8")).digest()
        found |= hmac.compare_digest(offered, candidate)
    return found


def twilio_signature(auth_token: str, url: str, params: Mapping[str, str] | None = None) -> str:
    """Twilio's X-Twilio-Signature: base64(HMAC-SHA1(auth_token, url + every parameter's name
    and value, in name order)). A websocket upgrade is signed over the full wss:// URL (query
    included) with no parameters."""
    data = url + "".join(f"{key}{params[key]}" for key in sorted(params or {}))
    digest = hmac.new(auth_token.encode("utf-8"), data.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def _port_variants(url: str) -> list[str]:
    """`url` as given, without its default port and with it: Twilio signs whichever form it
    was configured with, and a proxy in front of us may add or drop ":443"."""
    variants = [url]
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return variants
    default = _DEFAULT_PORTS.get(parts.scheme.lower())
    if default is None or parts.hostname is None:
        return variants
    host = parts.netloc.rsplit("@", 1)[-1]
    userinfo = parts.netloc[: len(parts.netloc) - len(host)]
    bare = host.rsplit(":", 1)[0] if port is not None else host
    if port is None:
        variants.append(urlunsplit(parts._replace(netloc=f"{userinfo}{bare}:{default}")))
    elif port == default:
        variants.append(urlunsplit(parts._replace(netloc=f"{userinfo}{bare}")))
    return variants


def check_twilio_signature(
    auth_token: str,
    url: str,
    signature: str | None,
    params: Mapping[str, str] | None = None,
) -> bool:
    """True when `signature` (the X-Twilio-Signature header) is Twilio's for this request;
    False when it is missing. Compared in constant time."""
    if not signature or not isinstance(signature, str) or not auth_token:
        return False
    offered = signature.encode("utf-8")
    ok = False
    for candidate in _port_variants(url):
        expected = twilio_signature(auth_token, candidate, params).encode("ascii")
        ok |= hmac.compare_digest(expected, offered)
    return ok


def _origin_key(origin: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of a serialized origin "scheme://host[:port]"; None if it is not
    exactly that (a path, credentials, a query, "null", another scheme)."""
    if not origin.isascii():
        return None
    try:
        parts = urlsplit(origin)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        return None
    if parts.path or parts.query or parts.fragment or "@" in parts.netloc:
        return None
    if origin.endswith(":"):  # "https://host:" parses as no port; no browser sends it
        return None
    return scheme, parts.hostname.lower(), port or _DEFAULT_PORTS[scheme]


def origin_allowed(origin: str | None, allowed: Collection[str], host: str | None) -> bool:
    """The websocket Origin check against cross-site hijacking. No Origin header (Twilio, a
    test client, any non-browser) is allowed: only browsers send one, and they cannot omit it.
    A present Origin must be one of `allowed` (scheme://host[:port], host case-insensitive) or
    the request's own host (http(s)://{host}, `host` being the Host header). "null" and
    everything else is refused."""
    if origin is None:
        return True
    key = _origin_key(origin)
    if key is None:
        return False
    for entry in allowed:
        # a trailing slash is a common way to write an origin in a settings file
        entry_key = _origin_key(entry[:-1] if entry.endswith("/") else entry)
        if entry_key is not None and entry_key == key:
            return True
    if not host or not host.isascii():
        return False
    scheme, hostname, port = key
    try:
        own = urlsplit(f"//{host}")
        own_port = own.port
    except ValueError:
        return False
    if not own.hostname or own.path or own.query or own.fragment or "@" in own.netloc:
        return False
    return own.hostname.lower() == hostname and (own_port or _DEFAULT_PORTS[scheme]) == port


# -- the signing secret -----------------------------------------------------------------------


def _decode_env_secret(value: str) -> bytes:
    if len(value) % 2 == 0 and re.fullmatch(r"[0-9A-Fa-f]+", value):
        return bytes.fromhex(value)
    return value.encode("utf-8")


def load_secret(path: Path | None = None) -> bytes:
    """The token signing secret: CALLWISE_AUTH_SECRET if set (hex-decoded when it is an
    even-length hex string, else its UTF-8 bytes), else 32 random bytes kept as hex in `path`
    (default: <data dir>/auth_secret, mode 0600), created on first use and reused after, so
    tokens survive a restart and every process on the machine agrees."""
    env = os.environ.get("CALLWISE_AUTH_SECRET")
    if env:
        secret = _decode_env_secret(env.strip())
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(
                f"CALLWISE_AUTH_SECRET is too short: at least {MIN_SECRET_BYTES} bytes "
                f"({2 * MIN_SECRET_BYTES} hex digits)"
            )
        return secret
    path = path or default_data_dir() / "auth_secret"
    if not path.exists():
        _create_secret_file(path)
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        log.warning(
            "%s was readable by other users (mode %o); made it 0600. Anyone who read it can "
            "mint tokens: replace it (delete the file and restart) if that may have happened",
            path,
            mode,
        )
        path.chmod(0o600)
    text = path.read_text(encoding="ascii", errors="replace").strip()
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        raise ValueError(
            f"{path} does not hold a hex secret; delete it to make a new one"
        ) from None
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"{path} holds a secret shorter than {MIN_SECRET_BYTES} bytes")
    return secret


def _create_secret_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Written whole under a temporary name (mkstemp makes it 0600) and then hard-linked into
    # place: link never replaces an existing file, so two processes starting together end up
    # with the same secret, and neither ever reads a half-written one.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".auth_secret.")
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(secrets.token_bytes(32).hex() + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
    finally:
        os.unlink(tmp)
