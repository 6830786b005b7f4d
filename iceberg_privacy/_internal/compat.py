"""Every use of a pyiceberg, tmlt or CPython private API, in one file.

The library needs a few things their public APIs do not offer: the id of the snapshot a pending
producer will create (to name its sidecar before the commit), pyiceberg's own partition split and
schema check (so our files match pyiceberg's append byte for byte), a transaction without
pyiceberg's silent rebase-and-retry (ours must re-check the forget list first), the noise tmlt
will add (for provenance), and OpenSSL's HMAC state (for the forget list's speed).

Each function names what it wraps. ``tests/test_compat.py`` pins the behaviour every caller relies
on, so an upgrade of pyiceberg or tmlt that changes one of them fails there, in one place, rather
than in the files that use them. Nothing else in the package may import an underscored name from
pyiceberg or tmlt. One exception, because it must run before this module can be imported:
``_internal/pyiceberg_config.import_pyiceberg`` replaces ``pyiceberg.utils.config.Config._from_configuration_files``
while pyiceberg is imported (contract test in ``tests/core/test_compat.py`` all the same).
"""

from __future__ import annotations

import copy
import re
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Literal, cast

import pyarrow as pa
from pyiceberg.io.pyarrow import (
    _check_pyarrow_schema_compatible,
    _determine_partitions,
    _get_parquet_writer_kwargs,
)
from pyiceberg.partitioning import PartitionKey, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table import Table, TableProperties
from pyiceberg.table.update.snapshot import _SnapshotProducer

if TYPE_CHECKING:
    SnapshotProducer = _SnapshotProducer[Any]
else:
    SnapshotProducer = _SnapshotProducer
"""The type of ``tx.update_snapshot().fast_append()`` / ``.overwrite()`` (pyiceberg keeps it private)."""


def producer_snapshot_id(producer: SnapshotProducer) -> int:
    """The id of the snapshot ``producer`` will commit (``_SnapshotProducer._snapshot_id``)."""
    return int(producer._snapshot_id)


def staged(tx: Any) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """The (updates, requirements) a transaction would commit (``Transaction._updates`` / ``_requirements``),
    for committing them through ``catalog.commit_table`` instead: pyiceberg's ``commit_transaction`` deletes
    the manifests of an attempt that lost, which a rebase re-uses."""
    return tuple(tx._updates), tuple(tx._requirements)


def check_arrow_schema(schema: Schema, arrow_schema: pa.Schema, *, format_version: int) -> None:
    """Raise ``ValueError`` when Arrow data cannot be written to an Iceberg schema, exactly as
    pyiceberg's own append decides (``pyiceberg.io.pyarrow._check_pyarrow_schema_compatible``, with its
    ``downcast-ns-timestamp-to-us-on-write`` setting: :func:`downcast_ns_on_write`)."""
    _check_pyarrow_schema_compatible(schema, arrow_schema, downcast_ns_timestamp_to_us=downcast_ns_on_write(),
                                     format_version=cast(Literal[1, 2, 3], format_version))


def downcast_ns_on_write() -> bool:
    """pyiceberg's ``downcast-ns-timestamp-to-us-on-write`` (``PYICEBERG_DOWNCAST_NS_TIMESTAMP_TO_US_ON_WRITE`` or
    ``.pyiceberg.yaml``) as its append reads it: nanosecond timestamps are written as microseconds (truncated)."""
    from pyiceberg.table import DOWNCAST_NS_TIMESTAMP_TO_US_ON_WRITE
    from pyiceberg.utils.config import Config

    return Config().get_bool(DOWNCAST_NS_TIMESTAMP_TO_US_ON_WRITE) or False


def parquet_writer_kwargs(properties: dict[str, str]) -> dict[str, Any]:
    """The ``pyarrow.parquet.ParquetWriter`` arguments pyiceberg's writer derives from table properties (codec,
    level, page and dictionary sizes); ``ValueError`` for a property that is not a number, as pyiceberg raises it
    (``pyiceberg.io.pyarrow._get_parquet_writer_kwargs``)."""
    with warnings.catch_warnings():  # its "option(s) ... not implemented" warning: the write itself gives it
        warnings.simplefilter("ignore")
        return _get_parquet_writer_kwargs(properties)


