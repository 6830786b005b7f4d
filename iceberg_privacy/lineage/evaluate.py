"""Evaluate a recorded column expression on subject values: where did Ann's id go downstream?

A derive that writes ``lower(email) AS email_l`` records the expression ``LOWER(email)``. Erasing
``Ann@X.org`` downstream means erasing ``ann@x.org`` there, so fan-out evaluates the expression on
the subject's value with DuckDB (in-process, no data read). Expressions recorded by Spark are
transpiled to DuckDB's dialect by sqlglot first.

The expression comes from a snapshot summary, which anyone with write access to any table of the
catalog can set. It is therefore evaluated in a DuckDB connection that can touch no file and no
network (``enable_external_access = false``, locked), with one thread and a small memory limit:
a hostile summary such as ``(SELECT ... FROM read_text('~/.pyiceberg.yaml'))`` fails to evaluate
(reported as a fan-out warning) instead of reading the operator's files into error messages.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from iceberg_privacy.errors import LineageError


def sql_type(arrow_type: pa.DataType) -> str:
    """A SQL type name for ``arrow_type`` that sqlglot and DuckDB understand (nested types: VARCHAR)."""
    if pa.types.is_integer(arrow_type):
        return "BIGINT"
    if pa.types.is_floating(arrow_type):
        return "DOUBLE"
    if pa.types.is_boolean(arrow_type):
        return "BOOLEAN"
    if pa.types.is_timestamp(arrow_type):
        return "TIMESTAMPTZ" if arrow_type.tz else "TIMESTAMP"
    if pa.types.is_date(arrow_type):
        return "DATE"
    if pa.types.is_decimal(arrow_type):
        return f"DECIMAL({arrow_type.precision}, {arrow_type.scale})"
    if pa.types.is_binary(arrow_type) or pa.types.is_large_binary(arrow_type) or pa.types.is_fixed_size_binary(
            arrow_type):
        return "BLOB"
    return "VARCHAR"


SANDBOX: dict[str, str | bool | int | float | list[str]] = {"enable_external_access": False, "lock_configuration": True, "threads": 1, "memory_limit": "256MB",
           "autoload_known_extensions": False, "autoinstall_known_extensions": False}
"""DuckDB settings for evaluating expressions read from snapshot summaries (see the module doc)."""


def sandbox() -> Any:
    """A DuckDB connection with the :data:`SANDBOX` settings (close it when done)."""
    import duckdb

    return duckdb.connect(config=SANDBOX)


def map_values(expression: str, column: str, column_type: str, values: Sequence[Any], *,
               dialect: str = "duckdb", con: Any | None = None) -> list[Any]:
    """``expression`` evaluated with ``column`` bound to each value (values that fail to cast are skipped).

    ``con``: a connection from :func:`sandbox` to reuse (opening one costs tens of milliseconds).
    Raises :class:`LineageError` when the expression cannot be evaluated at all.
    """
    import duckdb
    import sqlglot

    try:
        tree = sqlglot.parse_one(expression, read=dialect or "duckdb")
        expr = tree.sql(dialect="duckdb")
    except Exception as exc:  # noqa: BLE001 - sqlglot raises several types
        raise LineageError(f"recorded expression {expression!r} cannot be read: {exc}") from exc
    ident = '"' + column.replace('"', '""') + '"'
    out: list[Any] = []
    own = con is None
    con = sandbox() if con is None else con

    def run(sql: str, value: Any) -> Any:
        try:
            row = con.execute(f"SELECT {sql} FROM (SELECT TRY_CAST($1 AS {column_type}) AS {ident})",
                              [value]).fetchone()
        except duckdb.Error as exc:
            raise LineageError(f"recorded expression {expression!r} cannot be evaluated: {exc}") from exc
        return row

    steps = _python_steps(tree, dialect or "duckdb")
    try:
        for value in values:
            row = run(expr, value) if not steps else (_evaluate_in_python(tree, steps, value, run),)
            if row is not None and isinstance(row[0], list | dict | tuple | set):
                raise LineageError(f"recorded expression {expression!r} returns a nested value ({row[0]!r}): the "
                                   "subject's value inside it cannot be mapped (a list identity column is still "
                                   "matched by the request's own values, element by element)")
            if row is not None and row[0] is not None:
                out.append(row[0])
    finally:
        if own:
            con.close()
    return list(dict.fromkeys(out))


IMAGE_LIMIT = 10_000
"""The most values :func:`image_of` evaluates one by one (an expression with Spark steps)."""


def image_of(expression: str, column: str, column_type: str, values: Sequence[Any], *, dialect: str = "duckdb",
             con: Any) -> set[Any]:
    """The set of ``expression``'s values over ``values`` (as :func:`map_values`, in one query when DuckDB computes
    it as the recording engine did: fan-out checks a whole column's values this way)."""
    import duckdb
    import sqlglot

    try:
        tree = sqlglot.parse_one(expression, read=dialect or "duckdb")
        expr = tree.sql(dialect="duckdb")
    except Exception as exc:  # noqa: BLE001 - sqlglot raises several types
        raise LineageError(f"recorded expression {expression!r} cannot be read: {exc}") from exc
    if _python_steps(tree, dialect or "duckdb") or not values:
        if len(values) > IMAGE_LIMIT:  # value by value: about 0.5 ms each
            raise LineageError(f"recorded expression {expression!r} is computed value by value (Spark's functions), "
                               f"and the column has more than {IMAGE_LIMIT} values")
        return set(map_values(expression, column, column_type, values, dialect=dialect, con=con))
    ident = '"' + column.replace('"', '""') + '"'
    try:
        arrow = pa.table({"v": pa.array(list(values))})
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return set(map_values(expression, column, column_type, values, dialect=dialect, con=con))
    cur = con.cursor()  # its own result: map_values leaves the connection's last result open
    try:
        cur.register("ip_image_values", arrow)
        rows = cur.execute(f"SELECT DISTINCT {expr} FROM (SELECT TRY_CAST(v AS {column_type}) AS {ident} "
                           "FROM ip_image_values)").fetchall()
    except duckdb.Error as exc:
        raise LineageError(f"recorded expression {expression!r} cannot be evaluated: {exc}") from exc
    finally:
        cur.close()
    return {r[0] for r in rows if r[0] is not None and not isinstance(r[0], list | dict | tuple | set)}


