"""derive(): SQL over Iceberg tables into Iceberg tables, with lineage, annotations and purposes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from pyiceberg.catalog import Catalog

import iceberg_privacy as ip
from iceberg_privacy import lineage
from iceberg_privacy.config import bloom_columns
from iceberg_privacy.errors import (
    LineageError,
    MissingSourceError,
    OpaqueSqlError,
    PurposeViolationError,
    SchemaMismatchError,
)
from iceberg_privacy.lineage.record import HISTORY_PROPERTY, SUMMARY_KEY, LineageRecord

EVENTS = pa.table({
    "user_id": pa.array([1, 2, 3, 1, 2], pa.int64()),
    "email": ["Ann@X.org", "bob@y.org", "cy@z.org", "Ann@X.org", "bob@y.org"],
    "country": ["fr", "de", "fr", "fr", "de"],
    "religion": ["a", "b", "a", "a", "b"],
    "amount": [1.0, 2.0, 3.0, 4.0, 5.0],
})
USERS = pa.table({"id": pa.array([1, 2, 3], pa.int64()), "segment": ["x", "y", "x"]})


def make(catalog: Catalog, name: str, data: pa.Table, identity: list[str] | None = None) -> None:
    ns = name.split(".")[0]
    if (ns,) not in catalog.list_namespaces():
        catalog.create_namespace(ns)
    table = catalog.create_table(name, schema=data.schema)
    if identity:
        ip.configure_identity(table, identity)
    ip.append(catalog.load_table(name), data)


@pytest.fixture
def lake(catalog: Catalog) -> Catalog:
    make(catalog, "db.events", EVENTS, ["user_id", "email"])
    ip.annotate(catalog.load_table("db.events"), sensitive={"religion": ["religion"]})
    make(catalog, "db.users", USERS, ["id"])
    return catalog


def last_record(catalog: Catalog, name: str) -> LineageRecord:
    snap = catalog.load_table(name).current_snapshot()
    assert snap is not None and snap.summary is not None
    return LineageRecord.parse(snap.summary.additional_properties[SUMMARY_KEY])


def test_plain_append_records_external_source(lake: Catalog) -> None:
    rec = last_record(lake, "db.events")
    assert (rec.op, rec.engine, rec.status, rec.sources) == ("append", "pyarrow", "external", [])


def test_derive_writes_result_and_column_lineage(lake: Catalog) -> None:
    sql = """
        WITH fr AS (SELECT user_id AS uid, lower(email) AS mail, religion, amount FROM db.events WHERE country = 'fr')
        SELECT f.uid, f.mail, f.religion AS belief, u.segment, sum(f.amount) AS total, count(*) AS n
        FROM fr f JOIN db.users u ON u.id = f.uid
        GROUP BY f.uid, f.mail, f.religion, u.segment
    """
    rep = ip.derive(lake, sql, "mart.by_user")
    assert rep.created and rep.status == "complete" and rep.sources == ["db.events", "db.users"]
    out = lake.load_table("mart.by_user").scan().to_arrow().sort_by("uid")
    assert out.column("uid").to_pylist() == [1, 3]
    assert out.column("mail").to_pylist() == ["ann@x.org", "cy@z.org"]
    assert out.column("total").to_pylist() == [5.0, 3.0]
    rec = last_record(lake, "mart.by_user")
    assert rec.op == "derive" and rec.engine == "duckdb"
    srcs = [s.table for s in rec.sources]
    ev = srcs.index("db.events")
    events = lake.load_table("db.events")
    assert rec.sources[ev].uuid == str(events.metadata.table_uuid)
    assert rec.sources[ev].snapshot_id == events.metadata.current_snapshot_id
    assert [(f.source, f.column, f.subtype) for f in rec.columns["uid"]] == [(ev, "user_id", "IDENTITY")]
    mail = rec.columns["mail"][0]
    assert (mail.column, mail.subtype, mail.masking) == ("email", "TRANSFORMATION", False)
    assert mail.expression is not None and "email" in mail.expression.lower()
    assert all(f.subtype == "AGGREGATION" and f.masking for f in rec.columns["total"])
    indirect = {(srcs[f.source], f.column, f.subtype) for f in rec.indirect}
    assert ("db.events", "country", "FILTER") in indirect
    assert ("db.users", "id", "JOIN") in indirect
    # The literal of the WHERE clause is not stored (it could be a person's id).
    assert rec.sql is not None and "'fr'" not in rec.sql
    # Annotations followed the data: identity columns and the sensitive category.
    table = lake.load_table("mart.by_user")
    ann = lineage.Annotations.of(table.properties)
    assert set(ann.identity) == {"uid", "mail"}
    assert ann.categories == {"belief": ("religion",)}
    assert {c.name for c in bloom_columns(table.schema(), table.properties)} >= {"uid", "mail"}


def test_aggregated_identity_is_not_an_identity_downstream(lake: Catalog) -> None:
    ip.derive(lake, "SELECT country, count(DISTINCT user_id) AS users, max(user_id) AS top FROM db.events "
                    "GROUP BY country", "mart.by_country")
    ann = lineage.Annotations.of(lake.load_table("mart.by_country").properties)
    assert ann.identity == ("top",)  # count(distinct) aggregates the id away; max() returns a person's id


def test_existing_target_append_and_overwrite(lake: Catalog) -> None:
    ip.derive(lake, "SELECT user_id, amount FROM db.events", "mart.copy")
    ip.derive(lake, "SELECT user_id, amount FROM db.events WHERE user_id = 1", "mart.copy")
    assert lake.load_table("mart.copy").scan().to_arrow().num_rows == 7
    ip.derive(lake, "SELECT user_id, amount FROM db.events WHERE user_id = 2", "mart.copy", mode="overwrite")
    assert lake.load_table("mart.copy").scan().to_arrow().column("user_id").to_pylist() == [2, 2]
    # DuckDB's sum(BIGINT) is a HUGEINT (decimal(38,0)): cast to the existing long column.
    ip.derive(lake, "SELECT amount, sum(user_id) AS user_id FROM db.events GROUP BY amount", "mart.copy")
    assert lake.load_table("mart.copy").scan().to_arrow().num_rows == 7
    with pytest.raises(SchemaMismatchError, match="alias and select"):
        ip.derive(lake, "SELECT user_id FROM db.events", "mart.copy")


def test_missing_source_is_refused_and_nothing_written(lake: Catalog) -> None:
    with pytest.raises(MissingSourceError, match="db.nope"):
        ip.derive(lake, "SELECT * FROM db.nope", "mart.x")
    assert not lake.table_exists("mart.x")


def test_opaque_sql_refused_unless_allowed(lake: Catalog) -> None:
    # DuckDB runs PIVOT statements; sqlglot's lineage analyses only queries, so the lineage is opaque.
    sql = "PIVOT db.events ON country USING sum(amount) GROUP BY user_id, email"
    with pytest.raises(OpaqueSqlError, match="allow_opaque"):
        ip.derive(lake, sql, "mart.o")
    with pytest.raises(OpaqueSqlError, match="allow_opaque"):
        ip.derive(lake, "SELECT user_id, email FROM db.events; SELECT 1", "mart.o")
    assert not lake.table_exists("mart.o")
    rep = ip.derive(lake, sql, "mart.o", allow_opaque=True)
    assert rep.status == "opaque"
    rec = last_record(lake, "mart.o")
    assert rec.status == "opaque" and rec.reason and rec.columns == {}
    assert [s.table for s in rec.sources] == ["db.events"]  # known from the tokens
    # Cautious: same-named identity columns stay identity columns.
    assert set(lineage.Annotations.of(lake.load_table("mart.o").properties).identity) == {"user_id", "email"}
    assert lake.load_table("mart.o").scan().to_arrow().num_rows == 3
    g = lineage.graph(lake)
    assert any("mart.o" in p and "opaque" in p for p in g.problems)


def test_purpose_limitation_refuses_names_flow_and_override_is_recorded(lake: Catalog) -> None:
    ip.annotate(lake.load_table("db.events"), purposes=["billing", "fraud"])
    with pytest.raises(PurposeViolationError, match=r"db\.events -> mart\.ads.*'marketing'"):
        ip.derive(lake, "SELECT user_id FROM db.events", "mart.ads", purpose="marketing")
    assert not lake.table_exists("mart.ads")
    with pytest.raises(PurposeViolationError, match="declares no purpose"):
        ip.derive(lake, "SELECT user_id FROM db.events", "mart.ads")
    rep = ip.derive(lake, "SELECT user_id FROM db.events", "mart.fraud", purpose="fraud")
    ann = lineage.Annotations.of(lake.load_table("mart.fraud").properties)
    assert (ann.purpose, ann.purposes) == ("fraud", ("billing", "fraud"))
    assert rep.override is None
    # Restrictions travel: a table derived from mart.fraud is limited the same way.
    with pytest.raises(PurposeViolationError, match="mart.fraud -> mart.ads2"):
        ip.derive(lake, "SELECT user_id FROM mart.fraud", "mart.ads2", purpose="marketing")
    rep = ip.derive(lake, "SELECT user_id FROM db.events", "mart.ads", purpose="marketing",
                    override_purpose="DPO ticket 42")
    with pytest.raises(ip.ConfigurationError, match="serves purpose 'marketing'"):
        ip.derive(lake, "SELECT user_id FROM db.events", "mart.ads", purpose="fraud")
    rec = last_record(lake, "mart.ads")
    assert rec.override is not None and rec.override["reason"] == "DPO ticket 42"
    assert any("db.events -> mart.ads" in f for f in rec.override["flows"])
    g = lineage.graph(lake)
    assert [e.override for e in g.records_into("mart.ads")] == ["DPO ticket 42"]


def test_graph_leaves_out_the_library_bookkeeping(lake: Catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ICEBERG_PRIVACY_SECRET", "test-secret-0123456789abcdef")
    ip.erase(lake, [1], ["db.events"])  # writes the request journal and the forget list
    names = set(lineage.graph(lake).names())
    assert {"db.events", "db.users"} <= names and not any("_privacy" in n for n in names)


def test_graph_upstream_downstream_table_and_column(lake: Catalog) -> None:
    ip.derive(lake, "SELECT user_id AS uid, country FROM db.events WHERE amount > 1", "mart.a")
    ip.derive(lake, "SELECT uid AS person, count(*) AS n FROM mart.a GROUP BY uid", "mart.b")
    g = lineage.graph(lake)
    assert g.downstream("db.events") == ["mart.a", "mart.b"]
    assert g.upstream("mart.b") == ["mart.a", "db.events"]
    assert g.downstream("db.events.user_id", indirect=False) == ["mart.a.uid", "mart.b.person"]
    assert "mart.a" in g.downstream("db.events.amount")  # filtered the rows of mart.a
    assert g.downstream("db.events.amount", indirect=False) == []
    assert lineage.upstream(g, "mart.b.person", indirect=False) == ["mart.a.uid", "db.events.user_id"]
    assert lineage.downstream(lake, "db.events.user_id", indirect=False) == ["mart.a.uid", "mart.b.person"]
    assert not g.problems
    text = str(g)  # a few lines, not the dataclass dump
    assert text.startswith("lineage graph: ") and "column flow(s)" in text and len(text.splitlines()) == 1
    # a typo names the whole ref and the known tables ("no table 'db'" pointed the wrong way)
    for typo in ("db.nope", "nope", "mart.zz.uid"):
        with pytest.raises(LineageError, match=rf"'{typo}' is neither a table nor table.column.*db.events"):
            g.downstream(typo)
    with pytest.raises(LineageError, match="mart.a has no column 'nope'"):
        g.downstream("mart.a.nope")


def test_dropped_source_and_cycle_reported(lake: Catalog) -> None:
    ip.derive(lake, "SELECT id, segment FROM db.users", "mart.u")
    ip.derive(lake, "SELECT id, segment FROM mart.u", "mart.v")
    ip.derive(lake, "SELECT id, segment FROM mart.v", "mart.u")  # mart.u now also reads its own descendant
    g = lineage.graph(lake)
    assert ["mart.u", "mart.v"] in g.cycles()
    assert any("cycle" in p for p in g.problems)
    assert g.downstream("mart.u") == ["mart.v", "mart.u"]  # terminates
    lake.drop_table("db.users")
    g = lineage.graph(lake)
    node = g.node("db.users")
    assert not node.exists
    assert any("db.users" in p and "no longer in the catalog" in p for p in g.problems)
    assert g.downstream("db.users") == ["mart.u", "mart.v"]


def test_lineage_survives_snapshot_expiry(lake: Catalog) -> None:
    ip.derive(lake, "SELECT user_id, amount FROM db.events", "mart.e")
    ip.append(lake.load_table("mart.e"), pa.table({"user_id": pa.array([9], pa.int64()), "amount": [1.0]}))
    table = lake.load_table("mart.e")
    old = [s.snapshot_id for s in table.metadata.snapshots if s.snapshot_id != table.metadata.current_snapshot_id]
    ip.expire_snapshots(table, snapshot_ids=old)
    table = lake.load_table("mart.e")
    assert len(table.metadata.snapshots) == 1
    kept = json.loads(table.properties[HISTORY_PROPERTY])
    assert [d["op"] for d in kept] == ["derive"]
    g = lineage.graph(lake)
    assert g.upstream("mart.e") == ["db.events"]
    assert g.downstream("db.events.user_id", indirect=False) == ["mart.e.user_id"]


def test_unreadable_lineage_record_is_reported_not_fatal(lake: Catalog) -> None:
    table = lake.load_table("db.users")
    table.append(USERS, snapshot_properties={SUMMARY_KEY: "{not json"})
    g = lineage.graph(lake)
    assert any("db.users" in p and "unreadable" in p for p in g.problems)


def test_empty_result_and_empty_source_still_record_the_flow(lake: Catalog) -> None:
    lake.create_table("db.empty", schema=USERS.schema)  # no snapshot at all
    rep = ip.derive(lake, "SELECT e.user_id, x.segment FROM db.events e JOIN db.empty x ON x.id = e.user_id",
                    "mart.none")
    assert rep.rows == 0 and rep.snapshot_id is not None
    rec = last_record(lake, "mart.none")
    assert [(s.table, s.snapshot_id) for s in rec.sources][1] == ("db.empty", None)
    assert lineage.graph(lake).upstream("mart.none") == ["db.empty", "db.events"]


def test_erasure_records_itself_as_source_without_making_a_cycle(lake: Catalog,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ICEBERG_PRIVACY_SECRET", "test-secret-0123456789abcdef")
    ip.derive(lake, "SELECT user_id, amount FROM db.events", "mart.e")
    before = lake.load_table("db.events").metadata.current_snapshot_id
    ip.erase(lake, [1], ["db.events"])
    rec = last_record(lake, "db.events")
    events = lake.load_table("db.events")
    assert (rec.op, rec.status) == ("erasure", "maintenance")
    assert [(s.uuid, s.snapshot_id) for s in rec.sources] == [(str(events.metadata.table_uuid), before)]
    g = lineage.graph(lake)
    assert g.cycles() == [] and not g.problems
    assert g.upstream("db.events") == [] and g.downstream("db.events") == ["mart.e"]


@pytest.mark.parametrize("ref", ["Sales.Orders", '"Sales"."Orders"', "SALES.orders"])
def test_mixed_case_source_names_resolve(catalog: Catalog, ref: str) -> None:
    """SQL engines fold identifiers (quoted ones too); Iceberg names are case-sensitive. A source named
    ``Sales.Orders`` used to be a MissingSourceError whatever the SQL said."""
    make(catalog, "Sales.Orders", USERS, ["id"])
    report = ip.derive(catalog, f"SELECT id AS user_id, segment FROM {ref}", "mart.seg")
    assert report.rows == 3 and report.sources == ["Sales.Orders"]
    rec = LineageRecord.parse(catalog.load_table("mart.seg").current_snapshot().summary[SUMMARY_KEY])
    assert [s.table for s in rec.sources] == ["Sales.Orders"]
    assert lineage.graph(catalog).downstream("Sales.Orders.id") == ["mart.seg.user_id"]
    make(catalog, "Sales.ORDERS", USERS, ["id"])  # now two tables fold to one name: refused, clearly
    with pytest.raises(MissingSourceError, match="letter cases"):
        ip.derive(catalog, f"SELECT id FROM {ref}", "mart.seg2")


def test_a_derive_whose_namespace_another_process_creates_meanwhile_writes(lake: Catalog, tmp_path: Path) -> None:
    """Regression: derive() created a missing target namespace with pyiceberg's create_namespace_if_not_exists; a
    SQL catalog answers the loser of a race for it with the database's unique-constraint error (sqlalchemy's
    IntegrityError), which that lets through. Replayed with a second real catalog creating it after our check."""
    theirs = ip.connect(home=tmp_path / "home")
    real_exists = lake.namespace_exists
    raced: list[bool] = []

    def exists_then_lose(namespace: Any) -> bool:
        found = real_exists(namespace)
        if not found and not raced:
            raced.append(True)
            theirs.create_namespace(namespace)
        return found

    lake.namespace_exists = exists_then_lose  # type: ignore[method-assign]
    ip.derive(lake, "SELECT user_id, amount FROM db.events", "fresh.copy")
    assert raced and lake.load_table("fresh.copy").scan().to_arrow().num_rows == EVENTS.num_rows


@pytest.mark.parametrize("sql", ["SELECT NULL AS x, user_id FROM db.events", "SELECT INTERVAL 1 DAY AS x FROM db.events",
                                 "SELECT now()::TIMESTAMP_NS AS x FROM db.events",
                                 "SELECT 18446744073709551615::UBIGINT AS x FROM db.events"])
def test_a_failed_derive_into_a_new_table_leaves_no_table_or_namespace(lake: Catalog, sql: str) -> None:
    """Regression: a result type Iceberg cannot store ended in pyiceberg's bare ValueError /
    UnsupportedPyArrowTypeException and left the new namespace behind; a value the new table's type cannot hold
    (a UBIGINT above 2^63, into a long column) left the empty table and its namespace."""
    with pytest.raises(SchemaMismatchError, match="CAST|cast"):
        ip.derive(lake, sql, "fresh.t")
    assert ("fresh",) not in lake.list_namespaces()
    lake.create_namespace("mart")  # a namespace that was there before is kept
    with pytest.raises(SchemaMismatchError):
        ip.derive(lake, sql, "mart.t")
    assert ("mart",) in lake.list_namespaces() and lake.list_tables("mart") == []


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"target": "mart..x"}, "not a table name"), ({"target": ".x"}, "not a table name"),
    ({"target": "mart.x."}, "not a table name"), ({"target": "  "}, "not a table name"),
    ({"target": "x"}, "qualified with its namespace"),
    ({"sql": 5}, "sql must be the SQL text"), ({"sql": b"SELECT 1 AS a"}, "sql must be the SQL text"),
    ({"purpose": 5}, "purpose must be a str"), ({"override_purpose": ["r"]}, "override_purpose must be a str"),
    ({"bloom": 5}, "bloom must name columns"),
])
def test_wrong_arguments_are_configuration_errors_and_write_nothing(lake: Catalog, kwargs: dict[str, Any],
                                                                    match: str) -> None:
    """Regression: '.x', 'mart..x' and '  ' as target were pyiceberg's bare ValueError ('mart.x.' even became
    "a column has a type Iceberg cannot store"); a non-str sql or purpose and bloom=5 were AttributeError/TypeError."""
    args: dict[str, Any] = {"sql": "SELECT user_id FROM db.events", "target": "mart.x", **kwargs}
    with pytest.raises(ip.ConfigurationError, match=match):
        ip.derive(lake, args.pop("sql"), args.pop("target"), **args)
    assert ("mart",) not in lake.list_namespaces()


@pytest.mark.parametrize("kwargs", [{"purposes": 5}, {"purposes": ["analytics", 5]}, {"purposes": b"a"},
                                    {"sensitive": {"religion": [5]}}, {"sensitive": {"religion": 5}},
                                    {"purposes": ["ok"], "sensitive": {"religion": [None]}}])
def test_annotate_with_labels_that_are_not_strings_is_a_configuration_error(lake: Catalog,
                                                                             kwargs: dict[str, Any]) -> None:
    """Regression: purposes=5, purposes=['a', 5] and sensitive={'c': [5]} were bare TypeErrors from str.join."""
    before = dict(lake.load_table("db.events").properties)
    with pytest.raises(ip.ConfigurationError, match="labels as a str or a list of str"):
        ip.annotate(lake.load_table("db.events"), **kwargs)
    assert dict(lake.load_table("db.events").properties) == before  # nothing was changed


def test_derive_neither_reads_nor_writes_the_library_bookkeeping(lake: Catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: derive(..., "db.privacy_forget", mode="overwrite") emptied the forget list (the erased subject
    was appended again afterwards), the request journal could be overwritten the same way, and any of them (the
    queue's encrypted identifiers too) could be copied into a data table out of reach of every purge."""
    monkeypatch.setenv("ICEBERG_PRIVACY_SECRET", "test-secret-0123456789abcdef")
    ip.erase(lake, [2], ["db.events"])
    forget = "db.privacy_forget"
    rows = lake.load_table(forget).scan().to_arrow().num_rows
    assert rows > 0
    for sql, target in [(f"SELECT * FROM {forget} WHERE false", forget),
                        ("SELECT * FROM privacy_requests.requests WHERE false", "privacy_requests.requests"),
                        (f"SELECT * FROM {forget}", "mart.copy"),
                        ("SELECT user_id FROM db.events", forget)]:
        with pytest.raises(ip.ConfigurationError, match="library's own"):
            ip.derive(lake, sql, target, mode="overwrite")
    assert lake.load_table(forget).scan().to_arrow().num_rows == rows
    assert not lake.table_exists("mart.copy")
    report = ip.append(lake.load_table("db.events"), EVENTS.slice(1, 1))  # user 2 is still forgotten
    assert report.dropped_rows == 1


