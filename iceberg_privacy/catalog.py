"""Catalog connection: the embedded default (SQLite + local warehouse) or any pyiceberg catalog."""

from __future__ import annotations

import difflib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyiceberg.catalog import Catalog, load_catalog
from pyiceberg.catalog.rest import RestCatalog
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.exceptions import (
    AuthorizationExpiredError,
    BadRequestError,
    ForbiddenError,
    NamespaceAlreadyExistsError,
    NoSuchNamespaceError,
    NoSuchTableError,
    NotInstalledError,
    OAuthError,
    RESTError,
    ServerError,
    ServiceUnavailableError,
    TableAlreadyExistsError,
    UnauthorizedError,
)
from pyiceberg.schema import Schema
from pyiceberg.table import Table

from iceberg_privacy._internal import compat, rest
from iceberg_privacy._internal.arguments import check_home
from iceberg_privacy._internal.catalog_properties import nest_auth, value_of
from iceberg_privacy._internal.rest import (  # noqa: F401 - re-exported: the catalog properties' home
    REST_CONNECT_TIMEOUT_PROPERTY,
    REST_READ_TIMEOUT_PROPERTY,
    REST_TIMEOUT_DEFAULTS_MS,
)
from iceberg_privacy.errors import CatalogError, ConfigurationError, IcebergPrivacyError
from iceberg_privacy.storage import WRITABLE_FORMAT_VERSIONS, catalog_failure, unwritable_format_message

# What a catalog answers when it refuses (naming rules, permissions, server trouble), as opposed to
# "not found" / "already exists", which callers handle.
_CATALOG_REFUSALS = (BadRequestError, ForbiddenError, UnauthorizedError, ServerError, ServiceUnavailableError,
                     OAuthError, AuthorizationExpiredError, RESTError)

HOME_ENV = "ICEBERG_PRIVACY_HOME"
DEFAULT_HOME = ".iceberg-privacy"

# Table properties marking the library's own tables: bookkeeping (journal, forget lists, DP ledger) and
# DP release outputs. They never hold subjects of requests; bookkeeping is not data that flows anywhere.


def default_home() -> Path:
    """Where the embedded catalog lives: $ICEBERG_PRIVACY_HOME, else ./.iceberg-privacy."""
    return Path(os.environ.get(HOME_ENV, DEFAULT_HOME)).expanduser().resolve()


def _pyiceberg_config() -> tuple[dict[str, dict[str, Any]], str, dict[str, Any]]:
    """(catalogs, default catalog name, entries that are not a mapping of properties) of pyiceberg's configuration
    (``$PYICEBERG_HOME``, ``~``, the working directory's ``.pyiceberg.yaml`` and ``PYICEBERG_CATALOG__<NAME>__<KEY>``
    variables), read afresh on every call (pyiceberg's own copy is read once, at import)."""
    from iceberg_privacy._internal.pyiceberg_config import check

    config = check()  # read once; edited since the import? one clear error naming the file
    section = config.config.get("catalog") or {}
    section = section if isinstance(section, dict) else {}
    catalogs = {str(k): dict(v) for k, v in section.items() if isinstance(v, dict)}
    malformed = {str(k): v for k, v in section.items() if not isinstance(v, dict)}
    return catalogs, config.get_default_catalog_name(), malformed


def _unconfigured(name: str, configured: dict[str, dict[str, Any]], malformed: dict[str, Any], *,
                  from_default: bool) -> ConfigurationError:
    """The error for catalog ``name`` that pyiceberg's configuration does not define: what is wrong with its entry
    when it has one that is no mapping (its properties not indented under it), the ``default-catalog`` key when that
    is what named it, and the names that are configured."""
    from iceberg_privacy._internal.pyiceberg_config import config_file

    where = config_file() or "~/.pyiceberg.yaml"
    known = ", ".join(sorted(configured)) or "none"
    entry = malformed.get(name.lower(), malformed.get(name, ...))
    if entry is not ...:
        # pyiceberg reads PYICEBERG_CATALOG__LAKE=x as catalog 'lake' with the value 'x', over the file's entry
        var = next((k for k in os.environ if k.lower() == "pyiceberg_catalog__" + name.lower().replace("-", "_")), None)
        if var is not None:
            return ConfigurationError(
                f"catalog {name!r} is set by the environment variable {var} to {entry!r}, not to properties "
                f"(configured: {known}): unset {var} and give each property its own variable ({var}__URI=..., "
                f"{var}__WAREHOUSE=...), or define the catalog in {where}")
        return ConfigurationError(
            f"catalog {name!r} in {where} has no properties: its entry is {entry!r}, not a mapping (configured: "
            f"{known}). Indent its properties under it, e.g. 'catalog:' then '  {name}:' then '    uri: ...' and "
            "'    warehouse: ...' (two more spaces than the name)")
    if from_default:
        return ConfigurationError(
            f"pyiceberg's default-catalog (in {where} or $PYICEBERG_DEFAULT_CATALOG) names catalog {name!r}, which "
            f"is not configured (configured: {known}): correct default-catalog, define {name!r} under catalog:, or "
            "name a configured catalog (ip.connect(name), --catalog NAME)")
    # pyiceberg reads PYICEBERG_CATALOG__MY_LAKE__URI as catalog 'my-lake' ('_' becomes '-'); a name with
    # other characters ('.', a space, ...) cannot be spelled as a shell variable, only in the file
    env = (f" or with PYICEBERG_CATALOG__{name.upper().replace('-', '_')}__URI=..."
           if re.fullmatch(r"[A-Za-z0-9-]+", name) else "")
    close = difflib.get_close_matches(name.lower(), sorted(configured), n=1, cutoff=0.6)
    if close:  # a typo (--catalog lakee) or pyiceberg's '_' -> '-' (PYICEBERG_CATALOG__MY_LAKE__* is 'my-lake')
        known += f"; did you mean {close[0]!r}?"
    return ConfigurationError(
        f"no catalog named {name!r} is configured (configured: {known}). Define it in ~/.pyiceberg.yaml "
        f"under catalog: {name}: (uri, warehouse, type, s3.* ...){env}; or leave the name out "
        "(ip.connect(), or no --catalog) for the embedded default"
    )


