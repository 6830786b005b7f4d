"""The arguments of a DP release, checked before anything is reserved or spent.

Every number must be finite and in range, the privacy unit is always explicit (:data:`ROWS` for
row-level protection), and every column named must exist with a type tmlt can use. A refusal here
costs nothing: :func:`~iceberg_privacy.dp.histogram.dp_histogram` calls these first.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Sequence
from typing import Any, Final, Literal, final

from pyiceberg.table import Table
from pyiceberg.types import (
    DateType,
    DoubleType,
    FloatType,
    IntegerType,
    LongType,
    StringType,
    TimestampType,
    TimestamptzType,
)

from iceberg_privacy._internal.arguments import LIBRARY_FILES
from iceberg_privacy.catalog import table_name
from iceberg_privacy.errors import (
    ConfigurationError,
    InvalidArgumentError,
    PrivacyUnitRequiredError,
    UnknownColumnError,
)

Aggregate = Literal["count", "sum", "mean"]




@final
class RowUnit:
    """The type of :data:`ROWS`: the explicit row-level privacy unit."""

    _instance: RowUnit | None = None

    def __new__(cls) -> RowUnit:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "ROWS"

    def __reduce__(self) -> str:
        return "ROWS"


ROWS: Final[RowUnit] = RowUnit()
"""``privacy_unit=ROWS`` protects single rows (tmlt ``AddOneRow``, or ``AddMaxRows(k)`` with
``max_rows_per_unit=k``): right only when every person has at most that many rows. Never implied:
a release without ``privacy_unit=`` is refused."""


class _Required:
    def __repr__(self) -> str:
        return "<required>"


REQUIRED: Any = _Required()
ID_TYPES = (StringType, IntegerType, LongType, DateType)
KEY_TYPES = (StringType, IntegerType, LongType, DateType, TimestampType, TimestamptzType)
NUMERIC_TYPES = (IntegerType, LongType, FloatType, DoubleType)

MAX_BOUND: Final = 2.0**62
"""Largest |clamping bound| of an aggregate (dp_histogram's and DP SQL's): tmlt hands the bounds (for AVG, half their
width) to Spark as 64-bit integer literals, which failed past 2**63 only when the query was evaluated, after the spend
(found by advsvc2)."""

EXACT_SUM_BOUND: Final = 2**31
"""A SUM or mean of an integer column clamped to bounds of this magnitude or more is computed on the column cast to
double. Spark (ANSI mode) sums integers as 64-bit longs and raises on overflow: the release failed after its
evaluation began, so whether it failed told, without noise, whether the clamped values of the group add up past 2**63
(one more person at the bound flipped it: an unbounded privacy loss, found by advS). Below this magnitude an integer
sum overflows only with more than 2**32 rows at the bound in one group."""


def sums_as_double(ftype: Any, low: float | None, high: float | None) -> bool:
    """Whether a sum/mean of a column of ``ftype`` clamped to [low, high] must be computed in doubles (above)."""
    return (isinstance(ftype, (IntegerType, LongType)) and low is not None and high is not None
            and max(abs(float(low)), abs(float(high))) >= EXACT_SUM_BOUND)
OUTPUT_NAMES = {"count": "count", "sum": "sum", "mean": "mean"}


def source_field(table: Table, column: str, role: str) -> Any:
    schema = table.schema()
    try:
        return schema.find_field(column)
    except ValueError as exc:
        known = ", ".join(f.name for f in schema.fields)
        raise UnknownColumnError(
            f"{role} column {column!r} is not in table {table_name(table)} (columns: {known})."
        ) from exc



def finite(name: str, value: Any, *, why: str) -> float:
    """``value`` as a float if it is a finite real number; InvalidArgumentError otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise InvalidArgumentError(f"{name}={value!r} must be a finite number; {why}")
    return float(value)


