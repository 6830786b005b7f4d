"""The reports subject-rights calls return: plain dataclasses with a readable ``__str__``.

They live apart from the code that fills them so that the request layer
(:mod:`iceberg_privacy.rights.requests`) can combine an erasure and its purge in one report while
access, erasure and purge stay independent of each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from iceberg_privacy.lineage.fanout import Fanout
from iceberg_privacy.rights.traces import Trace  # run time: get_type_hints(VerifyReport)
from iceberg_privacy.storage import child

MANIFEST = "manifest.json"


@dataclass
class LinkedIdentifier:
    """Another identifier of the request's subject, read from a table declaring several identity columns.

    Shown by column and keyed-hash prefix only: reports end up in logs, and the journal's rule (no raw
    identifier at rest) should not depend on where a report is printed. ``value`` is kept in memory for
    the run (None when a resumed request could not read it again and matches it by its keyed hash)."""

    column: str  # "db.users.email": where it was first found
    digest: str  # hex HMAC-SHA256(secret, canonical value), as the journal records it
    found_in: list[str] = field(default_factory=list)  # every "table.column" holding it next to the subject
    # every "table.column" of the request searched for it: rows holding it there are erased (or exported); the
    # per-table row counts of the report say how many went (rows are not attributed to one identifier)
    searched_in: list[str] = field(default_factory=list)
    round: int = 1  # 1: next to the request's own values; 2+: next to an identifier found in an earlier round
    value: Any = field(default=None, repr=False, compare=False)

    def __str__(self) -> str:
        where = ", ".join(self.searched_in) or "no table"
        return (f"{self.column} #{self.digest[:12]} (found in {', '.join(self.found_in)}; searched in {where}"
                f"{'' if self.value is not None else '; by keyed hash: its source rows were already erased'})")


@dataclass
class LinkedIdentifiers:
    """What reading the subject's rows in multi-identity tables found (see :mod:`iceberg_privacy.rights.linked`)."""

    identifiers: list[LinkedIdentifier] = field(default_factory=list)
    tables_read: list[str] = field(default_factory=list)  # the request's tables declaring several identity columns
    files_read: int = 0
    rounds: int = 0
    max_linked: int = 0
    warnings: list[str] = field(default_factory=list)
    complete: bool = True  # False: a resumed request could not read some again (they are matched by keyed hash)
    # found next to the subject but also on a row of another person (another value in a person-key column: one
    # holding the request's own identifier, or named or typed like one; see rights/linked.py), or on the subject's
    # own row next to another person's key: NOT linked, so erasing by them cannot remove that person's rows
    shared: list[LinkedIdentifier] = field(default_factory=list)

    @property
    def values(self) -> list[Any]:
        return [li.value for li in self.identifiers if li.value is not None]

    def journal_detail(self) -> dict[str, Any]:
        """What the journal's ``created`` event keeps (``detail.linked``): keyed hashes and column names only."""
        return {"digests": [li.digest for li in self.identifiers],
                "found_in": {li.digest: li.found_in for li in self.identifiers},
                "tables": self.tables_read, "max": self.max_linked}

    def to_json(self) -> dict[str, Any]:
        """The report as JSON (``--json``): every field but the values (keyed hashes and column names only)."""
        return {"identifiers": [{"column": li.column, "digest": li.digest, "found_in": li.found_in,
                                 "searched_in": li.searched_in, "round": li.round} for li in self.identifiers],
                "tables_read": self.tables_read, "files_read": self.files_read, "rounds": self.rounds,
                "max_linked": self.max_linked, "warnings": self.warnings, "complete": self.complete,
                "shared_not_linked": [{"column": li.column, "digest": li.digest, "found_in": li.found_in}
                                      for li in self.shared]}

    def lines(self) -> list[str]:
        out = [f"  linked identifier: {li}" for li in self.identifiers]
        out += [f"  not linked (shared with another person): {li.column} #{li.digest[:12]}" for li in self.shared]
        return out + [f"  warning: {w}" for w in self.warnings]


@dataclass
class TableExport:
    table: str
    snapshot_id: int | None
    rows: int
    path: str
    sha256: str
    files_read: int
    files_total: int
    plan: str = ""


@dataclass
class AccessReport:
    request_id: str
    out: str  # a local folder or any FileIO location (s3://bucket/exports/req-1)
    tables: dict[str, TableExport] = field(default_factory=dict)
    seconds: float = 0.0
    linked: LinkedIdentifiers | None = None  # the subject's other identifiers, exported by too

    @property
    def manifest_path(self) -> str:
        return child(self.out, MANIFEST)

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.tables.values())

    def __str__(self) -> str:
        lines = [f"access request {self.request_id}: {self.rows} row(s) from {len(self.tables)} table(s) -> "
                 f"{self.manifest_path} ({self.seconds:.2f}s)"]
        lines += [f"  {t.table}: {t.rows} rows, read {t.files_read} of {t.files_total} files -> {t.path.rsplit("/", 1)[-1]}"
                  for t in self.tables.values()]
        if self.linked is not None:
            lines += self.linked.lines()
        return "\n".join(lines)