def partitions(spec: PartitionSpec, schema: Schema, data: pa.Table) -> Iterator[tuple[PartitionKey, pa.Table]]:
    """Split ``data`` by partition as pyiceberg's append does (``pyiceberg.io.pyarrow._determine_partitions``):
    (partition key, the rows of that partition) pairs."""
    parts = list(_determine_partitions(spec=spec, schema=schema, arrow_table=data))  # (the caller holds them all)
    # pyiceberg groups the partition values, then selects each group's rows by equality: a NaN equals no row (its
    # group is empty, and the writer divides by its zero rows) and -0.0 equals 0.0 (both groups get both rows:
    # rows written twice). Refuse the write instead of crashing or duplicating rows.
    if any(p.arrow_table_partition.num_rows == 0 for p in parts) \
            or sum(p.arrow_table_partition.num_rows for p in parts) != data.num_rows:
        from iceberg_privacy.errors import UnsupportedDataError  # noqa: PLC0415 - compat imports nothing of ours at load

        floats = [schema.find_column_name(pf.source_id) for pf in spec.fields
                  if str(schema.find_type(pf.source_id)) in ("float", "double")]
        raise UnsupportedDataError(
            f"pyiceberg cannot split these {data.num_rows} rows by the table's partition fields "
            f"({', '.join(pf.name for pf in spec.fields)}): it would "
            f"drop or duplicate rows. A NaN, or -0.0 next to 0.0, in a float/double partition source column "
            f"({', '.join(map(str, floats)) or 'none found'}) does this: replace NaN with null and -0.0 with 0.0, or "
            "partition by another column. Nothing was committed.")
    for part in parts:
        yield part.partition_key, part.arrow_table_partition


def without_commit_retries(table: Table) -> Table:
    """``table`` with pyiceberg's own commit retry off, for one transaction (nothing is persisted).

    pyiceberg re-applies a lost append onto the winner's snapshot by itself
    (``commit.retry.num-retries``); a conflict must instead come back to our loop. The override lives
    only in this in-memory copy of the metadata (``TableMetadata.model_copy``), never in the catalog.
    """
    props = {**table.metadata.properties, TableProperties.COMMIT_NUM_RETRIES: "0"}
    return Table(table.name(), table.metadata.model_copy(update={"properties": props}), table.metadata_location,
                 table.io, table.catalog)


def adopt_commit(table: Table, committed: Table) -> Table:
    """Give ``table`` the metadata ``committed`` (its :func:`without_commit_retries` copy) holds after a
    successful ``commit_transaction``, without a catalog round trip.

    pyiceberg's own append leaves the committing ``Table`` at the catalog's response metadata
    (``Table._do_commit``); the copy received that response, which the catalog built from its own
    stored metadata, so the in-memory retry override is not in it. Equivalent to ``table.refresh()``
    right after the commit, minus the reload.
    """
    table.metadata = committed.metadata
    table.metadata_location = committed.metadata_location
    return table


def noise_info(session: Any, query: Any, budget: Any) -> list[dict[str, Any]]:
    """The noise mechanisms and parameters tmlt will use to answer ``query`` with ``budget``
    (``tmlt.analytics.Session._noise_info``): a list of dicts with ``noise_mechanism`` and
    ``noise_parameter``."""
    return list(session._noise_info(query, budget))


def hmac_sha256(secret: bytes, prefix: bytes) -> Any:
    """An HMAC-SHA256 state keyed with ``secret`` that has absorbed ``prefix``.

    CPython's ``_hashlib.hmac_new`` is OpenSSL's C object (``copy``/``update``/``digest`` without
    Python frames, several times faster per value than :mod:`hmac`); the public :mod:`hmac` module
    is the fallback and gives the same digests.
    """
    try:
        import _hashlib

        return _hashlib.hmac_new(secret, prefix, "sha256")
    except (ImportError, AttributeError):  # pragma: no cover - CPython without OpenSSL
        import hmac

        return hmac.new(secret, prefix, "sha256")