def _value_nodes() -> tuple[type, ...]:
    from sqlglot import exp

    return (exp.Paren, exp.Alias, exp.Cast, exp.TryCast, exp.Lower, exp.Upper, exp.Trim, exp.SHA, exp.SHA2,
            exp.MD5, exp.MD5Digest, exp.Hex, exp.LowerHex, exp.ToBase64, exp.Concat, exp.DPipe, exp.Coalesce,
            exp.Nullif, exp.Add, exp.Sub, exp.Mul, exp.Div, exp.Neg, exp.Reverse, exp.Struct, exp.PropertyEQ, exp.Array)


# Anonymous functions (sqlglot has no class for them) that keep one value per person, by dialect.
# Spark's HASH is a 32-bit murmur3 (collides across a large user base) and DuckDB's HASH differs from it,
# so it is kept for DuckDB only.
_VALUE_FUNCTIONS = {"duckdb": {"hash", "sha1", "sha256", "md5", "to_hex", "base64"},
                    "spark": {"sha1", "sha", "sha2", "md5", "hex", "base64"}}
_LOSSY_CASTS = {"DATE", "BOOLEAN", "TIME", "TINYINT", "SMALLINT", "UTINYINT", "USMALLINT"}
# Functions taking an element or field out of their first argument (a list, struct or map), by lower-case name.
_EXTRACT_FUNCTIONS = {"element_at", "list_extract", "array_extract", "list_element", "get", "struct_extract",
                      "try_element_at"}


_REARRANGE_FUNCTIONS = {"list_distinct", "array_distinct"}


def _extracted_from(node: Any, child: Any) -> bool:
    """Is ``node`` an element or field access whose container is ``child`` (``child[1]``, ``child['id']``,
    ``struct_extract(child, 'id')``, ``element_at(child, 1)``), or the same list's elements rearranged
    (``list_sort(child)``, ``array_distinct(child)``)? A slice (``child[1:2]``) is not."""
    from sqlglot import exp

    if isinstance(node, exp.Bracket):
        return node.this is child and len(node.expressions) == 1 and not isinstance(node.expressions[0], exp.Slice)
    if isinstance(node, exp.StructExtract | exp.Dot | exp.SortArray | exp.ArraySort | exp.ArrayReverse
                  | exp.ArrayCompact | exp.Reverse):
        return node.this is child
    if isinstance(node, exp.Anonymous) and node.name.lower() in _REARRANGE_FUNCTIONS:
        return len(node.expressions) == 1 and node.expressions[0] is child
    if isinstance(node, exp.Anonymous) and node.name.lower() in _EXTRACT_FUNCTIONS:
        return bool(node.expressions) and node.expressions[0] is child
    return False


