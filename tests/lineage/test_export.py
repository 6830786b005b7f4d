"""Exports of the lineage graph: OpenLineage RunEvents, Mermaid, PNG, on real tables in an embedded catalog.

OpenLineage events are also sent through the openlineage-python client's file, console and HTTP
transports; the HTTP one posts to a real server started here on 127.0.0.1.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import uuid as uuidlib
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openlineage.client import OpenLineageClient
from openlineage.client.transport.http import HttpConfig, HttpTransport
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table

from iceberg_privacy.catalog import connect
from iceberg_privacy.config import configure_identity
from iceberg_privacy.errors import LineageError, StorageError
from iceberg_privacy.lineage.annotations import annotate
from iceberg_privacy.lineage.export import (
    COLUMN_LINEAGE_SCHEMA,
    PRODUCER,
    SCHEMA_URL,
    EmitReport,
    emit_openlineage,
    render_png,
    to_mermaid,
    to_openlineage,
    write_openlineage,
)
from iceberg_privacy.lineage.export.mermaid import _node_id
from iceberg_privacy.lineage.export.picture import _layout
from iceberg_privacy.lineage.graph import LineageGraph, build_graph
from iceberg_privacy.lineage.record import (
    AGGREGATION,
    INDIRECT,
    TRANSFORMATION,
    FieldRef,
    LineageRecord,
    SourceRef,
    external,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _table(cat: Catalog, name: str, columns: dict[str, pa.DataType]) -> Table:
    schema = pa.schema([pa.field(c, t) for c, t in columns.items()])
    return cat.create_table(name, schema)


def _write(t: Table, rec: LineageRecord, rows: int = 2) -> Table:
    arrays = {f.name: pa.array([None] * rows, type=f.type) for f in t.schema().as_arrow()}
    t.append(pa.table(arrays, schema=t.schema().as_arrow()), snapshot_properties=rec.summary())
    return t.refresh()


def _derive(sink: Table, op: str, sources: list[Table], **kw: object) -> Table:
    rec = LineageRecord(op=op, engine="duckdb", status=kw.pop("status", "complete"),  # type: ignore[arg-type]
                        sources=[SourceRef.of(s, s.metadata.current_snapshot_id) for s in sources], **kw)  # type: ignore[arg-type]
    return _write(sink, rec)


@pytest.fixture
def lake(tmp_path: Path) -> tuple[Catalog, dict[str, Table]]:
    """users + events -> daily (JOIN, expression, aggregation) -> stats (DP) ; events -> raw_copy (opaque);
    users -> marketing (purpose override)."""
    cat = connect(home=tmp_path / "home")
    cat.create_namespace("db")
    s, i = pa.string(), pa.int64()
    users = _table(cat, "db.users", {"user_id": s, "email": s, "country": s})
    users = configure_identity(users, ["user_id"])
    users = annotate(users, sensitive={"email": ["contact"]}, purposes=["analytics", "billing"])
    users = _write(users, external("append"))
    events = _table(cat, "db.events", {"event_id": i, "user_id": s, "kind": s})
    events = _write(events, external("append"))
    daily = _table(cat, "db.daily", {"user_id": s, "email_lc": s, "n": i})
    daily = _derive(daily, "derive", [users, events], columns={
        "user_id": [FieldRef(0, "user_id")],
        "email_lc": [FieldRef(0, "email", subtype=TRANSFORMATION, expression="LOWER(email)")],
        "n": [FieldRef(1, "event_id", subtype=AGGREGATION, masking=True)],
    }, indirect=[FieldRef(1, "user_id", type=INDIRECT, subtype="JOIN"),
                 FieldRef(0, "country", type=INDIRECT, subtype="FILTER")],
        sql="SELECT u.user_id, LOWER(u.email) AS email_lc, COUNT(e.event_id) AS n FROM db.users u JOIN db.events e "
            "ON u.user_id = e.user_id WHERE u.country = ? GROUP BY 1, 2", purpose="analytics")
    stats = _table(cat, "db.stats", {"n": i})
    stats = _derive(stats, "dp-release", [daily], exempt="dp",
                    columns={"n": [FieldRef(0, "n", subtype=AGGREGATION, masking=True)]})
    raw_copy = _table(cat, "db.raw_copy", {"event_id": i})
    raw_copy = _derive(raw_copy, "derive", [events], status="opaque", reason="SQL not analysed",
                       sql="SELECT weird(?) FROM db.events")
    marketing = _table(cat, "db.marketing", {"user_id": s})
    marketing = _derive(marketing, "derive", [users], columns={"user_id": [FieldRef(0, "user_id")]},
                        purpose="marketing", override={"reason": "DPO approved ticket 42", "by": "alice"})
    return cat, {"users": users, "events": events, "daily": daily, "stats": stats, "raw_copy": raw_copy,
                 "marketing": marketing}


# --- OpenLineage --------------------------------------------------------------------------------------------

def _check_facet(f: dict) -> None:
    assert f["_producer"] == PRODUCER
    assert f["_schemaURL"].startswith("https://")


def _check_input_field(f: dict) -> None:
    assert {"namespace", "name", "field"} <= set(f)
    for t in f["transformations"]:
        assert t["type"] in ("DIRECT", "INDIRECT")
        assert isinstance(t["masking"], bool)


def _check_event(e: dict) -> None:
    """The RunEvent structure of OpenLineage 2-0-2 and the columnLineage facet 1-2-0."""
    for key in ("eventTime", "producer", "schemaURL", "run", "job"):
        assert key in e, key
    assert e["eventType"] == "COMPLETE"
    assert e["schemaURL"] == SCHEMA_URL
    datetime.fromisoformat(e["eventTime"].replace("Z", "+00:00"))
    assert e["eventTime"].endswith("Z")
    uuidlib.UUID(e["run"]["runId"])
    assert {"namespace", "name"} <= set(e["job"])
    for facets in [e["run"].get("facets", {}), e["job"].get("facets", {})]:
        for f in facets.values():
            _check_facet(f)
    for ds in e["inputs"] + e["outputs"]:
        assert {"namespace", "name"} <= set(ds)
        for f in ds.get("facets", {}).values():
            _check_facet(f)
    for ds in e["outputs"]:
        cl = ds.get("facets", {}).get("columnLineage")
        if cl is None:
            continue
        assert cl["_schemaURL"] == COLUMN_LINEAGE_SCHEMA
        assert isinstance(cl["fields"], dict)
        for spec in cl["fields"].values():
            assert isinstance(spec["inputFields"], list)
            for f in spec["inputFields"]:
                _check_input_field(f)
        for f in cl.get("dataset", []):
            _check_input_field(f)
    json.dumps(e)


def test_openlineage_events(lake: tuple[Catalog, dict[str, Table]]) -> None:
    cat, t = lake
    g = build_graph(cat)
    events = to_openlineage(g)
    # users/events are external appends: no event; daily, stats, raw_copy (opaque), marketing: one each
    assert sorted(e["outputs"][0]["name"] for e in events) == ["db.daily", "db.marketing", "db.raw_copy", "db.stats"]
    for e in events:
        _check_event(e)
    assert [e["eventTime"] for e in events] == sorted(e["eventTime"] for e in events)

    daily = next(e for e in events if e["outputs"][0]["name"] == "db.daily")
    assert daily["job"] == {"namespace": "iceberg", "name": "iceberg-privacy.derive.db.daily",
                            "facets": daily["job"]["facets"]}
    assert daily["job"]["facets"]["sql"]["query"].startswith("SELECT u.user_id")
    assert {i["name"] for i in daily["inputs"]} == {"db.users", "db.events"}
    users_in = next(i for i in daily["inputs"] if i["name"] == "db.users")
    tf = users_in["facets"]["icebergPrivacy_table"]
    assert tf["uuid"] == str(t["users"].metadata.table_uuid)
    assert tf["snapshotId"] == t["users"].metadata.current_snapshot_id
    assert users_in["facets"]["version"]["datasetVersion"] == str(t["users"].metadata.current_snapshot_id)

    out = daily["outputs"][0]["facets"]
    cl = out["columnLineage"]
    assert set(cl["fields"]) == {"user_id", "email_lc", "n"}
    email = cl["fields"]["email_lc"]["inputFields"]
    assert email == [{"namespace": "iceberg", "name": "db.users", "field": "email", "transformations": [
        {"type": "DIRECT", "subtype": "TRANSFORMATION", "masking": False, "description": "LOWER(email)"}]}]
    n = cl["fields"]["n"]["inputFields"][0]
    assert n["name"] == "db.events" and n["transformations"][0]["masking"] is True
    assert n["transformations"][0]["subtype"] == "AGGREGATION"
    assert {(d["name"], d["field"], d["transformations"][0]["subtype"]) for d in cl["dataset"]} == {
        ("db.events", "user_id", "JOIN"), ("db.users", "country", "FILTER")}
    assert all(d["transformations"][0]["type"] == "INDIRECT" for d in cl["dataset"])
    assert [f["name"] for f in out["schema"]["fields"]] == ["user_id", "email_lc", "n"]
    run = daily["run"]["facets"]["icebergPrivacy_lineage"]
    assert run["status"] == "complete" and run["op"] == "derive" and run["purpose"] == "analytics"
    assert run["sinkSnapshotId"] == t["daily"].metadata.current_snapshot_id
    assert run["sinkUuid"] == str(t["daily"].metadata.table_uuid)

    stats = next(e for e in events if e["outputs"][0]["name"] == "db.stats")
    assert stats["run"]["facets"]["icebergPrivacy_lineage"]["exempt"] == "dp"
    assert stats["job"]["name"] == "iceberg-privacy.dp-release.db.stats"
    opaque = next(e for e in events if e["outputs"][0]["name"] == "db.raw_copy")
    assert opaque["run"]["facets"]["icebergPrivacy_lineage"]["status"] == "opaque"
    assert opaque["run"]["facets"]["icebergPrivacy_lineage"]["reason"] == "SQL not analysed"
    assert "columnLineage" not in opaque["outputs"][0]["facets"]
    mk = next(e for e in events if e["outputs"][0]["name"] == "db.marketing")
    assert mk["run"]["facets"]["icebergPrivacy_lineage"]["override"]["reason"] == "DPO approved ticket 42"

    # deterministic: same ids and content on a fresh read; the run id is uuid5(sink uuid, snapshot)
    again = to_openlineage(build_graph(connect(home=Path(cat.properties["uri"][len("sqlite:///"):]).parent)))
    assert again == events
    assert len({e["run"]["runId"] for e in events}) == len(events)


def test_openlineage_namespace_producer_and_ndjson(lake: tuple[Catalog, dict[str, Table]], tmp_path: Path) -> None:
    cat, _ = lake
    g = build_graph(cat)
    events = to_openlineage(g, namespace="iceberg://lake", producer="https://example.com/me")
    assert {e["producer"] for e in events} == {"https://example.com/me"}
    assert all(d["namespace"] == "iceberg://lake" for e in events for d in e["inputs"] + e["outputs"])
    assert all(f["_producer"] == "https://example.com/me" for e in events for f in e["run"]["facets"].values())
    path = Path(write_openlineage(g, tmp_path / "out" / "lineage.ndjson"))
    lines = path.read_text().splitlines()
    assert [json.loads(x) for x in lines] == to_openlineage(g)


def test_an_export_onto_a_directory_or_a_failed_write_leaves_no_temporary_file(
        lake: tuple[Catalog, dict[str, Table]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: ``lineage export --out DIR`` wrote ``DIR.tmp`` next to the directory, kept it, and said "cannot
    read a storage location: see the cause"."""
    cat, _ = lake
    g = build_graph(cat)
    (tmp_path / "exports").mkdir()
    for write in (lambda: write_openlineage(g, tmp_path / "exports"), lambda: render_png(g, tmp_path / "exports")):
        with pytest.raises(StorageError, match="is a directory; name a file"):
            write()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exports", "home"]

    def refuse(src: str, dst: str) -> None:
        raise PermissionError(13, "Permission denied", dst)

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(StorageError, match="cannot write"):
        write_openlineage(g, tmp_path / "exports" / "l.ndjson")
    assert list((tmp_path / "exports").iterdir()) == []


