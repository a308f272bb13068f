"""The process's settings: environment variables (CALLWISE_*) or one settings file.

One object for `callwise serve`, made once at start-up and handed down: the app reads the
network and ingress settings, the call runtime its limits, and the models and the LLM their
sections (`speech`: CALLWISE_WHISPER_MODEL, CALLWISE_MODEL_CACHE...; `llm`: CALLWISE_LLM_*).
Lists may be written as JSON (`["https://a.example"]`) or comma-separated
(`https://a.example,https://b.example`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from dialogue.llm import LLMSettings
from speech.settings import SpeechSettings

_ORIGIN = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?")


def _split(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            import json

            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


class AppSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CALLWISE_",
        env_file=os.environ.get("CALLWISE_SETTINGS", ".env"),
        extra="ignore",
        protected_namespaces=(),
        populate_by_name=True,
    )

    host: str = Field("127.0.0.1", description="address `callwise serve` listens on")
    port: int = Field(8765, ge=0, le=65535)
    public_url: str | None = Field(
        None,
        description="the base URL Twilio and browsers reach us at, e.g. wss://assist.example.com"
        " (behind a proxy); Twilio signs the full URL, so signature checks need it. Unset: "
        "the request's own Host header",
    )
    allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="browser origins (scheme://host[:port]) allowed to open websockets besides "
        "the server's own",
    )
    media_tokens: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        validation_alias=AliasChoices("CALLWISE_MEDIA_TOKENS", "CALLWISE_MEDIA_TOKEN"),
        description="per-trunk ingress tokens for /twilio, /media and /pcm (?token= or "
        "Authorization: Bearer)",
    )
    twilio_auth_token: SecretStr | None = Field(
        None, description="the Twilio account's auth token: checks X-Twilio-Signature"
    )
    database_url: str | None = Field(
        None,
        validation_alias=AliasChoices("DATABASE_URL", "CALLWISE_DATABASE_URL"),
        description="postgresql://...; unset: the embedded server",
    )
    language: Literal["zh", "en", "auto"] = Field(
        "en", description="a call's language when its parameters name none"
    )
    token_ttl_s: float = Field(8 * 3600, gt=0, description="how long a login token is valid")
    ws_max_message_bytes: int = Field(2**20, ge=1024, description="largest websocket message")
    shutdown_timeout_s: float = Field(
        15.0, gt=0, description="on SIGINT/SIGTERM, how long open sockets get to finish"
    )
    max_calls: int = Field(64, ge=1, description="live calls at once; more are refused")
    outbox_path: Path | None = Field(
        None, description="where events wait while PostgreSQL is away; unset: the data dir")
    speech: SpeechSettings = Field(default_factory=SpeechSettings,
                                   description="speech models (CALLWISE_* variables)")
    llm: LLMSettings = Field(default_factory=LLMSettings,
                             description="the reply LLM (CALLWISE_LLM_* variables)")
    frame_ancestors: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="origins whose pages may embed the agent's sidebar "
        "in a frame (the agent desktop), comma-separated; empty: only callwise's own pages")
    cookie_secure: bool = Field(
        False, description="mark the login cookie Secure (set it when served over https)"
    )
    playbook_dir: Path | None = Field(
        None, description="versioned playbooks (`callwise playbook refresh`); unset: "
        "playbooks/ in the data dir. Its CURRENT version is used, else the shipped one")
    playbook_refresh_hours: float = Field(
        24.0, ge=0, description="how often `serve` refreshes the playbook from the store's "
        "calls and agents' feedback; 0: never")

    def playbooks(self) -> Path:
        from campaigns.embedded import default_data_dir

        return self.playbook_dir or default_data_dir() / "playbooks"

    @field_validator("allowed_origins", "media_tokens", "frame_ancestors", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return _split(value)

    @field_validator("frame_ancestors")
    @classmethod
    def _origins_only(cls, origins: list[str]) -> list[str]:
        # they go into a Content-Security-Policy header as they are
        bad = [o for o in origins if not _ORIGIN.fullmatch(o)]
        if bad:
            raise ValueError(f"not an origin (https://host[:port]): {bad[0]!r}")
        return origins

    @field_validator("media_tokens")
    @classmethod
    def _no_empty_tokens(cls, tokens: list[str]) -> list[str]:
        if any(len(t) < 16 for t in tokens):
            raise ValueError("a media token has at least 16 characters")
        return tokens

    @property
    def default_language(self) -> str | None:
        return None if self.language == "auto" else self.language
