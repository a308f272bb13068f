from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a test never reaches a model hub

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures"
SHARED_DATA = Path(os.environ.get("CALLWISE_SHARED", ROOT.parent / "shared")) / "data"
SHARED_AUDIO = SHARED_DATA / "audio"


def shared_audio(relative: str) -> Path:
    path = SHARED_AUDIO / relative
    if not path.exists():
        pytest.skip(f"needs ../shared/data/audio/{relative} (real recordings are not in the repo)")
    return path


def shared_text(relative: str) -> Path:
    path = SHARED_DATA / "text" / relative
    if not path.exists():
        pytest.skip(f"needs ../shared/data/text/{relative} (public datasets are not in the repo)")
    return path


def closed_port() -> int:
    """A local port where nothing listens (a server that is down)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
async def local():
    """The embedded LLM, one per test module (its sessions and cache are that module's)."""
    import asyncio

    from dialogue.llm import LocalGGUFClient
    from dialogue.llm_models import resolve_model_path

    # One thread: these tests check behaviour, not speed, and on a 2-core machine shared with
    # other work two spinning llama.cpp threads slow down tenfold.
    client = await asyncio.to_thread(
        LocalGGUFClient, resolve_model_path(), n_ctx=2048, n_threads=1, temperature=0.0
    )
    yield client
    await client.close()


@pytest.fixture(scope="session")
async def pg():
    """One real PostgreSQL for the whole run (tests/pg.py); each test module makes its own
    databases on it, dropped at the end."""
    from .pg import find_server

    server = await find_server()
    print(f"\nPostgreSQL for tests: {server.origin}")
    yield server
    await server.close()


@pytest.fixture(scope="session")
def intent_model():
    from dialogue.defaults import default_intent_model

    return default_intent_model()


@pytest.fixture(scope="session")
def speech_models():
    from speech import SpeechModels

    models = SpeechModels.load()
    yield models
    models.close()


@pytest.fixture(scope="session")
def playbook(intent_model):
    from dialogue.defaults import default_playbook

    return default_playbook(intent_model)
