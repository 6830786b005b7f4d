"""Subject ids that are also words of the table's own layout and metadata complete like any other.

The verification looks for the subject in every path segment and every string of the metadata. Before, a subject
``1`` (or ``0``, ``3``) matched the snapshot summaries' counts (``"added-data-files": "1"``), the manifests' Avro
headers (``"format-version": "2"``) and the library's ``privacy.identity.field-ids`` (``user_id=2,account=3``);
``data``/``metadata`` matched every file's path; ``main`` the default branch; ``long``/``identity``/``append``/
``PARQUET`` Iceberg's types, transforms, operations and file format; ``user_id=ann`` another person's partition folder;
``1010`` the object-storage layout's hash folders; ``user_id``, ``id``, ``string`` the schema's names and types.
Each request failed its verification on every run and never completed. The table's structure is now told apart from its data; a subject's own value still fails it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from pyiceberg.catalog import Catalog

import iceberg_privacy as ip
from iceberg_privacy.errors import VerificationFailedError
from iceberg_privacy.rights.journal import Journal
from iceberg_privacy.storage import local_path
from tests.helpers import all_rows, make_partitioned_table, make_table, unique_name

IDS = {  # what each layout writes that a subject could be mistaken for
    "plain": ["0", "1", "3", "data", "metadata", "main", "long", "append", "PARQUET", "user_id", "id", "string"],
    "identity-partitioned": ["1", "identity", "user_id=ann"],
    "object-storage": ["0101", "10110010"],
}


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    with pytest.MonkeyPatch.context() as mp:
        from iceberg_privacy.rights.keyed import SECRET_ENV
        from tests.helpers import SECRET

        mp.setenv(SECRET_ENV, SECRET)
        catalog = ip.connect(home=tmp_path_factory.mktemp("layout"))
        catalog.create_namespace("db")
        return catalog


@pytest.mark.parametrize("layout", ["plain", "identity-partitioned", "object-storage"])
def test_a_subject_named_like_the_layout_completes(lake: Catalog, layout: str) -> None:
    subjects = IDS[layout]  # one request for all of them: any one mistaken for a trace fails it
    name = unique_name("l")
    batches = [[*subjects, "ann"], ["zed", *subjects]]
    if layout == "plain":
        table = make_table(lake, name, batches)
    else:
        props = {"write.object-storage.enabled": "true"} if layout == "object-storage" else {}
        table = make_partitioned_table(lake, name, batches, **props)
    report = ip.erase(lake, subjects, tables=[name], purge=True)
    assert Journal(lake).get(report.request_id).status == "completed"
    assert sorted(r["user_id"] for r in all_rows(table)) == ["ann", "zed"]


def test_a_leftover_holding_such_a_subject_still_fails(catalog: Catalog, tmp_path: Path) -> None:
    table = make_partitioned_table(catalog, "db.p", [["data", "ann"]])
    data_file = next((Path(local_path(table.location())) / "data" / "user_id=data").glob("*.parquet"))
    shutil.copy(data_file, tmp_path / "copy.parquet")
    ip.erase(catalog, ["data"], request_id="r")
    shutil.copy(tmp_path / "copy.parquet", data_file.parent / "stray.parquet")  # a young leftover: rows and folder
    with pytest.raises(VerificationFailedError, match=r"still in db.p \(1 rows\)"):
        ip.purge(catalog, "r")
    assert Journal(catalog).get("r").status != "completed"


def test_on_object_storage(s3_catalog: tuple[Catalog, str]) -> None:
    catalog, ns = s3_catalog
    name = f"{ns}.p"
    subjects = ["1", "data", "metadata", "user_id=ann", ns]  # the namespace's name is a folder of the location too
    table = make_partitioned_table(catalog, name, [[*subjects, "ann"]], **{"write.object-storage.enabled": "true"})
    report = ip.erase(catalog, subjects, tables=[name], purge=True)
    assert Journal(catalog).get(report.request_id).status == "completed"
    assert [r["user_id"] for r in all_rows(table)] == ["ann"]
