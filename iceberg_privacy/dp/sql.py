"""DP SQL, the running half: ``dp_sql`` turns a compiled query (:mod:`iceberg_privacy.dp.sql_compile`,
which explains the accepted subset and why it is a whitelist) into Tumult queries and releases the answer.

The release itself is :func:`~iceberg_privacy.dp.release.run_release`: the same memo, ledger
reservation (policy and budget checked in one compare-and-swap), provenance and refund rules as
``dp_histogram``; the normalized SQL and its hash are stored in the release's provenance. Several
aggregates share the budget equally (:func:`split_budget`).
"""

from __future__ import annotations

import hashlib
import math
import numbers
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table
from pyiceberg.types import DoubleType, FloatType

from iceberg_privacy._internal import compat
from iceberg_privacy._internal.arguments import check_catalog
from iceberg_privacy.config import current_principal
from iceberg_privacy.dp._refs import source_snapshot
from iceberg_privacy.dp.arguments import (
    ID_TYPES,
    ROWS,
    RowUnit,
    sums_as_double,
)
from iceberg_privacy.dp.budget import Budget, float_down
from iceberg_privacy.dp.ledger import Ledger
from iceberg_privacy.dp.policy import coerce_budget
from iceberg_privacy.dp.provenance import ReleaseProvenance
from iceberg_privacy.dp.query import QUERY_FORMAT_VERSION, canonical_dumps, keyset_fingerprint, renamed_fields
from iceberg_privacy.dp.sql_compile import (  # noqa: F401 - compile_sql and CompiledSql are re-exported
    Aggregate,
    CompiledSql,
    compile_sql,
    policy_unit,
)
from iceberg_privacy.dp.sql_parse import check_addressable, refuse
from iceberg_privacy.dp.sql_where import Predicate, predicate_json, spark_identifier, to_spark
from iceberg_privacy.errors import (
    ConfigurationError,
    InvalidArgumentError,
    PrivacyUnitRequiredError,
)
from iceberg_privacy.lineage.record import AGGREGATION, COMPLETE, INDIRECT, FieldRef, LineageRecord, SourceRef
from iceberg_privacy.properties import DP_SQL_HASH_SUMMARY, DP_SQL_SUMMARY
from iceberg_privacy.storage import storage_errors


@dataclass
class SqlRelease:
    """The answer of :func:`dp_sql`: the noisy rows, what they cost, and where they came from."""

    rows: pa.Table
    release_id: str
    provenance: ReleaseProvenance
    charged: Budget
    """What this call charged the ledger: the budget, or zero for a memoized answer."""
    memoized: bool
    sql: str
    """The normalized SQL of this call."""
    table: str
    output: str
    """The release table that holds the full answer (before ORDER BY / LIMIT)."""
    sql_hash: str

    def __str__(self) -> str:
        cost = "memoized, charged nothing" if self.memoized else f"charged {self.charged.describe()}"
        return (f"DP SQL release {self.release_id[:12]} of {self.table}: {self.rows.num_rows} rows in "
                f"{self.output}; {cost}")

    def to_json(self) -> dict[str, Any]:
        return {
            "release_id": self.release_id, "table": self.table, "output": self.output, "sql": self.sql,
            "sql_hash": self.sql_hash, "memoized": self.memoized, "charged": self.charged.to_json(),
            "columns": self.rows.column_names, "rows": self.rows.to_pylist(),
            "provenance": self.provenance.to_dict(),
        }


@dataclass(frozen=True)
class SqlQuery:
    """The canonical description of a DP SQL release (its hash is the memo key, with the snapshot)."""

    compiled: CompiledSql
    source_uuid: str
    budget: Budget
    unit: str | None
    max_rows_per_unit: int
    keys: dict[str, Any]
    fields: dict[str, int] | None = None
    """Field ids of the columns read, when the schema changed since the snapshot (:func:`renamed_fields`)."""
    double_sums: tuple[str, ...] = ()
    """Aggregates (by name) whose integer column is summed as double (:func:`~.arguments.sums_as_double`)."""

    def to_json(self) -> dict[str, Any]:
        c = self.compiled
        unit: dict[str, Any] = ({"kind": "row", "max_rows_per_unit": self.max_rows_per_unit} if self.unit is None
                                else {"kind": "column", "column": self.unit,
                                      "max_rows_per_unit": self.max_rows_per_unit})
        return {
            "format": QUERY_FORMAT_VERSION,
            "kind": "sql",
            "source": {"table": c.table, "uuid": self.source_uuid},
            "sql": c.release_sql,
            "sql_hash": c.sql_hash,
            "by": list(c.group_by),
            "aggregates": [a.to_json() for a in c.aggregates],
            "columns": [n for n in c.columns],
            "where": predicate_json(c.where) if c.where is not None else None,
            "budget": self.budget.to_json(),
            "privacy_unit": unit,
            "keys": self.keys,
            **({"fields": self.fields} if self.fields is not None else {}),
            **({"sums_in_double": list(self.double_sums)} if self.double_sums else {}),
        }

    def canonical_json(self) -> str:
        return canonical_dumps(self.to_json())

    def hash(self) -> str:
        return hashlib.sha256(self.canonical_json().encode("ascii")).hexdigest()


