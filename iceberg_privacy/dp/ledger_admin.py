"""The data owner's half of the DP ledger: setting budgets and access policies, and the checks every spend passes.

Why its own module: what a spend is checked against (every applicable cap, the principal caps, a dp-only
table's per-query cap and principal budgets) and how an owner sets those caps are one concept, read together
when a refusal needs explaining; the compare-and-swap commit they run in and the reservation protocol stay in
:mod:`iceberg_privacy.dp.ledger`. :class:`LedgerAdmin` is a mixin of :class:`~iceberg_privacy.dp.ledger.Ledger`
(like :class:`~iceberg_privacy.dp.ledger_tables.TableIdentity`, which it extends): its setters run inside
``Ledger._commit``, and its checks run inside every reservation's commit, on the one ledger version it read.
"""

from __future__ import annotations

import json
from typing import Any

from pyiceberg.table import Table

from iceberg_privacy.dp.budget import Budget, budget_from_json
from iceberg_privacy.dp.errors import (
    BudgetExhaustedError,
    BudgetTypeMismatchError,
    NoBudgetConfiguredError,
    QueryCapExceededError,
)
from iceberg_privacy.dp.ledger_state import LedgerState, min_budget, namespace_scope, per_query_fits
from iceberg_privacy.dp.ledger_tables import TableIdentity
from iceberg_privacy.dp.query import canonical_dumps
from iceberg_privacy.properties import ACCESS_KEY, ACCESS_MAX_PER_QUERY_KEY