@pytest.mark.parametrize("name", ['tä"ble', """b" AS SELECT 1; SELECT error('injected'); CREATE VIEW "z"""])
def test_a_source_name_holding_quotes_is_one_identifier_not_sql(catalog: Catalog, name: str) -> None:
    """Regression: DuckDB views were created with the catalog's names pasted between double quotes, before file
    access was closed: a name holding '"' was a DuckDB ParserException, and a hostile one ran its own statements
    (a COPY ... TO 'file' wrote files) in the derive of whoever read the table."""
    table = catalog.create_table(("db", name), schema=pa.schema([("u", pa.string())]))
    ip.append(table, pa.table({"u": ["x"]}))
    quoted = '"db"."' + name.replace('"', '""') + '"'
    report = ip.derive(catalog, f"SELECT u FROM {quoted}", "mart.out", allow_opaque=True)
    assert report.rows == 1 and report.sources == [f"db.{name}"]
    assert catalog.load_table("mart.out").scan().to_arrow().to_pylist() == [{"u": "x"}]


def test_sources_named_with_spaces_and_quotes_get_complete_lineage(catalog: Catalog) -> None:
    """Regression: a source whose namespace or name needs quoting in SQL ("my ns"."tä""ble") was refused as opaque
    ('unknown table'): the analysis re-parsed the dotted name and dropped it."""
    catalog.create_namespace("my ns")
    table = catalog.create_table(("my ns", 'tä"ble'), schema=pa.schema([("user_id", pa.string())]))
    ip.configure_identity(table, ["user_id"])
    ip.append(catalog.load_table(("my ns", 'tä"ble')), pa.table({"user_id": ["ann"]}))
    report = ip.derive(catalog, 'SELECT upper(user_id) AS who FROM "my ns"."tä""ble"', "mart.who")
    assert report.status == "complete" and report.identity_columns == ["who"]
    assert lineage.graph(catalog).downstream('my ns.tä"ble.user_id', indirect=False) == ["mart.who.who"]


