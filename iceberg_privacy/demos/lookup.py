"""The main job, end to end on the embedded default: ingest a clickstream with sidecars, look people up.

Run as ``iceberg-privacy demo``. Everything lives under the catalog home, so it is safe to rerun.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NoSuchTableError
from pyiceberg.expressions import EqualTo, Reference
from pyiceberg.expressions.literals import literal
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.table import Table
from pyiceberg.transforms import DayTransform

from iceberg_privacy.catalog import ensure_namespace_exists, table_name
from iceberg_privacy.config import configure_bloom, configure_identity
from iceberg_privacy.demos.clickstream import DEMO_SCHEMA, clickstream
from iceberg_privacy.errors import ConfigurationError, StorageError
from iceberg_privacy.index.lookup import execute
from iceberg_privacy.index.maintenance import compact_sidecars
from iceberg_privacy.index.planner import plan_lookup
from iceberg_privacy.properties import DEMO_MARKER
from iceberg_privacy.storage import canonical, delete_files, list_files, other_table_roots, table_roots
from iceberg_privacy.write import append


def _timed(fn: Callable[[], pa.Table]) -> tuple[pa.Table, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def drop_demo_table(catalog: Catalog, name: str, *, replace: bool = False) -> None:
    """Drop ``name`` before a demo re-creates it: only a table a demo made (``privacy.demo=true``), unless
    ``replace``. A user's table of the same name is never dropped silently: the demos replace their tables
    on every run, and a typo in ``ingest-demo TABLE`` must not purge a real one."""
    try:
        existing = catalog.load_table(name)
    except NoSuchTableError:
        return
    made_by_demo = existing.properties.get(DEMO_MARKER) == "true" or existing.schema() == DEMO_SCHEMA  # (older demos set no marker)
    if not replace and not made_by_demo:
        raise ConfigurationError(
            f"{name} already exists and was not created by the demo, which replaces the tables it writes; "
            f"nothing was changed. Pick another table name, or pass --replace (replace=True) to drop {name} "
            "and its data first."
        )
    purge_demo_table(catalog, name)


def purge_demo_table(catalog: Catalog, name: str) -> None:
    """Drop a demo table and every file under its locations: ``purge_table`` deletes what the metadata references,
    not the Bloom sidecars (named by snapshot summaries) nor leftovers, and the demo re-creates the table at the
    same location: a purge of the next run's erasure found the old run's sidecars there, which may hold the erased
    person, and refused to report complete (a second run of the main job in one home ended in exit 2). Tables
    stored inside its location are left alone; a failed delete is raised."""
    table = catalog.load_table(name)
    roots = table_roots(table.location(), table.properties)
    catalog.purge_table(name)
    left = [f.location for root in roots for f in list_files(table.io, root)]
    others = other_table_roots(roots, left)
    outcome = delete_files(table.io, [loc for loc in left if not any(canonical(loc).startswith(o) for o in others)])
    if not outcome.ok:
        raise StorageError(f"the demo dropped {name} but could not delete its leftover files: "
                           + "; ".join(f"{loc}: {why}" for loc, why in outcome.failed.items()))


def create_demo_table(catalog: Catalog, name: str = "demo.clicks", *, replace: bool = False) -> Table:
    """Create (or re-create, see :func:`drop_demo_table`) the demo clickstream table ``name``."""
    namespace = name.rsplit(".", 1)[0]
    ensure_namespace_exists(catalog, namespace)
    drop_demo_table(catalog, name, replace=replace)
    spec = PartitionSpec(PartitionField(source_id=1, field_id=1000, transform=DayTransform(), name="event_day"))
    table = catalog.create_table(name, DEMO_SCHEMA, partition_spec=spec,
                                 properties={"write.target-file-size-bytes": str(2 * 1024 * 1024),
                                             DEMO_MARKER: "true"})
    return configure_bloom(table, {"user_id": {"fpp": 0.01}, "identities": {"fpp": 0.01}})


def run_demo(catalog: Catalog, *, days: int = 30, events_per_day: int = 20_000, users: int = 50_000,
             batches: int = 5, progress: bool = True, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Create demo.clicks, ingest in ``batches`` commits, compact, and run single/batch/nested lookups."""
    table = create_demo_table(catalog)
    data, population = clickstream(users, days, events_per_day)
    echo(f"== ingest: {data.num_rows:,} events over {days} days into {table_name(table)} "
         f"(partitioned by day; bloom columns user_id, identities)")
    rows_per_batch = -(-data.num_rows // batches)
    data_bytes = sidecar_bytes = 0
    for i in range(batches):
        report = append(table, data.slice(i * rows_per_batch, rows_per_batch), progress=progress)
        data_bytes += report.data_bytes
        sidecar_bytes += report.sidecar_bytes
        echo(f"   commit {i + 1}: {report.data_files} files, {report.rows:,} rows, sidecar {report.sidecar_bytes:,} B, "
             f"filters {report.filter_seconds:.2f}s of {report.seconds:.2f}s")
    echo(f"   sidecar storage: {sidecar_bytes:,} B = {100 * sidecar_bytes / data_bytes:.2f}% of {data_bytes:,} B of data")
    echo(f"== compact: {compact_sidecars(table)}")
    table = table.refresh()

    present = np.asarray(data.column("user_id").to_numpy(zero_copy_only=False))
    rng = np.random.default_rng(1)
    probe_users = [str(u) for u in rng.choice(np.unique(present), min(5, len(np.unique(present))), replace=False)]
    echo("== single-key lookups (ours vs pyiceberg full scan with the same filter)")
    ours_t, full_t = [], []
    for user in probe_users:
        t0 = time.perf_counter()
        plan = plan_lookup(table, "user_id", user)
        rows = execute(table, plan)
        ours_t.append(time.perf_counter() - t0)
        def full_scan(u: str = user) -> pa.Table:
            return table.scan(row_filter=EqualTo(term=Reference("user_id"), value=literal(u))).to_arrow()

        full, secs = _timed(full_scan)
        full_t.append(secs)
        assert rows.num_rows == full.num_rows, "pruned lookup disagrees with full scan"
        echo(f"   {user}: {rows.num_rows} rows, read {len(plan.tasks)}/{plan.files_total} files, "
             f"{ours_t[-1] * 1000:.0f} ms vs full scan {secs * 1000:.0f} ms")
    echo(plan.explain())
    batch = [str(u) for u in rng.choice(population, min(1000, len(population)), replace=False)]  # --users < 1000
    t0 = time.perf_counter()
    bplan = plan_lookup(table, "user_id", batch)
    brows = execute(table, bplan)
    batch_s = time.perf_counter() - t0
    echo(f"== batch lookup of {len(batch)} users: {brows.num_rows:,} rows from {len(bplan.tasks)}/"
         f"{bplan.files_total} files in {batch_s * 1000:.0f} ms")
    email = f"user{population.index(probe_users[0])}@example.com"
    nplan = plan_lookup(table, "identities", email)
    nrows = execute(table, nplan)
    echo(f"== nested identity lookup {email}: {nrows.num_rows} rows from {len(nplan.tasks)}/"
         f"{nplan.files_total} files")
    med_ours, med_full = float(np.median(ours_t)), float(np.median(full_t))
    echo(f"== median single-key: ours {med_ours * 1000:.0f} ms, full scan {med_full * 1000:.0f} ms "
         f"({med_full / med_ours:.1f}x)")
    return {"storage_overhead": sidecar_bytes / data_bytes, "single_key_ms": med_ours * 1000,
            "full_scan_ms": med_full * 1000, "batch_ms": batch_s * 1000, "probe_user": probe_users[0]}


DERIVED = {
    "demo.daily_activity": "SELECT user_id, CAST(event_time AS DATE) AS day, count(*) AS events, "
                           "sum(price) FILTER (WHERE event_type = 'purchase') AS spent FROM demo.clicks GROUP BY ALL",
    "demo.user_keys": "SELECT DISTINCT upper(user_id) AS user_key, country FROM demo.clicks",
    "demo.daily_users": "SELECT day, count(DISTINCT user_id) AS users, sum(events) AS events "
                        "FROM demo.daily_activity GROUP BY day",
}


def run_lineage_demo(catalog: Catalog, table: Table, *, out: Path, echo: Callable[[str], None] = print) -> None:
    """Derive three tables from demo.clicks with SQL, then show the lineage graph and export it."""
    from iceberg_privacy.lineage import graph
    from iceberg_privacy.lineage.derive import derive
    from iceberg_privacy.lineage.export import render_png, to_mermaid, write_openlineage

    configure_identity(table, ["user_id", "identities"])
    for name in DERIVED:  # derived from demo.clicks by this demo, under the names it documents
        try:
            purge_demo_table(catalog, name)
        except NoSuchTableError:
            pass
    echo("== lineage: derive tables with SQL (DuckDB), column lineage recorded in each snapshot summary")
    for name, sql in DERIVED.items():
        rep = derive(catalog, sql, name)
        echo(f"   {rep}")
    g = graph(catalog)
    echo(f"   downstream of demo.clicks.user_id (values): {g.downstream('demo.clicks.user_id', indirect=False)}")
    echo(f"   upstream of demo.daily_users: {g.upstream('demo.daily_users')}")
    out.mkdir(parents=True, exist_ok=True)
    write_openlineage(g, out / "openlineage.ndjson")
    (out / "lineage.mmd").write_text(to_mermaid(g))
    try:
        render_png(g, out / "lineage.png")
    except Exception as exc:  # noqa: BLE001 - a picture is optional (matplotlib not installed)
        echo(f"   (no PNG: {exc})")
    echo(f"   exported OpenLineage events, Mermaid and PNG to {out}")


def run_subject_rights_demo(catalog: Catalog, table: Table, user: str, *, out: Path,
                            echo: Callable[[str], None] = print) -> dict[str, float]:
    """Access, erase and purge one person of demo.clicks, then show a late event of theirs being dropped."""
    from iceberg_privacy.catalog import catalog_home
    from iceberg_privacy.rights.keyed import SecretMissingError, init_secret, load_secret
    from iceberg_privacy.rights.requests import access, erase

    home = catalog_home(catalog)
    try:
        load_secret(home)
    except SecretMissingError:
        echo(f"== no HMAC secret configured: creating {init_secret(home)} for this demo")
    table = configure_identity(table, ["user_id", "identities"])
    echo(f"== subject rights for {user} (identity columns user_id, identities)")
    t0 = time.perf_counter()
    exported = access(catalog, [user], [table], out=out)
    access_s = time.perf_counter() - t0
    echo("   " + str(exported).replace("\n", "\n   "))
    late = table.scan(row_filter=EqualTo(term=Reference("user_id"), value=literal(user)), limit=1).to_arrow()
    t0 = time.perf_counter()
    report = erase(catalog, [user], [table], purge=True, follow_lineage=True)
    erase_s = time.perf_counter() - t0
    echo("   " + str(report).replace("\n", "\n   "))
    table = table.refresh()
    assert execute(table, plan_lookup(table, "user_id", user)).num_rows == 0, "erased subject still found"
    for name in report.tables:
        if name != table_name(table):
            echo(f"   followed lineage into {name}: {report.tables[name].rows_removed} row(s) of {user} erased there")
    dropped = append(table, late).dropped_rows
    echo(f"   a late event of {user} arrives after the erasure: {dropped} row(s) dropped by the forget list")
    return {"access_s": access_s, "erase_and_purge_s": erase_s}
