"""A subject whose id is exactly the truncated bound of ANOTHER person's longer id held in a live file.

Iceberg's default metrics mode for strings and binary is ``truncate(16)``: a manifest's lower bound of a file whose
smallest id is ``user000000000001-x`` is ``user000000000001``, and an upper bound is cut with its last character
incremented (``user000000000000-x`` gives ``user000000000001``). When ``user000000000001`` is erased, that bound
equals the subject's whole value, yet the file holds no row of the subject: it is another person's data. Before,
the verification reported it as the subject's and the request stayed incomplete however often it was run. So did a
``truncate[W]`` partition value equal to the subject's whole id (a manifest's partition tuple, seen again by the
scan of the manifest's strings). Such a match is now reported in ``VerifyReport.notes``, not as a trace; the
subject's own bytes (a file that still holds its rows) still fail the verification."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyiceberg.catalog import Catalog
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.transforms import TruncateTransform
from pyiceberg.types import BinaryType, LongType, NestedField, StringType

import iceberg_privacy as ip
from iceberg_privacy.errors import VerificationFailedError
from iceberg_privacy.rights.journal import Journal
from iceberg_privacy.storage import local_path
from tests.helpers import unique_name

S = "user000000000001"  # 16 characters: the default truncation length


def _table(catalog: Catalog, name: str, batches: list[list[Any]], *, binary: bool = False,
           width: int | None = None) -> Any:
    schema = Schema(NestedField(1, "id", LongType(), required=False),
                    NestedField(2, "uid", BinaryType() if binary else StringType(), required=False))
    spec = PartitionSpec(PartitionField(2, 1000, TruncateTransform(width), "p")) if width else PartitionSpec()
    table = ip.configure_identity(catalog.create_table(name, schema, partition_spec=spec), ["uid"])
    arrow = pa.schema([pa.field("id", pa.int64()), pa.field("uid", pa.binary() if binary else pa.string())])
    n = 0
    for batch in batches:
        ip.append(table, pa.Table.from_pylist([{"id": n + i, "uid": v} for i, v in enumerate(batch)], schema=arrow))
        n += len(batch)
    return catalog.load_table(name)


def _uids(table: Any) -> list[Any]:
    return sorted(table.refresh().scan().to_arrow().column("uid").to_pylist())


CASES = {
    "lower bound": ([[S + "-x", S, "zed"], [S + "-x"]], S, False, None),
    "upper bound, last character incremented": ([["aaa", "user000000000000-x", S]], S, False, None),
    "binary bound": ([[b"\x01" * 16 + b"x", b"\x01" * 16, b"\x05"]], (b"\x01" * 16).hex(), True, None),
    "truncate[16] partition": ([[S + "-x", S], [S]], S, False, 16),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("with_values", [True, False], ids=["erase-purge", "purge-later"])
def test_another_persons_truncated_bound_equal_to_the_subject_does_not_block_completion(
        catalog: Catalog, case: str, with_values: bool) -> None:
    batches, subject, binary, width = CASES[case]
    table = _table(catalog, "db.tb", batches, binary=binary, width=width)
    others = [v for b in batches for v in b if v != (bytes.fromhex(subject) if binary else subject)]
    ip.erase(catalog, [subject], request_id="r", purge=with_values)
    report = ip.purge(catalog, "r") if not with_values else None
    assert Journal(catalog).get("r").status == "completed"
    assert _uids(table) == sorted(others)
    if report is not None and not report.tables["db.tb"].skipped:
        verify = report.tables["db.tb"].verify
        assert verify is not None and verify.ok and verify.notes and all(S not in n for n in verify.notes)


def test_the_subjects_own_file_next_to_such_a_bound_still_fails(catalog: Catalog, tmp_path: Path) -> None:
    """The other person's bound excuses nothing else: a leftover copy of the subject's rows still fails."""
    table = _table(catalog, "db.tb2", [[S + "-x", S]])
    data = next((Path(local_path(table.location())) / "data").rglob("*.parquet"))
    shutil.copy(data, tmp_path / "copy.parquet")
    ip.erase(catalog, [S], request_id="r")
    shutil.copy(tmp_path / "copy.parquet", data.parent / "stray.parquet")  # a young leftover holding the subject
    with pytest.raises(VerificationFailedError, match="1 rows"):
        ip.purge(catalog, "r")
    assert Journal(catalog).get("r").status != "completed"


@settings(max_examples=5)
@given(suffixes=st.lists(st.text(st.sampled_from("-x0Z\u00e9"), min_size=1, max_size=3), min_size=1, max_size=3),
       width=st.sampled_from([None, 16]))
def test_property_ids_extending_the_subject_never_block_it(shared_catalog: Catalog, suffixes: list[str],
                                                          width: int | None) -> None:
    name = unique_name("tb")
    others = [S + s for s in suffixes]
    table = _table(shared_catalog, name, [[*others, S], others], width=width)
    report = ip.erase(shared_catalog, [S], tables=[name], purge=True)
    assert Journal(shared_catalog).get(report.request_id).status == "completed"
    assert _uids(table) == sorted(others * 2)


def test_on_object_storage(s3_catalog: tuple[Catalog, str]) -> None:
    catalog, ns = s3_catalog
    table = _table(catalog, f"{ns}.tb", [[S + "-x", S], [S]], width=16)
    ip.erase(catalog, [S], request_id=f"{ns}-r")
    ip.purge(catalog, f"{ns}-r")
    assert Journal(catalog).get(f"{ns}-r").status == "completed"
    assert _uids(table) == [S + "-x"]
