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

import contextlib
import hashlib
import logging
import math
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import (
    BadRequestError,
    NoSuchIdentifierError,
    NoSuchNamespaceError,
    NoSuchTableError,
)
from pyiceberg.table import Table
from pyiceberg.types import DateType, StringType, TimestampType, TimestamptzType

from iceberg_privacy._internal.arguments import check_catalog
from iceberg_privacy.catalog import has_marker
from iceberg_privacy.dp.arguments import (
    KEY_TYPES,
    NUMERIC_TYPES,
    RowUnit,
)
from iceberg_privacy.dp.policy import AccessPolicy, access_policy
from iceberg_privacy.errors import (
    DpSqlRefusedError,
)
from iceberg_privacy.properties import LIBRARY_MARKERS

MAX_SQL_LENGTH = 20_000
"""Longer text is refused before it is tokenized."""
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


def refuse(reason: str) -> DpSqlRefusedError:
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
        if self.kind == "count_distinct":  # part of the memo key: releases made before nulls were excluded differ
            out["nulls"] = "excluded"
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


# -- parsing: text -> one validated SELECT tree ----------------------------------------------------------
def _parse(sql: Any) -> Any:
    import sqlglot
    from sqlglot import exp
    from sqlglot.errors import SqlglotError
    from sqlglot.tokens import Tokenizer

    if not isinstance(sql, str):
        raise refuse(f"the query must be SQL text, got {type(sql).__name__}")
    if len(sql) > MAX_SQL_LENGTH:
        raise refuse(f"the query is longer than {MAX_SQL_LENGTH} characters")
    if "\x00" in sql:
        raise refuse("the query contains a NUL character")
    try:
        tokens = Tokenizer().tokenize(sql)
    except (SqlglotError, ValueError, IndexError, RecursionError):
        raise refuse("the query cannot be tokenized as SQL") from None
    if any(t.comments for t in tokens):
        raise refuse("comments are not accepted (they can hide statements); remove them")
    if not tokens:
        raise refuse("the query is empty")
    try:
        with _quiet_sqlglot():
            statements = [s for s in sqlglot.parse(sql) if s is not None]
    except (SqlglotError, ValueError, IndexError, RecursionError, TypeError, AttributeError, KeyError):
        raise refuse("the query is not valid SQL (or not in the accepted subset)") from None
    if len(statements) != 1:
        raise refuse(f"exactly one statement is accepted, got {len(statements)}")
    tree = statements[0]
    if not isinstance(tree, exp.Select):
        kind = type(tree).__name__.upper()
        if isinstance(tree, (exp.Union, exp.Intersect, exp.Except)):
            raise refuse(f"set operations ({kind}) are not accepted; ask one SELECT")
        raise refuse(f"only a single SELECT is accepted, not {kind} (no DDL, DML or commands)")
    for node in tree.walk():
        if node is not tree and isinstance(node, (exp.Select, exp.Subquery, exp.Union, exp.Intersect, exp.Except)):
            raise refuse("subqueries are not accepted; ask one SELECT over one table")
        if isinstance(node, exp.Window):
            raise refuse("window functions are not accepted: they release per-row values")
        if isinstance(node, exp.Placeholder) or isinstance(node, exp.Parameter):
            raise refuse("parameters/placeholders are not accepted; write the values")
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
        raise refuse(f"{name} is not accepted")