def test_openlineage_empty_graph() -> None:
    assert to_openlineage(LineageGraph()) == []


# --- OpenLineage through the client's transports ------------------------------------------------------

@pytest.fixture
def ol_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No OpenLineage settings from the machine (env, ./openlineage.yml, ~/.openlineage), no proxy for 127.0.0.1."""
    for key in list(os.environ):
        if key.upper().startswith("OPENLINEAGE"):
            monkeypatch.delenv(key)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("HOME", str(cwd))
    for key in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(key, "127.0.0.1,localhost")


def _as_exported(e: dict) -> dict:
    """An event as the client emitted it, less the ``tags`` run facet every OpenLineageClient adds."""
    e = json.loads(json.dumps(e))
    tags = e["run"]["facets"].pop("tags")
    assert {"key": "openlineage_client_version", "source": "OPENLINEAGE_CLIENT"}.items() <= tags["tags"][0].items()
    return e


def test_emit_file_transport(lake: tuple[Catalog, dict[str, Table]], ol_env: None, tmp_path: Path) -> None:
    cat, _ = lake
    g = build_graph(cat)
    path = tmp_path / "ol" / "events.ndjson"
    path.parent.mkdir()
    rep = emit_openlineage(g, transport={"type": "file", "log_file_path": str(path), "append": True})
    assert rep == EmitReport(events=4, transport="file", target=str(path))
    assert str(rep) == f"emitted 4 OpenLineage events through the file transport to {path}"
    sent = [json.loads(x) for x in path.read_text().splitlines()]
    assert [_as_exported(e) for e in sent] == to_openlineage(g)
    for e in sent:
        _check_event(_as_exported(e))  # the client's own tags facet has the client as producer
    # NDJSON from write_openlineage is the same events, one per line
    written = [json.loads(x) for x in Path(write_openlineage(g, tmp_path / "w.ndjson")).read_text().splitlines()]
    assert written == [_as_exported(e) for e in sent]


def test_emit_console_transport(lake: tuple[Catalog, dict[str, Table]], ol_env: None,
                                caplog: pytest.LogCaptureFixture) -> None:
    cat, _ = lake
    g = build_graph(cat)
    caplog.set_level(logging.INFO, logger="openlineage.client.transport.console")
    rep = emit_openlineage(g, transport={"type": "console"}, namespace="iceberg://lake")
    assert (rep.events, rep.transport, rep.target) == (4, "console", None)
    assert str(rep) == "emitted 4 OpenLineage events through the console transport"
    logged = [json.loads(r.getMessage()) for r in caplog.records if r.name == "openlineage.client.transport.console"]
    assert [_as_exported(e) for e in logged] == to_openlineage(g, namespace="iceberg://lake")


class _Collector(BaseHTTPRequestHandler):
    """Answers every POST with the server's ``status`` and keeps (path, content type, JSON body)."""

    server: _LineageServer

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.received.append((self.path, self.headers.get("Content-Type"), json.loads(body)))
        self.send_response(self.server.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet test output
        pass


class _LineageServer(ThreadingHTTPServer):
    received: list[tuple[str, str | None, Any]]
    status: int


@pytest.fixture
def lineage_server() -> Iterator[_LineageServer]:
    server = _LineageServer(("127.0.0.1", 0), _Collector)
    server.received, server.status = [], 200
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_emit_http_transport(lake: tuple[Catalog, dict[str, Table]], ol_env: None,
                             lineage_server: _LineageServer) -> None:
    cat, _ = lake
    g = build_graph(cat)
    expected = to_openlineage(g)
    url = f"http://127.0.0.1:{lineage_server.server_address[1]}"
    transports: list[Any] = [
        {"type": "http", "url": url},  # a transport config, as in openlineage.yml
        HttpTransport(HttpConfig(url=url, endpoint="api/v1/lineage")),  # a transport object
        OpenLineageClient(config={"transport": {"type": "http", "url": url, "endpoint": "/custom/lineage"}}),
    ]
    for transport, path in zip(transports, ["/api/v1/lineage", "/api/v1/lineage", "/custom/lineage"], strict=True):
        lineage_server.received.clear()
        rep = emit_openlineage(g, transport=transport)
        assert (rep.events, rep.transport, rep.target) == (4, "http", url + path)
        assert str(rep) == f"emitted 4 OpenLineage events through the http transport to {url}{path}"
        assert [(p, ct) for p, ct, _ in lineage_server.received] == [(path, "application/json")] * 4
        assert [_as_exported(body) for _, _, body in lineage_server.received] == expected

    lineage_server.status = 400  # refused (not retried): the error says how far it got
    with pytest.raises(LineageError, match=r"http transport failed after 0 of 4 event\(s\)"):
        emit_openlineage(g, transport={"type": "http", "url": url})


def test_emit_bad_transport(ol_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    g = LineageGraph()
    with pytest.raises(LineageError, match="needs a 'type'"):
        emit_openlineage(g, transport={"url": "http://127.0.0.1:9"})
    with pytest.raises(LineageError, match="bad OpenLineage transport config"):
        emit_openlineage(g, transport={"type": "file"})  # no log_file_path
    with pytest.raises(LineageError, match="OpenLineageClient, a Transport or a config dict"):
        emit_openlineage(g, transport="http://127.0.0.1:9")  # type: ignore[arg-type]
    monkeypatch.setenv("OPENLINEAGE_DISABLED", "true")  # the client's own switch is honoured
    rep = emit_openlineage(g, transport={"type": "console"})
    assert rep.transport == "noop" and "disabled" in str(rep)


# --- Mermaid ----------------------------------------------------------------------------------------------

_ID = r"[A-Za-z][A-Za-z0-9_]*"


def _mermaid_ids(text: str) -> set[str]:
    ids = set()
    for line in text.splitlines():
        line = line.strip()
        if m := re.match(rf"^(?:subgraph\s+)?({_ID})\[\"", line):
            ids.add(m.group(1))
        if m := re.match(rf"^({_ID}) (?:-->|-\.->|==>)(?:\|[^|]*\|)? ({_ID})$", line):
            ids.update(m.groups())
    return ids


def test_mermaid(lake: tuple[Catalog, dict[str, Table]]) -> None:
    cat, t = lake
    g = build_graph(cat)
    text = to_mermaid(g)
    assert text.startswith("flowchart LR\n")
    ids = {name: _node_id(str(tab.metadata.table_uuid)) for name, tab in t.items()}
    ids_seen = _mermaid_ids(text)
    assert set(ids.values()) <= ids_seen
    assert all("." not in i for i in ids_seen)
    assert f'{ids["users"]} -->|"derive"| {ids["daily"]}' in text
    assert f'{ids["events"]} -->|"derive"| {ids["daily"]}' in text
    assert f'{ids["daily"]} ==>|"dp-release · exempt: dp"| {ids["stats"]}' in text
    assert f'{ids["events"]} -.->|"derive · opaque"| {ids["raw_copy"]}' in text
    assert f'{ids["users"]} -->|"derive · override: DPO approved ticket 42"| {ids["marketing"]}' in text
    users_line = next(x for x in text.splitlines() if x.strip().startswith(ids["users"] + "["))
    assert "<b>db.users</b>" in users_line and "identity: user_id" in users_line
    assert "sensitive email: contact" in users_line and "allows: analytics, billing" in users_line
    assert re.search(rf"class [^ ]*{ids['stats']}[^ ]* dp", text)
    assert "linkStyle" in text
    assert "%% problem:" in text  # the opaque write is a problem of the graph


def test_mermaid_columns(lake: tuple[Catalog, dict[str, Table]]) -> None:
    cat, t = lake
    text = to_mermaid(build_graph(cat), columns=True)
    users, daily = (str(t[n].metadata.table_uuid) for n in ("users", "daily"))
    assert f'subgraph {_node_id(users)}["' in text
    a, b = _node_id(users + "\0email", "c"), _node_id(daily + "\0email_lc", "c")
    assert f"  {a} --> {b}" in text
    assert f'{a}["email [contact]"]' in text
    assert f'{_node_id(users + chr(0) + "user_id", "c")}["user_id (identity)"]' in text
    masked = f'{_node_id(str(t["events"].metadata.table_uuid) + chr(0) + "event_id", "c")} -.->|masked| ' \
             f'{_node_id(daily + chr(0) + "n", "c")}'
    assert masked in text
    assert all("." not in i for i in _mermaid_ids(text))
    assert text.count("subgraph ") == text.count("\n  end")


def test_mermaid_escapes_labels(tmp_path: Path) -> None:
    cat = connect(home=tmp_path)
    cat.create_namespace("db")
    src = _write(_table(cat, "db.src", {"a": pa.string()}), external("append"))
    dst = _table(cat, "db.dst", {"a": pa.string()})
    _derive(dst, "derive", [src], override={"reason": 'say "hi" <b>|#x</b> & bye'})
    text = to_mermaid(build_graph(cat))
    edge = next(x for x in text.splitlines() if "override" in x)
    assert "#quot;hi#quot;" in edge and "#lt;b#gt;" in edge and "#124;" in edge and "#35;x" in edge
    assert "#amp;" in edge
    assert edge.count('"') == 2 and edge.count("|") == 2


def test_an_overwrite_is_one_write_not_two(tmp_path: Path) -> None:
    """pyiceberg's overwrite commits a delete snapshot and an append snapshot, both with the record: two derives
    (the second an overwrite) showed as 'derive x3' and gave three OpenLineage runs, one whose output version
    was the emptied table."""
    import iceberg_privacy as ip

    cat = connect(home=tmp_path)
    cat.create_namespace("db")
    _write(_table(cat, "db.src", {"a": pa.string()}), external("append"))
    ip.derive(cat, "SELECT a FROM db.src", "db.dst")
    ip.derive(cat, "SELECT a FROM db.src", "db.dst", mode="overwrite")
    dst = cat.load_table("db.dst")
    g = build_graph(cat)
    events = to_openlineage(g)
    assert len(events) == 2
    versions = [e["outputs"][0]["facets"]["version"]["datasetVersion"] for e in events]
    assert versions[-1] == str(dst.metadata.current_snapshot_id)
    assert all(dst.metadata.snapshot_by_id(int(v)).summary.operation.value == "append" for v in versions)  # type: ignore[union-attr]
    assert '"derive x2"' in to_mermaid(g)
    assert g.tables[str(dst.metadata.table_uuid)].unknown_writes == 0


def test_mermaid_text_holds_no_directive_from_names_or_records() -> None:
    """Mermaid reads "%%{...}%%" anywhere in the text (a label, a comment) as a directive: a table name, an override
    reason or an unreadable record's reason holding one reconfigured whoever rendered the diagram
    ("securityLevel: loose" lets labels run scripts). A Unicode line separator must not end a line either."""
    from iceberg_privacy.lineage.graph import ColumnEdge, TableEdge, TableNode

    directive = "%%{init: {'securityLevel': 'loose', 'theme': 'dark'}}%%"
    g = LineageGraph()
    g.tables["u1"] = TableNode("u1", f"db.src{directive}", columns=(f"c{directive}",))
    g.tables["u2"] = TableNode("u2", "db.sink\u2028flowchart TB", columns=("c",))
    g.edges.append(TableEdge("u1", "u2", f"derive{directive}", "complete", 1, 1, override=f"why {directive}"))
    g.columns.append(ColumnEdge("u1", f"c{directive}", "u2", "c", "DIRECT", "IDENTITY", False, None, 1))
    g.problems.append(f"db.sink: snapshot 1 was written by x with opaque lineage ({directive}\u2029x)")
    for columns in (False, True):
        text = to_mermaid(g, columns=columns)
        assert "%%{" not in text and "}%%" not in text
        assert "\u2028" not in text and "\u2029" not in text
        assert all(line.startswith(("flowchart LR", "  ")) for line in text.splitlines())
        assert "#37;#37;{init: {'securityLevel': 'loose', 'theme': 'dark'}}#37;#37;" in text  # shown, inert


@settings(max_examples=150, deadline=None)
@given(name=st.text(min_size=1, max_size=30), column=st.text(min_size=1, max_size=12),
       reason=st.text(max_size=30))
def test_mermaid_lines_stay_whole_for_any_name(name: str, column: str, reason: str) -> None:
    """Whatever a table, a column, an override or a problem says: one statement per line, every label one quoted
    string, and no directive."""
    from iceberg_privacy.lineage.graph import ColumnEdge, TableEdge, TableNode

    g = LineageGraph()
    g.tables["u1"] = TableNode("u1", name, columns=(column,))
    g.tables["u2"] = TableNode("u2", "db.sink", columns=("c",))
    g.edges.append(TableEdge("u1", "u2", reason or "derive", "complete", 1, 1, override=reason or None))
    g.columns.append(ColumnEdge("u1", column, "u2", "c", "DIRECT", "IDENTITY", False, None, 1))
    g.problems.append(f"{name}: {reason}")
    for columns in (False, True):
        text = to_mermaid(g, columns=columns)
        assert "%%{" not in text and "}%%" not in text
        for line in text.splitlines():
            assert line == "flowchart LR" or line.startswith("  "), line
            if line.startswith("  %%"):
                continue
            assert line.count('"') in (0, 2), line
            assert line.count("|") in (0, 2), line


def test_png_draws_dollar_signs_in_names_and_reasons_as_text(tmp_path: Path) -> None:
    """matplotlib reads text between two '$' as TeX: a table named db.a$^$ or an override reason "costs $^$"
    stopped the drawing with a mathtext ValueError (and 'price$usd$' was drawn in italics)."""
    cat = connect(home=tmp_path)
    cat.create_namespace("db")
    src = _write(_table(cat, "db.a$^$", {"c$1$": pa.string()}), external("append"))
    dst = _table(cat, "db.price$usd$", {"a": pa.string()})
    _derive(dst, "derive", [src], columns={"a": [FieldRef(0, "c$1$")]},
            override={"reason": r"costs $\frac$ and $^$", "by": "me", "flows": []})
    g = build_graph(cat)
    for columns in (False, True):
        data = Path(render_png(g, tmp_path / f"dollars-{columns}.png", columns=columns)).read_bytes()
        assert data.startswith(PNG_MAGIC) and _png_size(data)[0] > 100


def test_dropped_source_and_cycle(tmp_path: Path) -> None:
    cat = connect(home=tmp_path)
    cat.create_namespace("db")
    s = pa.string()
    tmp = _write(_table(cat, "db.tmp", {"k": s}), external("append"))
    tmp_uuid = str(tmp.metadata.table_uuid)
    keep = _derive(_table(cat, "db.keep", {"k": s}), "derive", [tmp], columns={"k": [FieldRef(0, "k")]})
    cat.drop_table("db.tmp")
    a = _write(_table(cat, "db.a", {"k": s}), external("append"))
    b = _derive(_table(cat, "db.b", {"k": s}), "derive", [a], columns={"k": [FieldRef(0, "k")]})
    a = _derive(a, "derive", [b], columns={"k": [FieldRef(0, "k")]})
    g = build_graph(cat)
    assert not g.tables[tmp_uuid].exists
    assert any("db.tmp" in p and "no longer in the catalog" in p for p in g.problems)
    assert g.cycles() == [["db.a", "db.b"]]

    text = to_mermaid(g)
    tid = _node_id(tmp_uuid)
    assert re.search(rf"class [^ ]*{tid}[^ ]* dropped", text)
    assert "(dropped)" in next(x for x in text.splitlines() if x.strip().startswith(tid + "["))
    assert f'{tid} -->|"derive"| {_node_id(str(keep.metadata.table_uuid))}' in text
    aid, bid = _node_id(str(a.metadata.table_uuid)), _node_id(str(b.metadata.table_uuid))
    assert re.search(rf"class (?=[^ ]*{aid})(?=[^ ]*{bid})[^ ]* cycle", text)
    assert "%% problem: cycle: db.a <-> db.b" in text

    events = to_openlineage(g)
    ev = next(e for e in events if e["outputs"][0]["name"] == "db.keep")
    assert ev["inputs"][0]["name"] == "db.tmp"  # the name recorded: the table is gone
    assert ev["inputs"][0]["facets"]["icebergPrivacy_table"]["exists"] is False
    for e in events:
        _check_event(e)

    for columns in (False, True):
        png = Path(render_png(g, tmp_path / f"cycle-{columns}.png", columns=columns))
        data = png.read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 5_000


# --- PNG ---------------------------------------------------------------------------------------------------

def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_png(lake: tuple[Catalog, dict[str, Table]], tmp_path: Path) -> None:
    cat, _ = lake
    g = build_graph(cat)
    for columns in (False, True):
        out = Path(render_png(g, tmp_path / "pics" / f"lake-{columns}.png", columns=columns))
        data = out.read_bytes()
        w, h = _png_size(data)
        assert len(data) > 10_000 and w >= 600 and h >= 300


def test_png_empty_and_single(tmp_path: Path) -> None:
    data = Path(render_png(LineageGraph(), tmp_path / "empty.png")).read_bytes()
    assert _png_size(data)[0] > 100 and len(data) > 1_000
    cat = connect(home=tmp_path / "home")
    cat.create_namespace("db")
    _write(_table(cat, "db.only", {"a": pa.string()}), external("append"))
    g = build_graph(cat)
    assert len(g.tables) == 1
    data = Path(render_png(g, tmp_path / "one.png")).read_bytes()
    assert _png_size(data)[0] > 100 and len(data) > 3_000
    assert "flowchart LR" in to_mermaid(g) and to_openlineage(g) == []


def test_png_large_synthetic_graph(tmp_path: Path) -> None:
    """~200 tables in layers with a cycle (no catalog needed: the drawing only reads the graph)."""
    import random

    from iceberg_privacy.lineage.graph import TableEdge, TableNode

    rng = random.Random(7)
    g = LineageGraph()
    uuids = [str(uuidlib.UUID(int=i + 1)) for i in range(200)]
    for i, u in enumerate(uuids):
        g.tables[u] = TableNode(uuid=u, name=f"db.table_{i:03d}", exists=i % 37 != 5, dp_release=i % 50 == 49,
                                columns=tuple(f"c{k}" for k in range(6)))
    for i in range(20, 200):
        for j in set(rng.sample(range(max(0, i - 40), i), rng.randint(1, 3))):
            g.edges.append(TableEdge(uuids[j], uuids[i], "derive", "opaque" if i % 23 == 0 else "complete", i, j))
    g.edges.append(TableEdge(uuids[150], uuids[199], "derive", "complete", 1, 1))
    g.edges.append(TableEdge(uuids[199], uuids[150], "derive", "complete", 1, 1))  # closes a cycle
    assert g.cycles()
    for columns in (False, True):
        out = Path(render_png(g, tmp_path / f"big-{columns}.png", columns=columns))
        w, h = _png_size(out.read_bytes())
        assert w >= 1000 and h >= 500 and max(w, h) <= 20_100
    # the layout flows left to right: every edge but those closing a cycle goes to a later column
    pairs = {(e.source, e.sink) for e in g.edges}
    grid, n_columns, _, back = _layout(sorted(g.tables), pairs, 8)
    assert set(grid) == set(g.tables) and n_columns > 10
    assert back and back <= {(uuids[199], uuids[150]), (uuids[150], uuids[199])} and len(back) == 1
    assert all(grid[a][0] < grid[b][0] for a, b in pairs - back)
    text = to_mermaid(g)
    assert text.count("-->") + text.count("-.->") == len({(e.source, e.sink, e.status) for e in g.edges})
    assert " cycle" in text


def test_png_cycles_and_self_loop(tmp_path: Path) -> None:
    """a -> b -> c -> a, c -> d, d -> d: cycles are tolerated and drawn."""
    from iceberg_privacy.lineage.graph import TableEdge, TableNode

    g = LineageGraph()
    for u, name in [("1", "db.a"), ("2", "db.b"), ("3", "db.c"), ("4", "db.d")]:
        g.tables[u] = TableNode(uuid=u, name=name, columns=("k",))
    for src, dst in [("1", "2"), ("2", "3"), ("3", "1"), ("3", "4"), ("4", "4")]:
        g.edges.append(TableEdge(src, dst, "derive", "complete", 1, 1))
    assert g.cycles() == [["db.d"], ["db.a", "db.b", "db.c"]]
    grid, n_columns, last_row, back = _layout(["1", "2", "3", "4"], {(a, b) for a, b in
                                                                      [("1", "2"), ("2", "3"), ("3", "1"), ("3", "4")]}, 4)
    assert back == {("3", "1")} and n_columns == 4 and last_row == 0
    assert [grid[u][0] for u in "1234"] == [0, 1, 2, 3]
    for columns in (False, True):
        data = Path(render_png(g, tmp_path / f"cycle-{columns}.png", columns=columns)).read_bytes()
        w, h = _png_size(data)
        assert w >= 600 and h >= 300 and data.endswith(b"IEND\xaeB`\x82")
