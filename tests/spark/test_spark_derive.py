"""derive(..., spark=session): Spark SQL over Iceberg tables, written by the data source, same lineage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

import iceberg_privacy as ip
from iceberg_privacy import lineage
from iceberg_privacy.lineage.record import SUMMARY_KEY, LineageRecord

pytestmark = pytest.mark.spark

EVENTS = pa.table({
    "user_id": pa.array([1, 2, 3, 1], pa.int64()),
    "email": ["Ann@X.org", "b@y.org", "c@z.org", "Ann@X.org"],
    "amount": [1.0, 2.0, 3.0, 4.0],
})


@pytest.mark.slow
def test_spark_derive_matches_duckdb_and_records_lineage(spark: Any, tmp_path: Path) -> None:
    catalog = ip.connect(home=tmp_path / "home")
    catalog.create_namespace("db")
    ip.init_secret(tmp_path / "home")  # Spark's Python workers find the secret in the catalog home
    ip.configure_identity(catalog.create_table("db.events", schema=EVENTS.schema), ["user_id", "email"])
    ip.append(catalog.load_table("db.events"), EVENTS)
    sql = ("WITH t AS (SELECT user_id, lower(email) AS mail, amount FROM db.events WHERE amount > 1) "
           "SELECT user_id AS uid, mail, sum(amount) AS total FROM t GROUP BY user_id, mail")
    rep = ip.derive(catalog, sql, "mart.spark", spark=spark)
    ip.derive(catalog, sql, "mart.duck")
    got = catalog.load_table("mart.spark").scan().to_arrow().sort_by("uid")
    want = catalog.load_table("mart.duck").scan().to_arrow().sort_by("uid")
    assert got.to_pylist() == want.to_pylist()
    assert rep.engine == "spark" and rep.rows == 3
    snap = catalog.load_table("mart.spark").current_snapshot()
    rec = LineageRecord.parse(snap.summary.additional_properties[SUMMARY_KEY])
    assert (rec.op, rec.engine, rec.status) == ("derive", "spark", "complete")
    assert [s.table for s in rec.sources] == ["db.events"]
    assert rec.columns["uid"][0].subtype == "IDENTITY"
    assert rec.columns["mail"][0].subtype == "TRANSFORMATION" and rec.columns["mail"][0].expression
    assert {(f.column, f.subtype) for f in rec.indirect} >= {("amount", "FILTER")}
    # The Spark-written sink has bloom sidecars on its propagated identity columns.
    table = catalog.load_table("mart.spark")
    assert set(lineage.Annotations.of(table.properties).identity) == {"uid", "mail"}
    assert ip.lookup(table, "uid", 1).num_rows == 1
    # A plain Spark write through the data source is recorded as external rows from Spark.
    spark.createDataFrame([(9, "z@z.org", 1.0)], "user_id long, email string, amount double").write.format(
        "iceberg-privacy").option("catalog.home", str(tmp_path / "home")).mode("append").save("db.events")
    snap = catalog.load_table("db.events").current_snapshot()
    rec = LineageRecord.parse(snap.summary.additional_properties[SUMMARY_KEY])
    assert (rec.op, rec.engine, rec.status) == ("append", "spark", "external")
    # Erasure follows the Spark-derived table too, mapping the email through lower().
    report = ip.erase(catalog, [1, "Ann@X.org"], ["db.events"], follow_lineage=True, home=tmp_path / "home")
    assert report.tables["mart.spark"].rows_removed == 1
    assert report.tables["mart.duck"].rows_removed == 1
