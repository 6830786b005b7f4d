"""Errors of differentially private releases (defined in :mod:`iceberg_privacy.errors`, re-exported here)."""

from iceberg_privacy.errors import (
    BudgetExhaustedError,
    BudgetTypeMismatchError,
    InvalidBudgetError,
    KeySetError,
    LedgerConflictError,
    NoBudgetConfiguredError,
    ReleaseFailedError,
)

__all__ = ["BudgetExhaustedError", "BudgetTypeMismatchError", "InvalidBudgetError", "KeySetError",
           "LedgerConflictError", "NoBudgetConfiguredError", "ReleaseFailedError"]
