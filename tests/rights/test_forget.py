"""The forget list: erased subjects' keyed digests, and every core write dropping their rows."""

from __future__ import annotations

import datetime as dt
import os
import pickle
import threading
import uuid

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyiceberg.catalog import Catalog
from pyiceberg.schema import Schema
from pyiceberg.types import (
    BinaryType,
    DateType,
    FixedType,
    ListType,
    LongType,
    MapType,
    NestedField,
    PrimitiveType,
    StringType,
    StructType,
    UUIDType,
)

import iceberg_privacy as ip
from iceberg_privacy.catalog import catalog_home
from iceberg_privacy.config import configure_identity
from iceberg_privacy.rights import forget, forget_screen, forget_store
from iceberg_privacy.rights.keyed import (
    SECRET_ENV,
    SECRET_FILE_ENV,
    SecretMissingError,
    canonical_array,
    digest,
    key_id,
)
from iceberg_privacy.rights.keyed import digest_literals as dl
from tests.helpers import unique_name

SECRET = b"test-secret-0123456789abcdef"
OTHER = b"other-secret-0123456789abcdef"
EXAMPLES = int(os.environ.get("IP_PROPERTY_EXAMPLES", "25"))

IDMAP = MapType(10, StringType(), 11, ListType(12, StructType(NestedField(13, "id", StringType(), required=False)),
                                               element_required=False), value_required=False)
SCHEMA = Schema(
    NestedField(1, "user_id", StringType(), required=False),
    NestedField(2, "acct", LongType(), required=False),
    NestedField(3, "ids", IDMAP, required=False),
    NestedField(4, "n", LongType(), required=False),
)
ARROW = pa.schema([
    ("user_id", pa.string()), ("acct", pa.int64()),
    ("ids", pa.map_(pa.string(), pa.list_(pa.struct([("id", pa.string())])))), ("n", pa.int64()),
])


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET.decode())
    monkeypatch.delenv(SECRET_FILE_ENV, raising=False)
    forget.clear_cache()


def _table(cat: Catalog, name: str, identity: list[str] | None = None):  # type: ignore[no-untyped-def]
    t = cat.create_table(name, SCHEMA)
    return configure_identity(t, identity or ["user_id", "acct", "ids"])


def _rows(users: list[str | None], accts: list[int | None] | None = None,
          idmaps: list[list[tuple[str, list[str | None]]] | None] | None = None) -> pa.Table:
    n = len(users)
    accts = accts if accts is not None else [None] * n
    idmaps = idmaps if idmaps is not None else [None] * n
    ids = [None if m is None else [(k, [{"id": v} for v in vs]) for k, vs in m] for m in idmaps]
    return pa.table({"user_id": users, "acct": pa.array(accts, pa.int64()), "ids": pa.array(ids, ARROW.field("ids").type),
                     "n": pa.array(range(n), pa.int64())}, schema=ARROW)


def _erase(cat: Catalog, target, strings=(), longs=(), secret: bytes = SECRET) -> int:  # type: ignore[no-untyped-def]
    digests = dl(secret, list(strings), StringType(), "user_id") + dl(secret, list(longs), LongType(), "acct")
    return forget.add(cat, target, digests, "req-1", secret_key_id=key_id(secret))


# ------------------------------------------------------------------------------------------ add
def test_add_is_idempotent_one_commit_per_batch(catalog: Catalog) -> None:
    t = _table(catalog, "db.events")
    assert _erase(catalog, t, ["ann", "bob", "ann"]) == 2
    assert _erase(catalog, t, ["bob", "carl"]) == 1
    assert _erase(catalog, t, ["ann", "carl"]) == 0
    assert _erase(catalog, "db", ["ann"]) == 1  # another scope: a new entry
    ft = catalog.load_table(("db", forget.forget_table_identifier(("db",), catalog)[-1]))
    assert len(ft.snapshots()) == 3 and ft.properties[forget.PROP_MARKER] == "1"
    ents = forget.entries(catalog, "db")
    assert ents.num_rows == 4
    assert sorted(ents.column("scope").to_pylist()) == ["*", "db.events", "db.events", "db.events"]
    assert set(ents.column("key_id").to_pylist()) == {key_id(SECRET)}
    assert all(len(d) == 32 for d in ents.column("digest").to_pylist())
    assert b"ann" not in b"".join(ents.column("digest").to_pylist())  # only keyed digests are stored


