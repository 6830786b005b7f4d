"""iceberg-privacy: privacy operations for Apache Iceberg lakes.

Find and erase a person fast (Bloom-filter sidecars + a pruning planner), publish differentially
private statistics, and know where data went. Everything not re-exported here is internal.
"""

from iceberg_privacy.access import AccessReport, access
from iceberg_privacy.catalog import connect
from iceberg_privacy.config import (
    BloomColumn,
    IdentityColumn,
    bloom_columns,
    configure_bloom,
    configure_identity,
)
from iceberg_privacy.derive import DeriveReport, derive
from iceberg_privacy.dp import (
    ApproxDP,
    BudgetExhaustedError,
    PureDP,
    Release,
    ReleaseFailedError,
    ReleaseRecord,
    RhoZCDP,
    dp_histogram,
    get_budget,
    read_provenance,
    releases,
    set_budget,
)
from iceberg_privacy.erasure import ErasureReport, erase, run_request
from iceberg_privacy.errors import (
    BudgetError,
    CatalogError,
    CommitConflictError,
    ConfigurationError,
    IcebergPrivacyError,
    InvalidLookupValueError,
    LineageError,
    MissingSourceError,
    NoIdentityColumnsError,
    OpaqueSqlError,
    PurposeViolationError,
    RequestConflictError,
    SchemaMismatchError,
    SidecarError,
    StorageError,
    SubjectRightsError,
    UnknownColumnError,
    UnknownRequestError,
    UnsupportedTypeError,
    VerificationFailedError,
)
from iceberg_privacy.index import SidecarWarning
from iceberg_privacy.ingest import WriteReport, append, overwrite
from iceberg_privacy.journal import Journal, RequestState
from iceberg_privacy.keyed import SecretMissingError, init_secret
from iceberg_privacy.lineage import LineageGraph, LineageRecord, annotate
from iceberg_privacy.lookup import lookup
from iceberg_privacy.maintenance import (
    IndexReport,
    OrphanReport,
    SidecarStatus,
    backfill,
    cleanup_orphans,
    compact_sidecars,
    expire_snapshots,
    sidecar_status,
    verify_sidecars,
)
from iceberg_privacy.planner import LookupPlan, plan_lookup
from iceberg_privacy.purge import PurgeReport, VerifyReport, purge, verify_table
from iceberg_privacy.sidecar import clear_sidecar_cache
from iceberg_privacy.version import __version__ as __version__

__all__ = [
    "ApproxDP",
    "BudgetExhaustedError",
    "PureDP",
    "Release",
    "ReleaseFailedError",
    "ReleaseRecord",
    "RhoZCDP",
    "dp_histogram",
    "get_budget",
    "read_provenance",
    "releases",
    "set_budget",
    "BloomColumn",
    "BudgetError",
    "CommitConflictError",
    "ConfigurationError",
    "IcebergPrivacyError",
    "IndexReport",
    "InvalidLookupValueError",
    "LookupPlan",
    "SchemaMismatchError",
    "SidecarError",
    "StorageError",
    "CatalogError",
    "OrphanReport",
    "SidecarStatus",
    "SidecarWarning",
    "UnknownColumnError",
    "UnsupportedTypeError",
    "WriteReport",
    "append",
    "backfill",
    "cleanup_orphans",
    "compact_sidecars",
    "expire_snapshots",
    "bloom_columns",
    "clear_sidecar_cache",
    "configure_bloom",
    "connect",
    "lookup",
    "overwrite",
    "plan_lookup",
    "sidecar_status",
    "verify_sidecars",
    "AccessReport",
    "ErasureReport",
    "Journal",
    "PurgeReport",
    "RequestState",
    "SecretMissingError",
    "VerifyReport",
    "access",
    "erase",
    "init_secret",
    "purge",
    "run_request",
    "verify_table",
    "IdentityColumn",
    "configure_identity",
    "NoIdentityColumnsError",
    "RequestConflictError",
    "SubjectRightsError",
    "UnknownRequestError",
    "VerificationFailedError",
    "DeriveReport",
    "LineageError",
    "LineageGraph",
    "LineageRecord",
    "MissingSourceError",
    "OpaqueSqlError",
    "PurposeViolationError",
    "annotate",
    "derive",
]
