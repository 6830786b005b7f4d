"""erase(follow_lineage=True) over lineage cycles whose expressions change the subject's value.

A derive that reads its own output (``A -> B -> A``, or ``INSERT OVERWRITE a SELECT ... FROM a``) makes a
cycle in the graph. Through an expression that changes the value (``user_id + 1000``) the subject's value
is a new one every time round: the walk must go round as often as the flow was written, then stop.
"""

from __future__ import annotations

import pyarrow as pa
import pytest
from pyiceberg.catalog import Catalog

import iceberg_privacy as ip
from iceberg_privacy.lineage.fanout import plan_fanout
from iceberg_privacy.rights.keyed import SECRET_ENV


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, "test-secret-0123456789abcdef")


def _people(catalog: Catalog, name: str, ids: list[int]) -> None:
    t = pa.table({"user_id": pa.array(ids, pa.int64()), "note": [f"n{i}" for i in ids]})
    catalog.create_table(name, schema=t.schema)
    ip.configure_identity(catalog.load_table(name), ["user_id"])
    ip.append(catalog.load_table(name), t)


def _ids(catalog: Catalog, name: str, column: str) -> list[int]:
    return sorted(catalog.load_table(name).scan().to_arrow().column(column).to_pylist())


@pytest.mark.timeout(120)
def test_a_two_table_cycle_through_an_expression_terminates_and_erases_only_the_subject(catalog: Catalog) -> None:
    _people(catalog, "db.a", [7, 8, 9])
    ip.derive(catalog, "SELECT user_id + 1000 AS uid FROM db.a", "db.b")
    ip.derive(catalog, "SELECT uid AS user_id, 'copied' AS note FROM db.b", "db.a", mode="append")
    assert ip.lineage.graph(catalog).cycles() == [["db.a", "db.b"]]

    fan = plan_fanout(catalog, [catalog.load_table("db.a")], [7])  # went round forever: 1007, 2007, 3007, ...
    assert fan.values == {"db.b": [1007], "db.a": [1007]}
    assert any("lineage cycle" in w for w in fan.warnings), fan.warnings

    report = ip.erase(catalog, [7], ["db.a"], follow_lineage=True)
    assert set(report.tables) == {"db.a", "db.b"}, str(report)
    assert _ids(catalog, "db.a", "user_id") == [8, 9, 1008, 1009]  # the subject's 7 and its copied 1007
    assert _ids(catalog, "db.b", "uid") == [1008, 1009]


@pytest.mark.timeout(120)
def test_a_table_overwritten_from_itself_is_followed_once_per_write(catalog: Catalog) -> None:
    _people(catalog, "db.a", [7, 20, 30])
    for _ in range(2):  # INSERT OVERWRITE db.a SELECT user_id + 1 ... FROM db.a, twice: the subject is 9 now
        ip.derive(catalog, "SELECT user_id + 1 AS user_id, note FROM db.a", "db.a", mode="overwrite")
    assert _ids(catalog, "db.a", "user_id") == [9, 22, 32]

    fan = plan_fanout(catalog, [catalog.load_table("db.a")], [7])
    assert fan.values == {"db.a": [8, 9]}  # two writes: two steps round, not 10, 11, ...

    ip.erase(catalog, [7], ["db.a"], follow_lineage=True)
    assert _ids(catalog, "db.a", "user_id") == [22, 32]