def test_an_unsigned_64_bit_result_is_refused_with_the_cast_to_write(lake: Catalog) -> None:
    """DuckDB's hash() is UBIGINT: the new table took long, the write failed on values above 2**63 - 1, and the
    error advised checking string_view columns. It names the column and the CAST, and leaves nothing behind."""
    with pytest.raises(SchemaMismatchError, match=r"hh are unsigned 64-bit.*CAST\(hash\(x\) AS VARCHAR\)"):
        # the top bit set: a value above 2**63 - 1 whatever the hash of these few ids is
        ip.derive(lake, "SELECT hash(user_id) | CAST(9223372036854775808 AS UBIGINT) AS hh FROM db.events",
                  "mart.hashed")
    assert ("mart",) not in lake.list_namespaces()
    report = ip.derive(lake, "SELECT CAST(hash(user_id) AS VARCHAR) AS hh FROM db.events", "mart.hashed")
    assert report.rows == 5 and report.identity_columns == ["hh"]


@pytest.mark.parametrize("sql", ["  ;", ";;", "-- only a comment"])
def test_sql_without_a_statement_is_a_lineage_error_with_allow_opaque(lake: Catalog, sql: str) -> None:
    """Regression: with allow_opaque=True, SQL that holds no statement (a lone ';', a comment) ended in a raw AttributeError ('NoneType' object has no attribute 'to_arrow_table')."""
    with pytest.raises(LineageError, match="returns no result"):
        ip.derive(lake, sql, "mart.none", allow_opaque=True)
    assert not lake.table_exists("mart.none")


def test_a_source_named_with_the_catalog_in_front_says_how_to_name_it(lake: Catalog) -> None:
    """`SELECT ... FROM spark_catalog.db.events` (a Spark habit) was refused as 'not a table of the catalog'
    without a word on what to write instead."""
    with pytest.raises(MissingSourceError, match=r"name it db\.events: namespace\.table, without the catalog"):
        ip.derive(lake, "SELECT user_id FROM spark_catalog.db.events", "mart.x")
    assert not lake.table_exists("mart.x")
