"""erase(follow_lineage=True) after an identity column was dropped from a request's table.

``db.events.email`` flowed into ``mart.by_mail.mail`` (``lower(email)``), then the column was dropped from
db.events. The walk started from today's identity columns only: by_mail kept the subject's rows and the
report named neither the table nor the dropped column.
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


def _erase_after_the_source_column_is_dropped(cat: Catalog, ns: str) -> None:
    ids = [7, 8, 9, 7]
    events = pa.table({"user_id": pa.array(ids, pa.int64()),
                       "email": ["Ann@X.org" if u == 7 else f"u{u}@Mail.com" for u in ids],
                       "handle": [f"h{u}" for u in ids]})
    cat.create_table(f"{ns}.events", schema=events.schema)
    ip.configure_identity(cat.load_table(f"{ns}.events"), ["user_id", "email", "handle"])
    ip.append(cat.load_table(f"{ns}.events"), events)
    ip.derive(cat, f"SELECT lower(email) AS mail, count(*) AS n FROM {ns}.events GROUP BY 1", f"{ns}.by_mail")
    with cat.load_table(f"{ns}.events").update_schema() as update:
        update.delete_column("email")
    ip.configure_identity(cat.load_table(f"{ns}.events"), ["user_id", "handle"])

    report = ip.erase(cat, [7, "Ann@X.org"], [f"{ns}.events"], follow_lineage=True)

    assert f"{ns}.by_mail" in report.tables, str(report)
    assert sorted(cat.load_table(f"{ns}.by_mail").scan().to_arrow().column("mail").to_pylist()) == \
        ["u8@mail.com", "u9@mail.com"]  # the subject's lower-cased email went, nobody else's
    assert sorted(cat.load_table(f"{ns}.events").scan().to_arrow().column("user_id").to_pylist()) == [8, 9]
    assert report.lineage is not None
    assert any(f"{ns}.events.email was dropped" in w for w in report.lineage.warnings), report.lineage.warnings


def test_a_dropped_identity_column_is_still_followed_downstream(catalog: Catalog) -> None:
    catalog.create_namespace("mart")
    _erase_after_the_source_column_is_dropped(catalog, "mart")


def test_a_dropped_identity_column_is_still_followed_downstream_on_s3_rest(rest_catalog: Catalog,
                                                                            lake_ns: str) -> None:
    _erase_after_the_source_column_is_dropped(rest_catalog, lake_ns)


def test_a_renamed_identity_column_whose_old_name_was_reused_is_still_followed(catalog: Catalog) -> None:
    """email renamed to mail_addr, a new (no identity) email added, and the snapshot the derive read expired: the
    recorded 'email' then resolves to the new column, and by_mail kept the subject's lower-cased email silently."""
    from datetime import timedelta

    from pyiceberg.types import StringType

    ids = [7, 8, 9]
    events = pa.table({"user_id": pa.array(ids, pa.int64()),
                       "email": ["Ann@X.org" if u == 7 else f"u{u}@Mail.com" for u in ids]})
    catalog.create_table("db.events", schema=events.schema)
    ip.configure_identity(catalog.load_table("db.events"), ["user_id", "email"])
    ip.append(catalog.load_table("db.events"), events)
    ip.derive(catalog, "SELECT lower(email) AS mail, count(*) AS n FROM db.events GROUP BY 1", "db.by_mail")
    with catalog.load_table("db.events").update_schema() as update:
        update.rename_column("email", "mail_addr")
    ip.configure_identity(catalog.load_table("db.events"), ["user_id", "mail_addr"])
    with catalog.load_table("db.events").update_schema() as update:
        update.add_column("email", StringType())
    ip.append(catalog.load_table("db.events"),
              pa.table({"user_id": pa.array([30], pa.int64()), "mail_addr": ["u30@Mail.com"], "email": ["note"]}))
    ip.expire_snapshots("db.events", older_than=timedelta(0), retain_last=1, catalog=catalog)

    report = ip.erase(catalog, [7, "Ann@X.org"], ["db.events"], follow_lineage=True)

    assert "db.by_mail" in report.tables, str(report)
    assert sorted(catalog.load_table("db.by_mail").scan().to_arrow().column("mail").to_pylist()) == \
        ["u8@mail.com", "u9@mail.com"]
    assert report.lineage is not None
    assert any("db.events.email is no identity column" in w for w in report.lineage.warnings), report.lineage.warnings


def test_a_derived_column_renamed_and_its_name_reused_keeps_its_flow_after_expiry(catalog: Catalog) -> None:
    """db.d.uid (user_id + 1000) renamed to person, a new uid column added, and the derive's snapshot expired: the
    recorded 'uid' named two columns over time and no snapshot told which, so the flow went to the new uid (no
    identity column: 'not erased there') and person kept the subject's 1007. The history now keeps the schema id."""
    from datetime import timedelta

    from pyiceberg.types import LongType

    catalog.create_table("db.events", schema=pa.schema([pa.field("user_id", pa.int64())]))
    ip.configure_identity(catalog.load_table("db.events"), ["user_id"])
    ip.append(catalog.load_table("db.events"), pa.table({"user_id": pa.array([7, 8, 9], pa.int64())}))
    ip.derive(catalog, "SELECT user_id + 1000 AS uid FROM db.events", "db.d")
    with catalog.load_table("db.d").update_schema() as update:
        update.rename_column("uid", "person")
    with catalog.load_table("db.d").update_schema() as update:
        update.add_column("uid", LongType())
    ip.append(catalog.load_table("db.d"), pa.table({"person": pa.array([1050], pa.int64()),
                                                    "uid": pa.array([1007], pa.int64())}))
    ip.expire_snapshots("db.d", older_than=timedelta(0), retain_last=1, catalog=catalog)
    assert ip.lineage.graph(catalog).downstream("db.events.user_id") == ["db.d.person"]

    ip.erase(catalog, [7], ["db.events"], follow_lineage=True)

    kept = catalog.load_table("db.d").scan().to_arrow().to_pylist()
    assert sorted(kept, key=lambda r: r["person"]) == [
        {"person": 1008, "uid": None}, {"person": 1009, "uid": None}, {"person": 1050, "uid": 1007}]
