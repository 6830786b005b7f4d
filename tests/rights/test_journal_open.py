"""``Journal.open_requests`` (what ``requests list --open`` and ``--overdue`` read) finds exactly the requests
the full fold leaves open, without folding the events of completed ones: hypothesis over event sets with
duplicates, malformed ``completed`` rows (which must not close a request) and requests completed twice."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyiceberg.catalog import Catalog

from iceberg_privacy.errors import ConfigurationError
from iceberg_privacy.rights.journal import (
    ARROW_SCHEMA,
    BLOCKED,
    COMPLETED,
    CREATED,
    RESUMED,
    TABLE_ERASED,
    Journal,
)
from iceberg_privacy.rights.queue import overdue

T0 = datetime(2026, 1, 1, tzinfo=UTC)
_names = itertools.count()

# what can happen to a request after it was created
_STEP = st.sampled_from([TABLE_ERASED, COMPLETED, BLOCKED, RESUMED, "completed-no-time", "completed-bad-detail",
                         "completed-detail", "completed-empty-id"])


def _created(rid: str, i: int, days: float) -> dict[str, Any]:
    return Journal.event(rid, CREATED, kind="erase", key_id="k", subjects=[bytes([i]) * 32], at=T0 + timedelta(seconds=i),
                         detail={"tables": ["db.a"], "subject_count": 1,
                                 "deadline": (T0 + timedelta(days=days)).isoformat()})


def _step(rid: str, step: str, at: datetime) -> dict[str, Any]:
    if step == TABLE_ERASED:
        return Journal.event(rid, TABLE_ERASED, table="db.a", snapshot_id=1, rows=1, files=1, at=at)
    row = Journal.event(rid, COMPLETED if step.startswith("completed") else step, at=at,
                        detail={"reason": "r", "next_step": "n", "error": "e"} if step == BLOCKED else None)
    if step == "completed-no-time":
        row["at"] = None
    elif step == "completed-bad-detail":
        row["detail"], row["event_id"] = "[1, 2]", row["event_id"] + "x"
    elif step == "completed-detail":
        row["detail"], row["event_id"] = '{"note": "ok"}', row["event_id"] + "y"
    elif step == "completed-empty-id":
        row["event_id"] = ""
    return row


def _rows(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist([{f.name: r.get(f.name) for f in ARROW_SCHEMA} for r in rows], schema=ARROW_SCHEMA)


@settings(max_examples=25, deadline=None)
@given(requests=st.lists(st.tuples(st.lists(_STEP, max_size=4), st.floats(-10, 60)), min_size=1, max_size=6),
       duplicate=st.booleans())
def test_open_requests_are_the_open_part_of_the_fold(shared_catalog: Catalog, requests: list[tuple[list[str], float]],
                                                    duplicate: bool) -> None:
    journal = Journal(shared_catalog, namespace=f"j{next(_names)}")
    rows = []
    for i, (steps, days) in enumerate(requests):
        rid = f"r{i}"
        rows.append(_created(rid, i, days))
        rows += [_step(rid, s, T0 + timedelta(seconds=i, milliseconds=k + 1)) for k, s in enumerate(steps)]
    if duplicate:
        rows += rows[: len(rows) // 2]
    journal.load(create=True).append(_rows(rows))  # type: ignore[union-attr]
    expected = [r.to_json() for r in journal.requests() if r.completed is None]
    got = journal.open_requests()
    assert [r.to_json() for r in got] == expected
    usable_completions = {r["request_id"] for r in rows if r["event"] == COMPLETED and r["at"] is not None
                          and r["event_id"] and r["detail"] != "[1, 2]"}
    assert {r.request_id for r in got} == {f"r{i}" for i in range(len(requests))} - usable_completions


def test_overdue_reads_open_requests_only(catalog: Catalog, capsys: Any) -> None:
    """``overdue`` and ``requests list --open``: open requests past their deadline / all open ones."""
    journal = Journal(catalog)
    journal.load(create=True).append(_rows([  # type: ignore[union-attr]
        _created("late", 1, 1), _created("done-late", 2, 1), _step("done-late", COMPLETED, T0 + timedelta(hours=1)),
        _created("future", 3, 10_000)]))
    assert [r.request_id for r in overdue(catalog)] == ["late"]
    assert [r.request_id for r in journal.open_requests()] == ["late", "future"]
    from iceberg_privacy.cli.main import main

    home = catalog.properties["uri"][len("sqlite:///"):].rsplit("/", 1)[0]
    capsys.readouterr()
    listed = {}
    for flag in ("--open", "--overdue", None):
        assert main(["--home", home, "requests", "list", *([flag] if flag else [])]) == 0
        listed[flag] = [line.split()[0] for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert listed == {"--open": ["late", "future"], "--overdue": ["late"], None: ["late", "done-late", "future"]}


def _created_at(rid: str, i: int, at: datetime, *, malformed: bool = False) -> dict[str, Any]:
    row = Journal.event(rid, CREATED, kind="erase", key_id="k", subjects=[bytes([i % 256]) * 32], at=at,
                        detail={"tables": ["db.a"], "subject_count": 1, "deadline": (at + timedelta(days=30)).isoformat()})
    if malformed:  # no deadline: skipped by every reader, so the request's receipt is its next usable `created`
        row["detail"], row["event_id"] = '{"tables": ["db.a"]}', row["event_id"] + "m"
    return row


@settings(max_examples=25, deadline=None)
@given(ages=st.lists(st.tuples(st.integers(0, 96), st.sampled_from(["ok", "malformed-first", "twice", "completed"])),
                     min_size=1, max_size=12),
       since=st.one_of(st.none(), st.integers(0, 100)), limit=st.one_of(st.none(), st.integers(0, 14)))
def test_since_and_limit_pick_exactly_what_the_full_fold_would(shared_catalog: Catalog, ages: list[tuple[int, str]],
                                                              since: int | None, limit: int | None) -> None:
    """``requests(since=, limit=)`` folds only the chosen requests' events, yet returns exactly the full fold's
    requests received within ``since``, the ``limit`` newest of them, oldest first (ties by request id), also
    when a request's first ``created`` is malformed (its receipt is the next usable one) or written twice."""
    journal = Journal(shared_catalog, namespace=f"j{next(_names)}")
    now = datetime.now(UTC)
    rows = []
    for i, (hours, shape) in enumerate(ages):
        rid, at = f"r{i:02d}", now - timedelta(hours=hours, minutes=30)
        if shape == "malformed-first":
            rows.append(_created_at(rid, i, at - timedelta(hours=40), malformed=True))
        rows.append(_created_at(rid, i, at))
        if shape == "twice":
            rows.append(_created_at(rid, i, at + timedelta(hours=1)) | {"event_id": f"{rid}-again"})
        if shape == "completed":
            rows.append(_step(rid, COMPLETED, at + timedelta(minutes=1)))
    journal.load(create=True).append(_rows(rows))  # type: ignore[union-attr]
    every = journal.requests()
    expected = [r for r in every if since is None or r.received >= now - timedelta(hours=since)]
    if limit is not None:
        expected = expected[len(expected) - limit:] if len(expected) > limit else expected
    got = journal.requests(since=timedelta(hours=since) if since is not None else None, limit=limit)
    assert [r.to_json() for r in got] == [r.to_json() for r in expected]


