"""DP SQL, the language half: a small SQL subset, parsed with sqlglot, validated against the table and its
access policy, and compiled (``compile_sql``); running it is :mod:`iceberg_privacy.dp.sql`.

Why a subset and not "SQL with noise"? Every construct an analyst may write must have a differentially
private meaning that Tumult can account for. So the grammar is a whitelist, checked on sqlglot's syntax
tree before anything is read or spent: one ``SELECT`` over one table, aggregates (``COUNT``, ``SUM``,
``AVG``, ``MIN``/``MAX``, ``MEDIAN``, quantiles, ``VARIANCE``/``STDDEV``, ``COUNT(DISTINCT ...)``),
``GROUP BY`` columns, a ``WHERE`` of comparisons, and ``ORDER BY``/``LIMIT`` as post-processing of the
noisy answer. Everything else — ``SELECT *``, a column neither aggregated nor grouped, joins,
subqueries, set operations, window functions, ``HAVING``, several statements, DDL/DML, comments — is
refused with :class:`~iceberg_privacy.DpSqlRefusedError` naming the reason. Messages name columns and
constructs, never a value of the query or the data.

No user text is ever pasted into SQL that an engine runs. A ``WHERE`` clause becomes a Spark SQL string
for tmlt's ``QueryBuilder.filter`` (its only filter form), but that string is *generated* from the
validated tree: identifiers are columns of the table's schema, quoted with backticks; numbers are
re-rendered from their parsed value; strings become hex literals (``CAST(X'..' AS STRING)``), so no
quote or backslash of the input can reach the Spark parser.

Sensitivity comes from the policy, not the analyst: the privacy unit is the one the table's access
policy declares (:mod:`.policy`), and clamping bounds come from the policy's public column bounds or
from an explicit ``CLAMP(column, low, high)`` inside the aggregate. Group keys are the policy's public
key sets, or are discovered privately (approx DP, one aggregate, as :func:`~iceberg_privacy.dp_histogram`
does). Several aggregates share the budget equally, on one public key set.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from pyiceberg.catalog import Catalog
from pyiceberg.table import Table

from iceberg_privacy._internal.arguments import check_catalog
from iceberg_privacy.dp.arguments import (
    KEY_TYPES,
    MAX_BOUND,
    NUMERIC_TYPES,
    RowUnit,
)
from iceberg_privacy.dp.policy import AccessPolicy, access_policy
from iceberg_privacy.dp.sql_parse import (
    _check_clauses,
    _column,
    _identifier,
    _literal,
    _only,
    _parse,
    _source,
    refuse,
)
from iceberg_privacy.dp.sql_where import (
    Predicate,
    _predicate,
    to_spark,
)
from iceberg_privacy.errors import (
    DpSqlRefusedError,
)
from iceberg_privacy.storage import storage_errors

MAX_OUTPUT_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")

# aggregate kind -> (needs a numeric column, needs bounds)
AGGREGATES: dict[str, tuple[bool, bool]] = {
    "count": (False, False),
    "count_distinct": (False, False),
    "sum": (True, True),
    "avg": (True, True),
    "min": (True, True),
    "max": (True, True),
    "median": (True, True),
    "quantile": (True, True),
    "variance": (True, True),
    "stddev": (True, True),
}


# -- the compiled query ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Aggregate:
    """One aggregate of the SELECT list, with its resolved clamping bounds."""

    kind: str
    column: str | None
    name: str
    quantile: float | None = None
    low: float | None = None
    high: float | None = None
    bounds_from: str | None = None
    """``query`` (a CLAMP in the SQL) or ``policy`` (the access policy's public bounds)."""

    def describe(self) -> str:
        arg = "*" if self.column is None else self.column
        return f"{self.kind.upper()}({arg})"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "column": self.column, "name": self.name}
        if self.kind == "count_distinct":  # part of the memo key: releases made before nulls were excluded differ
            out["nulls"] = "excluded"
        if self.quantile is not None:
            out["quantile"] = repr(float(self.quantile))
        if self.low is not None and self.high is not None:
            out.update(low=repr(float(self.low)), high=repr(float(self.high)), bounds_from=self.bounds_from)
        return out


