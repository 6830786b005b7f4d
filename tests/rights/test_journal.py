"""The request journal: durable, idempotent, order-insensitive fold, keyed hashes only."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyiceberg.catalog import Catalog

import iceberg_privacy as ip
from iceberg_privacy.errors import RequestConflictError, UnknownRequestError
from iceberg_privacy.rights.journal import (
    COMPLETED,
    CREATED,
    TABLE_ERASED,
    TABLE_PURGED,
    TABLE_VERIFIED,
    Journal,
    fold,
)
from iceberg_privacy.rights.keyed import SECRET_ENV
from tests.helpers import make_table


def test_submit_is_durable_and_idempotent(catalog: Catalog) -> None:
    make_table(catalog, "db.t", [["u1", "u2"]])
    from iceberg_privacy.rights.requests import submit_request

    req = submit_request(catalog, "erase", ["u1", "u2"], request_id="r1")
    assert req.status == "received" and set(req.tables) == {"db.t"} and req.subject_count == 2
    assert req.deadline - req.received == timedelta(days=30)
    # A fresh catalog object (another process) sees it: it was committed before returning.
    again = Journal(ip.connect(home=Path(catalog.properties["uri"][len("sqlite:///"):]).parent)).get("r1")
    assert again.to_json() == req.to_json()
    req2 = submit_request(catalog, "erase", ["u2", "u1"], request_id="r1")
    assert req2.received == req.received
    assert [r["event"] for r in Journal(catalog).rows("r1")] == [CREATED]
    with pytest.raises(RequestConflictError, match="other subjects"):
        submit_request(catalog, "erase", ["u3"], request_id="r1")
    with pytest.raises(RequestConflictError, match="other subjects"):
        submit_request(catalog, "access", ["u1", "u2"], request_id="r1")
    with pytest.raises(UnknownRequestError, match="requests list"):
        Journal(catalog).get("nope")


def test_journal_holds_no_clear_text_ids(catalog: Catalog) -> None:
    make_table(catalog, "db.t", [["alice-secret-id", "u2"]])
    ip.erase(catalog, ["alice-secret-id"], request_id="r1", purge=True)
    ip.access(catalog, ["alice-secret-id"], request_id="r2", out=Path(catalog.properties["warehouse"][7:]) / "x")
    journal_dir = Path(catalog.load_table(Journal(catalog).identifier).location().removeprefix("file://"))
    blobs = b"".join(p.read_bytes() for p in journal_dir.rglob("*") if p.is_file())
    assert b"alice-secret-id" not in blobs and blobs
    req = Journal(catalog).get("r1")
    assert req.status == "completed" and all(len(d) == 32 for d in req.subjects)
    assert "alice" not in str(req.to_json())


def test_key_mismatch_is_refused(catalog: Catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    make_table(catalog, "db.t", [["u1"]])
    ip.erase(catalog, ["u1"], request_id="r1")
    monkeypatch.setenv(SECRET_ENV, "another-secret-0123456789")
    with pytest.raises(RequestConflictError, match="key id"):
        ip.purge(catalog, "r1")


def _events() -> list[dict]:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    j = Journal.event
    return [
        j("r", CREATED, kind="erase", key_id="k", subjects=[b"x" * 32], at=t0,
          detail={"tables": ["db.a", "db.b"], "subject_count": 1, "deadline": (t0 + timedelta(days=30)).isoformat()}),
        j("r", TABLE_ERASED, table="db.a", snapshot_id=1, rows=3, files=2, at=t0 + timedelta(seconds=1)),
        j("r", TABLE_ERASED, table="db.b", snapshot_id=2, rows=0, files=0, at=t0 + timedelta(seconds=2)),
        j("r", TABLE_PURGED, table="db.a", at=t0 + timedelta(seconds=3)),
        j("r", TABLE_VERIFIED, table="db.a", at=t0 + timedelta(seconds=4)),
        j("r", TABLE_VERIFIED, table="db.b", at=t0 + timedelta(seconds=5)),
        j("r", COMPLETED, at=t0 + timedelta(seconds=6)),
    ]


@settings(max_examples=60)
@given(prefix=st.integers(1, 7), dups=st.lists(st.integers(0, 6), max_size=6), seed=st.integers(0, 2**31))
def test_fold_ignores_order_and_duplicates(prefix: int, dups: list[int], seed: int) -> None:
    """Replaying events (a crashed run recording a step twice, racing runs) never changes the state."""
    events = _events()[:prefix]
    noisy = events + [events[i] for i in dups if i < len(events)]
    random.Random(seed).shuffle(noisy)
    assert fold(noisy)["r"].to_json() == fold(events)["r"].to_json()
    state = fold(events)["r"]
    assert state.status == ("completed" if prefix == 7 else "received" if prefix == 1 else "in-progress")
    assert state.rows == (3 if prefix >= 2 else 0)
