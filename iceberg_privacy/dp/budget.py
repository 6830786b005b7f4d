"""Privacy budget types, validation and composition.

Amounts are kept as exact :class:`fractions.Fraction` values parsed from their decimal text, so that
spending 0.1 ten times exhausts a cap of 1.0 exactly: float round-off must never let a ledger
overspend (or refuse the last legitimate spend).

Composition, per type (no type is ever converted into another):

* ``PureDP(epsilon)``: sequential composition of pure DP, so epsilons add.
* ``RhoZCDP(rho)``: zero-concentrated DP composes additively in rho (Bun & Steinke 2016).
* ``ApproxDP(epsilon, delta)``: basic composition, epsilons add and deltas add. Tighter
  (advanced) composition exists but is not what Tumult's ApproxDP accountant uses, and a ledger
  must never claim less than the accountant that produced the noise.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, ClassVar, Literal

from iceberg_privacy.dp.errors import BudgetTypeMismatchError, InvalidBudgetError

BudgetKind = Literal["pure", "zcdp", "approx"]


def _exact(value: float | int | str | Fraction, name: str) -> Fraction:
    """Parse a finite number exactly from its shortest decimal text."""
    if isinstance(value, Fraction):
        return value
    if isinstance(value, bool):
        raise InvalidBudgetError(f"{name} must be a number, got {value!r}; pass e.g. {name}=1.0.")
    try:
        number = float(value)
    except OverflowError:  # an int (or Decimal) past the float range: as infinite as float("inf")
        number = math.inf
    except (TypeError, ValueError) as exc:
        raise InvalidBudgetError(f"{name} must be a number, got {value!r}; pass e.g. {name}=1.0.") from exc
    if not math.isfinite(number):
        raise InvalidBudgetError(
            f"{name} must be finite, got {value!r}: NaN and infinite budgets are not allowed; pass a finite "
            f"number such as {name}=1.0."
        )
    return Fraction(repr(number)) if not isinstance(value, str) else Fraction(value)


def float_down(value: Fraction) -> float:
    """The largest float <= ``value``: what tmlt is given for an exact amount. tmlt calibrates noise to the exact
    value of the float it gets, and ``float(Fraction(1, 10))`` is 0.1000000000000000055...: the noise of every
    release was calibrated to a slightly larger epsilon (rho, delta) than the ledger charged, so a cap could be
    exceeded by the accumulated round-off. Rounded down, the ledger never claims less than what was spent."""
    out = float(value)
    if Fraction(out) > value:
        out = math.nextafter(out, -math.inf)
    return out


def _text(value: Fraction) -> str:
    """Render an exact amount as a short decimal string (exact when it has one)."""
    if value.denominator == 1:
        return str(value.numerator)
    as_float = float(value)
    if Fraction(repr(as_float)) == value:
        return repr(as_float)
    return f"{value.numerator}/{value.denominator}"


@dataclass(frozen=True)
class Budget:
    """Base of the three budget types; amounts are exact and non-negative."""

    kind: ClassVar[BudgetKind]

    def components(self) -> tuple[Fraction, ...]:
        raise NotImplementedError

    @classmethod
    def _from_components(cls, parts: tuple[Fraction, ...]) -> Budget:
        raise NotImplementedError

    def to_json(self) -> dict[str, Any]:
        """JSON form used in the ledger and in snapshot summaries."""
        raise NotImplementedError

    def to_tmlt(self) -> Any:
        """The equivalent tmlt.analytics budget object (imported lazily: tmlt pulls in Spark)."""
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def _check_same(self, other: Budget) -> None:
        if type(other) is not type(self):
            raise BudgetTypeMismatchError(
                f"cannot combine a {other.kind} budget with a {self.kind} budget: budget types are never "
                "converted into one another. Use the domain's budget type "
                f"({self.kind}) for this query, or set a new budget of type {other.kind}."
            )

    def __add__(self, other: Budget) -> Budget:
        self._check_same(other)
        return self._from_components(
            tuple(a + b for a, b in zip(self.components(), other.components(), strict=True))
        )

    def __sub__(self, other: Budget) -> Budget:
        """Difference clamped at zero per component (an over-lowered cap leaves nothing)."""
        self._check_same(other)
        parts = tuple(
            max(a - b, Fraction(0)) for a, b in zip(self.components(), other.components(), strict=True)
        )
        return self._from_components(parts, validate=False)  # type: ignore[call-arg]

    def fits_within(self, cap: Budget) -> bool:
        """True when every component of self is <= the cap's component."""
        self._check_same(cap)
        return all(a <= b for a, b in zip(self.components(), cap.components(), strict=True))

    def is_zero(self) -> bool:
        return all(c == 0 for c in self.components())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()})"

    def dumps(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True, init=False, repr=False)
