"""Property tests: record round trip, traversal symmetry, history across expiry, fan-out vs oracle."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyiceberg.catalog import Catalog

import iceberg_privacy as ip
from iceberg_privacy.lineage.graph import ColumnEdge, LineageGraph, TableEdge, TableNode
from iceberg_privacy.lineage.record import (
    AGGREGATION,
    DIRECT,
    IDENTITY,
    INDIRECT,
    TRANSFORMATION,
    FieldRef,
    LineageRecord,
    SourceRef,
    fold_expired,
    history,
)
from iceberg_privacy.rights.keyed import SECRET_ENV

names = st.text(alphabet="abcdefgh_", min_size=1, max_size=6)
sources = st.builds(SourceRef, table=names.map(lambda n: f"db.{n}"), uuid=st.uuids().map(str),
                    snapshot_id=st.one_of(st.none(), st.integers(0, 2**62)))


@st.composite
def records(draw: Any) -> LineageRecord:
    srcs = draw(st.lists(sources, max_size=3))
    direct = st.builds(FieldRef, source=st.integers(0, max(0, len(srcs) - 1)), column=names, type=st.just(DIRECT),
                       subtype=st.sampled_from([IDENTITY, TRANSFORMATION, AGGREGATION]), masking=st.booleans(),
                       expression=st.one_of(st.none(), st.just("LOWER(email)")), collects=st.booleans())
    indirect = st.builds(FieldRef, source=st.integers(0, max(0, len(srcs) - 1)), column=names, type=st.just(INDIRECT),
                         subtype=st.sampled_from(["JOIN", "FILTER", "GROUP_BY"]))
    return LineageRecord(
        op=draw(st.sampled_from(["derive", "append", "dp-release"])), engine=draw(st.sampled_from(["duckdb", "spark"])),
        status=draw(st.sampled_from(["complete", "opaque", "external"])), sources=srcs,
        columns=draw(st.dictionaries(names, st.lists(direct, min_size=1, max_size=2), max_size=3)) if srcs else {},
        indirect=draw(st.lists(indirect, max_size=2)) if srcs else [],
        sql=draw(st.one_of(st.none(), st.text(max_size=30))), purpose=draw(st.one_of(st.none(), names)),
        override=draw(st.one_of(st.none(), st.just({"reason": "r", "by": "u", "flows": ["a -> b"]}))),
        exempt=draw(st.one_of(st.none(), st.just("dp"))),
    )


@given(records())
def test_record_round_trip(rec: LineageRecord) -> None:
    text = rec.summary()["privacy.lineage"]
    assert LineageRecord.parse(text) == rec
    assert json.loads(text)["v"] == 1


@given(st.lists(st.tuples(st.integers(0, 7), st.integers(0, 7)), max_size=20))
def test_downstream_and_upstream_are_converse(pairs: list[tuple[int, int]]) -> None:
    g = LineageGraph(tables={f"u{i}": TableNode(f"u{i}", f"db.t{i}", columns=("c",)) for i in range(8)})
    for a, b in pairs:
        g.edges.append(TableEdge(f"u{a}", f"u{b}", "derive", "complete", None, None))
        g.columns.append(ColumnEdge(f"u{a}", "c", f"u{b}", "c", DIRECT, IDENTITY, False, None, None))
    for i, j in itertools.product(range(8), repeat=2):
        down = f"db.t{j}" in g.downstream(f"db.t{i}")
        assert down == (f"db.t{i}" in g.upstream(f"db.t{j}"))
        assert down == (f"db.t{j}.c" in g.downstream(f"db.t{i}.c"))
    # A table is in a cycle exactly when it reaches itself.
    in_cycle = {n for group in g.cycles() for n in group}
    assert in_cycle == {f"db.t{i}" for i in range(8) if f"db.t{i}" in g.downstream(f"db.t{i}")}


def test_history_keeps_every_source_bearing_record(catalog: Catalog) -> None:
    table = catalog.create_table("db.h", schema=pa.schema([("x", pa.int64())]))
    recs = [LineageRecord(op="derive", engine="duckdb", status="complete",
                          sources=[SourceRef(f"db.s{i % 3}", f"uuid-{i % 3}", i)],
                          columns={"x": [FieldRef(0, "x")]}) for i in range(6)]
    recs.append(LineageRecord(op="append", engine="pyarrow", status="external"))
    for rec in recs:
        table.append(pa.table({"x": pa.array([1], pa.int64())}), snapshot_properties=rec.summary())
    table = catalog.load_table("db.h")
    expire = [s.snapshot_id for s in table.metadata.snapshots][:-1]
    kept = history(fold_expired(table.metadata, expire))
    # One per distinct flow (runs differing only in the snapshot read collapse to the newest);
    # the external append says nothing about sources and is not kept.
    assert sorted((r.sources[0].uuid, r.sources[0].snapshot_id) for r in kept) == [
        ("uuid-0", 3), ("uuid-1", 4), ("uuid-2", 5)]


STEPS = {
    "rename": ("{c}", lambda v: v),
    "lower": ("lower({c})", str.lower),
    "upper": ("upper({c})", str.upper),
    "prefix": ("'k:' || {c}", lambda v: "k:" + v),
}
_ids = itertools.count()


@settings(max_examples=8)
@given(chain=st.lists(st.sampled_from(sorted(STEPS)), min_size=1, max_size=3), subject=st.sampled_from(["Ann", "bo"]))
def test_fanout_erases_exactly_the_subject_downstream(shared_catalog: Catalog, chain: list[str], subject: str,
                                                      ) -> None:
    """Whatever chain of value-preserving derives: afterwards no table holds the subject's mapped
    value, and every other row is still there (the oracle applies the same functions in Python)."""
    people = ["Ann", "bo", "Cy", "dee"]
    n = next(_ids)
    root = f"db.p{n}_0"
    data = pa.table({"who": people * 2, "k": pa.array(range(8), pa.int64())})
    table = shared_catalog.create_table(root, schema=data.schema)
    ip.configure_identity(table, ["who"])
    ip.append(shared_catalog.load_table(root), data)
    names_, fns = [root], []
    for i, step in enumerate(chain, start=1):
        expr, fn = STEPS[step]
        name = f"db.p{n}_{i}"
        ip.derive(shared_catalog, f"SELECT {expr.format(c='who')} AS who, k FROM {names_[-1]}", name)
        names_.append(name)
        fns.append(fn)
    report = ip.erase(shared_catalog, [subject], [root], follow_lineage=True)
    assert set(report.tables) == set(names_) and not report.lineage.warnings
    value = subject
    for depth, name in enumerate(names_):
        if depth:
            value = fns[depth - 1](value)
        got = shared_catalog.load_table(name).scan().to_arrow().column("who").to_pylist()
        expected = [p for p in people * 2 if p != subject]
        for fn in fns[:depth]:
            expected = [fn(p) for p in expected]
        assert sorted(got) == sorted(expected), (name, chain)
        assert value not in got


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, "test-secret-0123456789abcdef")