@functools.lru_cache(maxsize=4096)
def extracts(expression: str, column: str, *, dialect: str = "duckdb") -> bool:
    """Is ``expression`` an element or field of ``column`` and nothing else (``friends[1]``, ``who.id``,
    ``STRUCT_EXTRACT(who, 'id')``, ``ELEMENT_AT(friends, 1)``, nested as deep as it goes; also the list's
    elements sorted or de-duplicated, ``LIST_SORT(friends)``)?

    Over a nested identity column (a list of ids, a struct holding an id) such a value is one of the
    identifiers the column holds, as it holds them: erasure matches that column by the request's own
    values, leaf by leaf, so the extracted column is matched by the same values (there is nothing to
    evaluate: the request's value is a leaf, not a whole list or struct)."""
    import sqlglot
    from sqlglot import exp

    try:
        node = sqlglot.parse_one(expression, read=dialect or "duckdb")
    except Exception:  # noqa: BLE001 - sqlglot raises several types
        return False
    depth = 0
    while True:
        while isinstance(node, exp.Paren):
            node = node.this
        if isinstance(node, exp.Column):
            parts = [p.name for p in node.parts]
            # who.id is parsed as column id of table who
            return (parts == [column] and depth > 0) or (len(parts) > 1 and parts[0] == column)
        inner = node.expressions[0] if isinstance(node, exp.Anonymous) and node.expressions else node.this
        if not isinstance(inner, exp.Expression) or not _extracted_from(node, inner):
            return False
        node, depth = inner, depth + 1


_SHA2_BITS = {224, 256, 384, 512}


def _python_steps(tree: Any, dialect: str) -> list[Any]:
    """The nodes of ``tree`` DuckDB would compute differently from the engine that recorded it.

    Spark's ``sha2(x, 512)`` (also 224, 384) became DuckDB's SHA256 in the transpiled SQL (DuckDB has no
    other SHA-2), so the subject's hash was never matched; Spark's ``CAST(x AS STRING)`` writes doubles, binary and
    timestamps differently (:func:`spark_string`); Spark's (Java's) ``upper``/``lower`` apply
    Unicode's full case mapping (``upper('straße')`` is ``STRASSE``, DuckDB's is ``STRAẞE``), as Python's do;
    Spark's ``reverse`` reverses code points, DuckDB's keeps a letter and its combining accent together."""
    from sqlglot import exp

    out: list[Any] = []
    for node in tree.find_all(exp.SHA2, exp.Upper, exp.Lower, exp.Reverse, exp.Cast, exp.TryCast):
        if isinstance(node, exp.Cast | exp.TryCast):  # also TryCast: a subclass
            if dialect == "spark" and node.to.is_type(*exp.DataType.TEXT_TYPES):
                out.append(node)  # CAST(x AS STRING): Spark's text of a double, binary, timestamp is not DuckDB's
        elif isinstance(node, exp.SHA2):
            length = node.args.get("length")
            bits = int(length.name) if isinstance(length, exp.Literal) and length.name.isdigit() else 256
            if bits not in (0, 256):
                out.append(node)
        elif dialect == "spark":
            out.append(node)
    return out


def _evaluate_in_python(tree: Any, steps: list[Any], value: Any, run: Any) -> Any:
    """``tree`` evaluated on ``value``: each node of ``steps`` in Python (on its argument's value, itself
    evaluated the same way), the rest by ``run`` (DuckDB, the column bound to ``value``)."""
    from sqlglot import exp

    for n in tree.walk():  # marked in meta, which copies keep (node ids do not)
        n.meta.pop("ip_step", None)
    for n in steps:
        n.meta["ip_step"] = True

    def under_step(node: Any, root: Any) -> bool:
        while node is not root and node.parent is not None:
            node = node.parent
            if node.meta.get("ip_step"):
                return True
        return False

    def evaluate(node: Any) -> Any:
        if node.meta.get("ip_step"):
            return _apply(node, evaluate(node.this))
        work = node.copy()
        for n in [n for n in work.walk() if n.meta.get("ip_step") and not under_step(n, work)]:
            result = _apply(n, evaluate(n.this))
            n.replace(exp.Null() if result is None else exp.Unhex(this=exp.Literal.string(result.hex()))
                      if isinstance(result, bytes) else exp.Literal.string(result))
        row = run(work.sql(dialect="duckdb"), value)
        return None if row is None else row[0]

    return evaluate(tree)


def _apply(node: Any, arg: Any) -> Any:
    import hashlib

    from sqlglot import exp

    if arg is None:
        return None
    if isinstance(node, exp.Cast | exp.TryCast):
        return spark_string(arg)
    if isinstance(node, exp.Reverse) and isinstance(arg, bytes | bytearray):
        return bytes(arg)[::-1]  # Spark reverses a binary value byte by byte, and it stays binary
    if isinstance(node, exp.Upper | exp.Lower | exp.Reverse):
        text = spark_string(arg)
        if isinstance(node, exp.Reverse):
            return text[::-1]  # Java reverses code points; DuckDB keeps 'é' (e + U+0301) together
        return text.upper() if isinstance(node, exp.Upper) else text.lower()
    length = node.args.get("length")
    bits = int(length.name) if isinstance(length, exp.Literal) and length.name.isdigit() else 256
    if bits not in _SHA2_BITS:
        return None  # Spark: NULL for any other length
    data = arg if isinstance(arg, bytes | bytearray) else spark_string(arg).encode()
    return hashlib.new(f"sha{bits}", data).hexdigest()


