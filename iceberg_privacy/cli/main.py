"""iceberg-privacy: lookup indexes, subject rights, lineage and DP releases on Apache Iceberg tables.

Catalog options go before the command and apply to every command; commands that print data take --json;
ages are written 7d, 12h, 30m. Errors are one line on stderr with exit code 2 (--debug: the traceback);
with --json, stdout then holds {"error": ..., "error_type": ...}.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from typing import TYPE_CHECKING, NoReturn

from iceberg_privacy.cli._common import deprecated
from iceberg_privacy.errors import ConfigurationError, IcebergPrivacyError, blocked_request

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog

COMMAND_MODULES = ("demo", "index", "rights", "lineage", "dp", "service")
"""Modules of ``iceberg_privacy.cli``, each with ``register(subparsers)``; their commands are
``cmd_x(args, catalog) -> int``. (Imported when the parser is built, so that ``import iceberg_privacy.cli``
stays cheap and ``python -m iceberg_privacy.cli.dp`` finds its module not yet imported.)"""

CATALOG_OPTIONS = ("catalog_name", "property", "catalog_uri", "warehouse", "home")


class Parser(argparse.ArgumentParser):
    """argparse's parser, whose usage errors (a missing argument, an invalid choice, an age without a unit) also
    print ``{"error": ..., "error_type": "UsageError"}`` on stdout when the command line asks for ``--json``:
    a script parsing the output gets JSON for every failure, not an empty stream. (Subparsers are built with
    the parent's class, so every command's parser is one of these.)"""

    json_errors = False  # set by main() when --json is on the command line

    def error(self, message: str) -> NoReturn:
        if Parser.json_errors:
            print(json.dumps({"error": f"{self.prog}: {message}", "error_type": "UsageError"}, ensure_ascii=False))
        super().error(message)


def build_parser() -> argparse.ArgumentParser:
    """The one parser: global options, then every command group's ``register``."""
    p = Parser(prog="iceberg-privacy", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("catalog (every command)")
    g.add_argument("--catalog", "--catalog-name", dest="catalog_name", metavar="NAME",
                   help="catalog NAME from ~/.pyiceberg.yaml or PYICEBERG_CATALOG__NAME__* (as pyiceberg's "
                        "load_catalog); default: pyiceberg's default catalog if configured, else the embedded one")
    g.add_argument("-p", "--property", action="append", metavar="KEY=VALUE",
                   help="catalog/storage property merged over the configured ones (repeatable): type=rest, "
                        "uri=..., warehouse=s3://..., s3.endpoint=..., credential=...")
    g.add_argument("--catalog-uri", metavar="URI",
                   help="shorthand for --property uri=... (sqlite:///…, postgresql+psycopg2://…, http://rest)")
    g.add_argument("--warehouse", metavar="LOCATION", help="shorthand for --property warehouse=...")
    g.add_argument("--home", help="embedded catalog and secret directory (default $ICEBERG_PRIVACY_HOME or "
                                  "./.iceberg-privacy)")
    p.add_argument("--debug", action="store_true", help="show the traceback of errors")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("--version", action="version", version=_version())
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"iceberg_privacy.cli.{name}").register(sub)
    return p


def _version() -> str:
    """``iceberg-privacy X (pyiceberg Y, pyarrow Z)``: what a bug report needs first."""
    from importlib.metadata import PackageNotFoundError, version

    from iceberg_privacy.version import __version__

    def of(dist: str) -> str:
        try:
            return version(dist)
        except PackageNotFoundError:
            return "not installed"

    return f"iceberg-privacy {__version__} (pyiceberg {of('pyiceberg')}, pyarrow {of('pyarrow')})"


# ------------------------------------------------------------------------------------------ catalog
def catalog_properties(args: argparse.Namespace) -> dict[str, str]:
    """``--property key=value`` (repeatable) plus the ``--catalog-uri`` / ``--warehouse`` shorthands."""
    props: dict[str, str] = {}
    for item in getattr(args, "property", None) or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigurationError(f"--property {item!r} must look like key=value, e.g. s3.endpoint=http://...")
        props[key.strip()] = value
    if getattr(args, "catalog_uri", None):
        props["uri"] = args.catalog_uri
    if getattr(args, "warehouse", None):
        props["warehouse"] = args.warehouse
    return props


