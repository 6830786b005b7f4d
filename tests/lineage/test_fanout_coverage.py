"""erase(follow_lineage=True) reaches every copy of the subject, and only the subject's rows.

Regressions of the second hostile pass over lineage: derived columns that map many people onto
one value, dropped intermediate tables, and plans over long chains.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from pyiceberg.catalog import Catalog

import iceberg_privacy as ip
from iceberg_privacy.lineage.evaluate import value_preserving
from iceberg_privacy.rights.keyed import SECRET_ENV

SUBJECT_ID, SUBJECT_MAIL = 7, "Ann@X.org"


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, "test-secret-0123456789abcdef")


def people(subject_id: int = SUBJECT_ID, subject_mail: str = SUBJECT_MAIL) -> pa.Table:
    # 17 and 27 share the subject's id modulo 10; bob's and dan's emails share its length and domain.
    return pa.table({"user_id": pa.array([subject_id, 8, 17, 27, 9], pa.int64()),
                     "email": [subject_mail, "bob@x.org", "Dan@X.org", "e@e", "c@z"],
                     "page": ["a", "b", "c", "d", "e"]})


@pytest.fixture
def events(catalog: Catalog) -> Catalog:
    catalog.create_table("db.events", schema=people().schema)
    ip.configure_identity(catalog.load_table("db.events"), ["user_id", "email"])
    ip.append(catalog.load_table("db.events"), people())
    return catalog


LOSSY = {"bucket": "user_id % 10", "len": "length(email)", "dom": "split_part(email, '@', 2)",
         "prefix": "substr(email, 1, 3)", "tens": "user_id // 10"}
KEPT = {"low": "lower(email)", "hashed": "sha256(CAST(user_id AS VARCHAR))", "shifted": "user_id + 1000"}


def test_lossy_expressions_are_no_identity_and_erase_nobody_else(events: Catalog) -> None:
    """A column computed by user_id % 10 or length(email) is shared by other people: erasing by the
    subject's mapped value removed their rows (17 and 27 with bucket 7, bob and dan with length 9)."""
    for name, expr in {**LOSSY, **KEPT}.items():
        report = ip.derive(events, f"SELECT {expr} AS v, page FROM db.events", f"db.{name}")
        assert ("v" in report.identity_columns) == (name in KEPT), name
    rep = ip.erase(events, [SUBJECT_ID, SUBJECT_MAIL], ["db.events"], follow_lineage=True)
    assert rep.lineage is not None
    for name in {**LOSSY, **KEPT}:
        pages = sorted(events.load_table(f"db.{name}").scan().to_arrow().column("page").to_pylist())
        # every other person's row is still there; the subject's row goes where its value can be matched
        assert pages == (["b", "c", "d", "e"] if name in KEPT else ["a", "b", "c", "d", "e"]), name
    for name in LOSSY:
        assert any(f"db.{name}.v" in w and "maps many people onto one value" in w for w in rep.lineage.warnings), name
    assert not any(f"db.{name}." in w for name in KEPT for w in rep.lineage.warnings)


@pytest.mark.parametrize(("expression", "kept"), [
    ("LOWER(email)", True), ("SHA256(CAST(person AS TEXT))", True), ("UPPER(TRIM(email))", True),
    ("email || '#'", True), ("user_id * 2", True), ("CAST(user_id AS TEXT)", True), ("HASH(user_id)", True),
    ("user_id % 10", False), ("LENGTH(email)", False), ("SUBSTRING(email, 1, 3)", False), ("ABS(user_id)", False),
    ("user_id * 0", False), ("email LIKE '%x'", False), ("CAST(ts AS DATE)", False), ("ROUND(user_id)", False),
    ("SOME_UDF(email)", False), ("not sql (", False),
])
def test_value_preserving(expression: str, kept: bool) -> None:
    assert value_preserving(expression) is kept