def _normalise(properties: dict[str, Any]) -> dict[str, Any]:
    """Keyword properties to pyiceberg keys: ``s3_endpoint=`` means ``s3.endpoint``, ``py_io_impl=``
    ``py-io-impl``; keys already spelled with '.' or '-' (``**{"s3.endpoint": ...}``) are kept. Values become
    strings, except a mapping (``auth={...}``), which pyiceberg reads as one."""
    out: dict[str, Any] = {}
    for k, v in properties.items():
        if v is None:
            continue
        key = k
        if "." not in k and "-" not in k:
            key = k.replace("_", "-")
            for prefix in ("s3-", "gcs-", "adls-", "oss-", "hdfs-", "rest-"):
                if key.startswith(prefix):
                    key = prefix[:-1] + "." + key[len(prefix):]
        out[key] = value_of(v)
    return out


_USERINFO_PASSWORD = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^/@:?#]*):[^/?#]*@")
_QUERY_SECRET = re.compile(r"(?i)([?&](?:password|passwd|pwd|sslpassword|token|secret|credential)=)[^&#]*")


def shown_uri(uri: str) -> str:
    """``uri`` fit for a message or a log: the password of ``scheme://user:password@host`` (a PostgreSQL catalog's
    database uri, a REST uri with basic auth) and of ``?password=...`` replaced by ``***``."""
    return _QUERY_SECRET.sub(r"\1***", _USERINFO_PASSWORD.sub(r"\1:***@", uri))


_URI_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:")
"""A URI's scheme (``s3:``, ``file:``, ``abfss:``): such a warehouse is left as given (``file:/tmp/wh`` is absolute)."""