def apply_deprecated_catalog_options(args: argparse.Namespace) -> None:
    """Map the ``dp`` group's old catalog flags and environment variables onto the global options, with a
    deprecation note each (kept for one release)."""
    if getattr(args, "command", None) != "dp":
        return
    from iceberg_privacy.cli import dp

    for dest, (flag, option, new_flag) in dp.DEPRECATED_FLAGS.items():
        old = getattr(args, dest, None)
        if old is None:
            continue
        new = getattr(args, option, None)
        if new is not None and new != old:
            raise ConfigurationError(f"{flag} {old!r} contradicts {new_flag} {new!r}: give only {new_flag}")
        deprecated(f"dp {flag}: use the global option, iceberg-privacy {new_flag} ... dp ...")
        setattr(args, option, old)
    if any(getattr(args, o, None) for o in CATALOG_OPTIONS):
        return  # the command line names the catalog: the old variables do not override it
    for var, option in dp.DEPRECATED_ENV.items():
        if os.environ.get(var):
            flag = "--catalog" if option == "catalog_name" else "--" + option.replace("_", "-")
            deprecated(f"${var}: use {flag} (or pyiceberg's PYICEBERG_CATALOG__* configuration)")
            setattr(args, option, os.environ[var])


def resolve_catalog(args: argparse.Namespace) -> Catalog:
    """The catalog of this invocation: ``--catalog NAME`` from pyiceberg's configuration (~/.pyiceberg.yaml,
    PYICEBERG_CATALOG__NAME__KEY), ``--property``/``--catalog-uri``/``--warehouse`` merged over it; the
    embedded default when nothing is configured (``--home`` picks its directory)."""
    from iceberg_privacy.catalog import connect

    apply_deprecated_catalog_options(args)
    props = catalog_properties(args)
    if props or args.catalog_name:
        return connect(args.catalog_name, **props)
    return connect(home=args.home) if args.home else connect()


class OneLineFormatter(logging.Formatter):
    """Log records as one line each: an exception the library logs on its way (a request it could not mark blocked
    while the catalog was down) adds its type and first line, not a traceback, so the CLI's output keeps to one
    clear line per problem; ``--debug`` logs full tracebacks."""

    def format(self, record: logging.LogRecord) -> str:
        exc = record.exc_info[1] if record.exc_info else None
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        try:
            line = super().format(record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved
        if exc is not None:
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            line += f" ({type(exc).__name__}: {first})" if first else f" ({type(exc).__name__})"
        return " ".join(line.split("\n"))


# ------------------------------------------------------------------------------------------ running
def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; 0 on success, 2 on errors (usage errors exit 2 through argparse)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    Parser.json_errors = "--json" in argv[:argv.index("--")] if "--" in argv else "--json" in argv
    try:
        args = parse(build_parser(), argv)
    except KeyboardInterrupt:  # while the command modules are imported
        print("error: interrupted", file=sys.stderr)
        if Parser.json_errors:
            print(json.dumps({"error": "interrupted", "error_type": "KeyboardInterrupt"}))
        return 130
    finally:
        Parser.json_errors = False
    handler = logging.StreamHandler()
    fmt = "%(levelname)s %(name)s: %(message)s"
    handler.setFormatter(logging.Formatter(fmt) if args.debug else OneLineFormatter(fmt))
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, handlers=[handler])
    try:
        catalog = resolve_catalog(args) if args.needs_catalog else None
        return int(args.command_fn(args, catalog) or 0)
    except BrokenPipeError:  # `iceberg-privacy ... --json | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return 141  # as a shell reports a command ended by SIGPIPE
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        if getattr(args, "json", False):
            print(json.dumps({"error": "interrupted", "error_type": "KeyboardInterrupt"}))
        return 130
    except Exception as exc:  # noqa: BLE001 - one clear line per failure; --debug shows the traceback
        return report_failure(exc, debug=args.debug, as_json=getattr(args, "json", False))


def parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """``parser.parse_args(argv)``, except that values written after an option (``lookup T C --json ann``,
    ``erase --tables db.t ann --json bob``) still count as the command's values: argparse fills a ``values*``
    positional once, so it called them "unrecognized arguments"."""
    args, extra = parser.parse_known_args(argv)
    takes_values = isinstance(getattr(args, "values", None), list)
    if extra and takes_values and not any(e.startswith("-") for e in extra):
        args.values = [*args.values, *extra]
    elif extra:
        # a subject id such as '--foo' or '-x' reads as an option: say how to pass it, not only that it is unknown
        hint = ("; a value that starts with '-' goes after '--' at the end of the command line (e.g. "
                f"`iceberg-privacy {args.command} ... -- {extra[0]}`), or one per line in --values-file FILE "
                "('-': standard input)" if takes_values and any(e.startswith("-") for e in extra) else "")
        parser.error(f"unrecognized arguments: {' '.join(extra)}{hint}")
    return args


