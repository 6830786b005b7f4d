"""Differentially private histograms over Iceberg tables, computed with Tumult Analytics on Spark.

Order of a release, chosen so that nothing noise-free ever leaves and no spend is ever lost:

1. Validate everything that can be validated without spending (arguments: finite and in range, the
   privacy unit: always explicit; schema, key set, Spark and its Python workers, the compiled tmlt
   query on a throw-away session).
2. Memoization: if the same canonical query already has a release on the same source snapshot,
   return it, log a ``memoized`` event, spend nothing.
3. Reserve: commit the spend to the ledger by compare-and-swap, naming the owner (see :mod:`.ledger`).
   From here a background thread refreshes the reservation's heartbeat.
4. Commit ``evaluating`` (only if the reservation is still open), then evaluate in a tmlt Session
   that starts from what was left before this spend and collect the whole noisy result; commit
   ``evaluated``; write it to the output table in ONE Iceberg commit whose snapshot summary carries
   the provenance. Log ``released``.
5. A failure after step 3 but before ``evaluating`` refunds the spend (``refunded``,
   :class:`ReleaseAbortedError`); a failure after it logs ``failed`` and keeps the spend
   (:class:`ReleaseFailedError`). Either way no output snapshot exists.
"""

from __future__ import annotations

import functools
import math
import numbers
import uuid
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal, final

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NamespaceAlreadyExistsError, NoSuchTableError
from pyiceberg.expressions import AlwaysTrue
from pyiceberg.table import Table
from pyiceberg.types import (
    DateType,
    DoubleType,
    FloatType,
    IntegerType,
    LongType,
    StringType,
    TimestampType,
    TimestamptzType,
)

from iceberg_privacy._internal import compat
from iceberg_privacy._internal.faults import checkpoint
from iceberg_privacy.catalog import TableRef, all_namespaces, load_table, table_name
from iceberg_privacy.config import current_principal
from iceberg_privacy.dp._refs import catalog_first, catalog_for, check_catalog, qualified, show
from iceberg_privacy.dp.budget import Budget, as_budget, budget_from_json
from iceberg_privacy.dp.errors import KeySetError, ReleaseAbortedError, ReleaseFailedError
from iceberg_privacy.dp.ledger import Ledger
from iceberg_privacy.dp.provenance import RELEASE_MARKER, build_summary, noise_summary, read_provenance
from iceberg_privacy.dp.query import HistogramQuery, keyset_fingerprint
from iceberg_privacy.dp.reservation import Heartbeat
from iceberg_privacy.errors import (
    ConfigurationError,
    IcebergPrivacyError,
    InvalidArgumentError,
    PrivacyUnitRequiredError,
    UnknownColumnError,
)
from iceberg_privacy.lineage.record import AGGREGATION, COMPLETE, INDIRECT, FieldRef, LineageRecord, SourceRef
from iceberg_privacy.properties import ReleaseProvenance
from iceberg_privacy.storage import storage_errors

Aggregate = Literal["count", "sum", "mean"]


@final
class RowUnit:
    """The type of :data:`ROWS`: the explicit row-level privacy unit."""

    _instance: RowUnit | None = None

    def __new__(cls) -> RowUnit:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "ROWS"

    def __reduce__(self) -> str:
        return "ROWS"


ROWS: Final[RowUnit] = RowUnit()
"""``privacy_unit=ROWS`` protects single rows (tmlt ``AddOneRow``, or ``AddMaxRows(k)`` with
``max_rows_per_unit=k``): right only when every person has at most that many rows. Never implied:
a release without ``privacy_unit=`` is refused."""


class _Required:
    def __repr__(self) -> str:
        return "<required>"


_REQUIRED: Any = _Required()
_ID_TYPES = (StringType, IntegerType, LongType, DateType)
_KEY_TYPES = (StringType, IntegerType, LongType, DateType, TimestampType, TimestamptzType)
_NUMERIC_TYPES = (IntegerType, LongType, FloatType, DoubleType)
_OUTPUT_NAMES = {"count": "count", "sum": "sum", "mean": "mean"}


@dataclass
class Release:
    """The outcome of :func:`dp_histogram`: where the numbers are, what they cost, how they were made."""

    release_id: str
    output: str
    snapshot_id: int
    source: str
    source_snapshot_id: int
    query_hash: str
    budget: Budget
    spent: Budget | None
    """What this call spent: the budget, or None for a memoized answer."""
    memoized: bool
    provenance: ReleaseProvenance
    data: pa.Table = field(repr=False)

    @property
    def noise(self) -> list[dict[str, Any]]:
        return list(self.provenance.mechanism)

    def __str__(self) -> str:
        cost = "memoized, spent nothing" if self.memoized or self.spent is None else f"spent {self.spent.describe()}"
        return (
            f"DP release {self.release_id[:12]} of {self.source}@{self.source_snapshot_id}: {self.data.num_rows} rows "
            f"in {self.output}@{self.snapshot_id}; {cost}"
        )


