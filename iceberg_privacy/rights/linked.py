"""A person's other identifiers, read before a request runs so that every identifier of theirs is covered.

Why: a request names a person by one identifier (``user_id=42``), but a table derived by a JOIN may hold
only another one: ``mailing = SELECT u.email, count(*) FROM events e JOIN users u USING (user_id) GROUP BY
1`` holds the person's email and no ``user_id``. Neither the request's values nor the lineage fan-out
(which follows ``users.user_id``'s own flows) reach it, and a table outside the lineage that holds only
the email (``tickets(email)``) is missed just the same. A table that declares several identity columns
says which identifiers belong together: the subject's rows there name the person's other identifiers.

So before a request is journaled, the subject's rows are read in each of the request's tables that
declares more than one identity column, and the values of its other identity columns join the request.
This repeats with what was found (an email found in ``users(user_id, email)`` finds a phone number in
``contacts(email, phone)``) until a round finds nothing new. Null and blank values never link (a blank
email belongs to everyone who left the field empty). The linked values are then erased (or exported) in
every table and column that declares them and, with ``follow_lineage``, every table derived from those
columns: they are simply more subject values of the same request.

Recorded before the first delete: once the source rows are erased the other identifiers cannot be read
again, so a request resumed after a crash must already know them. They are journaled in the request's
``created`` event, which is written before any work, as keyed hashes only (the journal's rule: no raw
identifier at rest): among the request's subject digests (so a resume without values matches them), and
listed with the columns each was found in under ``detail.linked``. A request resumed *with* its values
reads them again; when some can no longer be read, it matches rows by keyed hash instead (every file is
read, as for a resume without values) rather than miss them.

Bound: at most ``max_linked`` other identifiers per subject value the request names (default
:data:`DEFAULT_MAX_LINKED`; a request naming 1,000 people may link 1,000 times as many). Past it the
request is refused before anything is recorded (:class:`TooManyLinkedIdentifiersError`), never
truncated: a placeholder (``unknown@example.com``, a household id) shared by many rows would link, and
then erase, everyone holding it.

Shared identifiers are not linked. The columns where the request's own values were found are the person
keys (``users.user_id``). When a linked value's rows carry another person key (``(43, family@x.org)`` next
to the subject's ``(42, family@x.org)``), that value is shared: erasing by it would remove person 43's rows,
and erasure cannot be undone. It is dropped from the request, with everything reached only through it,
and reported (``LinkedIdentifiers.shared`` and a warning naming the columns); if it is the subject's alone
after all, the caller names it in the request. A person key must be recognised where the subject has no row
too (user 43 in ``accounts(customer_id, phone)`` next to the subject's phone): every column named like one,
and every identity column of a non-string type family that the person tables' identity columns have, is one;
otherwise user 43 would be linked, and erased everywhere. On the subject's own rows (the first round) a new value in a person-key
column (the request's own columns, same-named ones, or ones of the request keys' non-string type family) is
another person too: ``messages(sender_id=42, recipient_id=43)`` links nothing, or erasing 42 would erase
everyone 42 wrote to. Only a table with a person-key column can show sharing: in
``contacts(email, phone)`` alone, two people's phones next to one email cannot be told apart, which is what
``max_linked`` bounds. ``link_identifiers=False`` turns linking off for a request whose caller names every
identifier itself.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.table import Table
from pyiceberg.types import UUIDType

from iceberg_privacy._internal import retry
from iceberg_privacy.catalog import table_name
from iceberg_privacy.config import identity_columns
from iceberg_privacy.errors import CommitConflictError, ConfigurationError, TooManyLinkedIdentifiersError
from iceberg_privacy.identities import extract_identities
from iceberg_privacy.rights.filework import candidate_rows, no_rows
from iceberg_privacy.rights.keyed import digest_distinct, family_prefix
from iceberg_privacy.rights.reports import LinkedIdentifier, LinkedIdentifiers
from iceberg_privacy.rights.subjects import TableSubjects, match_mask, plan_candidates, resolve_subjects

DEFAULT_MAX_LINKED = 32
"""Other identifiers a request may link per subject value it names (a person has a handful: accounts, emails,
devices; hundreds mean a placeholder shared by many people)."""


def linking_tables(tables: Sequence[Table]) -> list[Table]:
    """The tables that can link identifiers: those declaring more than one identity column."""
    return [t for t in tables if len(identity_columns(t.schema(), t.properties)) > 1]


def _python_value(v: Any, leaf: Any) -> Any:
    return uuid.UUID(bytes=v) if isinstance(leaf, UUIDType) and isinstance(v, bytes) else v


def _blank(v: Any) -> bool:
    return v is None or isinstance(v, (str, bytes)) and not v.strip()


def _text(v: Any) -> str | None:
    """A value as text, to tell the same key across column types (``42`` in a ``long`` column, ``"42"`` in a
    ``string`` one: different keyed hashes, one person)."""
    return None if v is None or isinstance(v, bytes) else str(v)


def _too_many(out: LinkedIdentifiers, bound: int, max_linked: int, columns: set[str]) -> TooManyLinkedIdentifiersError:
    return TooManyLinkedIdentifiersError(
        f"the subjects' rows in {', '.join(out.tables_read)} link more than {bound} other "
        f"identifiers ({max_linked} per subject value; so far in {', '.join(sorted(columns))}): an "
        "identifier shared by many people (a placeholder email, a household id) would erase or "
        "export all of them. Nothing was recorded. Check those rows; then raise max_linked=, or "
        "pass link_identifiers=False and name every identifier of the person yourself")


class LinkRows:
    """The linking tables' rows of many requests' subjects, read once for all of them (a batch submit).

    :meth:`warm` reads, per linking table, the rows of every value of the batch, then of every value those rows
    hold, and so on (each read covering all the values so far, so one read answers any request). A request's
    :func:`collect_linked` then keeps, in memory, the rows its own values match (the mask a read of its own
    applies, in the same order) instead of planning and reading the table again. A table whose head moved since,
    or values the cache does not cover (a chain longer than warmed, a batch linking more than its bound), are read
    as before: the cache only ever answers with what a read of the request's own would return.
    """

    def __init__(self, secret: bytes) -> None:
        self.secret = secret
        self._rows: dict[tuple[str, int], tuple[str | None, dict[str, set[bytes]], pa.Table]] = {}

    def warm(self, tables: Sequence[Table], values: Sequence[Any], *, bound: int, rounds: int = 4) -> None:
        """Read the rows of ``values`` and of the values they link (up to ``rounds`` reads per table, and no
        further once more than ``bound`` values were found: that batch holds a placeholder, read per request).
        A file expired meanwhile by another process: the tables are read again from their new heads."""
        def step() -> None:
            with contextlib.ExitStack() as stack:
                for t in tables:
                    stack.enter_context(retry.vanished_is_conflict(t))
                self._warm(tables, values, bound, rounds)

        retry.run(step, exhausted=lambda tries, last: CommitConflictError(
            f"reading the subjects' other identifiers lost to concurrent expiries {tries} times (the tables' heads "
            "were expired while they were read); submit the requests again"))

    def _warm(self, tables: Sequence[Table], values: Sequence[Any], bound: int, rounds: int) -> None:
        sources = linking_tables(tables)
        todo = [v for v in values if v is not None]
        seen = {(type(v), v) for v in todo if _hashable(v)}
        for _ in range(rounds):
            if not sources or not todo:
                return
            found: list[Any] = []
            for ts in resolve_subjects(sources, todo, self.secret, strict=False):
                if ts.empty or ts.by_digest:
                    continue
                plan = plan_candidates(ts, cached_manifests=True)
                rows = candidate_rows(ts, plan, self.secret)
                self._rows[(ts.name, id(ts.table))] = (ts.table.metadata_location, {
                    c.column.name: set(c.digests) for c in ts.columns}, rows)
                for c in ts.columns:
                    if c.column.name not in rows.column_names:
                        continue
                    ids, _ = extract_identities(rows.column(c.column.name))
                    for raw in pc.unique(ids).to_pylist():
                        v = _python_value(raw, c.column.leaf_type)
                        if not _blank(v) and _hashable(v) and (type(v), v) not in seen:
                            seen.add((type(v), v))
                            found.append(v)
            if len(found) > bound:
                return
            if not found:
                return
            todo = todo + found  # every read covers all the values so far: one entry answers any request

    def rows(self, ts: TableSubjects) -> pa.Table | None:
        """``ts``'s rows from the cache, or None when the cache does not hold all of them."""
        hit = self._rows.get((ts.name, id(ts.table)))
        if hit is None or ts.by_digest:
            return None
        location, covered, rows = hit
        if location != ts.table.metadata_location or any(
                not c.digests <= covered.get(c.column.name, set()) for c in ts.columns):
            return None
        mine = rows.filter(pa.array(match_mask(rows, ts, self.secret))) if rows.num_rows else rows
        return mine if mine.num_rows else no_rows(ts.table.metadata)