def is_stale_sequence_number(exc: BaseException) -> bool:
    """Is ``exc`` a refusal of a snapshot whose sequence number is not newer than the table's last?

    pyiceberg checks it while applying the updates (``pyiceberg.table.update``), before the catalog is
    asked: ``ValueError("Cannot add snapshot with sequence number N older than last sequence number M")``; a
    SqlCatalog applies them so too. A REST catalog applies them on the server, which answers HTTP 400
    (pyiceberg's ``BadRequestError``): Iceberg's Java server with the same sentence, SeaweedFS's with
    "can't add snapshot with sequence number N, must be > than last sequence number M".
    It happens when another writer committed (on any branch) between building a snapshot and committing
    it: a race lost without effect, to be retried on the new metadata like a ``CommitFailedException``.
    """
    from pyiceberg.exceptions import BadRequestError

    if not isinstance(exc, (ValueError, BadRequestError)):
        return False
    return _STALE_SEQUENCE.search(str(exc)) is not None


_STALE_SEQUENCE = re.compile(r"add snapshot with sequence number -?\d+,? (?:older than|must be > than) last sequence "
                             r"number", re.IGNORECASE)


def expire_snapshot_ids(tx: Any, snapshot_ids: Iterable[int]) -> None:
    """``ExpireSnapshots(tx).by_ids(ids).commit()`` without its per-id checks. ``by_id`` reads
    ``Transaction.table_metadata`` twice per id, and each read re-applies the transaction's updates to a deep copy
    of the whole metadata (every snapshot), so expiring N snapshots of an N-snapshot table cost O(N^2) (100
    snapshots: 4.6 s of a 7 s purge). The caller has checked that every id exists and is no ref head; pyiceberg's
    own ``_commit`` still drops any protected id (one copy of the metadata)."""
    from pyiceberg.table.update.snapshot import ExpireSnapshots

    expiry = ExpireSnapshots(tx)
    expiry._snapshot_ids_to_expire = set(snapshot_ids)
    expiry.commit()


class ScanPruning:
    """pyiceberg's own per-scan pruning for one row filter: which manifests to open, which entries to keep,
    and each kept file's residual, built by ``pyiceberg.table.ManifestGroupPlanner``'s private builders
    (``_build_manifest_evaluator``, ``_build_partition_evaluator``, ``_build_metrics_evaluator``,
    ``_build_residual_evaluator``), the same ones ``DataScan.plan_files`` uses. A planner that decodes only
    some manifests (:mod:`iceberg_privacy.index.liveness`) then keeps exactly the files pyiceberg would.
    """

    def __init__(self, metadata: Any, io: Any, row_filter: Any, case_sensitive: bool = True) -> None:
        from pyiceberg.table import ManifestGroupPlanner
        from pyiceberg.typedef import KeyDefaultDict

        planner = ManifestGroupPlanner(metadata, io, row_filter, case_sensitive)
        self._manifest = KeyDefaultDict(planner._build_manifest_evaluator)
        self._partition = KeyDefaultDict(planner._build_partition_evaluator)
        self._residual = KeyDefaultDict(planner._build_residual_evaluator)
        self._metrics = planner._build_metrics_evaluator()
        self._residuals: dict[Any, Any] = {}

    def manifest(self, manifest: Any) -> bool:
        """May this manifest (by its partition summaries) hold a matching file?"""
        return bool(self._manifest[manifest.partition_spec_id](manifest))

    def entry(self, manifest: Any, data_file: Any) -> bool:
        """Does pyiceberg keep this entry of ``manifest`` (partition values, then column metrics)?
        Like pyiceberg, the partition evaluator is chosen by the manifest's spec."""
        return bool(self._partition[manifest.partition_spec_id](data_file)) and bool(self._metrics(data_file))

    def residual(self, data_file: Any) -> Any:
        """The filter left for the rows of ``data_file`` after its partition values (``FileScanTask.residual``).
        A pure function of (spec, partition values), so it is computed once per partition: pyiceberg's per-file
        evaluation walks every value of a large ``In`` through the partition transform for each file."""
        key = (data_file.spec_id, data_file.partition)
        hit = self._residuals.get(key)
        if hit is None:
            hit = self._residuals[key] = self._residual[data_file.spec_id](data_file).residual_for(data_file.partition)
        return hit


