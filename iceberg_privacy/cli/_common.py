"""What every command module of the CLI shares.

* **One command shape.** A command is ``cmd_x(args, catalog) -> int``; :func:`add_command` adds its
  parser and records whether it needs the catalog (the main CLI connects once, and only then).
* **One JSON form.** ``--json`` (added by ``add_command(..., json=True)``) prints the report's fields
  through :func:`to_jsonable`; without it the report's ``str()`` is printed, as before.
* Subject values (arguments or ``--values-file``), ``--tables`` lists, and ages (``7d``, ``12h``, ``30m``).
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import re
import sys
from collections.abc import Callable, Mapping
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path, PurePath
from typing import Any
from uuid import UUID

from iceberg_privacy._internal import jsontext
from iceberg_privacy.errors import ConfigurationError

Command = Callable[[argparse.Namespace, Any], int]
"""``cmd_x(args, catalog) -> exit code``: ``catalog`` is the invocation's :class:`~pyiceberg.catalog.Catalog`,
None for commands registered with ``catalog=False``."""


def add_command(subparsers: Any, name: str, fn: Command, *, help: str, catalog: bool = True,
                json: bool = False) -> argparse.ArgumentParser:
    """Add command ``name`` running ``fn``; ``json=True`` gives it ``--json``."""
    p: argparse.ArgumentParser = subparsers.add_parser(name, help=help, description=help)
    if json:
        p.add_argument("--json", action="store_true", help="print the result as JSON (the report's fields)")
    p.set_defaults(command_fn=fn, needs_catalog=catalog)
    return p


# ------------------------------------------------------------------------------------------ output
def to_jsonable(obj: Any, *, exclude: frozenset[str] | set[str] = frozenset()) -> Any:
    """``obj`` as JSON-able values: a report's own ``to_json()``/``to_dict()`` when it has one, else its
    dataclass fields (``_private`` ones and top-level ``exclude`` left out), recursively; datetimes as
    ISO 8601, durations in seconds, bytes as hex, sets sorted, non-finite floats as ``"NaN"``/``"Infinity"``/
    ``"-Infinity"`` (bare NaN is not JSON, ``_internal/jsontext.py``), anything else as ``str()``."""
    if isinstance(obj, float):
        return jsontext.finite_or_text(obj)
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for method in ("to_json", "to_dict"):
            own = getattr(obj, method, None)
            if callable(own):
                return to_jsonable(own())
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                if not f.name.startswith("_") and f.name not in exclude}
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted((to_jsonable(v) for v in obj), key=str)
    if isinstance(obj, (datetime, date, time)):
        return obj.isoformat()
    if isinstance(obj, timedelta):
        return obj.total_seconds()
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return bytes(obj).hex()
    if isinstance(obj, enum.Enum):
        return to_jsonable(obj.value)
    if isinstance(obj, (Decimal, UUID, PurePath)):
        return str(obj)
    if hasattr(obj, "to_pylist"):  # pyarrow Table / Array
        return to_jsonable(obj.to_pylist())
    return str(obj)


def print_json(obj: Any, **kwargs: Any) -> None:
    print(jsontext.dumps(to_jsonable(obj, **kwargs), indent=2, ensure_ascii=False))


def emit(args: argparse.Namespace, report: Any, human: str | None = None) -> None:
    """Print ``report``: as JSON with ``--json``, else ``human`` (default ``str(report)``)."""
    if getattr(args, "json", False):
        print_json(report)
    else:
        print(str(report) if human is None else human)


def table_text(rows: Any, **to_string: Any) -> str:
    """A pyarrow table as a text table (pandas' ``to_string``) that shows every value as it is stored: integers stay
    integers when their column has nulls (pandas made them floats, so the id 9007199254740993 printed as
    9.007199e+15), and nested columns (structs, lists, maps) are their ``--output jsonl`` text (pandas made a list
    of integers with a null an array of floats: 9007199254740992.0, nan)."""
    import pyarrow as pa

    shown = pa.table({f.name: json_text(rows.column(f.name)) if pa.types.is_nested(f.type) else rows.column(f.name)
                      for f in rows.schema})
    return str(shown.to_pandas(integer_object_nulls=True).to_string(**to_string))


def json_text(col: Any) -> Any:
    """A nested column as one JSON text per row (null stays null)."""
    import pyarrow as pa

    return pa.array([None if v is None else jsontext.dumps(to_jsonable(v), ensure_ascii=False) for v in col.to_pylist()],
                    pa.string())


def aligned(rows: list[list[str]], *, right: frozenset[int] = frozenset()) -> list[str]:
    """``rows`` (the header first) as lines of columns as wide as their widest cell, never cut: a truncated
    table name or snapshot id reads as another, real one. Columns in ``right`` are right-aligned; the last
    column is not padded."""
    widths = [max(len(r[i]) for r in rows if i < len(r)) for i in range(max(map(len, rows)))]
    out = []
    for r in rows:
        cells = [c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(r)]
        out.append(" ".join(cells).rstrip())
    return out


def deprecated(message: str) -> None:
    """A deprecation note on stderr (the old spelling still works for this release)."""
    print(f"deprecated: {message}", file=sys.stderr)


# ------------------------------------------------------------------------------------------ arguments
def values(args: argparse.Namespace) -> list[str]:
    """Values given as arguments plus those of ``--values-file`` (one per line; ``-`` reads standard input,
    so subject ids need not appear in the process list or the shell history)."""
    out = list(getattr(args, "values", None) or [])
    if getattr(args, "values_file", None):
        # utf-8-sig: a byte-order mark (Windows editors write one) is no part of the first value
        try:
            text = (sys.stdin.read().removeprefix("\ufeff") if args.values_file == "-"
                    else Path(args.values_file).read_text(encoding="utf-8-sig"))
        except (OSError, UnicodeDecodeError) as exc:
            what = ("standard input" if args.values_file == "-" else repr(args.values_file))
            reason = (f"it is not UTF-8 text ({exc.reason} at byte {exc.start})" if isinstance(exc, UnicodeDecodeError)
                      else exc.strerror or type(exc).__name__)
            raise ConfigurationError(
                f"cannot read --values-file {what}: {reason}; give a readable UTF-8 text file with one value per "
                "line, or --values-file - to read them from standard input") from exc
        out += [line.strip() for line in text.splitlines() if line.strip()]
    return out


def load_table(catalog: Any, name: str) -> Any:
    """The table a command names (``namespace.table``).

    A name without a namespace is refused before the catalog is asked (a REST catalog answers it with a bare
    ``NoSuchIdentifierError``); a table or namespace that does not exist is a :class:`TableNotFoundError`
    saying what the catalog does hold (the namespace's tables, or its namespaces on a namespace typo) and
    which catalog was asked."""
    from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError

    from iceberg_privacy.catalog import identifier, usable

    ident = identifier(name)
    try:
        return usable(catalog.load_table(ident))
    except (NoSuchTableError, NoSuchNamespaceError) as exc:
        raise table_not_found(catalog, ident) from exc


def table_not_found(catalog: Any, ident: tuple[str, ...]) -> Exception:
    """The error for a table the command line named and the catalog does not have."""
    from iceberg_privacy.catalog import catalog_home, what_exists
    from iceberg_privacy.errors import TableNotFoundError

    home = catalog_home(catalog)
    where = (f"the embedded catalog in {home} (--home / $ICEBERG_PRIVACY_HOME / ./.iceberg-privacy; --catalog NAME "
             "for one of ~/.pyiceberg.yaml)" if home is not None
             else f"catalog {catalog.name!r} (--catalog NAME, ~/.pyiceberg.yaml)")
    return TableNotFoundError(
        f"table {'.'.join(ident)} not found in the catalog{what_exists(catalog, ident)}; check the name "
        f"(namespace.table) and the catalog: this was {where}")


def output_location(text: str) -> str:
    """``--out`` (argparse ``type=``): a folder or a FileIO location; an empty one is refused, since it would
    write the export (personal data) into whatever the current directory is, and so is ``-``: it reads as
    standard output (``--values-file -`` is standard input) but would be a folder named ``-`` there."""
    if not text.strip():
        raise argparse.ArgumentTypeError(
            "an empty output location would write into the current directory: name a folder or a location "
            "such as s3://bucket/exports/req-1")
    if text.strip() == "-":
        raise argparse.ArgumentTypeError(
            "'-' is not standard output here: an export is several files, and '-' would be a folder named '-' in "
            "the current directory; name a folder or a location such as s3://bucket/exports/req-1")
    return text


def output_or_stdout(text: str) -> str:
    """``--out`` of a one-file text output: :func:`output_location`, or ``-`` for standard output."""
    return "-" if text.strip() == "-" else output_location(text)


def need_values(args: argparse.Namespace, what: str = "subject value") -> list[str]:
    """:func:`values`, refusing none at all (a lookup of nothing would print "(no rows)" as if it had looked)."""
    out = values(args)
    if not out:
        raise ConfigurationError(
            f"name at least one {what}: as arguments after the command's other arguments, or with --values-file "
            "FILE (one per line), or --values-file - to read them from standard input")
    return out


def tables(args: argparse.Namespace) -> list[str] | None:
    """``--tables a.b,c.d`` as a list; None when not given."""
    raw = getattr(args, "tables", None)
    # given but empty (`--tables "$TABLES"` with nothing in it) is refused by the verbs, never read as "every table"
    return None if raw is None else [t.strip() for t in raw.split(",") if t.strip()]


def add_subject_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("values", nargs="*", help="subject values (user ids, emails, ...)")
    p.add_argument("--values-file", help="file with one subject value per line ('-': standard input)")
    p.add_argument("--tables", help="comma-separated tables (default: every table declaring identity columns)")
    p.add_argument("--request-id", help="idempotency key: the same id again resumes the same request")
    add_allow_empty(p)


def add_allow_empty(p: argparse.ArgumentParser) -> None:
    p.add_argument("--allow-empty-subject", action="store_true",
                   help="accept an empty or whitespace-only subject value (it matches every row with an empty id)")


_AGE_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([wdhms])")
_AGE_UNITS = {"w": "weeks", "d": "days", "h": "hours", "m": "minutes", "s": "seconds"}
AGE_HELP = "an age: a number with a unit w/d/h/m/s, e.g. 7d, 12h, 30m, 1d12h"


def parse_age(text: str) -> timedelta:
    """``7d``, ``12h``, ``30m``, ``45s``, ``2w``, ``1d12h`` (or ``0``) as a timedelta (argparse ``type=``)."""
    s = text.strip().lower().replace(" ", "")
    if s == "0":
        return timedelta(0)
    parts = _AGE_PART.findall(s)
    if not parts or "".join(n + u for n, u in parts) != s:
        raise argparse.ArgumentTypeError(f"{text!r} is not an age; give {AGE_HELP}")
    try:
        return sum((timedelta(**{_AGE_UNITS[u]: float(n)}) for n, u in parts), timedelta(0))
    except OverflowError:
        raise argparse.ArgumentTypeError(f"{text!r} is too long an age (at most 999999999 days)") from None


def whole_number(text: str) -> int:
    """A whole number >= 0 (argparse ``type=``)."""
    try:
        n = int(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative; give a whole number >= 0")
    return n


def port_number(text: str) -> int:
    """A TCP port, 0-65535 (argparse ``type=``): a port out of range is a usage error, not a server that starts
    and then dies with a traceback."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port: give a number from 1 to 65535 (0: any free port)")
    return port


def parse_age_or_datetime(text: str) -> timedelta | datetime:
    """An age (see :func:`parse_age`), or (deprecated) an ISO 8601 datetime."""
    try:
        return parse_age(text)
    except argparse.ArgumentTypeError:
        try:
            return datetime.fromisoformat(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is neither an age nor an ISO datetime; give {AGE_HELP}") from None
