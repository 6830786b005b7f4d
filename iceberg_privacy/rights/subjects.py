"""Data subjects of a request, resolved against the identity columns of each table.

A request names subject values (user ids, emails, ...). A row belongs to a subject when any declared
identity column of its table (including every id nested in an identity map or list) equals one of
the values after coercion to that column's type: Iceberg's literal conversion, widened where Iceberg
refuses a value that can only mean one stored id (``42`` for a string column is ``"42"``) and narrowed
where it would move a value onto another person's (``"1001.5"`` is no long), in one function shared with
lookup, the forget list and the CLI (:func:`iceberg_privacy.index.hashing.coerce_values`; the table of
the rule is in docs/subject-rights.md).

Coercion rule: each value is coerced separately for each identity column. A value a column cannot
take (``"ann"`` for a ``long`` column) is skipped *for that column* as long as some identity column
of some table of the request accepts it; a value no column accepts is rejected with
:class:`~iceberg_privacy.errors.InvalidLookupValueError` before any work starts, since it names
nobody and is almost always a caller's mistake (wrong field, wrong type).

Rows can be matched two ways: by raw values (Bloom-pruned, vectorized ``is_in``) when the caller
supplies the subjects, or by keyed digests only (every file scanned) when a request is resumed from
the journal, which never stores clear-text ids.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError
from pyiceberg.expressions.literals import Literal
from pyiceberg.io.pyarrow import schema_to_pyarrow
from pyiceberg.table import FileScanTask, StaticTable, Table
from pyiceberg.table.refs import MAIN_BRANCH, SnapshotRefType

from iceberg_privacy._internal import retry
from iceberg_privacy._internal.arrow import plain_type
from iceberg_privacy.catalog import (
    TableRef,
    all_tables,
    has_marker,
    load_many,
    match_in_catalog,
    table_name,
    what_exists,
)
from iceberg_privacy.config import IdentityColumn, identity_columns
from iceberg_privacy.errors import (
    CommitConflictError,
    ConfigurationError,
    IcebergPrivacyError,
    InvalidLookupValueError,
    NoIdentityColumnsError,
)
from iceberg_privacy.identities import as_values, extract_identities, rows_matching
from iceberg_privacy.index.hashing import coerce_values, shown
from iceberg_privacy.index.planner import plan_lookup
from iceberg_privacy.index.read import MatchRead, probe_task
from iceberg_privacy.lineage.fanout import Fanout
from iceberg_privacy.properties import BOOKKEEPING_MARKERS, LIBRARY_MARKERS, released_rows
from iceberg_privacy.rights.keyed import canonical_literal, digest, digest_distinct
from iceberg_privacy.rights.reports import RefHold


def _is_internal(table: Table) -> bool:
    """The library's own tables: never subject tables, even if someone declares identity columns on them. A DP
    release or synthetic table is one while its rows are the release's; rows another job wrote into it since
    (``released_rows``: the table property stays) are searched like any table's, if it declares identity columns."""
    if has_marker(table, BOOKKEEPING_MARKERS) or table.name()[-1].startswith("_"):
        return True
    if not has_marker(table, LIBRARY_MARKERS):
        return False
    rows = released_rows(table)
    return table.current_snapshot() is None or (rows is not None and rows.current)


def _declared(table: Table) -> list[IdentityColumn]:
    """The table's identity columns; a broken declaration (a column of a type that cannot be an identity, or one
    no longer in the schema, e.g. set by hand or by another engine) fails the request naming the table: a table
    that cannot be matched may hold the subject, so it is never skipped, and the user must know which to fix."""
    try:
        return identity_columns(table.schema(), table.properties)
    except IcebergPrivacyError as exc:
        name = table_name(table)
        if name in str(exc):
            raise
        raise type(exc)(
            f"table {name}: {exc}. Fix its declaration before the request: iceberg_privacy.configure_identity("
            f"'{name}', [...]) or `iceberg-privacy identity set {name} COLUMN...`"
        ) from exc