@dataclass
class CompiledSql:
    """A DP SQL query that passed every check that needs no budget: what :func:`dp_sql` will release."""

    table: str
    """The source table, ``namespace.table``."""
    group_by: tuple[str, ...]
    aggregates: tuple[Aggregate, ...]
    columns: tuple[str, ...]
    """Output columns in SELECT order."""
    where: Predicate | None
    where_spark: str | None
    """The WHERE clause as generated Spark SQL (tmlt's filter), or None."""
    order_by: tuple[tuple[str, bool], ...]
    """Post-processing: (output column, descending)."""
    limit: int | None
    sql: str
    """The normalized SQL of this call (sqlglot's rendering of the validated tree)."""
    release_sql: str
    """The normalized SQL of the release: without ORDER BY / LIMIT (post-processing of the returned rows)."""
    sql_hash: str
    """sha256 of ``release_sql``."""
    policy: AccessPolicy
    privacy_unit: str | RowUnit | None
    max_rows_per_unit: int
    public_keys: dict[str, list[Any]] = field(default_factory=dict)
    """Public keys of every GROUP BY column (empty when some column has none: keys are then discovered)."""

    def __str__(self) -> str:
        keys = ("no GROUP BY" if not self.group_by else "public keys" if self.public_keys
                else "keys discovered privately")
        return (f"DP SQL over {self.table}: {', '.join(a.describe() for a in self.aggregates)}"
                f"{' by ' + ', '.join(self.group_by) if self.group_by else ''} ({keys}); sql hash {self.sql_hash[:12]}")


# -- SELECT list, GROUP BY, ORDER BY, LIMIT ------------------------------------------------------------------
def _bounds_arg(node: Any, table: Table, alias: str | None, what: str) -> tuple[str, float | None, float | None]:
    """The argument of a numeric aggregate: ``column`` or ``CLAMP(column, low, high)``."""
    from sqlglot import exp

    if isinstance(node, exp.Anonymous) and str(node.this).upper() == "CLAMP":
        if len(node.expressions) != 3:
            raise refuse(f"CLAMP in {what} takes (column, low, high)")
        column = _column(node.expressions[0], table, alias)
        low, high = _literal(node.expressions[1]), _literal(node.expressions[2])
        for v in (low, high):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise refuse(f"CLAMP bounds of {what} must be numbers")
        if not float(low) < float(high):
            raise refuse(f"CLAMP bounds of {what} need low < high")
        return column, float(low), float(high)
    if isinstance(node, exp.Column):
        return _column(node, table, alias), None, None
    raise refuse(f"the argument of {what} must be a column or CLAMP(column, low, high), not an expression")


def _aggregate(node: Any, table: Table, alias: str | None) -> tuple[str, str | None, float | None,
                                                                    float | None, float | None]:
    """(kind, column, quantile, low, high) of an aggregate call; refuses anything else."""
    from sqlglot import exp

    if isinstance(node, exp.Count):
        if node.args.get("expressions"):  # COUNT(a, b): counting only a would be a wrong answer, not a refusal
            raise refuse("COUNT takes one argument (*, a column or DISTINCT column)")
        arg = node.this
        if isinstance(arg, exp.Star):
            return "count", None, None, None, None
        if isinstance(arg, exp.Distinct):
            if len(arg.expressions) != 1:
                raise refuse("COUNT(DISTINCT ...) takes one column")
            return "count_distinct", _column(arg.expressions[0], table, alias), None, None, None
        if isinstance(arg, exp.Column):
            return "count", _column(arg, table, alias), None, None, None
        raise refuse("COUNT takes *, a column or DISTINCT column")
    simple = {exp.Sum: "sum", exp.Avg: "avg", exp.Min: "min", exp.Max: "max", exp.Median: "median",
              exp.Variance: "variance", exp.VariancePop: "variance", exp.Stddev: "stddev",
              exp.StddevPop: "stddev", exp.StddevSamp: "stddev"}
    for cls, kind in simple.items():
        if type(node) is cls:
            if node.args.get("expressions"):
                raise refuse(f"{kind.upper()} takes one argument")
            if isinstance(node.this, exp.Distinct):
                raise refuse(f"{kind.upper()}(DISTINCT ...) is not accepted")
            column, low, high = _bounds_arg(node.this, table, alias, kind.upper())
            return kind, column, None, low, high
    if isinstance(node, (exp.Quantile, exp.ApproxQuantile)):
        _only(node, {"this", "quantile"}, "QUANTILE (it takes column, q)")  # an accuracy argument was dropped
        q = node.args.get("quantile")
        column, low, high = _bounds_arg(node.this, table, alias, "QUANTILE")
        return "quantile", column, _quantile(q), low, high
    if isinstance(node, exp.WithinGroup) and isinstance(node.this, (exp.PercentileCont, exp.PercentileDisc)):
        order = node.expression
        if not isinstance(order, exp.Order) or len(order.expressions) != 1:
            raise refuse("PERCENTILE_CONT(q) WITHIN GROUP (ORDER BY column) orders by one column")
        ordered = order.expressions[0]
        if ordered.args.get("desc"):
            raise refuse("PERCENTILE_CONT ... ORDER BY column DESC is not accepted; use ascending order")
        column, low, high = _bounds_arg(ordered.this, table, alias, "PERCENTILE_CONT")
        return "quantile", column, _quantile(node.this.this), low, high
    if isinstance(node, exp.AggFunc):
        raise refuse(f"aggregate {type(node).__name__.upper()} is not accepted (COUNT, SUM, AVG, MIN, MAX, MEDIAN, "
                      "QUANTILE, PERCENTILE_CONT, VARIANCE, STDDEV are)")
    if isinstance(node, exp.Star):
        raise refuse("SELECT * would release rows; select aggregates (COUNT, SUM, ...) and GROUP BY columns")
    if isinstance(node, (exp.Literal, exp.Boolean, exp.Null)):
        raise refuse("constants in the SELECT list are not accepted; select aggregates and GROUP BY columns")
    raise refuse(f"{type(node).__name__.upper()} in the SELECT list is not accepted: select aggregates of columns "
                  "and GROUP BY columns")