class PureDP(Budget):
    """Pure epsilon-DP. Counts get geometric noise, sums Laplace; epsilons add."""

    epsilon: Fraction
    kind: ClassVar[BudgetKind] = "pure"

    def __init__(self, epsilon: float | str | Fraction, *, validate: bool = True) -> None:
        eps = _exact(epsilon, "epsilon")
        if validate and eps <= 0:
            raise InvalidBudgetError(f"epsilon must be > 0, got {float(eps)}; pass a positive epsilon.")
        object.__setattr__(self, "epsilon", eps)

    def components(self) -> tuple[Fraction, ...]:
        return (self.epsilon,)

    @classmethod
    def _from_components(cls, parts: tuple[Fraction, ...], validate: bool = False) -> PureDP:
        return cls(parts[0], validate=validate)

    def to_json(self) -> dict[str, Any]:
        return {"type": "pure", "epsilon": _text(self.epsilon)}

    def to_tmlt(self) -> Any:
        from tmlt.analytics import PureDPBudget

        return PureDPBudget(float_down(self.epsilon))

    def describe(self) -> str:
        return f"epsilon={_text(self.epsilon)}"


@dataclass(frozen=True, init=False, repr=False)
class RhoZCDP(Budget):
    """Zero-concentrated DP. Counts get (discrete) Gaussian noise; rhos add."""

    rho: Fraction
    kind: ClassVar[BudgetKind] = "zcdp"

    def __init__(self, rho: float | str | Fraction, *, validate: bool = True) -> None:
        value = _exact(rho, "rho")
        if validate and value <= 0:
            raise InvalidBudgetError(f"rho must be > 0, got {float(value)}; pass a positive rho.")
        object.__setattr__(self, "rho", value)

    def components(self) -> tuple[Fraction, ...]:
        return (self.rho,)

    @classmethod
    def _from_components(cls, parts: tuple[Fraction, ...], validate: bool = False) -> RhoZCDP:
        return cls(parts[0], validate=validate)

    def to_json(self) -> dict[str, Any]:
        return {"type": "zcdp", "rho": _text(self.rho)}

    def to_tmlt(self) -> Any:
        from tmlt.analytics import RhoZCDPBudget

        return RhoZCDPBudget(float_down(self.rho))

    def describe(self) -> str:
        return f"rho={_text(self.rho)}"


