"""DP SQL, the grammar's leaves: text -> one validated SELECT tree, and the table, columns and literals it names.

Why its own module: these checks run before anything else (length, one statement, sqlglot's logs kept quiet
because they quote the query, the whitelist of clauses, the FROM table, which must not be the library's own
bookkeeping, columns Tumult can address, literals re-read as Python values). The WHERE clause
(:mod:`.sql_where`) and the aggregates (:mod:`.sql_compile`) are built on them. See
:mod:`iceberg_privacy.dp.sql_compile` for what the subset is and why.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import threading
from collections.abc import Iterator
from typing import Any

from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import (
    BadRequestError,
    NoSuchIdentifierError,
    NoSuchNamespaceError,
    NoSuchTableError,
)
from pyiceberg.table import Table

from iceberg_privacy.catalog import has_marker
from iceberg_privacy.dp.arguments import tumult_addressable
from iceberg_privacy.errors import (
    DpSqlRefusedError,
)
from iceberg_privacy.properties import LIBRARY_MARKERS

MAX_SQL_LENGTH = 20_000
"""Longer text is refused before it is tokenized."""
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


# -- parsing: text -> one validated SELECT tree ----------------------------------------------------------
def _parse(sql: Any) -> Any:
    from sqlglot import exp
    from sqlglot.dialects.dialect import Dialect
    from sqlglot.errors import SqlglotError

    if not isinstance(sql, str):
        raise refuse(f"the query must be SQL text, got {type(sql).__name__}")
    if len(sql) > MAX_SQL_LENGTH:
        raise refuse(f"the query is longer than {MAX_SQL_LENGTH} characters")
    if "\x00" in sql:
        raise refuse("the query contains a NUL character")
    dialect = Dialect.get_or_raise(None)  # sqlglot.parse's default dialect
    try:
        # Tokenized once: the comment check and the parser read the same tokens (sqlglot.parse(sql) tokenized
        # the text a second time; tokenizing is most of what parsing costs).
        tokens = dialect.tokenize(sql)
    except (SqlglotError, ValueError, IndexError, RecursionError):
        raise refuse("the query cannot be tokenized as SQL") from None
    if any(t.comments for t in tokens):
        raise refuse("comments are not accepted (they can hide statements); remove them")
    if not tokens:
        raise refuse("the query is empty")
    try:
        with _quiet_sqlglot():
            statements = [s for s in dialect.parser().parse(tokens, sql) if s is not None]
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
def source_name(sql: Any) -> tuple[str, ...]:
    """The identifier of the FROM table of DP SQL text, without loading anything (the query service checks that
    the caller may query it before any message about that table is shown); refusals as :func:`compile_sql`'s."""
    return _source_parts(_parse(sql))


def _source_parts(tree: Any) -> tuple[str, ...]:
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
    return tuple(parts)


def _source(catalog: Catalog, tree: Any) -> tuple[Table, str | None]:
    parts = _source_parts(tree)
    frm = tree.args.get("from") or tree.args.get("from_")
    alias = frm.this.alias or None
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
            if q in {f.name for f in table.schema().fields if not f.field_type.is_primitive}:
                raise refuse(f"{q}.{node.this.this} is a field nested in column {q!r}; DP SQL reads top-level columns "
                             f"only: the data owner can derive a table with it as a column")
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
    if not tumult_addressable(name):
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