def connect(name: str | None = None, *, home: str | os.PathLike[str] | None = None, **properties: Any) -> Catalog:
    """Return a pyiceberg catalog, configured the way pyiceberg users already have it.

    * ``connect("lake")`` loads catalog ``lake`` from pyiceberg's configuration (``~/.pyiceberg.yaml``,
      ``$PYICEBERG_HOME``, ``PYICEBERG_CATALOG__LAKE__URI=...``) exactly as ``pyiceberg.catalog.load_catalog``
      does; keyword properties (``uri=``, ``warehouse=``, ``type=``, ``**{"s3.endpoint": ...}``) are merged
      over it. A ``uri`` starting with ``sqlite:`` or ``postgresql`` without a ``type`` makes a SqlCatalog.
    * ``connect()`` with nothing configured, or ``connect(home=...)``: the embedded default, a SqlCatalog on
      SQLite at ``<home>/catalog.db`` with its warehouse in ``<home>/warehouse`` (``home`` defaults to
      :func:`default_home`). ``connect("name", home=...)`` is an embedded catalog called ``name``, for a
      name that is *not* configured.
    A name that is not configured (and no properties) is an error listing the configured names. ``home``
    with a configured name or with properties is an error too: ``home`` only ever locates an embedded
    catalog, so honouring either would silently connect to a different catalog than the one asked for
    (the secret of a configured catalog is found through ``home=`` of the rights verbs, or
    ``$ICEBERG_PRIVACY_HOME``).
    """
    if name is not None and not isinstance(name, str):
        raise ConfigurationError(f"connect() takes a catalog name (a str, as in ~/.pyiceberg.yaml), got {name!r}")
    check_home(home, "connect")
    configured, default_name, malformed = _pyiceberg_config()
    from_default = name is None and home is None and default_name != "default"
    if name is None and home is None:
        name = default_name
    named = bool(name)
    name = name or "default"
    conf = {str(k): value_of(v) for k, v in configured.get(name.lower(), configured.get(name, {})).items()}
    if home is not None and not named:
        conf = {}  # connect(home=...): the embedded catalog, even when a catalog called "default" is configured
    given = _normalise(properties)
    if home is not None and (conf or given):
        what = (f"catalog {name!r} is configured in pyiceberg's configuration" if conf else
                f"catalog properties ({', '.join(sorted(given))}) name another catalog")
        raise ConfigurationError(
            f"connect(home=...) locates the embedded catalog, but {what}: use one or the other. For the "
            f"configured catalog call connect({name!r}{', ...' if given else ''}) without home= (its secret "
            "is read from $ICEBERG_PRIVACY_SECRET, or from the home given to access/erase/purge (home=) or "
            f"${HOME_ENV}); for an embedded catalog call connect(home=...) without "
            f"{'properties' if given else 'a configured name'}"
        )
    props = nest_auth({**conf, **given})
    if not props:
        if (name != "default" or name.lower() in malformed) and home is None:
            raise _unconfigured(name, configured, malformed, from_default=from_default)
        root = Path(home).expanduser().resolve() if home is not None else default_home()
        return _embedded(name, root)
    warehouse = props.get("warehouse", "")
    if warehouse and not _URI_SCHEME.match(warehouse) and not os.path.isabs(os.path.expanduser(warehouse)) \
            and not _is_rest(props):
        # pyiceberg would store table locations relative to the working directory, in the table metadata:
        # the table could then be read only from this directory, and another directory would see other files.
        # Not for a REST catalog: its warehouse is sent to the service, which decides the locations, and for
        # Polaris, Lakekeeper, Unity or Tabular it is the warehouse's (catalog's) name, not a path
        props["warehouse"] = os.path.abspath(os.path.expanduser(warehouse))
    uri = props.get("uri", "")
    if "type" not in props and "py-catalog-impl" not in props and (uri.startswith("sqlite:") or uri.startswith("postgresql")):
        props["type"] = "sql"
    timeouts = rest.timeouts(props)
    try:
        with compat.rest_construction_timeouts(*timeouts):  # a REST catalog asks its service while it is built
            catalog = load_catalog(name, **props)
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(
            f"catalog {name!r} could not be loaded from the properties {sorted(props)}: {exc}. Fix its entry in "
            "~/.pyiceberg.yaml (or $PYICEBERG_HOME/.pyiceberg.yaml), or give the property explicitly: "
            "ip.connect(name, uri=...), or on the command line --property KEY=VALUE / --catalog-uri / --warehouse"
        ) from exc
    except NotInstalledError as exc:  # pyiceberg's message names the extra to install
        raise ConfigurationError(f"catalog {name!r} (type {props.get('type') or 'from its uri'}) needs a package "
                                 f"that is not installed: {exc}") from exc
    except _CATALOG_REFUSALS as exc:
        raise CatalogError(f"catalog {name!r} at {shown_uri(uri) or '?'} refused the connection: {exc}. Check its uri and "
                           "credential/token properties") from exc
    except Exception as exc:
        module = type(exc).__module__
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if module.startswith(("requests", "urllib3")):  # a REST catalog that is down or unreachable
            raise CatalogError(f"catalog {name!r} at {shown_uri(uri) or '?'} did not answer ({type(exc).__name__}: {first}); "
                               "check its uri and that the service is running") from exc
        if module.startswith("sqlalchemy"):  # a SQL catalog whose database cannot be opened
            raise CatalogError(f"catalog {name!r} could not open its database {shown_uri(uri) or '?'} ({type(exc).__name__}: "
                               f"{first}); check the uri (does the directory exist, may this user write it?)") from exc
        raise
    compat.set_rest_timeouts(catalog, *timeouts)
    return catalog


def _is_rest(props: dict[str, str]) -> bool:
    """Will ``load_catalog`` make a REST catalog of ``props``: ``type: rest``, or no type and an http(s) uri (as
    pyiceberg infers it)?"""
    kind = props.get("type", "").strip().lower()
    if kind or "py-catalog-impl" in props:
        return kind == "rest"
    return props.get("uri", "").strip().lower().startswith(("http://", "https://"))


def _embedded(name: str, root: Path) -> SqlCatalog:
    """The embedded catalog in ``root``: ``catalog.db`` and ``warehouse/``, both inside ``root`` whatever its name.

    The SQLite URL is built by SQLAlchemy, which escapes what its URL parser would otherwise read as a query
    (``?``), a fragment (``#``) or an escape (``%``). The warehouse is a ``file://`` URI *without*
    percent-encoding: pyiceberg uses the path of a location literally, so ``Path.as_uri()``'s ``my%20home``
    would put every data file in a sibling directory literally named ``my%20home`` (outside the home, where
    deleting the home would not delete the personal data). pyiceberg cuts locations at ``#`` and ``?``
    (``urlparse``), so a home containing them is refused before anything is created.
    """
    from sqlalchemy.engine import URL

    if "#" in str(root) or "?" in str(root):
        raise ConfigurationError(
            f"the embedded catalog's home {str(root)!r} contains '#' or '?', which pyiceberg cuts off file "
            "locations at (its data would land in another directory): choose a home without them (--home, "
            f"${HOME_ENV} or connect(home=...))"
        )
    # The embedded catalog is local by definition: its SQLite file needs the home directory. The warehouse
    # below it is created by the tables' FileIO on the first write, like any other warehouse.
    if root.exists() and not root.is_dir():
        raise ConfigurationError(f"the embedded catalog's home {str(root)!r} is a file, not a directory: choose a "
                                 f"directory (--home, ${HOME_ENV} or connect(home=...))")
    root.mkdir(parents=True, exist_ok=True)
    uri = URL.create("sqlite", database=str(root / "catalog.db")).render_as_string(hide_password=False)
    return SqlCatalog(name, uri=uri, warehouse="file://" + (root / "warehouse").as_posix())