class FileProjection:
    """How pyiceberg's ``ArrowScan`` maps one data file onto a requested schema (the per-file half of
    ``pyiceberg.io.pyarrow._task_to_record_batches``): the file's Iceberg schema (field ids, or the table's
    name mapping), the physical top-level columns to read, identity-partition values of columns the file
    lacks (``_get_column_projection_values``), and the ns -> us timestamp rule. :meth:`convert` turns a
    batch of those physical columns into the requested schema (``_to_requested_schema``: renames, added
    columns, type promotion), exactly as ``ArrowScan`` does."""

    def __init__(self, metadata: Any, requested: Schema, field_ids: set[int], data_file: Any,
                 physical_schema: pa.Schema) -> None:
        from pyiceberg.io.pyarrow import _get_column_projection_values, pyarrow_to_schema
        from pyiceberg.schema import prune_columns
        from pyiceberg.table import DOWNCAST_NS_TIMESTAMP_TO_US_ON_WRITE
        from pyiceberg.utils.config import Config

        configured = Config().get_bool(DOWNCAST_NS_TIMESTAMP_TO_US_ON_WRITE)
        self.downcast = configured if configured is not None else metadata.format_version <= 2
        self.requested = requested
        self.file_schema = pyarrow_to_schema(physical_schema, metadata.name_mapping(),
                                             downcast_ns_timestamp_to_us=self.downcast,
                                             format_version=metadata.format_version)
        self.missing = _get_column_projection_values(data_file, requested, metadata.schema(),
                                                     metadata.specs().get(data_file.spec_id), self.file_schema.field_ids)
        self.project_schema = prune_columns(self.file_schema, field_ids, select_full_types=False)
        self.columns = [c.name for c in self.project_schema.columns]
        # A file holding every requested field gets no projected values, whatever its partition
        # (``_get_column_projection_values`` returns early): every such file shares this projection.
        self.file_field_ids = self.file_schema.field_ids  # (a property that builds a set per call)
        self.complete = not requested.field_ids - self.file_field_ids

    def for_file(self, data_file: Any, metadata: Any) -> FileProjection:
        """This projection for another data file of the same physical schema (only the identity-partition
        values of absent columns differ between such files)."""
        from pyiceberg.io.pyarrow import _get_column_projection_values

        if self.complete:
            return self

        other = copy.copy(self)
        other.missing = _get_column_projection_values(data_file, self.requested, metadata.schema(),
                                                      metadata.specs().get(data_file.spec_id), self.file_schema.field_ids)
        return other

    def has(self, field_id: int) -> bool:
        """Does the file hold this field (else ArrowScan fills it with nulls or a partition value)?"""
        return field_id in self.file_field_ids

    def convert_rows(self, n: int) -> pa.Table:
        """``n`` rows of the requested schema for a file that holds none of its columns (nulls, or the
        file's identity-partition values), as ArrowScan makes them from a column-less batch."""
        empty = pa.RecordBatch.from_struct_array(pa.array([{}] * n, type=pa.struct([])))
        return pa.Table.from_batches([self.convert(empty)])

    def convert(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        from pyiceberg.io.pyarrow import _to_requested_schema

        return _to_requested_schema(self.requested, self.project_schema, batch, downcast_ns_timestamp_to_us=self.downcast,
                                    projected_missing_fields=self.missing, allow_timestamp_tz_mismatch=True)


def position_deletes(io: Any, tasks: Any) -> dict[str, list[pa.ChunkedArray]]:
    """Every position deleted by the tasks' delete files (position deletes and deletion vectors), by data
    file path, read as ``ArrowScan`` reads them (``pyiceberg.io.pyarrow._read_all_delete_files``)."""
    from pyiceberg.io.pyarrow import _read_all_delete_files

    return _read_all_delete_files(io, tasks)


def is_rebase_base_gone(exc: BaseException) -> bool:
    """Is ``exc`` pyiceberg's own commit retry giving up because the snapshot it rebases from was expired?

    pyiceberg 0.12 retries a transaction that lost its race itself (``commit.retry.num-retries``) by rebuilding
    its snapshot on the new head, starting from the head it first read; when a concurrent expiry (another purge,
    a history upkeep) removed that snapshot meanwhile, the rebuild raises
    ``ValidationException("Cannot find starting snapshot N")`` before anything is sent to the catalog: a race
    lost without effect, to be built again from a fresh load like a ``CommitFailedException``.
    """
    from pyiceberg.exceptions import ValidationException

    return isinstance(exc, ValidationException) and str(exc).startswith("Cannot find starting snapshot")


def is_equality_deletes_refused(exc: BaseException) -> bool:
    """Is ``exc`` pyiceberg 0.12's scan planning refusing a snapshot with equality delete files?

    ``DataScan.plan_files`` raises ``ValueError("PyIceberg does not yet support equality deletes: ...")`` when a
    live equality delete file (another engine's merge-on-read DELETE) applies to the scanned files."""
    return isinstance(exc, ValueError) and str(exc).startswith("PyIceberg does not yet support equality deletes")


def is_snapshot_gone(exc: BaseException) -> bool:
    """Is ``exc`` pyiceberg refusing to remove a snapshot that another commit already removed?

    A catalog that re-applies the updates to its current metadata (SqlCatalog, and pyiceberg's own update
    code) raises ``ValueError("Snapshot with snapshot id N does not exist: ...")`` for a
    ``RemoveSnapshotsUpdate`` whose snapshot a concurrent expiry dropped first: lost without effect.
    """
    return isinstance(exc, ValueError) and str(exc).startswith("Snapshot with snapshot id ") and "does not exist" in str(exc)


def is_statistics_gone(exc: BaseException) -> bool:
    """Is ``exc`` pyiceberg refusing to remove a statistics entry that another commit already removed?

    The same re-application as :func:`is_snapshot_gone`: a ``RemoveStatisticsUpdate`` (a compaction unregistering
    the base it supersedes) whose entry a concurrent compaction or expiry dropped first raises
    ``ValueError("Statistics with snapshot id N does not exist")``: lost without effect.
    """
    return isinstance(exc, ValueError) and str(exc).startswith("Statistics with snapshot id ") and "does not exist" in str(exc)


def data_file_factory() -> Any:
    """A fast ``DataFile`` constructor for planning: ``make(content, path, format, partition, record_count,
    file_size_in_bytes, spec_id)``, the record pyiceberg's manifest reader produces (it reads every table
    version with the ``DEFAULT_READ_VERSION`` struct). ``DataFile.from_args`` binds every field by name (tens
    of microseconds, seconds for a 100,000-file batch plan); this builds the same record positionally,
    relying on ``DataFile`` being a ``Record`` whose constructor takes the struct's values in order and on
    the ``spec_id`` attribute the manifest reader sets."""
    from pyiceberg.manifest import DATA_FILE_TYPE, DEFAULT_READ_VERSION, DataFile

    struct = DATA_FILE_TYPE[DEFAULT_READ_VERSION]
    setattr_ = object.__setattr__
    names = [f.name for f in struct.fields]
    template = [f.initial_default for f in struct.fields]
    pos = [names.index(n) for n in ("content", "file_path", "file_format", "partition", "record_count",
                                    "file_size_in_bytes")]

    def make(content: Any, path: str, file_format: Any, partition: Any, record_count: int, size: int,
             spec_id: int) -> Any:
        values = template.copy()
        values[pos[0]], values[pos[1]], values[pos[2]] = content, path, file_format
        values[pos[3]], values[pos[4]], values[pos[5]] = partition, record_count, size
        df = DataFile(*values)
        setattr_(df, "_spec_id", spec_id)  # what the spec_id setter does, without DataFile.__setattr__'s dispatch
        return df

    return make


def remove_partition_statistics(tx: Any, snapshot_ids: list[int]) -> None:
    """Stage the removal of the partition-statistics entries of ``snapshot_ids`` in a transaction.

    pyiceberg 0.12 has a ``RemovePartitionStatisticsUpdate`` but no public call that stages it (its
    ``update_statistics()`` covers ``statistics`` only), and its snapshot expiry removes the ``statistics``
    of expired snapshots but not their ``partition-statistics``; this stages it with
    ``Transaction._apply``. pyiceberg raises ``ValueError`` when an id has no entry (a concurrent commit
    removed it first).
    """
    from pyiceberg.table.update import RemovePartitionStatisticsUpdate

    tx._apply(tuple(RemovePartitionStatisticsUpdate(snapshot_id=sid)  # type: ignore[call-arg]  # by field name
                    for sid in snapshot_ids))


_CONSTRUCTION_TIMEOUTS: ContextVar[tuple[float, float] | None] = ContextVar("rest_construction_timeouts", default=None)


@contextmanager
def rest_construction_timeouts(connect: float, read: float) -> Iterator[None]:
    """Bound the HTTP requests of the REST catalogs constructed inside this block (this thread or task only).

    ``RestCatalog.__init__`` already talks to the service: its config request and, with a ``credential``, the
    legacy OAuth2 token request, each through a ``requests.Session`` it creates with ``Session()`` in
    ``RestCatalog._create_session`` (the name ``pyiceberg.catalog.rest.Session``). Those ran without a timeout,
    before :func:`set_rest_timeouts` could reach the finished catalog, so a service that accepted the connection
    and stalled held ``connect`` forever. That name is replaced once by a subclass whose sessions, when created
    inside this block, give every request without its own ``timeout`` ``(connect, read)``; outside it they behave
    exactly as ``requests.Session``."""
    _bound_rest_sessions()
    token = _CONSTRUCTION_TIMEOUTS.set((connect, read))
    try:
        yield
    finally:
        _CONSTRUCTION_TIMEOUTS.reset(token)


_TOKEN_TIMEOUTS: ContextVar[tuple[float, float] | None] = ContextVar("oauth2_token_timeouts", default=None)


class _BoundedRequests:
    """Stands for the ``requests`` module inside ``pyiceberg.catalog.rest.auth``, whose ``OAuth2TokenProvider``
    (``auth.type: oauth2``) fetches its tokens with a bare ``requests.post(token_url, ...)`` outside the catalog's
    session: no timeout, so a token endpoint that stalled held every verb forever. Its ``post`` gives requests
    without their own ``timeout`` the bounds of the catalog being built (:func:`rest_construction_timeouts`) or of
    the catalog whose token is refreshed (:func:`set_rest_timeouts`); everything else is ``requests``' own."""

    def __init__(self, module: Any) -> None:
        self._module = module

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)

    def post(self, url: Any, *args: Any, **kwargs: Any) -> Any:
        bounds = _TOKEN_TIMEOUTS.get() or _CONSTRUCTION_TIMEOUTS.get()
        if kwargs.get("timeout") is None and bounds is not None:
            kwargs["timeout"] = bounds
        return self._module.post(url, *args, **kwargs)