def test_add_validates(catalog: Catalog) -> None:
    t = _table(catalog, "db.events")
    with pytest.raises(ip.ConfigurationError, match="32-byte"):
        forget.add(catalog, t, [b"short"], "r", secret_key_id=key_id(SECRET))
    assert forget.add(catalog, t, [], "r", secret_key_id=key_id(SECRET)) == 0
    _erase(catalog, t, ["ann"])
    with pytest.raises(forget.ForgetKeyMismatchError, match="key id"):
        _erase(catalog, t, ["bob"], secret=OTHER)
    with pytest.raises(ip.ConfigurationError):
        forget.add(catalog, "", [b"x" * 32], "r", secret_key_id="k")


def test_reserved_name_taken_by_foreign_table(catalog: Catalog) -> None:
    catalog.create_table(("db", forget.forget_table_identifier(("db",), catalog)[-1]), SCHEMA)
    t = _table(catalog, "db.events")
    with pytest.raises(forget.ForgetListError, match="reserved"):
        _erase(catalog, t, ["ann"])


def test_concurrent_adds_are_idempotent(catalog: Catalog) -> None:
    t = _table(catalog, "db.events")
    got: list[int] = []
    errors: list[BaseException] = []

    def worker(names: list[str]) -> None:
        try:
            got.append(_erase(catalog, t, names))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=([f"u{i}" for i in range(k, k + 30)],)) for k in (0, 10, 20)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    assert sum(got) == 50
    assert forget.entries(catalog, "db").num_rows == 50


# ------------------------------------------------------------------------------------------ write path
def test_late_event_is_dropped_and_counted(catalog: Catalog) -> None:
    t = _table(catalog, "db.events")
    ip.append(t, _rows(["ann", "bob"]))
    assert forget.load(t) is None  # no list yet: zero cost
    _erase(catalog, t, ["ann"])
    version = catalog.load_table(("db", forget.forget_table_identifier(("db",), catalog)[-1])).current_snapshot().snapshot_id
    report = ip.append(t, _rows(["ann", "carl", "ann", None]))
    assert report.dropped_rows == 2 and report.rows == 2
    summary = t.refresh().current_snapshot().summary
    assert summary[forget.SUMMARY_DROPPED] == "2"
    assert summary[forget.SUMMARY_VERSION] == str(version)
    assert sorted(x or "" for x in t.scan().to_arrow().column("user_id").to_pylist()) == ["", "ann", "bob", "carl"]
    # nothing dropped still records which list the write was checked against
    ip.append(t, _rows(["dora"]))
    assert t.refresh().current_snapshot().summary[forget.SUMMARY_DROPPED] == "0"


def test_everything_dropped_commits_nothing(catalog: Catalog) -> None:
    t = _table(catalog, "db.events")
    ip.append(t, _rows(["bob"]))
    before = t.refresh().current_snapshot().snapshot_id
    _erase(catalog, t, ["ann"])
    report = ip.append(t, _rows(["ann", "ann"]))
    assert (report.snapshot_id, report.rows, report.dropped_rows, report.data_files) == (None, 0, 2, 0)
    assert t.refresh().current_snapshot().snapshot_id == before


def test_streamed_chunks_and_overwrite(catalog: Catalog) -> None:
    t = _table(catalog, "db.events")
    _erase(catalog, t, ["ann"], longs=[7])
    data = _rows(["ann", "bob", "carl", "ann", "dora", "eve"], accts=[None, 7, 1, None, 2, None])
    reader = pa.RecordBatchReader.from_batches(ARROW, data.to_batches(max_chunksize=2))
    report = ip.append(t, reader, chunk_bytes=1)
    assert report.dropped_rows == 3 and report.rows == 3
    report = ip.overwrite(t, _rows(["ann", "zed"]))
    assert report.dropped_rows == 1
    assert t.scan().to_arrow().column("user_id").to_pylist() == ["zed"]
    assert t.refresh().current_snapshot().summary[forget.SUMMARY_DROPPED] == "1"


def test_scope_table_vs_namespace(catalog: Catalog) -> None:
    catalog.create_namespace("other")
    a, b, c = _table(catalog, "db.a"), _table(catalog, "db.b"), _table(catalog, "other.c")
    _erase(catalog, a, ["ann"])
    _erase(catalog, ("db",), ["bob"])
    data = _rows(["ann", "bob", "carl"])
    assert ip.append(a, data).dropped_rows == 2
    assert ip.append(b, data).dropped_rows == 1
    rep = ip.append(c, data)
    assert rep.dropped_rows == 0 and forget.SUMMARY_DROPPED not in c.refresh().current_snapshot().summary.additional_properties