def refuse_equality_deletes(tables: Sequence[Table]) -> None:
    """Refuse (before anything is read or recorded) a request over a table whose head or a ref's head has an
    equality delete file: pyiceberg 0.12 cannot apply one, so the table's rows cannot be read exactly (its scan
    raises a bare ``ValueError`` half-way through the request), and such a file holds identity values in clear."""
    for table in tables:
        # another process's purge may expire and delete the head this table was loaded at meanwhile: a lost race,
        # read again from the new head (it was a StorageError that blocked the request, advising to fix storage)
        retry.run(functools.partial(_refuse_one, table), exhausted=functools.partial(_refuse_lost, table_name(table)))


def _refuse_lost(name: str, tries: int, last: BaseException) -> Exception:
    return CommitConflictError(f"reading the delete files of {name} lost to concurrent purges {tries} times ({last}); "
                               "run the request again")


def _refuse_one(table: Table) -> None:
    from pyiceberg.manifest import DataFileContent, ManifestContent

    with retry.vanished_is_conflict(table):
        md = table.metadata
        heads = {r.snapshot_id for r in md.refs.values()} | {md.current_snapshot_id}
        seen: set[str] = set()
        for sid in sorted(s for s in heads if s is not None):
            snap = md.snapshot_by_id(sid)
            for m in snap.manifests(table.io) if snap is not None else []:
                if m.content != ManifestContent.DELETES or m.manifest_path in seen:
                    continue
                seen.add(m.manifest_path)
                if any(e.data_file.content == DataFileContent.EQUALITY_DELETES
                       for e in m.fetch_manifest_entry(table.io, discard_deleted=True)):
                    name = table_name(table)
                    raise ConfigurationError(
                        f"table {name} has equality delete files (another engine's merge-on-read DELETE), which "
                        "pyiceberg 0.12 cannot apply, so its rows cannot be read exactly; nothing was recorded or "
                        "changed. Compact them with that engine (Spark: CALL <catalog>.system.rewrite_data_files("
                        f"table => '{name}', options => map('delete-file-threshold', '1')) rewrites the files they "
                        "apply to and drops them), then run the request again"
                    )


def _in_catalog(catalog: Catalog, given: Table) -> Table:
    """``given`` as ``catalog`` has it now. A Table loaded from another catalog (a second lake, a copy of this one)
    was erased where it lives while the request was journaled in ``catalog``, and the purge then verified and
    expired the table of that name in ``catalog``: another table, or none."""
    name = table_name(given)
    match = match_in_catalog(catalog, given)
    table = match.table
    if table is None or not match.same:
        since = "renamed or dropped" if table is None else "dropped and created again"
        raise ConfigurationError(
            f"table {name} is not the request's catalog's: catalog {catalog.name!r} {match.where}, and the request is "
            f"journaled, resumed and purged there. Either the table was {since} since this Table was loaded (load it "
            "again from the catalog, or name it as 'ns.table'), or it was loaded from another catalog (pass the "
            "catalog the table belongs to); nothing was recorded")
    return table