def _bound_token_requests() -> None:
    from pyiceberg.catalog.rest import auth as auth_module

    if not isinstance(auth_module.requests, _BoundedRequests):
        auth_module.requests = _BoundedRequests(auth_module.requests)  # type: ignore[assignment]


def _bound_token_refresh(catalog: Any, connect: float, read: float) -> None:
    """Bound the token refreshes of ``catalog``'s OAuth2 token provider (``auth.type: oauth2``), if it has one."""
    provider = getattr(getattr(catalog, "_auth_manager", None), "token_provider", None)
    refresh = getattr(provider, "_refresh_token", None)
    if provider is None or refresh is None:
        return
    _bound_token_requests()
    original = getattr(refresh, "__wrapped__", refresh)

    def bounded_refresh() -> Any:
        token = _TOKEN_TIMEOUTS.set((connect, read))
        try:
            return original()
        finally:
            _TOKEN_TIMEOUTS.reset(token)

    bounded_refresh.__wrapped__ = original  # type: ignore[attr-defined]
    provider._refresh_token = bounded_refresh


def _bound_rest_sessions() -> None:
    from pyiceberg.catalog import rest as rest_module

    _bound_token_requests()
    base = rest_module.Session
    if getattr(base, "_iceberg_privacy_bounded", False):
        return

    class BoundedSession(base):  # type: ignore[misc, valid-type]
        _iceberg_privacy_bounded = True

        def __init__(self) -> None:
            super().__init__()
            self._construction_timeouts = _CONSTRUCTION_TIMEOUTS.get()

        def request(self, method: Any, url: Any, *args: Any, **kwargs: Any) -> Any:
            if kwargs.get("timeout") is None and self._construction_timeouts is not None:
                kwargs["timeout"] = self._construction_timeouts
            return super().request(method, url, *args, **kwargs)

    rest_module.Session = BoundedSession  # type: ignore[misc]