def _identifier(name: str | tuple[str, ...] | Table) -> tuple[str, ...]:
    if isinstance(name, Table):
        return tuple(name.name())
    if isinstance(name, tuple):
        return name
    parts = tuple(str(name).split("."))
    if len(parts) < 2 or not all(parts):
        raise ConfigurationError(f"table name {name!r} must be qualified as 'namespace.table'.")
    return parts


def _load(catalog: Catalog, name: str | tuple[str, ...] | Table, what: str) -> Table:
    if isinstance(name, Table):
        return name
    try:
        return catalog.load_table(_identifier(name))
    except NoSuchTableError as exc:
        raise ConfigurationError(f"{what} {name!r} does not exist in the catalog; check the name.") from exc


def _field(table: Table, column: str, role: str) -> Any:
    schema = table.schema()
    try:
        return schema.find_field(column)
    except ValueError as exc:
        known = ", ".join(f.name for f in schema.fields)
        raise UnknownColumnError(
            f"{role} column {column!r} is not in table {table_name(table)} (columns: {known})."
        ) from exc


@dataclass
class _Keys:
    """A resolved key set: how to build it in Spark, and how to describe it in the query."""

    description: dict[str, Any]
    rows: list[tuple[Any, ...]] | None = None  # explicit combinations
    per_column: dict[str, list[Any]] | None = None  # cross product


def _resolve_keys(catalog: Catalog, source: Table, by: list[str], keys: Any) -> _Keys:
    """Validate the public key set against the grouping columns, before anything is spent."""
    if keys is None:
        return _Keys({"kind": "discovered"})
    if isinstance(keys, Mapping):
        if sorted(keys) != sorted(by):
            raise KeySetError(f"key values are given for {sorted(keys)} but the histogram groups by {by}.")
        per_column = {c: sorted(set(keys[c]), key=repr) for c in by}
        if any(not v for v in per_column.values()):
            raise KeySetError("every grouping column needs at least one public key value.")
        fp = keyset_fingerprint(by, [tuple(v) for v in per_column.values()])
        return _Keys({"kind": "values", "columns": by, "fingerprint": fp}, per_column=per_column)
    if isinstance(keys, (str, Table)) or (isinstance(keys, tuple) and all(isinstance(p, str) for p in keys)):
        key_table = _load(catalog, keys, "public key table")
        for column in by:
            try:
                key_field = key_table.schema().find_field(column)
            except ValueError as exc:
                raise KeySetError(
                    f"public key table {table_name(key_table)} has no column {column!r}; it needs the "
                    f"grouping columns {by} with the same types as the source table."
                ) from exc
            src_field = source.schema().find_field(column)
            if key_field.field_type != src_field.field_type:
                raise KeySetError(
                    f"public key table column {column!r} has type {key_field.field_type}, but the source column "
                    f"has type {src_field.field_type}; cast the key table to the source types."
                )
        snap = key_table.current_snapshot()
        arrow = (
            key_table.scan(selected_fields=tuple(by)).to_arrow() if snap else pa.table({c: [] for c in by})
        )
        rows = sorted(set(zip(*(arrow.column(c).to_pylist() for c in by), strict=True)), key=repr)
        if not rows:
            raise KeySetError(
                f"public key table {table_name(key_table)} is empty; a histogram needs keys."
            )
        return _Keys(
            {
                "kind": "table",
                "table": table_name(key_table),
                "uuid": str(key_table.metadata.table_uuid),
                "snapshot_id": snap.snapshot_id if snap else None,
                "fingerprint": keyset_fingerprint(by, rows),
            },
            rows=rows,
        )
    if isinstance(keys, Sequence):
        rows = []
        for row in keys:
            if isinstance(row, Mapping):
                if sorted(row) != sorted(by):
                    raise KeySetError(f"key row {dict(row)} must have exactly the columns {by}.")
                rows.append(tuple(row[c] for c in by))
            else:
                tup = tuple(row) if isinstance(row, (tuple, list)) else (row,)
                if len(tup) != len(by):
                    raise KeySetError(
                        f"key row {row!r} has {len(tup)} values but the histogram groups by {by}."
                    )
                rows.append(tup)
        if not rows:
            raise KeySetError("the public key list is empty; a histogram needs keys.")
        rows = sorted(set(rows), key=repr)
        return _Keys({"kind": "rows", "columns": by, "fingerprint": keyset_fingerprint(by, rows)}, rows=rows)
    raise KeySetError(
        f"unsupported keys {type(keys).__name__}: pass a dict column -> values, a list of key rows, "
        "a public key table name, or None to discover keys privately."
    )


