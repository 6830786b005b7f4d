"""Column lineage from SQL (iceberg_privacy.lineage.sql): exact FieldRefs for realistic queries."""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iceberg_privacy.errors import LineageError
from iceberg_privacy.lineage.evaluate import map_values
from iceberg_privacy.lineage.record import FieldRef
from iceberg_privacy.lineage.sql import SqlLineage, analyze
from iceberg_privacy.lineage.sql_tables import normalize_sql, referenced_tables

SCHEMAS = {
    "db.events": {"event_id": "BIGINT", "user_id": "BIGINT", "email": "VARCHAR", "ts": "TIMESTAMP",
                  "amount": "DOUBLE", "country": "VARCHAR"},
    "db.users": {"user_id": "BIGINT", "name": "VARCHAR", "age": "INTEGER", "country": "VARCHAR"},
    "db.orders": {"order_id": "BIGINT", "user_id": "BIGINT", "total": "DOUBLE", "status": "VARCHAR"},
}


def D(src: int, col: str, sub: str = "IDENTITY", masking: bool = False, expr: str | None = None,
      collects: bool = False) -> FieldRef:
    return FieldRef(src, col, "DIRECT", sub, masking, expr, collects)


def I(src: int, col: str, sub: str) -> FieldRef:  # noqa: E743 - mirrors D
    return FieldRef(src, col, "INDIRECT", sub, False, None)


def ok(sql: str, schemas=SCHEMAS, dialect: str = "duckdb") -> SqlLineage:
    res = analyze(sql, schemas, dialect)
    assert res.opaque is None, res.opaque
    assert list(res.columns) == res.output_columns
    for ref in [f for fs in res.columns.values() for f in fs] + res.indirect:
        assert 0 <= ref.source < len(res.sources)
    return res


# ---- direct value flow ---------------------------------------------------------------------------

def test_plain_renames():
    res = ok("SELECT e.user_id AS uid, email, ts AS event_time FROM db.events AS e")
    assert res.sources == ["db.events"]
    assert res.output_columns == ["uid", "email", "event_time"]
    assert res.columns == {"uid": [D(0, "user_id")], "email": [D(0, "email")], "event_time": [D(0, "ts")]}
    assert res.indirect == []


def test_expressions():
    res = ok("SELECT lower(email) AS em, concat(name, '/', u.country) AS label, age * 12 AS months, "
             "CAST(age AS VARCHAR) AS age_s, sha256(CAST(user_id AS VARCHAR)) AS h FROM db.users u "
             "JOIN db.events e USING (user_id)")
    assert res.sources == ["db.users", "db.events"]
    assert res.columns == {
        "em": [D(1, "email", "TRANSFORMATION", expr="LOWER(email)")],
        "label": [D(0, "country", "TRANSFORMATION"), D(0, "name", "TRANSFORMATION")],
        "months": [D(0, "age", "TRANSFORMATION", expr="age * 12")],
        "age_s": [D(0, "age", "TRANSFORMATION", expr="CAST(age AS TEXT)")],
        # unqualified USING column is COALESCE(u.user_id, e.user_id): both sides, no single-column expression
        "h": [D(0, "user_id", "TRANSFORMATION"), D(1, "user_id", "TRANSFORMATION")],
    }
    assert res.indirect == [I(0, "user_id", "JOIN"), I(1, "user_id", "JOIN")]


def test_cte_chain_keeps_identity_and_composes_expressions():
    res = ok("""
        WITH base AS (SELECT e.user_id AS uid, e.email AS em, amount FROM db.events e WHERE amount > 0),
             cleaned AS (SELECT uid AS id, trim(em) AS em2 FROM base),
             s AS (SELECT id, em2 AS addr FROM cleaned)
        SELECT s.id AS subject, lower(s.addr) AS email_norm FROM s
    """)
    assert res.sources == ["db.events"]
    assert res.columns == {
        "subject": [D(0, "user_id")],
        "email_norm": [D(0, "email", "TRANSFORMATION", expr="LOWER(TRIM(email))")],
    }
    assert res.indirect == [I(0, "amount", "FILTER")]


def test_inner_and_left_joins_on_and_using():
    res = ok("""
        SELECT u.user_id, u.name, o.total, e.country AS event_country
        FROM db.users u
        JOIN db.orders o ON o.user_id = u.user_id AND o.status = 'paid'
        LEFT JOIN db.events e USING (user_id)
    """)
    assert res.sources == ["db.users", "db.orders", "db.events"]
    assert res.columns == {"user_id": [D(0, "user_id")], "name": [D(0, "name")], "total": [D(1, "total")],
                           "event_country": [D(2, "country")]}
    assert set(res.indirect) == {I(1, "user_id", "JOIN"), I(0, "user_id", "JOIN"), I(1, "status", "JOIN"),
                                 I(2, "user_id", "JOIN")}
    assert len(res.indirect) == 4


def test_group_by_aggregates_mask_only_statistics():
    res = ok("""
        SELECT country, count(*) AS n, count(user_id) AS c, count(DISTINCT email) AS d, sum(amount) AS s,
               avg(amount) AS a, max(user_id) AS last_user, min(ts) AS first_ts, list(email) AS emails,
               string_agg(email, ',') AS joined, any_value(email) AS some_email
        FROM db.events GROUP BY country
    """)
    assert res.columns == {
        "country": [D(0, "country")],
        "n": [],
        "c": [D(0, "user_id", "AGGREGATION", True)],
        "d": [D(0, "email", "AGGREGATION", True)],
        "s": [D(0, "amount", "AGGREGATION", True)],
        "a": [D(0, "amount", "AGGREGATION", True)],
        "last_user": [D(0, "user_id", "AGGREGATION", False)],
        "first_ts": [D(0, "ts", "AGGREGATION", False)],
        "emails": [D(0, "email", "AGGREGATION", False, collects=True)],
        "joined": [D(0, "email", "AGGREGATION", False, collects=True)],
        "some_email": [D(0, "email", "AGGREGATION", False)],
    }
    assert res.indirect == [I(0, "country", "GROUP_BY")]


