"""One storage layer: every read, write, delete and listing of the library goes through here.

Production lakes live on object storage (``s3://``, ``gs://``, ``abfss://``, ``oss://``, ``hdfs://``)
behind a catalog whose properties carry the endpoint, region and credentials. Earlier code stripped
URI schemes and listed table locations with a filesystem pyarrow guessed from the URI, which ignores those
properties (and on a machine with AWS credentials would list a *different* bucket of the same name),
and it handed bucket-relative paths to ``io.delete``, which pyiceberg then treated as local paths. So:

* Locations stay **full URIs** everywhere. :func:`canonical` gives a comparison key only (``s3a://`` and
  ``s3n://`` name the same objects as ``s3://``; ``/x`` and ``file:///x`` the same local file); nothing
  is ever opened or deleted through a key.
* Reads, writes and deletes use the table's own ``FileIO`` (pyiceberg built it from the catalog's
  properties, vended credentials included). Listing uses the filesystem *that same FileIO* built for the
  scheme (``PyArrowFileIO.fs_by_scheme`` / ``FsspecFileIO.get_fs``), so endpoint, keys and region match.
* A failed delete is never swallowed: :func:`delete_files` returns what was deleted, what was already
  gone and what failed with why; callers turn failures into errors in their reports.
* Storage errors become :class:`StorageError` naming the location and what is missing (bucket,
  credentials, permission), so the CLI can print one clear line.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import posixpath
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlparse

from pyarrow import fs as pafs
from pyiceberg.io import FileIO, load_file_io
from pyiceberg.io.pyarrow import PyArrowFileIO

from iceberg_privacy._internal import compat, retry
from iceberg_privacy.errors import (
    BLOCKED_REQUEST_ATTRIBUTE,
    CatalogError,
    ConfigurationError,
    IcebergPrivacyError,
    StorageError,
    blocked_request,
)

# Schemes that address the same objects (pyiceberg reads all of them with one filesystem).
_URI = re.compile(r"([A-Za-z][A-Za-z0-9+.-]+)://(.*)\Z", re.S)  # two letters at least: not C:\\
_SAME_OBJECTS = {"s3a": "s3", "s3n": "s3", "gcs": "gs", "abfss": "abfs", "wasbs": "wasb", "": "file"}


GCS_RETRY_LIMIT_PROPERTY = "gcs.retry-time-limit-ms"
GCS_RETRY_LIMIT_DEFAULT_MS = 30_000
"""How long a GCS request is retried before it fails (FileIO property, milliseconds). pyiceberg sets no limit, and
the GCS client's own is 15 minutes: an endpoint that does not answer (or credentials it cannot get) held a verb
that long. The S3 client gives up after its few retries on its own."""
compat.bound_gcs_retries(GCS_RETRY_LIMIT_PROPERTY, GCS_RETRY_LIMIT_DEFAULT_MS)


def _split(location: str) -> tuple[str, str, str]:
    """(scheme, authority, path) without URL parsing: object keys may contain '#', '?' or '%', which
    ``urlparse`` would cut off as fragment or query. Plain paths are ``file`` with no authority."""
    if m := _URI.match(location):
        authority, sep, path = m.group(2).partition("/")
        return m.group(1).lower(), authority, sep + path
    if location.lower().startswith("file:") and not location.lower().startswith("file://"):
        return "file", "", location[5:]  # file:/x
    return "file", "", location


def scheme_of(location: str) -> str:
    """The URI scheme of a location, ``file`` for plain paths."""
    return _split(location)[0]


def is_local(location: str) -> bool:
    return scheme_of(location) == "file"


def local_path(location: str) -> str:
    """The filesystem path of a local location (``file:///x`` or ``/x``); an error for remote ones."""
    scheme, authority, path = _split(location)
    if scheme != "file":
        raise StorageError(f"{location} is not a local path")
    return os.path.abspath(path if not authority else f"//{authority}{path}")


def canonical(location: str) -> str:
    """A key under which two spellings of the same object compare equal. Never open or delete it."""
    scheme, authority, path = _split(location)
    scheme = _SAME_OBJECTS.get(scheme, scheme)
    if scheme == "file":
        return "file://" + posixpath.normpath(local_path(location))
    path = posixpath.normpath(path) if path else ""
    return f"{scheme}://{authority}{'' if path in ('', '.', '/') else path}"


def is_location(location: str) -> bool:
    """A full URI or an absolute local path: never a relative path, which would resolve against the
    working directory (the old scheme-stripping bug turned ``s3://bucket/key`` into ``bucket/key``)."""
    scheme, _, path = _split(location)
    return scheme != "file" or os.path.isabs(path)


def cut_by_fileio(location: str) -> bool:
    """pyiceberg's FileIO parses locations with ``urlparse``: in a URI, ``#`` starts a fragment and ``?`` a query,
    both dropped, so ``s3://b/ns/a#b/data/x.parquet`` is read and written as ``s3://b/ns/a``. Every file below such
    a location names the same object (plain local paths without a scheme are kept whole)."""
    return "://" in location and ("#" in location or "?" in location) or (
        location.lower().startswith("file:") and ("#" in location or "?" in location))


def join(location: str, *parts: str) -> str:
    """``location/part/...`` without doubling or dropping slashes (and keeping the scheme)."""
    out = location.rstrip("/")
    for p in parts:
        out += "/" + p.strip("/")
    return out


def io_for(properties: dict[str, str], location: str) -> FileIO:
    """A FileIO for ``location`` built from catalog/table properties (what pyiceberg itself would build)."""
    return load_file_io(dict(properties), location)


def portable_properties(io: FileIO) -> dict[str, str]:
    """A FileIO's string properties, to rebuild it elsewhere (Spark executors): a REST catalog also puts
    its auth-manager object there, which executors neither need nor can always unpickle."""
    return {k: v for k, v in io.properties.items() if isinstance(v, str)}


def catalog_io(catalog: Any, location: str) -> FileIO:
    """The FileIO a catalog's tables would get for ``location`` (exports, library files outside tables)."""
    return io_for({str(k): str(v) for k, v in getattr(catalog, "properties", {}).items()}, location)


# ----------------------------------------------------------------------------------------- errors
_NAMES = re.compile(r"'[^']*'|\"[^\"]*\"|\S*[/\\]\S*")
"""Quoted strings and path-like tokens (anything with a slash) in an error message: names, not error codes."""


_MISSING = ("resource_not_found", "nosuchkey", "no_such_key", "specified key does not exist", "path does not exist",
            "no such file", "blobnotfound", "status code: 404", "not found (404)", "http 404")


def is_missing(exc: BaseException) -> bool:
    """Whether a read or delete failed because the object is not there. pyiceberg turns a missing file into
    ``FileNotFoundError`` only where it opens one; an object deleted between the open (its HEAD) and the read
    (its GET) surfaces from pyarrow's S3 stream as a plain ``OSError`` ("AWS Error RESOURCE_NOT_FOUND during
    GetObject"): the same fact, and code that treats "already gone" as done must treat both alike."""
    if missing_backend(exc) is not None:  # HDFS without a JVM raises FileNotFoundError ("Unable to load libjvm")
        return False
    if isinstance(exc, FileNotFoundError):
        return True
    if not isinstance(exc, OSError) or isinstance(exc, PermissionError):
        return False
    low = str(exc).lower()
    return any(m in low for m in _MISSING)


def missing_backend(exc: BaseException) -> str | None:
    """What to install when a location's filesystem could not be built (None for other errors): pyiceberg's fsspec
    FileIO imports ``s3fs``/``gcsfs``/``adlfs`` at the first use of a scheme, its pyarrow FileIO needs pyarrow 20 for
    ADLS and a Java runtime with Hadoop's libhdfs for HDFS."""
    text = str(exc)
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        package = exc.name.split(".")[0]
        return (f"the filesystem for this location needs the Python package {package!r}, which is not installed: "
                f"pip install {package} (or choose another FileIO with the catalog property py-io-impl)")
    if isinstance(exc, ImportError):
        return (f"the filesystem for this location cannot be loaded ({text.splitlines()[0] if text else 'ImportError'}):"
                " install what it names, or choose another FileIO with the catalog property py-io-impl (e.g. "
                "pyiceberg.io.fsspec.FsspecFileIO with adlfs for abfs://, gcsfs for gs://)")
    if isinstance(exc, OSError) and ("libjvm" in text or "libhdfs" in text):
        return ("pyarrow's HDFS client needs a Java runtime and Hadoop's libhdfs, which were not found: set "
                "JAVA_HOME, HADOOP_HOME (or ARROW_LIBHDFS_DIR) and CLASSPATH=$(hadoop classpath --glob)")
    return None


def describe_error(location: str, exc: BaseException, action: str) -> str:
    """One sentence: what failed where, and what is most likely missing."""
    text = str(exc)
    if (install := missing_backend(exc)) is not None:
        first = text.splitlines()[0] if text else ""
        return f"cannot {action} {location}: {install} ({type(exc).__name__}: {first})"
    # Classify on the message without the names in it: a key, bucket or path may contain '403', 'credential' or
    # 'connection' (a snapshot id, a table called credentials), which must not pick the hint.
    low = _NAMES.sub(" ", text).lower().replace("_", "")  # SDK codes: SIGNATURE_DOES_NOT_MATCH or SignatureDoesNotMatch
    if "nosuchbucket" in low or "no_such_bucket" in low or "bucket does not exist" in low:
        hint = "the bucket does not exist: create it or fix the warehouse/table location"
    elif "expiredtoken" in low or "token has expired" in low or "tokenrefreshrequired" in low \
            or "token is expired" in low:
        hint = ("the credentials expired (a session token, or credentials the catalog vended with the table): load "
                "the table again or renew them, then run the same command again (journaled requests resume)")
    elif isinstance(exc, PermissionError) or "access_denied" in low or "accessdenied" in low \
            or "access denied" in low or "code 15" in low or "forbidden" in low or "403" in low:
        hint = (f"access denied: the credentials are wrong, or they lack the permission to {action} there "
                "(check s3.access-key-id / s3.secret-access-key or the cloud's equivalent, and the bucket policy)"
                + ("; or it is a table bucket (S3 Tables), which refuses objects that are not Iceberg files: write "
                   "exports to a general-purpose bucket" if action == "write" else ""))
    elif "invalidaccesskeyid" in low or "signaturedoesnotmatch" in low or "credential" in low \
            or "invalid access key" in low:
        hint = "the credentials were refused: check s3.access-key-id / s3.secret-access-key (or the cloud's equivalents)"
    elif "could not create a oauth2 access token" in low:  # the GCS client found no credentials it could use
        hint = ("no GCS credentials could be obtained: set gcs.oauth2.token (with gcs.oauth2.token-expires-at) or "
                "GOOGLE_APPLICATION_CREDENTIALS, or check the network to the credential service")
    elif "connection" in low or "timed out" in low or "curl" in low or "could not resolve" in low:
        endpoint = {"gs": "gcs.service.host", "gcs": "gcs.service.host"}.get(
            scheme_of(location), "s3.endpoint (or the cloud's endpoint)")
        hint = f"the storage endpoint did not answer: check {endpoint} and the network"
    elif is_missing(exc) and re.search(r"/metadata/[^/'\s]*\.avro", text):
        hint = ("it does not exist: a manifest (list) of the snapshot the Table was loaded at; if an expiry or a purge "
                "removed that snapshot since, load the table again (catalog.load_table(name) or table.refresh())")
    elif is_missing(exc):
        hint = "it does not exist"
    else:
        hint = "see the cause"
    return f"cannot {action} {location}: {hint} ({type(exc).__name__}: {text.splitlines()[0] if text else ''})"


_S3_KEY = re.compile(r"key '([^']*)' in bucket '([^']*)'")
_PATH = re.compile(r"(?:Path does not exist|file not found|access denied|does not exist|Failed to open local file):? "
                   r"'?([^'\s]+)'?", re.I)


LOCATION_ATTRIBUTE = "iceberg_privacy_location"


@contextlib.contextmanager
def reading(location: str) -> Iterator[None]:
    """Name ``location`` (a full URI) on an OSError raised inside: pyarrow's S3 errors quote ``bucket/key`` without
    the scheme, and the StorageError built from them said "cannot read tables/ns/t/data/x.parquet" (a relative
    local path, to a reader) where the file is ``s3://tables/ns/t/data/x.parquet``."""
    try:
        yield
    except OSError as exc:
        if getattr(exc, LOCATION_ATTRIBUTE, None) is None:
            with contextlib.suppress(Exception):
                setattr(exc, LOCATION_ATTRIBUTE, location)
        raise


def location_in(exc: BaseException) -> str:
    if named := getattr(exc, LOCATION_ATTRIBUTE, None):
        return str(named)
    text = str(exc)
    if m := _S3_KEY.search(text):
        return f"s3://{m.group(2)}/{m.group(1)}"
    if m := _PATH.search(text):
        return m.group(1)
    return "a storage location"


def action_in(exc: BaseException) -> str:
    low = _NAMES.sub(" ", str(exc)).lower()  # a key named .../deleted/... is not a delete
    for word, action in (("delete", "delete"), ("listing", "list"), ("listobjects", "list"), ("upload", "write"),
                         ("putobject", "write"), ("create", "write")):
        if word in low:
            return action
    return "read"


def catalog_failure(exc: BaseException) -> str | None:
    """What a REST catalog's error answer means for the user (one sentence), or None for other exceptions.

    pyiceberg raises one ``RESTError`` subclass per HTTP status: a 5xx or 429 is the service failing (try again
    when it is healthy), 401/419 refused or expired credentials, 403 a missing permission, 400 a rule of the
    catalog. Not-found errors are not ``RESTError`` and keep their own types. A SQL catalog's database that stayed
    locked by other processes past its busy wait (:func:`sql_catalog_busy`) is the catalog failing too."""
    from pyiceberg import exceptions as pe

    if retry.is_transient_db_error(exc):
        return sql_catalog_busy(exc)
    if not isinstance(exc, pe.RESTError):
        return None
    text = (str(exc).strip().splitlines() or [""])[0][:300]
    what = f"{type(exc).__name__}: {text}"
    if isinstance(exc, (pe.ServerError, pe.ServiceUnavailableError, pe.CommitStateUnknownException,
                        pe.TooManyRequestsError)):
        return (f"the catalog service failed ({what}); try again once it is healthy. Journaled requests are "
                "resumable then")
    if isinstance(exc, (pe.UnauthorizedError, pe.AuthorizationExpiredError, pe.OAuthError)):
        return (f"the catalog refused the credentials ({what}): the token expired or the credential is wrong; "
                "check the catalog's credential/token properties, then try again (journaled requests resume)")
    if isinstance(exc, pe.ForbiddenError):
        return f"the catalog denied the operation ({what}): the catalog principal lacks a permission for it"
    return f"the catalog refused the request ({what})"


def library_error(exc: BaseException) -> BaseException:
    """The library's error for ``exc`` as :func:`storage_errors` raises it (``exc`` itself when it has none): a
    :class:`StorageError` (location + what is missing) for a raw OSError, a :class:`CatalogError` for a catalog
    service's failure, a :class:`ConfigurationError` for storage properties FileIO cannot use."""
    if isinstance(exc, IcebergPrivacyError):
        return exc
    if (install := missing_backend(exc)) is not None:
        return ConfigurationError(f"{install} ({type(exc).__name__}: {(str(exc).splitlines() or [''])[0]})")
    if not isinstance(exc, OSError):
        if compat.is_unwritable_format_error(exc):  # a v3 table: checked before writes, met by other commits
            return ConfigurationError(unwritable_format_message(None))
        if (message := catalog_failure(exc)) is not None:
            return CatalogError(message)
        if compat.is_fileio_setup_error(exc):
            return ConfigurationError(
                f"the catalog's storage properties are invalid ({type(exc).__name__}: {exc}): fix the "
                "property (s3.*, gcs.*, adls.*, py-io-impl, ...) in ~/.pyiceberg.yaml, ip.connect(...) or "
                "--property KEY=VALUE"
            )
        return exc
    if type(exc).__module__.startswith(("requests", "urllib3")):
        return CatalogError(
            f"the catalog service did not answer ({type(exc).__name__}: {str(exc)[:300]}); check its uri "
            "and that it is running. Journaled requests are resumable once it is back"
        )
    return StorageError(describe_error(location_in(exc), exc, action_in(exc)))


WRITABLE_FORMAT_VERSIONS = (1, 2)
"""The table formats pyiceberg 0.12 (the library's committer) can write: it reads v3 metadata but cannot write its
manifests, nor its metadata.json where the catalog writes that on the client (SQL, Glue, Hive; a REST server writes
its own, so property changes to a v3 table work there)."""


def unwritable_format_message(where: str | None, version: int = 3) -> str:
    """What to do about a table whose format the library cannot commit to (``where``: the table, when known)."""
    from importlib.metadata import version as installed

    return (f"{where or 'the table'} is an Iceberg format-v{version} table, which pyiceberg {installed('pyiceberg')} "
            "(this library's writer) cannot write yet: write it with an engine that supports v3 (Spark with Iceberg "
            "1.8+), or keep privacy-operable tables at format v2 (create them with properties={'format-version': "
            "'2'}). Reads and lookups work. Nothing was committed.")


def sql_catalog_busy(exc: BaseException) -> str:
    """A SQL catalog's "database is locked" (SQLite) or serialization failure (PostgreSQL) that reached a verb.

    Commit loops retry these (:func:`iceberg_privacy._internal.retry.is_conflict`), but a plain catalog read (a
    table load, a listing) that waited out the database's busy timeout while other processes kept writing raised
    the driver's ``OperationalError`` as is. The statement that failed changed nothing (the database rolled it
    back), so trying again is safe."""
    first = (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    return (f"the catalog's database is busy: other processes held its lock longer than this one waits ({first}); "
            "the step that failed changed nothing. Run the command again (journaled requests resume where they "
            "stopped); if it keeps happening, fewer processes should write to this catalog at once, or its SQLite "
            "busy wait can be raised with ?timeout=SECONDS on the catalog uri")


def storage_errors[F: Callable[..., Any]](fn: F) -> F:
    """Public verbs raise :class:`StorageError` (location + what is missing) instead of a raw pyarrow/fsspec
    OSError, and :class:`CatalogError` when a catalog service did not answer or answered with an error
    (:func:`catalog_failure`). The library's own errors pass through unchanged. ``StorageError`` is an OSError,
    so existing ``except OSError`` still works."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except IcebergPrivacyError:
            raise
        except Exception as exc:
            error = library_error(exc)
            if error is exc:
                raise
            if (blocked := blocked_request(exc)) is not None:  # rights/journal.blocking: the request it recorded
                setattr(error, BLOCKED_REQUEST_ATTRIBUTE, blocked)
            raise error from exc

    return wrapper  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------- listing
@dataclass(frozen=True)
class StoredFile:
    """One object under a listed location: its full URI (same scheme as the location), size, mtime."""

    location: str
    size: int
    mtime: datetime | None


def filesystem(io: FileIO, location: str) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem the table's FileIO uses for ``location``, and the path it addresses it by."""
    scheme, netloc, path = PyArrowFileIO.parse_location(location, io.properties)
    if isinstance(io, PyArrowFileIO):
        return io.fs_by_scheme(scheme, netloc), path
    get_fs = getattr(io, "get_fs", None)  # FsspecFileIO
    if get_fs is not None:
        # ADLS: the account host, exactly as pyiceberg's own reads and deletes pass it (FsspecFileIO._get_fs_from_uri:
        # urlparse(uri).hostname; the account name is its first label). Only the authority is parsed, never the key;
        # the netloc "container@account.dfs..." made that "container@account", another filesystem
        fs = get_fs(scheme, urlparse(f"{scheme}://{netloc}").hostname) if scheme in ("abfs", "abfss", "wasb", "wasbs") \
            else get_fs(scheme)
        return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path
    # Another FileIO (py-io-impl): list through pyarrow built from the same properties.
    return PyArrowFileIO(io.properties).fs_by_scheme(scheme, netloc), path


def _relative(listed: str, root: str) -> str | None:
    """The part of a listed path below the listed root, or None. Filesystems may name the top level
    differently from the URI's authority (Azure: ``container`` for ``container@account.dfs...``), so
    the root's key part is matched as well."""
    p, r = listed.strip("/"), root.strip("/")
    if p == r or p.startswith(r + "/"):
        return p[len(r):]
    key = r.split("/", 1)[1] if "/" in r else ""
    top, _, rest = p.partition("/")
    if top and (rest == key or rest.startswith(key + "/")) and r.split("/", 1)[0].startswith(top):
        return rest[len(key):]
    return None


def _listing(io: FileIO, location: str) -> list[tuple[pafs.FileInfo, str]]:
    """Every entry under ``location`` (files and directories), with its full URI (same scheme)."""
    try:
        fs, root = filesystem(io, location)
        infos = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
        if not infos and not is_local(location):
            # An object store answers "nothing here" for a bucket that does not exist as well: a
            # verification must not pass because it looked into the void.
            bucket = root.strip("/").split("/", 1)[0]
            if bucket and fs.get_file_info(bucket).type == pafs.FileType.NotFound:
                raise FileNotFoundError(f"NoSuchBucket: bucket {bucket!r} does not exist")
    except IcebergPrivacyError:  # already says what to fix (a malformed storage property)
        raise
    except Exception as exc:  # noqa: BLE001 - every failure here is a storage failure with one message
        raise StorageError(describe_error(location, exc, "list")) from exc
    base = location.rstrip("/")
    out = []
    for info in infos:
        rel = _relative(info.path, root)
        if rel is None:  # never guess a URI: a wrong one would make live files look like orphans
            raise StorageError(
                f"listing {location} returned {info.path!r}, which is not under {root!r}; this filesystem's "
                "path form is not supported for listing (report it with the FileIO and scheme in use)"
            )
        out.append((info, base + "/" + rel.strip("/")))
    return out


WRITE_PATH_PROPERTIES = ("write.data.path", "write.metadata.path", "write.object-storage.path",
                         "write.folder-storage.path")
"""Iceberg table properties that send a writer's files somewhere other than the table location (the last two
are the deprecated spellings of ``write.data.path`` that Java writers still honour)."""


def table_roots(location: str, properties: Mapping[str, str]) -> list[str]:
    """The table location, then every write path property (:data:`WRITE_PATH_PROPERTIES`) that is not under it:
    the places this table's writers put files, all of which a check for leftovers must list. Paths under another
    root are dropped, so no file is listed twice."""
    candidates = [location, *(properties[k] for k in WRITE_PATH_PROPERTIES if properties.get(k, "").strip())]
    roots: list[str] = []
    for cand in candidates:
        key = canonical(cand).rstrip("/")
        if any(key == canonical(r).rstrip("/") or key.startswith(canonical(r).rstrip("/") + "/") for r in roots):
            continue
        roots = [r for r in roots if not canonical(r).rstrip("/").startswith(key + "/")]
        roots.append(cand.rstrip("/"))
    return roots


_METADATA_JSON = re.compile(r"^(?P<root>.+)/metadata/[^/]+\.metadata\.json(\.gz)?$")


def other_table_roots(within: Iterable[str], unreferenced: Iterable[str]) -> list[str]:
    """Roots (canonical, with a trailing ``/``) of other tables stored inside one of the folders ``within`` (a
    table location, a write path): folders below it holding a ``metadata/*.metadata.json`` among
    ``unreferenced`` (files the listing table's metadata does not reference).

    Their files belong to another table, not to the listing table's orphans: nothing may delete them (a purge
    once destroyed a table nested in another's location), and a verification does not read them."""
    owns = [canonical(r).rstrip("/") for r in within]
    roots = set()
    for loc in unreferenced:
        m = _METADATA_JSON.match(canonical(loc))
        if m and any(m.group("root").startswith(own + "/") for own in owns):
            roots.add(m.group("root") + "/")
    return sorted(roots)


_TABLE_UUID = re.compile(rb'"table-uuid"\s*:\s*"(?P<uuid>[^"]+)"')


def _metadata_uuid(io: FileIO, location: str) -> str | None:
    """The ``table-uuid`` of a ``metadata.json`` (plain or ``.gz``): it is among the first fields every writer
    puts down, so the first 8 KiB normally hold it; else the whole file is read. None: no uuid (not metadata)."""
    import gzip

    with io.new_input(location).open() as fh:
        stream: Any = gzip.GzipFile(fileobj=fh) if location.endswith(".gz") else fh
        head = stream.read(8192)
        m = _TABLE_UUID.search(head)
        if m is None:
            m = _TABLE_UUID.search(head + stream.read())
    return m.group("uuid").decode("utf-8", "replace").lower() if m else None


def tables_sharing_location(io: FileIO, location: str, table_uuid: str, unreferenced: Iterable[str]) -> list[str]:
    """``metadata.json`` files of *other* tables (another ``table-uuid``) in this table's own ``metadata/`` folder,
    among ``unreferenced`` (files the table's metadata does not reference): another table was created at the same
    location (a catalog allows it). Its files are indistinguishable from this table's orphans by listing, so
    deleting unreferenced files here could destroy it (found by advstore2: a purge deleted the other table's
    metadata.json, which could then no longer be loaded). A file that cannot be read counts as another table's."""
    own = canonical(location).rstrip("/")
    candidates = []
    for loc in unreferenced:
        m = _METADATA_JSON.match(canonical(loc))
        if m and m.group("root") == own:
            candidates.append(loc)
    if not candidates:
        return []

    def foreign(loc: str) -> bool:
        try:
            found = _metadata_uuid(io, loc)
        except Exception as exc:  # noqa: BLE001 - unreadable: assume the worst, nothing here is deleted
            return not is_missing(exc)  # deleted meanwhile (a writer's own cleanup): nothing to protect
        return found is not None and found != str(table_uuid).lower()

    with ThreadPoolExecutor(max_workers=min(8, len(candidates)), thread_name_prefix="ip-uuid") as pool:
        return sorted(loc for loc, other in zip(candidates, pool.map(foreign, candidates), strict=True) if other)


def outside_roots(roots: list[str], location: str) -> bool:
    """``location`` lies under none of ``roots`` (as returned by :func:`other_table_roots`)."""
    key = canonical(location)
    return not any(key.startswith(r) or key + "/" == r for r in roots)


def list_files(io: FileIO, location: str) -> list[StoredFile]:
    """Every object under ``location`` (recursively), as full URIs; an empty list when nothing is there.

    Raises :class:`StorageError` when the location cannot be listed (missing bucket, refused
    credentials, no list permission): callers that promise completeness must not go on.
    """
    out = []
    for info, loc in _listing(io, location):
        if info.type != pafs.FileType.File:
            continue
        mtime = info.mtime
        if mtime is not None and mtime.tzinfo is None:
            mtime = mtime.replace(tzinfo=UTC)
        out.append(StoredFile(loc, int(info.size or 0), mtime))
    return sorted(out, key=lambda f: f.location)


def list_tree(io: FileIO, location: str) -> tuple[list[StoredFile], list[str]]:
    """Files (as :func:`list_files`) and directories under ``location``: local directories, and on object
    stores the prefixes the filesystem reports (zero-byte ``key/`` directory markers among them), as
    full URIs without a trailing slash. A directory is listed even when it holds nothing."""
    entries = _listing(io, location)
    dirs = sorted(loc for info, loc in entries if info.type == pafs.FileType.Directory)
    files = []
    for info, loc in entries:
        if info.type == pafs.FileType.File:
            mtime = info.mtime
            if mtime is not None and mtime.tzinfo is None:
                mtime = mtime.replace(tzinfo=UTC)
            files.append(StoredFile(loc, int(info.size or 0), mtime))
    return sorted(files, key=lambda f: f.location), dirs


def remove_empty_dir(io: FileIO, location: str) -> str | None:
    """Remove the directory ``location`` if it holds nothing (local: ``rmdir``, which refuses a directory a
    writer has just put a file in; object stores: the zero-byte ``key/`` marker, if any). Returns None on
    success (or when it is already gone), else why it was not removed. Never removes anything that holds a file."""
    try:
        if is_local(location):
            try:
                os.rmdir(local_path(location))
            except OSError as exc:
                if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                    return f"cannot remove {location}: it is not empty"
                raise
            return None
        fs, path = filesystem(io, location)
        path = path.rstrip("/")
        if fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True)):
            return f"cannot remove {location}: it is not empty"
        if fs.get_file_info(path).type == pafs.FileType.NotFound:
            return None
        fs.delete_dir(path)  # an empty prefix: only its marker object exists
        return None
    except OSError as exc:
        return None if is_missing(exc) else describe_error(location, exc, "delete")


