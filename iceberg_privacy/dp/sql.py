"""DP SQL: a small SQL subset, parsed with sqlglot, validated, and compiled to Tumult Analytics queries.

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

The release itself is :func:`~iceberg_privacy.dp.release.run_release`: the same memo, ledger
reservation (policy and budget checked in one compare-and-swap), provenance and refund rules as
``dp_histogram``; the normalized SQL and its hash are stored in the release's provenance.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import (
    BadRequestError,
    NoSuchIdentifierError,
    NoSuchNamespaceError,
    NoSuchTableError,
)
from pyiceberg.table import Table
from pyiceberg.types import DateType, StringType, TimestampType, TimestamptzType

from iceberg_privacy._internal import compat
from iceberg_privacy.config import current_principal
from iceberg_privacy.dp.arguments import (
    ID_TYPES,
    KEY_TYPES,
    NUMERIC_TYPES,
    ROWS,
    RowUnit,
)
from iceberg_privacy.dp.budget import Budget
from iceberg_privacy.dp.ledger import Ledger
from iceberg_privacy.dp.policy import AccessPolicy, access_policy, coerce_budget
from iceberg_privacy.dp.provenance import ReleaseProvenance
from iceberg_privacy.dp.query import QUERY_FORMAT_VERSION, canonical_dumps, keyset_fingerprint
from iceberg_privacy.errors import (
    ConfigurationError,
    DpSqlRefusedError,
    PrivacyUnitRequiredError,
)
from iceberg_privacy.lineage.record import AGGREGATION, COMPLETE, INDIRECT, FieldRef, LineageRecord, SourceRef
from iceberg_privacy.properties import DP_SQL_HASH_SUMMARY, DP_SQL_SUMMARY

MAX_SQL_LENGTH = 20_000
"""Longer text is refused before it is tokenized."""
MAX_OUTPUT_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")

# aggregate kind -> (needs a numeric column, needs bounds, tmlt method)
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


_quiet = threading.local()


class _QuietParse(logging.Filter):
    """Drops sqlglot's log records while this thread parses DP SQL: they quote the query text."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(_quiet, "on", False)


logging.getLogger("sqlglot").addFilter(_QuietParse())


@contextlib.contextmanager
def _quiet_sqlglot() -> Iterator[None]:
    _quiet.on = True
    try:
        yield
    finally:
        _quiet.on = False


def _refuse(reason: str) -> DpSqlRefusedError:
    return DpSqlRefusedError(f"DP SQL refused: {reason}. Nothing was read or spent.")


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
        if self.quantile is not None:
            out["quantile"] = repr(float(self.quantile))
        if self.low is not None and self.high is not None:
            out.update(low=repr(float(self.low)), high=repr(float(self.high)), bounds_from=self.bounds_from)
        return out


@dataclass(frozen=True)
class Predicate:
    """A validated WHERE node: ``op`` and its children (other predicates, ``("col", name)`` or ``("lit", v)``)."""

    op: str
    args: tuple[Any, ...]


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


# -- parsing: text -> one validated SELECT tree ----------------------------------------------------------
def _parse(sql: Any) -> Any:
    import sqlglot
    from sqlglot import exp
    from sqlglot.errors import SqlglotError
    from sqlglot.tokens import Tokenizer

    if not isinstance(sql, str):
        raise _refuse(f"the query must be SQL text, got {type(sql).__name__}")
    if len(sql) > MAX_SQL_LENGTH:
        raise _refuse(f"the query is longer than {MAX_SQL_LENGTH} characters")
    if "\x00" in sql:
        raise _refuse("the query contains a NUL character")
    try:
        tokens = Tokenizer().tokenize(sql)
    except (SqlglotError, ValueError, IndexError, RecursionError):
        raise _refuse("the query cannot be tokenized as SQL") from None
    if any(t.comments for t in tokens):
        raise _refuse("comments are not accepted (they can hide statements); remove them")
    if not tokens:
        raise _refuse("the query is empty")
    try:
        with _quiet_sqlglot():
            statements = [s for s in sqlglot.parse(sql) if s is not None]
    except (SqlglotError, ValueError, IndexError, RecursionError, TypeError, AttributeError, KeyError):
        raise _refuse("the query is not valid SQL (or not in the accepted subset)") from None
    if len(statements) != 1:
        raise _refuse(f"exactly one statement is accepted, got {len(statements)}")
    tree = statements[0]
    if not isinstance(tree, exp.Select):
        kind = type(tree).__name__.upper()
        if isinstance(tree, (exp.Union, exp.Intersect, exp.Except)):
            raise _refuse(f"set operations ({kind}) are not accepted; ask one SELECT")
        raise _refuse(f"only a single SELECT is accepted, not {kind} (no DDL, DML or commands)")
    for node in tree.walk():
        if node is not tree and isinstance(node, (exp.Select, exp.Subquery, exp.Union, exp.Intersect, exp.Except)):
            raise _refuse("subqueries are not accepted; ask one SELECT over one table")
        if isinstance(node, exp.Window):
            raise _refuse("window functions are not accepted: they release per-row values")
        if isinstance(node, exp.Placeholder) or isinstance(node, exp.Parameter):
            raise _refuse("parameters/placeholders are not accepted; write the values")
    return tree


