"""Hostile shapes for linked identifiers (rights/linked.py): never erase another person, never miss the subject.

A person key (``user_id``) that sits in several tables must be recognised as one everywhere, also where the
subject has no row and under another column name: a phone next to the subject's email in ``contacts`` and next
to user 43 in ``accounts`` is shared, and linking it would link (and erase) user 43 entirely.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest
from pyiceberg.catalog import Catalog

import iceberg_privacy as ip


def _table(cat: Catalog, name: str, data: pa.Table, identity: list[str]) -> None:
    table = cat.create_table(name, schema=data.schema)
    ip.configure_identity(table, identity)
    ip.append(cat.load_table(name), data)


def _rows(cat: Catalog, name: str) -> list[dict[str, Any]]:
    return sorted(cat.load_table(name).scan().to_arrow().to_pylist(), key=repr)


@pytest.mark.parametrize(("key", "subject"), [("user_id", 42), ("customer_id", 42), ("user_id", "a@x.org")])
def test_a_second_person_key_in_a_table_without_the_subject_is_not_linked(catalog: Catalog, key: str,
                                                                           subject: Any) -> None:
    """Before: 42's phone P led to user 43 in accounts (no row of 42 there, so not a 'person key'), then to 43's
    email and phone: person 43 was erased everywhere, with no warning (fails on the old code, checked)."""
    _table(catalog, "db.users", pa.table({"user_id": pa.array([42, 43], pa.int64()), "email": ["a@x.org", "b@x.org"]}),
           ["user_id", "email"])
    _table(catalog, "db.contacts", pa.table({"email": ["a@x.org", "b@x.org"], "phone": ["P", "Q"]}), ["email", "phone"])
    _table(catalog, "db.accounts", pa.table({key: pa.array([43], pa.int64()), "phone": ["P"]}), [key, "phone"])
    report = ip.erase(catalog, subject, ["db.users", "db.contacts", "db.accounts"])
    assert report.linked is not None
    assert _rows(catalog, "db.users") == [{"user_id": 43, "email": "b@x.org"}], str(report)
    assert _rows(catalog, "db.contacts") == [{"email": "b@x.org", "phone": "Q"}]
    assert _rows(catalog, "db.accounts") == [{key: 43, "phone": "P"}]  # the shared phone stays with person 43
    assert [li.column for li in report.linked.shared] == ["db.contacts.phone"]
    assert any(f"db.accounts.{key}" in w and "NOT linked" in w for w in report.linked.warnings)


def test_the_same_key_in_a_column_of_another_type_is_the_subject_not_another_person(catalog: Catalog) -> None:
    """``legacy.user_id`` holds ``"42"`` as a string: another keyed hash than the long 42, but the subject's own key,
    so the email next to it is not "shared" (before: it was, and legacy, tickets kept the subject's rows; fails
    without the fix, checked). Person 43 stays everywhere."""
    _table(catalog, "db.users", pa.table({"user_id": pa.array([42, 43], pa.int64()), "email": ["a@x.org", "b@x.org"]}),
           ["user_id", "email"])
    _table(catalog, "db.legacy", pa.table({"user_id": ["42", "43"], "email": ["a@x.org", "b@x.org"]}), ["user_id", "email"])
    _table(catalog, "db.tickets", pa.table({"email": ["a@x.org", "b@x.org"]}), ["email"])
    report = ip.erase(catalog, 42, ["db.users", "db.legacy", "db.tickets"])
    assert report.linked is not None and report.linked.shared == [], str(report)
    assert _rows(catalog, "db.users") == [{"user_id": 43, "email": "b@x.org"}]
    assert _rows(catalog, "db.legacy") == [{"user_id": "43", "email": "b@x.org"}]
    assert _rows(catalog, "db.tickets") == [{"email": "b@x.org"}]


def test_repeating_the_subject_value_does_not_raise_max_linked(catalog: Catalog) -> None:
    """The bound is per subject value the request names; naming the placeholder 50 times is still one value (before:
    50 times the bound, and the whole household linked; fails without the fix, checked)."""
    _table(catalog, "db.users", pa.table({"user_id": pa.array(range(10), pa.int64()), "email": ["home@x.org"] * 10}),
           ["user_id", "email"])
    with pytest.raises(ip.TooManyLinkedIdentifiersError, match="max_linked"):
        ip.erase(catalog, ["home@x.org"] * 50, ["db.users"], max_linked=3)
    assert len(_rows(catalog, "db.users")) == 10


def test_erasing_a_sender_does_not_erase_everyone_they_wrote_to(catalog: Catalog) -> None:
    """``messages(sender_id, recipient_id)`` declares both as identity columns. Before, the recipients on the
    subject's own rows were linked in the first round (unchecked there), then their emails and everyone THEY wrote
    to: erasing user 42 erased users 43 and 44 (fails without the fix, checked)."""
    _table(catalog, "db.users", pa.table({"user_id": pa.array([42, 43, 44, 45], pa.int64()),
                                          "email": ["a@x.org", "b@x.org", "c@x.org", "d@x.org"]}), ["user_id", "email"])
    _table(catalog, "db.messages", pa.table({"sender_id": pa.array([42, 44, 43], pa.int64()),
                                             "recipient_id": pa.array([43, 42, 45], pa.int64())}),
           ["sender_id", "recipient_id"])
    _table(catalog, "db.tickets", pa.table({"email": ["a@x.org", "b@x.org", "c@x.org"]}), ["email"])
    report = ip.erase(catalog, 42)
    assert report.linked is not None
    assert [li.column for li in report.linked.identifiers] == ["db.users.email"]  # 42's own email still links
    assert sorted(li.column for li in report.linked.shared) == ["db.messages.recipient_id", "db.messages.sender_id"]
    assert [r["user_id"] for r in _rows(catalog, "db.users")] == [43, 44, 45]
    assert _rows(catalog, "db.messages") == [{"sender_id": 43, "recipient_id": 45}]  # 42's messages go, not 43's
    assert _rows(catalog, "db.tickets") == [{"email": "b@x.org"}, {"email": "c@x.org"}]