def _hashable(v: Any) -> bool:
    try:
        hash(v)
    except TypeError:
        return False
    return True


def collect_linked(tables: Sequence[Table], values: Sequence[Any], secret: bytes, *,
                   max_linked: int = DEFAULT_MAX_LINKED, cache: LinkRows | None = None) -> LinkedIdentifiers:
    """The subject's other identifiers in ``tables`` (those declaring several identity columns; see the module doc).

    Raises :class:`TooManyLinkedIdentifiersError` past ``max_linked`` per value of ``values``; reads only
    (Bloom-pruned candidate files). Reads each table at the head it was loaded at; when another process expired
    that head meanwhile and deleted its files (the purge of another request, while this one is submitted), the
    tables are read again from their new heads, as every retried read of a table's history is.
    """
    if isinstance(max_linked, bool) or not isinstance(max_linked, int) or max_linked < 0:
        raise ConfigurationError(f"max_linked must be a whole number >= 0 (other identifiers per subject value), "
                                 f"got {max_linked!r}; 0 refuses any linked identifier, link_identifiers=False skips "
                                 "linking")

    def step() -> LinkedIdentifiers:
        with contextlib.ExitStack() as stack:
            for t in tables:  # a file gone at a head that moved: refresh that table, read again
                stack.enter_context(retry.vanished_is_conflict(t))
            return _collect(tables, values, secret, max_linked, cache if cache is not None and cache.secret == secret else None)

    return retry.run(step, exhausted=lambda tries, last: CommitConflictError(
        f"reading the subject's other identifiers lost to concurrent expiries {tries} times (the tables' heads were "
        "expired while they were read); run the request again"))


