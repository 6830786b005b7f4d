"""Errors specific to differentially private releases.

They subclass the library-wide hierarchy in :mod:`iceberg_privacy.errors` so callers can catch
``BudgetError`` or ``ConfigurationError`` without knowing about the DP subpackage.
"""

from __future__ import annotations

from iceberg_privacy.errors import BudgetError, ConfigurationError, IcebergPrivacyError


class InvalidBudgetError(ConfigurationError, BudgetError):
    """A privacy budget value is out of range (epsilon <= 0, rho <= 0, delta outside [0, 1))."""


class BudgetTypeMismatchError(InvalidBudgetError):
    """A query's budget type differs from the domain's budget type; we never convert silently."""


class NoBudgetConfiguredError(BudgetError):
    """Neither the table nor its namespace has a total budget, so nothing may be spent."""


class BudgetExhaustedError(BudgetError):
    """The requested spend does not fit in what is left; nothing was spent or released."""


class LedgerConflictError(BudgetError):
    """A ledger commit kept losing compare-and-swap races after all retries."""


class KeySetError(ConfigurationError):
    """A public key set (values or key table) does not match the grouping columns."""


class ReleaseFailedError(IcebergPrivacyError):
    """Evaluation or writing failed after the spend was recorded; nothing was released."""
