"""DP SQL, the WHERE clause: validated comparisons, typed against the table's columns, and rendered for Spark.

Why its own module: this is where the no-injection promise of :mod:`.sql_compile` is kept. A predicate is
built only from a validated tree (columns of the schema, literals re-read as values, each compared with a
column of its own type family); :func:`to_spark` then *generates* the Spark SQL string tmlt's
``QueryBuilder.filter`` needs (backticked identifiers, re-rendered numbers, strings as hex literals), so no
quote or backslash of the input reaches the Spark parser. :func:`predicate_json` is the canonical form the
query hash and the provenance use.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pyiceberg.table import Table
from pyiceberg.types import DateType, StringType, TimestampType, TimestamptzType

from iceberg_privacy.dp.arguments import (
    NUMERIC_TYPES,
)
from iceberg_privacy.dp.sql_parse import (
    _column,
    _literal,
    refuse,
)


@dataclass(frozen=True)
class Predicate:
    """A validated WHERE node: ``op`` and its children (other predicates, ``("col", name)`` or ``("lit", v)``)."""

    op: str
    args: tuple[Any, ...]

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