# Clauses of a SELECT that DP SQL understands; any other set argument is refused by name.
_ALLOWED_ARGS = {"expressions", "from", "from_", "where", "group", "order", "limit"}
_CLAUSE_NAMES = {
    "joins": "joins (one table per query: Tumult cannot bound a person's contribution across a private join "
             "here)",
    "having": "HAVING (filter the released rows yourself: it is post-processing)",
    "distinct": "SELECT DISTINCT (it would release rows; use GROUP BY with an aggregate)",
    "with": "WITH / common table expressions (subqueries)",
    "with_": "WITH / common table expressions (subqueries)",
    "offset": "OFFSET",
    "qualify": "QUALIFY (window functions)",
    "windows": "WINDOW clauses",
    "laterals": "LATERAL views",
    "pivots": "PIVOT",
    "into": "SELECT INTO (it writes rows)",
    "sample": "TABLESAMPLE",
    "kind": "SELECT AS STRUCT/VALUE",
    "locks": "locking clauses",
    "connect": "CONNECT BY",
    "prewhere": "PREWHERE",
    "settings": "SETTINGS",
    "format": "FORMAT",
    "cluster": "CLUSTER BY",
    "distribute": "DISTRIBUTE BY",
    "sort": "SORT BY",
    "match": "MATCH_RECOGNIZE",
    "options": "OPTION",
    "operation_modifiers": "query modifiers",
    "hint": "query hints",
}


def _check_clauses(tree: Any) -> None:
    for key, value in tree.args.items():
        if key in _ALLOWED_ARGS or value is None or value is False or value == []:
            continue
        name = _CLAUSE_NAMES.get(key, key.upper().replace("_", " "))
        raise _refuse(f"{name} is not accepted")


def _only(node: Any, allowed: set[str], what: str) -> None:
    """Refuse ``node`` if it sets an argument outside ``allowed`` (a modifier DP SQL does not understand)."""
    for key, value in node.args.items():
        if key not in allowed and value not in (None, False, [], ""):
            raise _refuse(f"{what} with {key.upper().replace('_', ' ')} is not accepted")


def _identifier(node: Any) -> str:
    from sqlglot import exp

    if isinstance(node, exp.Identifier):
        return str(node.this)
    return str(node.name)


# -- the table -------------------------------------------------------------------------------------------
def _source(catalog: Catalog, tree: Any) -> tuple[Table, str | None]:
    from sqlglot import exp

    frm = tree.args.get("from") or tree.args.get("from_")
    if frm is None:
        raise _refuse("the query has no FROM table")
    node = frm.this
    if not isinstance(node, exp.Table) or not isinstance(node.this, exp.Identifier):
        raise _refuse("FROM must name one table (no subquery, function or VALUES)")
    if node.args.get("joins"):
        raise _refuse(_CLAUSE_NAMES["joins"] + " are not accepted")
    _only(node, {"this", "db", "catalog", "alias"}, "FROM")
    if node.args.get("alias") is not None:
        _only(node.args["alias"], {"this"}, "a table alias")
    parts = [_identifier(p) for p in (node.args.get("catalog"), node.args.get("db"), node.this) if p is not None]
    if len(parts) < 2:
        raise _refuse("name the table with its namespace (FROM namespace.table)")
    alias = node.alias or None
    try:
        return catalog.load_table(tuple(parts)), alias
    except (NoSuchTableError, NoSuchNamespaceError, NoSuchIdentifierError):
        raise _refuse(f"unknown table {'.'.join(parts)}") from None
    except (ValueError, BadRequestError):
        raise _refuse("the table name is not a valid identifier") from None


