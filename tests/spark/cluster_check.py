"""Write + pushdown read + equivalence on ``local-cluster[1,2,1024]`` (an executor JVM and its Python workers
apart from the driver: tasks, readers and commit messages are pickled across processes), then subject rights
with ``spark=`` on the same cluster (cluster_rights_check.rights_failures).

A process holds one SparkContext, so tests/spark/test_local_cluster.py runs this script in a
subprocess; starting the cluster once for both checks saves a cluster start (about half the test). It exits 0 when everything matches and non-zero (with the reason on stderr) otherwise.
Usage: python tests/spark/cluster_check.py WORKDIR [MASTER]
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main(workdir: str, master: str, *, rights: bool = True) -> int:
    sys.path.insert(0, str(ROOT))
    from tests.spark.cluster_rights_check import rights_failures, session_conf

    conf = session_conf()
    import iceberg_privacy as ip
    from iceberg_privacy.spark import privacy_session

    home = Path(workdir) / "home"
    spark = privacy_session(master, app_name="iceberg-privacy-cluster-check",
                            conf={**conf, "spark.sql.shuffle.partitions": "4"})
    spark.sparkContext.setLogLevel("ERROR")
    failures: list[str] = []
    rights_checked = False
    try:
        rows = [(f"user-{u:03d}", u * 100 + i, f"n{i}") for u in range(60) for i in range(5)]
        df = spark.createDataFrame(rows, "user_id string, n long, note string").repartitionByRange(6, "user_id")
        writer = df.write.format("iceberg-privacy").option("catalog.home", str(home))
        writer.option("bloom.columns", "user_id").mode("append").save("db.events")
        table = ip.connect(home=home).load_table("db.events")
        summary = table.current_snapshot().summary.additional_properties
        if int(summary.get("added-data-files", 0)) != 6 or summary.get("privacy.sidecar.columns") != "user_id":
            failures.append(f"unexpected commit summary {summary}")
        report = Path(workdir) / "plan.json"
        for probe in ("user-007", "user-059", "nobody"):
            df = (spark.read.format("iceberg-privacy").option("catalog.home", str(home))
                  .option("plan-report", str(report)).option("min-partitions", "2").load("db.events")
                  .where(f"user_id = '{probe}'"))
            got = Counter(tuple(r) for r in df.collect())
            plan = json.loads(report.read_text())
            core = ip.lookup(table, "user_id", probe)
            want = Counter(zip(*[core.column(c).to_pylist() for c in ("user_id", "n", "note")], strict=True))
            if got != want:
                failures.append(f"{probe}: spark returned {sorted(got)} but the core lookup {sorted(want)}")
            if plan["files_total"] != 6 or plan["files_read"] > 2:
                failures.append(f"{probe}: pushdown did not prune: {plan}")
        full = spark.read.format("iceberg-privacy").option("catalog.home", str(home)).option("min-partitions", "2")
        if full.load("db.events").count() != len(rows):
            failures.append("full scan row count differs")
        if rights:  # subject rights on the same cluster: one cluster start for both checks
            rights_failures_found = rights_failures(spark, workdir)
            failures += [f"subject rights: {f}" for f in rights_failures_found]
            rights_checked = True
    finally:
        spark.stop()
    for f in failures:
        print(f"cluster check FAILED: {f}", file=sys.stderr)
    if not failures:
        print(f"cluster check passed on {master}")
        if rights_checked:
            print(f"cluster rights check passed on {master}")
    return 1 if failures else 0


if __name__ == "__main__":
    work = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="ip-cluster-")
    sys.exit(main(work, sys.argv[2] if len(sys.argv) > 2 else "local-cluster[1,2,1024]"))