def _tmlt_keyset(spark: Any, df: Any, by: list[str], keys: _Keys) -> Any:
    """Build tmlt's KeySet with the source DataFrame's exact column types."""
    from pyspark.sql.types import StructType
    from tmlt.analytics import KeySet

    if keys.per_column is not None:
        keyset = None
        for column in by:
            schema = StructType([df.schema[column]])
            part = KeySet.from_dataframe(
                spark.createDataFrame([(v,) for v in keys.per_column[column]], schema)
            )
            keyset = part if keyset is None else keyset * part
        return keyset
    schema = StructType([df.schema[c] for c in by])
    return KeySet.from_dataframe(spark.createDataFrame(list(keys.rows or []), schema))


def _tmlt_query(source_id: str, by: list[str], keyset: Any, q: HistogramQuery) -> Any:
    from tmlt.analytics import MaxRowsPerID, QueryBuilder

    builder = QueryBuilder(source_id)
    if q.privacy_unit is not None:
        builder = builder.enforce(MaxRowsPerID(int(q.max_rows_per_unit or 1)))
    grouped = builder.groupby(keyset if keyset is not None else list(by))
    name = _OUTPUT_NAMES[q.aggregation]
    if q.aggregation == "count":
        query = grouped.count(name=name, mechanism=q.mechanism)  # type: ignore[arg-type]
        return query.suppress(q.threshold) if q.threshold is not None else query
    assert q.column is not None and q.low is not None and q.high is not None
    if q.aggregation == "sum":
        return grouped.sum(q.column, q.low, q.high, name=name, mechanism=q.mechanism)  # type: ignore[arg-type]
    return grouped.average(q.column, q.low, q.high, name=name, mechanism=q.mechanism)  # type: ignore[arg-type]


def _session(df: Any, q: HistogramQuery, budget: Budget) -> Any:
    from tmlt.analytics import AddMaxRows, AddOneRow, AddRowsWithID, Session

    if q.privacy_unit is not None:
        change: Any = AddRowsWithID(id_column=q.privacy_unit)
    elif (q.max_rows_per_unit or 1) > 1:
        change = AddMaxRows(int(q.max_rows_per_unit or 1))
    else:
        change = AddOneRow()
    return Session.from_dataframe(
        privacy_budget=budget.to_tmlt(), source_id="source", dataframe=df, protected_change=change
    )


def _feature_flag(discover: bool) -> Any:
    """tmlt gates private key discovery (auto partition selection) behind a feature flag."""
    import contextlib

    if not discover:
        return contextlib.nullcontext()
    from tmlt.analytics.config import config

    return config.features.auto_partition_selection.enabled()


