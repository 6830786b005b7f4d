"""Every ``privacy.*`` key the library reads or writes, in one place.

Iceberg gives a table two places for free-form strings: **table properties** (configuration that
applies from now on) and the **snapshot summary** of each commit (facts about that commit). The
library keeps all of its state in those two maps plus its own tables, so this module is the full
list of what it may leave in a user's metadata. Another engine (Spark SQL, Trino, a Java or Rust
implementation) can honour or produce these keys from this list and the specs in ``docs/``.

Keys are grouped by pillar. Table properties are named ``*_PROPERTY`` or ``*_MARKER`` (a marker
flags one of the library's own tables, ``m`` or ``m.*``, so catalog walkers skip it); snapshot
summary keys are named ``*_SUMMARY``. Keys that carry a column name are built by the functions at
the end. ``iceberg-privacy.*`` catalog properties (where the library's own tables live) are in
:mod:`iceberg_privacy.catalog`.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from typing import Any

from pyiceberg.table import Table

# -- index: Bloom-filter sidecars (docs/sidecar-format.md) ----------------------------------------
BLOOM_COLUMNS_PROPERTY = "privacy.bloom.columns"
"""Comma-separated top-level columns that get a Bloom filter per data file."""
BLOOM_FIELD_IDS_PROPERTY = "privacy.bloom.field-ids"
"""``name=field-id`` pairs (comma-separated) for the names in ``privacy.bloom.columns``, written with them:
a column renamed since is still found by its Iceberg field id (see :func:`iceberg_privacy.config.bloom_columns`)."""
BLOOM_PREFIX = "privacy.bloom."
"""``privacy.bloom.<column>.fpp`` and ``privacy.bloom.<column>.ndv``: see :func:`bloom_fpp_key`."""
SIDECAR_PATH_SUMMARY = "privacy.sidecar.path"
SIDECAR_BYTES_SUMMARY = "privacy.sidecar.bytes"
SIDECAR_FILES_SUMMARY = "privacy.sidecar.files"
SIDECAR_COLUMNS_SUMMARY = "privacy.sidecar.columns"
SIDECAR_COMPACTED_PROPERTY = "privacy.sidecar.compacted"
SIDECAR_COMPACTED_BYTES_PROPERTY = "privacy.sidecar.compacted-bytes"

# -- index: the exact identity index (docs/exact-index.md) ----------------------------------------
INDEX_PREFIX = "privacy.index."
"""``privacy.index.<column>`` = ``bloom`` | ``exact`` | ``bloom,exact``: see :func:`index_kind_key`."""
EXACT_COMPACT_AFTER_PROPERTY = "privacy.index.exact.compact-after-deltas"
"""Compact the sidecars (deltas -> base) automatically after a commit once this many exact deltas are
newer than the base; ``0`` turns the trigger off. Default: :data:`EXACT_COMPACT_AFTER_DEFAULT`."""
EXACT_COMPACT_AFTER_DEFAULT = 32

# -- subject rights (docs/subject-rights.md, docs/forget-list.md) ---------------------------------
IDENTITY_COLUMNS_PROPERTY = "privacy.identity.columns"
"""Comma-separated top-level columns that identify a person (access and erasure requests use them)."""
IDENTITY_FIELD_IDS_PROPERTY = "privacy.identity.field-ids"
"""``name=field-id`` pairs (comma-separated) for the names in ``privacy.identity.columns``, written with them:
a declared column renamed since is resolved by its Iceberg field id, so requests keep working after
``rename_column``; a name without a pair (a declaration made before this key existed) is resolved by name."""
ERASURE_REQUEST_SUMMARY = "privacy.erasure.request-id"
ERASURE_ROWS_SUMMARY = "privacy.erasure.rows-removed"
ERASURE_FILES_REWRITTEN_SUMMARY = "privacy.erasure.files-rewritten"
ERASURE_FILES_ADDED_SUMMARY = "privacy.erasure.files-added"
ERASURE_SUBJECTS_SUMMARY = "privacy.erasure.subjects"
ERASURE_KEY_ID_SUMMARY = "privacy.erasure.key-id"
ERASURE_SCRUB_SUMMARY = "privacy.erasure.scrub"
"""The empty commit a purge makes to drop manifests that still list erased files."""
JOURNAL_MARKER = "privacy.journal"
PURGE_SAVED_PROPERTIES_PROPERTY = "privacy.purge.saved-metadata-properties"
"""Set (JSON of the user's values) while a purge trims the metadata log, so a re-run after a crash between
the trim and the restore puts the user's own values back, not the purge's."""
QUEUE_MARKER = "privacy.queue"
"""The encrypted request queue (``<journal namespace>.request_queue``, docs/subject-rights.md)."""
HISTORY_MAINTAIN_EVERY_PROPERTY = "privacy.history.maintain-every"
"""On the library's own append-mostly tables (the journal, the queue, a DP ledger, the service token table): run
their history upkeep (:mod:`iceberg_privacy.history`: compact small files, expire old snapshots, delete what only
those reached) after a commit once the table holds this many snapshots; ``0`` turns the automatic trigger off (a
queue pass still runs it on the journal and the queue). Default: :data:`HISTORY_MAINTAIN_EVERY_DEFAULT`, on a
ledger ``iceberg_privacy.dp.ledger.COMPACT_AT_SNAPSHOTS`` (64)."""
HISTORY_MAINTAIN_EVERY_DEFAULT = 16
HISTORY_MAINTENANCE_SUMMARY = "privacy.history.compacted-files"
"""Summary of the history upkeep's merge commit (journal, queue, ledger, token table): how many small data files
it merged."""
FORGET_MARKER = "privacy.forget.list"
FORGET_DROPPED_SUMMARY = "privacy.forget.dropped-rows"
FORGET_VERSION_SUMMARY = "privacy.forget.version"

DEMO_MARKER = "privacy.demo"
"""Set to ``true`` on tables the demos create: a demo re-run replaces only tables carrying it, never a user's."""

# -- lineage (docs/lineage.md) --------------------------------------------------------------------
LINEAGE_SUMMARY = "privacy.lineage"
LINEAGE_HISTORY_PROPERTY = "privacy.lineage.history"
SENSITIVE_PREFIX = "privacy.sensitive."
"""``privacy.sensitive.<column>`` = comma-separated category labels."""
PURPOSES_PROPERTY = "privacy.purposes"
PURPOSE_PROPERTY = "privacy.purpose"
STREAMING_QUERY_ID_SUMMARY = "privacy.streaming.query-id"
STREAMING_BATCH_ID_SUMMARY = "privacy.streaming.batch-id"
STREAMING_LAST_BATCH_PREFIX = "privacy.streaming.last-batch."
"""Table property ``privacy.streaming.last-batch.<query id>`` = the last batch id committed for that streaming
query, set in the batch's own commit: exactly-once survives expiry of the snapshots that carry the summary keys."""
STREAMING_SPARK_QUERY_ID_SUMMARY = "privacy.streaming.spark-query-id"
STREAMING_SPARK_QUERY_PREFIX = "privacy.streaming.spark-query."
"""Table property ``privacy.streaming.spark-query.<query id>`` (and summary key ``privacy.streaming.spark-query-id``) =
Spark's own query id (the one its checkpoint keeps) that committed the last batch of that library query id: a
``streaming.query-id`` reused with a new checkpoint (batch ids restart at 0) is refused instead of its batches being
skipped as "already committed"."""

# -- differential privacy (docs/dp.md) ------------------------------------------------------------
DP_PREFIX = "privacy.dp."
"""Release provenance keys are ``privacy.dp.<name>`` in the release snapshot's summary."""
DP_PRINCIPAL_SUMMARY = "privacy.dp.principal"
"""The provenance key naming the principal who ran a release (the query service shows it to that principal only)."""
DP_RELEASE_MARKER = "privacy.dp.release"
DP_LEDGER_MARKER = "privacy.dp.ledger"
DP_BUDGETS_PROPERTY = "privacy.dp.budgets"
DP_SPENT_PROPERTY = "privacy.dp.spent"
DP_POLICIES_PROPERTY = "privacy.dp.policies"
DP_OPEN_PROPERTY = "privacy.dp.open"
"""Ledger table property: the open reservations (``reserved`` / ``evaluating``) by release id, kept in every
commit that changes one, so a state check never folds the whole event history (docs/dp.md, "Ledger state")."""
DP_MEMO_PROPERTY = "privacy.dp.memo"
"""Ledger table property: the latest release of each (query hash, source snapshot), the memo's index."""
DP_MAX_PROPERTY_BYTES_PROPERTY = "privacy.dp.max-property-bytes"
"""Ledger table property (an integer, bytes): the largest UTF-8 size a ledger commit may give one of the ledger's
table properties (default ``ledger.MAX_PROPERTY_BYTES``, 512 KiB: AWS Glue's limit per parameter value; an older
Hive metastore schema stores a value in a varchar(4000): set 4000 there). A commit that would grow a property past
it is refused before anything is written; the memo is trimmed to fit instead (docs/dp.md, "Property sizes")."""
DP_TABLES_PROPERTY = "privacy.dp.tables"
"""Ledger table property: table identity, ``{table uuid: {"name", "names", "scopes"}}`` (or a tombstone with
``"moved_to"`` and ``"carried"``): which table scopes each table is charged to and governed by, so budgets,
spend and table policies follow the table's uuid through renames and moves (docs/dp.md, "Table identity")."""
"""Ledger-table property: the access policy of each scope (``namespace:<ns>`` / ``table:<ns>.<t>``), JSON;
kept in the ledger so a reservation checks the policy and the budget in ONE compare-and-swap commit."""
ACCESS_KEY = "privacy.access"
"""A policy's access mode: ``dp-only`` (only DP releases, raw reads refused) or ``open``."""
ACCESS_MAX_PER_QUERY_KEY = "privacy.access.max-per-query"
"""A policy's per-query cap (BigQuery's ``max_epsilon_per_query``), a budget JSON."""
ACCESS_PRIVACY_UNIT_KEY = "privacy.access.privacy-unit"
"""A policy's privacy unit: a column name, or ``rows`` (with ``privacy.access.max-rows-per-unit``)."""
ACCESS_PRIVACY_UNIT_FIELD_IDS_KEY = "privacy.access.privacy-unit-field-ids"
"""The field id the privacy-unit column had in each table the policy governed when it was set: ``{table uuid:
field id}``. A release resolves the unit by it, so a rename (or two columns swapping names) cannot move it."""
ACCESS_MAX_ROWS_KEY = "privacy.access.max-rows-per-unit"
ACCESS_BOUNDS_KEY = "privacy.access.column-bounds"
"""A policy's public clamping bounds per numeric column: ``{"price": [0, 100]}``."""
ACCESS_PUBLIC_KEYS_KEY = "privacy.access.public-keys"
"""A policy's public key sets per column: ``{"country": ["DE", "FR"]}`` (GROUP BY without discovery)."""
ACCESS_CARRIED_FROM_KEY = "privacy.access.carried-from"
"""Set on a table policy that a move across namespaces carried from the old namespace (its scope): such a
policy never opens up a dp-only namespace it moved into (docs/dp.md, "Table identity")."""
SYNTHETIC_MARKER = "privacy.synthetic"
"""Table property ``true`` on a table written by ``dp_synthesize``: every row is DP synthetic data (no person's
row), so it may be read without spending budget (docs/dp.md, "DP synthetic data")."""
DP_SQL_SUMMARY = "privacy.dp.sql"
"""Release snapshot summary: the normalized DP SQL that produced it (``privacy.dp.sql.hash``: its sha256)."""
DP_SQL_HASH_SUMMARY = "privacy.dp.sql.hash"
DP_SYNTHESIS_SUMMARY = "privacy.dp.synthesis"
"""On a DP synthetic table's snapshot: the fitted model MST chose (JSON: method, rho, selected tree, row counts)."""

# -- the query service (docs/confidential.md) -----------------------------------------------------
SERVICE_TOKENS_MARKER = "privacy.service.tokens"
"""The bearer-token table of ``iceberg-privacy serve`` (``<journal namespace>.service_tokens``)."""
SERVICE_TOKENS_STATE_PROPERTY = "privacy.service.tokens.state"
"""JSON of every token's id, principal, scrypt hash, expiry and revocation (never a plaintext token)."""

# -- which tables are the library's own ------------------------------------------------------------
BOOKKEEPING_MARKERS = (JOURNAL_MARKER, QUEUE_MARKER, "privacy.forget", DP_LEDGER_MARKER, SERVICE_TOKENS_MARKER)
"""The library's bookkeeping tables (journal, forget lists, DP ledgers): never subjects of a request."""
LIBRARY_MARKERS = (*BOOKKEEPING_MARKERS, DP_RELEASE_MARKER)
"""Bookkeeping tables plus DP release tables."""


def bloom_fpp_key(column: str) -> str:
    """``privacy.bloom.<column>.fpp``: target false-positive probability of the column's filters."""
    return f"{BLOOM_PREFIX}{column}.fpp"


def bloom_ndv_key(column: str) -> str:
    """``privacy.bloom.<column>.ndv``: distinct-count hint per data file."""
    return f"{BLOOM_PREFIX}{column}.ndv"


def index_kind_key(column: str) -> str:
    """``privacy.index.<column>``: which indexes the column gets (``bloom``, ``exact`` or ``bloom,exact``)."""
    return f"{INDEX_PREFIX}{column}"


def sensitive_key(column: str) -> str:
    """``privacy.sensitive.<column>``."""
    return f"{SENSITIVE_PREFIX}{column}"


def dp_key(name: str) -> str:
    """``privacy.dp.<name>``, a release-provenance summary key."""
    return f"{DP_PREFIX}{name}"


_DP_JSON_FIELDS = ("query", "mechanism", "budget", "contribution", "keys.source", "versions")
_DP_INT_FIELDS = ("source.snapshot-id", "ledger.snapshot-id")
# summary name (after ``privacy.dp.``) -> ReleaseProvenance field
_DP_FIELDS = {
    "release-id": "release_id", "source.table": "source_table", "source.uuid": "source_uuid",
    "source.snapshot-id": "source_snapshot_id", "query": "query", "query.hash": "query_hash",
    "mechanism": "mechanism", "budget.type": "budget_type", "budget": "budget", "contribution": "contribution",
    "keys.source": "keys_source", "threshold": "threshold", "principal": "principal",
    "released-at": "released_at", "versions": "versions", "ledger.table": "ledger_table",
    "ledger.snapshot-id": "ledger_snapshot_id", "sql": "sql", "sql.hash": "sql_hash",
}


@dataclass(frozen=True)
class ReleaseProvenance:
    """What a DP release snapshot says about itself (``privacy.dp.*`` in its summary, docs/dp.md).

    Every field is decoded from the release table's snapshot summary, so anyone who can read the
    release table can check it without the library. ``extra`` keeps ``privacy.dp.*`` keys this
    version does not know (written by a newer one), undecoded.
    """

    snapshot_id: int
    release_id: str = ""
    source_table: str = ""
    source_uuid: str = ""
    source_snapshot_id: int | None = None
    query: dict[str, Any] = field(default_factory=dict)
    query_hash: str = ""
    mechanism: list[dict[str, Any]] = field(default_factory=list)
    """tmlt's noise info per measurement, with the standard deviation and expected |error| it implies."""
    budget_type: str = ""
    budget: dict[str, Any] = field(default_factory=dict)
    contribution: dict[str, Any] = field(default_factory=dict)
    keys_source: dict[str, Any] = field(default_factory=dict)
    threshold: float | None = None
    principal: str = ""
    released_at: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    ledger_table: str = ""
    ledger_snapshot_id: int | None = None
    sql: str = ""
    """The normalized DP SQL of a :func:`~iceberg_privacy.dp_sql` release ("" for other releases)."""
    sql_hash: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The decoded summary keyed by summary name (``query.hash``, ``keys.source``, ...), plus ``snapshot_id``."""
        out: dict[str, Any] = {"snapshot_id": self.snapshot_id}
        for name, attr in _DP_FIELDS.items():
            out[name] = getattr(self, attr)
        out.update(self.extra)
        return out

    def __getitem__(self, key: str) -> Any:
        warnings.warn(
            f"provenance[{key!r}] is deprecated: read the attribute instead "
            f"(provenance.{_DP_FIELDS.get(key, key).replace('.', '_').replace('-', '_')}).",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.to_dict()[key]

    def get(self, key: str, default: Any = None) -> Any:
        """Dict-style read, kept for one release (deprecated: read the attribute)."""
        warnings.warn("provenance.get(...) is deprecated: read the attribute instead.", DeprecationWarning,
                      stacklevel=2)
        return self.to_dict().get(key, default)

    def __str__(self) -> str:
        threshold = "" if self.threshold is None else f", threshold {self.threshold:g}"
        return (
            f"DP release {self.release_id[:12]} at snapshot {self.snapshot_id}: {self.source_table}"
            f"@{self.source_snapshot_id}, {self.budget_type} budget {self.budget}{threshold}, "
            f"asked by {self.principal or '?'} at {self.released_at}"
        )


def read_release_provenance(table: Table, snapshot_id: int | None = None) -> ReleaseProvenance | None:
    """Decode the provenance of a release snapshot (the current one by default).

    Returns None for a snapshot that is not a DP release (or does not exist), including one whose summary carries the
    release marker without a release id, or with a value that does not decode (a foreign writer's copy of the
    marker, a hand edit): its provenance names nothing.
    """
    snap = table.current_snapshot() if snapshot_id is None else table.snapshot_by_id(snapshot_id)
    if snap is None or snap.summary is None:
        return None
    props = {k: v for k, v in snap.summary.additional_properties.items() if k.startswith(DP_PREFIX)}
    if props.get(DP_RELEASE_MARKER) != "1" or not props.get(DP_PREFIX + "release-id"):
        return None
    try:
        return _decode_provenance(snap.snapshot_id, props)
    except (ValueError, TypeError):  # json.JSONDecodeError is a ValueError; a field missing is a TypeError
        return None


def _decode_provenance(snapshot_id: int, props: dict[str, str]) -> ReleaseProvenance:
    fields: dict[str, Any] = {}
    extra: dict[str, str] = {}
    for key, value in props.items():
        name = key[len(DP_PREFIX) :]
        if key == DP_RELEASE_MARKER:
            continue
        if name not in _DP_FIELDS:
            extra[name] = value
        elif name in _DP_JSON_FIELDS:
            fields[_DP_FIELDS[name]] = json.loads(value)
        elif name in _DP_INT_FIELDS:
            fields[_DP_FIELDS[name]] = int(value) if value else None
        elif name == "threshold":
            fields[_DP_FIELDS[name]] = float(value) if value else None
        else:
            fields[_DP_FIELDS[name]] = value
    return ReleaseProvenance(snapshot_id=snapshot_id, extra=extra, **fields)


_ROWS_UNCHANGED = ("replace", "delete")
"""Snapshot operations that add no row: a rewrite (compaction) or a delete of whole files."""


@dataclass(frozen=True)
class ReleasedRows:
    """The snapshot of a DP output table (release or synthetic table) whose rows are all DP output:
    ``snapshot_id``, reached from the release snapshot ``release_snapshot_id`` (whose summary is the
    provenance) by commits that only rewrote or deleted rows; ``current`` when it is the table's current
    snapshot (no commit since added rows)."""

    snapshot_id: int
    release_snapshot_id: int
    current: bool


def _count(summary: Any, key: str) -> int | None:
    """A whole-number summary field (``added-records``, ...), None when absent or not a number."""
    value = summary.get(key) if summary is not None else None
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _holds_only_its_rows(summary: Any) -> bool:
    """A release snapshot as the library commits it: its rows are all the table holds (the previous contents were
    deleted in the same transaction): ``total-records == added-records``. A commit of another writer that copied
    ``privacy.dp.release=1`` into its summary (pyiceberg ``snapshot_properties``, a Spark commit property) while
    appending to rows already there is not one. A release of no rows (every count under the threshold) has no
    ``added-records``: a snapshot holding no row holds no other rows either."""
    added, total = _count(summary, "added-records"), _count(summary, "total-records")
    return total is not None and (added if added is not None else 0) == total


def _adds_no_row(summary: Any) -> bool:
    """A commit after the release that cannot have brought in other rows: a delete adding no record, a rewrite
    (compaction, manifest rewrite) adding no more records than it removed. Iceberg does not check a ``replace``
    commit's files hold the same rows: a writer labelling an append as a rewrite is refused by its counts."""
    if summary is None or summary.operation.value not in _ROWS_UNCHANGED:
        return False
    added = _count(summary, "added-records") or 0
    if summary.operation.value == "delete":
        return added == 0
    return added <= (_count(summary, "deleted-records") or 0)


def released_rows(table: Table, snapshot_id: int | None = None) -> ReleasedRows | None:
    """Which snapshot of ``table`` holds DP output only (:class:`ReleasedRows`); None when no release snapshot is
    in the ancestry of the current snapshot (or of ``snapshot_id``, a snapshot a read is pinned to: time travel,
    a tag, a branch head): the table was replaced, its release snapshot expired, or it has none. ``current`` then
    says whether that snapshot itself holds DP output only.

    The table properties ``privacy.dp.release`` / ``privacy.synthetic`` alone prove nothing about the rows: they
    stay when another job appends raw rows to the table (plain pyiceberg, Spark ``INSERT INTO``) or replaces its
    contents (``CREATE OR REPLACE TABLE ... AS`` keeps table properties). The release snapshot's summary
    (``privacy.dp.release=1``, written in the release's one commit, holding every row of the table) and the
    operations since do."""
    from pyiceberg.table.snapshots import ancestors_of

    current = table.current_snapshot() if snapshot_id is None else table.snapshot_by_id(snapshot_id)
    if current is None:
        return None
    since: list[Any] = []  # newest first: the commits after the release snapshot
    for snap in ancestors_of(current, table.metadata):
        summary = snap.summary
        if summary is not None and summary.additional_properties.get(DP_RELEASE_MARKER) == "1" \
                and _holds_only_its_rows(summary):
            served = snap
            for later in reversed(since):
                if not _adds_no_row(later.summary):
                    break
                served = later
            return ReleasedRows(served.snapshot_id, snap.snapshot_id, served.snapshot_id == current.snapshot_id)
        since.append(snap)
    return None