def _only(node: Any, allowed: set[str], what: str) -> None:
    """Refuse ``node`` if it sets an argument outside ``allowed`` (a modifier DP SQL does not understand)."""
    for key, value in node.args.items():
        if key not in allowed and value not in (None, False, [], ""):
            raise refuse(f"{what} with {key.upper().replace('_', ' ')} is not accepted")


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
        raise refuse("the query has no FROM table")
    node = frm.this
    if not isinstance(node, exp.Table) or not isinstance(node.this, exp.Identifier):
        raise refuse("FROM must name one table (no subquery, function or VALUES)")
    if node.args.get("joins"):
        raise refuse(_CLAUSE_NAMES["joins"] + " are not accepted")
    _only(node, {"this", "db", "catalog", "alias"}, "FROM")
    if node.args.get("alias") is not None:
        _only(node.args["alias"], {"this"}, "a table alias")
    parts = [_identifier(p) for p in (node.args.get("catalog"), node.args.get("db"), node.this) if p is not None]
    if len(parts) < 2:
        raise refuse("name the table with its namespace (FROM namespace.table)")
    alias = node.alias or None
    try:
        table = catalog.load_table(tuple(parts))
    except (NoSuchTableError, NoSuchNamespaceError, NoSuchIdentifierError):
        raise refuse(f"unknown table {'.'.join(parts)}") from None
    except (ValueError, BadRequestError):
        raise refuse("the table name is not a valid identifier") from None
    if has_marker(table, LIBRARY_MARKERS):
        # The ledger (every principal's spend), the token table, the journal and DP outputs live beside the
        # datasets and are governed by the same namespace budget, but they are not datasets: a query over the
        # ledger would release other principals' activity; a synthetic table is read without budget.
        raise refuse(f"{'.'.join(parts)} is the library's bookkeeping or a DP output (release or synthetic table), "
                     "not a dataset; query the source tables (GET /v1/datasets lists them), read synthetic tables "
                     "without budget")
    return table, alias


def _column(node: Any, table: Table, alias: str | None) -> str:
    """A column reference of the FROM table; refuses unknown columns and other tables' qualifiers."""
    from sqlglot import exp

    if not isinstance(node, exp.Column) or not isinstance(node.this, exp.Identifier):
        raise refuse("expected a column here")
    _only(node, {"this", "table", "db", "catalog"}, "a column")
    qualifier = node.args.get("table")
    if qualifier is not None:
        q = _identifier(qualifier)
        if q not in {alias, table.name()[-1]} or node.args.get("db") is not None or node.args.get("catalog"):
            raise refuse("a column names a table other than the FROM table")
    name = str(node.this.this)
    names = [f.name for f in table.schema().fields]
    if name not in names:
        raise refuse(f"unknown column {name!r} (columns: {', '.join(names)})")
    check_addressable(name)
    return name


def check_addressable(name: str) -> None:
    """Refuse a column Tumult cannot address: its per-unit row cap and filters name columns unquoted, so Spark
    reads 'a.b' as a struct field and a backtick as a quote. Such a query failed once tmlt evaluated it, after
    the spend (found by advsvc2)."""
    if "." in name or "`" in name:
        raise refuse(f"column {name!r} has a '.' or '`' in its name, which Tumult cannot address; the data owner can "
                     "rename it (Iceberg renames are metadata-only)")


# -- literals and the WHERE clause -------------------------------------------------------------------------
def _literal(node: Any) -> Any:
    """A literal of the query as a Python value (number, string, bool); anything else is refused."""
    from sqlglot import exp

    if isinstance(node, exp.Paren):
        return _literal(node.this)
    if isinstance(node, exp.Neg):
        inner = _literal(node.this)
        if isinstance(inner, bool) or not isinstance(inner, (int, float)):
            raise refuse("a minus sign applies to numbers only")
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
            raise refuse("a numeric literal is not a number") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise refuse("numbers must be finite")
        if isinstance(value, int) and abs(value) >= 2**63:
            raise refuse("an integer literal is out of the 64-bit range")
        return value
    if isinstance(node, exp.Null):
        raise refuse("NULL is accepted only in IS NULL / IS NOT NULL")
    raise refuse(f"expected a literal value, not {type(node).__name__.upper()}")


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
    raise refuse(f"column {column!r} has type {ftype}; WHERE compares strings, numbers, booleans and dates")


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
        raise refuse(f"{pred.op} compares columns of different types ({', '.join(columns)})")
    family = families.pop()
    if pred.op == "COLUMN" and family != "bool":
        raise refuse(f"column {columns[0]!r} is not boolean; compare it with a value")
    for kind, value in operands:
        if kind != "lit":
            continue
        lit = _literal_family(value)
        if not (lit == family or (family == "temporal" and lit == "string")):
            raise refuse(f"a {lit} value is compared with column {columns[0]!r} of {family} type; "
                          "compare like with like (dates and timestamps with 'YYYY-MM-DD...' strings)")
        if family == "temporal" and not _is_datetime_text(value):
            # Spark casts the string to the column's type when it optimizes the plan, i.e. only once tmlt
            # evaluates: a string it cannot cast would fail after the spend, so it is refused here.
            raise refuse(f"a string compared with date/timestamp column {columns[0]!r} must be a valid date "
                          "'YYYY-MM-DD' or timestamp 'YYYY-MM-DD HH:MM[:SS[.ffffff]]' (optionally with Z or +HH:MM)")
    return pred