def _finite(name: str, value: Any, *, why: str) -> float:
    """``value`` as a float if it is a finite real number; InvalidArgumentError otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise InvalidArgumentError(f"{name}={value!r} must be a finite number; {why}")
    return float(value)


def _validate_args(
    by: Sequence[str],
    aggregate: str,
    column: str | None,
    low: float | None,
    high: float | None,
    max_rows_per_unit: int,
    threshold: float | None,
    mechanism: str,
) -> list[str]:
    """Check every argument that needs no table, before anything is read, reserved or spent."""
    if isinstance(by, str):
        by = [by]
    by = list(by)
    if not by or len(set(by)) != len(by):
        raise ConfigurationError(f"by={by!r} must name one or more distinct grouping columns.")
    if aggregate not in _OUTPUT_NAMES:
        raise ConfigurationError(f"aggregate={aggregate!r} must be one of {sorted(_OUTPUT_NAMES)}.")
    if aggregate != "count":
        if column is None or low is None or high is None:
            raise ConfigurationError(f"a {aggregate} needs column=, low= and high= (the clamping bounds).")
        why = "values are clamped into [low, high], so pass finite bounds with low < high (e.g. low=0, high=100)."
        if not _finite("low", low, why=why) < _finite("high", high, why=why):
            raise InvalidArgumentError(f"low={low} must be < high={high}; {why}")
    if (isinstance(max_rows_per_unit, bool) or not isinstance(max_rows_per_unit, numbers.Integral)
            or max_rows_per_unit < 1):
        raise InvalidArgumentError(
            f"max_rows_per_unit must be an integer >= 1, got {max_rows_per_unit!r}; it bounds how many rows "
            "one privacy unit may contribute: pass a positive integer such as 1 or 10."
        )
    if threshold is not None:
        if aggregate != "count":
            raise ConfigurationError(
                "a release threshold applies to counts only; drop threshold= for sums and means."
            )
        if (isinstance(threshold, bool) or not isinstance(threshold, numbers.Real)
                or not math.isfinite(float(threshold)) or threshold < 0):
            raise InvalidArgumentError(
                f"threshold={threshold!r} must be a finite number >= 0 (noisy counts below it are suppressed); "
                "pass a count such as threshold=90, or threshold=None to release every key."
            )
    if mechanism not in ("default", "laplace", "gaussian"):
        raise ConfigurationError(f"mechanism={mechanism!r} must be 'default', 'laplace' or 'gaussian'.")
    return by


def _privacy_unit(privacy_unit: Any, source: Table) -> str | None:
    """The privacy-unit column, or None for :data:`ROWS`; an omitted unit is an error, never a guess."""
    columns = ", ".join(f.name for f in source.schema().fields)
    if privacy_unit is _REQUIRED:
        raise PrivacyUnitRequiredError(
            f"dp_histogram needs privacy_unit=, the unit whose presence the release hides; there is no default. "
            f"Pass privacy_unit='<column>' naming the column that identifies a person or device in "
            f"{table_name(source)} (columns: {columns}); each unit then contributes at most max_rows_per_unit "
            "rows (tmlt AddRowsWithID). Or pass privacy_unit=ROWS (iceberg_privacy.ROWS) to protect single rows "
            "(AddOneRow, or AddMaxRows(k) with max_rows_per_unit=k), which protects a person only if they have "
            "at most that many rows. Tumult Analytics and OpenDP make this choice explicit too."
        )
    if privacy_unit is None:
        warnings.warn(
            "privacy_unit=None is deprecated and is removed in the next release: pass privacy_unit=ROWS "
            "(iceberg_privacy.ROWS) to protect single rows", DeprecationWarning, stacklevel=5)  # the caller of dp_histogram
        return None
    if privacy_unit is ROWS:
        return None
    if not isinstance(privacy_unit, str) or not privacy_unit:
        raise ConfigurationError(
            f"privacy_unit={privacy_unit!r} is neither a column name nor ROWS; pass privacy_unit='<column>' "
            f"(columns of {table_name(source)}: {columns}) or privacy_unit=ROWS."
        )
    return privacy_unit


def _accepts_catalog_first[F: Callable[..., Any]](fn: F) -> F:
    """Route the pre-0.2 form ``dp_histogram(catalog, table, by, ...)`` to ``dp_histogram(table, by, ...,
    catalog=catalog)`` with a DeprecationWarning; the function keeps its own signature."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if catalog_first(args):
            if "catalog" in kwargs:
                raise ConfigurationError(
                    "dp_histogram got a Catalog first and catalog= too: call dp_histogram(table, by, ..., catalog=catalog)"
                )
            table = show(args[1] if len(args) > 1 else kwargs.get("table", "table"))
            warnings.warn(
                f"dp_histogram(catalog, table, by, ...) is deprecated and is removed in the next release: call "
                f"dp_histogram({table}, by, ..., catalog=catalog)", DeprecationWarning, stacklevel=2)
            kwargs["catalog"] = args[0]
            args = args[1:]
        return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