def catalog_home(catalog: Catalog) -> Path | None:
    """The home of an embedded catalog (``sqlite:///<home>/catalog.db``), where its secret file lives;
    None for any other catalog."""
    uri = str(getattr(catalog, "properties", {}).get("uri", ""))
    if not uri.startswith("sqlite:///"):
        return None
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        database = make_url(uri).database or ""  # undoes the escapes _embedded's URL has for '%', '#', '?'
    except ArgumentError:
        return None
    if database.endswith("/catalog.db"):
        return Path(database).parent
    return None


REBASE_RETRIES = "commit.retry.num-retries"

# ---------------------------------------------------------------------------- the library's own names
# REST catalogs (and Glue, S3 Tables) accept only names that start with a letter or digit, so the
# library's own namespace and tables do too. Each can be renamed with a catalog property (in
# ~/.pyiceberg.yaml next to uri/warehouse); the old underscore names are migrated on first use.
JOURNAL_NAMESPACE_PROPERTY = "iceberg-privacy.journal-namespace"
FORGET_TABLE_PROPERTY = "iceberg-privacy.forget-table"
LEDGER_TABLE_PROPERTY = "iceberg-privacy.ledger-table"
LIBRARY_NAME_DEFAULTS = {
    JOURNAL_NAMESPACE_PROPERTY: "privacy_requests",
    FORGET_TABLE_PROPERTY: "privacy_forget",
    LEDGER_TABLE_PROPERTY: "privacy_dp_ledger",
}
LEGACY_NAMES = {
    JOURNAL_NAMESPACE_PROPERTY: "_privacy",
    FORGET_TABLE_PROPERTY: "_privacy_forget",
    LEDGER_TABLE_PROPERTY: "_dp_ledger",
}
_NAME_RULE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_]{0,127}")


def library_name(catalog: Catalog | None, prop: str) -> str:
    """The configured name of one of the library's own namespaces/tables (``iceberg-privacy.*`` catalog
    property), else its default. Names must start with a letter or digit (every catalog accepts those)."""
    props = getattr(catalog, "properties", None) or {}
    name = str(props.get(prop) or LIBRARY_NAME_DEFAULTS[prop])
    if not _NAME_RULE.fullmatch(name):
        raise ConfigurationError(
            f"catalog property {prop}={name!r} is not a name every catalog accepts: use letters, digits and "
            "underscores, starting with a letter or digit (REST, Glue and S3 Tables catalogs refuse others)"
        )
    return name


def catalog_refused(catalog: Catalog, action: str, identifier: tuple[str, ...], exc: BaseException) -> CatalogError:
    """A catalog error other than not-found/already-exists, as one message naming the rule that was hit."""
    name = getattr(catalog, "name", "?")
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if not isinstance(exc, (BadRequestError, ForbiddenError)) and (failure := catalog_failure(exc)) is not None:
        # the service failing or the credentials refused: not a naming rule, renaming tables would not help
        return CatalogError(f"catalog {name!r} could not {action} {'.'.join(identifier)}: {failure}")
    return CatalogError(
        f"catalog {name!r} refused to {action} {'.'.join(identifier)}: {text}. If that is a naming rule, set the "
        f"catalog properties {', '.join(LIBRARY_NAME_DEFAULTS)} to names it accepts; if it is a permission, grant "
        "the library's principal create/write on that namespace"
    )


def _migrate_legacy(catalog: Catalog, legacy: tuple[str, ...], identifier: tuple[str, ...], marker: str) -> bool:
    """Rename a library table from its old underscore name to ``identifier``; True when one was moved.

    Only a table carrying the library's marker is moved. A concurrent migrator may win: then the
    caller finds the table under the new name."""
    try:
        old = catalog.load_table(legacy)
    except (NoSuchTableError, NoSuchNamespaceError):
        return False
    except Exception:  # noqa: BLE001 - a catalog that refuses the old name cannot hold it
        return False
    if old.properties.get(marker) != "1":
        return False
    ensure_namespace_exists(catalog, identifier[:-1])
    try:
        catalog.rename_table(legacy, identifier)
    except (NoSuchTableError, TableAlreadyExistsError):
        return False  # someone else migrated it (or created the new one) first
    except NotImplementedError as exc:
        raise CatalogError(
            f"{'.'.join(legacy)} must be renamed to {'.'.join(identifier)}, and this catalog cannot rename tables: "
            "rename it with the catalog's own tools"
        ) from exc
    if legacy[:-1] != identifier[:-1]:
        try:  # the old namespace (``_privacy``) only ever held library tables
            if not catalog.list_tables(legacy[:-1]):
                catalog.drop_namespace(legacy[:-1])
        except Exception:  # noqa: BLE001 - an empty leftover namespace is harmless
            pass
    return True


def ensure_namespace_exists(catalog: Catalog, namespace: tuple[str, ...] | str) -> bool:
    """Create ``namespace`` unless it exists; two processes creating it at once both succeed. True when this
    call created it.

    pyiceberg's SQL catalog checks, then inserts: the loser of a race gets the database's unique-constraint
    error (not ``NamespaceAlreadyExistsError``). Any failure after which the namespace exists is that race.
    """
    try:
        catalog.create_namespace(namespace)
        return True
    except NamespaceAlreadyExistsError:
        return False
    except Exception:
        try:
            if catalog.namespace_exists(namespace):
                return False  # a concurrent creator won
        except Exception:  # noqa: BLE001 - the creation's own error is the one to show
            pass
        raise


