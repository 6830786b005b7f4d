"""Which tables a SQL text reads, and the text with its data values taken out: what lineage records about a query
before (and whether or not) :mod:`iceberg_privacy.lineage.sql` can analyse its columns.

:func:`referenced_tables` names the sources of any text, parsed or not (a query that cannot be analysed still
names them, so it is recorded as opaque lineage over those tables, never as no lineage); :func:`normalize_sql`
is the text with every literal replaced by ``?``, the form stored in metadata (no data value reaches it).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import sqlglot
from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.tokens import TokenType

_STRING_LITERALS = tuple(c for c in (getattr(exp, n, None) for n in (
    "HexString", "BitString", "ByteString", "RawString", "National", "UnicodeString")) if c is not None)


def dialect_of(dialect: str) -> Dialect:
    if not isinstance(dialect, str):
        raise TypeError(f"dialect must be a str, not {type(dialect).__name__}")
    return Dialect.get_or_raise(dialect)


def norm_ident(name: str, d: Dialect) -> str:
    return d.normalize_identifier(exp.to_identifier(name)).name


def table_parts(table: exp.Table, d: Dialect) -> list[str] | None:
    """Normalised name parts of a table reference; None for a table function or other non-name."""
    if not isinstance(table.this, exp.Identifier):
        return None
    return [d.normalize_identifier(p.copy()).name for p in table.parts]


def statement_tables(stmt: exp.Expression, d: Dialect) -> list[tuple[int, str]]:
    """(position, name) of the tables a parsed statement reads: CTE names and write targets left out."""
    ctes = {c.alias_or_name.lower() for c in stmt.find_all(exp.CTE)}
    targets = set()
    for s in stmt.find_all(exp.Insert, exp.Create):
        target = s.this.this if isinstance(s.this, exp.Schema) else s.this
        targets.add(id(target))
    out = []
    for t in stmt.find_all(exp.Table):
        parts = table_parts(t, d)
        if parts is None or id(t) in targets or (len(parts) == 1 and parts[0].lower() in ctes):
            continue
        if t.find_ancestor(exp.Hint) is not None:  # /*+ BROADCAST(u) */ names an alias (or a table read elsewhere)
            continue
        out.append((t.this.meta.get("start", 0), ".".join(parts)))
    return out


def dedupe(items: Iterable[tuple[int, str]]) -> list[str]:
    seen: dict[str, None] = {}
    for _, name in sorted(items, key=lambda x: x[0]):
        seen.setdefault(name)
    return list(seen)


_WORD = re.compile(r'"((?:[^"]|"")+)"|`([^`]+)`|([A-Za-z_][\w$]*)|(\.)|(\S)')


def _token_tables(sql: str, known: set[str], d: Dialect) -> list[tuple[int, str]]:
    """Dotted names in ``sql`` that match ``known``, from sqlglot tokens (or a regex if tokens fail)."""
    words: list[tuple[int, str | None]] = []  # (position, identifier text) or (position, None) for a dot
    try:
        for tok in d.tokenize(sql):
            if tok.token_type == TokenType.DOT:
                words.append((tok.start, None))
            elif tok.token_type not in (TokenType.STRING, TokenType.NUMBER) and re.fullmatch(r"[\w$]+", tok.text):
                words.append((tok.start, d.normalize_identifier(exp.to_identifier(tok.text)).name))
            else:
                words.append((tok.start, ""))
    except Exception:  # noqa: BLE001 - unterminated strings etc.: fall back to a plain scan
        words = []
        for m in _WORD.finditer(sql):
            text = m.group(1) or m.group(2) or m.group(3)
            words.append((m.start(), None if m.group(4) else (norm_ident(text, d) if text else "")))
    found = []
    for i, (pos, w) in enumerate(words):
        if not w:
            continue
        name, j = w, i
        while j + 2 < len(words) and words[j + 1][1] is None and words[j + 2][1]:
            name, j = f"{name}.{words[j + 2][1]}", j + 2
            if name in known:
                found.append((pos, name))
    return found


def referenced_tables(sql: str, known: Iterable[str], dialect: str = "duckdb") -> list[str]:
    """Best-effort table names read by ``sql``, so a query that cannot be analysed still names its sources.

    Parsed references when sqlglot parses the text (CTE names and INSERT/CREATE targets left out),
    plus dotted token sequences matching a name in ``known`` when it does not. Never raises.
    """
    if not isinstance(sql, str):
        raise TypeError(f"sql must be a str, not {type(sql).__name__}")
    d = dialect_of(dialect)
    known_norm = set()
    for k in known:
        try:
            known_norm.add(".".join(table_parts(exp.to_table(k, dialect=d), d) or []))
        except Exception:  # noqa: BLE001
            known_norm.add(str(k).lower())
    found: list[tuple[int, str]] = []
    try:
        stmts = [s for s in sqlglot.parse(sql, read=d) if s is not None]
        for s in stmts:
            found.extend(statement_tables(s, d))
        if any(isinstance(s, exp.Command) for s in stmts):
            found.extend(_token_tables(sql, known_norm, d))
    except Exception:  # noqa: BLE001 - any parser failure: tokens only
        found = _token_tables(sql, known_norm, d)
    return dedupe(found)


def normalize_sql(sql: str, dialect: str = "duckdb") -> str | None:
    """``sql`` regenerated with every literal replaced by ``?``, so no data value reaches metadata.

    Comments are dropped too. Type parameters (``DECIMAL(10, 2)``) and positional ``GROUP BY 1`` /
    ``ORDER BY 1`` references are kept: they are not data. None if the text does not parse.
    """
    if not isinstance(sql, str):
        raise TypeError(f"sql must be a str, not {type(sql).__name__}")
    d = dialect_of(dialect)
    try:
        stmts = [s for s in sqlglot.parse(sql, read=d) if s is not None]
    except Exception:  # noqa: BLE001
        return None
    if not stmts or any(isinstance(s, exp.Command) for s in stmts):
        return None

    def strip(node: exp.Expression) -> exp.Expression:
        if isinstance(node, (exp.Literal, *_STRING_LITERALS)):
            parent = node.parent
            if isinstance(parent, exp.DataTypeParam) or (
                    isinstance(parent, exp.Group | exp.Ordered) and not node.is_string):
                return node
            return exp.Placeholder()
        return node

    try:
        return "; ".join(s.transform(strip).sql(dialect=d, comments=False) for s in stmts)
    except Exception:  # noqa: BLE001
        return None


__all__ = ["dedupe", "dialect_of", "norm_ident", "normalize_sql", "referenced_tables", "statement_tables",
           "table_parts"]