def test_missing_secret_refuses_and_loses_nothing(catalog: Catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    t = _table(catalog, "db.events")
    ip.append(t, _rows(["bob"]))
    _erase(catalog, t, ["ann"])
    before = t.refresh().current_snapshot().snapshot_id
    monkeypatch.delenv(SECRET_ENV)
    data = _rows(["ann", "carl"])
    with pytest.raises(SecretMissingError, match=SECRET_ENV) as refused:
        ip.append(t, data)
    assert "writing to db.events needs the HMAC secret: its namespace's forget list holds erased" in str(refused.value)
    assert t.refresh().current_snapshot().snapshot_id == before
    assert data.num_rows == 2
    # a table without identity columns, or a namespace without a list, needs no secret
    plain = catalog.create_table("db.plain", SCHEMA)
    assert ip.append(plain, data).rows == 2
    catalog.create_namespace("fresh")
    assert ip.append(_table(catalog, "fresh.t"), data).rows == 2


def test_secret_file_in_catalog_home(catalog: Catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    t = _table(catalog, "db.events")
    _erase(catalog, t, ["ann"])
    monkeypatch.delenv(SECRET_ENV)
    home = catalog_home(catalog)
    assert home is not None
    (home / "secret").write_bytes(SECRET + b"\n")
    assert ip.append(t, _rows(["ann", "bob"])).dropped_rows == 1


def test_wrong_secret_refuses(catalog: Catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    t = _table(catalog, "db.events")
    _erase(catalog, t, ["ann"])
    monkeypatch.setenv(SECRET_ENV, OTHER.decode())
    with pytest.raises(forget.ForgetKeyMismatchError, match="key id"):
        ip.append(t, _rows(["ann"]))
    assert t.refresh().current_snapshot() is None


def test_filter_is_picklable(catalog: Catalog) -> None:
    t = _table(catalog, "db.events")
    _erase(catalog, t, ["ann"])
    flt = forget.load(t)
    assert flt is not None and flt.entries == 1 and flt.version > 0
    clone = pickle.loads(pickle.dumps(flt))
    kept, dropped = clone.apply(_rows(["ann", "bob"]))
    assert dropped == 1 and kept.column("user_id").to_pylist() == ["bob"]


def test_million_entry_list(catalog: Catalog) -> None:
    t = _table(catalog, "db.events")
    rng = np.random.default_rng(1)
    noise = [bytes(r) for r in rng.integers(0, 256, size=(1_000_000 - 1, 32), dtype=np.uint8)]
    assert forget.add(catalog, "db", noise + dl(SECRET, ["ann"], StringType(), "u"), "big",
                      secret_key_id=key_id(SECRET)) == 1_000_000
    forget.clear_cache()
    flt = forget.load(t)
    assert flt is not None and flt.entries == 1_000_000
    users = [f"user{i}" for i in range(20_000)] + ["ann"] * 5
    report = ip.append(t, _rows(users))
    assert report.dropped_rows == 5 and report.rows == 20_000


# ------------------------------------------------------------------------------------------ properties
_TYPES: list[tuple[PrimitiveType, st.SearchStrategy, pa.DataType]] = [
    (StringType(), st.text(max_size=12), pa.string()),
    (BinaryType(), st.binary(max_size=12), pa.binary()),
    (FixedType(4), st.binary(min_size=4, max_size=4), pa.binary(4)),
    (LongType(), st.integers(-(2**63), 2**63 - 1), pa.int64()),
    (DateType(), st.dates(), pa.date32()),
    (UUIDType(), st.uuids(), pa.uuid()),
]


@settings(max_examples=EXAMPLES)
@given(st.data())
def test_digest_values_equals_keyed_digest(data: st.DataObject) -> None:
    t, strategy, arrow_type = data.draw(st.sampled_from(_TYPES))
    values = data.draw(st.lists(strategy, max_size=20, unique=True))
    if isinstance(t, UUIDType):
        arr = pa.array([v.bytes for v in values], pa.binary(16))
    else:
        arr = pa.array(values, arrow_type)
    if data.draw(st.booleans()) and len(arr) > 1:
        arr = arr.slice(1)  # offsets into shared buffers
    expected = [digest(SECRET, c) for c in canonical_array(arr, t)]
    assert forget.digest_values(SECRET, arr, t) == expected


_NAMES = st.sampled_from(["ann", "bob", "carl", "dora", "eve", "fay", "gus", "hal"])
_ROW = st.tuples(
    st.none() | _NAMES,
    st.none() | st.integers(0, 9),
    st.none() | st.lists(st.tuples(st.sampled_from(["email", "crm"]), st.lists(st.none() | _NAMES, max_size=3)),
                         max_size=2, unique_by=lambda kv: kv[0]),
)


@settings(max_examples=EXAMPLES)
@given(rows=st.lists(_ROW, max_size=40), erased_names=st.sets(_NAMES), erased_accts=st.sets(st.integers(0, 9)),
       identity=st.sampled_from([["user_id", "acct", "ids"], ["user_id"], ["ids"], ["acct", "ids"]]))
def test_written_table_is_input_minus_forgotten_subjects(
    shared_catalog: Catalog, rows: list, erased_names: set[str], erased_accts: set[int], identity: list[str]
) -> None:
    t = _table(shared_catalog, unique_name("forget"), identity)
    _erase(shared_catalog, t, sorted(erased_names), sorted(erased_accts))
    data = _rows([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])

    def forgotten(r: tuple) -> bool:
        user, acct, idmap = r
        return ("user_id" in identity and user in erased_names) or ("acct" in identity and acct in erased_accts) or (
            "ids" in identity and any(v in erased_names for _, vs in (idmap or []) for v in vs)
        )

    keep = [i for i, r in enumerate(rows) if not forgotten(r)]
    report = ip.append(t, data)
    assert report.dropped_rows == len(rows) - len(keep)
    got = t.scan().to_arrow().sort_by("n") if t.refresh().current_snapshot() else ARROW.empty_table()
    assert got.column("n").to_pylist() == keep
    assert got.select(["user_id", "acct", "ids"]).to_pylist() == data.take(pa.array(keep, pa.int64())).select(
        ["user_id", "acct", "ids"]).to_pylist()


def test_uuid_and_date_identity_columns(catalog: Catalog) -> None:
    schema = Schema(NestedField(1, "device", UUIDType(), required=False),
                    NestedField(2, "born", DateType(), required=False))
    t = configure_identity(catalog.create_table("db.typed", schema), ["device", "born"])
    u1, u2 = uuid.uuid4(), uuid.uuid4()
    d1 = dt.date(1990, 5, 17)
    forget.add(catalog, t, dl(SECRET, [str(u1)], UUIDType(), "device") + dl(SECRET, ["1990-05-17"], DateType(), "born"),
               "r", secret_key_id=key_id(SECRET))
    data = pa.table({"device": pa.array([u1.bytes, u2.bytes, u2.bytes], pa.uuid()),
                     "born": pa.array([None, d1, dt.date(2000, 1, 1)], pa.date32())})
    report = ip.append(t, data)
    assert report.dropped_rows == 2 and report.rows == 1


@pytest.mark.parametrize("rows_per_slice", [1, 4, forget.ROWS_PER_SLICE])
def test_drop_by_slices_or_copy_is_the_same(catalog: Catalog, monkeypatch: pytest.MonkeyPatch,
                                            rows_per_slice: int) -> None:
    monkeypatch.setattr(forget, "ROWS_PER_SLICE", rows_per_slice)
    t = _table(catalog, "db.events")
    _erase(catalog, t, ["ann", "bob"])
    users = ["ann", "carl", "bob", "dora", "dora", "ann", "eve", "ann"]
    kept, dropped = forget.load(t).apply(_rows(users))  # type: ignore[union-attr]
    assert dropped == 4
    assert kept.column("user_id").to_pylist() == ["carl", "dora", "dora", "eve"]
    assert kept.column("n").to_pylist() == [1, 3, 4, 6]
    assert forget.load(t).apply(_rows(["ann"]))[0].num_rows == 0  # type: ignore[union-attr]


def test_stale_identity_declaration_blocks_only_when_a_list_applies(catalog: Catalog) -> None:
    t = _table(catalog, "db.events", ["user_id", "acct"])
    with t.update_schema() as update:
        update.delete_column("acct")
    t = t.refresh()
    data = _rows(["ann"]).drop_columns(["acct"])
    assert ip.append(t, data).rows == 1  # no forget list: the write does not depend on the declaration
    _erase(catalog, t, ["ann"])
    with pytest.raises(ip.UnknownColumnError, match="acct"):
        ip.append(t, data)


def test_subject_forgotten_between_write_and_commit_is_dropped_at_commit(catalog: Catalog) -> None:
    """The race an erasure has with an in-flight write: files written against the old list are re-checked."""
    from iceberg_privacy.config import bloom_columns
    from iceberg_privacy.write import commit_written, write_data_files

    t = ip.configure_bloom(_table(catalog, "db.events"), ["user_id"])
    _erase(catalog, t, ["zed"])  # a list exists when the write starts
    cols = bloom_columns(t.schema(), t.properties)
    written = write_data_files(t.io, t.metadata, _rows(["ann", "bob", "ann", "carl"]), cols,
                               forget_filter=forget.load(t))
    task_files = [f.file_path for f in written.files]
    _erase(catalog, t, ["ann"])  # an erasure lands while the files wait for their commit
    report = commit_written(t, written, cols)
    t = t.refresh()
    assert sorted(t.scan().to_arrow().column("user_id").to_pylist()) == ["bob", "carl"]
    assert report.dropped_rows == 2 and report.rows == 2
    assert t.current_snapshot().summary[forget.SUMMARY_DROPPED] == "2"
    assert not {x.file.file_path for x in t.scan().plan_files()} & set(task_files)
    assert not any(os.path.exists(p.removeprefix("file://")) for p in task_files)
    assert ip.lookup(t, "user_id", ["bob"]).num_rows == 1  # the rewritten file has its filters


def test_erasure_winning_the_commit_race_is_rechecked_not_rebased(catalog: Catalog,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """An erasure lists a subject and commits between our forget check and our commit: pyiceberg would
    rebase our append onto its snapshot unchecked; we must re-check the list on the new base instead."""
    from iceberg_privacy import write as ingest

    t = _table(catalog, "db.events")  # pyiceberg's default commit retries stay on
    _erase(catalog, t, ["zed"])
    other = catalog.load_table("db.events")
    real = ingest.recheck_forget
    raced: list[bool] = []

    def racing_recheck(table, written, columns):  # type: ignore[no-untyped-def]
        out = real(table, written, columns)
        if not raced:  # right after our check: the erasure lists ann and commits first
            raced.append(True)
            _erase(catalog, other, ["ann"])
            ip.append(other, _rows(["bob"]))
        return out

    monkeypatch.setattr(ingest, "recheck_forget", racing_recheck)
    report = ip.append(t, _rows(["ann", "carl"]))
    assert raced and report.commit_attempts == 2
    users = sorted(x for x in catalog.load_table("db.events").scan().to_arrow().column("user_id").to_pylist())
    assert users == ["bob", "carl"]
    assert report.dropped_rows == 1


def test_forget_list_created_during_the_write_is_checked_at_commit(catalog: Catalog) -> None:
    """No list when the write starts (nothing to screen), one created before its commit: the
    commit-time re-check (one catalog read by name) still drops the newly forgotten subject."""
    from iceberg_privacy.write import commit_written, write_data_files

    t = _table(catalog, "db.events")
    assert forget.load(t) is None
    written = write_data_files(t.io, t.metadata, _rows(["ann", "bob", "ann"]), [], forget_filter=forget.load(t))
    assert written.forget_version is None and written.rows == 3
    _erase(catalog, t, ["ann"])  # the namespace's first erasure creates the list meanwhile
    report = commit_written(t, written, [])
    assert report.dropped_rows == 2 and report.rows == 1
    assert t.scan().to_arrow().column("user_id").to_pylist() == ["bob"]
    assert t.current_snapshot().summary[forget.SUMMARY_VERSION] == str(forget.load(t).version)  # type: ignore[union-attr]


# ------------------------------------------------------------------------------------------ screen
def _erase_screened(cat: Catalog, target, strings=(), longs=(), secret: bytes = SECRET) -> int:  # type: ignore[no-untyped-def]
    entries = {**forget.subject_entries(secret, list(strings), StringType(), "user_id"),
               **forget.subject_entries(secret, list(longs), LongType(), "acct")}
    return forget.add(cat, target, list(entries), "req-s", secret_key_id=key_id(secret), screens=entries)


def test_screen_tag_follows_the_documented_formula() -> None:
    """docs/forget-list.md, re-implemented from the text: h31 = Iceberg bucket hash (mmh3 x86_32 of
    the value's Iceberg bytes, & 0x7FFFFFFF, mod 2^31-1), pad = HMAC(HMAC(secret, label), digest)[:4]."""
    import hashlib
    import hmac as std_hmac
    import struct

    import mmh3

    for value, t, raw in [("ann", StringType(), b"ann"), (42, LongType(), struct.pack("<q", 42))]:
        entries = forget.subject_entries(SECRET, [value], t, "c")
        (d, tag), = entries.items()
        assert d == digest(SECRET, (b"s" if isinstance(t, StringType) else b"i") + raw)
        h31 = (mmh3.hash(raw, 0, signed=False) & 0x7FFFFFFF) % (2**31 - 1)
        k = std_hmac.new(SECRET, b"iceberg-privacy forget-list screen key v1", hashlib.sha256).digest()
        pad = int.from_bytes(std_hmac.new(k, d, hashlib.sha256).digest()[:4], "big") & 0x7FFFFFFF
        assert tag == h31 ^ pad and 0 <= tag < 2**31


def test_digests_follow_the_documented_canonical_encoding(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """docs/forget-list.md, "The digest": every vector of its table, read from the doc, is what the library computes
    (canonical bytes, digest, key id), so a writer in another language can screen against the list. Before, the doc
    said only "see keyed.py"."""
    import hashlib
    import hmac as std_hmac
    import re
    from pathlib import Path

    from pyiceberg.types import (
        BinaryType,
        DateType,
        DecimalType,
        FixedType,
        IntegerType,
        TimestampType,
        TimestamptzType,
        UUIDType,
    )

    from iceberg_privacy.rights.keyed import canonical_literals, digest_literals, load_secret

    doc = (Path(__file__).resolve().parents[2] / "docs" / "forget-list.md").read_text()
    section = doc.split("### The digest", 1)[1].split("\n## ", 1)[0]
    secret = re.search(r"With `S` = `([^`]+)` \(key id\s+`([0-9a-f]{16})`\)", section)
    assert secret is not None
    s_bytes, kid = secret.group(1).encode(), secret.group(2)
    assert key_id(s_bytes) == kid == std_hmac.new(s_bytes, b"iceberg-privacy key id", hashlib.sha256).hexdigest()[:16]
    monkeypatch.setenv("ICEBERG_PRIVACY_SECRET", secret.group(1))
    assert load_secret() == s_bytes
    monkeypatch.delenv("ICEBERG_PRIVACY_SECRET")
    (tmp_path / "secret").write_text(secret.group(1) + "\n")
    assert load_secret(tmp_path) == s_bytes  # the file's text, whitespace removed
    types = {"string": [StringType()], "int` or `long": [IntegerType(), LongType()], "uuid": [UUIDType()],
             "binary` or `fixed[4]": [BinaryType(), FixedType(4)], "date": [DateType()],
             "timestamp": [TimestampType()], "timestamptz": [TimestamptzType()], "decimal(9, 2)": [DecimalType(9, 2)]}
    rows = re.findall(r"^\| `([^|]+)` \| `([^`]+)` \| `([0-9a-f ]+)` \| `([0-9a-f]{16})` \|$", section, re.M)
    assert len(rows) == 9
    for type_text, value, canonical_hex, digest_prefix in rows:
        for t in types[type_text]:
            literal = value.replace(" ", "") if isinstance(t, (BinaryType, FixedType)) else value
            assert canonical_literals([literal], t, "c") == [bytes.fromhex(canonical_hex)], (t, value)
            (d,) = digest_literals(s_bytes, [literal], t, "c")
            assert d == std_hmac.digest(s_bytes, bytes.fromhex(canonical_hex), "sha256") and d[:8].hex() == digest_prefix


def test_stored_tags_are_not_the_unkeyed_hash(catalog: Catalog) -> None:
    """The list never holds a value's unkeyed hash: the tag is padded with a keyed PRF of its digest,
    so another secret decrypts it to something else."""
    from iceberg_privacy.index.hashing import hash_array

    t = _table(catalog, "db.events")
    users = [f"user{i}" for i in range(200)]
    _erase_screened(catalog, t, users)
    stored = forget.entries(catalog, "db")
    by_digest = dict(zip(stored.column("digest").to_pylist(), stored.column("screen").to_pylist(), strict=True))
    h31 = hash_array(pa.array(users)).tolist()
    tags = [by_digest[d] for d in dl(SECRET, users, StringType(), "user_id")]
    assert sum(a == b for a, b in zip(tags, h31, strict=True)) <= 1  # 2^-31 per entry by chance
    mat = np.frombuffer(b"".join(dl(SECRET, users, StringType(), "user_id")), np.uint8).reshape(-1, 32)
    assert (np.array(tags, np.uint32) ^ forget.screen_pads(SECRET, mat)).tolist() == h31
    assert (np.array(tags, np.uint32) ^ forget.screen_pads(OTHER, mat)).tolist() != h31


def test_screened_filter_hmacs_only_screen_hits(catalog: Catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    """With tags on every entry, only the ids that pass the native screen are HMAC'd (not every id)."""
    t = _table(catalog, "db.events", ["user_id"])
    _erase_screened(catalog, t, ["ann", "bob"])
    hashed: list[int] = []
    real = forget.digest_values

    def counting(secret, values, leaf):  # type: ignore[no-untyped-def]
        hashed.append(len(values))
        return real(secret, values, leaf)

    monkeypatch.setattr(forget, "digest_values", counting)
    flt = forget.load(t)
    assert flt is not None and flt.screened
    users = [f"user{i}" for i in range(5000)] + ["ann", "bob", "ann"]
    report = ip.append(t, _rows(users))
    assert report.dropped_rows == 3 and report.rows == 5000
    assert sum(hashed) <= 3  # ann, bob (+ a 2^-31-rare screen collision); was one HMAC per distinct id


def test_list_without_screen_column_still_drops_and_upgrades(catalog: Catalog) -> None:
    """A list written before the screen existed (no ``screen`` column) is checked by HMAC-ing every id;
    the first add with tags adds the column in its commit, and the old entries keep working."""
    from iceberg_privacy.catalog import FORGET_TABLE_PROPERTY, library_name

    old_schema = Schema(*forget.FORGET_SCHEMA.fields[:5])
    ft = catalog.create_table(("db", library_name(catalog, FORGET_TABLE_PROPERTY)), old_schema,
                              properties={forget.PROP_MARKER: "1", "commit.retry.num-retries": "0"})
    ft.append(pa.table({"scope": ["*"], "digest": dl(SECRET, ["ann"], StringType(), "u"), "key_id": [key_id(SECRET)],
                        "request_id": ["old"], "added_at": pa.array([dt.datetime.now(dt.UTC)], pa.timestamp("us", tz="UTC"))},
                       schema=forget.ARROW_SCHEMA.remove(6).remove(5)))
    t = _table(catalog, "db.events")
    flt = forget.load(t)
    assert flt is not None and not flt.screened
    assert ip.append(t, _rows(["ann", "bob"])).dropped_rows == 1
    _erase_screened(catalog, t, ["bob"])
    assert "screen" in catalog.load_table(("db", library_name(catalog, FORGET_TABLE_PROPERTY))).schema().column_names
    flt = forget.load(t)
    assert flt is not None and not flt.screened  # ann's entry (namespace scope) has no tag
    assert ip.append(t, _rows(["ann", "bob", "carl"])).dropped_rows == 2
    other = _table(catalog, "db.other")
    _erase_screened(catalog, "db", ["dora"])  # a tagged namespace entry next to ann's untagged one
    assert not forget.load(other).screened  # type: ignore[union-attr]
    assert ip.append(other, _rows(["ann", "dora", "eve"])).dropped_rows == 2


_SCREEN_ROW = st.tuples(st.none() | _NAMES, st.none() | st.integers(0, 9))


@settings(max_examples=EXAMPLES)
@given(rows=st.lists(_SCREEN_ROW, max_size=60), erased_names=st.sets(_NAMES), erased_accts=st.sets(st.integers(0, 9)),
       decoy_names=st.sets(_NAMES), decoy_accts=st.sets(st.integers(0, 9)), untagged=st.booleans())
def test_screened_check_drops_exactly_what_the_plain_hmac_check_drops(
    shared_catalog: Catalog, rows: list, erased_names: set[str], erased_accts: set[int], decoy_names: set[str],
    decoy_accts: set[int], untagged: bool,
) -> None:
    """The screen (with decoy hashes forced into it, standing in for 31-bit collisions) and the plain
    per-id HMAC check drop the same rows; an entry without a tag makes the filter fall back."""
    import dataclasses

    from iceberg_privacy.index.hashing import hash_array

    t = _table(shared_catalog, unique_name("screen"), ["user_id", "acct"])
    names, accts = sorted(erased_names), sorted(erased_accts)
    if untagged and names:
        _erase(shared_catalog, t, names[:1])
        names = names[1:]
    _erase_screened(shared_catalog, t, names, accts)
    flt = forget.load(t)
    if flt is None:
        return
    assert flt.screened == (not (untagged and erased_names))
    data = _rows([r[0] for r in rows], [r[1] for r in rows])
    plain = dataclasses.replace(flt, screen=None, screen_bits=None)
    expected = plain.mask(data)
    assert expected.tolist() == [(r[0] in erased_names) or (r[1] in erased_accts) for r in rows]
    assert flt.mask(data).tolist() == expected.tolist()
    if flt.screened:
        decoys = np.concatenate([hash_array(pa.array(sorted(decoy_names), pa.string())),
                                 hash_array(pa.array(sorted(decoy_accts), pa.int64()))]).astype(np.uint32)
        assert flt.screen is not None
        noisy_set = np.unique(np.concatenate([flt.screen, decoys]))
        noisy = dataclasses.replace(flt, screen=noisy_set, screen_bits=forget_screen.screen_bitmap(noisy_set))
        assert noisy.mask(data).tolist() == expected.tolist()
        assert noisy.apply(data)[1] == plain.apply(data)[1] == int(expected.sum())


def test_new_list_snapshot_decrypts_only_the_added_tags(catalog: Catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each entry's pad costs an HMAC: a later snapshot of the list reuses the pads already computed."""
    t = _table(catalog, "db.events", ["user_id"])
    _erase_screened(catalog, t, [f"old{i}" for i in range(50)])
    assert forget.load(t).screened  # type: ignore[union-attr]
    padded: list[int] = []
    real = forget.screen_pads

    def counting(secret, digests):  # type: ignore[no-untyped-def]
        padded.append(len(digests))
        return real(secret, digests)

    monkeypatch.setattr(forget_screen, "screen_pads", counting)  # at add time (screen_tags)
    monkeypatch.setattr(forget_store, "screen_pads", counting)  # at load time (the pads cache)
    _erase_screened(catalog, t, ["ann"])
    assert padded == [1]  # the new tag, at add time
    flt = forget.load(t)
    assert flt is not None and flt.screened and flt.entries == 51
    assert padded == [1, 1]  # and ann's pad at load; the 50 others come from the cache
    assert ip.append(t, _rows(["ann", "old7", "bob"])).dropped_rows == 2


def test_ids_in_an_unscreenable_arrow_type_are_hmacd(catalog: Catalog) -> None:
    """An id column arriving as an Arrow type the native kernel does not pin (int16 for a long column)
    is checked by HMAC, not skipped: the screened filter still drops the forgotten account."""
    t = _table(catalog, "db.events", ["acct"])
    _erase_screened(catalog, t, longs=[7])
    flt = forget.load(t)
    assert flt is not None and flt.screened
    data = pa.table({"acct": pa.array([7, 8, None, 7], pa.int16())})
    assert flt.mask(data).tolist() == [True, False, False, True]
    assert forget_screen.iceberg_h31(data.column("acct").chunk(0).drop_null()) is None


def test_a_mismatched_secret_gives_advice_that_works(catalog: Catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: ForgetKeyMismatchError said "or re-add the subjects' digests under the new secret", but
    ``forget.add`` under the new secret is refused with the same error (a list holds one key id): advice that,
    followed literally, ended where it started. It now says the list cannot be re-keyed; its other advice
    (configure the secret the digests were made with) works. Without any secret, the write's SecretMissingError
    advised `secret init`, a new secret, which the list's key id check then refused: it now names the key id."""
    from iceberg_privacy.rights.keyed import load_secret
    from tests.helpers import make_table
    from tests.helpers import rows as user_rows

    monkeypatch.setenv(SECRET_ENV, "A" * 32)
    table = make_table(catalog, "db.t", [["u1", "u2"]])
    ip.erase(catalog, ["u1"])
    monkeypatch.setenv(SECRET_ENV, "B" * 32)
    new = load_secret()
    with pytest.raises(forget.ForgetKeyMismatchError, match="cannot be re-keyed") as err:
        ip.append(table, user_rows(["u3"]))
    assert "re-add the subjects' digests under the new secret" not in str(err.value)
    with pytest.raises(forget.ForgetKeyMismatchError, match="cannot be re-keyed"):
        forget.add(catalog, table, dl(new, ["u1"], StringType(), "user_id"), "req-2", secret_key_id=key_id(new))
    monkeypatch.delenv(SECRET_ENV)  # no secret at all: the advice names the list's secret, not a new one
    with pytest.raises(SecretMissingError, match=f"made with \\(key id {key_id(b'A' * 32)}\\).*a new secret "
                                                 r"\(`iceberg-privacy secret init`\) would not match them") as err:
        ip.append(table, user_rows(["u3"]))
    assert "or run `iceberg-privacy" not in str(err.value)
    monkeypatch.setenv(SECRET_ENV, "A" * 32)  # the advice that works
    assert ip.append(table, user_rows(["u1", "u3"])).dropped_rows == 1