@pytest.mark.parametrize(("func", "masking"), [
    ("count(x)", True), ("sum(x)", True), ("avg(x)", True), ("stddev(x)", True), ("variance(x)", True),
    ("approx_count_distinct(x)", True), ("count(DISTINCT x)", True), ("bit_or(x)", True),
    ("product(x)", True), ("min(x)", False), ("max(x)", False), ("any_value(x)", False),
    ("first(x)", False), ("last(x)", False), ("arg_max(x, y)", False), ("min_by(x, y)", False),
    ("array_agg(x)", False), ("list(x)", False), ("mode(x)", False), ("median(x)", False),
    ("quantile_disc(x, 0.5)", False), ("histogram(x)", False), ("string_agg(CAST(x AS VARCHAR), ',')", False),
])
def test_masking_rule(func: str, masking: bool):
    res = ok(f"SELECT {func} AS v FROM db.t", {"db.t": {"x": "BIGINT", "y": "BIGINT"}})
    collects = func.split("(")[0] in {"array_agg", "list", "histogram", "string_agg"}
    assert D(0, "x", "AGGREGATION", masking, collects=collects) in res.columns["v"]


def test_arg_max_key_is_masked_value_is_not():
    res = ok("SELECT arg_max(user_id, ts) AS latest FROM db.events")
    assert res.columns["latest"] == [D(0, "ts", "AGGREGATION", True), D(0, "user_id", "AGGREGATION", False)]


def test_window_functions():
    res = ok("""
        SELECT user_id,
               row_number() OVER (PARTITION BY user_id ORDER BY ts DESC) AS rn,
               lag(email) OVER (PARTITION BY user_id ORDER BY ts) AS prev_email,
               first_value(amount) OVER (PARTITION BY country ORDER BY ts) AS first_amount,
               sum(amount) OVER (PARTITION BY user_id) AS user_total
        FROM db.events
    """)
    assert res.columns == {
        "user_id": [D(0, "user_id")],
        "rn": [],
        # another row's value, as it is: the expression is the bare column (fan-out maps it unchanged)
        "prev_email": [D(0, "email", "TRANSFORMATION", expr="email")],
        "first_amount": [D(0, "amount", "TRANSFORMATION", expr="amount")],
        "user_total": [D(0, "amount", "AGGREGATION", True)],
    }
    assert res.indirect == [I(0, "user_id", "WINDOW"), I(0, "ts", "WINDOW"), I(0, "country", "WINDOW")]


def test_window_value_functions_record_their_arguments_expression():
    """Regression: lead(lower(email)) OVER (...) holds another row's LOWER(email) but was recorded without
    expression: erasure fan-out could not map the subject's email, and the lower-cased copies stayed."""
    res = ok("""
        SELECT lead(lower(email)) OVER (PARTITION BY country ORDER BY ts) AS next_mail,
               first_value(sha256(email)) OVER (ORDER BY ts) AS first_hash,
               lower(lag(email, 1, 'none') OVER (ORDER BY ts)) AS prev_mail,
               lag(email, 1, country) OVER (ORDER BY ts) AS mixed,
               rank() OVER (ORDER BY email) AS rk
        FROM db.events
    """)
    assert res.columns == {
        "next_mail": [D(0, "email", "TRANSFORMATION", expr="LOWER(email)")],
        "first_hash": [D(0, "email", "TRANSFORMATION", expr="SHA256(email)")],
        "prev_mail": [D(0, "email", "TRANSFORMATION", expr="LOWER(email)")],
        "mixed": [D(0, "country", "TRANSFORMATION"), D(0, "email", "TRANSFORMATION")],
        "rk": [],
    }


def test_union_all_merges_branches():
    res = ok("""
        SELECT user_id AS uid, email AS contact FROM db.events
        UNION ALL
        SELECT user_id, name FROM db.users WHERE age >= 18
    """)
    assert res.sources == ["db.events", "db.users"]
    assert res.output_columns == ["uid", "contact"]
    assert res.columns == {"uid": [D(0, "user_id"), D(1, "user_id")],
                           "contact": [D(0, "email"), D(1, "name")]}
    assert res.indirect == [I(1, "age", "FILTER")]


def test_order_by_on_a_union_resolves_through_every_branch():
    res = ok("SELECT user_id AS u, email AS c FROM db.events UNION ALL SELECT user_id, name FROM db.users "
             "ORDER BY 2 DESC, u")
    assert set(res.indirect) == {I(0, "email", "SORT"), I(1, "name", "SORT"), I(0, "user_id", "SORT"),
                                 I(1, "user_id", "SORT")}


def test_scalar_subquery_in_select_list():
    res = ok("SELECT e.event_id, (SELECT max(u.age) FROM db.users u WHERE u.user_id = e.user_id) AS age "
             "FROM db.events e")
    assert res.sources == ["db.users", "db.events"]  # order of first appearance in the text
    assert res.columns == {"event_id": [D(1, "event_id")], "age": [D(0, "age", "AGGREGATION", False)]}
    assert set(res.indirect) == {I(0, "user_id", "FILTER"), I(1, "user_id", "FILTER")}


def test_set_returning_and_struct_access():
    schemas = {"db.t": {"tags": "VARCHAR[]", "s": "STRUCT(a INTEGER, b VARCHAR)"}}
    res = ok("SELECT unnest(tags) AS tag, s.a AS a, tags[1] AS first_tag FROM db.t", schemas)
    assert res.columns == {"tag": [D(0, "tags", "TRANSFORMATION")],  # many rows per value: no expression
                           "a": [D(0, "s", "TRANSFORMATION", expr="s.a")],
                           "first_tag": [D(0, "tags", "TRANSFORMATION", expr="tags[1]")]}


