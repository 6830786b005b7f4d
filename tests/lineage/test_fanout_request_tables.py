"""erase(follow_lineage=True) when the request names a derived table too.

Values lineage maps into one column of a downstream table (the subject's 7 is 1007 in ``uid = user_id + 1000``)
are another person's in the table's other columns (person 1007 in ``ref``). A table of the request was matched
with every mapped value in every identity column, so naming the derived table in the request as well erased
other people's rows that the same erasure without it kept.
"""

from __future__ import annotations

import pyarrow as pa
import pytest
from pyiceberg.catalog import Catalog

import iceberg_privacy as ip
from iceberg_privacy.rights.keyed import SECRET_ENV


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, "test-secret-0123456789abcdef")


@pytest.mark.parametrize("tables", [["db.events"], ["db.events", "db.daily"], ["db.daily", "db.events"]])
def test_a_value_mapped_into_one_column_is_not_matched_in_another_of_a_request_table(catalog: Catalog,
                                                                                      tables: list[str]) -> None:
    events = pa.table({"user_id": pa.array([7, 8, 9], pa.int64()), "referrer": pa.array([9, 1007, 1008], pa.int64())})
    catalog.create_table("db.events", schema=events.schema)
    ip.configure_identity(catalog.load_table("db.events"), ["user_id"])
    ip.append(catalog.load_table("db.events"), events)
    ip.derive(catalog, "SELECT user_id + 1000 AS uid, referrer AS ref FROM db.events", "db.daily")
    ip.configure_identity(catalog.load_table("db.daily"), ["uid", "ref"])

    report = ip.erase(catalog, [7], tables, follow_lineage=True)

    assert set(report.tables) == {"db.events", "db.daily"}, str(report)
    kept = catalog.load_table("db.daily").scan().to_arrow().to_pylist()
    # person 8's row refers to person 1007: it stays, whichever tables the request names
    assert sorted(kept, key=lambda r: r["uid"]) == [{"uid": 1008, "ref": 1007}, {"uid": 1009, "ref": 1008}]
