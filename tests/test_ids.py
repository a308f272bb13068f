"""Ids we make are always storable: none reads as a card number."""

from campaigns.validate import identifier_problem
from core.ids import new_id


def test_new_ids_never_read_as_a_card_number() -> None:
    ids = [new_id("call-") for _ in range(20000)]
    assert len(set(ids)) == len(ids)
    assert all(identifier_problem(i) is None for i in ids)
    assert all(i.startswith("call-") and len(i) == 37 for i in ids)


def test_the_uuid_hex_it_replaces_could() -> None:
    # The id that made CI fail: a uuid4 hex opening with 16 digits that pass the Luhn check.
    assert identifier_problem("4933952716654617bb063dafa2dc8a0b") is not None