def test_group_by_all_and_order_by_all_record_their_columns():
    # DuckDB's GROUP BY ALL groups by every select expression without an aggregate, ORDER BY ALL sorts by every
    # column; neither names a column, and the INDIRECT inputs were missing
    res = ok("SELECT country AS c, lower(email) AS e, sum(amount) AS total FROM db.events GROUP BY ALL ORDER BY ALL")
    assert set(res.indirect) == {I(0, "country", "GROUP_BY"), I(0, "email", "GROUP_BY"), I(0, "country", "SORT"),
                                 I(0, "email", "SORT"), I(0, "amount", "SORT")}


def test_union_by_name_matches_branch_columns_by_name_not_position():
    # DuckDB's BY NAME: the second branch's `name AS c` fills c, whatever its position. Matched by
    # position, c was recorded as filled from users.user_id and u from users.name.
    sql = ("SELECT user_id AS u, email AS c FROM db.events UNION ALL BY NAME "
           "SELECT name AS c, user_id AS u FROM db.users")
    res = ok(sql)
    assert res.columns == {"u": [D(0, "user_id"), D(1, "user_id")], "c": [D(0, "email"), D(1, "name")]}
    con = duckdb.connect()  # and DuckDB does fill them that way
    con.execute("CREATE SCHEMA db; CREATE TABLE db.events (user_id BIGINT, email VARCHAR); "
                "CREATE TABLE db.users (user_id BIGINT, name VARCHAR); "
                "INSERT INTO db.events VALUES (1, 'e@x'); INSERT INTO db.users VALUES (2, 'Ann')")
    assert sorted(con.sql(sql).fetchall()) == [(1, "e@x"), (2, "Ann")]
    nested = ok(sql + " UNION BY NAME SELECT age AS c, user_id AS u FROM db.users")
    assert nested.columns["c"] == [D(0, "email"), D(1, "age"), D(1, "name")]
    # branches with different column sets: DuckDB pads with NULLs; not analysed
    assert analyze("SELECT user_id AS u FROM db.events UNION BY NAME SELECT name AS c, user_id AS u FROM db.users",
                   SCHEMAS).opaque is not None


def test_union_same_transform_keeps_expression_different_transforms_are_each_recorded():
    same = ok("SELECT lower(email) AS e FROM db.events UNION SELECT lower(email) FROM db.events")
    assert same.columns == {"e": [D(0, "email", "TRANSFORMATION", expr="LOWER(email)")]}
    # Regression: the branches' two ways were one TRANSFORMATION without expression, and erasure fan-out
    # matched neither the upper-cased rows nor (next to a copied branch) anything but the raw value.
    mixed = ok("SELECT email AS e FROM db.events UNION ALL SELECT upper(email) FROM db.events")
    assert mixed.columns == {"e": [D(0, "email"), D(0, "email", "TRANSFORMATION", expr="UPPER(email)")]}
    nested = ok("SELECT m FROM (SELECT lower(email) AS m FROM db.events UNION ALL SELECT name FROM db.users "
                "UNION ALL SELECT trim(email) FROM db.events) t")
    assert nested.columns == {"m": [D(0, "email", "TRANSFORMATION", expr="LOWER(email)"),
                                    D(0, "email", "TRANSFORMATION", expr="TRIM(email)"), D(1, "name")]}
    # a branch that aggregates or combines columns keeps today's single, expression-less input
    agg = ok("SELECT max(email) AS e FROM db.events UNION ALL SELECT lower(email) FROM db.events")
    assert [(r.subtype, r.expression) for r in agg.columns["e"]] == [("AGGREGATION", None)]


def test_subquery_in_from():
    res = ok("""
        SELECT t.uid, t.spent FROM (
            SELECT user_id AS uid, sum(total) AS spent FROM db.orders WHERE status = 'paid' GROUP BY user_id
        ) AS t WHERE t.spent > 100 ORDER BY t.spent DESC LIMIT 10
    """)
    assert res.columns == {"uid": [D(0, "user_id")], "spent": [D(0, "total", "AGGREGATION", True)]}
    assert set(res.indirect) == {I(0, "status", "FILTER"), I(0, "user_id", "GROUP_BY"),
                                 I(0, "total", "FILTER"), I(0, "total", "SORT")}


def test_select_star_over_join():
    res = ok("SELECT u.*, o.* EXCLUDE (user_id) FROM db.users u JOIN db.orders o ON o.user_id = u.user_id "
             "WHERE o.status <> 'void'")
    assert res.sources == ["db.users", "db.orders"]
    assert res.output_columns == ["user_id", "name", "age", "country", "order_id", "total", "status"]
    assert res.columns == {"user_id": [D(0, "user_id")], "name": [D(0, "name")], "age": [D(0, "age")],
                           "country": [D(0, "country")], "order_id": [D(1, "order_id")],
                           "total": [D(1, "total")], "status": [D(1, "status")]}
    assert set(res.indirect) == {I(0, "user_id", "JOIN"), I(1, "user_id", "JOIN"), I(1, "status", "FILTER")}
    # both sides have user_id: the engine would rename one, so the mapping is not trusted
    dup = analyze("SELECT * FROM db.users u JOIN db.orders o ON o.user_id = u.user_id", SCHEMAS)
    assert dup.opaque is not None and "user_id" in dup.opaque


