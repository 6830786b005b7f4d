"""The query service's commands: ``serve`` (run it) and ``tokens issue|revoke|list`` (the admin's side).

The service gets the catalog of the global options (``--catalog NAME`` from ``~/.pyiceberg.yaml``,
``--property`` ...), so only the process running ``serve`` needs the catalog's credentials; analysts get
bearer tokens printed once by ``tokens issue``.
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING, Any

from iceberg_privacy.cli._common import AGE_HELP, add_command, emit, parse_age, port_number, print_json

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog


def _admin() -> str | None:
    return os.environ.get("ICEBERG_PRIVACY_PRINCIPAL")


def cmd_serve(args: argparse.Namespace, catalog: Catalog) -> int:
    from iceberg_privacy.service.server import listen, serve

    sock = listen(args.host, args.port)  # a port in use is an error before the service is announced
    host = f"[{args.host}]" if ":" in args.host else args.host
    url = f"http://{host}:{sock.getsockname()[1]}"
    emit(args, {"url": url, "openapi": f"{url}/openapi.json", "page": f"{url}/"},
         f"serving catalog {catalog.name!r} at {url} (OpenAPI {url}/openapi.json, analyst page {url}/)")
    serve(catalog, log_level=args.log_level, sock=sock)
    return 0


def cmd_tokens_issue(args: argparse.Namespace, catalog: Catalog) -> int:
    from iceberg_privacy.service.tokens import issue_token

    emit(args, issue_token(catalog, args.principal, expires=args.expires, issued_by=_admin()))
    return 0


def cmd_tokens_revoke(args: argparse.Namespace, catalog: Catalog) -> int:
    from iceberg_privacy.service.tokens import revoke_token

    record = revoke_token(catalog, args.token_id, revoked_by=_admin())
    emit(args, record, f"revoked {record}")
    return 0


def cmd_tokens_list(args: argparse.Namespace, catalog: Catalog) -> int:
    from iceberg_privacy.service.tokens import list_tokens

    records = list_tokens(catalog)
    if args.json:
        print_json(records)
    else:
        print("\n".join(str(r) for r in records) if records else "no tokens issued")
    return 0


def register(subparsers: Any) -> None:
    s = add_command(subparsers, "serve", cmd_serve, json=True,
                    help="run the DP query service (HTTP, OpenAPI at /openapi.json, analyst page at /)")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    s.add_argument("--port", type=port_number, default=8765, help="port (default 8765)")
    s.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])

    tokens = subparsers.add_parser("tokens", help="issue, revoke and list the service's bearer tokens")
    sub = tokens.add_subparsers(dest="tokens_command", required=True, metavar="ACTION")
    issue = add_command(sub, "issue", cmd_tokens_issue, json=True,
                        help="issue a token for a principal (the token is printed once; only its hash is kept)")
    issue.add_argument("--principal", required=True, help="who the token speaks for (budgets are per principal)")
    issue.add_argument("--expires", type=parse_age, default=None, metavar="AGE",
                       help=f"valid for this long (default: until revoked); {AGE_HELP}")
    revoke = add_command(sub, "revoke", cmd_tokens_revoke, json=True, help="revoke a token by its id")
    revoke.add_argument("token_id", help="the id `tokens list` shows (or the whole token)")
    add_command(sub, "list", cmd_tokens_list, json=True, help="list tokens: id, principal, status, expiry")
