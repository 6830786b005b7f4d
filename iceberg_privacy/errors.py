"""One exception hierarchy for the whole library.

Every error a user can trigger derives from :class:`IcebergPrivacyError`, and its message says
what to do next, not only what went wrong.
"""

from __future__ import annotations


class IcebergPrivacyError(Exception):
    """Base class of every error raised by iceberg-privacy."""


BLOCKED_REQUEST_ATTRIBUTE = "blocked_request_id"
"""Set on an exception (any type: it may still be pyarrow's OSError) when the rights journal recorded its request
as blocked (``rights.journal.blocking``); kept when :func:`iceberg_privacy.storage.storage_errors` converts it, so
the CLI's one error line names the request to resume. Read it with :func:`blocked_request`."""


def blocked_request(exc: BaseException) -> str | None:
    """The id of the request the journal recorded as blocked by ``exc``, if any."""
    return getattr(exc, BLOCKED_REQUEST_ATTRIBUTE, None)


class ConfigurationError(IcebergPrivacyError, ValueError):
    """A table property or argument that configures the library is invalid."""


class UnknownColumnError(ConfigurationError):
    """A column named by the caller does not exist in the table schema."""


class UnsupportedTypeError(ConfigurationError):
    """A column's Iceberg type cannot carry identities (e.g. float, boolean)."""


class InvalidLookupValueError(IcebergPrivacyError, ValueError):
    """A lookup value cannot be converted to the column's Iceberg type, or is null."""


class SchemaMismatchError(IcebergPrivacyError, ValueError):
    """Data to write does not match the table schema."""


class UnsupportedDataError(IcebergPrivacyError, TypeError):
    """Data handed to a write is not a pyarrow.Table or RecordBatchReader (e.g. a pandas DataFrame)."""


class SidecarError(IcebergPrivacyError):
    """A sidecar file cannot be read or fails verification.

    Readers never let this escape a lookup: a file whose sidecar is unusable is scanned.
    """


class CommitConflictError(IcebergPrivacyError):
    """A commit kept losing to concurrent writers after all retries."""


class BudgetError(IcebergPrivacyError):
    """Differential-privacy budget problems (exhausted, invalid, ledger conflict)."""


class SubjectRightsError(IcebergPrivacyError):
    """Access/erasure requests: a problem with a request, its tables or its journal."""


class NoIdentityColumnsError(SubjectRightsError, ConfigurationError):
    """A table named in a subject-rights request declares no identity columns."""


class RequestConflictError(SubjectRightsError):
    """A request id is reused with different content, or a request cannot proceed as asked."""


class UnknownRequestError(SubjectRightsError, KeyError):
    """No request with this id is in the journal."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class RequestBlockedError(SubjectRightsError):
    """A request cannot go on until someone acts; the journal records it as ``blocked`` with ``next_step``.

    Running the request again after fixing the cause resumes it.
    """

    def __init__(self, message: str, next_step: str = "") -> None:
        super().__init__(message)
        self.next_step = next_step


class RefHoldsSubjectError(RequestBlockedError, ConfigurationError):
    """A tag (or a branch the erasure did not reach) still reads rows of a request's subjects."""


class TooManyLinkedIdentifiersError(SubjectRightsError):
    """A subject's rows link more other identifiers than a request allows (an identifier shared by many
    people would otherwise erase or export them all); nothing was recorded or changed."""


class QueueIntegrityError(SubjectRightsError):
    """Queued identifiers cannot be used: their ciphertext fails authentication or is gone."""


class VerificationFailedError(SubjectRightsError):
    """Rows of an erased subject are still present in files under the table location."""


class LineageError(IcebergPrivacyError):
    """Lineage problems: a derive that cannot be analysed or run, a bad reference to a table or column."""


class OpaqueSqlError(LineageError):
    """The SQL of a derive cannot be analysed for lineage, and the caller did not allow an opaque write."""


class MissingSourceError(LineageError):
    """A table the SQL reads is not in the catalog."""


class PurposeViolationError(LineageError):
    """A derive would move data into a table whose purpose a source does not allow."""


class StorageError(IcebergPrivacyError, OSError):
    """Object storage or a file system refused a read, write, delete or listing.

    The message names the location and what is missing (bucket, credentials, permission, endpoint).
    """


class CatalogError(IcebergPrivacyError):
    """The catalog refused an operation of the library (a naming rule, a permission, a server error)."""


# -- subject rights: secrets and the forget list ----------------------------------------------------
class SecretMissingError(ConfigurationError):
    """No HMAC secret is configured, or it is too short to protect anyone."""


class ForgetListError(IcebergPrivacyError):
    """The forget list cannot be read or changed as asked."""


class ForgetKeyMismatchError(ForgetListError, ConfigurationError):
    """Forget-list entries were made with a different secret than the one configured."""