def test_select_star_over_using_join_is_identity():
    res = ok("SELECT * FROM db.users JOIN db.orders USING (user_id)")
    assert res.output_columns == ["user_id", "name", "age", "country", "order_id", "total", "status"]
    assert res.columns["user_id"] == [D(0, "user_id"), D(1, "user_id")]  # COALESCE of the two sides
    assert res.columns["total"] == [D(1, "total")]
    assert res.columns["name"] == [D(0, "name")]
    assert res.indirect == [I(0, "user_id", "JOIN"), I(1, "user_id", "JOIN")]


def test_case_when():
    res = ok("""
        SELECT CASE WHEN age >= 18 THEN name ELSE 'minor' END AS display,
               CASE country WHEN 'DE' THEN 'EU' ELSE country END AS region,
               iif(age > 65, 'senior', 'other') AS band
        FROM db.users
    """)
    assert res.columns == {
        # name or a literal: where a value comes through it is name's, unchanged (as for COALESCE of columns)
        "display": [D(0, "name")],
        "region": [D(0, "country", "TRANSFORMATION", expr="CASE country WHEN 'DE' THEN 'EU' ELSE country END")],
        "band": [],
    }
    assert res.indirect == [I(0, "age", "CONDITIONAL"), I(0, "country", "CONDITIONAL")]


def test_case_if_and_coalesce_results_are_each_recorded():
    """Regression: CASE WHEN consent THEN email ELSE sha256(email) END was one TRANSFORMATION of email without
    expression: erasure fan-out warned and matched only the raw email, so the subject's hashed rows stayed."""
    res = ok("""
        SELECT CASE WHEN age >= 18 THEN name ELSE sha256(name) END AS pseudo,
               iif(age > 65, upper(name), lower(name)) AS cased,
               coalesce(lower(name), lower(country)) AS k,
               CASE WHEN age > 1 THEN name || country ELSE trim(name) END AS mixed
        FROM db.users
    """)
    assert res.columns == {
        "pseudo": [D(0, "name"), D(0, "name", "TRANSFORMATION", expr="SHA256(name)")],
        "cased": [D(0, "name", "TRANSFORMATION", expr="LOWER(name)"), D(0, "name", "TRANSFORMATION", expr="UPPER(name)")],
        "k": [D(0, "country", "TRANSFORMATION", expr="LOWER(country)"), D(0, "name", "TRANSFORMATION", expr="LOWER(name)")],
        "mixed": [D(0, "country", "TRANSFORMATION"), D(0, "name", "TRANSFORMATION"),
                  D(0, "name", "TRANSFORMATION", expr="TRIM(name)")],
    }


def test_having_and_qualify_are_filters():
    having = ok("SELECT country, count(*) AS n FROM db.events GROUP BY country HAVING count(DISTINCT user_id) > 10")
    assert having.columns == {"country": [D(0, "country")], "n": []}
    assert set(having.indirect) == {I(0, "country", "GROUP_BY"), I(0, "user_id", "FILTER")}
    qualify = ok("SELECT user_id, email FROM db.events "
                 "QUALIFY row_number() OVER (PARTITION BY user_id ORDER BY ts DESC) = 1")
    assert qualify.columns == {"user_id": [D(0, "user_id")], "email": [D(0, "email")]}
    assert set(qualify.indirect) == {I(0, "user_id", "WINDOW"), I(0, "ts", "WINDOW")}


def test_filter_on_window_column_of_a_cte_resolves_to_its_inputs():
    res = ok("""
        WITH ranked AS (SELECT user_id, email, row_number() OVER (PARTITION BY user_id ORDER BY ts) AS rn
                        FROM db.events)
        SELECT user_id, email FROM ranked WHERE rn = 1
    """)
    assert res.columns == {"user_id": [D(0, "user_id")], "email": [D(0, "email")]}
    assert set(res.indirect) == {I(0, "user_id", "WINDOW"), I(0, "ts", "WINDOW"), I(0, "user_id", "FILTER"),
                                 I(0, "ts", "FILTER")}


def test_where_on_cte_column_built_from_two_columns():
    res = ok("""
        WITH k AS (SELECT event_id, user_id || ':' || email AS subject_key FROM db.events)
        SELECT event_id FROM k WHERE subject_key LIKE '42:%'
    """)
    assert res.columns == {"event_id": [D(0, "event_id")]}
    assert res.indirect == [I(0, "email", "FILTER"), I(0, "user_id", "FILTER")]


def test_correlated_subquery_in_where():
    res = ok("SELECT o.order_id FROM db.orders o "
             "WHERE EXISTS (SELECT 1 FROM db.users u WHERE u.user_id = o.user_id AND u.age > 18)")
    assert res.sources == ["db.orders", "db.users"]
    assert res.columns == {"order_id": [D(0, "order_id")]}
    assert set(res.indirect) == {I(0, "user_id", "FILTER"), I(1, "user_id", "FILTER"), I(1, "age", "FILTER")}


def test_aggregate_over_cte_transformation_combines_steps():
    res = ok("WITH s AS (SELECT lower(email) AS e, amount FROM db.events) "
             "SELECT max(e) AS m, count(e) AS c, sum(amount) AS t FROM s")
    # max(e) is some row's lower(email): the expression is recorded, so erasure maps the subject's value
    assert res.columns == {"m": [D(0, "email", "AGGREGATION", False, expr="LOWER(email)")],
                           "c": [D(0, "email", "AGGREGATION", True)],
                           "t": [D(0, "amount", "AGGREGATION", True)]}
    twice = ok("WITH a AS (SELECT user_id, count(*) AS n FROM db.events GROUP BY user_id) "
               "SELECT max(user_id) AS top_user, max(n) AS top_n FROM a")
    assert twice.columns == {"top_user": [D(0, "user_id", "AGGREGATION", False)], "top_n": []}