def _column(node: Any, table: Table, alias: str | None) -> str:
    """A column reference of the FROM table; refuses unknown columns and other tables' qualifiers."""
    from sqlglot import exp

    if not isinstance(node, exp.Column) or not isinstance(node.this, exp.Identifier):
        raise _refuse("expected a column here")
    _only(node, {"this", "table", "db", "catalog"}, "a column")
    qualifier = node.args.get("table")
    if qualifier is not None:
        q = _identifier(qualifier)
        if q not in {alias, table.name()[-1]} or node.args.get("db") is not None or node.args.get("catalog"):
            raise _refuse("a column names a table other than the FROM table")
    name = str(node.this.this)
    names = [f.name for f in table.schema().fields]
    if name not in names:
        raise _refuse(f"unknown column {name!r} (columns: {', '.join(names)})")
    return name


# -- literals and the WHERE clause -------------------------------------------------------------------------
def _literal(node: Any) -> Any:
    """A literal of the query as a Python value (number, string, bool); anything else is refused."""
    from sqlglot import exp

    if isinstance(node, exp.Paren):
        return _literal(node.this)
    if isinstance(node, exp.Neg):
        inner = _literal(node.this)
        if isinstance(inner, bool) or not isinstance(inner, (int, float)):
            raise _refuse("a minus sign applies to numbers only")
        return -inner
    if isinstance(node, exp.Boolean):
        return bool(node.this)
    if isinstance(node, exp.Literal):
        text = str(node.this)
        if node.is_string:
            return text
        try:
            value: int | float = int(text) if re.fullmatch(r"[0-9]+", text) else float(text)
        except ValueError:
            raise _refuse("a numeric literal is not a number") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise _refuse("numbers must be finite")
        if isinstance(value, int) and abs(value) >= 2**63:
            raise _refuse("an integer literal is out of the 64-bit range")
        return value
    if isinstance(node, exp.Null):
        raise _refuse("NULL is accepted only in IS NULL / IS NOT NULL")
    raise _refuse(f"expected a literal value, not {type(node).__name__.upper()}")


_COMPARISONS = {"EQ": "=", "NEQ": "<>", "GT": ">", "GTE": ">=", "LT": "<", "LTE": "<="}


def _operand(node: Any, table: Table, alias: str | None) -> tuple[str, Any]:
    from sqlglot import exp

    if isinstance(node, exp.Column):
        return ("col", _column(node, table, alias))
    return ("lit", _literal(node))


def _family(table: Table, column: str) -> str:
    """The comparison family of a column; a WHERE that would make Spark cast a column's values is refused,
    because a failed cast quotes the offending *data* value in its error."""
    from pyiceberg.types import BooleanType, DecimalType

    ftype = table.schema().find_field(column).field_type
    if isinstance(ftype, StringType):
        return "string"
    if isinstance(ftype, (*NUMERIC_TYPES, DecimalType)):
        return "number"
    if isinstance(ftype, BooleanType):
        return "bool"
    if isinstance(ftype, (DateType, TimestampType, TimestamptzType)):
        return "temporal"
    raise _refuse(f"column {column!r} has type {ftype}; WHERE compares strings, numbers, booleans and dates")