MAX_SQUARED_BOUND = 2.0**31
"""Largest |clamping bound| of VARIANCE and STDDEV: tmlt also sums squares, bounded by the square of the bound."""


def _check_bound_size(label: str, kind: str, low: float, high: float, bounds_from: str | None) -> None:
    limit = MAX_SQUARED_BOUND if kind in ("variance", "stddev") else MAX_BOUND
    if max(abs(low), abs(high)) > limit:
        where = ("the access policy's column_bounds (the data owner sets them: `dp policy set --bounds`)"
                 if bounds_from == "policy" else "CLAMP")
        raise refuse(f"the bounds of {label} from {where} exceed +-{limit:.4g}, more than Tumult can evaluate; "
                     "give bounds around the column's real range")


def _quantile(node: Any) -> float:
    value = _literal(node) if node is not None else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= float(value) <= 1:
        raise refuse("a quantile must be a number between 0 and 1")
    return float(value)


def _default_name(kind: str, column: str | None, quantile: float | None) -> str:
    if column is None:
        return kind
    base = f"{kind}_{column}"
    if kind == "quantile" and quantile is not None:
        base += "_" + f"{quantile:g}".replace(".", "_").replace("-", "_")
    return base


def _output_name(name: str) -> str:
    if not MAX_OUTPUT_NAME.match(name):
        raise refuse("output names (aliases) must be letters, digits and underscores, starting with a letter")
    return name