@dataclass(frozen=True, init=False, repr=False)
class ApproxDP(Budget):
    """(epsilon, delta)-DP. Basic composition: epsilons add and deltas add."""

    epsilon: Fraction
    delta: Fraction
    kind: ClassVar[BudgetKind] = "approx"

    def __init__(
        self, epsilon: float | str | Fraction, delta: float | str | Fraction, *, validate: bool = True
    ) -> None:
        eps = _exact(epsilon, "epsilon")
        dlt = _exact(delta, "delta")
        if validate:
            if eps <= 0:
                raise InvalidBudgetError(f"epsilon must be > 0, got {float(eps)}; pass a positive epsilon.")
            if not (0 <= dlt < 1):
                raise InvalidBudgetError(
                    f"delta must be in [0, 1), got {float(dlt)}; typical values are below 1/n (e.g. 1e-6)."
                )
        object.__setattr__(self, "epsilon", eps)
        object.__setattr__(self, "delta", dlt)

    def components(self) -> tuple[Fraction, ...]:
        return (self.epsilon, self.delta)

    @classmethod
    def _from_components(cls, parts: tuple[Fraction, ...], validate: bool = False) -> ApproxDP:
        return cls(parts[0], parts[1], validate=validate)

    def to_json(self) -> dict[str, Any]:
        return {"type": "approx", "epsilon": _text(self.epsilon), "delta": _text(self.delta)}

    def to_tmlt(self) -> Any:
        from tmlt.analytics import ApproxDPBudget

        return ApproxDPBudget(float_down(self.epsilon), float_down(self.delta))

    def describe(self) -> str:
        return f"epsilon={_text(self.epsilon)}, delta={_text(self.delta)}"


BUDGET_TYPES: dict[str, type[Budget]] = {"pure": PureDP, "zcdp": RhoZCDP, "approx": ApproxDP}


def zero_like(budget: Budget) -> Budget:
    """The zero amount of the same type (the starting 'spent' of a new domain)."""
    return type(budget)._from_components(tuple(Fraction(0) for _ in budget.components()))


def budget_from_json(data: dict[str, Any] | str, *, validate: bool = False) -> Budget:
    """Inverse of :meth:`Budget.to_json`; ``validate=False`` admits zero amounts (spent totals)."""
    if isinstance(data, str):
        data = dict(json.loads(data))
    assert isinstance(data, dict)
    kind = data.get("type")
    if kind == "pure":
        return PureDP(Fraction(data["epsilon"]), validate=validate)
    if kind == "zcdp":
        return RhoZCDP(Fraction(data["rho"]), validate=validate)
    if kind == "approx":
        return ApproxDP(Fraction(data["epsilon"]), Fraction(data["delta"]), validate=validate)
    raise InvalidBudgetError(f"unknown budget type {kind!r}; expected one of {sorted(BUDGET_TYPES)}.")


def budget_from_args(
    epsilon: float | None = None, delta: float | None = None, rho: float | None = None
) -> Budget:
    """Build a budget from CLI-style keyword arguments, rejecting ambiguous combinations."""
    if rho is not None:
        if epsilon is not None or delta is not None:
            raise InvalidBudgetError("give either --rho (zCDP) or --epsilon [--delta], not both.")
        return RhoZCDP(rho)
    if epsilon is None:
        raise InvalidBudgetError(
            "give --epsilon (pure DP), --epsilon with --delta (approx DP) or --rho (zCDP)."
        )
    if delta is None:
        return PureDP(epsilon)
    return ApproxDP(epsilon, delta)


def from_tmlt(budget: Any) -> Budget:
    """Convert a tmlt budget object (e.g. one a user built) into ours, keeping its type."""
    name = type(budget).__name__
    if name == "PureDPBudget":
        return PureDP(float(budget.epsilon))
    if name == "RhoZCDPBudget":
        return RhoZCDP(float(budget.rho))
    if name == "ApproxDPBudget":
        return ApproxDP(float(budget.epsilon), float(budget.delta))
    raise InvalidBudgetError(f"unsupported budget object {budget!r}; use PureDP, RhoZCDP or ApproxDP.")


def checked(budget: Budget) -> Budget:
    """``budget`` itself when it is a valid amount to cap or spend (finite, > 0, delta in [0, 1)).

    The constructors check this already; this catches amounts built with ``validate=False`` (the
    form zero totals use) before they become a cap or a spend.
    """
    type(budget)._from_components(budget.components(), validate=True)  # type: ignore[call-arg]
    return budget


def as_budget(value: Budget | Any) -> Budget:
    """Accept our budget types or tmlt's, so users can pass either; refuse invalid amounts."""
    if isinstance(value, Budget):
        return checked(value)
    return from_tmlt(value)
