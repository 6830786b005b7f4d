"""Errors of differentially private releases (defined in :mod:`iceberg_privacy.errors`, re-exported here)."""

from iceberg_privacy.errors import (
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

__all__ = ["BudgetExhaustedError", "BudgetTypeMismatchError", "InvalidArgumentError", "InvalidBudgetError",
           "KeySetError", "LedgerConflictError", "LedgerCorruptError", "LedgerPropertyTooLargeError", "NoBudgetConfiguredError", "PrivacyUnitRequiredError",
           "QueryCapExceededError", "ReleaseAbortedError", "ReleaseFailedError", "ReleaseInProgressError",
           "TableMovedError"]
