"""What an operator gives the store about campaigns and contacts, checked at the boundary."""

from __future__ import annotations

import re
from datetime import time
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
_PHONE_SEPARATORS = re.compile(r"[\s\-.()/]")


def normalize_phone(phone: str) -> str:
    """'+86 138-0013-8000' -> '+8613800138000'. A number without its country code is refused:
    guessing the country would dial (or fail to block) the wrong person."""
    compact = _PHONE_SEPARATORS.sub("", phone.strip())
    if compact.startswith("00"):
        compact = "+" + compact[2:]
    if not _E164.match(compact):
        raise ValueError(
            f"{phone!r} is not an E.164 phone number (+ country code, then 6-14 digits, "
            "e.g. +8613800138000)"
        )
    return compact


class Campaign(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=128)
    name: str = Field(min_length=1)
    product: str = ""
    language: str = "zh"
    # calling hours, in each contact's own time zone
    window_start: time = time(9, 0)
    window_end: time = time(20, 0)
    max_attempts: int = Field(3, gt=0)
    settings: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _window(self) -> Campaign:
        if self.window_start >= self.window_end:
            raise ValueError(
                f"calling window {self.window_start}-{self.window_end} is empty; "
                "window_start must come before window_end on the same day"
            )
        return self


class Contact(BaseModel):
    model_config = ConfigDict(extra="forbid")

    campaign_id: str = Field(min_length=1)
    external_id: str = Field(min_length=1, description="the id in the lender's own system")
    phone: str = Field(description="E.164; spaces, dashes and a 00 prefix are accepted")
    name: str = ""
    time_zone: str = "Asia/Shanghai"
    consent: bool = False
    consent_at: AwareDatetime | None = None
    do_not_call: bool = False
    dnc_reason: str | None = None

    @field_validator("phone")
    @classmethod
    def _phone(cls, value: str) -> str:
        return normalize_phone(value)

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r} (an IANA name such as Asia/Shanghai)"
            ) from None
        return value
