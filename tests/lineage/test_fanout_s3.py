"""erase(follow_lineage=True) over a three-level derived chain on SeaweedFS with the REST catalog.

Every data file any snapshot ever referenced (before and after the erasure) is opened through the
table's FileIO (s3://): none that still exists may hold the subject, under any of its mapped values.
"""

from __future__ import annotations

import hashlib

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table

import iceberg_privacy as ip
from iceberg_privacy.rights.keyed import SECRET_ENV
from tests.lineage.test_fanout import subject_hits

SUBJECT_ID, SUBJECT_MAIL = 7, "Ann@X.org"
NEEDLES = [SUBJECT_MAIL, SUBJECT_MAIL.lower(), SUBJECT_MAIL.upper(), hashlib.sha256(str(SUBJECT_ID).encode()).hexdigest()]


def _data_files(table: Table) -> set[str]:
    out: set[str] = set()
    for snap in table.metadata.snapshots:
        for manifest in snap.manifests(table.io):
            out.update(e.data_file.file_path for e in manifest.fetch_manifest_entry(table.io, discard_deleted=False))
    return out


def _subject_rows(table: Table, paths: set[str]) -> int:
    found = 0
    for path in paths:
        source = table.io.new_input(path)
        if not source.exists():
            continue  # deleted by the purge: the point
        with source.open() as f:
            found += subject_hits(pq.read_table(f), SUBJECT_ID, NEEDLES)
    return found


@pytest.mark.slow
def test_three_level_chain_erased_on_s3_rest(rest_catalog: Catalog, lake_ns: str,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, "test-secret-0123456789abcdef")
    cat, ns = rest_catalog, lake_ns
    ids = [SUBJECT_ID if i % 4 == 0 else 100 + i for i in range(12)]
    events = pa.table({"user_id": pa.array(ids, pa.int64()),
                       "email": [SUBJECT_MAIL if u == SUBJECT_ID else f"u{u}@Mail.com" for u in ids],
                       "amount": [float(i) for i in range(12)]})
    cat.create_table(f"{ns}.events", schema=events.schema)
    ip.configure_identity(cat.load_table(f"{ns}.events"), ["user_id", "email"])
    ip.append(cat.load_table(f"{ns}.events"), events)
    ip.derive(cat, f"SELECT user_id AS uid, lower(email) AS mail, sum(amount) AS spent FROM {ns}.events "
                   "GROUP BY ALL", f"{ns}.daily")
    ip.derive(cat, f"SELECT uid AS person, mail FROM {ns}.daily", f"{ns}.weekly")
    ip.derive(cat, f"SELECT upper(mail) AS contact, sha256(CAST(person AS VARCHAR)) AS person_hash "
                   f"FROM {ns}.weekly", f"{ns}.profile")
    names = [f"{ns}.{t}" for t in ("events", "daily", "weekly", "profile")]
    before = {n: _data_files(cat.load_table(n)) for n in names}
    assert all(_subject_rows(cat.load_table(n), before[n]) > 0 for n in names)
    others = {n: cat.load_table(n).scan().to_arrow().num_rows for n in names}

    report = ip.erase(cat, [SUBJECT_ID, SUBJECT_MAIL], [f"{ns}.events"], follow_lineage=True, purge=True)

    assert set(report.tables) == set(names), str(report)
    for n in names:
        table = cat.load_table(n)
        assert _subject_rows(table, before[n] | _data_files(table)) == 0, n
        assert table.scan().to_arrow().num_rows < others[n]  # the subject's rows went, not everyone's
        assert table.scan().to_arrow().num_rows > 0


def test_a_value_another_person_holds_is_withheld_on_s3_rest(rest_catalog: Catalog, lake_ns: str,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The advV withholding on SeaweedFS behind the REST catalog: the source column is read through the FileIO."""
    monkeypatch.setenv(SECRET_ENV, "test-secret-0123456789abcdef")
    cat, ns = rest_catalog, lake_ns
    data = pa.table({"user_id": pa.array([7, 1007, 8], pa.int64()), "page": ["p7", "p1007", "p8"]})
    cat.create_table(f"{ns}.a", schema=data.schema)
    ip.configure_identity(cat.load_table(f"{ns}.a"), ["user_id"])
    ip.append(cat.load_table(f"{ns}.a"), data)
    ip.derive(cat, f"SELECT user_id AS k, page FROM {ns}.a UNION ALL SELECT user_id + 1000, page || '+' FROM {ns}.a",
              f"{ns}.u")
    report = ip.erase(cat, [7], [f"{ns}.a"], follow_lineage=True)
    assert report.lineage is not None and any("in several ways" in w for w in report.lineage.warnings)
    pages = sorted(r["page"] for r in cat.load_table(f"{ns}.u").scan().to_arrow().to_pylist())
    assert pages == ["p1007", "p1007+", "p7+", "p8", "p8+"]  # person 1007's own row stays (so does p7+: 1007)