@_accepts_catalog_first
@storage_errors
def dp_histogram(
    table: TableRef,
    by: Sequence[str],
    *,
    budget: Budget | Any,
    catalog: Catalog | None = None,
    privacy_unit: str | RowUnit = _REQUIRED,
    max_rows_per_unit: int = 1,
    keys: Mapping[str, Sequence[Any]] | Sequence[Any] | str | Table | None = None,
    threshold: float | None = None,
    snapshot_id: int | None = None,
    principal: str | None = None,
    output: str | None = None,
    aggregate: Aggregate = "count",
    column: str | None = None,
    low: float | None = None,
    high: float | None = None,
    mechanism: str = "default",
    spark: Any | None = None,
    memoize: bool = True,
) -> Release:
    """Release a differentially private histogram of ``table`` grouped ``by`` columns.

    ``table`` is a loaded pyiceberg ``Table``, ``"ns.table"`` or ``("ns", "table")``. ``catalog`` holds
    the budget ledger, the memo and the release table, and is where names (``table``, a ``keys`` table)
    are loaded from; by default it is the catalog a loaded ``Table`` came from, else
    :func:`~iceberg_privacy.connect`.

    ``privacy_unit`` is required: the column identifying a person/device (each contributes at most
    ``max_rows_per_unit`` rows, extra rows are dropped), or :data:`ROWS` to protect single rows (up
    to ``max_rows_per_unit`` of them). ``None`` is the deprecated spelling of ``ROWS``. ``keys`` is a public key set (dict of values per column, list of
    key rows, or a public Iceberg table) or None to discover keys privately (ApproxDP only).
    ``threshold`` suppresses noisy counts below it. ``aggregate`` is ``count`` or ``sum``/``mean``
    of ``column`` clamped to [low, high]. The spend is charged to the table's and namespace's
    budgets in the ledger before anything is computed.
    """
    by = _validate_args(by, aggregate, column, low, high, max_rows_per_unit, threshold, mechanism)
    max_rows_per_unit = int(max_rows_per_unit)
    amount = as_budget(budget)
    principal = principal or current_principal()
    if not isinstance(table, Table):
        qualified(table, "source table")  # a clear error for a bad reference, before connecting anywhere
    catalog = catalog_for(table, catalog)
    source = load_table(catalog, table)
    source_id = tuple(source.name())
    namespace = source_id[:-1]
    unit = _privacy_unit(privacy_unit, source)  # None means ROWS (the query JSON and provenance say "row")
    for c in by:
        ftype = _field(source, c, "grouping").field_type
        if not isinstance(ftype, _KEY_TYPES):
            raise ConfigurationError(
                f"grouping column {c!r} has type {ftype}; group by strings, integers or dates."
            )
    if unit is not None:
        try:
            unit_type = source.schema().find_field(unit).field_type
        except ValueError as exc:
            raise UnknownColumnError(
                f"privacy-unit column {unit!r} is missing from {'.'.join(source_id)}; pass the column "
                "that identifies a person or device, or privacy_unit=ROWS to protect individual rows."
            ) from exc
        if not isinstance(unit_type, _ID_TYPES):
            raise ConfigurationError(
                f"privacy-unit column {unit!r} has type {unit_type}; use a string/integer id."
            )
        if unit in by:
            raise ConfigurationError("the privacy-unit column cannot also be a grouping column.")
    if column is not None:
        ctype = _field(source, column, "measure").field_type
        if not isinstance(ctype, _NUMERIC_TYPES):
            raise ConfigurationError(
                f"measure column {column!r} has type {ctype}; sums and means need numbers."
            )
    if snapshot_id is None:
        snap = source.current_snapshot()
        if snap is None:
            raise ConfigurationError(f"table {'.'.join(source_id)} has no snapshot yet; write data first.")
    else:
        snap = source.snapshot_by_id(snapshot_id)
        if snap is None:
            raise ConfigurationError(f"snapshot {snapshot_id} does not exist in {'.'.join(source_id)}.")
    resolved = _resolve_keys(catalog, source, by, keys)
    discover = resolved.rows is None and resolved.per_column is None
    if discover and not (amount.kind == "approx" and amount.components()[1] > 0):
        raise ConfigurationError(
            "discovering keys privately (keys=None) needs an ApproxDP budget with delta > 0, as tmlt's "
            "partition selection does; pass public keys, or budget=ApproxDP(epsilon, delta)."
        )
    query = HistogramQuery(
        source_table=".".join(source_id),
        source_uuid=str(source.metadata.table_uuid),
        by=tuple(by),
        aggregation=aggregate,
        budget=amount,
        privacy_unit=unit,
        max_rows_per_unit=max_rows_per_unit,
        keys=resolved.description,
        column=column,
        low=low,
        high=high,
        threshold=threshold,
        mechanism=mechanism,
    )
    qhash = query.hash()
    out_id = _identifier(output) if output else (*namespace, f"{source_id[-1]}__dp_{qhash[:12]}")
    out_name = ".".join(out_id)
    expected_cols = [*by, _OUTPUT_NAMES[aggregate]]
    if catalog.table_exists(out_id):
        existing = catalog.load_table(out_id)
        if existing.properties.get(RELEASE_MARKER) != "1":
            raise ConfigurationError(
                f"output {out_name} exists and is not a DP release table; choose another name."
            )
        if [f.name for f in existing.schema().fields] != expected_cols:
            raise ConfigurationError(
                f"output {out_name} holds releases with columns {[f.name for f in existing.schema().fields]}, "
                f"not {expected_cols}; choose another output name."
            )
    ledger = Ledger(catalog, namespace)

    # Memoization: same canonical query, same snapshot -> the stored release, free of charge.
    if memoize and ledger.exists():
        hit = ledger.find_release(qhash, snap.snapshot_id)
        memo = _memoized(catalog, ledger, hit, principal, source_id, snap.snapshot_id, qhash, amount)
        if memo is not None:
            return memo

    # Early, cheap refusal (no budget, wrong type, exhausted) before any Spark work; reserve() re-checks
    # atomically, so this read being stale by the time we reserve is harmless.
    ledger.check(ledger.state(), source_id, principal, amount)

    # Everything tmlt can reject, it rejects here, on a throw-away session: nothing reserved yet. So do
    # Spark's start-up and its Python workers: a failure here costs nothing.
    try:
        spark = _spark(spark)
        check_python_workers(spark)
        from iceberg_privacy._internal.spark import table_dataframe

        needed = [
            *by,
            *([unit] if unit else []),
            *([column] if column and column not in by else []),
        ]
        df = table_dataframe(spark, source, snap.snapshot_id, needed)
        with _feature_flag(discover):
            keyset = None if discover else _tmlt_keyset(spark, df, by, resolved)
            tq = _tmlt_query("source", by, keyset, query)
            try:
                noise = noise_summary(compat.noise_info(_session(df, query, amount), tq, amount.to_tmlt()))
            except (ValueError, TypeError, RuntimeError) as exc:
                raise ConfigurationError(f"Tumult Analytics rejected the query before any spend: {exc}") from exc
    except IcebergPrivacyError:
        raise
    except Exception as exc:
        raise ReleaseAbortedError(
            f"the release failed before anything was reserved, so nothing was spent and nothing was released: "
            f"{type(exc).__name__}: {str(exc)[:2000]}. Fix the cause (is Spark installed, and do its Python "
            "workers run the driver's Python version? see PYSPARK_PYTHON) and run it again."
        ) from exc
    checkpoint("dp.before_reserve")

    reservation = ledger.reserve(
        source_id,
        principal,
        amount,
        source_snapshot_id=snap.snapshot_id,
        query_hash=qhash,
        output_table=out_name,
        detail={"query": query.to_json()},
    )
    rid = reservation.release_id
    # The fields every later ledger event of this release repeats.
    event: dict[str, Any] = {
        "release_id": rid,
        "principal": principal,
        "source": source_id,
        "source_snapshot_id": snap.snapshot_id,
        "query_hash": qhash,
        "output_table": out_name,
    }
    evaluating = False  # True once the ledger says `evaluating`: from then on noise may exist
    heartbeat = Heartbeat(ledger, rid, principal)
    try:
        with heartbeat:
            checkpoint("dp.after_reserve")
            with _feature_flag(discover):
                session = _session(df, query, reservation.remaining_before)
                noise = noise_summary(compat.noise_info(session, tq, amount.to_tmlt()))
                checkpoint("dp.before_evaluate")
                if not ledger.begin_evaluation(**event):
                    raise ReleaseAbortedError(
                        f"reservation {rid} was resolved as abandoned while this release was starting (its "
                        "heartbeat looked stale), so its budget was refunded and nothing may be computed on it; "
                        "nothing was spent and nothing was released. Run the release again.",
                        release_id=rid,
                    )
                evaluating = True
                result = session.evaluate(tq, amount.to_tmlt())
                arrow = result.toArrow()  # the complete noisy answer, or an exception: never a part of it
            arrow = arrow.sort_by([(c, "ascending") for c in by]).select(expected_cols)
            checkpoint("dp.after_evaluate")
            ledger.record("evaluated", **event)  # a heartbeat before the Iceberg write
            props = build_summary(
                release_id=rid,
                source_table=".".join(source_id),
                source_uuid=str(source.metadata.table_uuid),
                source_snapshot_id=snap.snapshot_id,
                query_json=query.canonical_json(),
                query_hash=qhash,
                noise=noise,
                budget=amount.to_json(),
                contribution={
                    "privacy_unit": unit,
                    "max_rows_per_unit": max_rows_per_unit,
                    "protected_change": "AddRowsWithID"
                    if unit
                    else ("AddMaxRows" if max_rows_per_unit > 1 else "AddOneRow"),
                },
                keys=resolved.description,
                threshold=threshold,
                principal=principal,
                released_at=datetime.now(UTC).isoformat(),
                ledger_table=".".join(ledger.identifier),
                ledger_snapshot_id=reservation.ledger_snapshot_id,
            )
            props.update(_lineage(source, snap.snapshot_id, by, expected_cols[-1], column, unit).summary())
            out_table = _write_output(catalog, out_id, arrow, props)
    except BaseException as exc:
        error = _after_failure(ledger, event, amount, exc, evaluating)
        if error is exc:
            raise
        raise error from exc
    out_snap = out_table.current_snapshot()
    assert out_snap is not None
    provenance = read_provenance(out_table, out_snap.snapshot_id)
    assert provenance is not None, "the release commit carries its provenance"
    ledger.record("released", **event, output_snapshot_id=out_snap.snapshot_id, amount=amount)
    return Release(
        release_id=rid,
        output=out_name,
        snapshot_id=out_snap.snapshot_id,
        source=".".join(source_id),
        source_snapshot_id=snap.snapshot_id,
        query_hash=qhash,
        budget=amount,
        spent=amount,
        memoized=False,
        provenance=provenance,
        data=arrow,
    )