# ---------------------------------------------------------------------------------------- deletes
@dataclass
class DeleteOutcome:
    """What a batch of deletes did: nothing is dropped silently."""

    deleted: list[str] = field(default_factory=list)
    already_gone: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # location -> reason

    @property
    def ok(self) -> bool:
        return not self.failed


def _delete_one(io: FileIO, loc: str) -> tuple[str, str, str | None]:
    if not is_location(loc):  # a relative path would resolve against the working directory
        return loc, "failed", f"cannot delete {loc}: not a full URI or absolute path; nothing was touched"
    try:
        io.delete(loc)
    except Exception as exc:  # noqa: BLE001 - reported, never swallowed
        if is_missing(exc):
            return loc, "gone", None
        return loc, "failed", describe_error(loc, exc, "delete")
    return loc, "deleted", None


DELETE_THREADS = 16
"""Concurrent deletes on object stores (one request each; pyiceberg's FileIO has no batch delete)."""


def delete_files(io: FileIO, locations: Iterable[str]) -> DeleteOutcome:
    """Delete each location (full URI) through the FileIO; report missing ones and failures separately."""
    locs = list(dict.fromkeys(locations))
    remote = [loc for loc in locs if not is_local(loc)]
    if len(remote) > 1:
        with ThreadPoolExecutor(min(DELETE_THREADS, len(remote)), thread_name_prefix="ip-delete") as pool:
            results = list(pool.map(lambda loc: _delete_one(io, loc), locs))
    else:
        results = [_delete_one(io, loc) for loc in locs]
    out = DeleteOutcome()
    for loc, state, why in results:
        if state == "deleted":
            out.deleted.append(loc)
        elif state == "gone":
            out.already_gone.append(loc)
        else:
            out.failed[loc] = why or "unknown error"
    return out


