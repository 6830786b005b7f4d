"""iceberg-privacy: privacy operations for Apache Iceberg lakes.

Find and erase a person fast (Bloom-filter sidecars + a pruning planner), publish differentially
private statistics, and know where data went. Everything re-exported here is the public API;
everything else is internal and may change without notice.

One set of conventions holds for every call (README, "Python API"):

- A verb about one table takes a table reference first: a loaded pyiceberg ``Table``,
  ``"namespace.table"`` or ``("namespace", "table")``; a name is loaded from ``catalog=`` (by default
  the catalog :func:`connect` returns). A verb about the lake takes the ``Catalog`` first.
- Ages are ``timedelta``; commits that may lose to concurrent writers take ``commit_retries``.
- Every call returns a report dataclass with a readable ``str()`` (lookups return the rows).
- Every error is an :class:`IcebergPrivacyError` whose message says what to do next.

What each call may raise (all importable from here; ``except ip.IcebergPrivacyError`` catches every one):

- any call: :class:`ConfigurationError` for a wrong argument or a missing table, raised before anything is
  written (a Table where a lake verb takes the Catalog, ``purge="no"``, an age that is not a timedelta);
  :class:`StorageError` (also an ``OSError``) when object storage refuses a read, write or delete;
  :class:`CatalogError` when the catalog service does not answer; :class:`CommitConflictError` when
  ``commit_retries`` ran out;
- writes and lookups: :class:`SchemaMismatchError`, :class:`UnsupportedDataError`,
  :class:`UnknownColumnError`, :class:`UnsupportedTypeError`, :class:`InvalidLookupValueError`;
- subject rights: :class:`SecretMissingError`, :class:`NoIdentityColumnsError`,
  :class:`RequestConflictError`, :class:`UnknownRequestError`, :class:`RequestBlockedError`,
  :class:`VerificationFailedError` (a purge found a subject left), :class:`ForgetKeyMismatchError`;
- differential privacy: :class:`BudgetExhaustedError`, :class:`NoBudgetConfiguredError`,
  :class:`InvalidBudgetError`, :class:`InvalidArgumentError`, :class:`PrivacyUnitRequiredError`,
  :class:`DpOnlyError`, :class:`DpSqlRefusedError`, :class:`QueryCapExceededError`;
- lineage: :class:`PurposeViolationError`, :class:`OpaqueSqlError`, :class:`MissingSourceError`,
  :class:`LineageError`.
"""

import importlib as _importlib
import warnings as _warnings
from importlib import util as _importlib_util
from typing import TYPE_CHECKING
from typing import Any as _Any

from iceberg_privacy._internal import pyiceberg_config as _pyiceberg_config

# before pyiceberg reads the file at import: a malformed one must not break the import (nor the CLI's error
# handler); connect() raises its clear ConfigurationError at first use
_pyiceberg_config.import_pyiceberg()

# -- errors (one hierarchy) -------------------------------------------------------------------------
from iceberg_privacy.errors import (
    BudgetError,
    BudgetExhaustedError,
    BudgetTypeMismatchError,
    CatalogError,
    CommitConflictError,
    ConfigurationError,
    DpOnlyError,
    DpSqlRefusedError,
    ForgetKeyMismatchError,
    ForgetListError,
    IcebergPrivacyError,
    InvalidArgumentError,
    InvalidBudgetError,
    InvalidLookupValueError,
    KeySetError,
    LedgerConflictError,
    LedgerCorruptError,
    LedgerPropertyTooLargeError,
    LineageError,
    MissingSourceError,
    NamespaceNotFoundError,
    NoBudgetConfiguredError,
    NoIdentityColumnsError,
    OpaqueSqlError,
    PrivacyUnitRequiredError,
    PurposeViolationError,
    QueryCapExceededError,
    QueueIntegrityError,
    RefHoldsSubjectError,
    ReleaseAbortedError,
    ReleaseFailedError,
    ReleaseInProgressError,
    RequestBlockedError,
    RequestConflictError,
    SchemaMismatchError,
    SecretMissingError,
    SidecarError,
    SparkJobError,
    StorageError,
    StreamingQueryReusedError,
    SubjectRightsError,
    TableMovedError,
    TableNotFoundError,
    TooManyLinkedIdentifiersError,
    UnknownColumnError,
    UnknownRequestError,
    UnsupportedDataError,
    UnsupportedSparkTypeError,
    UnsupportedTypeError,
    VerificationFailedError,
)
from iceberg_privacy.version import __version__ as __version__