def _after_failure(ledger: Ledger, event: dict[str, Any], amount: Budget, exc: BaseException,
                   evaluating: bool) -> BaseException:
    """Close a reservation whose release failed, and return the error to raise.

    Before ``evaluating`` no noisy value exists: refund (the ledger re-checks that state in the refund's
    commit). After it, noise may have been drawn: record ``failed`` and keep the spend.
    """
    rid = event["release_id"]
    error = f"{type(exc).__name__}: {exc}"[:2000]
    state = "evaluating" if evaluating else "reserved"
    if not evaluating:
        try:
            state = ledger.refund(rid, reason="the release failed before any noisy value was computed",
                                  detail={"error": error})
        except Exception as refund_exc:  # noqa: BLE001 - keep the first error; resolution refunds it later
            if isinstance(exc, Exception):
                return ReleaseFailedError(
                    f"the release failed before any noisy value was computed ({error}), but its refund could not "
                    f"be recorded ({type(refund_exc).__name__}: {refund_exc}); reservation {rid} ({amount!r}) stays "
                    "charged until `iceberg-privacy dp reservations --resolve` (or resolve_reservations) refunds "
                    "it once its heartbeat is stale. Nothing was released.",
                    release_id=rid,
                )
            return exc
        if state == "refunded":
            if isinstance(exc, ReleaseAbortedError) or not isinstance(exc, Exception):
                return exc
            return ReleaseAbortedError(
                f"the release failed before any noisy value was computed, so its reservation ({amount!r}) was "
                f"refunded: nothing was spent and nothing was released (release id {rid}): {error}. Fix the "
                "cause and run it again.",
                release_id=rid,
            )
    if state in ("reserved", "evaluating"):
        try:
            ledger.record("failed", **event, detail={"error": error})
        except Exception:  # noqa: BLE001 - the spend is already recorded as reserved; keep the first error
            pass
    if not isinstance(exc, Exception):
        return exc
    return ReleaseFailedError(
        f"the release failed after its evaluation started, so its spend ({amount!r}) stays charged (noise may "
        f"have been computed on the private data) and nothing was released (release id {rid}): {error}",
        release_id=rid,
    )