@dataclass
class RefHold:
    """A branch or tag whose snapshot can still read rows of a request's subjects."""

    table: str
    name: str
    kind: str  # "branch" or "tag"
    snapshot_id: int

    @property
    def command(self) -> str:
        """The exact call that drops the ref (a branch is never removed with remove_tag, nor a tag with remove_branch)."""
        verb = "remove_branch" if self.kind == "branch" else "remove_tag"
        return f"catalog.load_table({self.table!r}).manage_snapshots().{verb}({self.name!r}).commit()"

    @property
    def advice(self) -> str:
        if self.kind == "branch":
            return f"drop branch {self.name!r} of {self.table}: {self.command}"
        return (f"drop tag {self.name!r} of {self.table}: {self.command} (or move it: drop it, then "
                f"catalog.load_table({self.table!r}).manage_snapshots().create_tag(<erased snapshot id>, "
                f"{self.name!r}).commit())")

    def __str__(self) -> str:
        return f"{self.kind} {self.name!r} of {self.table} (snapshot {self.snapshot_id}) holds subject rows; {self.advice}"


@dataclass
class TableErasure:
    """What erasing the subjects from one table did."""

    table: str
    rows_removed: int = 0
    files_rewritten: int = 0  # data files that held subject rows and were replaced
    files_added: int = 0
    files_read: int = 0  # candidate files read (rewritten + Bloom false positives)
    files_total: int = 0
    snapshot_ids: list[int] = field(default_factory=list)
    commit_attempts: int = 0
    skipped: str | None = None  # why nothing was done (already erased in an earlier run, ...)
    branches: dict[str, list[int]] = field(default_factory=dict)  # branch -> its erase commits
    tags: list[RefHold] = field(default_factory=list)  # tags still reading erased rows (drop or move them)
    rebased: int = 0  # lost commits re-committed on a newer snapshot without reading again


@dataclass
class ErasureReport:
    """Outcome of :func:`erase` (and of the purge, when asked for)."""

    request_id: str
    subjects: int
    tables: dict[str, TableErasure]
    seconds: float = 0.0
    purge: PurgeReport | None = None  # erase(..., purge=True), run_request(..., purge=True)
    lineage: Fanout | None = None  # erase(..., follow_lineage=True): downstream tables, exempt releases, warnings
    linked: LinkedIdentifiers | None = None  # the subject's other identifiers, erased by too

    @property
    def rows_removed(self) -> int:
        return sum(t.rows_removed for t in self.tables.values())

    def __str__(self) -> str:
        lines = [f"erase request {self.request_id}: {self.subjects} subject(s), {self.rows_removed} row(s) removed "
                 f"in {self.seconds:.2f}s"]
        for t in self.tables.values():
            note = f" ({t.skipped})" if t.skipped else ""
            lines.append(f"  {t.table}: {t.rows_removed} rows, {t.files_rewritten} files rewritten of {t.files_read} "
                         f"read / {t.files_total}, snapshots {t.snapshot_ids or '-'}{note}")
            lines += [f"    branch {b}: erased in snapshot(s) {ids}" for b, ids in t.branches.items()]
            lines += [f"    warning: {h}" for h in t.tags]
        if self.linked is not None:
            lines += self.linked.lines()
        if self.lineage is not None:
            for rel in self.lineage.exempt:
                lines.append(f"  exempt: {rel.table} is a DP release of {rel.source} (release {rel.release_id or '?'}, "
                             f"snapshot {rel.snapshot_id}); aggregated with differential privacy, not erased")
            lines += [f"  warning: {w}" for w in self.lineage.warnings]
        if self.purge is not None:
            lines.append(str(self.purge))
        return "\n".join(lines)


@dataclass
class VerifyReport:
    """What the verification found under one table location: rows of the subjects in Parquet files, and
    traces of them in every other file and name (manifests, manifest lists, metadata JSON, directories)."""

    table: str
    files_scanned: int = 0  # Parquet files
    rows_scanned: int = 0
    rows_found: int = 0
    files_with_subjects: list[str] = field(default_factory=list)
    unreferenced_with_subjects: int = 0  # of files_with_subjects: not referenced by the table's metadata (orphans)
    unreadable: list[str] = field(default_factory=list)
    other_files_scanned: int = 0  # manifests, manifest lists, metadata JSON, sidecars, ...
    names_checked: int = 0  # file and directory names
    traces: list[Trace] = field(default_factory=list)  # locations redacted (no subject in a segment)
    # why a match was not a trace (a truncated bound of a verified-clean file equal to a subject's value); no values
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.rows_found == 0 and not self.unreadable and not self.traces


@dataclass
class TablePurge:
    table: str
    expired_snapshots: list[int] = field(default_factory=list)
    deleted_files: int = 0
    deleted_by_kind: dict[str, int] = field(default_factory=dict)
    sidecar: str | None = None
    scrub_snapshot: int | None = None
    verify: VerifyReport | None = None
    skipped: str | None = None
    delete_failures: dict[str, str] = field(default_factory=dict)  # location -> why it could not be deleted
    # metadata.json files of another table at this very location (a table dropped and created again there): the
    # orphan deletion cannot tell that table's files from this one's, so it deletes nothing
    shared_location: list[str] = field(default_factory=list)


@dataclass
class PurgeReport:
    request_id: str
    tables: dict[str, TablePurge]
    completed: bool = False
    seconds: float = 0.0

    def __str__(self) -> str:
        lines = [f"purge of request {self.request_id}: {'completed' if self.completed else 'NOT complete'} "
                 f"({self.seconds:.2f}s)"]
        for t in self.tables.values():
            v = t.verify
            ver = (f"verified {v.files_scanned} parquet files, {v.rows_found} subject rows" if v else "not verified")
            lines.append(f"  {t.table}: expired {len(t.expired_snapshots)} snapshot(s), deleted {t.deleted_files} "
                         f"file(s) {t.deleted_by_kind or ''}; {ver}{f' ({t.skipped})' if t.skipped else ''}")
            lines += [f"    NOT deleted: {why}" for why in list(t.delete_failures.values())[:5]]
        return "\n".join(lines)
