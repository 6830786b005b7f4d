"""``dp_histogram``: a differentially private count, sum or mean per group of an Iceberg table.

This module turns the arguments into a checked :class:`~iceberg_privacy.dp.query.HistogramQuery` and a
:class:`~iceberg_privacy.dp.release.ReleasePlan` (the tmlt query, its key set, its lineage); the release itself
(memo, reservation, evaluation, output table, ledger) is :func:`~iceberg_privacy.dp.release.run_release`, shared
with DP SQL and DP synthetic data.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Snapshot

from iceberg_privacy._internal import compat
from iceberg_privacy._internal.arguments import LIBRARY_FILES
from iceberg_privacy.catalog import TableRef, load_table
from iceberg_privacy.config import current_principal
from iceberg_privacy.dp._refs import (
    catalog_first,
    catalog_for,
    qualified,
    show,
    source_in_catalog,
    source_snapshot,
)
from iceberg_privacy.dp.arguments import (
    ID_TYPES,
    KEY_TYPES,
    NUMERIC_TYPES,
    OUTPUT_NAMES,
    REQUIRED,
    RowUnit,
    resolve_privacy_unit,
    source_field,
    sums_as_double,
    tumult_addressable,
    validate_args,
)
from iceberg_privacy.dp.budget import Budget, as_budget
from iceberg_privacy.dp.keys import resolve_keys, tmlt_keyset
from iceberg_privacy.dp.query import HistogramQuery, renamed_fields
from iceberg_privacy.dp.release import (
    Release,
    ReleasePlan,
    check_output_name,
    release_table_name,
    run_release,
)
from iceberg_privacy.errors import ConfigurationError, UnknownColumnError
from iceberg_privacy.lineage.record import AGGREGATION, COMPLETE, INDIRECT, FieldRef, LineageRecord, SourceRef
from iceberg_privacy.storage import storage_errors

Aggregate = Literal["count", "sum", "mean"]


def _tmlt_query(source_id: str, by: list[str], keyset: Any, q: HistogramQuery, measure: str | None = None) -> Any:
    """``measure``: the column the sum/mean reads (a derived double copy of ``q.column``, see ``sums_as_double``)."""
    from tmlt.analytics import MaxRowsPerID, QueryBuilder

    builder = QueryBuilder(source_id)
    if q.privacy_unit is not None:
        builder = builder.enforce(MaxRowsPerID(int(q.max_rows_per_unit or 1)))
    grouped = builder.groupby(keyset if keyset is not None else list(by))
    name = OUTPUT_NAMES[q.aggregation]
    if q.aggregation == "count":
        query = grouped.count(name=name, mechanism=q.mechanism)  # type: ignore[arg-type]
        return query.suppress(q.threshold) if q.threshold is not None else query
    assert q.column is not None and q.low is not None and q.high is not None
    column = measure or q.column
    if q.aggregation == "sum":
        return grouped.sum(column, q.low, q.high, name=name, mechanism=q.mechanism)  # type: ignore[arg-type]
    return grouped.average(column, q.low, q.high, name=name, mechanism=q.mechanism)  # type: ignore[arg-type]



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
                f"dp_histogram({table}, by, ..., catalog=catalog)", DeprecationWarning, stacklevel=2,
                skip_file_prefixes=LIBRARY_FILES)
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
    privacy_unit: str | RowUnit = REQUIRED,
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
    :func:`~iceberg_privacy.connect`. A ``Table`` loaded from another catalog than ``catalog`` is refused (its
    budgets and policy are in its own catalog's ledger).

    ``privacy_unit`` is required: the column identifying a person/device (each contributes at most
    ``max_rows_per_unit`` rows, extra rows are dropped), or :data:`ROWS` to protect single rows (up
    to ``max_rows_per_unit`` of them). ``None`` is the deprecated spelling of ``ROWS``. ``keys`` is a public key set (dict of values per column, list of
    key rows, or a public Iceberg table) or None to discover keys privately (ApproxDP only).
    ``threshold`` suppresses noisy counts below it. ``aggregate`` is ``count`` or ``sum``/``mean``
    of ``column`` clamped to [low, high]; ``mechanism`` is ``"default"`` (tmlt's choice), ``"laplace"`` or
    ``"gaussian"``. The spend is charged to the table's and namespace's
    budgets in the ledger before anything is computed.
    """
    by = validate_args(by, aggregate, column, low, high, max_rows_per_unit, threshold, mechanism)
    max_rows_per_unit = int(max_rows_per_unit)
    amount = as_budget(budget)
    principal = principal or current_principal()
    if not isinstance(table, Table):
        qualified(table, "source table")  # a clear error for a bad reference, before connecting anywhere
    catalog = catalog_for(table, catalog)
    if isinstance(table, Table):
        source_in_catalog(catalog, table)  # its policy and budgets are in its own catalog's ledger
    source = load_table(catalog, table)
    source_id = tuple(source.name())
    namespace = source_id[:-1]
    unit = resolve_privacy_unit(privacy_unit, source)  # None means ROWS (the query JSON and provenance say "row")
    for c in by:
        ftype = source_field(source, c, "grouping").field_type
        if not isinstance(ftype, KEY_TYPES):
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
        if not isinstance(unit_type, ID_TYPES):
            raise ConfigurationError(
                f"privacy-unit column {unit!r} has type {unit_type}; use a string/integer id."
            )
        if unit in by:
            raise ConfigurationError("the privacy-unit column cannot also be a grouping column.")
    as_double: str | None = None  # the derived double column a sum/mean of a wide integer column reads
    if column is not None:
        ctype = source_field(source, column, "measure").field_type
        if not isinstance(ctype, NUMERIC_TYPES):
            raise ConfigurationError(
                f"measure column {column!r} has type {ctype}; sums and means need numbers."
            )
        if aggregate != "count" and sums_as_double(ctype, low, high):
            taken = {f.name.lower() for f in source.schema().fields}
            as_double = f"_ip_double_{column}"
            while as_double.lower() in taken:
                as_double = "_" + as_double
    for c in (*by, *([unit] if unit else []), *([column] if column else [])):
        if not tumult_addressable(c):
            raise ConfigurationError(
                f"column {c!r} has a '.' or '`' in its name, which Tumult cannot address; the data owner can rename "
                "it (Iceberg renames are metadata-only). Nothing was spent.")
    snap = source_snapshot(source, snapshot_id, '.'.join(source_id))
    resolved = resolve_keys(catalog, source, by, keys)
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
        extra={**_fields_extra(source, snap, [*by, *([unit] if unit else []), *([column] if column else [])]),
               **({"sum_in": "double"} if as_double else {})},
    )
    qhash = query.hash()
    out_id = qualified(output) if output else (*namespace, release_table_name(source_id[-1], "dp", qhash))
    if output:
        check_output_name(out_id)
    expected_cols = [*by, OUTPUT_NAMES[aggregate]]

    def prepare(spark: Any, df: Any) -> Any:
        keyset = None if discover else tmlt_keyset(spark, df, by, resolved)
        return _tmlt_query("source", by, keyset, query, as_double)

    def evaluate(session: Any, tq: Any) -> pa.Table:
        return session.evaluate(tq, amount.to_tmlt()).toArrow()

    return run_release(ReleasePlan(
        catalog=catalog, source=source, snapshot_id=snap.snapshot_id, query=query, amount=amount,
        principal=principal, unit=unit, max_rows_per_unit=max_rows_per_unit,
        needed=[*by, *([unit] if unit else []), *([column] if column and column not in by else [])],
        out_id=out_id, columns=expected_cols, sort_by=list(by), keys=resolved.description, threshold=threshold,
        discover=discover, lineage=_lineage(source, snap.snapshot_id, by, expected_cols[-1], column, unit),
        prepare=prepare, noise=lambda session, tq: compat.noise_info(session, tq, amount.to_tmlt()),
        evaluate=evaluate, frame=_double_copy(column, as_double) if column and as_double else None,
        value_types={expected_cols[-1]: _value_type(source, aggregate, column, as_double)},
    ), memoize=memoize, spark=spark)


def _value_type(source: Table, aggregate: str, column: str | None, as_double: str | None) -> Any:
    """The Iceberg type of a histogram's value column: counts and integer sums are longs, the rest doubles."""
    from pyiceberg.types import DoubleType, IntegerType, LongType

    if aggregate == "count":
        return LongType
    if aggregate == "sum" and not as_double and column is not None \
            and isinstance(source.schema().find_field(column).field_type, (IntegerType, LongType)):
        return LongType
    return DoubleType


def _double_copy(column: str, name: str) -> Callable[[Any], Any]:
    """``df -> df`` with ``name``, ``column`` cast to double (see ``sums_as_double``)."""

    def frame(df: Any) -> Any:
        from pyspark.sql import functions as F  # noqa: N812 - pyspark's convention

        return df.withColumn(name, F.col(f"`{column}`").cast("double"))

    return frame


def _fields_extra(source: Table, snap: Snapshot, columns: list[str]) -> dict[str, Any]:
    fields = renamed_fields(source, snap, columns)
    return {} if fields is None else {"fields": fields}



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


__all__ = ["Aggregate", "dp_histogram"]