def test_order_by_is_sort_and_alias_resolves():
    res = ok("SELECT user_id, lower(email) AS e FROM db.events ORDER BY e, ts")
    assert res.indirect == [I(0, "email", "SORT"), I(0, "ts", "SORT")]
    agg = ok("SELECT string_agg(email, ';' ORDER BY ts) AS l FROM db.events")
    assert agg.columns == {"l": [D(0, "email", "AGGREGATION", False, collects=True)]}
    assert agg.indirect == [I(0, "ts", "SORT")]


def test_aggregate_filter_clause_is_filter():
    res = ok("SELECT count(*) FILTER (WHERE amount > 0) AS paid, sum(amount) FILTER (WHERE country = 'DE') AS de "
             "FROM db.events")
    assert res.columns == {"paid": [], "de": [D(0, "amount", "AGGREGATION", True)]}
    assert set(res.indirect) == {I(0, "amount", "FILTER"), I(0, "country", "FILTER")}


def test_case_insensitive_names_and_schema_spelling():
    schemas = {"DB.Events": {"UserId": "BIGINT", "Email": "VARCHAR"}}
    res = ok('SELECT USERID AS Subject, lower("EMAIL") AS E FROM db.EVENTS', schemas)
    assert res.sources == ["db.events"]
    assert res.output_columns == ["subject", "e"]
    assert res.columns == {"subject": [D(0, "UserId")],
                           "e": [D(0, "Email", "TRANSFORMATION", expr="LOWER(Email)")]}


def test_three_part_names_and_quoting():
    schemas = {"cat.ns.t": {"User Id": "BIGINT", "order": "VARCHAR"}}
    res = ok('SELECT "User Id" + 1 AS nxt, upper("order") AS o FROM cat.ns.t', schemas)
    assert res.sources == ["cat.ns.t"]
    assert res.columns == {"nxt": [D(0, "User Id", "TRANSFORMATION", expr='"User Id" + 1')],
                           "o": [D(0, "order", "TRANSFORMATION", expr='UPPER("order")')]}


def test_unaliased_expressions_get_sqlglot_names():
    res = ok("SELECT lower(email), user_id FROM db.events")
    assert res.output_columns == ["_col_0", "user_id"]


def test_spark_dialect():
    res = ok("SELECT `user_id` AS uid, upper(email) AS e FROM db.events WHERE country = \"DE\"", dialect="spark")
    assert res.columns == {"uid": [D(0, "user_id")], "e": [D(0, "email", "TRANSFORMATION", expr="UPPER(email)")]}
    assert res.indirect == [I(0, "country", "FILTER")]


# ---- expression -------------------------------------------------------------------------------

def test_expression_none_for_nondeterministic_multi_column_and_self_join():
    res = ok("SELECT user_id + random() AS r, email || country AS two, now() AS t, "
             "md5(email || CAST(current_date AS VARCHAR)) AS d FROM db.events")
    assert res.columns["r"] == [D(0, "user_id", "TRANSFORMATION")]
    assert res.columns["two"] == [D(0, "country", "TRANSFORMATION"), D(0, "email", "TRANSFORMATION")]
    assert res.columns["t"] == []
    assert res.columns["d"] == [D(0, "email", "TRANSFORMATION")]
    self_join = ok("SELECT a.email || b.email AS pair FROM db.events a JOIN db.events b ON a.event_id = b.event_id")
    assert self_join.columns == {"pair": [D(0, "email", "TRANSFORMATION")]}  # two rows: no expression
    param = ok("SELECT email || ? AS x FROM db.events")
    assert param.columns == {"x": [D(0, "email", "TRANSFORMATION")]}


def test_expression_same_row_through_two_cte_columns():
    res = ok("WITH s AS (SELECT lower(email) AS a, upper(email) AS b FROM db.events) SELECT a || b AS ab FROM s")
    assert res.columns == {"ab": [D(0, "email", "TRANSFORMATION", expr="LOWER(email) || UPPER(email)")]}


def _assert_expression_matches_query(sql: str, ref: FieldRef, value: str) -> None:
    """What fan-out computes (map_values on the bare value) equals what the query computes on a one-row table."""
    con = duckdb.connect()
    con.execute("CREATE SCHEMA db")
    con.execute("CREATE TABLE db.events (event_id BIGINT, user_id BIGINT, email VARCHAR, ts TIMESTAMP, "
                "amount DOUBLE, country VARCHAR)")
    con.execute("INSERT INTO db.events (user_id, email) VALUES (1, ?)", [value])
    expected = con.execute(sql).fetchall()[0][0]
    assert map_values(ref.expression or "", ref.column, "VARCHAR", [value]) == ([] if expected is None else [expected])


@pytest.mark.parametrize(("sql", "value"), [
    ("WITH s AS (SELECT trim(email) AS em FROM db.events) SELECT lower(s.em) AS out FROM s", "  Ada@Example.COM "),
    ("SELECT md5(lower(email)) AS out FROM db.events", "Bob@x.org"),
    ("SELECT CASE WHEN email LIKE '%@x.org' THEN upper(email) ELSE email END AS out FROM db.events", "bob@x.org"),
    ("SELECT coalesce(nullif(trim(email), ''), 'none') AS out FROM (SELECT email FROM db.events) t", "  "),
])
def test_expression_evaluates_like_the_query(sql: str, value: str):
    """The lead maps a subject's value downstream with SELECT <expression> FROM (SELECT ? AS <column>)."""
    res = ok(sql)
    (ref,) = res.columns["out"]
    assert ref.column == "email" and ref.expression is not None
    _assert_expression_matches_query(sql, ref, value)


# ---- opaque ----------------------------------------------------------------------------------

def test_unparseable_sql_is_opaque_with_sources_from_tokens():
    res = analyze("SELECT user_id FROM db.events JOIN db.users ON ((( WHERE", SCHEMAS)
    assert res.opaque is not None and "parse" in res.opaque
    assert res.sources == ["db.events", "db.users"]
    assert res.columns == {} and res.indirect == [] and res.output_columns == []