def test_spark_hash_is_not_followed_by_value() -> None:
    """Spark's HASH is a 32-bit murmur3 and DuckDB's HASH another function: the value fan-out would
    compute is not the one Spark wrote."""
    assert value_preserving("HASH(user_id)", dialect="spark") is False
    assert value_preserving("SHA2(CAST(user_id AS STRING), 256)", dialect="spark") is True


def test_dropped_intermediate_is_warned_not_reported_complete(events: Catalog) -> None:
    """events -> daily (lower) -> l2 (upper, dropped) -> l3: l3 holds ANN@X.ORG, which no value of the
    request maps to once l2's record is gone. The erasure said nothing (the note was only in the
    journal's paths), so a person left in l3 looked erased."""
    ip.derive(events, "SELECT lower(email) AS mail, page FROM db.events", "db.daily")
    ip.derive(events, "SELECT upper(mail) AS m2 FROM db.daily", "db.l2")
    ip.derive(events, "SELECT m2 AS m3 FROM db.l2", "db.l3")
    events.drop_table("db.l2")
    rep = ip.erase(events, [SUBJECT_MAIL], ["db.events"], follow_lineage=True)
    assert rep.lineage is not None
    left = events.load_table("db.l3").scan().to_arrow().column("m3").to_pylist()
    assert SUBJECT_MAIL.upper() in left  # what lineage cannot map stays ...
    warned = [w for w in rep.lineage.warnings if "db.l2 -> db.l3" in w and "db.l2 was dropped" in w]
    assert len(warned) == 1 and "rows of the subject remain in db.l3" in warned[0]  # ... and is said
    assert warned[0] in str(rep)


def test_derive_cannot_read_a_restricted_tables_files(events: Catalog) -> None:
    """allow_opaque=True with read_parquet() over db.events' data files wrote its rows into a
    marketing table with no source in the record: no purpose check, no fan-out. The DuckDB engine
    now reads catalog tables only."""
    ip.annotate("db.events", purposes=["analytics"], catalog=events)
    location = events.load_table("db.events").location().removeprefix("file://")
    for sql in (f"SELECT * FROM read_parquet('{location}/data/**/*.parquet')",
                "SELECT content AS c FROM read_text('/etc/hostname')"):
        with pytest.raises(ip.LineageError, match="catalog tables only"):
            ip.derive(events, sql, "db.ads", purpose="marketing", allow_opaque=True)
    with pytest.raises(Exception, match="no such table|NoSuchTable|does not exist"):
        events.load_table("db.ads")
    # the sources themselves are still read (and opaque SQL over them still runs when allowed)
    report = ip.derive(events, "SELECT page FROM db.events", "db.pages", purpose="analytics")
    assert report.rows == 5


def _chain_of_records(catalog: Catalog, length: int, runs: int) -> None:
    """db.c0 -> db.c1 -> ... each table written ``runs`` times by a derive computing lower(email):
    the records as derive leaves them, on empty snapshots (the plan reads metadata only)."""
    from iceberg_privacy.lineage.record import TRANSFORMATION, FieldRef, LineageRecord, SourceRef

    schema = pa.schema([("user_id", pa.int64()), ("email", pa.string())])
    prev = catalog.create_table("db.c0", schema=schema)
    ip.configure_identity(prev, ["user_id", "email"])
    for i in range(1, length):
        table = catalog.create_table(f"db.c{i}", schema=schema)
        with table.transaction() as tx:
            tx.set_properties({"privacy.identity.columns": "user_id,email"})
            for _ in range(runs):
                rec = LineageRecord(op="derive", engine="duckdb", status="complete",
                                    sources=[SourceRef.of(prev, prev.metadata.current_snapshot_id)],
                                    columns={"user_id": [FieldRef(0, "user_id")],
                                             "email": [FieldRef(0, "email", subtype=TRANSFORMATION,
                                                                expression="LOWER(email)")]})
                tx.update_snapshot(snapshot_properties=rec.summary()).fast_append().commit()
        prev = catalog.load_table(f"db.c{i}")