def report_failure(exc: BaseException, *, debug: bool = False, as_json: bool = False) -> int:
    """Print ``error: ...`` (one line) on stderr, after the traceback with ``debug``; return exit code 2.

    With ``as_json`` (the command's ``--json``) stdout also gets ``{"error": ..., "error_type": ...}``, so a
    script that parses the output gets valid JSON on failure too, not an empty stream."""
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    known = known_failure(exc)
    described = known if known is not None else f"{type(exc).__name__}: {_first_line(exc)}"
    line = " ".join(part.strip() for part in described.splitlines() if part.strip())
    blocked = blocked_request(exc)  # set by the journal when it recorded the request as blocked
    if blocked:
        line += (f" (request {blocked} is blocked: `iceberg-privacy requests show {blocked}` has the reason and "
                 "the next step)")
    if as_json:
        print(json.dumps({"error": line, "error_type": error_type(exc),
                          **({"request_id": blocked} if blocked else {})}, ensure_ascii=False))
    if known is None and not debug:  # a catalog's 401 or a missing file says what to do already
        line += " (run with --debug for the traceback)"
    print(f"error: {line}", file=sys.stderr)
    return 2


def error_type(exc: BaseException) -> str:
    """The ``error_type`` of ``--json`` output: the library's own class names for catalog and storage failures that
    reached the CLI as pyiceberg/requests/pyarrow exceptions (a command that loads its table before calling a verb),
    so a script sees ``CatalogError``/``StorageError`` whichever layer failed; other exceptions keep their name."""
    from iceberg_privacy._internal import compat
    from iceberg_privacy.storage import catalog_failure

    if isinstance(exc, IcebergPrivacyError):
        return type(exc).__name__
    if catalog_failure(exc) is not None or type(exc).__module__.startswith(("requests", "urllib3")):
        return "CatalogError"
    if compat.is_fileio_setup_error(exc):
        return "ConfigurationError"
    if isinstance(exc, OSError):
        return "StorageError"
    return type(exc).__name__


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def known_failure(exc: BaseException) -> str | None:
    """The one line for an error the library recognises (its own messages as they are, catalog and storage errors
    named); None for an unexpected one, the only kind whose line asks for ``--debug``'s traceback."""
    if isinstance(exc, IcebergPrivacyError):
        return str(exc)
    from pyiceberg import exceptions as pe

    first = _first_line(exc)
    if isinstance(exc, (pe.NoSuchTableError, pe.NoSuchNamespaceError)):
        return (f"not found in the catalog: {first}; check the name (namespace.table) and the catalog (--catalog NAME, "
                "~/.pyiceberg.yaml; without them the embedded one in --home / $ICEBERG_PRIVACY_HOME / ./.iceberg-privacy)")
    if isinstance(exc, ValueError) and "namespace identifier" in first.lower():  # pyiceberg, on 't' or 'a..b'
        return f"{first}: name a table as namespace.table (every part non-empty)"
    from iceberg_privacy._internal import compat
    from iceberg_privacy.storage import catalog_failure

    if (message := catalog_failure(exc)) is not None:
        return message
    if compat.is_fileio_setup_error(exc):
        return (f"the catalog's storage properties are invalid ({type(exc).__name__}: {first}): fix the property "
                "(s3.*, gcs.*, adls.*, py-io-impl, ...) in ~/.pyiceberg.yaml or with --property KEY=VALUE")
    if type(exc).__module__.startswith("pyiceberg.exceptions"):
        return f"the catalog refused: {type(exc).__name__}: {first}"
    if type(exc).__module__.startswith("sqlalchemy"):
        return f"the SQL catalog failed: {type(exc).__name__}: {first}"
    if "requests" in type(exc).__module__ or "urllib3" in type(exc).__module__:
        return f"the catalog service did not answer: {first}"
    if isinstance(exc, OSError):
        from iceberg_privacy.storage import action_in, describe_error, location_in

        return describe_error(location_in(exc), exc, action_in(exc))
    return None


if __name__ == "__main__":
    raise SystemExit(main())
