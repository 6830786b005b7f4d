"""Orphan files: what a table's metadata no longer references, and their removal after an age.

Why its own module: orphan cleanup is about every file under a table location (data, manifests, metadata
versions, sidecars, another engine's statistics), not about the index alone; the purge (rights) and the history
upkeep of the library's own tables call it, and it shares nothing with the sidecar rebuild in
:mod:`iceberg_privacy.index.maintenance` beyond :func:`referenced_files`. Safety rules (docs/storage.md): a
file younger than the age may belong to a commit in flight and is left; another table stored inside or at the
location is never this table's orphan; a file that cannot be deleted is reported, never skipped.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from pyiceberg.catalog import Catalog
from pyiceberg.table import StaticTable, Table

from iceberg_privacy._internal.arguments import check_ages, check_flags
from iceberg_privacy.catalog import TableRef, all_tables, load_many, load_table, table_name
from iceberg_privacy.index.registry import referenced_sidecar_locations
from iceberg_privacy.storage import (
    canonical,
    delete_files,
    list_files,
    other_table_roots,
    outside_roots,
    storage_errors,
    tables_sharing_location,
)

logger = logging.getLogger(__name__)


@dataclass
class OrphanReport:
    """Files under a table location that no metadata references (full URIs), and what deleting them did."""

    table: str
    older_than: timedelta
    orphans: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    delete_failures: dict[str, str] = field(default_factory=dict)
    files_listed: int = 0
    other_tables: int = 0  # tables stored inside this one's location: their files are never orphans
    shared_with: list[str] = field(default_factory=list)  # metadata.json of other tables AT this location

    def __str__(self) -> str:
        lines = [f"{self.table}: {len(self.orphans)} orphan file(s) older than {self.older_than} "
                 f"among {self.files_listed} listed; deleted {len(self.deleted)}"]
        if self.other_tables:
            lines.append(f"  {self.other_tables} other table(s) stored inside this table's location: left alone")
        if self.shared_with:
            lines.append(f"  another table uses this same location ({self.shared_with[0]}): nothing is an orphan "
                         "here, nothing was deleted; give each table its own location")
        lines += [f"  {o}" for o in self.orphans[:50]]
        lines += [f"  NOT deleted: {why}" for why in self.delete_failures.values()]
        return "\n".join(lines)


def referenced_files(table: Table) -> set[str]:
    """Every file the table metadata can reach (metadata, manifest lists, manifests, data, stats, sidecars),
    as :func:`iceberg_privacy.storage.canonical` keys."""
    md = table.metadata
    refs = {table.metadata_location, *(e.metadata_file for e in md.metadata_log)}
    for snap in md.snapshots:
        refs.add(snap.manifest_list)
        for manifest in snap.manifests(table.io):
            refs.add(manifest.manifest_path)
            for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=False):
                refs.add(entry.data_file.file_path)
    refs |= {s.statistics_path for s in md.statistics}
    refs |= {s.statistics_path for s in md.partition_statistics}
    refs |= referenced_sidecar_locations(md)
    return {canonical(r) for r in refs}


_VERSION = re.compile(r"/(?P<version>\d+)-[^/]*\.metadata\.json(\.gz)?$")
_ANY_METADATA = re.compile(r"\.metadata\.json(\.gz)?$")  # any writer's naming (a REST server's v<N>.metadata.json)


def _superseded_metadata(table: Table, unreferenced: Iterable[str]) -> set[str]:
    """Unreferenced ``metadata.json`` files in the table's own ``metadata/`` folder whose version number is not
    above the current one: written by a commit that never became current (a process killed between writing the
    new version and swapping the catalog's pointer) or dropped from the log by a commit whose process died before
    deleting them. No commit can make them current any more (its swap expects the version it was built on), so
    they are orphans whatever their age. They hold the snapshot history (summaries, paths: a purge's subject)
    and would otherwise stay until the orphan age. Only called once no other table's metadata is in that folder
    (:func:`iceberg_privacy.storage.tables_sharing_location`)."""
    current = _VERSION.search(canonical(table.metadata_location))
    if current is None:  # not pyiceberg's / Java's <version>-<uuid> naming: nothing can be told by name
        return set()
    folder = canonical(table.location()).rstrip("/") + "/metadata/"  # the folder tables_sharing_location checks
    if not canonical(table.metadata_location).startswith(folder):  # write.metadata.path elsewhere
        return set()
    out = set()
    for loc in unreferenced:
        key = canonical(loc)
        m = _VERSION.search(key)
        if m and key.startswith(folder) and "/" not in key[len(folder):] \
                and int(m.group("version")) <= int(current.group("version")):
            out.add(key)
    return out


def _superseded_metadata_elsewhere(table: Table, referenced: set[str]) -> list[str]:
    """:func:`_superseded_metadata` for a table whose metadata is written under ``write.metadata.path`` outside its
    location (not listed with it). That folder may be shared by several tables, so a file counts only when its
    ``table-uuid`` is this table's; one that cannot be read is left."""
    from iceberg_privacy.storage import _metadata_uuid

    folder = table.metadata_location.rsplit("/", 1)[0]
    key = canonical(folder).rstrip("/") + "/"
    current = _VERSION.search(canonical(table.metadata_location))
    if current is None or key.startswith(canonical(table.location()).rstrip("/") + "/"):
        return []  # listed with the location (or not <version>-<uuid> naming)
    own = str(table.metadata.table_uuid).lower()
    out = []
    for f in list_files(table.io, folder):
        name = canonical(f.location)
        m = _VERSION.search(name)
        if m is None or name in referenced or not name.startswith(key) or "/" in name[len(key):] \
                or int(m.group("version")) > int(current.group("version")):
            continue
        try:
            if _metadata_uuid(table.io, f.location) == own:
                out.append(f.location)
        except Exception:  # noqa: BLE001 - gone meanwhile, or unreadable: not provably this table's
            continue
    return out


CatalogListing = list[tuple[tuple[str, ...], str, str, str]]
"""(identifier, table location, current metadata location, table uuid) of every table of a catalog that loads."""


def catalog_listing(catalog: Catalog) -> CatalogListing:
    """Every table of ``catalog`` that loads (one that cannot, dropped meanwhile or with its metadata gone, has
    nothing left to protect), for :func:`catalog_entries_sharing`."""
    idents = all_tables(catalog)
    return [(ident, t.location(), t.metadata_location, str(t.metadata.table_uuid))
            for ident, t in zip(idents, load_many(catalog, idents), strict=True) if not isinstance(t, Exception)]


def catalog_entries_sharing(table: Table, listing: CatalogListing | None = None) -> list[str]:
    """Current ``metadata.json`` of the OTHER entries of the table's catalog with this table's uuid and location:
    a ``register_table`` of one of its metadata files (a clone, or a move that kept the old entry; another table
    at the location has another uuid: :func:`iceberg_privacy.storage.tables_sharing_location`). A listing cannot tell their newer files (metadata versions, data, manifests) from
    this table's orphans. Entries of other catalogs are not seen (docs/storage.md). ``listing``: the catalog's
    :func:`catalog_listing`, when several tables are checked."""
    catalog = getattr(table, "catalog", None)
    if catalog is None or isinstance(table, StaticTable):
        return []
    own, uuid = canonical(table.location()).rstrip("/"), str(table.metadata.table_uuid)
    me = tuple(table.name())
    return sorted(meta for ident, location, meta, other in (catalog_listing(catalog) if listing is None else listing)
                  if ident != me and other == uuid and canonical(location).rstrip("/") == own)


DEFAULT_ORPHAN_AGE = timedelta(days=3)
"""``cleanup_orphans``' default age, Iceberg's own (``remove_orphan_files``) and the purge's: a write's data files are
unreferenced until its one commit at the end, and a long one (an ingest streaming a RecordBatchReader, a Spark job)
runs for hours. The former default of one hour deleted the first files of a write still running, whose commit then
named files that no longer existed."""


@storage_errors
def cleanup_orphans(table: TableRef, *, older_than: timedelta = DEFAULT_ORPHAN_AGE, delete: bool = False,
                    catalog: Catalog | None = None) -> OrphanReport:
    """Files under the table location that no metadata references (e.g. left by a killed writer).

    Only files older than ``older_than`` (default 3 days, as Iceberg's ``remove_orphan_files``) are reported, so
    in-flight writes are not mistaken for orphans, except superseded ``metadata.json`` versions no commit can make current any more (a commit killed
    before the catalog swap, see :func:`_superseded_metadata`), which are also looked for under a
    ``write.metadata.path`` outside the location (those whose table-uuid is this table's). With ``delete=True`` they are removed through the table's FileIO; a file that cannot be
    deleted is listed in ``delete_failures``, never skipped in silence. The location is listed with the
    filesystem built from the table's own properties (endpoint, credentials), whatever the scheme.
    """
    check_flags("cleanup_orphans", delete=delete)  # delete="no" would delete
    table = load_table(catalog, table)
    check_ages("cleanup_orphans", older_than=older_than)  # a negative age would count in-flight writes as orphans
    # The catalog's current metadata, not the caller's: a Table loaded before other commits does not reference
    # their files (metadata.json, manifests, data, sidecars), which were deleted as orphans once older than
    # ``older_than``, leaving the catalog pointing at a deleted metadata file. (A StaticTable has no catalog.)
    if not isinstance(table, StaticTable):
        table.refresh()
    listed = list_files(table.io, table.location())
    reachable = referenced_files(table)
    cutoff = datetime.now(UTC) - older_than
    report = OrphanReport(table_name(table), older_than, files_listed=len(listed))
    unreferenced = [f for f in listed if canonical(f.location) not in reachable]
    # another table stored inside this one's location: its files are not this table's orphans
    others = other_table_roots([table.location()], (f.location for f in unreferenced))
    report.other_tables = len(others)
    # another table created AT this location: its files cannot be told from this table's orphans
    report.shared_with = tables_sharing_location(table.io, table.location(), str(table.metadata.table_uuid),
                                                 (f.location for f in unreferenced))
    if report.shared_with:
        logger.warning("%s: another table uses the same location (%s); no file there is treated as an orphan, "
                       "nothing is deleted. Give each table its own location", report.table, report.shared_with[0])
        return report
    folder = canonical(table.location()).rstrip("/") + "/metadata/"
    if any(canonical(f.location).startswith(folder) and _ANY_METADATA.search(canonical(f.location))
           for f in unreferenced):
        # a metadata version this table does not reference may be the current one of a register_table copy
        # (same uuid, same location): then nothing here can be told from its files, and nothing is deleted
        report.shared_with = catalog_entries_sharing(table)
        if report.shared_with:
            logger.warning("%s: catalog entry with metadata %s uses this table's location (a register_table copy); "
                           "no file there is treated as an orphan, nothing is deleted. Drop one of the two entries "
                           "(catalog.drop_table, without purge) first", report.table, report.shared_with[0])
            return report
    dead = _superseded_metadata(table, (f.location for f in unreferenced))
    report.orphans = [f.location for f in unreferenced if outside_roots(others, f.location)
                      and (f.mtime is None or f.mtime <= cutoff or canonical(f.location) in dead)]
    report.orphans += _superseded_metadata_elsewhere(table, reachable)
    if delete:
        outcome = delete_files(table.io, report.orphans)
        report.deleted = outcome.deleted + outcome.already_gone
        report.delete_failures = outcome.failed
    return report


__all__ = ["DEFAULT_ORPHAN_AGE", "OrphanReport", "catalog_entries_sharing", "catalog_listing", "cleanup_orphans", "referenced_files"]