@pytest.mark.parametrize("sql", [
    "CREATE TABLE db.copy AS SELECT * FROM db.events",
    "INSERT INTO db.orders SELECT * FROM db.orders",
    "DELETE FROM db.events WHERE user_id = 1",
    "UPDATE db.users SET name = 'x'",
    "DROP TABLE db.events",
    "SELECT 1 AS a; SELECT user_id FROM db.events",
    "SELECT * INTO db.copy FROM db.events",
    "WITH RECURSIVE r AS (SELECT 1 AS n UNION ALL SELECT n + 1 FROM r WHERE n < 3) SELECT n FROM r",
    "SELECT * FROM read_parquet('/data/secret.parquet')",
    "SELECT COLUMNS('user.*') FROM db.events",
    "",
])
def test_non_queries_are_opaque(sql: str):
    res = analyze(sql, SCHEMAS)
    assert res.opaque is not None
    assert res.columns == {} and res.indirect == []
    assert "secret" not in res.opaque


def test_opaque_sources_are_best_effort():
    res = analyze("INSERT INTO db.orders SELECT * FROM db.events", SCHEMAS)
    assert res.opaque is not None and "INSERT" in res.opaque
    assert res.sources == ["db.events"]


def test_unknown_column_and_table_are_opaque():
    col = analyze("SELECT user_id, favourite_colour FROM db.users", SCHEMAS)
    assert col.opaque is not None and "favourite_colour" in col.opaque
    assert col.sources == ["db.users"]
    table = analyze("SELECT e.user_id FROM db.events e JOIN db.secret s ON s.id = e.user_id", SCHEMAS)
    assert table.opaque is not None and "db.secret" in table.opaque
    assert table.sources == ["db.events", "db.secret"]
    ambiguous = analyze("SELECT country FROM db.users JOIN db.events USING (user_id)", SCHEMAS)
    assert ambiguous.opaque is not None and "country" in ambiguous.opaque
    star = analyze("SELECT * FROM db.unknown", SCHEMAS)
    assert star.opaque is not None and "db.unknown" in star.opaque


@pytest.mark.parametrize("sql", ['SELECT "id" AS a FROM db.t', 'SELECT "ID" AS a FROM db.t', "SELECT * FROM db.t",
                                 "SELECT upper(Id) AS a FROM db.t", "SELECT x FROM db.t WHERE id = 'X'"])
def test_columns_whose_names_differ_only_in_case_are_opaque(sql: str):
    # Iceberg allows columns `ID` and `id` in one table; DuckDB reads the same one for both spellings, so the
    # record cannot say which it was (it said `id` while DuckDB had read `ID`, the identity column)
    schemas = {"db.t": {"ID": "VARCHAR", "id": "VARCHAR", "x": "VARCHAR"}}
    res = analyze(sql, schemas)
    assert res.opaque is not None and "letter case" in res.opaque and "'ID'" in res.opaque
    con = duckdb.connect()
    con.register("t", pa.table([["X"], ["y"]], names=["ID", "id"]))
    assert con.sql('SELECT "id" FROM t').fetchall() == [("X",)]  # the engine reads `ID` for "id"
    assert ok("SELECT x AS a FROM db.t", schemas).columns == {"a": [D(0, "x")]}  # other columns still analysed


def test_duplicate_output_names_are_opaque():
    res = analyze("SELECT u.user_id, o.user_id FROM db.users u JOIN db.orders o ON o.user_id = u.user_id", SCHEMAS)
    assert res.opaque is not None and "user_id" in res.opaque


def test_programmer_errors_raise():
    with pytest.raises(TypeError):
        analyze(b"SELECT 1", SCHEMAS)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        analyze("SELECT 1", [("db.t", {})])  # type: ignore[arg-type]


# ---- referenced_tables / normalize_sql ---------------------------------------------------------

def test_referenced_tables():
    known = list(SCHEMAS)
    assert referenced_tables("WITH x AS (SELECT * FROM db.Users) SELECT * FROM x JOIN DB.events USING (user_id)",
                             known) == ["db.users", "db.events"]
    assert referenced_tables("CREATE TABLE db.out AS SELECT * FROM db.orders", known) == ["db.orders"]
    # does not parse: dotted names matching known tables, in order, quoted or not
    assert referenced_tables('SELEKT * FROM "DB"."ORDERS" ,, db . users JOIN db.nope', known) == [
        "db.orders", "db.users"]
    # does not even tokenize
    assert referenced_tables("SELECT * FROM db.events WHERE x = 'unterminated", known) == ["db.events"]
    assert referenced_tables("", known) == []


def test_normalize_sql_strips_literals():
    sql = ("SELECT email FROM db.events WHERE user_id = 4242 AND email = 'ada@example.com' "
           "AND amount IN (13.37, -99) AND ts > TIMESTAMP '2031-05-06 07:08:09' ORDER BY 1 LIMIT 777 -- hint 5150")
    out = normalize_sql(sql)
    assert out is not None
    for secret in ("4242", "ada@example.com", "13.37", "99", "2031", "777", "5150", "hint"):
        assert secret not in out
    assert out.startswith("SELECT email FROM db.events WHERE user_id = ? AND email = ?")
    assert "CAST(x AS DECIMAL(10, 2))" in normalize_sql("SELECT CAST(x AS DECIMAL(10, 2)) FROM t")
    assert normalize_sql("SELECT FROM WHERE ((") is None
    assert normalize_sql("SELECT `a` FROM t WHERE b = 'Bob'", "spark") == "SELECT `a` FROM t WHERE b = ?"


# ---- properties ------------------------------------------------------------------------------

