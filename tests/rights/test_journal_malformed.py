"""Malformed journal rows (written by hand, by another tool, or truncated) are skipped, never fatal.

Before, one row with a null time or a detail that is not a JSON object made every reader of the journal
raise TypeError/JSONDecodeError: ``requests list``, every ``erase``/``run_request`` fold, and every queue
pass, for every request of the catalog.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pyiceberg.catalog import Catalog

import iceberg_privacy as ip
from iceberg_privacy.rights.journal import ARROW_SCHEMA, COMPLETED, CREATED, TABLE_ERASED, Journal, fold
from tests.helpers import all_rows, make_table

T0 = datetime(2026, 1, 1, tzinfo=UTC)

_GOOD = [
    Journal.event("r", CREATED, kind="erase", key_id="k", subjects=[b"x" * 32], at=T0,
                  detail={"tables": ["db.a"], "subject_count": 1, "deadline": (T0 + timedelta(days=30)).isoformat()}),
    Journal.event("r", TABLE_ERASED, table="db.a", snapshot_id=1, rows=3, files=2, at=T0 + timedelta(seconds=1)),
]

# a field of an event and a value that makes it unusable: any event, and ``created`` only
_ANY = [("at", None), ("at", datetime(2026, 1, 1)), ("event_id", None), ("event_id", ""), ("request_id", None),
        ("event", None), ("detail", "{not json"), ("detail", "[1, 2]"), ("detail", '"text"')]
_CREATED_ONLY = [("kind", "delete"), ("detail", '{"deadline": "2026-02-01T00:00:00+00:00"}'),
                 ("detail", '{"tables": ["db.a"]}'), ("detail", '{"tables": "db.a", "deadline": "2026-02-01T00:00:00+00:00"}'),
                 ("detail", '{"tables": ["db.a"], "deadline": "soon"}')]
_BREAKS = st.sampled_from(_ANY + _CREATED_ONLY)


@settings(max_examples=80)
@given(breaks=st.lists(st.tuples(st.sampled_from([CREATED, TABLE_ERASED, COMPLETED, "blocked", "queued"]), _BREAKS),
                       max_size=5), seed=st.integers(0, 2**31))
def test_malformed_rows_do_not_change_the_fold(breaks: list[tuple[str, tuple[str, Any]]], seed: int) -> None:
    bad = []
    for i, (event, (key, value)) in enumerate(breaks):
        row = Journal.event("r", event, table="db.a", at=T0 + timedelta(seconds=2 + i), kind="erase",
                            detail={"tables": ["db.a"], "deadline": T0.isoformat(), "batch": "b"})
        row["event_id"] = f"bad-{i}"
        if event != CREATED and (key, value) in _CREATED_ONLY:
            key, value = _ANY[i % len(_ANY)]
        row[key] = value
        bad.append(row)
    rows = _GOOD + bad
    random.Random(seed).shuffle(rows)
    assert fold(rows)["r"].to_json() == fold(_GOOD)["r"].to_json()


def test_queue_pass_and_listing_survive_malformed_rows(catalog: Catalog) -> None:
    table = make_table(catalog, "db.t", [["ann", "bob", "cat"]])
    ip.enqueue(catalog, "erase", ["ann"], request_id="q1")
    journal = Journal(catalog)
    broken = [
        {"event_id": "b1", "request_id": "q1", "event": COMPLETED, "at": None},  # would complete q1 unerased
        {"event_id": "b2", "request_id": "q9", "event": CREATED, "kind": "erase", "detail": "{not json",
         "at": datetime.now(UTC)},
        {"event_id": "b3", "request_id": "q1", "event": TABLE_ERASED, "table_name": "db.t", "detail": "[1]",
         "at": datetime.now(UTC)},
        {"event_id": "b4", "request_id": "q1", "event": "queued", "table_name": "db.t", "detail": "{}",
         "at": datetime.now(UTC)},
    ]
    journal.load().append(pa_rows(broken))  # type: ignore[union-attr]
    assert [r.request_id for r in journal.requests()] == ["q1"]
    report = ip.run_pending(catalog)
    assert report.completed == ["q1"] and not report.blocked
    assert sorted(r["user_id"] for r in all_rows(table)) == ["bob", "cat"]
    assert journal.get("q1").status == "completed"


def pa_rows(rows: list[dict[str, Any]]):  # type: ignore[no-untyped-def]
    import pyarrow as pa

    return pa.Table.from_pylist([{f.name: r.get(f.name) for f in ARROW_SCHEMA} for r in rows], schema=ARROW_SCHEMA)