def validate_args(
    by: Sequence[str],
    aggregate: str,
    column: str | None,
    low: float | None,
    high: float | None,
    max_rows_per_unit: int,
    threshold: float | None,
    mechanism: str,
) -> list[str]:
    """Check every argument that needs no table, before anything is read, reserved or spent."""
    if isinstance(by, str):
        by = [by]
    by = list(by)
    if not by or len(set(by)) != len(by):
        raise ConfigurationError(f"by={by!r} must name one or more distinct grouping columns.")
    if aggregate not in OUTPUT_NAMES:
        raise ConfigurationError(f"aggregate={aggregate!r} must be one of {sorted(OUTPUT_NAMES)}.")
    # Spark, which evaluates the release, resolves names without case: a grouping column named like the output
    # column (by=["Mean"] with aggregate="mean") or like another grouping column is ambiguous only once tmlt
    # evaluates, after the spend.
    names = [str(c).lower() for c in by] + [OUTPUT_NAMES[aggregate]]
    if len(set(names)) != len(names):
        raise ConfigurationError(
            f"by={by!r} with aggregate={aggregate!r}: the grouping columns and the output column "
            f"{OUTPUT_NAMES[aggregate]!r} must have distinct names ignoring case (Spark compares them without case); "
            "group by a differently named column. Nothing was spent.")
    if aggregate != "count":
        if column is None or low is None or high is None:
            raise ConfigurationError(f"a {aggregate} needs column=, low= and high= (the clamping bounds).")
        why = "values are clamped into [low, high], so pass finite bounds with low < high (e.g. low=0, high=100)."
        if not finite("low", low, why=why) < finite("high", high, why=why):
            raise InvalidArgumentError(f"low={low} must be < high={high}; {why}")
        if max(abs(float(low)), abs(float(high))) > MAX_BOUND:  # as for DP SQL's bounds (see MAX_BOUND)
            raise InvalidArgumentError(
                f"the bounds low={low}, high={high} exceed +-{MAX_BOUND:.4g}: Tumult hands them to Spark as 64-bit "
                "integers, and the release failed when evaluated, after the spend. Give bounds around the column's "
                "real range. Nothing was spent.")
    if (isinstance(max_rows_per_unit, bool) or not isinstance(max_rows_per_unit, numbers.Integral)
            or max_rows_per_unit < 1):
        raise InvalidArgumentError(
            f"max_rows_per_unit must be an integer >= 1, got {max_rows_per_unit!r}; it bounds how many rows "
            "one privacy unit may contribute: pass a positive integer such as 1 or 10."
        )
    if threshold is not None:
        if aggregate != "count":
            raise ConfigurationError(
                "a release threshold applies to counts only; drop threshold= for sums and means."
            )
        if (isinstance(threshold, bool) or not isinstance(threshold, numbers.Real)
                or not math.isfinite(float(threshold)) or threshold < 0):
            raise InvalidArgumentError(
                f"threshold={threshold!r} must be a finite number >= 0 (noisy counts below it are suppressed); "
                "pass a count such as threshold=90, or threshold=None to release every key."
            )
    if mechanism not in ("default", "laplace", "gaussian"):
        raise ConfigurationError(f"mechanism={mechanism!r} must be 'default', 'laplace' or 'gaussian'.")
    return by


def resolve_privacy_unit(privacy_unit: Any, source: Table) -> str | None:
    """The privacy-unit column, or None for :data:`ROWS`; an omitted unit is an error, never a guess."""
    columns = ", ".join(f.name for f in source.schema().fields)
    if privacy_unit is REQUIRED:
        raise PrivacyUnitRequiredError(
            f"dp_histogram needs privacy_unit=, the unit whose presence the release hides; there is no default. "
            f"Pass privacy_unit='<column>' naming the column that identifies a person or device in "
            f"{table_name(source)} (columns: {columns}); each unit then contributes at most max_rows_per_unit "
            "rows (tmlt AddRowsWithID). Or pass privacy_unit=ROWS (iceberg_privacy.ROWS) to protect single rows "
            "(AddOneRow, or AddMaxRows(k) with max_rows_per_unit=k), which protects a person only if they have "
            "at most that many rows. Tumult Analytics and OpenDP make this choice explicit too."
        )
    if privacy_unit is None:
        warnings.warn(
            "privacy_unit=None is deprecated and is removed in the next release: pass privacy_unit=ROWS "
            "(iceberg_privacy.ROWS) to protect single rows", DeprecationWarning, stacklevel=2,
            skip_file_prefixes=LIBRARY_FILES)  # the caller of dp_histogram
        return None
    if privacy_unit is ROWS:
        return None
    if not isinstance(privacy_unit, str) or not privacy_unit:
        raise ConfigurationError(
            f"privacy_unit={privacy_unit!r} is neither a column name nor ROWS; pass privacy_unit='<column>' "
            f"(columns of {table_name(source)}: {columns}) or privacy_unit=ROWS."
        )
    return privacy_unit


def tumult_addressable(name: str) -> bool:
    """Can Tumult address column ``name``? Its per-unit row cap and filters name columns unquoted, so Spark reads
    'a.b' as a struct field and a backtick as a quote: such a release failed once tmlt evaluated it, after the
    spend. DP SQL (``sql_parse.check_addressable``) and :func:`~iceberg_privacy.dp_histogram` refuse it first."""
    return "." not in name and "`" not in name
