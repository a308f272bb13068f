"""assist.auth: passwords, tokens, users (a real PostgreSQL from tests/pg.py), ingress checks."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import stat
import threading
import time

import asyncpg
import pytest

from assist import auth
from assist.auth import (
    AuthError,
    Principal,
    TokenSigner,
    UserStore,
    check_twilio_signature,
    ensure_demo_users,
    hash_password,
    load_secret,
    media_token_ok,
    origin_allowed,
    twilio_signature,
    verify_password,
)
from campaigns.db import DatabaseSettings, connect
from campaigns.migrate import discover

from .pg import PgServer

SECRET = b"s" * 32
FAST = DatabaseSettings(db_pool_min=1, db_pool_max=4, db_connect_timeout_s=3)


class Clock:
    def __init__(self, now: float = 1_760_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mint(claims: dict, secret: bytes = SECRET) -> str:
    """A token made the way the module docstring tells an SSO desktop to make one."""
    payload = b64url(json.dumps(claims).encode())
    signature = b64url(hmac.new(secret, payload.encode(), hashlib.sha256).digest())
    return f"{payload}.{signature}"


def claims(**changes) -> dict:
    base = {"v": 1, "sub": "agent1", "role": "agent", "agent": "A01"}
    base |= {"iat": 1_760_000_000.0, "exp": 1_760_000_000.0 + 3600}
    return base | changes


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
async def auth_db(pg: PgServer):
    dsn = await pg.create_database("callwise_auth")
    database = await connect(dsn, settings=FAST)
    yield database
    await database.close()
    await pg.drop_database(dsn)


@pytest.fixture
async def users(auth_db) -> UserStore:
    async with auth_db.acquire() as conn:
        await conn.execute("TRUNCATE users")
    return UserStore(auth_db.pool)


# -- passwords --------------------------------------------------------------------------------


def test_password_hash_round_trip_and_wrong_password():
    encoded = hash_password("correct horse battery")
    scheme, n, r, p, salt, digest = encoded.split("$")
    assert (scheme, n, r, p) == ("scrypt", str(2**14), "8", "1")
    assert len(base64.b64decode(salt)) == 16
    assert verify_password("correct horse battery", encoded)
    assert not verify_password("correct horse batterY", encoded)
    assert not verify_password("", encoded)
    # a fresh salt each time: equal passwords do not give equal hashes
    assert hash_password("correct horse battery") != encoded
    # the hash is plain scrypt, checkable by anything that reads the format
    expected = hashlib.scrypt(
        b"correct horse battery", salt=base64.b64decode(salt), n=2**14, r=8, p=1, dklen=32
    )
    assert base64.b64decode(digest) == expected


def test_password_unicode_forms_are_one_password():
    composed, decomposed = "caf\u00e9-\u5bc6\u7801-2025", "cafe\u0301-\u5bc6\u7801-2025"
    assert verify_password(decomposed, hash_password(composed))


def _good() -> list[str]:
    return hash_password("password123").split("$")


def _with(index: int, value: str) -> str:
    parts = _good()
    parts[index] = value
    return "$".join(parts)


@pytest.mark.parametrize(
    "encoded",
    [
        "",
        "scrypt",
        "not a hash at all",
        "$".join(_good()[:5]),  # a field short
        "$".join([*_good(), "extra"]),
        _with(0, "bcrypt"),
        _with(1, "abc"),
        _with(1, "-16384"),
        _with(1, "16383"),  # n must be a power of two
        _with(1, "1"),
        _with(1, str(2**30)),  # would need 128 GiB: refused, not attempted
        _with(1, "\u0661\u0666\u0663\u0668\u0664"),  # Arabic-Indic digits pass isdigit()
        _with(1, str(2**70)),  # too big for scrypt's C arguments: a TypeError, not False
        _with(2, str(2**70)),
        _with(3, str(2**70)),
        _with(2, "0"),
        _with(3, "0"),
        _with(3, "1000"),
        _with(4, "!!!!"),
        _with(4, "c2FsdA=="),  # a 4-byte salt
        _with(5, "not*base64"),
        _with(5, base64.b64encode(b"short").decode()),
        _with(5, ""),
    ],
)
def test_malformed_hashes_never_verify(encoded):
    started = time.perf_counter()
    assert verify_password("password123", encoded) is False
    assert time.perf_counter() - started < 5


def test_verify_password_refuses_non_strings():
    assert verify_password("password123", None) is False  # type: ignore[arg-type]
    assert verify_password(None, hash_password("password123")) is False  # type: ignore[arg-type]


# -- tokens -----------------------------------------------------------------------------------


def test_token_round_trip():
    clock = Clock()
    signer = TokenSigner(SECRET, ttl_s=600, clock=clock)
    agent = signer.verify(signer.issue("agent1", "agent", "A01"))
    assert agent == Principal(
        username="agent1", role="agent", agent_id="A01", expires_at=clock.now + 600
    )
    assert not agent.is_supervisor
    boss = signer.verify(signer.issue("super.visor@bank", "supervisor", None, ttl_s=30))
    assert (boss.username, boss.role, boss.agent_id) == ("super.visor@bank", "supervisor", None)
    assert boss.is_supervisor and boss.expires_at == clock.now + 30


def test_token_payload_is_the_documented_format():
    clock = Clock()
    token = TokenSigner(SECRET, clock=clock).issue("agent1", "agent", "A01")
    payload, signature = token.split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert body == {
        "v": 1,
        "sub": "agent1",
        "role": "agent",
        "agent": "A01",
        "iat": clock.now,
        "exp": clock.now + 8 * 3600,
    }
    assert signature == b64url(hmac.new(SECRET, payload.encode(), hashlib.sha256).digest())


def test_a_token_minted_elsewhere_with_the_shared_secret_verifies():
    # another minter: other key order, whitespace, integer times, an extra claim
    clock = Clock()
    body = {"exp": int(clock.now) + 60, "iat": int(clock.now), "agent": None}
    body |= {"role": "supervisor", "sub": "sso-user", "v": 1, "desk": "3F-12"}
    payload = b64url(json.dumps(body, indent=2).encode())
    token = f"{payload}.{b64url(hmac.new(SECRET, payload.encode(), hashlib.sha256).digest())}"
    principal = TokenSigner(SECRET, clock=clock).verify(token)
    assert (principal.username, principal.role, principal.agent_id) == (
        "sso-user",
        "supervisor",
        None,
    )


def _forgeries() -> dict[str, str]:
    signer = TokenSigner(SECRET, clock=Clock())
    token = signer.issue("agent1", "agent", "A01")
    payload, signature = token.split(".")
    other = TokenSigner(b"o" * 32, clock=Clock()).issue("agent1", "agent", "A01")
    body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    changed = b64url(json.dumps(body | {"agent": "A02"}, separators=(",", ":")).encode())
    bad_utf8 = b64url(b'{"v":\xff}')
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    return {
        "changed payload": f"{changed}.{signature}",
        "changed signature": f"{payload}.{flipped}",
        "signature of another payload": f"{payload}.{other.split('.')[1]}",
        "other secret": other,
        "truncated": token[:-5],
        "truncated payload": token[5:],
        "no signature": payload,
        "empty signature": f"{payload}.",
        "three parts": f"{token}.{signature}",
        "padded signature": f"{token}=",
        "whitespace": f" {token}",
        "garbage": "garbage",
        "dots": "..",
        "non-ascii": token[:-1] + "\u00e9",
        "non-ascii payload": "\u5bc6" + token,
        "10 KB": f"{payload}{'A' * 10_000}.{signature}",
        "long but well signed": mint(claims(pad="x" * 5000)),
        "signed non-json": f"{b64url(b'hello')}.{mint_sig(b64url(b'hello'))}",
        "signed json list": f"{b64url(b'[1]')}.{mint_sig(b64url(b'[1]'))}",
        "signed bad utf-8": f"{bad_utf8}.{mint_sig(bad_utf8)}",
    }


def mint_sig(payload_b64: str, secret: bytes = SECRET) -> str:
    return b64url(hmac.new(secret, payload_b64.encode(), hashlib.sha256).digest())


FORGERIES = _forgeries()


@pytest.mark.parametrize("name", FORGERIES)
def test_forged_and_malformed_tokens_are_refused(name):
    token = FORGERIES[name]
    with pytest.raises(AuthError) as caught:
        TokenSigner(SECRET, clock=Clock()).verify(token)
    assert caught.value.kind == "invalid"
    # the message says what is wrong without echoing the token back
    assert token not in str(caught.value) and SECRET.decode() not in str(caught.value)


@pytest.mark.parametrize("token", ["", None])
def test_a_missing_token_is_its_own_kind(token):
    with pytest.raises(auth.CredentialsMissing) as caught:
        TokenSigner(SECRET).verify(token)
    assert isinstance(caught.value, AuthError) and caught.value.kind == "missing"


def test_expired_tokens_are_refused():
    clock = Clock()
    signer = TokenSigner(SECRET, ttl_s=60, clock=clock)
    token = signer.issue("agent1", "agent", "A01")
    clock.now += 59.9
    assert signer.verify(token).username == "agent1"
    clock.now += 0.1  # exactly at exp
    with pytest.raises(auth.TokenExpired) as caught:
        signer.verify(token)
    assert caught.value.kind == "expired" and isinstance(caught.value, AuthError)
    clock.now += 10 * 24 * 3600
    with pytest.raises(AuthError, match="expired"):
        signer.verify(token)


def test_a_token_from_the_future_is_refused_beyond_clock_skew():
    clock = Clock()
    signer = TokenSigner(SECRET, clock=clock)
    assert signer.verify(mint(claims(iat=clock.now + 30, exp=clock.now + 90)))
    with pytest.raises(AuthError, match="future") as caught:
        signer.verify(mint(claims(iat=clock.now + 600, exp=clock.now + 900)))
    assert caught.value.kind == "invalid"


@pytest.mark.parametrize(
    "changes",
    [
        {"role": "admin"},
        {"role": "Supervisor"},
        {"role": ["supervisor"]},
        {"role": None},
        {"role": "agent", "agent": None},  # an agent who would match no call, or every one
        {"role": "supervisor", "agent": "A01"},
        {"agent": ""},
        {"sub": "robert'); DROP TABLE users;--"},
        {"sub": ""},
        {"sub": 123},
        {"v": 2},
        {"v": True},
        {"v": "1"},
        {"exp": float("nan")},  # NaN compares as never expired
        {"exp": float("inf")},
        {"exp": "9999999999"},
        {"exp": True},
        {"iat": None},
    ],
)
def test_correctly_signed_but_invalid_claims_are_refused(changes):
    body = claims(**changes)
    token = mint(body)
    with pytest.raises(AuthError) as caught:
        TokenSigner(SECRET, clock=Clock()).verify(token)
    assert caught.value.kind == "invalid"


@pytest.mark.parametrize("missing", ["v", "sub", "role", "agent", "iat", "exp"])
def test_every_claim_is_required(missing):
    body = claims()
    del body[missing]
    with pytest.raises(AuthError):
        TokenSigner(SECRET, clock=Clock()).verify(mint(body))


def test_role_tampering_without_the_secret_is_refused():
    signer = TokenSigner(SECRET, clock=Clock())
    payload, signature = signer.issue("agent1", "agent", "A01").split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    promoted = b64url(json.dumps(body | {"role": "supervisor", "agent": None}).encode())
    with pytest.raises(AuthError, match="signature"):
        signer.verify(f"{promoted}.{signature}")


def test_signer_refuses_weak_settings_and_bad_subjects():
    with pytest.raises(ValueError, match="at least 16 bytes"):
        TokenSigner(b"short")
    with pytest.raises(ValueError):
        TokenSigner(SECRET, ttl_s=0)
    signer = TokenSigner(SECRET)
    for args in [
        ("agent1", "agent", None),
        ("boss", "supervisor", "A01"),
        ("x" * 65, "supervisor", None),
        ("bad name", "supervisor", None),
        ("agent1", "admin", "A01"),
    ]:
        with pytest.raises(ValueError):
            signer.issue(*args)
    for ttl in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            signer.issue("agent1", "agent", "A01", ttl_s=ttl)


@pytest.mark.parametrize(
    ("role", "agent_id", "call_agent", "allowed"),
    [
        ("supervisor", None, "A01", True),
        ("supervisor", None, "A02", True),
        ("supervisor", None, None, True),
        ("agent", "A01", "A01", True),
        ("agent", "A01", "A02", False),
        ("agent", "A01", "a01", False),
        ("agent", "A01", "A01 ", False),
        ("agent", "A01", "", False),
        ("agent", "A01", None, False),
        ("agent", None, None, False),
        ("agent", None, "A01", False),
    ],
)
def test_can_read_call(role, agent_id, call_agent, allowed):
    principal = Principal(username="u", role=role, agent_id=agent_id, expires_at=0)
    assert principal.can_read_call(call_agent) is allowed


# -- users ------------------------------------------------------------------------------------


async def test_migration_0003_creates_users_and_is_recorded(auth_db):
    assert [m.filename for m in discover()][:3] == [
        "0001_init.sql",
        "0002_store.sql",
        "0003_users.sql",
    ]
    async with auth_db.acquire() as conn:
        row = await conn.fetchrow("SELECT name, checksum FROM schema_migrations WHERE version = 3")
        assert row["name"] == "users"
        assert row["checksum"] == discover()[2].checksum
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(
                "INSERT INTO users (username, password_hash, role) VALUES ('x', 'h', 'agent')"
            )
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(
                "INSERT INTO users (username, password_hash, role) VALUES ('x', 'h', 'root')"
            )


async def test_create_and_authenticate(users):
    await users.create("agent1", "password-1", "agent", "A01")
    await users.create("boss", "password-2", "supervisor")
    assert await users.authenticate("agent1", "password-1") == ("agent", "A01")
    assert await users.authenticate("boss", "password-2") == ("supervisor", None)
    assert await users.get("agent1") == ("agent", "A01", False)
    assert await users.get("nobody") is None
    async with users.pool.acquire() as conn:
        stored = await conn.fetchval("SELECT password_hash FROM users WHERE username = 'agent1'")
    assert stored.startswith("scrypt$") and "password-1" not in stored


async def test_every_failed_login_says_the_same(users):
    await users.create("agent1", "password-1", "agent", "A01")
    await users.create("gone", "password-3", "agent", "A09")
    await users.disable("gone")
    assert await users.get("gone") == ("agent", "A09", True)
    failures = []
    for username, password in [
        ("agent1", "password-2"),  # wrong password
        ("agent1", ""),
        ("Agent1", "password-1"),  # usernames are exact at login
        ("nobody", "password-1"),  # unknown user
        ("bad name!", "password-1"),
        ("gone", "password-3"),  # disabled, right password
        ("agent1", "x" * 100_000),
    ]:
        with pytest.raises(AuthError) as caught:
            await users.authenticate(username, password)
        failures.append((str(caught.value), caught.value.kind))
    assert set(failures) == {("invalid username or password", "invalid")}


async def test_authenticate_hashes_in_a_thread_and_for_unknown_users_too(users, monkeypatch):
    await users.create("agent1", "password-1", "agent", "A01")
    seen = []
    real = auth.verify_password

    def recording(password: str, encoded: str) -> bool:
        seen.append((threading.get_ident(), encoded))
        return real(password, encoded)

    monkeypatch.setattr(auth, "verify_password", recording)
    with pytest.raises(AuthError):
        await users.authenticate("nobody", "password-1")
    with pytest.raises(AuthError):
        await users.authenticate("agent1", "wrong-password")
    assert len(seen) == 2
    assert all(ident != threading.get_ident() for ident, _ in seen)  # not on the event loop
    assert all(encoded.startswith("scrypt$16384$8$1$") for _, encoded in seen)


async def test_the_event_loop_runs_during_a_login(users):
    await users.create("agent1", "password-1", "agent", "A01")
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.001)
            ticks += 1

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    for _ in range(3):
        await users.authenticate("agent1", "password-1")
    task.cancel()
    assert ticks >= 3


async def test_create_refuses_bad_users(users):
    await users.create("agent1", "password-1", "agent", "A01")
    for args, match in [
        (("agent1", "password-9", "agent", "A02"), "already exists"),
        (("AGENT1", "password-9", "agent", "A02"), "already exists"),  # differs only in case
        (("agent3", "short", "agent", "A03"), "at least 8"),
        (("agent3", "", "agent", "A03"), "at least 8"),
        (("agent3", "password-9", "agent", None), "agent_id"),
        (("agent3", "password-9", "agent", ""), "agent_id"),
        (("boss", "password-9", "supervisor", "A01"), "supervisor"),
        (("agent3", "password-9", "admin", None), "role"),
        (("", "password-9", "supervisor", None), "username"),
        (("has space", "password-9", "supervisor", None), "username"),
        (("semi;colon", "password-9", "supervisor", None), "username"),
        (("\u7528\u6237", "password-9", "supervisor", None), "username"),
        (("x" * 65, "password-9", "supervisor", None), "username"),
    ]:
        with pytest.raises(ValueError, match=match):
            await users.create(*args)
    await users.create("x" * 64, "password-9", "supervisor")
    await users.create("first.last@bank-1_a", "password-9", "agent", "A07")
    async with users.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM users") == 3


async def test_set_password_and_disable(users):
    await users.create("agent1", "password-1", "agent", "A01")
    await users.set_password("agent1", "new-password")
    with pytest.raises(AuthError):
        await users.authenticate("agent1", "password-1")
    assert await users.authenticate("agent1", "new-password") == ("agent", "A01")
    with pytest.raises(ValueError):
        await users.set_password("agent1", "short")
    with pytest.raises(LookupError):
        await users.set_password("nobody", "new-password")
    with pytest.raises(LookupError):
        await users.disable("nobody")
    await users.disable("agent1")
    with pytest.raises(AuthError, match="invalid username or password"):
        await users.authenticate("agent1", "new-password")


async def test_ensure_demo_users_creates_only_the_missing_ones(users, monkeypatch):
    monkeypatch.delenv("CALLWISE_DEMO_PASSWORD", raising=False)
    await users.create("agent2", "already-there", "agent", "A02")
    created = await ensure_demo_users(users.pool)
    assert set(created) == {"agent1", "supervisor"}
    assert created["agent1"] != created["supervisor"]  # random, one each
    assert await users.authenticate("agent1", created["agent1"]) == ("agent", "A01")
    assert await users.authenticate("agent2", "already-there") == ("agent", "A02")
    assert await users.authenticate("supervisor", created["supervisor"]) == ("supervisor", None)
    assert await ensure_demo_users(users.pool) == {}


async def test_ensure_demo_users_takes_the_password_from_the_environment(users, monkeypatch):
    monkeypatch.setenv("CALLWISE_DEMO_PASSWORD", "demo-password")
    created = await ensure_demo_users(users.pool)
    assert created == dict.fromkeys(("agent1", "agent2", "supervisor"), "demo-password")
    assert await users.authenticate("agent2", "demo-password") == ("agent", "A02")
    monkeypatch.setenv("CALLWISE_DEMO_PASSWORD", "short")
    async with users.pool.acquire() as conn:
        await conn.execute("TRUNCATE users")
    with pytest.raises(ValueError, match="CALLWISE_DEMO_PASSWORD"):
        await ensure_demo_users(users.pool)


# -- media ingress ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expected", "presented", "ok"),
    [
        (["trunk-a-token", "trunk-b-token"], "trunk-a-token", True),
        (["trunk-a-token", "trunk-b-token"], "trunk-b-token", True),
        (["trunk-a-token"], "trunk-a-toke", False),
        (["trunk-a-token"], "trunk-a-token ", False),
        (["trunk-a-token"], "TRUNK-A-TOKEN", False),
        (["trunk-a-token"], None, False),
        (["trunk-a-token"], "", False),
        (["", "trunk-a-token"], "", False),  # an empty configured token opens nothing
        ([], "anything", False),
        ({"\u5bc6\u7801-token"}, "\u5bc6\u7801-token", True),
    ],
)
def test_media_token_ok(expected, presented, ok):
    assert media_token_ok(expected, presented) is ok


# Twilio's documented example ("How to validate a request": auth token 12345). The phone numbers
# are those of Twilio's page; with +12349013030 instead the signature is a different one.
TWILIO_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
TWILIO_PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+14158675310",
    "Digits": "1234",
    "From": "+14158675310",
    "To": "+18005551212",
}
TWILIO_EXPECTED = "GvWf1cFY/Q7PnoempGyD5oXAezc="


def test_twilio_signature_matches_twilios_documented_example():
    # the algorithm by hand: URL, then each parameter's name and value in name order
    data = TWILIO_URL + "CallSidCA1234567890ABCDECaller+14158675310Digits1234"
    data += "From+14158675310To+18005551212"
    by_hand = base64.b64encode(hmac.new(b"12345", data.encode(), hashlib.sha1).digest()).decode()
    assert by_hand == TWILIO_EXPECTED
    assert twilio_signature("12345", TWILIO_URL, TWILIO_PARAMS) == TWILIO_EXPECTED
    # the order parameters arrive in does not matter
    reordered = dict(reversed(TWILIO_PARAMS.items()))
    assert twilio_signature("12345", TWILIO_URL, reordered) == TWILIO_EXPECTED
    # twilio-python's test vector: the same example with +14158675309
    other = {k: v.replace("5310", "5309") for k, v in TWILIO_PARAMS.items()}
    assert twilio_signature("12345", TWILIO_URL, other) == "RSOYDt4T1cUTdK1PDd93/VVr8B8="


def test_check_twilio_signature():
    assert check_twilio_signature("12345", TWILIO_URL, TWILIO_EXPECTED, TWILIO_PARAMS)
    assert not check_twilio_signature("12346", TWILIO_URL, TWILIO_EXPECTED, TWILIO_PARAMS)
    assert not check_twilio_signature("12345", TWILIO_URL + "&x=1", TWILIO_EXPECTED, TWILIO_PARAMS)
    assert not check_twilio_signature("12345", TWILIO_URL, TWILIO_EXPECTED, {})
    tampered = TWILIO_PARAMS | {"Digits": "1235"}
    assert not check_twilio_signature("12345", TWILIO_URL, TWILIO_EXPECTED, tampered)
    for missing in (None, ""):
        assert not check_twilio_signature("12345", TWILIO_URL, missing, TWILIO_PARAMS)
    assert not check_twilio_signature("12345", TWILIO_URL, "\u00e9" * 28, TWILIO_PARAMS)
    assert not check_twilio_signature("", TWILIO_URL, twilio_signature("", TWILIO_URL))


def test_websocket_upgrade_signature_is_over_the_full_wss_url():
    url = "wss://media.bank.example/twilio?trunk=east"
    by_hand = base64.b64encode(hmac.new(b"tok", url.encode(), hashlib.sha1).digest()).decode()
    assert twilio_signature("tok", url) == by_hand == twilio_signature("tok", url, {})
    assert check_twilio_signature("tok", url, by_hand)
    # a proxy that adds or drops the default port does not break the check
    assert check_twilio_signature("tok", "wss://media.bank.example:443/twilio?trunk=east", by_hand)
    with_port = twilio_signature("tok", "wss://media.bank.example:443/twilio?trunk=east")
    assert check_twilio_signature("tok", url, with_port)
    assert not check_twilio_signature(
        "tok", "wss://media.bank.example:8443/twilio?trunk=east", by_hand
    )
    assert not check_twilio_signature("tok", "wss://media.bank.example/twilio?trunk=west", by_hand)


ALLOWED = ["https://desk.bank.example", "http://localhost:3000"]


@pytest.mark.parametrize(
    ("origin", "host", "ok"),
    [
        (None, None, True),  # not a browser
        (None, "evil.example", True),
        ("https://desk.bank.example", None, True),
        ("https://DESK.Bank.Example", None, True),
        ("HTTPS://desk.bank.example", None, True),
        ("https://desk.bank.example:443", None, True),
        ("http://localhost:3000", None, True),
        ("http://localhost:3001", None, False),
        ("http://localhost", None, False),
        ("http://desk.bank.example", None, False),  # another scheme is another origin
        ("https://desk.bank.example.evil.example", None, False),
        ("https://evil.example", "media.bank.example", False),
        ("https://desk.bank.example/", None, False),  # not a serialized origin
        ("https://desk.bank.example/path", None, False),
        ("https://user@desk.bank.example", None, False),
        ("https://desk.bank.example:", None, False),
        ("https://desk.bank.example:99999", None, False),
        ("null", "media.bank.example", False),
        ("", "media.bank.example", False),
        ("file://", "media.bank.example", False),
        ("chrome-extension://abc", "media.bank.example", False),
        ("https://media.bank.example", "media.bank.example", True),  # same origin
        ("http://media.bank.example", "media.bank.example", True),
        ("https://Media.Bank.Example", "media.bank.example", True),
        ("http://127.0.0.1:8765", "127.0.0.1:8765", True),
        ("http://127.0.0.1:8766", "127.0.0.1:8765", False),
        ("http://127.0.0.1", "127.0.0.1:8765", False),
        ("http://[::1]:8765", "[::1]:8765", True),
        ("https://media.bank.example", "media.bank.example:443", True),
        ("https://media.bank.example", "media.bank.example@evil.example", False),
        ("https://evil.example", "evil.example/", False),
        ("https://m\u00e9dia.example", "m\u00e9dia.example", False),
    ],
)
def test_origin_allowed(origin, host, ok):
    assert origin_allowed(origin, ALLOWED, host) is ok


def test_origin_allowed_settings_may_end_with_a_slash_but_star_is_not_a_wildcard():
    assert origin_allowed("https://desk.bank.example", ["https://desk.bank.example/"], None)
    assert not origin_allowed("https://desk.bank.example", ["*"], None)
    assert not origin_allowed("https://desk.bank.example", [], None)


# -- the signing secret -----------------------------------------------------------------------


def test_load_secret_creates_a_private_file_once_and_reuses_it(tmp_path, monkeypatch):
    monkeypatch.delenv("CALLWISE_AUTH_SECRET", raising=False)
    path = tmp_path / "data" / "auth_secret"
    first = load_secret(path)
    assert len(first) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_secret(path) == first
    assert [p.name for p in path.parent.iterdir()] == ["auth_secret"]  # no temporary left
    other = tmp_path / "other" / "auth_secret"
    assert load_secret(other) != first
    # a token made with the secret survives a restart (a new signer, the same file)
    token = TokenSigner(first).issue("agent1", "agent", "A01")
    assert TokenSigner(load_secret(path)).verify(token).agent_id == "A01"


def test_load_secret_defaults_to_the_data_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("CALLWISE_AUTH_SECRET", raising=False)
    monkeypatch.setenv("CALLWISE_DATA_DIR", str(tmp_path))
    secret = load_secret()
    assert bytes.fromhex((tmp_path / "auth_secret").read_text()) == secret


def test_load_secret_tightens_a_readable_file(tmp_path, monkeypatch):
    monkeypatch.delenv("CALLWISE_AUTH_SECRET", raising=False)
    path = tmp_path / "auth_secret"
    path.write_text("ab" * 32 + "\n")
    path.chmod(0o644)
    assert load_secret(path) == b"\xab" * 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.write_text("not hex")
    with pytest.raises(ValueError, match="hex"):
        load_secret(path)


def test_load_secret_from_the_environment(tmp_path, monkeypatch):
    path = tmp_path / "auth_secret"
    monkeypatch.setenv("CALLWISE_AUTH_SECRET", "00ff" * 8)
    assert load_secret(path) == b"\x00\xff" * 8
    monkeypatch.setenv("CALLWISE_AUTH_SECRET", "a text secret, not hex!")
    assert load_secret(path) == b"a text secret, not hex!"
    assert not path.exists()  # the environment wins; no file is made
    monkeypatch.setenv("CALLWISE_AUTH_SECRET", "abcd")
    with pytest.raises(ValueError, match="too short") as caught:
        load_secret(path)
    assert "abcd" not in str(caught.value)