def subject_tables(catalog: Catalog, tables: Sequence[TableRef] | None = None) -> list[Table]:
    """The tables a request covers: those named, or every table of the catalog declaring identity columns.

    A table named explicitly that declares no identity columns is an error (it would silently
    return or erase nothing); enumerated tables without them are skipped. One table may be given
    alone (``"db.t"`` or a ``Table``); a tuple is a sequence of references, not an identifier.
    """
    if isinstance(tables, (str, Table)):
        tables = [tables]
    if tables is not None and not tables:  # an empty list (a filter that kept nothing) is not "every table"
        raise ConfigurationError(
            "the request names no table (tables is empty): pass the tables to cover, or leave tables out (None) to "
            "cover every table of the catalog that declares identity columns; nothing was recorded")
    if tables:
        out: list[Table] = []
        for t in tables:
            if isinstance(t, Table):
                # The catalog's current metadata, not the caller's: a Table loaded before other commits has
                # neither their rows (an access export left them out) nor a later identity declaration.
                table = t if isinstance(t, StaticTable) else _in_catalog(catalog, t)
            else:
                try:
                    table = catalog.load_table(t)
                except (NoSuchTableError, NoSuchNamespaceError, ValueError):  # ValueError: not an identifier ("db")
                    hint = what_exists(catalog, t if isinstance(t, tuple) else tuple(str(t).split(".")))
                    raise NoIdentityColumnsError(
                        f"table {t!r} does not exist in the catalog{hint}; check the name (namespace.table)"
                        + (f" (tables={tuple(tables)!r} is read as {len(tables)} table names: pass one table as "
                           "'ns.table' or [('ns', 'table')])" if isinstance(tables, tuple) else "")
                    ) from None
            if has_marker(table, BOOKKEEPING_MARKERS):
                raise ConfigurationError(
                    f"table {table_name(table)} is one of the library's own bookkeeping tables (the request journal "
                    "and queue, a forget list, a DP ledger, the service's tokens; table properties privacy.journal, "
                    "privacy.queue, privacy.forget.*, ...): no request covers it, whatever identity columns it "
                    "declares, since erasing there would destroy the audit record or let erased subjects be "
                    "written again. Name the tables that hold the subjects' data; nothing was recorded"
                )
            _check_nameable(table)
            if not _declared(table):
                raise NoIdentityColumnsError(
                    f"table {table_name(table)} declares no identity columns, so no row of it can be attributed "
                    f"to a person; declare them first: iceberg_privacy.configure_identity(table, ['user_id']) or "
                    f"`iceberg-privacy identity set {table_name(table)} user_id`"
                )
            out.append(table)
        return out
    found: list[Table] = []
    for loaded in load_many(catalog, all_tables(catalog)):
        if isinstance(loaded, NoSuchTableError):
            continue  # dropped since it was listed: it holds nobody any more
        if isinstance(loaded, Exception):
            raise loaded  # a table that cannot be loaded may hold the subject: never skipped
        table = loaded
        if _is_internal(table):
            continue
        if _declared(table):
            _check_nameable(table)
            found.append(table)
    return found


def _check_nameable(table: Table) -> None:
    """Refuse a table whose namespace or name contains '.' (a SQL catalog allows ``('db', 't.x')``): a request
    records its tables as ``namespace.table`` and finds them again by splitting on '.', so its purge looked for
    ``('db', 't', 'x')``, took the table for renamed and blocked the request after the rows were erased."""
    parts = tuple(table.name())
    if any("." in p for p in parts):
        raise ConfigurationError(
            f"table {parts!r} has a '.' in its namespace or name: a request records its tables as namespace.table "
            "and could not find this one again to resume, purge and verify it (an erasure would stay blocked after "
            "removing the rows). Rename it to a name without '.' (catalog.rename_table), or leave it out with tables=[...] / "
            "--tables; nothing was recorded")


_MAX_ID_BITS = 4096
"""Integers longer than this name nobody (the widest identity type, decimal(38), needs 127 bits)."""


def _blank(v: Any) -> bool:
    return isinstance(v, (str, bytes)) and not v.strip()


def check_values(subjects: Any, *, allow_empty_subject: bool = False) -> list[Any]:
    """The subject values as a list; empty or whitespace-only ones are refused unless explicitly allowed.

    An empty id matches every row whose identity column is empty, and such rows usually belong to many
    people (a form left blank, a default), not to the person asking.
    """
    values = as_values(subjects)
    huge = [v for v in values if isinstance(v, int) and v.bit_length() > _MAX_ID_BITS]
    if huge:  # Python cannot even print one (sys.get_int_max_str_digits): a ValueError deep in the request
        raise InvalidLookupValueError(
            f"{len(huge)} subject value(s) are integers of more than {_MAX_ID_BITS} bits (e.g. {shown(huge[0])}): no "
            "identity column holds such a number (long: 64 bits, decimal: 38 digits). Drop them.")
    blank = [v for v in values if _blank(v)]
    if blank and not allow_empty_subject:
        raise InvalidLookupValueError(
            f"{len(blank)} subject value(s) are empty or whitespace-only (e.g. {blank[0]!r}): such a value would "
            "match every row whose identity column is empty, which may belong to many people. Drop it; if you "
            "really mean the rows with an empty id, pass allow_empty_subject=True (CLI: --allow-empty-subject)"
        )
    return values