def drop_namespace_if_empty(catalog: Catalog, namespace: tuple[str, ...]) -> None:
    """Drop ``namespace``, which this process created for a table it then failed to create or fill: a failed
    ``ingest --create`` or ``derive`` leaves nothing behind, and running it again behaves the same. Kept when
    anything is in it by now (another process's table or namespace); a drop the catalog refuses is logged."""
    from pyiceberg.exceptions import NamespaceNotEmptyError

    try:
        if catalog.list_tables(namespace) or catalog.list_namespaces(namespace):
            return
        catalog.drop_namespace(namespace)
    except (NamespaceNotEmptyError, NoSuchNamespaceError):
        return
    except Exception as exc:  # noqa: BLE001 - the failure that brought us here is the error to raise
        logging.getLogger(__name__).warning("could not drop the empty namespace %s created for a table that was not created: %s",
                       ".".join(namespace), exc)


def create_table_with_namespace(catalog: Catalog, ident: tuple[str, ...], schema: Any) -> tuple[Table, bool, bool]:
    """``(table, created, namespace_created)``: ``ident`` created with ``schema`` (its namespace too when missing),
    or loaded when a concurrent process created it first. When the catalog refuses the table (a type Iceberg has
    no match for, no warehouse to place it in), a namespace created here is dropped again before the error
    propagates. Another process dropping the new namespace in between (its own failed create) is retried once."""
    namespace_created = False
    for attempt in range(2):
        if len(ident) > 1:
            namespace_created = ensure_namespace_exists(catalog, ident[:-1]) or namespace_created
        try:
            return catalog.create_table(ident, schema=schema), True, namespace_created
        except TableAlreadyExistsError:
            return catalog.load_table(ident), False, namespace_created
        except NoSuchNamespaceError:
            if attempt:
                raise
        except BaseException:
            if namespace_created:
                drop_namespace_if_empty(catalog, ident[:-1])
            raise
    raise AssertionError("unreachable")  # pragma: no cover


def table_creation_error(exc: BaseException, name: str, what: str) -> IcebergPrivacyError | None:
    """The error to raise when ``create_table(name, schema=...)`` failed with ``exc``, or None when it is not one
    the library can explain: a catalog without a warehouse (pyiceberg's "No default path"), or a column type
    Iceberg has no match for (``what`` names where the schema came from and how to change it)."""
    from pyiceberg.io.pyarrow import UnsupportedPyArrowTypeException

    if isinstance(exc, IcebergPrivacyError):
        return None  # says what to do already
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if isinstance(exc, ValueError) and "default path" in first.lower():
        return ConfigurationError(
            f"cannot create {name}: the catalog has no warehouse to place new tables in ({first}); set the catalog "
            "property warehouse= (in ~/.pyiceberg.yaml, or --warehouse LOCATION on the command line), or create the "
            "table yourself with a location")
    if isinstance(exc, (ValueError, TypeError, UnsupportedPyArrowTypeException)):
        from iceberg_privacy.errors import SchemaMismatchError

        return SchemaMismatchError(f"cannot create {name}: a column has a type Iceberg cannot store ({first}); {what}")
    return None


def _delete_lost_create(table: Table) -> None:
    """Delete the first ``metadata.json`` a lost ``create_table`` left in the winner's metadata folder.

    pyiceberg's SQL catalog writes a new table's first metadata file, then inserts the catalog row; the loser of two
    processes creating one of the library's tables at once gets ``TableAlreadyExistsError`` and its file stays at
    the same location. It carries another table-uuid, so every later orphan sweep of the table (the history upkeep
    of the journal, the queue, the ledger) took it for another table sharing the location and deleted nothing
    there, for good (for the queue: ciphertext of killed writers). Only ``00000-*`` files of another uuid with no
    snapshot, that the winner's metadata does not reference, are deleted: what a lost create writes."""
    import json

    from iceberg_privacy.storage import canonical, delete_files, list_files

    folder = f"{table.location().rstrip('/')}/metadata"
    known = {canonical(e.metadata_file) for e in table.metadata.metadata_log} | {canonical(table.metadata_location)}
    lost = []
    try:
        for f in list_files(table.io, folder):
            name = f.location.rsplit("/", 1)[-1]
            if not (name.startswith("00000-") and name.endswith(".metadata.json")) or canonical(f.location) in known:
                continue
            with table.io.new_input(f.location).open() as fh:
                md = json.loads(fh.read())
            if str(md.get("table-uuid", "")).lower() != str(table.metadata.table_uuid).lower() and not md.get("snapshots"):
                lost.append(f.location)
    except Exception:  # noqa: BLE001 - a leftover only disables the orphan sweep; the table itself is fine
        return
    for where, why in delete_files(table.io, lost).failed.items():
        logging.getLogger(__name__).warning("could not delete %s, left by a lost create of %s (%s): delete it, or the "
                                            "table's orphan sweep keeps taking it for another table", where,
                                            table_name(table), why)


