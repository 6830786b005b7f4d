"""Budget validation and composition rules (no Spark needed)."""

from __future__ import annotations

from fractions import Fraction

import pytest

from iceberg_privacy.dp.budget import ApproxDP, PureDP, RhoZCDP, budget_from_args, budget_from_json, zero_like
from iceberg_privacy.dp.errors import BudgetTypeMismatchError, InvalidBudgetError
from iceberg_privacy.errors import BudgetError, ConfigurationError


@pytest.mark.parametrize(
    "make",
    [
        lambda: PureDP(0),
        lambda: PureDP(-1),
        lambda: RhoZCDP(0),
        lambda: RhoZCDP(-0.5),
        lambda: ApproxDP(0, 1e-6),
        lambda: ApproxDP(1, -1e-9),
        lambda: ApproxDP(1, 1),
        lambda: ApproxDP(1, 1.5),
        lambda: PureDP(float("inf")),
        lambda: RhoZCDP(float("nan")),
        lambda: PureDP("abc"),
        lambda: PureDP(10**400),  # was: a raw OverflowError (int too large to convert to float)
        lambda: RhoZCDP(-(10**400)),
        lambda: ApproxDP(1, 10**400),
    ],
)
def test_invalid_budgets_are_rejected_with_both_error_families(make) -> None:
    with pytest.raises(InvalidBudgetError) as info:
        make()
    assert isinstance(info.value, ConfigurationError) and isinstance(info.value, BudgetError)


def test_delta_zero_is_allowed() -> None:
    assert ApproxDP(1, 0).delta == 0


def test_pure_composition_is_exact() -> None:
    total = zero_like(PureDP(1))
    for _ in range(10):
        total = total + PureDP(0.1)
    assert total.epsilon == Fraction(1)
    assert total.fits_within(PureDP(1.0))
    assert not (total + PureDP(0.1)).fits_within(PureDP(1.0))
    assert (PureDP(1) - total).is_zero()


def test_approx_composition_adds_both_components() -> None:
    total = ApproxDP(0.5, 1e-6) + ApproxDP(0.25, 2e-6)
    assert total.epsilon == Fraction(3, 4)
    assert total.delta == Fraction("3e-6")
    assert not total.fits_within(ApproxDP(1, 2e-6))  # delta over, epsilon under: does not fit
    assert total.fits_within(ApproxDP(0.75, 3e-6))


def test_zcdp_rhos_add() -> None:
    assert (RhoZCDP(0.015) + RhoZCDP(0.015)).rho == Fraction("0.03")


@pytest.mark.parametrize(
    "a, b",
    [(PureDP(1), RhoZCDP(1)), (RhoZCDP(1), ApproxDP(1, 0)), (ApproxDP(1, 0), PureDP(1))],
)
def test_types_never_mix(a, b) -> None:
    with pytest.raises(BudgetTypeMismatchError):
        a + b
    with pytest.raises(BudgetTypeMismatchError):
        a.fits_within(b)


def test_json_round_trip_and_tmlt_conversion() -> None:
    for budget in (PureDP(0.3), RhoZCDP(0.015), ApproxDP(1, 1e-7)):
        assert budget_from_json(budget.dumps(), validate=True) == budget
    tm = ApproxDP(1, 1e-7).to_tmlt()
    assert type(tm).__name__ == "ApproxDPBudget" and tm.epsilon == 1 and tm.delta == 1e-7
    assert type(RhoZCDP(0.5).to_tmlt()).__name__ == "RhoZCDPBudget"


def test_budget_from_args() -> None:
    assert budget_from_args(rho=0.1) == RhoZCDP(0.1)
    assert budget_from_args(epsilon=1) == PureDP(1)
    assert budget_from_args(epsilon=1, delta=1e-6) == ApproxDP(1, 1e-6)
    with pytest.raises(InvalidBudgetError):
        budget_from_args(rho=0.1, epsilon=1)
    with pytest.raises(InvalidBudgetError):
        budget_from_args()