def split_budget(amount: Budget, parts: int) -> list[Budget]:
    """``amount`` in ``parts`` equal shares whose float values (what tmlt spends) never add up to more than
    the float value of ``amount``; the last share is the rest of the session, see :func:`_evaluate_all`."""
    if parts == 1:
        return [amount]
    comps = []
    for c in amount.components():
        target = Fraction(float_down(c))
        share = float(target / parts)
        while Fraction(share) * parts > target:
            share = math.nextafter(share, 0.0)
        comps.append(Fraction(share))
    share_budget = type(amount)._from_components(tuple(comps))
    return [share_budget] * parts


SQUARED = ("variance", "stddev")


def _clamped_columns(compiled: CompiledSql, source: Table) -> dict[int, str]:
    """For each VARIANCE/STDDEV aggregate (by position) of a float or double column, the name of a derived column
    holding the column clamped to the aggregate's bounds (:func:`_with_clamped`). Tumult squares every value in a
    Python UDF before it clamps, and a float beyond +-1.3e154 squared raises ``OverflowError``: the release failed
    after its evaluation began, so a single huge value in the data kept the spend and released nothing."""
    schema = {f.name: f.field_type for f in source.schema().fields}
    taken = {n.lower() for n in schema}
    out: dict[int, str] = {}
    for i, agg in enumerate(compiled.aggregates):
        wide = agg.kind in ("sum", "avg") and sums_as_double(schema.get(str(agg.column)), agg.low, agg.high)
        if wide or (agg.kind in SQUARED and agg.column is not None
                    and isinstance(schema.get(agg.column), (FloatType, DoubleType))):
            name = f"_ip_clamped_{i}"
            while name.lower() in taken:
                name = "_" + name
            taken.add(name.lower())
            out[i] = name
    return out


def _with_clamped(compiled: CompiledSql, derived: dict[int, str]) -> Any:
    """``df -> df`` adding the columns of :func:`_clamped_columns`: finite values clamped into the aggregate's
    ``[low, high]``; null, NaN and infinities kept as they are, for Tumult to handle as before. Clamping twice to the
    same bounds is clamping once, so the answer's distribution is unchanged."""

    def frame(df: Any) -> Any:
        from pyspark.sql import functions as F  # noqa: N812 - pyspark's convention

        for i, name in derived.items():
            agg = compiled.aggregates[i]
            c = F.col(spark_identifier(str(agg.column)))
            finite = ~(c.isNull() | F.isnan(c) | (F.abs(c) == F.lit(float("inf"))))
            assert agg.low is not None and agg.high is not None  # every aggregate here has bounds
            if agg.kind in ("sum", "avg"):  # an integer column summed in doubles: tmlt clamps it
                df = df.withColumn(name, c.cast("double"))
                continue
            low, high = F.lit(float(agg.low)), F.lit(float(agg.high))
            df = df.withColumn(name, F.when(finite & (c < low), low).when(finite & (c > high), high)
                               .otherwise(c.cast("double")))
        return df

    return frame