def spark_string(value: Any) -> str:
    """``value`` as Spark casts it to a string (the implicit cast of ``upper(x)``, ``reverse(x)`` on a non-string):
    binary is decoded as UTF-8 (an invalid byte becomes U+FFFD), booleans are ``true``/``false``, doubles are
    Java's ``Double.toString`` (``1.0E20``, ``1.23456789E8``, ``NaN``, ``Infinity``), timestamps have no
    trailing zeros in their fraction (``2024-01-02 03:04:05.12``). Python's ``str`` differed for all of these
    (``b'abc'``, ``True``, ``1e+20``, ``...05.120000``), so a subject's value mapped through such an expression was
    never matched downstream."""
    import datetime as dt
    import math

    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _java_double(value, math)
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)  # Spark shows the session zone (UTC here)
        text = value.strftime("%Y-%m-%d %H:%M:%S")
        return text + (f".{value.microsecond:06d}".rstrip("0") if value.microsecond else "")
    return str(value)


def _java_double(value: float, math: Any) -> str:
    """Java's ``Double.toString``: plain between 1e-3 and 1e7, else ``d.dddE<exp>``; always a fraction digit."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0:
        return "-0.0" if math.copysign(1.0, value) < 0 else "0.0"
    sign = "-" if value < 0 else ""
    digits, exponent = _shortest_digits(abs(value))  # value = 0.d1d2... * 10**exponent
    if 1e-3 <= abs(value) < 1e7:
        if exponent <= 0:
            return f"{sign}0.{'0' * -exponent}{digits}"
        whole, frac = digits[:exponent].ljust(exponent, "0"), digits[exponent:]
        return f"{sign}{whole}.{frac or '0'}"
    return f"{sign}{digits[0]}.{digits[1:] or '0'}E{exponent - 1}"


def _shortest_digits(value: float) -> tuple[str, int]:
    """The shortest decimal digits that read back as ``value`` (Python's repr), and the exponent ``e`` with
    ``value == 0.<digits> * 10**e``."""
    mantissa, _, exp_part = f"{value!r}".lower().partition("e")
    whole, _, frac = mantissa.partition(".")
    digits = (whole + frac).lstrip("0")
    exponent = len(whole) + int(exp_part or 0) - (len(whole + frac) - len(digits))
    return digits.rstrip("0") or "0", exponent


@functools.lru_cache(maxsize=4096)
def value_preserving(expression: str, column: str | None = None, *, dialect: str = "duckdb",
                     nested: bool = False) -> bool:
    """Does ``expression`` keep one value per person (``LOWER(email)``, ``SHA256(CAST(id AS TEXT))``,
    ``user_id + 1``), or does it map many people onto one value (``user_id % 10``, ``LENGTH(email)``,
    ``SPLIT_PART(email, '@', 2)``, ``email LIKE '%x'``)?

    Erasure fan-out matches a derived column by the subject's mapped value. Through a lossy
    expression that value is shared with other people, so matching it would erase their rows, and
    the derived column is no identity column. An allow-list: unknown functions are taken as lossy.

    ``nested``: ``column`` is a list, struct or map (a list of ids, a struct holding one). Taking an
    element or field out of it (``friends[1]``, ``STRUCT_EXTRACT(who, 'id')``, ``ELEMENT_AT(ids, 1)``)
    then gives one of the identifiers it holds, not a value shared by many people. Of a string the same
    syntax is a substring (``email[1]``), which is lossy: callers say which the column is.
    """
    import sqlglot
    from sqlglot import exp

    try:
        tree = sqlglot.parse_one(expression, read=dialect or "duckdb")
    except Exception:  # noqa: BLE001 - sqlglot raises several types
        return False
    keep = _value_nodes()
    named = _VALUE_FUNCTIONS.get(dialect or "duckdb", set())
    columns = [c for c in tree.find_all(exp.Column) if column is None or c.name == column] or \
        list(tree.find_all(exp.Column))
    if not columns:
        return False
    for col in columns:
        child: exp.Expression = col
        node = col.parent
        while node is not None:
            if nested and _extracted_from(node, child):
                pass  # an element or field of the nested column: one of the identifiers it holds
            elif isinstance(node, exp.Anonymous):
                if node.name.lower() not in named:
                    return False
            elif not isinstance(node, keep):
                return False
            if isinstance(node, exp.Cast | exp.TryCast) and node.to.this.name in _LOSSY_CASTS:
                return False
            if isinstance(node, exp.Mul | exp.Div) and any(isinstance(o, exp.Literal) and o.this in ("0", "0.0")
                                                 for o in (node.this, node.expression)):
                return False
            child, node = node, node.parent
        del child
    return True
