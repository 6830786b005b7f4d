"""The privacy guarantee itself (advS): nothing a release publishes, refuses or computes may depend on the private
data except through a DP mechanism that is charged. Keys read from the data, free data-dependent errors, raw reads
of dp-only tables through the library, and budgets that tmlt spends as floats larger than the ledger charged."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyiceberg.catalog.sql import SqlCatalog

import iceberg_privacy as ip
from iceberg_privacy.dp import PureDP, RhoZCDP, set_namespace_budget
from iceberg_privacy.dp.ledger import Ledger
from tests.helpers import make_catalog

ROWS = pa.table({
    "user_id": pa.array(["a", "b", "c", "d"]),
    "country": pa.array(["de", "de", "fr", "tuvalu"]),  # one person's rare value
    "v": pa.array([1, 2, 3, 2**53 + 1], pa.int64()),  # a value a float64 cannot hold exactly
})


@pytest.fixture
def lake(tmp_path: Path) -> SqlCatalog:
    cat = make_catalog(tmp_path)
    cat.create_namespace("db")
    cat.create_table("db.t", schema=ROWS.schema).append(ROWS)
    set_namespace_budget(cat, "db", RhoZCDP(1))
    return cat


def _no_spark(monkeypatch: pytest.MonkeyPatch) -> None:
    import iceberg_privacy.dp.release as release

    def no_spark(spark: Any) -> Any:
        raise AssertionError("the refused key set reached Spark")

    monkeypatch.setattr(release, "_spark", no_spark)


def _nothing_spent(cat: SqlCatalog, events_before: int) -> None:
    assert ip.get_namespace_budget(cat, "db").spent == RhoZCDP(0, validate=False)
    assert len(Ledger(cat, ("db",)).events()) == events_before


def _refused_as_keys(lake: SqlCatalog, monkeypatch: pytest.MonkeyPatch, key_tables: Any, error: type[Exception],
                     match: str) -> None:
    """A histogram of db.t with each of ``key_tables`` as its key set is refused before Spark, nothing spent."""
    _no_spark(monkeypatch)
    before = len(Ledger(lake, ("db",)).events())
    for keys in key_tables:
        with pytest.raises(error, match=match):
            ip.dp_histogram("db.t", ["country"], catalog=lake, budget=RhoZCDP(0.1), privacy_unit="user_id",
                            keys=keys)
    _nothing_spent(lake, before)


def test_the_source_itself_is_no_public_key_table(lake: SqlCatalog, monkeypatch: pytest.MonkeyPatch) -> None:
    """keys="db.t" on db.t published every value of the private column as a key (here "tuvalu", one person's), with
    a noisy count, for the price of the count alone: the key set was the data's, taken without any mechanism."""
    _refused_as_keys(lake, monkeypatch, ("db.t", ("db", "t"), lake.load_table("db.t")), ip.KeySetError,
                     "is the source table itself")


def test_a_key_table_derived_from_the_source_is_no_public_key_table(lake: SqlCatalog,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The same leak one step removed: SELECT DISTINCT of the private column into a table, then keys=that table.
    Its lineage record names the source, so it is refused; a table of values typed in by hand is accepted."""
    ip.derive(lake, "SELECT DISTINCT country FROM db.t", "db.countries")
    _refused_as_keys(lake, monkeypatch, ["db.countries"], ip.KeySetError, "was computed from the source")
    public = pa.table({"country": pa.array(["de", "fr"])})
    lake.create_table("db.public_countries", schema=public.schema).append(public)
    with pytest.raises(ip.ReleaseAbortedError, match="reached Spark"):  # accepted: the release went on to Spark
        ip.dp_histogram("db.t", ["country"], catalog=lake, budget=RhoZCDP(0.1), privacy_unit="user_id",
                        keys="db.public_countries")


def test_a_dp_only_table_is_no_public_key_table(lake: SqlCatalog, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every key is published: keys from another, dp-only table released its raw distinct values."""
    lake.create_namespace("private")
    other = pa.table({"country": pa.array(["secret-island"])})
    lake.create_table("private.people", schema=other.schema).append(other)
    set_namespace_budget(lake, "private", RhoZCDP(1))
    ip.set_access_policy(lake, "private", privacy_unit=ip.ROWS)
    _refused_as_keys(lake, monkeypatch, ["private.people"], ip.DpOnlyError, "dp-only")


def test_a_long_beyond_2_53_is_binned_not_quoted_in_a_free_error(lake: SqlCatalog) -> None:
    """Binning cast a long column to double with pyarrow's safe cast, which raised ``ArrowInvalid: Integer value
    9007199254740993 not in range`` before anything was reserved: a raw error that quoted a private value and told
    the caller, free of charge, that some row holds a huge number. Such a value is clipped into the bounds."""
    rep = ip.dp_synthesize(lake, "db.t", ["v"], RhoZCDP(0.5), output="db.syn", bounds={"v": (0, 100)}, rows=10, privacy_unit=ip.ROWS)
    assert rep.rows == 10 and rep.charged == RhoZCDP(0.5)
    values = lake.load_table("db.syn").scan().to_arrow().column("v").to_pylist()
    assert all(v is None or 0 <= v <= 100 for v in values)


def test_derive_does_not_copy_a_dp_only_table(lake: SqlCatalog) -> None:
    """derive read the dp-only source with pyiceberg and wrote its raw rows into a table of an open namespace,
    readable by anyone: the library's own path around the policy. A DP output of it stays a valid source."""
    ip.set_access_policy(lake, "db", privacy_unit="user_id", principal_budgets={"*": 1})
    with pytest.raises(ip.DpOnlyError, match="dp-only"):
        ip.derive(lake, "SELECT user_id, country FROM db.t", "mart.copy")
    assert not lake.table_exists("mart.copy")
    rep = ip.dp_synthesize(lake, "db.t", ["country"], RhoZCDP(0.5), output="db.syn", domains={"country": ["de"]},
                           rows=5)
    ip.derive(lake, "SELECT country FROM db.syn", "mart.syn_copy")
    assert lake.load_table("mart.syn_copy").scan().to_arrow().num_rows == rep.rows
    # rows another job appends to the synthetic table are not DP output (the table property stays): a raw read
    # of them is refused like the source's
    syn = lake.load_table("db.syn")
    syn.append(pa.table({"country": ["RAW"]}, schema=syn.schema().as_arrow()))
    with pytest.raises(ip.DpOnlyError, match="dp-only"):
        ip.derive(lake, "SELECT country FROM db.syn", "mart.syn_copy2")
    with pytest.raises(ip.DpOnlyError):
        ip.require_raw_access(lake, "db.syn")
    assert not lake.table_exists("mart.syn_copy2")


def _exact_tmlt(value: Any) -> Fraction:
    return Fraction(value)  # tmlt reads a float budget as that float's exact value (ExactNumber.from_float)


@settings(max_examples=40, deadline=None)
@given(st.decimals(min_value="1e-12", max_value="1e6", allow_nan=False, places=None).filter(lambda d: d > 0),
       st.decimals(min_value="1e-15", max_value="0.5", allow_nan=False).filter(lambda d: d > 0))
def test_tmlt_never_gets_more_budget_than_the_ledger_charges(a: Any, b: Any) -> None:
    """The ledger charges the exact decimal (0.1 is 1/10) but tmlt was given float(0.1), whose exact value is
    0.1000000000000000055...: every release's noise was calibrated to more than the charged budget."""
    from iceberg_privacy.dp.sql import split_budget
    from iceberg_privacy.dp.synth import _rho

    x, y = Fraction(str(a)), Fraction(str(b))
    assert _exact_tmlt(PureDP(str(a)).to_tmlt().epsilon) <= x
    assert _exact_tmlt(RhoZCDP(str(a)).to_tmlt().rho) <= x
    approx = ip.ApproxDP(str(a), str(b)).to_tmlt()
    assert _exact_tmlt(approx.epsilon) <= x and _exact_tmlt(approx.delta) <= y
    assert Fraction(_rho(RhoZCDP(str(a)))) <= x
    for parts in (2, 3, 7):
        assert sum(Fraction(float(s.components()[0])) for s in split_budget(PureDP(str(a)), parts)) <= x


def test_a_tenth_is_spent_as_at_most_a_tenth() -> None:
    assert Fraction(PureDP(0.1).to_tmlt().epsilon) <= Fraction(1, 10)
    assert Fraction(RhoZCDP("0.3").to_tmlt().rho) <= Fraction(3, 10)


@pytest.mark.spark
@pytest.mark.slow
def test_a_sum_whose_clamped_values_overflow_a_long_still_releases(tmp_path: Path, spark: Any) -> None:
    """Spark (ANSI) summed the clamped integers as longs and raised ARITHMETIC_OVERFLOW after the evaluation began:
    the spend was kept and the failure itself told, without noise, that the group's clamped values add up past
    2**63 (one more person at the bound flips success into failure). Integer columns with bounds of 2**31 or more
    are summed as doubles: the release succeeds whatever the data."""
    cat = make_catalog(tmp_path)
    cat.create_namespace("db")
    big = 2**62
    data = pa.table({"uid": pa.array([1, 2, 3], pa.int64()), "c": ["x", "x", "x"],
                     "v": pa.array([big, big, 5], pa.int64())})
    cat.create_table("db.t", schema=data.schema).append(data)
    set_namespace_budget(cat, "db", PureDP(10_000))
    rel = ip.dp_sql(cat, f"SELECT SUM(CLAMP(v, 0, {big})) AS s, AVG(CLAMP(v, 0, {big})) AS a FROM db.t",
                    budget=4000, privacy_unit="uid", spark=spark)
    assert rel.rows.num_rows == 1 and not rel.memoized
    assert [m["noise_mechanism"] for m in rel.provenance.mechanism][0] == "LAPLACE"
    hist = ip.dp_histogram("db.t", ["c"], catalog=cat, budget=PureDP(2000), privacy_unit="uid", keys={"c": ["x"]},
                           aggregate="sum", column="v", low=0, high=big, spark=spark)
    assert hist.data.num_rows == 1 and pa.types.is_floating(hist.data.schema.field("sum").type)
    assert hist.provenance.query["extra"] == {"sum_in": "double"}  # another question than the long sum's
    assert rel.provenance.query["sums_in_double"] == ["s", "a"]


def test_histogram_bounds_past_2_62_are_refused_before_the_spend(lake: SqlCatalog) -> None:
    """dp_histogram(aggregate="sum", high=1e19) failed in Spark's `lit` when tmlt evaluated (a Py4JError), after the
    spend; DP SQL already refused such bounds (MAX_BOUND)."""
    before = len(Ledger(lake, ("db",)).events())
    for aggregate in ("sum", "mean"):
        with pytest.raises(ip.InvalidArgumentError, match="exceed"):
            ip.dp_histogram("db.t", ["country"], catalog=lake, budget=RhoZCDP(0.1), privacy_unit="user_id",
                            keys={"country": ["de"]}, aggregate=aggregate, column="v", low=0, high=1e19)
    _nothing_spent(lake, before)


def test_a_snapshot_older_than_an_erasure_is_not_released_again(lake: SqlCatalog,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """An erasure commits a new snapshot; the old ones keep the subject's rows until the purge expires them, and
    snapshot_id=<an older one> computed a new release on the erased person's rows (dp_histogram, dp_synthesize)."""
    from iceberg_privacy.properties import ERASURE_REQUEST_SUMMARY

    table = lake.load_table("db.t")
    before_erasure = table.current_snapshot().snapshot_id
    with table.transaction() as tx:  # what an erasure commits: the subject's rows gone, the request id in the summary
        tx.delete("user_id == 'd'", snapshot_properties={ERASURE_REQUEST_SUMMARY: "req-1"})
    _no_spark(monkeypatch)
    before = len(Ledger(lake, ("db",)).events())
    with pytest.raises(ip.ConfigurationError, match="predates an erasure .request req-1"):
        ip.dp_histogram("db.t", ["country"], catalog=lake, budget=RhoZCDP(0.1), privacy_unit="user_id",
                        keys={"country": ["de"]}, snapshot_id=before_erasure)
    with pytest.raises(ip.ConfigurationError, match="predates an erasure"):
        ip.dp_synthesize(lake, "db.t", ["country"], RhoZCDP(0.1), output="db.syn", domains={"country": ["de"]},
                         snapshot_id=before_erasure, privacy_unit=ip.ROWS)
    _nothing_spent(lake, before)
    after = lake.load_table("db.t").current_snapshot().snapshot_id
    rep = ip.dp_synthesize(lake, "db.t", ["country"], RhoZCDP(0.1), output="db.syn", domains={"country": ["de"]},
                           snapshot_id=after, rows=3, privacy_unit=ip.ROWS)
    assert rep.source_snapshot_id == after


def test_the_refusals_hold_on_object_storage(s3_catalog: tuple[Any, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The same refusals on SeaweedFS, behind the REST catalog and a SqlCatalog: the source as key table, a key
    table derived from it, a derive of a dp-only table, a snapshot older than an erasure; and the long beyond
    2**53 binned by dp_synthesize."""
    from iceberg_privacy.properties import ERASURE_REQUEST_SUMMARY

    cat, ns = s3_catalog
    src = f"{ns}.t"
    cat.create_table(src, schema=ROWS.schema).append(ROWS)
    set_namespace_budget(cat, ns, RhoZCDP(1))
    ip.derive(cat, f"SELECT DISTINCT country FROM {src}", f"{ns}.countries")
    _no_spark(monkeypatch)
    ask = dict(catalog=cat, budget=RhoZCDP(0.1), privacy_unit="user_id")
    with pytest.raises(ip.KeySetError, match="is the source table itself"):
        ip.dp_histogram(src, ["country"], keys=src, **ask)
    with pytest.raises(ip.KeySetError, match="was computed from the source"):
        ip.dp_histogram(src, ["country"], keys=f"{ns}.countries", **ask)
    rep = ip.dp_synthesize(cat, src, ["v"], RhoZCDP(0.2), output=f"{ns}.syn", bounds={"v": (0, 100)}, rows=4, privacy_unit=ip.ROWS)
    assert rep.rows == 4
    table = cat.load_table(src)
    old = table.current_snapshot().snapshot_id
    with table.transaction() as tx:
        tx.delete("user_id == 'd'", snapshot_properties={ERASURE_REQUEST_SUMMARY: "req-9"})
    with pytest.raises(ip.ConfigurationError, match="predates an erasure"):
        ip.dp_histogram(src, ["country"], keys={"country": ["de"]}, snapshot_id=old, **ask)
    ip.set_access_policy(cat, ns, privacy_unit="user_id", principal_budgets={"*": 1})
    with pytest.raises(ip.DpOnlyError):
        ip.derive(cat, f"SELECT user_id FROM {src}", f"{ns}.copy")
    assert not cat.table_exists(f"{ns}.copy")
    assert ip.get_namespace_budget(cat, ns).spent == RhoZCDP("0.2")


def test_an_output_whose_value_type_differs_is_refused_before_the_spend(lake: SqlCatalog,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """output= naming a release table of integer sums, asked for a double sum (a float column, or an integer one
    with bounds of 2**31 or more): the append of doubles to the long column failed after the evaluation, with the
    spend kept and nothing released. The names matched, so only the value type tells."""
    from iceberg_privacy.properties import DP_RELEASE_MARKER

    schema = pa.schema([pa.field("country", pa.string()), pa.field("sum", pa.int64())])
    lake.create_table("db.out", schema=schema, properties={DP_RELEASE_MARKER: "1"})
    _no_spark(monkeypatch)
    before = len(Ledger(lake, ("db",)).events())
    with pytest.raises(ip.ConfigurationError, match="holds releases whose 'sum' is long"):
        ip.dp_histogram("db.t", ["country"], catalog=lake, budget=RhoZCDP(0.1), privacy_unit="user_id",
                        keys={"country": ["de"]}, aggregate="sum", column="v", low=0, high=2**40, output="db.out")
    _nothing_spent(lake, before)
    with pytest.raises(ip.ReleaseAbortedError, match="reached Spark"):  # an integer sum fits: it goes on
        ip.dp_histogram("db.t", ["country"], catalog=lake, budget=RhoZCDP(0.1), privacy_unit="user_id",
                        keys={"country": ["de"]}, aggregate="sum", column="v", low=0, high=100, output="db.out")


def test_a_key_table_derived_from_a_copy_of_the_source_is_no_public_key_table(
        lake: SqlCatalog, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two steps removed (advV): SELECT DISTINCT into db.c1, then a copy of db.c1 into db.c2 (renamed to another
    namespace): only db.c2's direct sources were checked, so keys="other.keys" published db.t's rare value."""
    ip.derive(lake, "SELECT DISTINCT country FROM db.t", "db.c1")
    ip.derive(lake, "SELECT country FROM db.c1", "db.c2")
    lake.create_namespace("other")
    lake.rename_table("db.c1", "db.c1_renamed")  # the recorded name no longer resolves: found by uuid
    lake.rename_table("db.c2", "other.keys")
    _refused_as_keys(lake, monkeypatch, ("other.keys", ("other", "keys"), lake.load_table("other.keys")),
                     ip.KeySetError, "computed from the source db.t through db.c1_renamed")


def _erase(table: Any, where: str, request: str, branch: str = "main") -> None:
    from iceberg_privacy.properties import ERASURE_REQUEST_SUMMARY

    with table.transaction() as tx:
        tx.delete(where, snapshot_properties={ERASURE_REQUEST_SUMMARY: request}, branch=branch)


def test_a_snapshot_that_does_not_descend_from_an_erasure_is_not_released(
        lake: SqlCatalog, monkeypatch: pytest.MonkeyPatch) -> None:
    """advV: the refusal compared sequence numbers only. A branch forked from the erased snapshot and written to
    after the erasure (a later sequence number, the erased rows still in it), and a table rolled back past the
    erasure (the current snapshot, never checked), were released on the erased person's rows."""
    table = lake.load_table("db.t")
    pre = table.current_snapshot().snapshot_id
    _erase(table, "user_id == 'd'", "req-1")
    table = lake.load_table("db.t")
    table.manage_snapshots().create_branch(pre, "audit").commit()
    table = lake.load_table("db.t")
    table.append(pa.table({"user_id": ["e"], "country": ["de"], "v": pa.array([5], pa.int64())}), branch="audit")
    audit = lake.load_table("db.t").metadata.snapshot_by_name("audit").snapshot_id
    _no_spark(monkeypatch)
    before = len(Ledger(lake, ("db",)).events())
    ask = dict(catalog=lake, budget=RhoZCDP(0.1), privacy_unit="user_id", keys={"country": ["de"]})
    with pytest.raises(ip.ConfigurationError, match="predates an erasure .request req-1"):
        ip.dp_histogram("db.t", ["country"], snapshot_id=audit, **ask)
    with pytest.raises(ip.ConfigurationError, match="predates an erasure"):
        ip.dp_synthesize(lake, "db.t", ["country"], RhoZCDP(0.1), output="db.syn", domains={"country": ["de"]},
                         snapshot_id=audit, privacy_unit=ip.ROWS)
    lake.load_table("db.t").manage_snapshots().set_current_snapshot(pre).commit()  # a rollback past the erasure
    with pytest.raises(ip.ConfigurationError, match="does not include an erasure .request req-1"):
        ip.dp_histogram("db.t", ["country"], **ask)
    with pytest.raises(ip.ConfigurationError, match="does not include an erasure"):
        ip.dp_sql(lake, "SELECT country, COUNT(*) AS n FROM db.t GROUP BY country", budget=RhoZCDP(0.1),
                  privacy_unit="user_id")
    _nothing_spent(lake, before)


def test_an_erasure_on_every_branch_leaves_each_head_releasable(lake: SqlCatalog,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """An erasure commits once on every branch holding a subject: main's head does not descend from the branch's
    erasure commit (nor the branch from main's), and neither is refused; a branch that never held the subject's
    rows is not refused either. The snapshot before the erasure still is."""
    table = lake.load_table("db.t")
    pre = table.current_snapshot().snapshot_id
    table.manage_snapshots().create_branch(pre, "b").commit()
    _erase(lake.load_table("db.t"), "user_id == 'd'", "req-2", branch="b")
    _erase(lake.load_table("db.t"), "user_id == 'd'", "req-2")
    table = lake.load_table("db.t")
    heads = [table.current_snapshot().snapshot_id, table.metadata.snapshot_by_name("b").snapshot_id]
    _no_spark(monkeypatch)
    ask = dict(catalog=lake, budget=RhoZCDP(0.1), privacy_unit="user_id", keys={"country": ["de"]})
    for snapshot_id in (None, *heads):
        with pytest.raises(ip.ReleaseAbortedError, match="reached Spark"):  # accepted: it went on to Spark
            ip.dp_histogram("db.t", ["country"], snapshot_id=snapshot_id, **ask)
    with pytest.raises(ip.ConfigurationError, match="predates an erasure .request req-2"):
        ip.dp_histogram("db.t", ["country"], snapshot_id=pre, **ask)


def test_transitive_key_tables_and_rollbacks_are_refused_on_object_storage(
        s3_catalog: tuple[Any, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The two advV refusals on SeaweedFS, behind the REST catalog and a SqlCatalog: a key table two derives
    removed from the source, and a source rolled back past an erasure."""
    cat, ns = s3_catalog
    src = f"{ns}.t"
    cat.create_table(src, schema=ROWS.schema).append(ROWS)
    set_namespace_budget(cat, ns, RhoZCDP(1))
    ip.derive(cat, f"SELECT DISTINCT country FROM {src}", f"{ns}.c1")
    ip.derive(cat, f"SELECT country FROM {ns}.c1", f"{ns}.c2")
    _no_spark(monkeypatch)
    ask = dict(catalog=cat, budget=RhoZCDP(0.1), privacy_unit="user_id")
    with pytest.raises(ip.KeySetError, match=f"through {ns}.c1"):
        ip.dp_histogram(src, ["country"], keys=f"{ns}.c2", **ask)
    pre = cat.load_table(src).current_snapshot().snapshot_id
    _erase(cat.load_table(src), "user_id == 'd'", "req-3")
    cat.load_table(src).manage_snapshots().set_current_snapshot(pre).commit()
    with pytest.raises(ip.ConfigurationError, match="does not include an erasure .request req-3"):
        ip.dp_histogram(src, ["country"], keys={"country": ["de"]}, **ask)
    assert ip.get_namespace_budget(cat, ns).spent == RhoZCDP(0, validate=False)


def test_a_foreign_commit_labelled_as_a_release_or_a_rewrite_is_not_dp_output(lake: SqlCatalog) -> None:
    """A DP output table was trusted from the newest snapshot whose summary says ``privacy.dp.release=1``, then
    through every later ``replace``/``delete`` commit: another job appending raw rows with that key copied into its
    summary (pyiceberg ``snapshot_properties``), or committing them as a ``delete`` or ``replace`` (Iceberg does not
    check a commit's files against its operation), made them DP output, readable raw in a dp-only namespace. A release snapshot holds all the
    table's rows (``total-records == added-records``), a delete adds no row, a rewrite no more rows than it removed."""
    from pyiceberg.table.snapshots import Operation
    from pyiceberg.table.update.snapshot import _FastAppendFiles

    from iceberg_privacy.properties import released_rows

    ip.set_access_policy(lake, "db", privacy_unit="user_id", principal_budgets={"*": 1})
    ip.dp_synthesize(lake, "db.t", ["country"], RhoZCDP(0.5), output="db.syn", domains={"country": ["de"]}, rows=3)
    ip.require_raw_access(lake, "db.syn")  # the synthesis's rows
    syn = lake.load_table("db.syn")
    release = released_rows(syn)
    assert release is not None and release.current
    raw = pa.table({"country": ["RAW"]}, schema=syn.schema().as_arrow())
    syn.append(raw, snapshot_properties={"privacy.dp.release": "1"})  # a copied summary key
    with pytest.raises(ip.DpOnlyError, match="dp-only"):
        ip.require_raw_access(lake, "db.syn")
    ip.dp_synthesize(lake, "db.t", ["country"], RhoZCDP(0.25), output="db.syn", domains={"country": ["de"]}, rows=3)
    ip.require_raw_access(lake, "db.syn")  # re-synthesized (another question, not memoized): DP output again
    syn = lake.load_table("db.syn")
    with syn.transaction() as tx:  # raw rows committed as a "delete" (pyiceberg cannot write a "replace" summary)
        append = _FastAppendFiles(operation=Operation.DELETE, transaction=tx, io=syn.io)
        for data_file in _dataframe_to_data_files(syn, raw):
            append.append_data_file(data_file)
        append.commit()
    assert lake.load_table("db.syn").current_snapshot().summary.operation == Operation.DELETE
    with pytest.raises(ip.DpOnlyError, match="dp-only"):
        ip.require_raw_access(lake, "db.syn")


def _dataframe_to_data_files(table: Any, data: pa.Table) -> list[Any]:
    from pyiceberg.io.pyarrow import _dataframe_to_data_files as write

    return list(write(table_metadata=table.metadata, df=data, io=table.io))
