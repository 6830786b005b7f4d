"""Linked identifiers and rename-proof identity columns on SeaweedFS with the Iceberg REST catalog (s3://)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
from pyiceberg.catalog import Catalog

import iceberg_privacy as ip
from iceberg_privacy.rights.journal import Journal


def test_erase_follows_the_other_identifier_through_a_join_after_a_rename(rest_catalog: Catalog, lake_ns: str,
                                                                         tmp_path: Path) -> None:
    cat, ns = rest_catalog, lake_ns
    users = pa.table({"user_id": pa.array([42, 43, 44], pa.int64()), "email": ["ann@x.org", "bob@x.org", "cy@x.org"]})
    events = pa.table({"user_id": pa.array([42, 42, 43, 44], pa.int64()), "page": ["a", "b", "c", "d"]})
    for name, data, identity in (("users", users, ["user_id", "email"]), ("events", events, ["user_id"])):
        table = ip.configure_identity(cat.create_table(f"{ns}.{name}", schema=data.schema), identity)
        ip.append(table, data)
    ip.derive(cat, f"SELECT u.email, count(*) AS n FROM {ns}.events e JOIN {ns}.users u USING (user_id) GROUP BY 1",
              f"{ns}.mailing")
    with cat.load_table(f"{ns}.users").update_schema() as update:  # the declared column renamed afterwards
        update.rename_column("email", "contact")
    assert cat.load_table(f"{ns}.users").location().startswith("s3://")

    exported = ip.access(cat, 42, [f"{ns}.mailing", f"{ns}.users"], out=tmp_path / "export")
    assert exported.tables[f"{ns}.mailing"].rows == 1  # found by the email read from users.contact

    report = ip.erase(cat, 42, [f"{ns}.users", f"{ns}.events"], follow_lineage=True, request_id="s3-linked")
    assert report.linked is not None and [li.column for li in report.linked.identifiers] == [f"{ns}.users.contact"]
    assert cat.load_table(f"{ns}.mailing").scan().to_arrow().column("email").to_pylist().count("ann@x.org") == 0
    assert sorted(cat.load_table(f"{ns}.users").scan().to_arrow().column("contact").to_pylist()) == [
        "bob@x.org", "cy@x.org"]
    assert cat.load_table(f"{ns}.mailing").scan().to_arrow().num_rows == 2
    created = next(r for r in Journal(cat).rows("s3-linked") if r["event"] == "created")
    assert "ann@x.org" not in repr(created) and json.loads(created["detail"])["linked"]["digests"]