_STEPS = {
    "rename": "{c}",
    "lower": "lower({c})",
    "upper": "upper({c})",
    "trim": "trim({c})",
    "reverse": "reverse({c})",
    "md5": "md5({c})",
    "suffix": "{c} || '-x'",
    "concat": "concat('p:', {c})",
    "substr": "substr({c}, 1, 5)",
    "replace": "replace({c}, 'a', 'b')",
}


@st.composite
def _chains(draw):
    steps = draw(st.lists(st.sampled_from(sorted(_STEPS)), min_size=1, max_size=5))
    kinds = draw(st.lists(st.sampled_from(["cte", "subquery"]), min_size=len(steps), max_size=len(steps)))
    filters = draw(st.lists(st.booleans(), min_size=len(steps), max_size=len(steps)))
    value = draw(st.text(alphabet="aAbB xyz@.-", max_size=12))
    return steps, kinds, filters, value


def _chain_sql(steps, kinds, filters) -> str:
    """A chain of CTEs / derived tables, each applying one step to the previous column."""
    ctes: list[str] = []
    inner, col = "db.events", "email"
    for i, (step, kind, filt) in enumerate(zip(steps, kinds, filters, strict=True)):
        name = f"c{i}"
        where = f" WHERE {col} IS NOT NULL" if filt else ""
        body = f"SELECT {_STEPS[step].format(c=col)} AS {name}, user_id FROM {inner}{where}"
        if kind == "cte":
            ctes.append(f"s{i} AS ({body})")
            inner = f"s{i}"
        else:
            inner = f"({body}) AS s{i}"
        col = name
    with_ = f"WITH {', '.join(ctes)} " if ctes else ""
    return f"{with_}SELECT {col} AS out, user_id FROM {inner}"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_chains())
def test_property_chains_of_scalar_steps(chain):
    """Through any chain of CTEs / subqueries: renames stay IDENTITY, anything else is a TRANSFORMATION whose
    expression computes, from the bare source value, exactly what the query computes."""
    steps, kinds, filters, value = chain
    sql = _chain_sql(steps, kinds, filters)
    res = ok(sql)
    assert res.sources == ["db.events"]
    assert res.columns["user_id"] == [D(0, "user_id")]
    (ref,) = res.columns["out"]
    assert ref.column == "email" and not ref.masking
    assert set(res.indirect) == ({I(0, "email", "FILTER")} if any(filters) else set())
    if all(s == "rename" for s in steps):
        assert ref.subtype == "IDENTITY" and ref.expression is None
        return
    assert ref.subtype == "TRANSFORMATION" and ref.expression is not None
    _assert_expression_matches_query(sql, ref, value)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["count", "sum", "max", "min", "lower", "rename"]), min_size=1, max_size=4))
def test_property_path_combination(ops):
    """Along a path: subtype is the strongest step, masking is set iff some step masks."""
    ctes, col = [], "amount"
    for i, op in enumerate(ops):
        expr = {"rename": "{c}", "lower": "lower(CAST({c} AS VARCHAR))"}.get(op, op + "({c})").format(c=col)
        src = "db.events" if i == 0 else f"s{i - 1}"
        ctes.append(f"s{i} AS (SELECT {expr} AS v{i} FROM {src})")
        col = f"v{i}"
    res = ok(f"WITH {', '.join(ctes)} SELECT {col} AS out FROM s{len(ops) - 1}")
    rank = max({"rename": 0, "lower": 1}.get(op, 2) for op in ops)
    (ref,) = res.columns["out"]
    assert ref.column == "amount"
    assert ref.subtype == ["IDENTITY", "TRANSFORMATION", "AGGREGATION"][rank]
    assert ref.masking == any(op in ("count", "sum") for op in ops)


def test_positional_column_reference_is_opaque() -> None:
    """DuckDB's #n picks a column by position; reporting it as 'no inputs' would lose an identity."""
    lin = analyze("SELECT #1, #2 FROM db.events", {"db.events": {"user_id": "BIGINT", "email": "VARCHAR"}})
    assert lin.opaque is not None and "positional" in lin.opaque and lin.sources == ["db.events"]


@pytest.mark.parametrize("expression", [
    "(SELECT content FROM read_text('{path}'))",
    "CAST((SELECT content FROM read_text('{path}')) AS INTEGER)",
    "(SELECT count(*) FROM read_csv('{path}'))",
])
def test_recorded_expression_cannot_read_files(tmp_path, expression):
    """A snapshot summary's expression (anyone with write access to a table can set one) reads no local file:
    it fails as a LineageError whose message does not carry the file's content."""
    secret = tmp_path / "secret.txt"
    secret.write_text("s3.secret-access-key: hunter2\n")
    with pytest.raises(LineageError) as err:
        map_values(expression.format(path=secret), "user_id", "VARCHAR", ["u1"])
    assert "hunter2" not in str(err.value)


@pytest.mark.parametrize("agg, collects", [
    ("string_agg(email, ',')", True), ("array_agg(user_id)", True), ("list(user_id)", True),
    ("json_group_array(user_id)", True), ("histogram(user_id)", True), ("max(user_id)", False),
    ("any_value(user_id)", False), ("count(user_id)", False),
])
def test_collecting_aggregates_are_flagged(agg: str, collects: bool) -> None:
    """A value gathering several rows' inputs holds the person inside it: fan-out must know it cannot
    match it by equality (json_group_array was taken for a scalar function of one value)."""
    res = ok(f"SELECT country, {agg} AS v FROM db.events GROUP BY country")
    (ref,) = res.columns["v"]
    assert ref.subtype == "AGGREGATION" and ref.expression is None
    assert ref.collects is collects
    assert FieldRef.from_json(ref.to_json()) == ref


