"""Hostile shapes for linked identifiers (rights/linked.py): never erase another person, never miss the subject.

A person key (``user_id``) that sits in several tables must be recognised as one everywhere, also where the
subject has no row and under another column name: a phone next to the subject's email in ``contacts`` and next
to user 43 in ``accounts`` is shared, and linking it would link (and erase) user 43 entirely.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyiceberg.catalog import Catalog

import iceberg_privacy as ip
from tests.helpers import unique_name


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


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_erase_never_removes_a_row_keyed_to_another_person(shared_catalog: Catalog, data: Any) -> None:
    """Random users(user_id, email), accounts(customer_id, email), messages(sender_id, recipient_id) and
    tickets(email), emails drawn from a small pool (shared by people at random). After erase(subject): every row
    keyed to another person (user, customer, message between two others) is still there, the subject's are gone,
    and a ticket is gone exactly when its email sits next to the subject's key only."""
    people = list(range(100, 100 + data.draw(st.integers(2, 5), label="people")))
    pool = [f"e{k}@x.org" for k in range(data.draw(st.integers(1, 5), label="emails"))]
    users = [(p, data.draw(st.sampled_from(pool), label=f"email of {p}")) for p in people]
    accounts = data.draw(st.lists(st.tuples(st.sampled_from(people), st.sampled_from(pool)), max_size=4), label="acc")
    messages = data.draw(st.lists(st.tuples(st.sampled_from(people), st.sampled_from(people)), max_size=4), label="msg")
    subject = data.draw(st.sampled_from(people), label="subject")
    ns = unique_name("ns")
    shared_catalog.create_namespace(ns)
    long = pa.int64()
    _table(shared_catalog, f"{ns}.users", pa.table({"user_id": pa.array([u for u, _ in users], long),
                                                    "email": [e for _, e in users]}), ["user_id", "email"])
    _table(shared_catalog, f"{ns}.accounts", pa.table({"customer_id": pa.array([c for c, _ in accounts], long),
                                                       "email": pa.array([e for _, e in accounts], pa.string())}),
           ["customer_id", "email"])
    _table(shared_catalog, f"{ns}.messages", pa.table({"sender_id": pa.array([s for s, _ in messages], long),
                                                       "recipient_id": pa.array([r for _, r in messages], long)}),
           ["sender_id", "recipient_id"])
    _table(shared_catalog, f"{ns}.tickets", pa.table({"email": pool}), ["email"])
    ip.erase(shared_catalog, subject, [f"{ns}.{t}" for t in ("users", "accounts", "messages", "tickets")])
    assert sorted(r["user_id"] for r in _rows(shared_catalog, f"{ns}.users")) == sorted(u for u, _ in users if u != subject)
    assert sorted((r["customer_id"], r["email"]) for r in _rows(shared_catalog, f"{ns}.accounts")) == sorted(
        a for a in accounts if a[0] != subject)
    assert sorted((r["sender_id"], r["recipient_id"]) for r in _rows(shared_catalog, f"{ns}.messages")) == sorted(
        m for m in messages if subject not in m)
    keyed = users + accounts
    alone = {e for k, e in keyed if k == subject and all(k2 == subject for k2, e2 in keyed if e2 == e)}
    assert sorted(r["email"] for r in _rows(shared_catalog, f"{ns}.tickets")) == sorted(set(pool) - alone)
