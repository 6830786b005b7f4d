"""A submit of many requests reads the linking tables once for the whole batch (``linked.LinkRows``): the rows of
every request's values, then of the values they link, each table read once per round. Before, every request
planned and read every linking table in every round of its own (10,000 access requests on a table with two
identity columns took 233 s to submit). Each request must still link exactly what a read of its own links:
the same identifiers, in the same order, found in the same columns, shared ones left out."""

from __future__ import annotations

import tempfile
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyiceberg.catalog import Catalog

import iceberg_privacy as ip
from iceberg_privacy.rights import linked
from iceberg_privacy.rights.keyed import load_secret
from iceberg_privacy.rights.subjects import subject_tables


def _lake(catalog: Catalog) -> None:
    emails = ["fam@x.org" if i in (1, 2) else ("" if i == 5 else f"u{i}@x.org") for i in range(30)]
    users = pa.table({"user_id": pa.array(range(30), pa.int64()), "email": emails})
    t = ip.configure_bloom(ip.configure_identity(catalog.create_table("db.users", schema=users.schema),
                                                 ["user_id", "email"]), ["user_id", "email"])
    for k in range(3):
        ip.append(t, users.slice(k * 10, 10))
    contacts = pa.table({"email": [f"u{i}@x.org" for i in range(0, 30, 2)] + ["fam@x.org"],
                         "phone": [f"+1-{i}" for i in range(0, 30, 2)] + ["+1-home"]})
    c = ip.configure_identity(catalog.create_table("db.contacts", schema=contacts.schema), ["email", "phone"])
    ip.append(c, contacts)
    ip.append(c, pa.table({"email": ["u4@x.org"], "phone": ["+1-44"]}))  # a second phone in another file


def test_a_batch_submit_reads_each_linking_table_once_per_round(catalog: Catalog,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    _lake(catalog)
    reads: list[str] = []
    real = linked.candidate_rows

    def counting(ts: Any, plan: Any, secret: bytes) -> pa.Table:
        reads.append(ts.name)
        return real(ts, plan, secret)

    monkeypatch.setattr(linked, "candidate_rows", counting)
    states = ip.enqueue_many(catalog, [ip.QueuedRequest("access", [i]) for i in range(0, 30, 2)])
    # rounds: ids -> emails -> phones -> nothing new; each linking table read at most once per round (was ~15x)
    assert len(reads) <= 3 * 2, reads
    assert len(states[2].detail["linked"]["digests"]) == 3  # user 4: its email and both its phones


@pytest.fixture(scope="module")
def lake() -> Any:
    with tempfile.TemporaryDirectory() as d:
        cat = ip.connect(home=d)
        cat.create_namespace("db")
        _lake(cat)
        yield cat


value = st.one_of(st.integers(0, 33), st.integers(0, 33).map(lambda i: f"u{i}@x.org"),
                  st.sampled_from(["fam@x.org", "+1-home", "+1-44", "+1-8", "nobody@x.org"]))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(requests=st.lists(st.lists(value, min_size=1, max_size=3), min_size=1, max_size=6))
def test_property_a_batch_links_what_each_request_links_alone(lake: Catalog, monkeypatch: pytest.MonkeyPatch,
                                                              requests: list[list[Any]]) -> None:
    monkeypatch.setattr("iceberg_privacy.rights.queue.EXPORT_CHUNK", 4)  # several shared reads per submit too
    secret = load_secret(catalog=lake)
    states = ip.enqueue_many(lake, [ip.QueuedRequest("access", subjects) for subjects in requests])
    tables = subject_tables(lake, None)
    for s, subjects in zip(states, requests, strict=True):
        alone = linked.collect_linked(tables, subjects, secret)  # no shared read: what one request links
        assert s.detail["linked"] == alone.journal_detail(), subjects