def test_list_since_and_limit_from_the_cli(catalog: Catalog, capsys: Any) -> None:
    now = datetime.now(UTC)
    journal = Journal(catalog)
    journal.load(create=True).append(_rows([  # type: ignore[union-attr]
        _created_at("old", 1, now - timedelta(days=3)), _created_at("mid", 2, now - timedelta(hours=5)),
        _created_at("new", 3, now - timedelta(minutes=5))]))
    from iceberg_privacy.cli.main import main

    home = catalog.properties["uri"][len("sqlite:///"):].rsplit("/", 1)[0]
    capsys.readouterr()
    listed = {}
    for flags in (("--since", "1d"), ("--limit", "1"), ("--since", "2w", "--limit", "2"), ("--open", "--limit", "2"),
                  ("--since", "999999999d")):
        assert main(["--home", home, "requests", "list", *flags]) == 0
        listed[flags] = [line.split()[0] for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert listed == {("--since", "1d"): ["mid", "new"], ("--limit", "1"): ["new"],
                      ("--since", "2w", "--limit", "2"): ["mid", "new"], ("--open", "--limit", "2"): ["mid", "new"],
                      ("--since", "999999999d"): ["old", "mid", "new"]}
    with pytest.raises(SystemExit) as exit_:
        main(["--home", home, "requests", "list", "--limit", "-1"])
    assert exit_.value.code == 2
    assert "whole number" in capsys.readouterr().err
    with pytest.raises(ConfigurationError, match="limit"):
        journal.requests(limit=-1)
