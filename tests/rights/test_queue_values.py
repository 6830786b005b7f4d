"""The queue takes every subject value a direct request takes (docs/subject-rights.md, "Which rows a value matches").

Found by a hostile pass: ``ip.erase(catalog, [np.int64(42)])`` (an id out of a pandas/Arrow column) and
``ip.erase(catalog, [42.0])`` erase account 42, but ``ip.enqueue(catalog, "erase", [np.int64(42)])`` was refused
with "subject values of type int64 cannot be queued" (likewise an Arrow scalar, a float, a ``memoryview``): the queue
sealed only plain Python types. Now they are sealed as their Python values and coerced at the pass exactly as a
direct request coerces them (a float still names no string id).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st
from pyiceberg.catalog import Catalog
from pyiceberg.schema import Schema
from pyiceberg.types import BinaryType, LongType, NestedField, StringType

import iceberg_privacy as ip
from iceberg_privacy.index.hashing import coerce_values
from iceberg_privacy.rights import queue_store


def _table(catalog: Catalog, name: str, typ: Any, arrow: pa.DataType, ids: list[Any]) -> None:
    t = catalog.create_table(f"db.{name}", Schema(NestedField(1, "uid", typ, required=False),
                                                  NestedField(2, "n", LongType(), required=False)))
    t = ip.configure_identity(t, ["uid"])
    ip.append(t, pa.table({"uid": pa.array(ids, arrow), "n": pa.array(range(len(ids)), pa.int64())}))


def test_numpy_arrow_float_and_memoryview_subjects_are_queued_and_erased_like_direct_ones(catalog: Catalog) -> None:
    _table(catalog, "l", LongType(), pa.int64(), [0, 42, 43, 44, 7])
    _table(catalog, "s", StringType(), pa.string(), ["42", "43", "44", "0", "ann", "bob"])
    _table(catalog, "b", BinaryType(), pa.binary(), [b"\x00\x42", b"\x43"])
    subjects = [np.int64(42), pa.scalar(43, pa.int64()), 44.0, np.float64(-0.0), np.str_("ann"),
                memoryview(b"\x00\x42")]
    for v in subjects:
        ip.enqueue(catalog, "erase", [v])
    report = ip.run_pending(catalog)
    assert not report.blocked and not report.skipped and len(report.completed) == len(subjects)
    assert catalog.load_table("db.l").scan().to_arrow().column("uid").to_pylist() == [7]
    # as a direct request: ints name their decimal text in a string column, a float names no string id
    assert sorted(catalog.load_table("db.s").scan().to_arrow().column("uid").to_pylist()) == ["0", "44", "bob"]
    assert catalog.load_table("db.b").scan().to_arrow().column("uid").to_pylist() == [b"\x43"]


_LONG, _STRING = LongType(), StringType()
_values = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.integers(min_value=-(2**53), max_value=2**53).map(float),
    st.integers(min_value=-(2**63), max_value=2**63 - 1).map(np.int64),
    st.text(min_size=1).filter(lambda s: s.strip() and s.isascii()),
)


def _coerced(v: Any, typ: Any) -> Any:
    try:
        return [lit.value for lit in coerce_values([v], typ, "uid")]
    except ip.IcebergPrivacyError as exc:
        return type(exc).__name__


@settings(max_examples=150, deadline=None)
@given(_values)
def test_a_sealed_value_coerces_as_the_value_given(v: Any) -> None:
    [back] = queue_store.decode_values(queue_store.encode_values([v]))
    for typ in (_LONG, _STRING):
        assert _coerced(back, typ) == _coerced(v, typ)