def _collect(tables: Sequence[Table], values: Sequence[Any], secret: bytes, max_linked: int,
             cache: LinkRows | None = None) -> LinkedIdentifiers:
    sources = linking_tables(tables)
    bound = max_linked * max(1, len(set(map(repr, values))))  # per distinct value: repeating one raises nothing
    out = LinkedIdentifiers(tables_read=[table_name(t) for t in sources], max_linked=max_linked)
    if not sources or not values:
        return out
    base = resolve_subjects(sources, list(values), secret, strict=False)
    request: set[bytes] = set().union(*(ts.digests for ts in base))
    known: set[bytes] = set(request)  # every digest seen: the request's, linked, shared
    known_text: set[str] = {t for t in map(_text, values) if t is not None}  # the same, as text (one key across column types)
    own: set[str] = set()  # "table.column" where a value of the request itself was found (person keys)
    key_names: set[str] = set()  # column names of the person keys: ``user_id`` in every table is a person key
    key_families: set[bytes] = set()  # non-string type families of the person tables' identity columns (round 2+)
    own_families: set[bytes] = set()  # non-string type families of the person keys themselves (round 1)
    first_shared: dict[bytes, LinkedIdentifier] = {}  # round 1: values on a row holding another person's key
    by_digest: dict[bytes, LinkedIdentifier] = {}
    rejected: set[bytes] = set()  # shared with another person, or reached only through such a value
    others: set[str] = set()  # "table.column" where another person's key was found next to a linked value
    resolved: list[TableSubjects] = base
    while resolved:
        out.rounds += 1
        cells: list[list[tuple[str, bytes, Any, str, bytes]]] = []  # per row: (table.column, digest, value, name, family)
        first: list[tuple[TableSubjects, str, bytes]] = []  # round 1: (table, table.column, family) of each column
        for ts in resolved:
            if ts.empty:
                continue
            rows = cache.rows(ts) if cache is not None else None  # read once for a whole batch submit
            if rows is None:
                # a submit links every request at the same heads: each manifest decoded once per process, not per plan
                plan = plan_candidates(ts, cached_manifests=True)
                out.files_read += len(plan.tasks)
                rows = candidate_rows(ts, plan, secret)
            if not rows.num_rows:
                continue
            per_row: list[list[tuple[str, bytes, Any, str, bytes]]] = [[] for _ in range(rows.num_rows)]
            for c in ts.columns:
                col = c.column
                if col.name not in rows.column_names:
                    continue
                where = f"{ts.name}.{col.name}"
                family = family_prefix(col.leaf_type)
                if out.rounds == 1:
                    first.append((ts, where, family))
                ids, row_of = extract_identities(rows.column(col.name))
                distinct, digests = digest_distinct(secret, ids, col.leaf_type)
                at = pc.index_in(ids, value_set=distinct).to_numpy(zero_copy_only=False)
                raws = distinct.to_pylist()
                for k in range(len(ids)):
                    if at[k] is None or at[k] != at[k]:  # a null value: never links
                        continue
                    j = int(at[k])
                    d = digests[j]
                    if out.rounds == 1 and d in c.digests:
                        own.add(where)
                    per_row[int(row_of[k])].append((where, d, _python_value(raws[j], col.leaf_type), col.name, family))
            cells += per_row
        if out.rounds == 1:
            # The person keys: the columns holding the request's own values, every column of the same name, and
            # every identity column sharing a non-string type family with a person table's identity columns (a
            # second user id in ``accounts(customer_id, phone)`` is another person's even where the subject has no
            # row). Strings (emails, phones) are too varied to be keys by type alone.
            key_names = {w.rsplit(".", 1)[1] for w in own}
            person_tables = {w.rsplit(".", 1)[0] for w in own}
            key_families = {f for ts, w, f in first if ts.name in person_tables and f != b"s"}
            own_families = {f for ts, w, f in first if w in own and f != b"s"}
        # A person key: a column holding the request's own values, one of the same name, or (round 1: of the family
        # of the request's own keys; later rounds: of any non-string family of the person tables) of that type.
        families = own_families if out.rounds == 1 else key_families
        found: list[Any] = []
        fresh: dict[bytes, set[bytes]] = {}  # a new value -> the values of the previous round next to it
        for row in cells:
            parents = {d for _, d, _, _, _ in row if d in by_digest and by_digest[d].round == out.rounds - 1}
            other = {w for w, d, v, name, family in row
                     if (w in own or name in key_names or family in families) and d not in known and not _blank(v)
                     and (_text(v) is None or _text(v) not in known_text)}
            if other:
                others.update(other)
                if out.rounds == 1:
                    # Another person's key on the subject's own row (``messages(sender_id=42, recipient_id=43)``):
                    # nothing on it links, or erasing 42 would erase everyone 42 wrote to.
                    for where, d, raw, _, _ in row:
                        if d not in known and not _blank(raw):
                            first_shared.setdefault(d, LinkedIdentifier(column=where, digest=d.hex(), found_in=[where],
                                                                        round=1, value=raw))
                # Another person's key (a second user_id) next to a linked value: that value is shared (a family
                # email). Erasing by it would remove the other person's rows, so it is not linked.
                rejected.update(parents)
                continue
            for where, d, raw, _, _ in row:
                li = by_digest.get(d)
                if li is not None:
                    if where not in li.found_in:
                        li.found_in.append(where)
                    continue
                if d in known:
                    continue
                if _blank(raw):
                    continue
                fresh.setdefault(d, set()).update(parents)
                if d not in by_digest:
                    by_digest[d] = LinkedIdentifier(column=where, digest=d.hex(), found_in=[where], round=out.rounds,
                                                    value=raw)
        # a value reached only through rejected values is not the subject's either
        for d, parents in fresh.items():
            if out.rounds > 1 and parents and parents <= rejected:
                rejected.add(d)
        for d in fresh:
            known.add(d)
            li = by_digest[d]
            if _text(li.value) is not None:
                known_text.add(str(li.value))
            if d in rejected:
                continue
            out.identifiers.append(li)
            found.append(li.value)
            if len(out.identifiers) > bound:
                raise _too_many(out, bound, max_linked, {i.column for i in out.identifiers})
        resolved = resolve_subjects(sources, found, secret, strict=False) if found else []
    shared = [li for d, li in by_digest.items() if d in rejected]
    shared += [li for d, li in first_shared.items() if d not in by_digest]
    if shared:
        out.identifiers = [li for li in out.identifiers if bytes.fromhex(li.digest) not in rejected]
        out.shared = shared
        out.warnings.append(
            f"{len(shared)} identifier(s) next to the subject also sit next to another person's "
            f"{'/'.join(sorted(others or own))} ({', '.join(f'{li.column} #{li.digest[:12]}' for li in shared)}): shared (a "
            "family email, a household id), so they are NOT linked and rows holding them elsewhere stay. If they are "
            "the subject's alone, name them in the request yourself")
    return out