# -- everything else is imported at first use (PEP 562 ``__getattr__`` below): ``import iceberg_privacy`` stays cheap,
# so the CLI's ``--help``, a Spark Python worker or ``except ip.IcebergPrivacyError`` do not pay for pyiceberg's
# catalogs, sqlglot and Tumult. ``_LAZY`` (public name's module -> names) and the ``TYPE_CHECKING`` imports below,
# which type checkers and editors read, list the same names (tests/core/test_public_api.py checks they agree).
_LAZY: dict[str, tuple[str, ...]] = {
    'iceberg_privacy.catalog': ('TableRef', 'connect',),
    'iceberg_privacy.config': ('BloomColumn', 'IdentityColumn', 'configure_bloom', 'configure_identity', 'configure_index',),
    'iceberg_privacy.dp': ('ROWS', 'AccessPolicy', 'ApproxDP', 'BudgetState', 'CompiledSql', 'PureDP', 'Release', 'ReleaseProvenance', 'ReleaseRecord', 'ReservationRecord', 'ResolutionReport', 'RhoZCDP', 'SqlRelease', 'SynthesisReport', 'access_policy', 'compile_sql', 'dp_histogram', 'dp_sql', 'dp_synthesize', 'get_budget', 'get_namespace_budget', 'read_provenance', 'releases', 'require_raw_access', 'reservations', 'resolve_reservations', 'set_access_policy', 'set_budget', 'set_namespace_budget',),
    'iceberg_privacy.index.lookup': ('lookup',),
    'iceberg_privacy.index.maintenance': ('IndexReport', 'SidecarCheck', 'SidecarStatus', 'SidecarVerification', 'backfill', 'compact_sidecars', 'expire_snapshots', 'sidecar_status', 'verify_sidecars',),
    'iceberg_privacy.index.orphans': ('OrphanReport', 'cleanup_orphans',),
    'iceberg_privacy.index.planner': ('LookupPlan', 'plan_lookup',),
    'iceberg_privacy.index.registry': ('SidecarWarning',),
    'iceberg_privacy.lineage': ('LineageGraph', 'LineageRecord', 'annotate',),
    'iceberg_privacy.lineage.derive': ('DeriveReport', 'derive',),
    'iceberg_privacy.rights.journal': ('Journal', 'RequestState',),
    'iceberg_privacy.rights.keyed': ('init_secret',),
    'iceberg_privacy.rights.purge': ('purge',),
    'iceberg_privacy.rights.queue': ('QueuedRequest', 'QueueReport', 'enqueue', 'enqueue_many', 'run_pending',),
    'iceberg_privacy.rights.reports': ('AccessReport', 'ErasureReport', 'LinkedIdentifier', 'LinkedIdentifiers', 'PurgeReport', 'TableErasure', 'TableExport', 'TablePurge', 'VerifyReport',),
    'iceberg_privacy.rights.requests': ('access', 'erase', 'run_request', 'submit_request',),
    'iceberg_privacy.write': ('WriteReport', 'append', 'overwrite',),
}

if TYPE_CHECKING:
    # -- the lake: connect, configure, write ------------------------------------------------------------
    from iceberg_privacy.catalog import TableRef, connect
    from iceberg_privacy.config import (
        BloomColumn,
        IdentityColumn,
        configure_bloom,
        configure_identity,
        configure_index,
    )

    # -- differential privacy ---------------------------------------------------------------------------
    from iceberg_privacy.dp import (
        ROWS,
        AccessPolicy,
        ApproxDP,
        BudgetState,
        CompiledSql,
        PureDP,
        Release,
        ReleaseProvenance,
        ReleaseRecord,
        ReservationRecord,
        ResolutionReport,
        RhoZCDP,
        SqlRelease,
        SynthesisReport,
        access_policy,
        compile_sql,
        dp_histogram,
        dp_sql,
        dp_synthesize,
        get_budget,
        get_namespace_budget,
        read_provenance,
        releases,
        require_raw_access,
        reservations,
        resolve_reservations,
        set_access_policy,
        set_budget,
        set_namespace_budget,
    )

    # -- find a person: the index, lookups, index maintenance ----------------------------------------
    from iceberg_privacy.index.lookup import lookup
    from iceberg_privacy.index.maintenance import (
        IndexReport,
        SidecarCheck,
        SidecarStatus,
        SidecarVerification,
        backfill,
        compact_sidecars,
        expire_snapshots,
        sidecar_status,
        verify_sidecars,
    )
    from iceberg_privacy.index.orphans import OrphanReport, cleanup_orphans
    from iceberg_privacy.index.planner import LookupPlan, plan_lookup
    from iceberg_privacy.index.registry import SidecarWarning

    # -- know where data went: lineage ------------------------------------------------------------------
    from iceberg_privacy.lineage import LineageGraph, LineageRecord, annotate
    from iceberg_privacy.lineage.derive import DeriveReport, derive

    # -- subject rights: access, erasure, purge -------------------------------------------------------
    from iceberg_privacy.rights.journal import Journal, RequestState
    from iceberg_privacy.rights.keyed import init_secret
    from iceberg_privacy.rights.purge import purge
    from iceberg_privacy.rights.queue import QueuedRequest, QueueReport, enqueue, enqueue_many, run_pending
    from iceberg_privacy.rights.reports import (
        AccessReport,
        ErasureReport,
        LinkedIdentifier,
        LinkedIdentifiers,
        PurgeReport,
        TableErasure,
        TableExport,
        TablePurge,
        VerifyReport,
    )
    from iceberg_privacy.rights.requests import access, erase, run_request, submit_request
    from iceberg_privacy.write import WriteReport, append, overwrite

