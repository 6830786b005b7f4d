"""How big the DP ledger's table properties get: ``privacy.dp.tables`` grows with the lake's tables, ``privacy.dp.memo``
with the memoized releases (at most ``ledger.MEMO_ENTRIES``).

    python -m benchmarks.dp_properties --out results/dp_properties.json [--tables 500] [--releases 200]

Why it matters: pyiceberg's Hive and Glue catalogs copy every table property into the metastore's table
parameters (older Hive metastore schemas store each value in a varchar(4000); Glue allows 512 KB per value), so a
ledger on such a catalog fails to commit once one value outgrows the column. This builds a real lake in a local
SqlCatalog: ``--tables`` user tables in one namespace, a namespace budget (which binds every table), and
``--releases`` releases of distinct tables as the ledger records them (``reserved`` then ``released`` with a query
hash and a source snapshot: each one memo entry), then prints and writes the byte size (UTF-8) of every ledger
property. Only measured numbers are written.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow as pa

from benchmarks.harness import at_least, exit_on_sigterm, output_file


def measure(tables: int, releases: int) -> dict[str, Any]:
    from pyiceberg.catalog.sql import SqlCatalog

    import iceberg_privacy as ip
    from iceberg_privacy.dp.ledger import Ledger
    from iceberg_privacy.properties import DP_MEMO_PROPERTY

    schema = pa.schema([("user_id", pa.string()), ("v", pa.int64())])
    with tempfile.TemporaryDirectory(prefix="ip-dp-props-") as work:
        catalog = SqlCatalog("props", uri=f"sqlite:///{work}/catalog.db", warehouse=f"file://{work}/warehouse")
        catalog.create_namespace("lake")
        t0 = time.perf_counter()
        for i in range(tables):
            catalog.create_table(("lake", f"table_{i:04d}"), schema=schema)
        created_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        ip.set_namespace_budget(catalog, "lake", ip.PureDP(1_000_000))
        bind_s = time.perf_counter() - t0
        ledger = Ledger(catalog, ("lake",))
        t0 = time.perf_counter()
        for i in range(releases):
            table = catalog.load_table(("lake", f"table_{i % tables:04d}"))
            ident = tuple(table.name())
            qhash = hashlib.sha256(f"query {i}".encode()).hexdigest()
            res = ledger.reserve(ident, "analyst", ip.PureDP(0.01), source_snapshot_id=10_000 + i, query_hash=qhash,
                                 output_table=f"lake.release_{i:04d}", table_uuid=str(table.metadata.table_uuid))
            ledger.record("released", res.release_id, "analyst", source=ident, source_snapshot_id=10_000 + i,
                          query_hash=qhash, output_table=f"lake.release_{i:04d}", output_snapshot_id=20_000 + i)
        releases_s = time.perf_counter() - t0
        ledger_table = ledger.load()
        assert ledger_table is not None
        props = {k: len(v.encode()) for k, v in ledger_table.properties.items() if k.startswith("privacy.dp.")}
        # what the memo holds, not the releases made: it keeps at most ledger.MEMO_ENTRIES (newest first)
        memo_entries = len(json.loads(ledger_table.properties.get(DP_MEMO_PROPERTY, "{}")))
    memo_bytes = props.get("privacy.dp.memo", 0)
    table_bytes = props.get("privacy.dp.tables", 0)
    return {
        "tables": tables,
        "releases": releases,
        "property_bytes": dict(sorted(props.items())),
        "largest_property_bytes": max(props.values()),
        "tables_bytes_per_table": round(table_bytes / tables, 1) if tables else None,
        "memo_entries": memo_entries,
        "memo_bytes_per_entry": round(memo_bytes / memo_entries, 1) if memo_entries else None,
        "seconds": {"create_tables": round(created_s, 2), "set_namespace_budget_binding_all": round(bind_s, 2),
                    "releases": round(releases_s, 2)},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.dp_properties", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=output_file, default="results/dp_properties.json")
    ap.add_argument("--tables", type=at_least(1), default=500)
    ap.add_argument("--releases", type=at_least(0), default=200)
    args = ap.parse_args(argv)
    result = measure(args.tables, args.releases)
    result["machine"] = {"python": platform.python_version(), "platform": platform.platform()}
    for key, size in result["property_bytes"].items():
        print(f"{key:28s} {size:>9,d} bytes")
    print(f"per table in privacy.dp.tables: {result['tables_bytes_per_table']} bytes; per memo entry: "
          f"{result['memo_bytes_per_entry']} bytes")
    print(f"seconds: {result['seconds']}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    exit_on_sigterm()
    raise SystemExit(main())