def set_rest_timeouts(catalog: Any, connect: float, read: float, *, keep_existing: bool = False) -> bool:
    """Give a REST catalog's HTTP session (``RestCatalog._session``, a ``requests.Session``) default timeouts.

    pyiceberg sends every REST request without a timeout, so a catalog that accepts the connection and then
    stalls holds the caller forever. Requests that pass their own ``timeout`` keep it. The token refresh of
    pyiceberg's legacy OAuth2 manager goes through the same session, so it is bounded too; the OAuth2 manager's
    (``auth.type: oauth2``) posts outside it and is bounded by its own wrapper; the config and token
    requests made while the catalog is constructed (before this can run) are bounded by
    :func:`rest_construction_timeouts` around the construction. Returns False when the
    catalog has no such session (not a REST catalog). With ``keep_existing`` a session that already has them
    (set by an earlier call) is left as it is."""
    session = getattr(catalog, "_session", None)
    request = getattr(session, "request", None)
    if session is None or request is None or not hasattr(session, "mount"):
        return False
    if keep_existing and hasattr(request, "__wrapped__"):
        return True
    _bound_token_refresh(catalog, connect, read)
    original = getattr(request, "__wrapped__", request)

    def with_timeout(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = (connect, read)
        return original(method, url, *args, **kwargs)

    with_timeout.__wrapped__ = original  # type: ignore[attr-defined]
    session.request = with_timeout
    return True


_FILEIO_SETUP = frozenset({"load_file_io", "_import_file_io", "_infer_file_io_from_scheme", "_initialize_fs",
                           "_initialize_oss_fs", "_initialize_s3_fs", "_initialize_azure_fs", "_initialize_hdfs_fs",
                           "_initialize_gcs_fs", "_initialize_local_fs"})


def is_fileio_setup_error(exc: BaseException) -> bool:
    """Was ``exc`` (a ValueError/TypeError) raised while pyiceberg built a FileIO or one of its filesystems from the
    catalog's properties (``load_file_io``, ``PyArrowFileIO._initialize_*_fs``)? Then a property is malformed
    (``s3.connect-timeout=soon``, a ``py-io-impl`` that cannot be imported), which pyiceberg reports only at the
    first read, deep inside a verb."""
    if not isinstance(exc, (ValueError, TypeError)):
        return False
    tb = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_name in _FILEIO_SETUP and "pyiceberg" in code.co_filename:
            return True
        tb = tb.tb_next
    return False


def is_unwritable_format_error(exc: BaseException) -> bool:
    """Was ``exc`` pyiceberg refusing to write a table format it only reads (format v3 in 0.12: "Writing V3 is not
    yet supported" when a client-side catalog writes the metadata.json, "Cannot write manifest for table version:
    3" when a commit writes a manifest)? It raises a bare ``NotImplementedError``, or a ``ValueError`` for the
    manifest, which reached users of the verbs that commit (configure, backfill, expire, ...) as a traceback."""
    if not isinstance(exc, (NotImplementedError, ValueError)):
        return False
    text = str(exc)
    return "Writing V3 is not yet supported" in text or "Cannot write manifest for table version" in text


def bound_gcs_retries(property_name: str, default_ms: int) -> None:
    """Give every GCS filesystem pyiceberg's pyarrow FileIO builds (``PyArrowFileIO._initialize_gcs_fs``) a retry
    time limit: pyiceberg passes none, and the GCS client then retries a failing request (an endpoint that does
    not answer, credentials it cannot get) for 15 minutes before it raises. The limit is the FileIO property
    ``property_name`` in milliseconds (default ``default_ms``); a filesystem that already has one keeps it.
    Installed once per process (every FileIO, whoever built it: a table's, an export's, a Spark executor's)."""
    from datetime import timedelta

    from pyiceberg.io.pyarrow import PyArrowFileIO


    original = PyArrowFileIO.__dict__.get("_initialize_gcs_fs")
    if original is None or hasattr(original, "__wrapped__"):
        return

    def _initialize_gcs_fs(self: PyArrowFileIO) -> Any:
        from iceberg_privacy._internal.property_values import milliseconds

        ms = milliseconds(self.properties, property_name, default_ms, "storage")
        fs = original(self)
        rebuild, (kwargs,) = fs.__reduce__()  # GcsFileSystem._reconstruct, with every option pyiceberg set
        if kwargs.get("retry_time_limit") is not None:
            return fs
        return rebuild({**kwargs, "retry_time_limit": timedelta(milliseconds=ms)})

    _initialize_gcs_fs.__wrapped__ = original  # type: ignore[attr-defined]
    PyArrowFileIO._initialize_gcs_fs = _initialize_gcs_fs  # type: ignore[method-assign]