def _tmlt_queries(compiled: CompiledSql, keyset: Any, unit: str | None, max_rows: int,
                  derived: dict[int, str] | None = None) -> list[Any]:
    from tmlt.analytics import MaxRowsPerID, QueryBuilder

    queries = []
    for i, agg in enumerate(compiled.aggregates):
        builder = QueryBuilder("source")
        if unit is not None:
            builder = builder.enforce(MaxRowsPerID(int(max_rows)))
        if compiled.where_spark is not None:
            builder = builder.filter(compiled.where_spark)
        if agg.kind in ("count", "count_distinct") and agg.column is not None:
            # SQL's COUNT(col) and COUNT(DISTINCT col) ignore nulls; tmlt's count_distinct counts null as a value
            builder = builder.filter(f"{spark_identifier(agg.column)} IS NOT NULL")
        target: Any = builder
        if compiled.group_by:
            target = builder.groupby(keyset if keyset is not None else list(compiled.group_by))
        name = agg.name
        if agg.kind == "count":
            q = target.count(name=name)
        elif agg.kind == "count_distinct":
            q = target.count_distinct([agg.column], name=name)
        elif agg.kind == "sum":
            q = target.sum((derived or {}).get(i, agg.column), agg.low, agg.high, name=name)
        elif agg.kind == "avg":
            q = target.average((derived or {}).get(i, agg.column), agg.low, agg.high, name=name)
        elif agg.kind == "min":
            q = target.min(agg.column, agg.low, agg.high, name=name)
        elif agg.kind == "max":
            q = target.max(agg.column, agg.low, agg.high, name=name)
        elif agg.kind == "median":
            q = target.median(agg.column, agg.low, agg.high, name=name)
        elif agg.kind == "quantile":
            q = target.quantile(agg.column, agg.quantile, agg.low, agg.high, name=name)
        elif agg.kind == "variance":
            q = target.variance((derived or {}).get(i, agg.column), agg.low, agg.high, name=name)
        elif agg.kind == "stddev":
            q = target.stdev((derived or {}).get(i, agg.column), agg.low, agg.high, name=name)
        else:  # pragma: no cover - AGGREGATES is the list
            raise AssertionError(agg.kind)
        queries.append(q)
    return queries


def _merge(compiled: CompiledSql, parts: list[pa.Table]) -> pa.Table:
    """One row per group key with every aggregate (each part has the same public keys)."""
    if len(parts) == 1:
        return parts[0]
    by = list(compiled.group_by)
    rows: dict[tuple[Any, ...], dict[str, Any]] = {}
    for agg, part in zip(compiled.aggregates, parts, strict=True):
        for rec in part.to_pylist():
            key = tuple(rec[c] for c in by)
            rows.setdefault(key, {c: rec[c] for c in by})[agg.name] = rec[agg.name]
    fields = [parts[0].schema.field(c) for c in by] + [p.schema.field(a.name)
                                                       for a, p in zip(compiled.aggregates, parts, strict=True)]
    schema = pa.schema(fields)
    return pa.Table.from_pylist(list(rows.values()), schema=schema)


def _post_process(compiled: CompiledSql, data: pa.Table) -> pa.Table:
    data = data.select(list(compiled.columns))
    if compiled.order_by:
        data = data.sort_by([(c, "descending" if desc else "ascending") for c, desc in compiled.order_by])
    if compiled.limit is not None:
        data = data.slice(0, compiled.limit)
    return data


def _lineage(source: Table, snapshot_id: int, compiled: CompiledSql, unit: str | None) -> LineageRecord:
    fields = {b: [FieldRef(0, b, subtype=AGGREGATION, masking=True)] for b in compiled.group_by}
    for agg in compiled.aggregates:
        col = agg.column or unit or (compiled.group_by[0] if compiled.group_by else None)
        if col:
            fields[agg.name] = [FieldRef(0, col, subtype=AGGREGATION, masking=True)]
    indirect = [FieldRef(0, b, type=INDIRECT, subtype="GROUP_BY") for b in compiled.group_by]
    if unit:
        indirect.append(FieldRef(0, unit, type=INDIRECT, subtype="GROUP_BY"))
    if compiled.where is not None:
        seen: list[str] = []

        def cols(p: Predicate) -> None:
            for a in p.args:
                if isinstance(a, Predicate):
                    cols(a)
                elif a[0] == "col" and a[1] not in seen:
                    seen.append(a[1])

        cols(compiled.where)
        indirect += [FieldRef(0, c, type=INDIRECT, subtype="FILTER") for c in seen]
    return LineageRecord(op="dp-release", engine="tumult", status=COMPLETE, sources=[SourceRef.of(source, snapshot_id)],
                         columns=fields, indirect=indirect, exempt="dp")