__all__ = [
    # the lake
    "BloomColumn", "IdentityColumn", "TableRef", "WriteReport",
    "append", "configure_bloom", "configure_identity", "configure_index", "connect", "overwrite",
    # find a person
    "IndexReport", "LookupPlan", "OrphanReport", "SidecarCheck", "SidecarStatus", "SidecarVerification",
    "SidecarWarning",
    "backfill", "cleanup_orphans", "compact_sidecars", "expire_snapshots", "lookup", "plan_lookup",
    "sidecar_status", "verify_sidecars",
    # subject rights
    "AccessReport", "ErasureReport", "Journal", "LinkedIdentifier", "LinkedIdentifiers", "PurgeReport", "RequestState", "TableErasure", "TableExport",
    "QueueReport", "QueuedRequest", "TablePurge", "VerifyReport",
    "access", "enqueue", "enqueue_many", "erase", "init_secret", "purge", "run_pending", "run_request",
    "submit_request",
    # differential privacy
    "ROWS", "AccessPolicy", "ApproxDP", "BudgetState", "PureDP", "Release", "ReleaseProvenance", "ReleaseRecord",
    "ReservationRecord", "ResolutionReport", "RhoZCDP", "SynthesisReport",
    "dp_histogram", "dp_synthesize", "get_budget", "get_namespace_budget", "read_provenance", "releases", "reservations",
    "resolve_reservations", "set_budget", "set_namespace_budget",
    "CompiledSql", "SqlRelease",
    "access_policy", "compile_sql", "dp_sql", "require_raw_access", "set_access_policy",
    # lineage
    "DeriveReport", "LineageGraph", "LineageRecord",
    "annotate", "derive",
    # errors
    "BudgetError", "BudgetExhaustedError", "BudgetTypeMismatchError", "CatalogError", "CommitConflictError",
    "ConfigurationError", "DpOnlyError", "DpSqlRefusedError", "ForgetKeyMismatchError", "ForgetListError", "IcebergPrivacyError", "InvalidArgumentError",
    "InvalidBudgetError", "InvalidLookupValueError", "KeySetError", "LedgerConflictError", "LedgerCorruptError", "LedgerPropertyTooLargeError", "ReleaseInProgressError", "TableMovedError", "LineageError",
    "MissingSourceError", "NamespaceNotFoundError", "NoBudgetConfiguredError", "NoIdentityColumnsError", "OpaqueSqlError",
    "PrivacyUnitRequiredError", "PurposeViolationError", "QueryCapExceededError", "QueueIntegrityError", "RefHoldsSubjectError", "ReleaseAbortedError", "ReleaseFailedError",
    "RequestBlockedError", "RequestConflictError", "SchemaMismatchError", "SecretMissingError", "SidecarError",
    "SparkJobError", "StorageError", "StreamingQueryReusedError", "SubjectRightsError", "TableNotFoundError", "TooManyLinkedIdentifiersError", "UnknownColumnError", "UnknownRequestError",
    "UnsupportedDataError", "UnsupportedSparkTypeError", "UnsupportedTypeError", "VerificationFailedError",
]

# the query service (iceberg-privacy serve): its errors; the service itself is imported only by the CLI
from iceberg_privacy.errors import InvalidTokenError, ServiceError, ServiceRequestError  # noqa: E402

__all__ += ["InvalidTokenError", "ServiceError", "ServiceRequestError"]

# Names that were public before 0.2 and are internal now: still importable for one release, with a warning.
_MOVED = {
    "bloom_columns": ("iceberg_privacy.config", "bloom_columns", "read the table property privacy.bloom.columns"),
    "clear_sidecar_cache": ("iceberg_privacy.index.sidecar", "clear_sidecar_cache", "it is a test aid"),
    "verify_table": ("iceberg_privacy.rights.purge", "verify_table", "purge() verifies every table it purges"),
}


_MODULE_OF = {name: module for module, names in _LAZY.items() for name in names}


def __getattr__(name: str) -> _Any:
    """A public name at first use (imported from its module, then kept here), a deprecated one with its warning, or
    a subpackage (``ip.lineage.graph(...)``, ``ip.dp``) not imported yet."""
    module = _MODULE_OF.get(name)
    if module is not None:
        value = getattr(_importlib.import_module(module), name)
        globals()[name] = value
        return value
    if name in _MOVED:
        module, attr, why = _MOVED[name]
        _warnings.warn(f"iceberg_privacy.{name} is internal now ({why}); it is removed from the package root in the "
                       f"next release (it stays at {module}.{attr})", DeprecationWarning, stacklevel=2)
        return getattr(_importlib.import_module(module), attr)
    if not name.startswith("_") and _importlib_util.find_spec(f"{__name__}.{name}") is not None:
        return _importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'iceberg_privacy' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