def _lineage(source: Table, snapshot_id: int, by: list[str], output: str, column: str | None,
             privacy_unit: str | None) -> LineageRecord:
    """A release's lineage: exempt from erasure fan-out (aggregated with DP), with its inputs named."""
    fields = {b: [FieldRef(0, b, subtype=AGGREGATION, masking=True)] for b in by}  # keys: public or DP-discovered
    fields[output] = [FieldRef(0, column or privacy_unit or by[0], subtype=AGGREGATION, masking=True)] \
        if (column or privacy_unit or by) else []
    indirect = [FieldRef(0, b, type=INDIRECT, subtype="GROUP_BY") for b in by]
    if privacy_unit:
        indirect.append(FieldRef(0, privacy_unit, type=INDIRECT, subtype="GROUP_BY"))
    src = SourceRef.of(source, snapshot_id)
    return LineageRecord(op="dp-release", engine="tumult", status=COMPLETE, sources=[src],
                         columns={k: v for k, v in fields.items() if v}, indirect=indirect, exempt="dp")


def _spark(spark: Any | None) -> Any:
    from iceberg_privacy._internal.spark import get_spark

    return get_spark(spark)


def check_python_workers(spark: Any) -> None:
    """Fail now, before anything is reserved, if Spark's Python workers cannot run (tmlt needs them)."""
    from iceberg_privacy._internal.spark import check_python_workers as check

    check(spark)


def _write_output(catalog: Catalog, out_id: tuple[str, ...], arrow: pa.Table, props: dict[str, str]) -> Table:
    """Write the whole release in one commit; its snapshot summary is the provenance."""
    try:
        catalog.create_namespace(out_id[:-1])
    except NamespaceAlreadyExistsError:
        pass
    if catalog.table_exists(out_id):
        table = catalog.load_table(out_id)
        with table.transaction() as tx:  # one commit: drop the previous release, add this one
            tx.delete(delete_filter=AlwaysTrue())  # no provenance on the delete snapshot: it holds no release
            tx.append(arrow, snapshot_properties=props)
    else:
        tx = catalog.create_table_transaction(out_id, schema=arrow.schema, properties={RELEASE_MARKER: "1"})
        tx.append(arrow, snapshot_properties=props)
        tx.commit_transaction()
    return catalog.load_table(out_id)


def _memoized(
    catalog: Catalog,
    ledger: Ledger,
    hit: dict[str, Any] | None,
    principal: str,
    source_id: tuple[str, ...],
    source_snapshot_id: int,
    qhash: str,
    amount: Budget,
) -> Release | None:
    """Return the stored release for a repeated question (and log it), if it is still readable."""
    if hit is None or not hit.get("output_table") or hit.get("output_snapshot_id") is None:
        return None
    try:
        out = catalog.load_table(_identifier(hit["output_table"]))
    except NoSuchTableError:
        return None
    out_snap = out.snapshot_by_id(hit["output_snapshot_id"])
    if out_snap is None:
        return None
    prov = read_provenance(out, out_snap.snapshot_id)
    if prov is None or prov.query_hash != qhash:
        return None
    data = out.scan(snapshot_id=out_snap.snapshot_id).to_arrow()
    memo_id = uuid.uuid4().hex
    ledger.record(
        "memoized",
        memo_id,
        principal,
        source=source_id,
        source_snapshot_id=source_snapshot_id,
        query_hash=qhash,
        output_table=hit["output_table"],
        output_snapshot_id=out_snap.snapshot_id,
        detail={"memo_of": hit["release_id"], "spent": "nothing"},
    )
    return Release(
        release_id=hit["release_id"],
        output=hit["output_table"],
        snapshot_id=out_snap.snapshot_id,
        source=".".join(source_id),
        source_snapshot_id=source_snapshot_id,
        query_hash=qhash,
        budget=amount,
        spent=None,
        memoized=True,
        provenance=prov,
        data=data,
    )