@storage_errors
def dp_sql(
    catalog: Catalog,
    sql: str,
    *,
    budget: Budget | float,
    principal: str | None = None,
    memoize: bool = True,
    privacy_unit: str | RowUnit | None = None,
    max_rows_per_unit: int | None = None,
    spark: Any | None = None,
    memo_log: Any | None = None,
) -> SqlRelease:
    """Answer one DP SQL query with differential privacy, charged to the ledger before it runs.

    ``sql`` is the subset of docs/dp.md ("DP SQL"); anything else raises
    :class:`~iceberg_privacy.DpSqlRefusedError` before anything is read or spent. ``budget`` is what the
    query spends (a bare number is the epsilon of a pure-DP budget, or the rho of a zCDP ledger).
    ``principal`` is who is charged (the query service passes the token's principal; default
    :func:`~iceberg_privacy.config.current_principal`). The privacy unit is the access policy's; only a
    table whose policy declares none takes ``privacy_unit=`` (a column or ``ROWS``). The same question on
    the same snapshot is answered from the memo for free (``memoize=False`` asks again and pays); its
    ``memoized`` ledger event is committed before returning, or handed to ``memo_log`` (called with
    :meth:`~iceberg_privacy.dp.ledger.Ledger.record`'s arguments after the event name; the query service
    passes its background writer).
    """
    check_catalog(catalog, "dp_sql")
    compiled = compile_sql(catalog, sql)
    if max_rows_per_unit is not None and (isinstance(max_rows_per_unit, bool)
                                          or not isinstance(max_rows_per_unit, numbers.Integral)
                                          or max_rows_per_unit < 1):
        # before: 0 silently became 1 on an open table, and a negative bound failed inside tmlt
        raise InvalidArgumentError(
            f"max_rows_per_unit must be an integer >= 1, got {max_rows_per_unit!r}; it bounds how many rows one "
            "privacy unit may contribute: pass a positive integer such as 1 or 10. Nothing was spent.")
    principal = principal or current_principal()
    source = catalog.load_table(tuple(compiled.table.split(".")))
    ledger = Ledger(catalog, tuple(source.name()[:-1]))
    table_uuid = str(source.metadata.table_uuid)
    state = ledger.state_for(tuple(source.name()), table_uuid)
    caps = [state.scope(s).cap for s in ledger.applicable_scopes(tuple(source.name()), state, table_uuid)]
    amount = coerce_budget(budget, next((c for c in caps if c is not None), None), "budget")

    unit_decl = compiled.privacy_unit
    if unit_decl is None:
        if compiled.policy.dp_only:
            raise ConfigurationError(
                f"{compiled.table} is dp-only but its access policy declares no privacy unit; the data owner must "
                "set one (set_access_policy(..., privacy_unit=...)). Nothing was spent.")
        if privacy_unit is None:
            raise PrivacyUnitRequiredError(
                f"{compiled.table} has no privacy unit in its access policy: pass privacy_unit='<column>' (the "
                "column identifying a person) or privacy_unit=ROWS (CLI: `dp sql --privacy-unit COLUMN` or "
                "`--rows`), or declare it once for every query with `dp policy set --privacy-unit COLUMN`. "
                "Nothing was spent.")
        unit_decl = privacy_unit
        max_rows = int(max_rows_per_unit or 1)
    else:
        max_rows = compiled.max_rows_per_unit if max_rows_per_unit is None else int(max_rows_per_unit)
        if privacy_unit is not None and privacy_unit != unit_decl:
            raise ConfigurationError(
                f"the access policy of {compiled.table} fixes its privacy unit; drop privacy_unit= (or pass the "
                "policy's). Nothing was spent.")
    unit = None if unit_decl is ROWS else str(unit_decl)
    if unit is not None:
        schema = {f.name: f.field_type for f in source.schema().fields}
        if unit not in schema or not isinstance(schema[unit], ID_TYPES):
            raise ConfigurationError(f"privacy-unit column {unit!r} is missing from {compiled.table} or is not a "
                                     "string/integer id. Nothing was spent.")
        if unit in compiled.group_by:
            raise refuse(f"GROUP BY the privacy-unit column {unit!r} would release per-person values")
        check_addressable(unit)

    snap = source_snapshot(source, None, compiled.table)

    discover = bool(compiled.group_by) and not compiled.public_keys
    if discover:
        if not (amount.kind == "approx" and amount.components()[1] > 0):
            missing = [c for c in compiled.group_by if c not in compiled.policy.public_keys]
            raise refuse(
                f"no public keys for GROUP BY {', '.join(missing)}: declare them in the access policy (public_keys) "
                "or spend an ApproxDP(epsilon, delta) budget to discover keys privately (CLI: `dp policy set "
                "--public-keys COLUMN='[\"a\",\"b\"]'`, or `dp sql ... --epsilon E --delta D`)")
        if len(compiled.aggregates) != 1:
            raise refuse("private key discovery (GROUP BY without public keys) takes one aggregate per query; "
                          "declare public keys to ask several")
        keys_desc: dict[str, Any] = {"kind": "discovered"}
    elif compiled.group_by:
        per_column = {c: compiled.public_keys[c] for c in compiled.group_by}
        keys_desc = {"kind": "policy", "columns": list(compiled.group_by),
                     "fingerprint": keyset_fingerprint(list(compiled.group_by),
                                                       [tuple(v) for v in per_column.values()])}
    else:
        keys_desc = {"kind": "none"}

    needed = [*compiled.group_by, *([unit] if unit else []),
              *(a.column for a in compiled.aggregates if a.column), *_where_columns(compiled)]
    derived = _clamped_columns(compiled, source)
    query = SqlQuery(compiled, str(source.metadata.table_uuid), amount, unit, max_rows, keys_desc,
                     renamed_fields(source, snap, needed),
                     tuple(a.name for i, a in enumerate(compiled.aggregates)
                           if i in derived and a.kind in ("sum", "avg")))
    qhash = query.hash()
    from iceberg_privacy.dp.release import release_table_name

    out_id = (*source.name()[:-1], release_table_name(source.name()[-1], "dpsql", qhash))
    shares = split_budget(amount, len(compiled.aggregates))

    def prepare(spark_session: Any, df: Any) -> Any:
        keyset = None
        if compiled.group_by and not discover:
            from iceberg_privacy.dp.keys import Keys, tmlt_keyset

            keyset = tmlt_keyset(spark_session, df, list(compiled.group_by),
                                 Keys(keys_desc, per_column={c: compiled.public_keys[c] for c in compiled.group_by}))
        return _tmlt_queries(compiled, keyset, unit, max_rows, derived)

    def noise(session: Any, queries: list[Any]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for q, share in zip(queries, shares, strict=True):
            out += compat.noise_info(session, q, share.to_tmlt())
        return out

    def evaluate(session: Any, queries: list[Any]) -> pa.Table:
        parts = []
        for i, (q, share) in enumerate(zip(queries, shares, strict=True)):
            # The session holds exactly `amount`: the last aggregate spends what is left of it.
            spend = session.remaining_privacy_budget if i == len(queries) - 1 and i > 0 else share.to_tmlt()
            parts.append(session.evaluate(q, spend).toArrow())
        return _merge(compiled, parts)

    from iceberg_privacy.dp.release import ReleasePlan, run_release

    release = run_release(ReleasePlan(
        catalog=catalog, source=source, snapshot_id=snap.snapshot_id, query=query, amount=amount,
        principal=principal, unit=unit, max_rows_per_unit=max_rows,
        needed=needed,
        out_id=out_id, columns=[*compiled.group_by, *(a.name for a in compiled.aggregates)],
        sort_by=list(compiled.group_by), keys=keys_desc, threshold=None, discover=discover,
        lineage=_lineage(source, snap.snapshot_id, compiled, unit), prepare=prepare, noise=noise,
        evaluate=evaluate, frame=_with_clamped(compiled, derived) if derived else None, summary={DP_SQL_SUMMARY: compiled.release_sql, DP_SQL_HASH_SUMMARY: compiled.sql_hash},
        session_budget_is_amount=True,
    ), memoize=memoize, spark=spark, memo_log=memo_log)
    from iceberg_privacy.dp.budget import zero_like

    return SqlRelease(
        rows=_post_process(compiled, release.data),
        release_id=release.release_id,
        provenance=release.provenance,
        charged=zero_like(amount) if release.memoized else amount,
        memoized=release.memoized,
        sql=compiled.sql,
        table=compiled.table,
        output=release.output,
        sql_hash=compiled.sql_hash,
    )


def _where_columns(compiled: CompiledSql) -> list[str]:
    out: list[str] = []

    def walk(p: Predicate) -> None:
        for a in p.args:
            if isinstance(a, Predicate):
                walk(a)
            elif a[0] == "col":
                out.append(a[1])

    if compiled.where is not None:
        walk(compiled.where)
    return out


__all__ = ["Aggregate", "CompiledSql", "SqlRelease", "compile_sql", "dp_sql", "split_budget", "to_spark"]

