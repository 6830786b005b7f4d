"""Table references and the catalog of the DP verbs (internal).

A DP verb about one table takes a :data:`~iceberg_privacy.catalog.TableRef` first and ``catalog=``
as a keyword. The catalog that holds the ledger, the memo and the release output is ``catalog=``,
else the catalog a loaded ``Table`` came from, else the one :func:`~iceberg_privacy.catalog.connect`
returns. The pre-0.2 forms took the ``Catalog`` first; :func:`catalog_first` recognises them.
"""

from __future__ import annotations

from typing import Any

from pyiceberg.catalog import Catalog
from pyiceberg.catalog.noop import NoopCatalog
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Snapshot

from iceberg_privacy._internal.arguments import check_catalog as check_catalog
from iceberg_privacy.catalog import TableRef, connect, ensure_namespace_exists, identifier, match_in_catalog
from iceberg_privacy.errors import ConfigurationError


def qualified(ref: TableRef, what: str = "table") -> tuple[str, ...]:
    """The identifier of a table reference, which must name its namespace."""
    if isinstance(ref, Catalog):
        raise ConfigurationError(
            f"expected a {what} reference (a pyiceberg Table, 'namespace.table' or ('namespace', 'table')) "
            "but got a Catalog: pass the table first and the catalog as catalog=..."
        )
    ident = identifier(ref)
    if len(ident) < 2:
        raise ConfigurationError(
            f"{what} {'.'.join(ident)!r} must be qualified with its namespace: 'namespace.table' or "
            "('namespace', 'table')"
        )
    return ident


def namespace_identifier(namespace: Any) -> tuple[str, ...]:
    """``"ns"``, ``"a.b"`` or ``("a", "b")`` as a namespace identifier."""
    if isinstance(namespace, str) and namespace and not namespace.startswith(".") and not namespace.endswith("."):
        return tuple(namespace.split("."))
    if isinstance(namespace, tuple) and namespace and all(isinstance(p, str) and p for p in namespace):
        return namespace
    raise ConfigurationError(f"expected a namespace ('ns', 'a.b' or ('a', 'b')), got {namespace!r}")


def ensure_namespace(catalog: Catalog, ns: tuple[str, ...], *, create: bool) -> None:
    """Refuse a namespace that does not exist (a typo in a budget or policy command would otherwise create a new,
    empty privacy domain and leave the intended one without its budget), naming the existing ones; ``create``:
    create it on purpose."""
    import difflib

    from pyiceberg.exceptions import NoSuchNamespaceError

    from iceberg_privacy.catalog import all_namespaces
    from iceberg_privacy.errors import NamespaceNotFoundError

    try:
        catalog.load_namespace_properties(ns)
        return
    except NoSuchNamespaceError:
        pass
    if create:
        ensure_namespace_exists(catalog, ns)
        return
    name = ".".join(ns)
    existing = sorted(".".join(n) for n in all_namespaces(catalog))
    close = difflib.get_close_matches(name, existing, n=1)
    raise NamespaceNotFoundError(
        f"namespace {name!r} does not exist{f' (did you mean {close[0]!r}?)' if close else ''}; existing namespaces: "
        f"{', '.join(existing) or 'none'}. Nothing was changed. Check the spelling, or create it on purpose with "
        "create_namespace=True (CLI: --create-namespace).")


def catalog_for(ref: TableRef, catalog: Catalog | None) -> Catalog:
    """The catalog of a one-table DP verb: ``catalog=``, else the loaded table's, else :func:`connect`."""
    if catalog is not None:
        return check_catalog(catalog)
    if isinstance(ref, Table):
        own = getattr(ref, "catalog", None)
        if not isinstance(own, Catalog) or isinstance(own, NoopCatalog):
            raise ConfigurationError(
                f"table {'.'.join(ref.name())} was not loaded from a catalog (a StaticTable?), so there is no "
                "ledger to charge: pass catalog=... (the catalog that holds the namespace's budget ledger)"
            )
        return own
    return connect()  # the default of ~/.pyiceberg.yaml, else the embedded catalog


def source_in_catalog(catalog: Catalog, table: Table) -> None:
    """Refuse a source ``Table`` loaded from another catalog than the release's: its budgets and access policy (a
    dp-only namespace, principal caps, its privacy unit) live in the ledger of the catalog it belongs to, which the
    release would neither check nor charge (it charged ``catalog``'s ledger, where the table has no policy). Another
    Catalog instance of the same lake is fine (the table of that name there has the same uuid); a table without a
    catalog (a StaticTable) is charged to ``catalog=`` as documented."""
    own = getattr(table, "catalog", None)
    if own is None or own is catalog or isinstance(own, NoopCatalog) or not isinstance(own, Catalog):
        return
    name = ".".join(table.name())
    match = match_in_catalog(catalog, table)
    if not match.same:
        raise ConfigurationError(
            f"table {name} is not a table of catalog {catalog.name!r} ({match.where}): it was loaded from another catalog "
            "(or renamed, dropped or replaced since it was loaded), and its budgets and access policy are in the "
            "ledger of the catalog it belongs to, which this release would neither check nor charge. Pass that "
            "catalog (or leave catalog= out for a loaded Table, or load the table again); nothing was spent")


