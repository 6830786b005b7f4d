"""Lineage records of any shape: the graph, its exports and fan-out go on; a bad record is reported.

A ``privacy.lineage`` summary value is metadata any engine can write. Whatever it holds must become
an "unreadable" opaque record (reported in ``graph.problems``), never an exception that stops the
whole lake's graph.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st
from pyiceberg.catalog import Catalog

import iceberg_privacy as ip
from iceberg_privacy.lineage.export import to_mermaid, to_openlineage
from iceberg_privacy.lineage.fanout import plan_fanout
from iceberg_privacy.lineage.graph import LineageGraph, TableNode, _add_record, _report
from iceberg_privacy.lineage.record import OPAQUE, LineageRecord, _safe_parse, history

VALID = {"v": 1, "op": "derive", "engine": "duckdb", "status": "complete",
         "sources": [{"table": "db.events", "uuid": "u-1", "snapshot-id": 1}],
         "columns": {"user_id": [{"s": 0, "c": "user_id", "t": "DIRECT", "st": "IDENTITY"}]},
         "indirect": [{"s": 0, "c": "day", "t": "INDIRECT", "st": "FILTER"}],
         "override": {"reason": "r", "by": "me", "flows": ["a -> b"]}}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.text(max_size=4),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=3), kids, max_size=3), max_leaves=8)


@st.composite
def mutated(draw: Any) -> Any:
    """The valid record with one field (top level, in a source or in an input) replaced by any JSON."""
    rec = json.loads(json.dumps(VALID))
    where = draw(st.sampled_from(["top", "source", "column", "indirect"]))
    value = draw(json_values)
    if where == "top":
        rec[draw(st.sampled_from(sorted(VALID)))] = value
    elif where == "source":
        rec["sources"][0][draw(st.sampled_from(["table", "uuid", "snapshot-id"]))] = value
    elif where == "column":
        rec["columns"]["user_id"][0][draw(st.sampled_from(["s", "c", "t", "st", "m", "x"]))] = value
    else:
        rec["indirect"][0][draw(st.sampled_from(["s", "c", "t", "st"]))] = value
    return rec


@settings(max_examples=150)
@given(mutated())
def test_any_record_shape_reads_or_is_reported_never_raises(d: Any) -> None:
    rec = _safe_parse(json.dumps(d), 5)
    graph = LineageGraph()
    node = TableNode(uuid="sink", name="mart.sink", columns=("user_id",))
    graph.tables["sink"] = node
    _add_record(graph, node, rec)  # raised AttributeError for a string "override" before the fix
    _report(graph)
    graph.downstream("mart.sink")
    graph.upstream("mart.sink.user_id")
    graph.cycles()
    to_openlineage(graph)
    to_mermaid(graph)
    if rec.status == OPAQUE and rec.op == "unknown":
        assert any("unreadable lineage record" in p for p in graph.problems)
    else:  # read: every field has the type the readers rely on
        assert all(isinstance(s.uuid, str) and isinstance(s.table, str) for s in rec.sources)
        assert rec.override is None or isinstance(rec.override, dict)
        assert all(type(f.source) is int for fs in rec.columns.values() for f in fs)


@settings(max_examples=50)
@given(st.lists(json_values, max_size=3))
def test_any_history_shape_is_reported_never_raises(items: list[Any]) -> None:
    for rec in history({"privacy.lineage.history": json.dumps(items)}):
        assert isinstance(rec, LineageRecord)
        assert rec.snapshot_id is None or type(rec.snapshot_id) is int


def test_graph_of_a_lake_with_a_malformed_override_goes_on(catalog: Catalog, tmp_path: Path) -> None:
    events = pa.table({"user_id": pa.array([1, 2], pa.int64()), "page": ["a", "b"]})
    catalog.create_table("db.events", schema=events.schema)
    ip.configure_identity(catalog.load_table("db.events"), ["user_id"])
    ip.append(catalog.load_table("db.events"), events)
    ip.derive(catalog, "SELECT user_id, page FROM db.events", "mart.pages")
    good = json.loads(catalog.load_table("mart.pages").current_snapshot().summary["privacy.lineage"])
    catalog.create_table("mart.odd", schema=events.schema)
    catalog.load_table("mart.odd").append(
        events, snapshot_properties={"privacy.lineage": json.dumps({**good, "override": "by hand"})})
    graph = ip.lineage.graph(catalog)
    assert graph.downstream("db.events.user_id") == ["mart.pages.user_id"]
    assert any(p.startswith("mart.odd:") and "override must be a JSON object" in p for p in graph.problems)
    fan = plan_fanout(catalog, [catalog.load_table("db.events")], [1], graph)
    assert fan.tables == ["mart.pages"]