def _value_type(leaf: Any) -> pa.DataType:
    return plain_type(schema_to_pyarrow(leaf))


@dataclass
class ColumnSubjects:
    """The subjects as values of one identity column."""

    column: IdentityColumn
    literals: list[Literal[Any]]
    value_set: pa.Array
    digests: set[bytes]


@dataclass
class TableSubjects:
    """The subjects resolved against one table's identity columns."""

    table: Table
    columns: list[ColumnSubjects]
    digests: set[bytes] = field(default_factory=set)  # every subject digest that applies (journal/forget)
    by_digest: bool = False  # no raw values: match rows by keyed digest (full scan)

    @property
    def name(self) -> str:
        return table_name(self.table)

    @property
    def empty(self) -> bool:
        return not self.by_digest and not any(c.literals for c in self.columns)


def _coerce_one(value: Any, col: IdentityColumn) -> tuple[bool, Literal[Any] | None]:
    """(column accepts the value's type, the literal or None when it cannot occur in the column)."""
    try:
        lits = coerce_values([value], col.leaf_type, col.name)
    except InvalidLookupValueError:
        return False, None
    lit = lits[0] if lits else None
    if lit is not None and type(lit.value) is int and not _INT64_MIN <= lit.value <= _INT64_MAX:
        return True, None  # an int beyond int64 (microseconds, days) cannot occur in any column: accepted, no row
    return True, lit


_INT64_MIN, _INT64_MAX = -(2 ** 63), 2 ** 63 - 1


def _literal_digest(secret: bytes, lit: Literal[Any], col: IdentityColumn) -> bytes:
    return digest(secret, canonical_literal(lit, col.leaf_type))


def _arrow_value(lit: Literal[Any]) -> Any:
    return lit.value.bytes if isinstance(lit.value, uuid.UUID) else lit.value


def resolve_subjects(tables: Sequence[Table], subjects: Any, secret: bytes, *, strict: bool = True,
                     ) -> list[TableSubjects]:
    """Coerce the subjects for every identity column of every table (see the module doc for the rule).

    ``strict=False`` (downstream tables of a lineage fan-out) skips values no column takes instead of
    rejecting them: they were validated against the request's own tables.
    """
    values = as_values(subjects)
    for v in values:
        if v is None:
            raise InvalidLookupValueError("subject values contain null: a null identifies nobody; drop it")
    accepted = [False] * len(values)
    out: list[TableSubjects] = []
    for table in tables:
        cols: list[ColumnSubjects] = []
        for col in identity_columns(table.schema(), table.properties):
            lits: dict[Any, Literal[Any]] = {}
            for i, v in enumerate(values):
                ok, lit = _coerce_one(v, col)  # out-of-range ints: accepted, but cannot occur here
                accepted[i] = accepted[i] or ok
                if lit is not None:
                    lits.setdefault(lit.value, lit)
            literals = list(lits.values())
            value_set = pa.array([_arrow_value(lit) for lit in literals], type=_value_type(col.leaf_type))
            cols.append(ColumnSubjects(col, literals, value_set, {_literal_digest(secret, lit, col) for lit in literals}))
        ts = TableSubjects(table, cols)
        ts.digests = set().union(*(c.digests for c in cols)) if cols else set()
        out.append(ts)
    bad = [v for v, ok in zip(values, accepted, strict=True) if not ok]
    if bad and strict:
        kinds = sorted({f"{c.column.name}: {c.column.leaf_type}" for ts in out for c in ts.columns})
        raise InvalidLookupValueError(
            f"{len(bad)} subject value(s) fit no identity column of the request's tables, e.g. {shown(bad[0])} "
            f"({type(bad[0]).__name__}); " + (
                f"identity columns are {', '.join(kinds)}. Pass values of those types (or strings Iceberg can parse "
                "into them)." if kinds else
                "no table of the catalog declares identity columns: declare them first with "
                "ip.configure_identity(table, [column, ...]) (CLI: iceberg-privacy identity set TABLE COLUMN...)")
        )
    return out