def reserved_table(
    catalog: Catalog, identifier: tuple[str, ...], *, schema: Schema, marker: str, what: str,
    error: type[Exception], create: bool, compare_and_swap: bool, properties: dict[str, str] | None = None,
    legacy: tuple[str, ...] | None = None,
) -> Table | None:
    """Load one of the library's own tables (ledger, journal, forget list), creating it if asked.

    The table is recognised by the property ``marker=1``; a foreign table under the reserved name
    raises ``error``. With ``compare_and_swap`` pyiceberg's rebase-retry is kept off
    (``commit.retry.num-retries=0``): a rebased append would replay a decision made on a stale read,
    so those tables retry by re-reading instead, and a re-enabled retry is switched off again.
    ``legacy`` is the table's old name: found there (with the marker), it is renamed to ``identifier``.
    Catalog errors other than not-found raise :class:`CatalogError` naming the rule that was hit.
    """
    try:
        try:
            table = catalog.load_table(identifier)
        except (NoSuchTableError, NoSuchNamespaceError):
            if legacy is not None and legacy != identifier and _migrate_legacy(catalog, legacy, identifier, marker):
                table = catalog.load_table(identifier)
            elif not create:
                if legacy is None or not catalog.table_exists(identifier):
                    return None
                table = catalog.load_table(identifier)  # a concurrent migrator moved it meanwhile
            else:
                ensure_namespace_exists(catalog, identifier[:-1])
                props = {marker: "1", **({REBASE_RETRIES: "0"} if compare_and_swap else {}), **(properties or {})}
                try:
                    table = catalog.create_table(identifier, schema=schema, properties=props)
                except TableAlreadyExistsError:  # a concurrent creator won: use theirs
                    table = catalog.load_table(identifier)
                    _delete_lost_create(table)
    except (NoSuchTableError, NoSuchNamespaceError, IcebergPrivacyError):
        raise
    except _CATALOG_REFUSALS as exc:
        raise catalog_refused(catalog, "load or create", identifier, exc) from exc
    if table.properties.get(marker) != "1":
        raise error(
            f"{'.'.join(identifier)} exists but is not {what}; rename that table, the name is reserved for {what}"
        )
    if compare_and_swap and table.properties.get(REBASE_RETRIES) != "0":
        table.transaction().set_properties({REBASE_RETRIES: "0"}).commit_transaction()
        table = catalog.load_table(identifier)
    return table