def test_spark_hints_name_no_table_read() -> None:
    """Regression: a Spark join hint's argument (/*+ BROADCAST(u) */, an alias) was taken for a table read: analyze
    came back opaque ('unknown table u') and derive(spark=...) refused the SQL with MissingSourceError for 'u'."""
    from iceberg_privacy.lineage.derive import _rewrite_tables

    sql = ("SELECT /*+ BROADCAST(u), MERGE(db.users) */ e.user_id AS uid, u.name FROM db.events e "
           "JOIN db.users u ON e.user_id = u.user_id")
    assert referenced_tables(sql, (), "spark") == ["db.events", "db.users"]
    res = ok(sql, dialect="spark")
    assert res.sources == ["db.events", "db.users"]
    assert res.columns == {"uid": [D(0, "user_id")], "name": [D(1, "name")]}
    rewritten = _rewrite_tables(sql, ["db.events", "db.users"], "spark")
    assert "MERGE(db.users)" in rewritten and "FROM __ip_src_0 AS e JOIN __ip_src_1 AS u" in rewritten


_UNION_STEPS = ["{c}", "lower({c})", "upper({c})", "trim({c})", "md5({c})", "reverse({c})", "concat('p-', {c})",
                "lower(trim({c}))"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(_UNION_STEPS), st.booleans()), min_size=2, max_size=4),
       st.sampled_from(["UNION ALL", "UNION"]), st.booleans())
def test_property_every_union_value_is_mapped_by_a_recorded_input(branches, op, wrapped):
    """Whatever each UNION branch does to email (or to users.name), every value of the result column is what one
    recorded input computes from its source value: erasure fan-out, evaluating each input, finds every copy."""
    value = {"db.events": " Ann@X.org ", "db.users": "Bo B"}
    parts = [f"SELECT {step.format(c='name' if users else 'email')} AS m FROM {'db.users' if users else 'db.events'}"
             for step, users in branches]
    sql = f" {op} ".join(parts)
    if wrapped:
        sql = f"SELECT m FROM ({sql}) t"
    res = ok(sql)
    con = duckdb.connect()
    for name, v in value.items():
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {name.split('.')[0]}")
        col = "name" if name == "db.users" else "email"
        con.execute(f"CREATE TABLE {name} AS SELECT ?::VARCHAR AS {col}", [v])
    got = {r[0] for r in con.execute(sql).fetchall()}
    mapped = set()
    for ref in res.columns["m"]:
        v = value[res.sources[ref.source]]
        if ref.subtype == "IDENTITY":
            mapped.add(v)
        else:
            assert ref.expression is not None, ref
            mapped.update(map_values(ref.expression, ref.column, "VARCHAR", [v]))
    assert got <= mapped


@pytest.mark.parametrize("sql", ["SELECT to_json(struct(*)) AS j FROM db.events", "SELECT struct(*) AS s FROM db.events",
                                 "SELECT hash(*) AS h FROM db.events", "SELECT array(*) AS a FROM db.events",
                                 "SELECT sha2(concat_ws('|', *), 256) AS h FROM db.events"])
def test_a_function_of_every_column_is_opaque_not_empty(sql: str) -> None:
    """Regression: Spark's struct(*) / to_json(struct(*)) / hash(*) read every column, and were recorded with no
    input at all: the identity inside the written value was invisible to erasure fan-out and purpose checks."""
    res = analyze(sql, SCHEMAS, "spark")
    assert res.opaque is not None and "every column" in res.opaque
    assert res.sources == ["db.events"]
    assert ok("SELECT count(*) AS n, count(*) FILTER (WHERE amount > 0) AS m FROM db.events", dialect="spark").columns \
        == {"n": [], "m": []}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(_UNION_STEPS), min_size=1, max_size=3), st.sampled_from(["case", "if", "coalesce"]),
       st.booleans())
def test_property_every_conditional_value_is_mapped_by_a_recorded_input(results, form, window):
    """Whatever each CASE / IF / COALESCE result does to email (optionally under lag(...) OVER (ORDER BY amount)),
    every value of the result column is what one recorded input computes from the source value."""
    exprs = [r.format(c="lag(email) OVER (ORDER BY amount)" if window else "email") for r in results]
    if form == "case":
        value = "CASE " + " ".join(f"WHEN amount > {i} THEN {e}" for i, e in enumerate(exprs[:-1])) + \
                f" ELSE {exprs[-1]} END" if len(exprs) > 1 else f"CASE WHEN amount > 0 THEN {exprs[0]} END"
    elif form == "if":
        value = f"if(amount > 0, {exprs[0]}, {exprs[-1]})"
    else:
        value = f"coalesce({', '.join(exprs)})"
    sql = f"SELECT {value} AS m FROM db.events"
    res = ok(sql)
    con = duckdb.connect()
    con.execute("CREATE SCHEMA db")
    con.execute("CREATE TABLE db.events AS SELECT * FROM (VALUES (' Ann@X.org ', 0.0), (' Ann@X.org ', 1.0), "
                "(' Ann@X.org ', 2.0)) t(email, amount)")
    # the first row's lag() is NULL, not a value of the subject (concat('p-', NULL) is 'p-'): left out
    rows = f"SELECT m FROM (SELECT {value} AS m, lag(email) OVER (ORDER BY amount) AS prev FROM db.events) q " \
           "WHERE prev IS NOT NULL" if window else sql
    got = {r[0] for r in con.execute(rows).fetchall()} - {None}
    mapped = set()
    for ref in res.columns["m"]:
        if ref.subtype == "IDENTITY":
            mapped.add(" Ann@X.org ")
        else:
            assert ref.expression is not None, ref
            mapped.update(map_values(ref.expression, ref.column, "VARCHAR", [" Ann@X.org "]))
    assert got <= mapped, (sql, res.columns)