def catalog_first(args: tuple[Any, ...]) -> bool:
    """Is this a pre-0.2 call whose first positional argument is the ``Catalog``?"""
    return bool(args) and isinstance(args[0], Catalog)


def show(ref: Any) -> str:
    """A table reference as it would be written in a call (for deprecation messages)."""
    if isinstance(ref, Table):
        return "table"
    return repr(ref)


def table_identity(catalog: Catalog, ref: Any) -> tuple[tuple[str, ...], str | None]:
    """``(identifier, uuid)`` of a table reference; the uuid is None when no table bears the name (yet).

    Budgets, spend and table policies are keyed by the uuid (they follow a rename); a name that no table
    bears keeps a name-keyed scope that the table later created under it takes over (docs/dp.md)."""
    from pyiceberg.exceptions import NoSuchTableError

    if isinstance(ref, Table):
        return tuple(ref.name()), str(ref.metadata.table_uuid)
    ident = qualified(ref)
    try:
        return ident, str(catalog.load_table(ident).metadata.table_uuid)
    except NoSuchTableError:
        return ident, None


def source_snapshot(source: Table, snapshot_id: int | None, name: str) -> Snapshot:
    """The snapshot a DP verb reads from table ``source`` (called ``name`` in messages): ``snapshot_id``, else the
    current one; refused, before anything is spent, when the table has none, the id is not one of its snapshots, or
    the snapshot holds rows an erasure removed (it is not downstream of an erasure committed to the table)."""
    if snapshot_id is None:
        snap = source.current_snapshot()
        if snap is None:
            raise ConfigurationError(f"table {name} has no snapshot yet; write data first.")
        erasure = _erased_after(source, snap, current=True)
        if erasure is not None:
            raise ConfigurationError(
                f"the current snapshot {snap.snapshot_id} of {name} does not include an erasure ({erasure}): the "
                "table was rolled back or set to a snapshot of another line of history, so it holds the erased "
                "subjects' rows again. Run the erasure requests again on the current snapshot (or set the table "
                "back to a snapshot after the erasure), then release. Nothing was spent.")
        return snap
    snap = source.snapshot_by_id(snapshot_id)
    if snap is None:
        raise ConfigurationError(f"snapshot {snapshot_id} does not exist in {name}.")
    erasure = _erased_after(source, snap)
    if erasure is not None:
        raise ConfigurationError(
            f"snapshot {snapshot_id} of {name} predates an erasure ({erasure}): a new release of it would compute on "
            "the erased subjects' rows again. Release the current snapshot (leave snapshot_id out); releases made "
            "before the erasure stay readable in their release tables. Nothing was spent.")
    return snap


def _erased_after(source: Table, snap: Snapshot, *, current: bool = False) -> str | None:
    """The erasure (request id, or ``purge``) committed to ``source`` that ``snap`` does not include, if any: an
    explicit ``snapshot_id=`` older than it, a branch or tag forked from the snapshot it erased (even when written to
    after it), or a current snapshot rolled back past it reads rows a subject-rights request erased (they stay in
    those snapshots until the purge expires them), and a new release of them is new processing of an erased
    person's data.

    An erasure is included when ``snap`` descends from it or from another commit of the same request (an erasure
    commits once on every branch holding a subject). Otherwise it counts when ``snap`` descends from the snapshot
    it erased (a rollback, a branch forked there), or, for an explicit ``snapshot_id``, when ``snap`` is older. When
    the ancestry is cut short by expired snapshots, an erasure older than the oldest ancestor still known cannot be
    placed and is taken as included."""
    from iceberg_privacy.properties import ERASURE_REQUEST_SUMMARY, ERASURE_SCRUB_SUMMARY

    def order(s: Snapshot) -> tuple[int, int]:
        return (s.sequence_number or 0, s.timestamp_ms)

    def erasure_of(s: Snapshot) -> str | None:
        extra = s.summary.additional_properties if s.summary is not None else {}
        if ERASURE_REQUEST_SUMMARY in extra:
            return f"request {extra[ERASURE_REQUEST_SUMMARY]}"
        return "request purge" if ERASURE_SCRUB_SUMMARY in extra else None

    by_id = {s.snapshot_id: s for s in source.metadata.snapshots}
    ancestors = {snap.snapshot_id}
    oldest: Snapshot = snap
    while oldest.parent_snapshot_id in by_id and oldest.parent_snapshot_id not in ancestors:
        oldest = by_id[oldest.parent_snapshot_id]
        ancestors.add(oldest.snapshot_id)
    cut = oldest.parent_snapshot_id is not None  # the ancestry goes on into expired snapshots
    included = {erasure_of(by_id[a]) for a in ancestors} - {None}
    for erasure in source.metadata.snapshots:
        which = erasure_of(erasure)
        if which is None or erasure.snapshot_id in ancestors or which in included:
            continue
        if cut and order(erasure) < order(oldest):
            continue
        if erasure.parent_snapshot_id in ancestors or (not current and order(snap) < order(erasure)):
            return f"{which}, snapshot {erasure.snapshot_id}"
    return None