@dataclass
class ReleaseRecord:
    """One line of the release log: a release attempt or a memoized answer, with remaining budget.

    ``spent`` is what the attempt costs: None for a memoized answer and for a refunded attempt.
    """

    release_id: str
    status: str
    at: datetime
    principal: str | None
    source_table: str | None
    source_snapshot_id: int | None
    query_hash: str | None
    spent: Budget | None
    output_table: str | None
    output_snapshot_id: int | None
    remaining: dict[str, Budget | None]
    detail: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "release_id": self.release_id,
            "status": self.status,
            "at": self.at.isoformat() if self.at else None,
            "principal": self.principal,
            "source_table": self.source_table,
            "source_snapshot_id": self.source_snapshot_id,
            "query_hash": self.query_hash,
            "spent": self.spent.to_json() if self.spent else None,
            "output_table": self.output_table,
            "output_snapshot_id": self.output_snapshot_id,
            "remaining": {k: (v.to_json() if v else None) for k, v in self.remaining.items()},
        }

    def __str__(self) -> str:
        if self.status in ("memoized", "refunded"):
            spent = f"nothing ({self.status})"
        else:
            spent = self.spent.describe() if self.spent else "-"
        left = "; ".join(f"{scope} {b.describe() if b else '-'}" for scope, b in self.remaining.items()) or "-"
        return (
            f"{self.at:%Y-%m-%d %H:%M:%S} {self.release_id[:12]} {self.status} by {self.principal or '-'} of "
            f"{self.source_table}@{self.source_snapshot_id}: spent {spent}, output {self.output_table or '-'}; "
            f"remaining {left}"
        )


def releases(catalog: Catalog, table: TableRef | None = None) -> list[ReleaseRecord]:
    """List every release attempt and memoized answer, oldest first.

    ``status`` is the attempt's state: ``reserved`` / ``evaluating`` (running, or abandoned: see
    :func:`~iceberg_privacy.dp.reservations`), ``released``, ``failed`` (spend kept), ``refunded``
    (failed before any noise was computed; ``spent`` is None) or ``abandoned`` (resolved, spend kept).

    ``table`` (a loaded ``Table``, ``"ns.table"`` or ``("ns", "table")``) restricts the log to one
    source table; ``remaining`` is the budget left now in each scope that the release was charged to
    (or that governs the table, for memoized answers).
    """
    check_catalog(catalog, "releases")
    if table is not None:
        ident = qualified(table)
        namespaces = [ident[:-1]]
        wanted: str | None = ".".join(ident)
    else:
        namespaces = all_namespaces(catalog)
        wanted = None
    records: list[ReleaseRecord] = []
    for ns in namespaces:
        ledger = Ledger(catalog, ns)
        if not ledger.exists():
            continue
        state = ledger.state()
        by_id: dict[str, ReleaseRecord] = {}
        for ev in ledger.events():
            if ev["event"] == "budget_set" or (wanted and ev["source_table"] != wanted):
                continue
            rid = ev["release_id"]
            if ev["event"] in ("reserved", "memoized"):
                src = tuple((ev["source_table"] or "").split("."))
                scopes = ledger.applicable_scopes(src, state)
                rec = ReleaseRecord(
                    release_id=rid,
                    status=ev["event"],
                    at=ev["at"],
                    principal=ev["principal"],
                    source_table=ev["source_table"],
                    source_snapshot_id=ev["source_snapshot_id"],
                    query_hash=ev["query_hash"],
                    spent=budget_from_json(ev["amount"])
                    if ev["event"] == "reserved" and ev["amount"]
                    else None,
                    output_table=ev["output_table"],
                    output_snapshot_id=ev["output_snapshot_id"],
                    remaining={s: state.scope(s).remaining() for s in scopes},
                    detail=ev["detail"],
                )
                by_id[rid if ev["event"] == "reserved" else "memo:" + rid] = rec
                records.append(rec)
            elif rid in by_id and ev["event"] not in ("heartbeat", "evaluated") and by_id[rid].status != "released":
                rec = by_id[rid]
                rec.status = ev["event"]
                rec.output_snapshot_id = ev["output_snapshot_id"] or rec.output_snapshot_id
                if ev["event"] in ("failed", "refunded", "abandoned"):
                    rec.detail = ev["detail"]
                if ev["event"] == "refunded":
                    rec.spent = None  # given back: the release computed nothing
    records.sort(key=lambda r: r.at)
    return records


__all__ = ["ROWS", "Release", "ReleaseRecord", "RowUnit", "dp_histogram", "releases"]
