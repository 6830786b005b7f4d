"""A queue pass exports its access requests in batches: each table planned and read once for all of them (rows
split per request in memory) and their journal events appended in one commit. Before, every request planned and
read every table on its own and journaled three commits (two tables exported, completed): 100 access requests on
a two-identity-column table took 44 s, 10,000 did not finish in 20 minutes. A batched export must still give each
request exactly what a one-request :func:`iceberg_privacy.access` gives: its subject's rows and its linked
identifiers' rows, byte for byte."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyiceberg.catalog import Catalog

import iceberg_privacy as ip
from iceberg_privacy.rights import access, filework
from iceberg_privacy.rights.journal import Journal
from iceberg_privacy.rights.queue_store import Queue


def _lake(catalog: Catalog, ns: str = "db") -> None:
    n = 60
    users = pa.table({"user_id": pa.array(range(n), pa.int64()), "email": [f"u{i}@x.org" for i in range(n)]})
    t = ip.configure_bloom(ip.configure_identity(catalog.create_table(f"{ns}.users", schema=users.schema),
                                                 ["user_id", "email"]), ["user_id", "email"])
    for k in range(4):
        ip.append(t, users.slice(k * 15, 15))
    ip.append(t, pa.table({"user_id": pa.array([3, 4], pa.int64()), "email": ["u3@x.org", "u4@x.org"]}))  # 2 rows each
    schema = pa.schema([("email", pa.string()), ("note", pa.string()),
                        ("tags", pa.list_(pa.string())), ("info", pa.struct([("city", pa.string())]))])
    tickets = ip.configure_identity(catalog.create_table(f"{ns}.tickets", schema=schema), ["email"])
    for k in range(3):  # only the email: reached through the link users(user_id, email)
        ip.append(tickets, pa.table({
            "email": [f"u{i}@x.org" for i in range(k, n, 3)], "note": [f"é{k}-{i} ✓" for i in range(k, n, 3)],
            "tags": [[f"t{i}"] if i % 2 else None for i in range(k, n, 3)],
            "info": [{"city": None if i % 5 == 0 else f"c{i}"} for i in range(k, n, 3)]}, schema=schema))


def _manifest_tables(folder: Path) -> list[dict[str, Any]]:
    return json.loads((folder / "manifest.json").read_text())["tables"]


def test_a_pass_reads_each_table_once_and_journals_the_exports_in_one_commit(
        catalog: Catalog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _lake(catalog)
    states = ip.enqueue_many(catalog, [ip.QueuedRequest("access", [i]) for i in range(12)])
    reads: list[str] = []
    real_read = filework.candidate_rows

    def counting_read(ts: Any, plan: Any, secret: bytes) -> pa.Table:
        reads.append(ts.name)
        return real_read(ts, plan, secret)

    appends: list[int] = []
    real_append = Journal.append

    def counting_append(self: Journal, events: list[dict[str, Any]]) -> None:
        appends.append(len(events))
        real_append(self, events)

    with monkeypatch.context() as patched:
        patched.setattr(access, "_rows", counting_read)
        patched.setattr(Journal, "append", counting_append)
        report = ip.run_pending(catalog, out=tmp_path / "out", upkeep=False)
    assert sorted(report.exported) == sorted(s.request_id for s in states) and not report.skipped, str(report)
    assert sorted(reads) == ["db.tickets", "db.users"]  # one read per table for the 12 requests (was 24)
    assert appends == [12 * 3]  # one journal commit for the 36 events (was 36 commits)
    for i, s in enumerate(states):
        assert Journal(catalog).get(s.request_id).status == "completed"
        rows = {t["table"]: t["rows"] for t in _manifest_tables(tmp_path / "out" / s.request_id)}
        assert rows == {"db.users": 2 if i in (3, 4) else 1, "db.tickets": 1}


@pytest.fixture(scope="module")
def lake() -> Any:
    with tempfile.TemporaryDirectory() as d:
        cat = ip.connect(home=d)
        cat.create_namespace("db")
        _lake(cat)
        yield cat, Path(d)


subject = st.one_of(st.integers(0, 65), st.integers(0, 65).map(lambda i: f"u{i}@x.org"))


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(requests=st.lists(st.lists(subject, min_size=1, max_size=3), min_size=1, max_size=4),
       fmt=st.sampled_from(["parquet", "jsonl"]))
def test_property_a_batched_export_is_what_a_one_request_access_exports(
        lake: Any, monkeypatch: pytest.MonkeyPatch, requests: list[list[Any]], fmt: str) -> None:
    catalog, home = lake
    monkeypatch.setattr("iceberg_privacy.rights.queue.EXPORT_CHUNK", 3)  # several chunks per pass too
    run = Path(tempfile.mkdtemp(dir=home))
    states = ip.enqueue_many(catalog, [ip.QueuedRequest("access", subjects) for subjects in requests])
    report = ip.run_pending(catalog, out=run / "queue", format=fmt, upkeep=False)
    assert sorted(report.exported) == sorted(s.request_id for s in states) and not report.skipped, str(report)
    for s, subjects in zip(states, requests, strict=True):
        alone = ip.access(catalog, subjects, out=run / "alone" / s.request_id, format=fmt)
        batched = run / "queue" / s.request_id
        assert _manifest_tables(batched) == _manifest_tables(run / "alone" / s.request_id)
        for t in alone.tables.values():
            assert (batched / f"{t.table}.{fmt}").read_bytes() == Path(t.path).read_bytes()


class Crash(Exception):
    pass


def test_a_pass_killed_before_the_exports_are_journaled_exports_them_again(catalog: Catalog, tmp_path: Path) -> None:
    from iceberg_privacy._internal import faults

    _lake(catalog)
    states = ip.enqueue_many(catalog, [ip.QueuedRequest("access", [i]) for i in (3, 7)])

    def crash(name: str) -> None:
        raise Crash(name)

    with faults.injected("queue.before_exported", crash), pytest.raises(Crash):
        ip.run_pending(catalog, out=tmp_path / "out")
    for s in states:  # files written, nothing journaled: not completed, the ciphertext kept
        assert Journal(catalog).get(s.request_id).status != "completed"
    report = ip.run_pending(catalog, out=tmp_path / "out")
    assert sorted(report.exported) == sorted(s.request_id for s in states) and not report.skipped, str(report)
    for s, rows in zip(states, (2, 1), strict=True):
        assert Journal(catalog).get(s.request_id).status == "completed"
        assert {t["table"]: t["rows"] for t in _manifest_tables(tmp_path / "out" / s.request_id)} == \
            {"db.users": rows, "db.tickets": 1}
    assert Queue(catalog).entries() == []


def test_a_batched_pass_on_object_storage_exports_what_one_request_access_exports(
        s3_catalog: tuple[Catalog, str]) -> None:
    from iceberg_privacy.storage import catalog_io

    catalog, ns = s3_catalog
    _lake(catalog, ns)
    subjects = [[3], ["u7@x.org"], [4, 9], [99]]
    tables = [f"{ns}.users", f"{ns}.tickets"]  # the server's catalog holds other tests' tables too
    states = ip.enqueue_many(catalog, [ip.QueuedRequest("access", s, tables) for s in subjects])
    out = f"s3://lake/exports-{ns}"
    report = ip.run_pending(catalog, out=out + "/queue")
    assert sorted(report.exported) == sorted(s.request_id for s in states) and not report.skipped, str(report)
    io = catalog_io(catalog, out)

    def manifest(loc: str) -> list[dict[str, Any]]:
        with io.new_input(loc + "/manifest.json").open() as fh:
            return json.loads(fh.read())["tables"]

    expected = [(2, 1), (1, 1), (3, 2), (0, 0)]  # (users rows, tickets rows): users 3 and 4 have two rows each
    for s, subs, (users, tickets) in zip(states, subjects, expected, strict=True):
        ip.access(catalog, subs, tables, out=f"{out}/alone/{s.request_id}")
        batched = manifest(f"{out}/queue/{s.request_id}")
        assert batched == manifest(f"{out}/alone/{s.request_id}")
        assert {t["table"]: t["rows"] for t in batched} == {f"{ns}.users": users, f"{ns}.tickets": tickets}
