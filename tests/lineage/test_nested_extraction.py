"""An element or field taken out of a nested identity column (a list of ids, a struct holding an id) is an
identifier: the derived column is an identity column and erasure fan-out matches it by the request's values.

It was taken for a lossy expression ("maps many people onto one value"): ``friends[1]``,
``struct_extract(who, 'id')``, ``element_at(friends, 1)`` or ``list_sort(friends)`` left the sink
undeclared and fan-out stopped there, so the subject's id stayed in the derived table.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from pyiceberg.catalog import Catalog

import iceberg_privacy as ip
from iceberg_privacy.lineage.evaluate import extracts, value_preserving
from iceberg_privacy.rights.keyed import SECRET_ENV

SUBJECT = 42  # two digits: a string read of the list ('42'[1] = '4') would name another person


@pytest.mark.parametrize(("expression", "column", "dialect"), [
    ("friends[1]", "friends", "duckdb"), ("STRUCT_EXTRACT(who, 'id')", "who", "duckdb"),
    ("who['id']", "who", "duckdb"), ("who.id", "who", "duckdb"), ("ELEMENT_AT(friends, 1)", "friends", "spark"),
    ("friends[0]", "friends", "spark"), ("LIST_EXTRACT(friends, 1)", "friends", "duckdb"),
    ("LIST_SORT(friends)", "friends", "duckdb"), ("(who['ids'])[2]", "who", "duckdb"),
])
def test_element_or_field_of_a_nested_column_is_an_identifier(expression: str, column: str, dialect: str) -> None:
    assert extracts(expression, column, dialect=dialect)
    assert value_preserving(expression, column, dialect=dialect, nested=True)
    assert value_preserving(f"MD5(CAST({expression} AS TEXT))", column, dialect=dialect, nested=True)


@pytest.mark.parametrize(("expression", "column"), [
    ("email[1]", "email"), ("email[1:3]", "email"), ("ELEMENT_AT(email, 1)", "email"),
])
def test_the_same_syntax_over_a_string_is_a_lossy_substring(expression: str, column: str) -> None:
    assert not value_preserving(expression, column, dialect="duckdb", nested=False)


@pytest.mark.parametrize(("expression", "column"), [
    ("friends[1:2]", "friends"), ("LEN(friends)", "friends"), ("LOWER(friends[1])", "other"),
    ("MD5(CAST(friends[1] AS TEXT))", "friends"), ("friends", "friends"),
])
def test_only_a_pure_extraction_passes_the_request_values_through(expression: str, column: str) -> None:
    assert not extracts(expression, column, dialect="duckdb")


QUERIES = {
    "by_index": "SELECT friends[1] AS first_friend FROM db.people",
    "by_function": "SELECT list_extract(friends, 1) AS first_friend FROM db.people",
    "struct_field": "SELECT struct_extract(who, 'id') AS wid FROM db.people",
    "struct_key": "SELECT who['id'] AS wid FROM db.people",
    "sorted": "SELECT list_sort(friends) AS fs FROM db.people",
}


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("nested") / "home"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(SECRET_ENV, "test-secret-0123456789abcdef")
        catalog = ip.connect(home=home)
        catalog.create_namespace("db")
        ids = [SUBJECT if i % 4 == 0 else 100 + i for i in range(12)]
        data = pa.table({
            "friends": pa.array([[u, 1000 + u] for u in ids], pa.list_(pa.int64())),
            "who": pa.array([{"id": u, "name": f"n{u}"} for u in ids],
                            pa.struct([("id", pa.int64()), ("name", pa.string())])),
            "amount": [float(i) for i in range(12)],
        })
        catalog.create_table("db.people", schema=data.schema)
        ip.configure_identity(catalog.load_table("db.people"), ["friends", "who"])
        ip.append(catalog.load_table("db.people"), data)
        for name, sql in QUERIES.items():
            ip.derive(catalog, sql, f"mart.{name}")
    return home


def _holds(value: object) -> bool:
    if isinstance(value, list):
        return any(_holds(v) for v in value)
    if isinstance(value, dict):
        return any(_holds(v) for v in value.values())
    return value == SUBJECT


@pytest.mark.usefixtures("lake")
def test_extracted_columns_are_identity_columns_and_erased(lake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, "test-secret-0123456789abcdef")
    catalog = ip.connect(home=lake)
    sinks = [f"mart.{n}" for n in QUERIES]
    for sink in sinks:
        assert ip.lineage.Annotations.of(catalog.load_table(sink).properties).identity, sink
        assert any(_holds(v) for v in catalog.load_table(sink).scan().to_arrow().to_pylist()), sink
    report = ip.erase(catalog, [SUBJECT], ["db.people"], follow_lineage=True)
    assert report.lineage is not None
    assert not [w for w in report.lineage.warnings if "maps many people" in w or "cannot be evaluated" in w], \
        report.lineage.warnings
    for sink in sinks:
        assert sink in report.tables, sink
        left = catalog.load_table(sink).scan().to_arrow().to_pylist()
        assert not [r for r in left if _holds(r)], (sink, left)
        assert len(left) == 9, sink  # everyone else stays


@pytest.mark.slow
def test_extracted_columns_are_erased_on_s3_rest(rest_catalog: Catalog, lake_ns: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, "test-secret-0123456789abcdef")
    cat, ns = rest_catalog, lake_ns
    ids = [SUBJECT if i % 4 == 0 else 100 + i for i in range(8)]
    data = pa.table({"friends": pa.array([[u, 1000 + u] for u in ids], pa.list_(pa.int64())),
                     "who": pa.array([{"id": u} for u in ids], pa.struct([("id", pa.int64())]))})
    cat.create_table(f"{ns}.people", schema=data.schema)
    ip.configure_identity(cat.load_table(f"{ns}.people"), ["friends", "who"])
    ip.append(cat.load_table(f"{ns}.people"), data)
    ip.derive(cat, f"SELECT friends[1] AS f, struct_extract(who, 'id') AS w FROM {ns}.people", f"{ns}.firsts")
    assert set(ip.lineage.Annotations.of(cat.load_table(f"{ns}.firsts").properties).identity) == {"f", "w"}
    report = ip.erase(cat, [SUBJECT], [f"{ns}.people"], follow_lineage=True)
    assert report.tables[f"{ns}.firsts"].rows_removed == 2, str(report)
    left = cat.load_table(f"{ns}.firsts").scan().to_arrow().to_pylist()
    assert len(left) == 6 and not [r for r in left if SUBJECT in r.values()]