def test_fanout_evaluates_each_expression_once(catalog: Catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every run of a derive records its expression again; the plan evaluated it once per column edge
    (a fresh DuckDB connection each: 41 s for a 150-table chain of 3 runs). Counted, not timed."""
    from iceberg_privacy.lineage import fanout

    _chain_of_records(catalog, 12, 3)
    with catalog.load_table("db.c5").transaction() as tx:  # undeclared: warned once, not once per run
        tx.remove_properties("privacy.identity.columns")
    calls: list[str] = []
    real = fanout.map_values

    def counted(expression: str, *args: object, **kwargs: object) -> list[object]:
        calls.append(expression)
        return real(expression, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(fanout, "map_values", counted)
    connections: list[object] = []
    real_sandbox = fanout.sandbox

    def opened() -> object:
        connections.append(real_sandbox())
        return connections[-1]

    monkeypatch.setattr(fanout, "sandbox", opened)  # each DuckDB connection costs tens of ms: one per plan
    fan = fanout.plan_fanout(catalog, [catalog.load_table("db.c0")], [SUBJECT_ID, SUBJECT_MAIL])
    assert len(connections) == 1
    assert sorted(fan.tables) == sorted(f"db.c{i}" for i in range(1, 12) if i != 5)
    assert sum("db.c5.email carries an identity" in w for w in fan.warnings) == 1, fan.warnings
    assert all(SUBJECT_MAIL.lower() in fan.values[f"db.c{i}"] for i in range(1, 12) if i != 5), fan.values
    # Ann@X.org -> ann@x.org, then ann@x.org -> ann@x.org: two distinct evaluations for 33 edges
    assert len(calls) == 2, len(calls)


def test_show_and_problem_report_are_linear() -> None:
    """`lineage show` scanned every edge for every table, and the problem report every table for
    every dropped one: quadratic. 4,000 tables, 40,000 edges, 2,000 of them dropped: well under a
    second when linear (the quadratic versions took tens of seconds)."""
    import time

    from iceberg_privacy.cli.lineage import show_lines
    from iceberg_privacy.lineage.graph import LineageGraph, TableEdge, TableNode, _report

    g = LineageGraph()
    n = 4000
    for i in range(n):
        g.tables[f"u{i}"] = TableNode(f"u{i}", f"db.t{i}", exists=i % 2 == 0 or i > n - 10)
    for i in range(1, n):
        for k in range(10):
            g.edges.append(TableEdge(f"u{max(0, i - 1 - k)}", f"u{i}", "derive", "complete", k, None))
    t0 = time.perf_counter()
    lines = show_lines(g)
    _report(g)
    elapsed = time.perf_counter() - t0
    assert len(lines) == n and lines[1].startswith("db.t1  <- db.t0")
    assert sum("is no longer in the catalog" in p for p in g.problems) == sum(
        1 for t in g.tables.values() if not t.exists and g.edges_from(t.uuid))
    assert elapsed < 5, elapsed


def test_value_aggregates_of_expressions_are_mapped(events: Catalog) -> None:
    """max(lower(email)) holds the subject's lower-cased email, lower(max(email)) too: the record said
    AGGREGATION with no expression, so fan-out matched 'Ann@X.org' (nothing: the person stayed,
    no warning). max(user_id % 10) holds a bucket, shared with 17 and 27: matched with 7, it erased
    their groups."""
    ip.derive(events, "SELECT page, max(lower(email)) AS m FROM db.events GROUP BY page", "db.inner")
    ip.derive(events, "SELECT page, lower(max(email)) AS m FROM db.events GROUP BY page", "db.outer")
    ip.derive(events, "WITH c AS (SELECT lower(email) AS l, page FROM db.events) "
                      "SELECT page, max(l) OVER (PARTITION BY page) AS m FROM c", "db.window")
    ip.derive(events, "SELECT page, max(user_id % 10) AS m FROM db.events GROUP BY page", "db.bucket")
    ip.derive(events, "SELECT page, max(user_id) AS m FROM db.events GROUP BY page", "db.plain")
    rep = ip.erase(events, [SUBJECT_ID, SUBJECT_MAIL], ["db.events"], follow_lineage=True)
    assert rep.lineage is not None
    for name in ("inner", "outer", "window", "plain"):
        pages = sorted(events.load_table(f"db.{name}").scan().to_arrow().column("page").to_pylist())
        assert pages == ["b", "c", "d", "e"], (name, rep.lineage.warnings)
    pages = sorted(events.load_table("db.bucket").scan().to_arrow().column("page").to_pylist())
    assert pages == ["a", "b", "c", "d", "e"]  # 17's and 27's buckets are 7 too: nobody's row is erased
    assert any("db.bucket.m" in w and "maps many people onto one value" in w for w in rep.lineage.warnings)


def test_identity_cast_into_an_existing_tables_type(events: Catalog) -> None:
    """A derive into an existing table casts the result to its types: user_id lands as the string
    '7'. The request's 7 matched nothing there and the erasure said nothing."""
    events.create_table("db.ids", schema=pa.schema([("uid", pa.string()), ("page", pa.string())]))
    ip.derive(events, "SELECT user_id AS uid, page FROM db.events", "db.ids")
    assert "uid" in ip.lineage.graph(events).node("db.ids").annotations.identity
    ip.erase(events, [SUBJECT_ID], ["db.events"], follow_lineage=True)
    assert sorted(events.load_table("db.ids").scan().to_arrow().column("uid").to_pylist()) == ["17", "27", "8", "9"]


def test_lossy_expression_on_rest(rest_catalog: Catalog, lake_ns: str) -> None:
    """The same on SeaweedFS with the REST catalog (s3:// warehouse): the people sharing the subject's
    bucket keep their rows, the subject's bucketed row is reported. (No table is dropped here: the
    catalog is shared by the run, and fan-out follows every table derived from a dropped one.)"""
    cat, ns = rest_catalog, lake_ns
    subject_id, subject_mail = 57, "Rest@Only.example"
    cat.create_table(f"{ns}.events", schema=people().schema)
    ip.configure_identity(cat.load_table(f"{ns}.events"), ["user_id", "email"])
    ip.append(cat.load_table(f"{ns}.events"), people(subject_id, subject_mail))
    report = ip.derive(cat, f"SELECT user_id % 10 AS bucket, page FROM {ns}.events", f"{ns}.buckets")
    assert report.identity_columns == []
    rep = ip.erase(cat, [subject_id, subject_mail], [f"{ns}.events"], follow_lineage=True)
    assert rep.lineage is not None
    assert len(cat.load_table(f"{ns}.buckets").scan().to_arrow()) == 5  # 7, 17 and 27 share bucket 7 with 57
    assert any(f"{ns}.buckets.bucket" in w and "maps many people" in w for w in rep.lineage.warnings)
    assert sorted(cat.load_table(f"{ns}.events").scan().to_arrow().column("page").to_pylist()) == ["b", "c", "d", "e"]


@pytest.mark.spark
def test_spark_derive_refuses_time_travel(spark: Any, tmp_path: Path) -> None:
    """The rewrite of Spark SQL onto the pinned views replaced each table node, dropping its clauses:
    VERSION AS OF <old snapshot> silently read (and recorded) today's rows. Refused before Spark runs."""
    catalog = ip.connect(home=tmp_path / "home")
    catalog.create_namespace("db")
    catalog.create_table("db.events", schema=people().schema)
    ip.append(catalog.load_table("db.events"), people())
    old = catalog.load_table("db.events").metadata.current_snapshot_id
    ip.append(catalog.load_table("db.events"), people())
    for clause in (f"VERSION AS OF {old}", "TIMESTAMP AS OF '2020-01-01'"):
        with pytest.raises(ip.ConfigurationError, match="cannot time-travel"):
            ip.derive(catalog, f"SELECT page FROM db.events {clause}", "db.old", spark=spark)
    assert not catalog.table_exists("db.old")


def test_rewrite_onto_views_keeps_table_clauses() -> None:
    """TABLESAMPLE (and any other clause of a table reference) survives the rewrite onto the views."""
    from iceberg_privacy.lineage.derive import _rewrite_tables

    sql = _rewrite_tables("SELECT page FROM db.events TABLESAMPLE (3 ROWS)", ["db.events"], "spark")
    assert "TABLESAMPLE (3 ROWS)" in sql and "__ip_src_0" in sql and "db.events" not in sql
    sql = _rewrite_tables("SELECT e.page FROM db.events e JOIN db.events f ON e.page = f.page", ["db.events"], "spark")
    assert sql.count("__ip_src_0 AS") == 2 and "db.events" not in sql


def test_blank_override_reason_is_refused_and_a_real_one_read_back(events: Catalog) -> None:
    """override_purpose=' ' passed as a reason: the flow went ahead with a blank one recorded."""
    ip.annotate("db.events", purposes=["analytics"], catalog=events)
    for blank in (" ", "\t\n"):
        with pytest.raises(ip.PurposeViolationError, match="db.events -> db.ads"):
            ip.derive(events, "SELECT page FROM db.events", "db.ads", purpose="marketing", override_purpose=blank)
    assert not events.table_exists("db.ads")
    ip.derive(events, "SELECT page FROM db.events", "db.ads", purpose="marketing", override_purpose=" legal basis ")
    (edge,) = ip.lineage.graph(events).records_into("db.ads")
    assert edge.override == "legal basis"


def test_unloadable_downstream_table_is_warned_not_taken_for_dropped(events: Catalog) -> None:
    """mart.a's metadata cannot be read: its own lineage (events -> a) is unknown and the graph took it
    for a dropped table, so the erasure warned about nothing but a 'dropped' table while mart.a held
    the person."""
    import os

    ip.derive(events, "SELECT user_id AS uid, lower(email) AS mail FROM db.events", "db.a")
    ip.derive(events, "SELECT uid, mail FROM db.a", "db.b")
    location = events.load_table("db.a").metadata_location.removeprefix("file://")
    os.rename(location, location + ".away")
    try:
        graph = ip.lineage.graph(events)
        assert "db.a" in graph.unloadable
        assert any("db.a (uuid" in p and "cannot be loaded" in p for p in graph.problems)
        assert not any("db.a (uuid" in p and "dropped" in p for p in graph.problems)
        rep = ip.erase(events, [SUBJECT_ID, SUBJECT_MAIL], ["db.events"], follow_lineage=True)
        assert rep.lineage is not None
        assert any(w.startswith("db.a cannot be loaded") and "may be derived from db.events" in w
                   for w in rep.lineage.warnings), rep.lineage.warnings
        assert not any("db.a was dropped" in w for w in rep.lineage.warnings)
    finally:
        os.rename(location + ".away", location)
    assert SUBJECT_ID in events.load_table("db.a").scan().to_arrow().column("uid").to_pylist()  # what it warned of
    assert SUBJECT_ID not in events.load_table("db.b").scan().to_arrow().column("uid").to_pylist()


def test_records_naming_absent_columns_give_one_warning(events: Catalog) -> None:
    """A snapshot summary (anyone's to write) naming 2,000 columns the table does not have gave 2,000
    'carries an identity' warnings, all journaled."""
    import json

    uuid = str(events.load_table("db.events").metadata.table_uuid)
    record = {"v": 1, "op": "derive", "engine": "duckdb", "status": "complete",
              "sources": [{"table": "db.events", "uuid": uuid, "snapshot-id": None}],
              "columns": {f"c{i}": [{"s": 0, "c": "user_id", "t": "DIRECT", "st": "IDENTITY"}] for i in range(2000)}}
    table = events.create_table("db.flood", schema=people().schema)
    with table.transaction() as tx:
        tx.update_snapshot(snapshot_properties={"privacy.lineage": json.dumps(record)}).fast_append().commit()
    from iceberg_privacy.lineage.fanout import plan_fanout

    fan = plan_fanout(events, [events.load_table("db.events")], [SUBJECT_ID])
    flood = [w for w in fan.warnings if "db.flood" in w]
    assert len(flood) == 1 and "c0, c1, c2, c3, c4 and 1995 more" in flood[0], flood[:3]


def test_a_restricted_target_cannot_be_declared_for_another_purpose(events: Catalog) -> None:
    """db.kept allows only analytics (privacy.purposes) and declares no purpose: a derive from an
    unrestricted table with purpose='marketing' went through and labelled it as serving marketing,
    restricted rows and all."""
    events.create_table("db.kept", schema=people().schema)
    ip.append(events.load_table("db.kept"), people())
    ip.annotate("db.kept", purposes=["analytics"], catalog=events)
    events.create_table("db.open", schema=people().schema)
    ip.append(events.load_table("db.open"), people())
    for mode in ("append", "overwrite"):
        with pytest.raises(ip.PurposeViolationError, match=r"db.kept allows only purposes \['analytics'\]"):
            ip.derive(events, "SELECT * FROM db.open", "db.kept", purpose="marketing", mode=mode)  # type: ignore[arg-type]
    table = events.load_table("db.kept")
    assert "privacy.purpose" not in table.properties and len(table.scan().to_arrow()) == 5
    ip.derive(events, "SELECT * FROM db.open", "db.kept", purpose="analytics")  # an allowed purpose still works
    rep = ip.derive(events, "SELECT * FROM db.open", "db.other", purpose="marketing")  # and other targets
    assert rep.rows == 5


def test_a_table_joined_on_the_identity_with_identifiers_from_elsewhere_is_warned(events: Catalog) -> None:
    """mart.contact joins db.events on user_id and keeps only users.phone: erasing user 7 from db.events with
    follow_lineage left the subject's row (their phone) in mart.contact, and the report said nothing."""
    users = pa.table({"uid": pa.array([SUBJECT_ID, 8], pa.int64()), "phone": ["555-7", "555-8"]})
    events.create_table("db.users", schema=users.schema)
    ip.configure_identity(events.load_table("db.users"), ["uid", "phone"])
    ip.append(events.load_table("db.users"), users)
    ip.derive(events, "SELECT e.page, u.phone FROM db.events e JOIN db.users u ON e.user_id = u.uid", "mart.contact")
    report = ip.erase(events, [SUBJECT_ID], ["db.events"], follow_lineage=True)
    assert report.lineage is not None and "mart.contact" not in report.tables
    joined = [w for w in report.lineage.warnings if w.startswith("db.events.user_id -> mart.contact (join)")]
    assert joined and "phone" in joined[0] and "remain" in joined[0]
    # the advice works: with the table the phone came from, the person's phone is linked and erased there
    again = ip.erase(events, [SUBJECT_ID], ["db.events", "db.users"], follow_lineage=True)
    assert again.tables["mart.contact"].rows_removed == 1
    assert again.lineage is not None and not [w for w in again.lineage.warnings if "(join)" in w]
    assert events.load_table("mart.contact").scan().to_arrow()["phone"].to_pylist() == ["555-8"]


def test_a_column_reached_with_no_mapped_value_is_matched_with_the_request_values(catalog: Catalog) -> None:
    """Regression: lag(user_id) (or unnest, or a CASE of two expressions) records no expression, so no value is
    mapped into that column; next to a column with a mapped value (lower(email)) it was matched with nothing, and
    the rows holding the subject's id there stayed. Alone in its table it was matched with the request's values."""
    ids = [SUBJECT_ID if i % 4 == 0 else 100 + i for i in range(12)]
    data = pa.table({"user_id": pa.array(ids, pa.int64()), "email": [f"E{u}@x" for u in ids], "ts": list(range(12))})
    catalog.create_table("db.timeline", schema=data.schema)
    ip.configure_identity(catalog.load_table("db.timeline"), ["user_id", "email"])
    ip.append(catalog.load_table("db.timeline"), data)
    for name, extra in {"with_mail": ", lower(email) AS mail", "alone": ""}.items():
        ip.derive(catalog, f"SELECT lag(user_id) OVER (ORDER BY ts) AS prev_user{extra} FROM db.timeline", f"db.{name}")
    report = ip.erase(catalog, [SUBJECT_ID, f"E{SUBJECT_ID}@x"], ["db.timeline"], follow_lineage=True)
    assert {"db.with_mail", "db.alone"} <= set(report.tables)
    for name in ("with_mail", "alone"):
        left = catalog.load_table(f"db.{name}").scan().to_arrow().to_pylist()
        assert [r for r in left if r["prev_user"] == SUBJECT_ID] == [], name
        assert all(r.get("mail") != f"e{SUBJECT_ID}@x" for r in left), name
    # the subject's own 3 rows (through mail) and the 3 rows after them (prev_user); everyone else stays
    assert catalog.load_table("db.with_mail").scan().to_arrow().num_rows == 6


def test_union_branches_transforming_the_identity_differently_are_each_erased(catalog: Catalog) -> None:
    """Regression: SELECT lower(email) FROM a UNION ALL SELECT email FROM b (or upper() in one branch, lower() in
    the other) was recorded as a TRANSFORMATION without expression: fan-out warned, and the lower-cased rows of
    the subject stayed in the derived table."""
    for n in ("a", "b"):
        ids = [SUBJECT_ID if i % 4 == 0 else 100 + i for i in range(8)]
        data = pa.table({"user_id": pa.array(ids, pa.int64()), "email": [f"E{u}@x" for u in ids]})
        catalog.create_table(f"db.{n}", schema=data.schema)
        ip.configure_identity(catalog.load_table(f"db.{n}"), ["user_id", "email"])
        ip.append(catalog.load_table(f"db.{n}"), data)
    queries = {"u1": "SELECT lower(email) AS m FROM db.a UNION ALL SELECT email FROM db.b",
               "u2": "SELECT email AS m FROM db.a UNION ALL SELECT lower(email) FROM db.a",
               "u3": "SELECT user_id + 1000 AS k FROM db.a UNION ALL SELECT user_id FROM db.b",
               "u4": "SELECT m FROM (SELECT upper(email) AS m FROM db.a UNION ALL SELECT lower(email) FROM db.b)"}
    for name, sql in queries.items():
        ip.derive(catalog, sql, f"db.{name}")
    report = ip.erase(catalog, [SUBJECT_ID, f"E{SUBJECT_ID}@x"], ["db.a", "db.b"], follow_lineage=True)
    assert report.lineage is not None and report.lineage.warnings == []
    subject = {SUBJECT_ID, SUBJECT_ID + 1000, f"E{SUBJECT_ID}@x", f"e{SUBJECT_ID}@x", f"E{SUBJECT_ID}@X"}
    for name in queries:
        left = catalog.load_table(f"db.{name}").scan().to_arrow().to_pylist()
        assert [r for r in left if set(r.values()) & subject] == [], name
        assert len(left) == 12, name  # 2 rows of the subject per branch; everyone else stays


def test_case_results_transforming_the_identity_differently_are_each_erased(events: Catalog) -> None:
    """Regression: CASE WHEN <consent> THEN email ELSE sha256(email) END (a pseudonymisation pattern) was a
    TRANSFORMATION without expression: fan-out warned and matched the raw email only; the subject's hashed row
    stayed. So did if(c, upper(x), lower(x))'s mapped rows."""
    ip.derive(events, "SELECT CASE WHEN page = 'b' THEN email ELSE sha256(email) END AS contact, page FROM db.events",
              "db.pseudo")
    ip.derive(events, "SELECT if(page = 'a', upper(email), lower(email)) AS contact, page FROM db.events "
                      "UNION ALL SELECT if(page = 'a', lower(email), upper(email)), page FROM db.events", "db.cased")
    report = ip.erase(events, [SUBJECT_ID, SUBJECT_MAIL], ["db.events"], follow_lineage=True)
    assert report.lineage is not None and report.lineage.warnings == []
    for name, rows_left in {"db.pseudo": 4, "db.cased": 8}.items():
        left = events.load_table(name).scan().to_arrow().to_pylist()
        assert [r for r in left if r["page"] == "a"] == [], (name, left)  # page 'a' is the subject's row
        assert len(left) == rows_left, name


def test_window_value_function_of_a_transformed_identity_is_erased(events: Catalog) -> None:
    """Regression: lag(lower(email)) OVER (ORDER BY page) was recorded without expression: fan-out warned, and the
    row holding the subject's lower-cased email (the row after the subject's) stayed."""
    ip.derive(events, "SELECT lag(lower(email)) OVER (ORDER BY page) AS prev_mail, page FROM db.events", "db.prev")
    assert ip.lineage.Annotations.of(events.load_table("db.prev").properties).identity == ("prev_mail",)
    report = ip.erase(events, [SUBJECT_ID, SUBJECT_MAIL], ["db.events"], follow_lineage=True)
    assert report.lineage is not None and report.lineage.warnings == []
    left = events.load_table("db.prev").scan().to_arrow().to_pylist()
    assert SUBJECT_MAIL.lower() not in [r["prev_mail"] for r in left]
    assert sorted(r["page"] for r in left) == ["a", "c", "d", "e"]  # b held the subject's; a is the subject's own
    # row, but holds no value of theirs here (prev_mail is NULL): it stays, as everyone else's


@pytest.mark.parametrize("subject", [7, 1007])
def test_a_value_another_person_holds_in_a_column_filled_two_ways_is_not_erased(catalog: Catalog,
                                                                                subject: int) -> None:
    """advV: SELECT user_id AS k FROM a UNION ALL SELECT user_id + 1000 FROM a records both ways, and fan-out
    matched k with the subject's 7 and 1007: but 1007 is also person 1007's own row (first branch); erasing 1007
    matched person 7's row of the second branch too. The same with email next to lower(email). Such a value is
    withheld (another person's row may hold it) with a warning; the subject's unambiguous rows are erased."""
    data = pa.table({"user_id": pa.array([7, 1007, 8], pa.int64()), "email": ["Ann@x", "ann@x", "bob@x"],
                     "page": ["p7", "p1007", "p8"]})
    catalog.create_table("db.a", schema=data.schema)
    ip.configure_identity(catalog.load_table("db.a"), ["user_id", "email"])
    ip.append(catalog.load_table("db.a"), data)
    ip.derive(catalog, "SELECT user_id AS k, page FROM db.a UNION ALL SELECT user_id + 1000, page || '+' FROM db.a",
              "db.u")
    ip.derive(catalog, "SELECT email AS m, page FROM db.a UNION ALL SELECT lower(email), page || '+' FROM db.a",
              "db.v")
    mail = {7: "Ann@x", 1007: "ann@x"}[subject]
    report = ip.erase(catalog, [subject, mail], ["db.a"], follow_lineage=True)
    assert report.lineage is not None
    assert sum("in several ways" in w for w in report.lineage.warnings) == 2, report.lineage.warnings
    every = {"p7", "p7+", "p1007", "p1007+", "p8", "p8+"}
    # erased: the subject's rows whose value nobody else's row can hold (7: 7 and Ann@x; 1007: 2007; its ann@x is
    # also lower('Ann@x'), person 7's)
    erased = {(7, "u"): {"p7"}, (7, "v"): {"p7"}, (1007, "u"): {"p1007+"}, (1007, "v"): set()}
    for name in ("u", "v"):
        pages = [r["page"] for r in catalog.load_table(f"db.{name}").scan().to_arrow().to_pylist()]
        assert sorted(pages) == sorted(every - erased[(subject, name)]), name