def relink(tables: Sequence[Table], values: Sequence[Any], secret: bytes, recorded: dict[str, Any]
           ) -> LinkedIdentifiers:
    """The linked identifiers a journaled request recorded (``detail.linked``), read again with its values.

    Those that cannot be read any more (their source rows were erased before a crash) are kept by keyed
    hash (``value`` None) and ``complete`` is False: the caller then matches rows by keyed hash. Identifiers
    linked only now (data added since the request) are left out: they belong to a new request.
    """
    digests = list(recorded.get("digests") or [])
    names = set(recorded.get("tables") or [])
    found_in: dict[str, list[str]] = recorded.get("found_in") or {}
    again = collect_linked([t for t in tables if table_name(t) in names], values, secret,
                           max_linked=max(int(recorded.get("max") or 0), len(digests), DEFAULT_MAX_LINKED))  # as recorded
    have = {li.digest: li for li in again.identifiers}
    out = LinkedIdentifiers(tables_read=again.tables_read, files_read=again.files_read, rounds=again.rounds,
                            max_linked=int(recorded.get("max") or DEFAULT_MAX_LINKED), warnings=again.warnings)
    for d in digests:
        li = have.get(d)
        if li is None:
            out.complete = False
            where = list(found_in.get(d) or ["?"])
            li = LinkedIdentifier(column=where[0], digest=d, found_in=where)
        out.identifiers.append(li)
    return out


def mark_searched(linked: LinkedIdentifiers, subjects: Sequence[TableSubjects]) -> None:
    """Fill each identifier's ``searched_in``: every table column of the request whose type family takes it
    (the keyed hash is per family: an email is searched in every string identity column)."""
    for li in linked.identifiers:
        d = bytes.fromhex(li.digest)
        li.searched_in = [f"{ts.name}.{c.column.name}" for ts in subjects for c in ts.columns if d in c.digests]


__all__ = ["DEFAULT_MAX_LINKED", "LinkRows", "collect_linked", "linking_tables", "mark_searched", "relink"]