# -- differential privacy ---------------------------------------------------------------------------
class InvalidBudgetError(ConfigurationError, BudgetError):
    """A privacy budget value is out of range (epsilon <= 0, rho <= 0, delta outside [0, 1))."""


class BudgetTypeMismatchError(InvalidBudgetError):
    """A query's budget type differs from the domain's budget type; we never convert silently."""


class NoBudgetConfiguredError(BudgetError):
    """Neither the table nor its namespace has a total budget, so nothing may be spent."""


class BudgetExhaustedError(BudgetError):
    """The requested spend does not fit in what is left; nothing was spent or released."""


class QueryCapExceededError(BudgetExhaustedError):
    """A query asks for more than the access policy's per-query cap (``max_epsilon_per_query``); nothing was spent."""


class DpOnlyError(IcebergPrivacyError, PermissionError):
    """The table is dp-only (``privacy.access = dp-only``): its rows may leave only as DP releases."""


class DpSqlRefusedError(IcebergPrivacyError, ValueError):
    """A DP SQL query is outside the accepted subset (or unsafe); the message says why. Nothing was run or spent.

    The message names columns and constructs, never a literal value of the query or the data."""


class LedgerConflictError(BudgetError):
    """A ledger commit kept losing compare-and-swap races after all retries."""


class TableMovedError(LedgerConflictError):
    """A release's table moved to another namespace while it was starting; its budget moved with it. Nothing was
    spent: run the release again under the table's current name."""


class ReleaseInProgressError(LedgerConflictError):
    """The same question (query and source snapshot) is being released by another process right now; nothing was
    spent. Run it again once that release finished: the repeat is answered from the memo, free. If its process died,
    resolve its reservation first (``iceberg-privacy dp reservations --resolve``)."""


class LedgerPropertyTooLargeError(BudgetError):
    """A ledger commit would make one of the ledger's table properties larger than the limit its catalog can store
    (``privacy.dp.max-property-bytes``); refused before anything was written, so nothing was spent or changed."""


class LedgerCorruptError(BudgetError):
    """The budget ledger's state properties do not decode: no release may run until they are repaired."""


class KeySetError(ConfigurationError):
    """A public key set (values or key table) does not match the grouping columns."""


class InvalidArgumentError(ConfigurationError):
    """A numeric argument of a DP verb is not finite or out of range (a NaN or negative threshold,
    infinite or crossed clamping bounds, a contribution bound that is not a positive integer)."""


class PrivacyUnitRequiredError(ConfigurationError):
    """A release did not say what it protects: pass ``privacy_unit=<column>`` or ``privacy_unit=ROWS``."""


class ReleaseFailedError(IcebergPrivacyError):
    """A release failed after its reservation; nothing was released.

    ``release_id`` names the ledger entry. ``refunded`` is False for this class: noise may have been
    computed on the private data, so the spend stays charged.
    """

    release_id: str | None = None
    refunded: bool = False

    def __init__(self, message: str, *, release_id: str | None = None) -> None:
        super().__init__(message)
        self.release_id = release_id


class ReleaseAbortedError(ReleaseFailedError):
    """A release failed before any noisy value was computed, so its reservation was refunded
    (``refunded`` is True): nothing was spent and nothing was released. Fix the cause and run it again."""

    refunded = True


class NamespaceNotFoundError(ConfigurationError, LookupError):
    """A budget or policy named a namespace that does not exist (a typo would otherwise create a new, empty privacy
    domain): the message lists the existing namespaces; ``create_namespace=True`` (CLI ``--create-namespace``)
    creates it on purpose."""


# -- Spark data source ------------------------------------------------------------------------------
class TableNotFoundError(IcebergPrivacyError, LookupError):
    """A read named a table that does not exist in the configured catalog."""


class UnsupportedSparkTypeError(IcebergPrivacyError, TypeError):
    """A column type that has no faithful Spark (or Iceberg) counterpart."""


class StreamingQueryReusedError(ConfigurationError):
    """A Spark stream's ``streaming.query-id`` was committed by another Spark query (another checkpoint): its batch
    ids restart at 0, so its batches would be skipped as already committed. Nothing of the batch was committed."""


class SparkJobError(IcebergPrivacyError):
    """A Spark job of a subject-rights verb (erase, access, verify, backfill) failed on the executors;
    nothing of it was committed."""


# -- the query service (iceberg-privacy serve) ----------------------------------------------------
class ServiceError(IcebergPrivacyError):
    """The DP query service or its tokens refused a request."""


class InvalidTokenError(ServiceError):
    """A bearer token is missing, malformed, unknown, expired or revoked (the service answers 401)."""


class ServiceRequestError(ServiceError):
    """The service refused a request of the Python client; ``status`` is the HTTP status, the message
    is the service's reason."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status
