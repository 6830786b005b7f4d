"""Differentially private releases over Iceberg tables (Tumult Analytics on Spark).

Importing this package is cheap: Spark and tmlt are imported only when a release is computed.

One-table verbs take the table first (``dp_histogram(table, by, budget=..., catalog=...)``,
``set_budget(table, cap, catalog=...)``, ``get_budget(table, catalog=...)``); lake verbs take the
catalog first (``set_namespace_budget(catalog, namespace, cap)``, ``get_namespace_budget(catalog,
namespace)``, ``releases(catalog, table=None)``, ``reservations(catalog, table=None)``,
``resolve_reservations(catalog, older_than)``, ``set_access_policy(catalog, target, ...)``,
``access_policy(catalog, table)``).
"""

from iceberg_privacy.dp.admin import get_budget, get_namespace_budget, set_budget, set_namespace_budget
from iceberg_privacy.dp.arguments import ROWS, RowUnit
from iceberg_privacy.dp.budget import ApproxDP, Budget, PureDP, RhoZCDP
from iceberg_privacy.dp.errors import (
    BudgetExhaustedError,
    BudgetTypeMismatchError,
    InvalidArgumentError,
    InvalidBudgetError,
    KeySetError,
    LedgerConflictError,
    LedgerCorruptError,
    LedgerPropertyTooLargeError,
    NoBudgetConfiguredError,
    PrivacyUnitRequiredError,
    QueryCapExceededError,
    ReleaseAbortedError,
    ReleaseFailedError,
    ReleaseInProgressError,
    TableMovedError,
)
from iceberg_privacy.dp.histogram import dp_histogram
from iceberg_privacy.dp.ledger import Ledger
from iceberg_privacy.dp.ledger_state import BudgetState, namespace_scope, table_scope
from iceberg_privacy.dp.log import ReleaseRecord, releases
from iceberg_privacy.dp.policy import AccessPolicy, access_policy, require_raw_access, set_access_policy
from iceberg_privacy.dp.provenance import ReleaseProvenance, read_provenance
from iceberg_privacy.dp.release import Release
from iceberg_privacy.dp.reservation import (
    ReservationRecord,
    ResolutionReport,
    reservations,
    resolve_reservations,
)
from iceberg_privacy.dp.sql import CompiledSql, SqlRelease, compile_sql, dp_sql
from iceberg_privacy.dp.synth import SynthesisReport, dp_synthesize, is_synthetic

__all__ = [
    "ROWS",
    "AccessPolicy",
    "CompiledSql",
    "SqlRelease",
    "compile_sql",
    "dp_sql",
    "QueryCapExceededError",
    "access_policy",
    "require_raw_access",
    "set_access_policy",
    "ApproxDP",
    "Budget",
    "BudgetState",
    "BudgetExhaustedError",
    "BudgetTypeMismatchError",
    "InvalidArgumentError",
    "InvalidBudgetError",
    "KeySetError",
    "Ledger",
    "LedgerConflictError",
    "LedgerCorruptError",
    "LedgerPropertyTooLargeError",
    "NoBudgetConfiguredError",
    "PrivacyUnitRequiredError",
    "PureDP",
    "Release",
    "ReleaseAbortedError",
    "ReleaseFailedError",
    "ReleaseInProgressError",
    "TableMovedError",
    "ReleaseProvenance",
    "ReleaseRecord",
    "ReservationRecord",
    "ResolutionReport",
    "RhoZCDP",
    "RowUnit",
    "SynthesisReport",
    "dp_histogram",
    "dp_synthesize",
    "get_budget",
    "get_namespace_budget",
    "is_synthetic",
    "namespace_scope",
    "read_provenance",
    "releases",
    "reservations",
    "resolve_reservations",
    "set_budget",
    "set_namespace_budget",
    "table_scope",
]