def compile_tree(catalog: Catalog, tree: Any) -> CompiledSql:
    """Validate a parsed SELECT against the table's schema and access policy (no budget needed)."""
    from sqlglot import exp

    _check_clauses(tree)
    table, alias = _source(catalog, tree)
    source = ".".join(table.name())
    policy = access_policy(catalog, table)  # the loaded table: its policy follows its uuid
    schema = {f.name: f.field_type for f in table.schema().fields}

    # GROUP BY
    group_by: list[str] = []
    group = tree.args.get("group")
    if group is not None:
        _only(group, {"expressions"}, "GROUP BY")
        for node in group.expressions:
            if not isinstance(node, exp.Column):
                raise refuse("GROUP BY takes column names (no positions or expressions)")
            gname = _column(node, table, alias)
            if gname in group_by:
                raise refuse(f"GROUP BY names column {gname!r} twice")
            if not isinstance(schema[gname], KEY_TYPES):
                raise refuse(f"GROUP BY column {gname!r} has type {schema[gname]}; group by strings, integers or "
                              "dates")
            group_by.append(gname)

    unit, max_rows = policy_unit(policy)
    if isinstance(unit, str) and unit in group_by:
        raise refuse(f"GROUP BY the privacy-unit column {unit!r} would release per-person values")

    # SELECT list
    outputs: list[str] = []
    aggregates: list[Aggregate] = []
    for item in tree.expressions:
        name: str | None = None
        node = item
        if isinstance(item, exp.Alias):
            node, name = item.this, _identifier(item.args["alias"])
        if isinstance(node, exp.Column) and not isinstance(node.this, exp.Star):
            column: str | None = _column(node, table, alias)
            if column not in group_by:
                raise refuse(f"column {column!r} is neither aggregated nor in GROUP BY: it would release rows")
            if name is not None and name != column:
                raise refuse(f"a GROUP BY column keeps its name: select {column!r} without an alias")
            outputs.append(column)
            continue
        if isinstance(node, exp.Column):  # t.*
            raise refuse("SELECT * would release rows; select aggregates (COUNT, SUM, ...) and GROUP BY columns")
        kind, column, quantile, low, high = _aggregate(node, table, alias)
        numeric, needs_bounds = AGGREGATES[kind]
        label = f"{kind.upper()}({column or '*'})"
        if column is not None and numeric and not isinstance(schema[column], NUMERIC_TYPES):
            raise refuse(f"{label} needs a numeric column; {column!r} has type {schema[column]}")
        if column is not None and kind == "count_distinct" and not isinstance(schema[column], (*KEY_TYPES,)):
            raise refuse(f"{label} needs a string, integer or date column")
        bounds_from = None
        if needs_bounds:
            if low is not None:
                bounds_from = "query"
            elif column in policy.column_bounds:
                low, high = policy.column_bounds[column]
                bounds_from = "policy"
            else:
                raise refuse(
                    f"no bounds for {label}: declare public bounds in the access policy (column_bounds / "
                    f"`dp policy set --bounds {column}=LOW,HIGH`) or write {kind.upper()}(CLAMP({column}, low, high))")
        if needs_bounds and low is not None and high is not None:
            _check_bound_size(label, kind, low, high, bounds_from)
        out = _output_name(name or _default_name(kind, column, quantile))
        aggregates.append(Aggregate(kind, column, out, quantile, low, high, bounds_from))
        outputs.append(out)
    if not aggregates:
        raise refuse("select at least one aggregate (COUNT(*), SUM(...), ...): plain columns would release rows")
    if len({o.lower() for o in outputs}) != len(outputs):  # Spark, which evaluates them, ignores case
        raise refuse("two output columns have the same name (names are compared without case); give them "
                     "distinct aliases")
    for g in group_by:
        if g not in outputs:
            raise refuse(f"GROUP BY column {g!r} must also be selected (the released rows are labelled by it)")

    # WHERE
    where = tree.args.get("where")
    pred = _predicate(where.this, table, alias) if where is not None else None
    where_spark = to_spark(pred) if pred is not None else None

    # ORDER BY / LIMIT: post-processing of the noisy answer
    order_by: list[tuple[str, bool]] = []
    order = tree.args.get("order")
    if order is not None:
        _only(order, {"expressions"}, "ORDER BY")
        for ordered in order.expressions:
            if not isinstance(ordered, exp.Ordered):
                raise refuse("ORDER BY takes output column names")
            _only(ordered, {"this", "desc", "nulls_first"}, "ORDER BY")
            target = ordered.this
            if not isinstance(target, exp.Column) or target.args.get("table") is not None:
                raise refuse("ORDER BY takes output column names (post-processing of the noisy rows)")
            oname = str(target.this.this) if isinstance(target.this, exp.Identifier) else ""
            if oname not in outputs:
                raise refuse("ORDER BY must name an output column (an aggregate's alias or a GROUP BY column)")
            order_by.append((oname, bool(ordered.args.get("desc"))))
    limit = None
    lim = tree.args.get("limit")
    if lim is not None:
        _only(lim, {"expression"}, "LIMIT")
        value = _literal(lim.expression)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise refuse("LIMIT takes a non-negative integer")
        limit = int(value)

    sql = tree.sql()
    release_tree = tree.copy()
    release_tree.set("order", None)
    release_tree.set("limit", None)
    release_sql = release_tree.sql()
    public = {c: policy.public_keys[c] for c in group_by} if all(c in policy.public_keys for c in group_by) else {}
    return CompiledSql(
        table=source, group_by=tuple(group_by), aggregates=tuple(aggregates), columns=tuple(outputs), where=pred,
        where_spark=where_spark, order_by=tuple(order_by), limit=limit, sql=sql, release_sql=release_sql,
        sql_hash=hashlib.sha256(release_sql.encode("utf-8")).hexdigest(), policy=policy, privacy_unit=unit,
        max_rows_per_unit=max_rows, public_keys=public,
    )


def policy_unit(policy: AccessPolicy) -> tuple[str | RowUnit | None, int]:
    return policy.privacy_unit, policy.max_rows_per_unit


@storage_errors
def compile_sql(catalog: Catalog, sql: str) -> CompiledSql:
    """Parse and validate DP SQL against its table and access policy; nothing is read, run or spent.

    Raises :class:`~iceberg_privacy.DpSqlRefusedError` with the reason for anything outside the subset
    (docs/dp.md, "DP SQL").
    """
    check_catalog(catalog, "compile_sql")
    tree = _parse(sql)
    try:
        return compile_tree(catalog, tree)
    except DpSqlRefusedError:
        raise
    except RecursionError:
        raise refuse("the query is nested too deeply") from None


# -- running it ----------------------------------------------------------------------------------------------