# ------------------------------------------------------------------------------------ reads/writes
def write_bytes(io: FileIO, location: str, data: bytes, *, overwrite: bool = True) -> None:
    """Write a whole object. ``overwrite=True`` skips the existence check (a HEAD on object stores):
    use it for names that are unique by construction (uuids) or meant to be replaced."""
    try:
        with io.new_output(location).create(overwrite=overwrite) as fh:
            fh.write(data)
    except FileExistsError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise StorageError(describe_error(location, exc, "write")) from exc


def child(location: str | os.PathLike[str], name: str) -> str:
    """``location/name`` for a local folder or any URI."""
    loc = os.fspath(location)
    return os.path.join(local_path(loc), name) if is_local(loc) else join(loc, name)


def write_location(location: str | os.PathLike[str], data: bytes, io: FileIO | None = None) -> str:
    """Write a whole export file to a local path or any FileIO location (``s3://bucket/exports/x.parquet``).

    Local files go through a temporary name and a rename, so a crash never leaves half a file under the
    final name (an object store publishes a PUT atomically anyway). Remote locations need the catalog's
    FileIO (:func:`catalog_io`) so its endpoint and credentials apply; without one pyiceberg's defaults
    (environment credentials) are used.
    """
    loc = os.fspath(location)
    if is_local(loc):
        path = local_path(loc)
        if os.path.isdir(path):  # os.replace failed on it, after writing a stray <path>.tmp next to it
            raise StorageError(f"cannot write {path}: it is a directory; name a file in it, e.g. "
                               f"{os.path.join(path, 'export' + os.path.splitext(path)[1])}")
        try:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        except OSError as exc:
            raise StorageError(describe_error(path, exc, "write")) from exc
        # one temporary name per writer: two exports to one path must not write into the same temporary file
        tmp = f"{path}.{os.getpid()}-{os.urandom(4).hex()}.tmp"
        try:
            with open(tmp, "xb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except OSError as exc:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)  # a failed export leaves no partial file behind
            raise StorageError(describe_error(path, exc, "write")) from exc
        return path
    write_bytes(io if io is not None else io_for({}, loc), loc, data, overwrite=True)
    return loc