class LedgerAdmin(TableIdentity):
    """Budgets, policies and the spend checks of a :class:`~iceberg_privacy.dp.ledger.Ledger` (see the module doc)."""

    def set_budget(
        self,
        scope: str | None,
        cap: Budget,
        *,
        principal_caps: dict[str, Budget] | None = None,
        set_by: str | None = None,
        table: tuple[tuple[str, ...], str | None] | None = None,
        bind: list[tuple[tuple[str, ...], str]] | None = None,
    ) -> LedgerState:
        """Set (or replace) the total budget of a scope, optionally with per-principal caps.

        ``table=(identifier, uuid)`` instead of a scope: the budget of that table, on the table scopes it is
        bound to (or claims by name; a new ``table-id:<uuid>`` scope when none), in the same commit that binds
        it. The type of an already-spent scope cannot change: amounts of different types do not add.
        ``bind``: tables ``(identifier, uuid)`` of this namespace bound in the same commit (a namespace budget binds
        every table of the namespace, so one that moves out later keeps charging it).
        """

        def mutate(
            state: LedgerState, ledger_table: Table
        ) -> tuple[LedgerState, dict[str, str], list[dict[str, Any]]]:
            state, scopes = self._target_scopes(state, scope, table)
            state, _ = self._bind_all(state, bind or [])
            entry = {
                "cap": cap.to_json(),
                "principals": {p: b.to_json() for p, b in (principal_caps or {}).items()},
            }
            for name, pcap in (principal_caps or {}).items():
                if type(pcap) is not type(cap):
                    raise BudgetTypeMismatchError(
                        f"principal cap for {name!r} must be {cap.kind}, like the total."
                    )
            new_state = LedgerState(dict(state.budgets), dict(state.spent), state.policies, state.tables)
            for key in scopes:
                current = state.scope(key)
                if (current.spent is not None and not current.spent.is_zero()
                        and type(current.spent) is not type(cap)):
                    raise BudgetTypeMismatchError(
                        f"{current.scope} has already spent {current.spent!r}; its budget type cannot change to "
                        f"{cap.kind}. Keep using {current.spent.kind}, or use a new namespace/table."
                    )
                new_state.budgets[key] = entry
            row = self._row(
                "budget_set",
                None,
                set_by,
                source_table=".".join(table[0]) if table is not None else None,
                scopes=canonical_dumps(scopes),
                amount=cap.dumps(),
                detail=canonical_dumps(entry),
            )
            return new_state, new_state.to_properties(), [row]

        new_state, _ = self._commit(mutate, create=True)
        return new_state

    def applicable_scopes(self, source: tuple[str, ...], state: LedgerState,
                          table_uuid: str | None = None) -> list[str]:
        """Scopes (keys) charged by a release of ``source`` (uuid ``table_uuid``; None: resolved by name): its
        table budgets (the scopes it is bound to, or claims by name) and its namespace budget."""
        scopes = [*state.table_scopes(source, table_uuid), namespace_scope(self.namespace)]
        return [s for s in scopes if s in state.budgets]

    def check(
        self, state: LedgerState, source: tuple[str, ...], principal: str, amount: Budget,
        table_uuid: str | None = None,
    ) -> tuple[list[str], Budget]:
        """Check that ``amount`` fits every applicable cap; return the scopes and what was left.

        Raises before anything is written, naming what is left so the user can ask for less.
        """
        self.check_policy(state, source, principal, amount, table_uuid)
        scopes = self.applicable_scopes(source, state, table_uuid)
        if not scopes:
            raise NoBudgetConfiguredError(
                f"no privacy budget is set for table {'.'.join(source)} or namespace "
                f"{'.'.join(self.namespace)}; set one first, e.g. `iceberg-privacy dp budget set "
                f"--namespace {'.'.join(self.namespace)} --rho 1.0`."
            )
        return scopes, self.limit(state, scopes, principal, amount)

    def limit(self, state: LedgerState, scopes: list[str], principal: str, amount: Budget) -> Budget:
        """What ``principal`` has left in all of ``scopes`` (keys with a budget); raises, naming what is left,
        when ``amount`` does not fit one of them or its principal cap."""
        limits: list[Budget] = []
        caps = [state.scope(key) for key in scopes]
        if len({type(st.cap) for st in caps}) > 1:  # no query fits them all: asking with another type cannot help
            kinds = ", ".join(f"{st.scope} a {st.cap.kind} budget ({st.cap!r})" for st in caps if st.cap is not None)
            raise BudgetTypeMismatchError(
                f"this table is charged to budgets of different types ({kinds}), and budgets are never converted, so "
                f"no release of it can be paid for, whatever budget it asks with ({amount!r}). As the data owner, set "
                "them to one type (`iceberg-privacy dp budget set --table ...` / `--namespace ...`: --epsilon with "
                "--delta for approx DP, --rho for zCDP). Nothing was spent.")
        for key in scopes:
            st = state.scope(key)
            scope = st.scope  # for people: table:<current name>
            assert st.cap is not None
            if type(st.cap) is not type(amount):
                raise BudgetTypeMismatchError(
                    f"{scope} has a {st.cap.kind} budget ({st.cap!r}) but the query asks for a {amount.kind} "
                    f"budget ({amount!r}); budgets are never converted. Ask with a {st.cap.kind} budget, or "
                    f"(as the data owner) set the {scope} budget to the type the query needs ({amount.kind}: "
                    "`iceberg-privacy dp budget set ...`; --epsilon with --delta for approx DP, --rho for zCDP)."
                    " Nothing was spent."
                )
            remaining = st.remaining()
            assert remaining is not None
            if not amount.fits_within(remaining):
                raise BudgetExhaustedError(
                    f"privacy budget exhausted for {scope}: requested {amount!r}, remaining {remaining!r} "
                    f"of {st.cap!r}. Nothing was spent and nothing was released; ask for at most the "
                    "remaining budget or raise the cap with `iceberg-privacy dp budget set`."
                )
            limits.append(remaining)
            p_remaining = st.principal_remaining(principal)
            if p_remaining is not None:
                if not amount.fits_within(p_remaining):
                    raise BudgetExhaustedError(
                        f"principal {principal!r} has exhausted their cap in {scope}: requested {amount!r}, "
                        f"remaining {p_remaining!r} of {st.principal_cap(principal)!r}. Nothing was spent "
                        "and nothing was released."
                    )
                limits.append(p_remaining)
        return min_budget(limits)

    def check_policy(self, state: LedgerState, source: tuple[str, ...], principal: str, amount: Budget,
                     table_uuid: str | None = None) -> None:
        """The access policy's part of a spend check (dp-only tables): the per-query cap, and a principal budget.

        Called by :meth:`check`, so inside every reservation's compare-and-swap: a release of a dp-only
        table that asks for more than the per-query cap, or whose principal has no budget there, is
        refused before anything is written.
        """
        key, entry = state.policy_entry(source, table_uuid)
        if entry.get(ACCESS_KEY) != "dp-only":
            return
        scope = state.label(key) if key else key
        name = ".".join(source)
        cap_json = entry.get(ACCESS_MAX_PER_QUERY_KEY)
        if cap_json:
            cap = budget_from_json(cap_json)
            if not per_query_fits(amount, cap):
                raise QueryCapExceededError(
                    f"{name} is dp-only with a per-query cap of {cap!r} (policy of {scope}); the query asks for "
                    f"{amount!r}. Nothing was spent and nothing was released; ask for at most the cap per query."
                )
        scopes = self.applicable_scopes(source, state, table_uuid)
        if scopes and not any(state.scope(s).principal_cap(principal) is not None for s in scopes):
            raise NoBudgetConfiguredError(
                f"{name} is dp-only and principal {principal!r} has no budget there (no cap for them or for '*' in "
                f"{', '.join(state.label(s) for s in scopes)}); nothing was spent. Ask the data owner to grant one: iceberg-privacy dp "
                f"policy set ... --principal-budget {principal}=EPSILON"
            )

    def set_policy(
        self,
        scope: str,
        entry: dict[str, Any] | None,
        *,
        principal_caps: dict[str, Budget] | None = None,
        set_by: str | None = None,
        table: tuple[tuple[str, ...], str | None] | None = None,
        bind: list[tuple[tuple[str, ...], str]] | None = None,
    ) -> LedgerState:
        """Set (``entry``) or remove (None) the access policy of a scope, and merge per-principal caps into the
        scope's budget, in one commit (event ``policy_set``). Principal caps need the scope's total budget.
        ``table=(identifier, uuid)`` instead of a scope: the table's scopes, as for :meth:`set_budget`."""

        def mutate(state: LedgerState, ledger_table: Table
                   ) -> tuple[LedgerState, dict[str, str], list[dict[str, Any]]]:
            state, scopes = self._target_scopes(state, scope, table)
            state, _ = self._bind_all(state, bind or [])
            budgets = json.loads(canonical_dumps(state.budgets))
            policies = json.loads(canonical_dumps(state.policies or {}))
            for key in scopes:
                label = state.label(key)
                if principal_caps:
                    if key not in budgets:
                        raise NoBudgetConfiguredError(
                            f"{label} has no total budget, so per-principal budgets cannot be set inside it; set "
                            "one first (set_budget / set_namespace_budget, or `iceberg-privacy dp budget set`)."
                        )
                    cap = budget_from_json(budgets[key]["cap"])
                    for name, pcap in principal_caps.items():
                        if type(pcap) is not type(cap):
                            raise BudgetTypeMismatchError(
                                f"principal budget for {name!r} must be {cap.kind}, like the total of {label} "
                                f"({cap!r})."
                            )
                    per = budgets[key].setdefault("principals", {})
                    per.update({p: b.to_json() for p, b in principal_caps.items()})
                if entry is None:
                    policies.pop(key, None)
                else:
                    policies[key] = entry
            new_state = LedgerState(budgets, state.spent, policies, state.tables)
            row = self._row(
                "policy_set",
                None,
                set_by,
                source_table=".".join(table[0]) if table is not None else None,
                scopes=canonical_dumps(scopes),
                detail=canonical_dumps({"policy": entry, "principals": {p: b.to_json() for p, b in
                                                                         (principal_caps or {}).items()}}),
            )
            return new_state, new_state.to_properties(), [row]

        new_state, _ = self._commit(mutate, create=True)
        return new_state
