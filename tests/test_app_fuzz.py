"""Schemathesis fuzzes the app's OpenAPI schema over real HTTP: valid and invalid requests on
every operation, as a logged-in supervisor and anonymously. Whatever it sends, the answer is
never a 500 and never a stack trace, and a refusal is JSON {"error": "..."}.

The app runs in its own thread (schemathesis' client is synchronous) with the real runtime
(no call is opened, so no model is loaded) and a real PostgreSQL with users. Bounded: a few
dozen examples per operation, no example database written into the repository.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any, cast

import hypothesis
import pytest
import pytest_asyncio
import schemathesis
from hypothesis import HealthCheck, Phase
from hypothesis.configuration import set_hypothesis_home_dir
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from assist.app import create_app
from assist.auth import TokenSigner, UserStore
from assist.runtime import Runtime
from assist.settings import AppSettings
from campaigns.db import DatabaseSettings, connect
from campaigns.demo_campaign import CAMPAIGN_ID, insert_fixture_campaign
from speech import SpeechModels

from .live_app import ThreadedApp
from .pg import PgServer

SIGNER = TokenSigner(b"fuzz-test-secret-0123456789abcdef")
SUPERVISOR = SIGNER.issue("boss", "supervisor", None)
# a deeper run: CALLWISE_FUZZ_EXAMPLES=500 pytest tests/test_app_fuzz.py
MAX_EXAMPLES = int(os.environ.get("CALLWISE_FUZZ_EXAMPLES", "30"))
NO_MODELS = cast(SpeechModels, None)  # no call is opened, so no model is ever touched
FAST = DatabaseSettings(db_pool_min=1, db_pool_max=4, db_connect_timeout_s=3)
TRACE_MARKERS = ("Traceback", 'File "', "Exception in ASGI", "asyncpg.", "pydantic_core")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def dsn(pg: PgServer) -> str:
    url = await pg.create_database("callwise_fuzz")
    async with await connect(url, settings=FAST) as db:
        await insert_fixture_campaign(db.pool)
        await UserStore(db.pool).create("boss", "correct horse battery", "supervisor")
    return url


@pytest.fixture(scope="module")
def base_url(dsn: str) -> Iterator[str]:
    # The database pool is made by the app's own lifespan, on the server thread's loop.
    settings = AppSettings(_env_file=None, database_url=dsn)  # type: ignore[call-arg]
    app = create_app(settings, runtime=Runtime(NO_MODELS, None), signer=SIGNER)
    with ThreadedApp(app) as base:
        yield base


@pytest.fixture(scope="module")
def api_schema(base_url: str) -> Any:
    return schemathesis.openapi.from_url(f"{base_url}/openapi.json")


@pytest.fixture(scope="module", autouse=True)
def hypothesis_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Hypothesis keeps a cache beside the examples it would save: not in the repository."""
    set_hypothesis_home_dir(tmp_path_factory.mktemp("hypothesis"))
    yield
    set_hypothesis_home_dir(None)


def json_errors_without_traces(ctx: Any, response: Any, case: Any) -> bool:
    """No stack trace anywhere; every 4xx/5xx is {"error": "<text>"} (plus context fields)."""
    text = response.text
    for marker in TRACE_MARKERS:
        assert marker not in text, f"{marker!r} in the answer: {text[:500]}"
    if response.status_code >= 400:
        assert response.headers.get("content-type", [""])[0].startswith("application/json"), \
            response.headers
        body = json.loads(text)
        assert isinstance(body, dict) and isinstance(body.get("error"), str), text[:500]
    return True


def no_server_error(ctx: Any, response: Any, case: Any) -> bool:
    assert response.status_code < 500, f"{response.status_code}: {response.text[:500]}"
    return True


FUZZ = hypothesis.settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
                           suppress_health_check=list(HealthCheck),
                           phases=[Phase.explicit, Phase.generate])


@pytest.mark.parametrize("who", ["supervisor", "anonymous"])
def test_no_request_gets_a_500_or_a_stack_trace(api_schema: Any, who: str) -> None:
    headers = {"Authorization": f"Bearer {SUPERVISOR}"} if who == "supervisor" else None
    checks = [no_server_error, json_errors_without_traces, content_type_conformance]
    if who == "supervisor":  # anonymously every protected operation answers 401
        checks += [status_code_conformance, response_schema_conformance]
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 8, [op.label for op in operations]
    # signing out revokes the token every later case sends: it goes last
    operations.sort(key=lambda op: op.path == "/api/logout")
    runs = [(op, mode, {}) for op in operations
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)]
    # the report's options against a campaign that exists, so they reach the SQL
    report = next(op for op in operations if op.path.endswith("/report"))
    runs += [(report, mode, {"campaign_id": CAMPAIGN_ID})
             for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)]
    for operation, mode, path_parameters in runs:
        strategy = operation.as_strategy(generation_mode=mode, path_parameters=path_parameters)

        @FUZZ
        @hypothesis.given(case=strategy)
        def fuzz(case: Any) -> None:
            response = case.call(headers=headers, timeout=30)
            case.validate_response(response, checks=checks)

        try:
            fuzz()
        except hypothesis.errors.Unsatisfiable:
            # nothing to make invalid (an operation without parameters or body)
            assert mode is GenerationMode.NEGATIVE, operation.label