def digest_subjects(tables: Sequence[Table], digests: set[bytes]) -> list[TableSubjects]:
    """Subjects known only by keyed digest (a request resumed from the journal): rows are matched by digest."""
    out = []
    for table in tables:
        cols = [ColumnSubjects(c, [], pa.array([], type=_value_type(c.leaf_type)), set(digests))
                for c in identity_columns(table.schema(), table.properties)]
        out.append(TableSubjects(table, cols, set(digests), by_digest=True))
    return out


def digest_value_set(values: pa.Array, leaf: Any, secret: bytes, digests: set[bytes]) -> pa.Array:
    """The distinct values of ``values`` whose keyed digest is in ``digests`` (no clear ids leave here)."""
    distinct, found = digest_distinct(secret, values, leaf)
    return distinct.filter(pa.array(np.fromiter((d in digests for d in found), dtype=bool, count=len(found))))


def match_mask(data: pa.Table, ts: TableSubjects, secret: bytes | None = None) -> np.ndarray:
    """Boolean mask of the rows of ``data`` that belong to a subject (any identity column matches)."""
    mask = np.zeros(data.num_rows, dtype=bool)
    if data.num_rows == 0:
        return mask
    for c in ts.columns:
        if c.column.name not in data.column_names:
            continue
        arr = data.column(c.column.name)
        if ts.by_digest:
            if secret is None:
                raise ValueError("matching by digest needs the secret")
            values, _ = extract_identities(arr)
            value_set = digest_value_set(values, c.column.leaf_type, secret, c.digests)
        else:
            value_set = c.value_set
        if len(value_set):
            mask |= rows_matching(arr, value_set)
    return mask


@dataclass
class CandidatePlan:
    """Files that may hold the subjects: union over the identity columns of the planner's picks."""

    snapshot_id: int | None
    tasks: list[FileScanTask]
    files_total: int = 0
    per_column: dict[str, int] = field(default_factory=dict)

    def explain(self) -> str:
        cols = ", ".join(f"{c}: {n}" for c, n in self.per_column.items())
        return f"{len(self.tasks)} of {self.files_total} files to read at snapshot {self.snapshot_id} ({cols})"


def plan_candidates(ts: TableSubjects, snapshot_id: int | None = None, *, cached_manifests: bool = False
                    ) -> CandidatePlan:
    """Candidate files for the subjects, Bloom- and manifest-pruned per identity column, unioned
    (at ``snapshot_id``, default the current snapshot). ``cached_manifests``: see :func:`plan_lookup`."""
    table = ts.table
    snap = table.metadata.snapshot_by_id(snapshot_id) if snapshot_id is not None else table.metadata.current_snapshot()
    if snap is None:
        return CandidatePlan(None, [])
    if ts.by_digest:
        tasks = list(table.scan(snapshot_id=snap.snapshot_id).plan_files())
        return CandidatePlan(snap.snapshot_id, tasks, len(tasks), {c.column.name: len(tasks) for c in ts.columns})
    by_path: dict[str, FileScanTask] = {}
    plan = CandidatePlan(snap.snapshot_id, [])
    for c in ts.columns:
        if not c.literals:
            plan.per_column[c.column.name] = 0
            continue
        p = plan_lookup(table, c.column.name, c.literals, snapshot_id=snap.snapshot_id, cached_manifests=cached_manifests)
        plan.files_total = max(plan.files_total, p.files_total)
        plan.per_column[c.column.name] = len(p.tasks)
        for t in p.tasks:
            by_path.setdefault(t.file.file_path, t)
    plan.tasks = [by_path[p] for p in sorted(by_path)]
    if not plan.files_total:
        plan.files_total = int((snap.summary.additional_properties if snap.summary else {}).get("total-data-files", 0))
    return plan


