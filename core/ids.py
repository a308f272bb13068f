"""Identifiers we make ourselves: a call, a suggestion card.

The store refuses an identifier that holds a card number (campaigns.validate), because an id is
stored as given and never redacted. A uuid4's hex is 32 random hex digits, and about one in two
hundred has a run of 13-19 decimal digits that passes the Luhn check: a card number by every
rule the store applies. Such an id would make its event unstorable, so it is drawn again."""

from __future__ import annotations

import re
from uuid import uuid4

_LONG_DIGIT_RUN = re.compile(r"\d{12,}")


def new_id(prefix: str = "") -> str:
    """A random 32-hex-digit id, never holding 12 or more decimal digits in a row, after prefix."""
    while True:
        value = uuid4().hex
        if not _LONG_DIGIT_RUN.search(value):
            return prefix + value