def all_namespaces(catalog: Catalog, parent: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every namespace, nested ones included (catalogs without nesting just have none)."""
    out: list[tuple[str, ...]] = []
    for ns in catalog.list_namespaces(parent) if parent else catalog.list_namespaces():
        ns = tuple(ns)
        if ns == parent or ns in out:  # some catalogs list the parent itself
            continue
        out.append(ns)
        try:
            out += [n for n in all_namespaces(catalog, ns) if n not in out]
        except (NoSuchNamespaceError, NotImplementedError):
            pass
    return out


def all_tables(catalog: Catalog) -> list[tuple[str, ...]]:
    """Every table identifier of the catalog, sorted."""
    return sorted(tuple(t) for ns in all_namespaces(catalog) for t in catalog.list_tables(ns))


def load_many(catalog: Catalog, identifiers: list[tuple[str, ...]], *, workers: int | None = None
              ) -> list[Table | Exception]:
    """Load ``identifiers`` concurrently, in their order: each a ``Table`` or the exception its load raised
    (the caller decides: a lake-wide erasure skips a table dropped meanwhile and fails on a broken one; the
    lineage graph reports it). A REST or Glue catalog answers one table per round trip, so a lake of
    thousands of tables loaded one by one costs a round trip each."""
    from concurrent.futures import ThreadPoolExecutor

    def load(ident: tuple[str, ...]) -> Table | Exception:
        try:
            return usable(catalog.load_table(ident))
        except Exception as exc:  # noqa: BLE001 - returned to the caller, which decides
            return exc

    if len(identifiers) <= 1:
        results = [load(i) for i in identifiers]
    else:
        with ThreadPoolExecutor(max_workers=workers or min(8, (os.cpu_count() or 1) * 2),
                                thread_name_prefix="ip-load") as pool:
            results = list(pool.map(load, identifiers))
    return _confirm_dropped(catalog, identifiers, results)


def existing_tables(catalog: Catalog, names: list[str]) -> list[Table]:
    """The tables of ``names`` (``"ns.table"``) that still exist, loaded through :func:`load_many`.

    Instead of ``[load_table(n) for n in names if table_exists(n)]``, which raised pyiceberg's raw
    ``NoSuchTableError`` for a table another process dropped between the check and the load, and took a REST
    catalog's 404 from a gateway for a dropped table (silently leaving a live table out of a request). Here a
    table is left out only when the catalog's listing confirms it is gone; any other failure is raised."""
    out: list[Table] = []
    for result in load_many(catalog, [tuple(n.split(".")) for n in names]):
        if isinstance(result, (NoSuchTableError, NoSuchNamespaceError)):
            continue
        if isinstance(result, Exception):
            raise result
        out.append(result)
    return out


def _confirm_dropped(catalog: Catalog, identifiers: list[tuple[str, ...]], results: list[Table | Exception]
                     ) -> list[Table | Exception]:
    """Keep a load's ``NoSuchTableError`` only when the catalog's listing agrees that the table is gone.

    Callers take that error for "dropped since it was listed" and skip the table (a lake-wide erasure: "it holds
    nobody any more"). A REST catalog answers every 404 of a load that way, including one from a gateway or a
    half-deployed service while the table is still there; a table the namespace still lists is then an error
    (:class:`CatalogError`), never skipped. One listing per namespace, only for loads that said not-found."""
    listings: dict[tuple[str, ...], set[tuple[str, ...]] | Exception] = {}
    out = list(results)
    for i, (ident, result) in enumerate(zip(identifiers, results, strict=True)):
        if not isinstance(result, NoSuchTableError):
            continue
        ns = tuple(ident[:-1])
        if ns not in listings:
            try:
                listings[ns] = {tuple(t) for t in catalog.list_tables(ns)}
            except NoSuchNamespaceError:
                listings[ns] = set()
            except Exception as exc:  # noqa: BLE001 - cannot confirm the drop: an error, not a skip
                listings[ns] = exc
        listed = listings[ns]
        name = ".".join(ident)
        if isinstance(listed, Exception):
            out[i] = CatalogError(f"catalog {catalog.name!r} answered 'no such table' loading {name} and its namespace "
                                  f"cannot be listed to confirm the drop ({type(listed).__name__}: {listed}); not "
                                  "taken for a dropped table. Try again once the catalog answers")
        elif tuple(ident) in listed:
            out[i] = CatalogError(f"catalog {catalog.name!r} lists {name} but answered 'no such table' when loading it "
                                  f"({result}); not taken for a dropped table (it may still hold rows). Check the "
                                  "catalog service (a gateway or a deployment answering 404?) and try again")
    return out


def has_marker(table: Table, markers: tuple[str, ...]) -> bool:
    """Does the table carry one of these marker properties (``m`` or ``m.*``)?"""
    return any(k == m or k.startswith(m + ".") for k in table.properties for m in markers)


type TableRef = Table | str | tuple[str, ...]
"""How every one-table verb names its table: a loaded pyiceberg ``Table``, ``"ns.table"`` or
``("ns", "table")``. Lake-wide verbs take the catalog instead (and, where they can be limited to
some tables, a sequence of these)."""


def table_name(table: Table) -> str:
    """``"ns.table"`` of a loaded table (how reports, journals and messages name it)."""
    return ".".join(table.name())


def identifier(ref: TableRef) -> tuple[str, ...]:
    """The identifier tuple of a table reference."""
    if isinstance(ref, Table):
        return tuple(ref.name())
    if isinstance(ref, str):
        parts = tuple(ref.split("."))
        if not all(p.strip() for p in parts):
            raise ConfigurationError(f"{ref!r} is not a table name: name a table as namespace.table (every part "
                                     "non-empty)")
        ref = parts
    if isinstance(ref, tuple) and ref and all(isinstance(p, str) and p.strip() for p in ref):
        if len(ref) < 2:  # pyiceberg itself would only say "Empty namespace identifier"
            raise ConfigurationError(f"table {ref[0]!r} must be qualified with its namespace: name a table as "
                                     "namespace.table (or ('namespace', 'table'))")
        return ref
    raise ConfigurationError(
        f"expected a table (a pyiceberg Table, 'namespace.table' or ('namespace', 'table')), got {ref!r}"
    )


def usable(table: Table) -> Table:
    """``table``, unless pyiceberg's FileIO cannot address its files (:func:`storage.cut_by_fileio`): then every
    data file, manifest and sidecar would be read from and written to one object, overwriting each other, so
    no verb may touch it (a ConfigurationError saying what to do)."""
    from iceberg_privacy.storage import WRITE_PATH_PROPERTIES, cut_by_fileio

    for where in (table.location(), *(table.properties.get(k, "") for k in WRITE_PATH_PROPERTIES)):
        if where and cut_by_fileio(where):
            raise ConfigurationError(
                f"table {table_name(table)} is stored at {where}, which contains '#' or '?': pyiceberg reads and "
                f"writes every file below it as the single object {where.split('#')[0].split('?')[0]}, overwriting "
                "each other. Nothing was done; move the table to a location without '#' or '?' (e.g. rename it and "
                "rewrite it with an engine that handles such paths, or register its files under a new location)"
            )
    return table


def check_committable(table: Table) -> None:
    """Refuse, before anything is written, a commit pyiceberg cannot make: to a format-v3 table (a REST catalog or
    another engine creates them) through a catalog that writes metadata.json on the client (SQL, Glue, Hive, ...),
    which pyiceberg 0.12 cannot do for v3: it failed with a bare NotImplementedError after leaving an empty
    metadata.json (and the verb's sidecar). A REST server writes its own metadata, so property and statistics
    commits (configure, backfill, expire) work there; data commits are refused by the writers themselves."""
    if table.metadata.format_version not in WRITABLE_FORMAT_VERSIONS and not isinstance(table.catalog, RestCatalog):
        raise ConfigurationError(unwritable_format_message(table_name(table)))


def load_table(catalog: Catalog | None, ref: TableRef) -> Table:
    """The table a reference names: a ``Table`` as is, a name loaded from ``catalog`` (by default the
    catalog :func:`connect` returns: the default of ``~/.pyiceberg.yaml``, else the embedded one). A table
    whose files pyiceberg cannot address is refused (:func:`usable`)."""
    if isinstance(ref, Table):
        rest.bound(ref.catalog)  # a REST catalog built with pyiceberg's load_catalog has no request timeouts
        return usable(ref)
    ident = identifier(ref)
    if catalog is not None and not isinstance(catalog, Catalog):
        raise ConfigurationError(f"catalog= takes a pyiceberg Catalog, e.g. catalog=iceberg_privacy.connect({catalog!r}) "
                                 f"for a catalog name, got {type(catalog).__name__}")
    if catalog is None:
        catalog = connect()  # the default catalog of ~/.pyiceberg.yaml, else the embedded one
    rest.bound(catalog)  # before the load: a stalled catalog must not hold it
    try:
        return usable(catalog.load_table(ident))
    except (NoSuchTableError, NoSuchNamespaceError) as exc:
        raise ConfigurationError(f"table {'.'.join(ident)} does not exist in catalog {catalog.name!r}"
                                 f"{what_exists(catalog, ident)}: check the name (namespace.table) and the catalog "
                                 "(ip.connect(name) / --catalog, ~/.pyiceberg.yaml)") from exc


@dataclass(frozen=True)
class CatalogMatch:
    """What ``catalog`` holds under the name of a loaded Table (:func:`match_in_catalog`)."""

    table: Table | None
    """The catalog's table of that name, None when it has none."""
    same: bool
    """Is it the same table (the same uuid)?"""

    @property
    def where(self) -> str:
        """Why it is not the same table, for an error message."""
        return "has no table of that name" if self.table is None else "has another table of that name (another uuid)"


def match_in_catalog(catalog: Catalog, given: Table) -> CatalogMatch:
    """Is ``given`` (a Table loaded somewhere) a table of ``catalog``: its name loaded from ``catalog`` now has
    ``given``'s uuid? A Table of another catalog (a second lake, a copy), or one renamed, dropped or replaced since it
    was loaded, is not; another Catalog instance of the same lake gives the same table."""
    try:
        table: Table | None = catalog.load_table(tuple(given.name()))
    except (NoSuchTableError, NoSuchNamespaceError):
        table = None
    return CatalogMatch(table, table is not None and table.metadata.table_uuid == given.metadata.table_uuid)


def what_exists(catalog: Catalog, ident: tuple[str, ...], *, limit: int = 12) -> str:
    """``"; namespace 'db' holds: a, b"`` or ``"; there is no namespace 'dbx' (namespaces: db, mart)"``: what
    a user who mistyped a table or namespace name most likely meant. Empty when the catalog cannot say (it is
    only a hint: a listing that fails never hides the not-found error it explains)."""

    def names(items: list[str], typed: str) -> str:
        # the names closest to what was typed first: in a catalog of hundreds of namespaces the meant one is
        # rarely among the first twelve alphabetically
        close = difflib.get_close_matches(typed, items, n=limit, cutoff=0.6)
        shown = ", ".join((close + sorted(set(items) - set(close)))[:limit])
        return (shown + f", ... ({len(items) - limit} more)") if len(items) > limit else (shown or "none")

    namespace = ident[:-1]
    try:
        # the first level that does not exist: under a missing 'ing', 'ing.t3' has no siblings to list, and "there
        # is no namespace 'ing.t3' (namespaces: none)" read as if the catalog held no namespace at all
        for depth in range(1, len(namespace) + 1):
            level, parent = namespace[:depth], namespace[:depth - 1]
            namespaces = [tuple(n) for n in (catalog.list_namespaces(parent) if parent else catalog.list_namespaces())]
            if namespace in namespaces:  # listed whole at this level (SeaweedFS's REST catalog lists ('a', 'b') at the top)
                break
            if level not in namespaces and any(n[:depth] == level for n in namespaces):
                # listed flat: 'a' holds 'a.b' though ('a',) itself is not listed; name the whole namespace missing
                level, namespaces = namespace, [n for n in namespaces if n[:depth] == level]
                parent = namespace[:depth]
            if level not in namespaces:
                where = f" in {'.'.join(parent)!r}" if parent else ""
                nested = (f"; {'.'.join(ident)!r} names table {ident[-1]!r} in the nested namespace "
                          f"{'.'.join(namespace)!r}" if len(namespace) > 1 else "")
                return (f"; there is no namespace {'.'.join(level)!r} (namespaces{where}: "
                        f"{names(['.'.join(n) for n in namespaces], '.'.join(level))}){nested}")
        own = {library_name(catalog, FORGET_TABLE_PROPERTY), library_name(catalog, LEDGER_TABLE_PROPERTY)}
        tables = [t[-1] for t in catalog.list_tables(namespace) if t[-1] not in own]  # not the library's own
        return (f"; namespace {'.'.join(namespace)!r} holds: {names(tables, ident[-1])}" if tables
                else f"; namespace {'.'.join(namespace)!r} holds no tables")
    except Exception:  # noqa: BLE001 - a hint only: the caller raises the not-found error either way
        return ""