def with_fanout(resolved: list[TableSubjects], values: list[Any], secret: bytes, fan: Fanout) -> list[TableSubjects]:
    """Add the values subjects have downstream (through recorded expressions) to each table's subjects.

    A downstream identity column lineage reached is matched with the values that reached it only: the subject's
    ``a`` is ``a + 1`` in ``b = a + 1``, so the request's own value there, or a value mapped into another column of
    the table (``a * 2``), is another person's. Columns lineage did not reach, columns it reached with no value it
    could map (``lag(user_id)``, ``unnest(ids)``: a value of the column, but which one is unknown), and the
    request's own tables, are matched with the request's values as before (such a column was matched with nothing
    as soon as another column of its table had a mapped value, and kept the subject's id)."""
    out = []
    roots = set(fan.roots)
    for ts in resolved:
        extra = fan.values.get(ts.name)
        if not extra:
            out.append(_withhold(ts, fan.withheld.get(ts.name), secret))
            continue
        full = resolve_subjects([ts.table], values + extra, secret, strict=False)[0]
        reached = {c: v for c, v in fan.columns.get(ts.name, {}).items() if v}
        if reached:
            # A table of the request (a cycle led back to it, or the request names a derived table too) is matched
            # with the request's values everywhere, and with the values lineage mapped into a column only there:
            # the subject's 1007 in ``uid = user_id + 1000`` is another person's 1007 in its ``ref`` column.
            root = ts.name in roots
            cols = []
            for c in full.columns:
                if c.column.name not in reached:
                    kept = next((o for o in ts.columns if o.column.name == c.column.name), None)
                    if kept is not None:  # no value of the request fits it: only mapped values did, for another column
                        cols.append(kept)
                    continue
                into = (values + [v for v in reached[c.column.name] if v not in values]) if root \
                    else reached[c.column.name]
                own = resolve_subjects([ts.table], into, secret, strict=False)[0]
                cols.extend(o for o in own.columns if o.column.name == c.column.name)
            full = TableSubjects(ts.table, cols, set().union(*(c.digests for c in cols)) if cols else set())
        out.append(_withhold(full, fan.withheld.get(ts.name), secret))
    return out


def _withhold(ts: TableSubjects, withheld: dict[str, list[Any]] | None, secret: bytes) -> TableSubjects:
    """``ts`` without the values fan-out withheld in a column (another person's row may hold them there)."""
    if not withheld or not any(c.column.name in withheld for c in ts.columns):
        return ts
    cols = []
    for c in ts.columns:
        drop = withheld.get(c.column.name)
        if not drop:
            cols.append(c)
            continue
        keep = [lit.value for lit in c.literals if lit.value not in drop]
        own = resolve_subjects([ts.table], keep, secret, strict=False)[0]
        cols.append(next(o for o in own.columns if o.column.name == c.column.name))
    return TableSubjects(ts.table, cols, set().union(*(c.digests for c in cols)) if cols else set(), ts.by_digest)


def file_holds(ts: TableSubjects, task: FileScanTask, secret: bytes | None) -> bool:
    """Does this data file hold a row of the subjects? (reads only its identity columns)"""
    table = ts.table
    md = table.metadata
    ids = tuple(c.column.field_id for c in ts.columns)
    if not ids:
        return False
    schema = md.schema()
    return probe_task(table.io, MatchRead(md, schema, schema, ids), task, lambda keys: match_mask(keys, ts, secret))


def refs_holding(ts: TableSubjects, secret: bytes | None, *, clean: set[str] | None = None,
                 known: dict[str, bool] | None = None) -> list[RefHold]:
    """The branches and tags (other than ``main``) whose snapshot can still read a row of the subjects.

    Each ref's snapshot is planned like the request itself (pruned lookup, or every file when matching
    by digest) and its candidate files are read; a table that never held the subjects has no such ref.
    Files in ``clean`` are known to hold no subject row; ``known`` caches what was read (files are immutable).
    """
    table = ts.table
    md = table.metadata
    known = {} if known is None else known
    out: list[RefHold] = []
    for name, ref in sorted(md.refs.items()):
        if name == MAIN_BRANCH or md.snapshot_by_id(ref.snapshot_id) is None:
            continue
        plan = plan_candidates(ts, ref.snapshot_id)
        for task in plan.tasks:
            path = task.file.file_path
            if clean is not None and path in clean:
                continue
            if path not in known:
                known[path] = file_holds(ts, task, secret)
            if known[path]:
                kind = "branch" if ref.snapshot_ref_type == SnapshotRefType.BRANCH else "tag"
                out.append(RefHold(table_name(table), name, kind, ref.snapshot_id))
                break
    return out