_DATETIME_TEXT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
                            r"(?:[T ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]{1,6})?)?(?:Z|[+-][0-9]{2}:[0-9]{2})?)?")


def _is_datetime_text(value: str) -> bool:
    """A date or timestamp string that both Python and Spark parse (Spark's ANSI cast fails on the rest)."""
    import datetime as dt

    if not _DATETIME_TEXT.fullmatch(value):
        return False
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return False
    return parsed.tzinfo is None or abs(parsed.utcoffset() or dt.timedelta(0)) <= dt.timedelta(hours=18)


def _predicate(node: Any, table: Table, alias: str | None, depth: int = 0) -> Predicate:
    return _typed(_untyped_predicate(node, table, alias, depth), table)


def _untyped_predicate(node: Any, table: Table, alias: str | None, depth: int = 0) -> Predicate:
    from sqlglot import exp

    if depth > 64:
        raise refuse("the WHERE clause is nested too deeply")
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
            raise refuse("a comparison must involve a column")
        return Predicate(name, (left, right))
    if isinstance(node, exp.Between):
        if node.args.get("symmetric"):  # Spark's BETWEEN has no SYMMETRIC: it would be dropped silently
            raise refuse("BETWEEN SYMMETRIC is not accepted; write low <= column AND column <= high")
        return Predicate("BETWEEN", (("col", _column(node.this, table, alias)),
                                     _operand(node.args["low"], table, alias),
                                     _operand(node.args["high"], table, alias)))
    if isinstance(node, exp.In):
        if node.args.get("query") is not None or node.args.get("unnest") is not None or node.args.get("field"):
            raise refuse("IN takes a list of values, not a subquery")
        values = node.expressions
        if not values:
            raise refuse("IN needs at least one value")
        if len(values) > 10_000:
            raise refuse("IN lists are limited to 10000 values")
        return Predicate("IN", (("col", _column(node.this, table, alias)),
                                *(("lit", _literal(v)) for v in values)))
    if isinstance(node, exp.Is):
        column = ("col", _column(node.this, table, alias))
        if isinstance(node.expression, exp.Null):
            return Predicate("ISNULL", (column,))
        raise refuse("IS accepts NULL only (IS NULL / IS NOT NULL)")
    if isinstance(node, exp.Column):
        return Predicate("COLUMN", (("col", _column(node, table, alias)),))  # a boolean column
    if isinstance(node, exp.Boolean):
        return Predicate("CONST", (("lit", bool(node.this)),))
    if isinstance(node, (exp.Like, exp.ILike, exp.RegexpLike, exp.Glob, exp.SimilarTo)):
        raise refuse(f"{name} is not accepted in WHERE; use =, <>, <, <=, >, >=, IN, BETWEEN, IS NULL")
    raise refuse(f"{name} is not accepted in WHERE; use comparisons of columns with values, AND, OR, NOT, IN, "
                  "BETWEEN and IS NULL")


def spark_identifier(name: str) -> str:
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
    raise refuse("unsupported literal type")


def _spark_operand(operand: tuple[str, Any]) -> str:
    kind, value = operand
    return spark_identifier(value) if kind == "col" else _spark_literal(value)


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


def predicate_json(pred: Predicate) -> Any:
    def arg(a: Any) -> Any:
        if isinstance(a, Predicate):
            return predicate_json(a)
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


MAX_BOUND = 2.0**62
"""Largest |clamping bound| of an aggregate: tmlt hands the bounds (for AVG, half their width) to Spark as 64-bit
integer literals, which failed past 2**63 only when the query was evaluated, after the spend (found by advsvc2)."""
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