def _literal_family(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return "string"


def _typed(pred: Predicate, table: Table) -> Predicate:
    """Check that every comparison of ``pred`` compares like with like (no implicit cast of a column)."""
    operands = [a for a in pred.args if not isinstance(a, Predicate)]
    columns = [a[1] for a in operands if a[0] == "col"]
    if not columns:
        return pred
    families = {_family(table, c) for c in columns}
    if len(families) > 1:
        raise _refuse(f"{pred.op} compares columns of different types ({', '.join(columns)})")
    family = families.pop()
    if pred.op == "COLUMN" and family != "bool":
        raise _refuse(f"column {columns[0]!r} is not boolean; compare it with a value")
    for kind, value in operands:
        if kind != "lit":
            continue
        lit = _literal_family(value)
        if not (lit == family or (family == "temporal" and lit == "string")):
            raise _refuse(f"a {lit} value is compared with column {columns[0]!r} of {family} type; "
                          "compare like with like (dates and timestamps with 'YYYY-MM-DD...' strings)")
    return pred


def _predicate(node: Any, table: Table, alias: str | None, depth: int = 0) -> Predicate:
    return _typed(_untyped_predicate(node, table, alias, depth), table)


def _untyped_predicate(node: Any, table: Table, alias: str | None, depth: int = 0) -> Predicate:
    from sqlglot import exp

    if depth > 64:
        raise _refuse("the WHERE clause is nested too deeply")
    name = type(node).__name__.upper()
    if isinstance(node, exp.Paren):
        return _predicate(node.this, table, alias, depth + 1)
    if isinstance(node, (exp.And, exp.Or)):
        return Predicate(name, (_predicate(node.this, table, alias, depth + 1),
                                _predicate(node.expression, table, alias, depth + 1)))
    if isinstance(node, exp.Not):
        return Predicate("NOT", (_predicate(node.this, table, alias, depth + 1),))
    if name in _COMPARISONS:
        left, right = _operand(node.this, table, alias), _operand(node.expression, table, alias)
        if left[0] == "lit" and right[0] == "lit":
            raise _refuse("a comparison must involve a column")
        return Predicate(name, (left, right))
    if isinstance(node, exp.Between):
        return Predicate("BETWEEN", (("col", _column(node.this, table, alias)),
                                     _operand(node.args["low"], table, alias),
                                     _operand(node.args["high"], table, alias)))
    if isinstance(node, exp.In):
        if node.args.get("query") is not None or node.args.get("unnest") is not None or node.args.get("field"):
            raise _refuse("IN takes a list of values, not a subquery")
        values = node.expressions
        if not values:
            raise _refuse("IN needs at least one value")
        if len(values) > 10_000:
            raise _refuse("IN lists are limited to 10000 values")
        return Predicate("IN", (("col", _column(node.this, table, alias)),
                                *(("lit", _literal(v)) for v in values)))
    if isinstance(node, exp.Is):
        column = ("col", _column(node.this, table, alias))
        if isinstance(node.expression, exp.Null):
            return Predicate("ISNULL", (column,))
        raise _refuse("IS accepts NULL only (IS NULL / IS NOT NULL)")
    if isinstance(node, exp.Column):
        return Predicate("COLUMN", (("col", _column(node, table, alias)),))  # a boolean column
    if isinstance(node, exp.Boolean):
        return Predicate("CONST", (("lit", bool(node.this)),))
    if isinstance(node, (exp.Like, exp.ILike, exp.RegexpLike, exp.Glob, exp.SimilarTo)):
        raise _refuse(f"{name} is not accepted in WHERE; use =, <>, <, <=, >, >=, IN, BETWEEN, IS NULL")
    raise _refuse(f"{name} is not accepted in WHERE; use comparisons of columns with values, AND, OR, NOT, IN, "
                  "BETWEEN and IS NULL")


def _spark_identifier(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _spark_literal(value: Any) -> str:
    """A Spark SQL literal generated from a parsed value: no character of the input is copied verbatim."""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return f"CAST({int(value)} AS BIGINT)"
    if isinstance(value, float):
        return f"CAST({float(value)!r} AS DOUBLE)"
    if isinstance(value, str):
        return f"CAST(X'{value.encode('utf-8').hex().upper()}' AS STRING)"
    raise _refuse("unsupported literal type")


def _spark_operand(operand: tuple[str, Any]) -> str:
    kind, value = operand
    return _spark_identifier(value) if kind == "col" else _spark_literal(value)


def to_spark(pred: Predicate) -> str:
    """Spark SQL for a validated predicate: only backtick-quoted schema columns and generated literals."""
    op, args = pred.op, pred.args
    if op in ("AND", "OR"):
        return f"({to_spark(args[0])} {op} {to_spark(args[1])})"
    if op == "NOT":
        return f"(NOT {to_spark(args[0])})"
    if op in _COMPARISONS:
        return f"({_spark_operand(args[0])} {_COMPARISONS[op]} {_spark_operand(args[1])})"
    if op == "BETWEEN":
        return f"({_spark_operand(args[0])} BETWEEN {_spark_operand(args[1])} AND {_spark_operand(args[2])})"
    if op == "IN":
        return f"({_spark_operand(args[0])} IN ({', '.join(_spark_operand(a) for a in args[1:])}))"
    if op == "ISNULL":
        return f"({_spark_operand(args[0])} IS NULL)"
    if op == "COLUMN":
        return f"({_spark_operand(args[0])} = TRUE)"
    if op == "CONST":
        return _spark_literal(args[0][1])
    raise AssertionError(op)


def _predicate_json(pred: Predicate) -> Any:
    def arg(a: Any) -> Any:
        if isinstance(a, Predicate):
            return _predicate_json(a)
        kind, value = a
        if kind == "lit" and isinstance(value, float):
            return [kind, "float", repr(value)]
        return [kind, type(value).__name__, value]

    return [pred.op, [arg(a) for a in pred.args]]


# -- SELECT list, GROUP BY, ORDER BY, LIMIT ------------------------------------------------------------------
def _bounds_arg(node: Any, table: Table, alias: str | None, what: str) -> tuple[str, float | None, float | None]:
    """The argument of a numeric aggregate: ``column`` or ``CLAMP(column, low, high)``."""
    from sqlglot import exp

    if isinstance(node, exp.Anonymous) and str(node.this).upper() == "CLAMP":
        if len(node.expressions) != 3:
            raise _refuse(f"CLAMP in {what} takes (column, low, high)")
        column = _column(node.expressions[0], table, alias)
        low, high = _literal(node.expressions[1]), _literal(node.expressions[2])
        for v in (low, high):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise _refuse(f"CLAMP bounds of {what} must be numbers")
        if not float(low) < float(high):
            raise _refuse(f"CLAMP bounds of {what} need low < high")
        return column, float(low), float(high)
    if isinstance(node, exp.Column):
        return _column(node, table, alias), None, None
    raise _refuse(f"the argument of {what} must be a column or CLAMP(column, low, high), not an expression")


def _aggregate(node: Any, table: Table, alias: str | None) -> tuple[str, str | None, float | None,
                                                                    float | None, float | None]:
    """(kind, column, quantile, low, high) of an aggregate call; refuses anything else."""
    from sqlglot import exp

    if isinstance(node, exp.Count):
        arg = node.this
        if isinstance(arg, exp.Star):
            return "count", None, None, None, None
        if isinstance(arg, exp.Distinct):
            if len(arg.expressions) != 1:
                raise _refuse("COUNT(DISTINCT ...) takes one column")
            return "count_distinct", _column(arg.expressions[0], table, alias), None, None, None
        if isinstance(arg, exp.Column):
            return "count", _column(arg, table, alias), None, None, None
        raise _refuse("COUNT takes *, a column or DISTINCT column")
    simple = {exp.Sum: "sum", exp.Avg: "avg", exp.Min: "min", exp.Max: "max", exp.Median: "median",
              exp.Variance: "variance", exp.VariancePop: "variance", exp.Stddev: "stddev",
              exp.StddevPop: "stddev", exp.StddevSamp: "stddev"}
    for cls, kind in simple.items():
        if type(node) is cls:
            if node.args.get("expressions"):
                raise _refuse(f"{kind.upper()} takes one argument")
            if isinstance(node.this, exp.Distinct):
                raise _refuse(f"{kind.upper()}(DISTINCT ...) is not accepted")
            column, low, high = _bounds_arg(node.this, table, alias, kind.upper())
            return kind, column, None, low, high
    if isinstance(node, (exp.Quantile, exp.ApproxQuantile)):
        q = node.args.get("quantile")
        column, low, high = _bounds_arg(node.this, table, alias, "QUANTILE")
        return "quantile", column, _quantile(q), low, high
    if isinstance(node, exp.WithinGroup) and isinstance(node.this, (exp.PercentileCont, exp.PercentileDisc)):
        order = node.expression
        if not isinstance(order, exp.Order) or len(order.expressions) != 1:
            raise _refuse("PERCENTILE_CONT(q) WITHIN GROUP (ORDER BY column) orders by one column")
        ordered = order.expressions[0]
        if ordered.args.get("desc"):
            raise _refuse("PERCENTILE_CONT ... ORDER BY column DESC is not accepted; use ascending order")
        column, low, high = _bounds_arg(ordered.this, table, alias, "PERCENTILE_CONT")
        return "quantile", column, _quantile(node.this.this), low, high
    if isinstance(node, exp.AggFunc):
        raise _refuse(f"aggregate {type(node).__name__.upper()} is not accepted (COUNT, SUM, AVG, MIN, MAX, MEDIAN, "
                      "QUANTILE, PERCENTILE_CONT, VARIANCE, STDDEV are)")
    if isinstance(node, exp.Star):
        raise _refuse("SELECT * would release rows; select aggregates (COUNT, SUM, ...) and GROUP BY columns")
    if isinstance(node, (exp.Literal, exp.Boolean, exp.Null)):
        raise _refuse("constants in the SELECT list are not accepted; select aggregates and GROUP BY columns")
    raise _refuse(f"{type(node).__name__.upper()} in the SELECT list is not accepted: select aggregates of columns "
                  "and GROUP BY columns")


def _quantile(node: Any) -> float:
    value = _literal(node) if node is not None else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= float(value) <= 1:
        raise _refuse("a quantile must be a number between 0 and 1")
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
        raise _refuse("output names (aliases) must be letters, digits and underscores, starting with a letter")
    return name


def compile_tree(catalog: Catalog, tree: Any) -> CompiledSql:
    """Validate a parsed SELECT against the table's schema and access policy (no budget needed)."""
    from sqlglot import exp

    _check_clauses(tree)
    table, alias = _source(catalog, tree)
    source = ".".join(table.name())
    policy = access_policy(catalog, table.name())
    schema = {f.name: f.field_type for f in table.schema().fields}

    # GROUP BY
    group_by: list[str] = []
    group = tree.args.get("group")
    if group is not None:
        _only(group, {"expressions"}, "GROUP BY")
        for node in group.expressions:
            if not isinstance(node, exp.Column):
                raise _refuse("GROUP BY takes column names (no positions or expressions)")
            gname = _column(node, table, alias)
            if gname in group_by:
                raise _refuse(f"GROUP BY names column {gname!r} twice")
            if not isinstance(schema[gname], KEY_TYPES):
                raise _refuse(f"GROUP BY column {gname!r} has type {schema[gname]}; group by strings, integers or "
                              "dates")
            group_by.append(gname)

    unit, max_rows = _unit(policy)
    if isinstance(unit, str) and unit in group_by:
        raise _refuse(f"GROUP BY the privacy-unit column {unit!r} would release per-person values")

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
                raise _refuse(f"column {column!r} is neither aggregated nor in GROUP BY: it would release rows")
            if name is not None and name != column:
                raise _refuse(f"a GROUP BY column keeps its name: select {column!r} without an alias")
            outputs.append(column)
            continue
        if isinstance(node, exp.Column):  # t.*
            raise _refuse("SELECT * would release rows; select aggregates (COUNT, SUM, ...) and GROUP BY columns")
        kind, column, quantile, low, high = _aggregate(node, table, alias)
        numeric, needs_bounds = AGGREGATES[kind]
        label = f"{kind.upper()}({column or '*'})"
        if column is not None and numeric and not isinstance(schema[column], NUMERIC_TYPES):
            raise _refuse(f"{label} needs a numeric column; {column!r} has type {schema[column]}")
        if column is not None and kind == "count_distinct" and not isinstance(schema[column], (*KEY_TYPES,)):
            raise _refuse(f"{label} needs a string, integer or date column")
        bounds_from = None
        if needs_bounds:
            if low is not None:
                bounds_from = "query"
            elif column in policy.column_bounds:
                low, high = policy.column_bounds[column]
                bounds_from = "policy"
            else:
                raise _refuse(
                    f"no bounds for {label}: declare public bounds in the access policy (column_bounds / "
                    f"`dp policy set --bounds {column}=LOW,HIGH`) or write {kind.upper()}(CLAMP({column}, low, high))")
        out = _output_name(name or _default_name(kind, column, quantile))
        aggregates.append(Aggregate(kind, column, out, quantile, low, high, bounds_from))
        outputs.append(out)
    if not aggregates:
        raise _refuse("select at least one aggregate (COUNT(*), SUM(...), ...): plain columns would release rows")
    if len(set(outputs)) != len(outputs):
        raise _refuse("two output columns have the same name; give them distinct aliases")
    for g in group_by:
        if g not in outputs:
            raise _refuse(f"GROUP BY column {g!r} must also be selected (the released rows are labelled by it)")

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
                raise _refuse("ORDER BY takes output column names")
            _only(ordered, {"this", "desc", "nulls_first"}, "ORDER BY")
            target = ordered.this
            if not isinstance(target, exp.Column) or target.args.get("table") is not None:
                raise _refuse("ORDER BY takes output column names (post-processing of the noisy rows)")
            oname = str(target.this.this) if isinstance(target.this, exp.Identifier) else ""
            if oname not in outputs:
                raise _refuse("ORDER BY must name an output column (an aggregate's alias or a GROUP BY column)")
            order_by.append((oname, bool(ordered.args.get("desc"))))
    limit = None
    lim = tree.args.get("limit")
    if lim is not None:
        _only(lim, {"expression"}, "LIMIT")
        value = _literal(lim.expression)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise _refuse("LIMIT takes a non-negative integer")
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


def _unit(policy: AccessPolicy) -> tuple[str | RowUnit | None, int]:
    return policy.privacy_unit, policy.max_rows_per_unit


def compile_sql(catalog: Catalog, sql: str) -> CompiledSql:
    """Parse and validate DP SQL against its table and access policy; nothing is read, run or spent.

    Raises :class:`~iceberg_privacy.DpSqlRefusedError` with the reason for anything outside the subset
    (docs/dp.md, "DP SQL").
    """
    tree = _parse(sql)
    try:
        return compile_tree(catalog, tree)
    except DpSqlRefusedError:
        raise
    except RecursionError:
        raise _refuse("the query is nested too deeply") from None


# -- running it ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SqlQuery:
    """The canonical description of a DP SQL release (its hash is the memo key, with the snapshot)."""

    compiled: CompiledSql
    source_uuid: str
    budget: Budget
    unit: str | None
    max_rows_per_unit: int
    keys: dict[str, Any]

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
            "where": _predicate_json(c.where) if c.where is not None else None,
            "budget": self.budget.to_json(),
            "privacy_unit": unit,
            "keys": self.keys,
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
        target = Fraction(float(c))
        share = float(target / parts)
        while Fraction(share) * parts > target:
            share = math.nextafter(share, 0.0)
        comps.append(Fraction(share))
    share_budget = type(amount)._from_components(tuple(comps))
    return [share_budget] * parts


def _tmlt_queries(compiled: CompiledSql, keyset: Any, unit: str | None, max_rows: int) -> list[Any]:
    from tmlt.analytics import MaxRowsPerID, QueryBuilder

    queries = []
    for agg in compiled.aggregates:
        builder = QueryBuilder("source")
        if unit is not None:
            builder = builder.enforce(MaxRowsPerID(int(max_rows)))
        if compiled.where_spark is not None:
            builder = builder.filter(compiled.where_spark)
        if agg.kind == "count" and agg.column is not None:
            builder = builder.filter(f"{_spark_identifier(agg.column)} IS NOT NULL")
        target: Any = builder
        if compiled.group_by:
            target = builder.groupby(keyset if keyset is not None else list(compiled.group_by))
        name = agg.name
        if agg.kind == "count":
            q = target.count(name=name)
        elif agg.kind == "count_distinct":
            q = target.count_distinct([agg.column], name=name)
        elif agg.kind == "sum":
            q = target.sum(agg.column, agg.low, agg.high, name=name)
        elif agg.kind == "avg":
            q = target.average(agg.column, agg.low, agg.high, name=name)
        elif agg.kind == "min":
            q = target.min(agg.column, agg.low, agg.high, name=name)
        elif agg.kind == "max":
            q = target.max(agg.column, agg.low, agg.high, name=name)
        elif agg.kind == "median":
            q = target.median(agg.column, agg.low, agg.high, name=name)
        elif agg.kind == "quantile":
            q = target.quantile(agg.column, agg.quantile, agg.low, agg.high, name=name)
        elif agg.kind == "variance":
            q = target.variance(agg.column, agg.low, agg.high, name=name)
        elif agg.kind == "stddev":
            q = target.stdev(agg.column, agg.low, agg.high, name=name)
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
) -> SqlRelease:
    """Answer one DP SQL query with differential privacy, charged to the ledger before it runs.

    ``sql`` is the subset of docs/dp.md ("DP SQL"); anything else raises
    :class:`~iceberg_privacy.DpSqlRefusedError` before anything is read or spent. ``budget`` is what the
    query spends (a bare number is the epsilon of a pure-DP budget, or the rho of a zCDP ledger).
    ``principal`` is who is charged (the query service passes the token's principal; default
    :func:`~iceberg_privacy.config.current_principal`). The privacy unit is the access policy's; only a
    table whose policy declares none takes ``privacy_unit=`` (a column or ``ROWS``). The same question on
    the same snapshot is answered from the memo for free (``memoize=False`` asks again and pays).
    """
    compiled = compile_sql(catalog, sql)
    principal = principal or current_principal()
    source = catalog.load_table(tuple(compiled.table.split(".")))
    ledger = Ledger(catalog, tuple(source.name()[:-1]))
    state = ledger.state()
    caps = [state.scope(s).cap for s in ledger.applicable_scopes(tuple(source.name()), state)]
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
                "column identifying a person) or privacy_unit=ROWS. Nothing was spent.")
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
            raise _refuse(f"GROUP BY the privacy-unit column {unit!r} would release per-person values")

    snap = source.current_snapshot()
    if snap is None:
        raise ConfigurationError(f"table {compiled.table} has no snapshot yet; write data first.")

    discover = bool(compiled.group_by) and not compiled.public_keys
    if discover:
        if not (amount.kind == "approx" and amount.components()[1] > 0):
            missing = [c for c in compiled.group_by if c not in compiled.policy.public_keys]
            raise _refuse(
                f"no public keys for GROUP BY {', '.join(missing)}: declare them in the access policy (public_keys) "
                "or spend an ApproxDP(epsilon, delta) budget to discover keys privately")
        if len(compiled.aggregates) != 1:
            raise _refuse("private key discovery (GROUP BY without public keys) takes one aggregate per query; "
                          "declare public keys to ask several")
        keys_desc: dict[str, Any] = {"kind": "discovered"}
    elif compiled.group_by:
        per_column = {c: compiled.public_keys[c] for c in compiled.group_by}
        keys_desc = {"kind": "policy", "columns": list(compiled.group_by),
                     "fingerprint": keyset_fingerprint(list(compiled.group_by),
                                                       [tuple(v) for v in per_column.values()])}
    else:
        keys_desc = {"kind": "none"}

    query = SqlQuery(compiled, str(source.metadata.table_uuid), amount, unit, max_rows, keys_desc)
    qhash = query.hash()
    out_id = (*source.name()[:-1], f"{source.name()[-1]}__dpsql_{qhash[:12]}")
    shares = split_budget(amount, len(compiled.aggregates))

    def prepare(spark_session: Any, df: Any) -> Any:
        keyset = None
        if compiled.group_by and not discover:
            from iceberg_privacy.dp.keys import Keys, tmlt_keyset

            keyset = tmlt_keyset(spark_session, df, list(compiled.group_by),
                                 Keys(keys_desc, per_column={c: compiled.public_keys[c] for c in compiled.group_by}))
        return _tmlt_queries(compiled, keyset, unit, max_rows)

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
        needed=[*compiled.group_by, *([unit] if unit else []),
                *(a.column for a in compiled.aggregates if a.column), *_where_columns(compiled)],
        out_id=out_id, columns=[*compiled.group_by, *(a.name for a in compiled.aggregates)],
        sort_by=list(compiled.group_by), keys=keys_desc, threshold=None, discover=discover,
        lineage=_lineage(source, snap.snapshot_id, compiled, unit), prepare=prepare, noise=noise,
        evaluate=evaluate, summary={DP_SQL_SUMMARY: compiled.release_sql, DP_SQL_HASH_SUMMARY: compiled.sql_hash},
        session_budget_is_amount=True,
    ), memoize=memoize, spark=spark)
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
