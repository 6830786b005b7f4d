"""Subject rights with ``spark=`` on ``local-cluster[1,2,1024]`` (an executor JVM and its Python workers apart
from the driver) equal the single-process path: a few hypothesis examples of erase / access / verify on
identical tables.

A process holds one SparkContext: tests/spark/test_local_cluster.py runs cluster_check.py in a subprocess,
which calls :func:`rights_failures` on its cluster session (one cluster start for both checks).
It exits 0 when everything matches and non-zero (with the reason on stderr) otherwise.
Usage: python tests/spark/cluster_rights_check.py WORKDIR [MASTER]
"""

from __future__ import annotations

import itertools
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def session_conf() -> dict[str, str]:
    """What the executors need to run this checkout's code (they start from SPARK_HOME, not from here)."""
    import pyspark

    os.environ.setdefault("SPARK_HOME", os.path.dirname(pyspark.__file__))  # local-cluster launches executors from it
    sys.path.insert(0, str(ROOT))
    # executors are separate processes started from SPARK_HOME: they find this checkout through PYTHONPATH
    if str(ROOT) not in os.environ.get("PYTHONPATH", "").split(os.pathsep):
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    # a short run on small data: the client JIT only and the serial GC cost the JVMs far less CPU (JIT and
    # GC threads) than the server defaults, and change nothing the checks look at
    jvm = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"
    return {"spark.ui.enabled": "false", "spark.executor.memory": "512m", "spark.ui.showConsoleProgress": "false",
            "spark.executorEnv.PYTHONPATH": os.environ["PYTHONPATH"],
            "spark.driver.extraJavaOptions": jvm, "spark.executor.extraJavaOptions": jvm}


def rights_failures(spark: object, workdir: str) -> list[str]:
    """Erase / access / verify with ``spark=`` against the single-process path on identical tables."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    import iceberg_privacy as ip
    from iceberg_privacy.rights.keyed import SECRET_ENV, load_secret
    from iceberg_privacy.rights.purge import verify_table
    from iceberg_privacy.rights.subjects import resolve_subjects
    from tests.helpers import SECRET, all_rows, make_table

    os.environ[SECRET_ENV] = SECRET
    catalog = ip.connect(home=Path(workdir) / "rights-home")
    catalog.create_namespace("db")
    names = itertools.count()
    pool = [f"u{i}" for i in range(10)]
    failures: list[str] = []

    @settings(max_examples=3, deadline=None, database=None)
    @given(batches=st.lists(st.lists(st.sampled_from(pool), min_size=1, max_size=5), min_size=1, max_size=4),
           subjects=st.lists(st.sampled_from([*pool, "nobody"]), min_size=1, max_size=3, unique=True))
    def check(batches: list[list[str]], subjects: list[str]) -> None:
        n = next(names)
        core, dist = f"db.core{n}", f"db.spark{n}"
        a, b = make_table(catalog, core, batches), make_table(catalog, dist, batches)
        secret = load_secret(catalog=catalog)
        digests = resolve_subjects([a], subjects, secret)[0].digests
        va, vb = verify_table(a, digests, secret), verify_table(a, digests, secret, spark=spark)
        if (va.rows_scanned, va.rows_found, va.files_with_subjects) != (vb.rows_scanned, vb.rows_found,
                                                                        vb.files_with_subjects):
            failures.append(f"verify {batches} {subjects}: {va} != {vb}")
        xa = ip.access(catalog, subjects, tables=[core], out=Path(workdir) / f"acc{n}a").tables[core]
        xb = ip.access(catalog, subjects, tables=[core], out=Path(workdir) / f"acc{n}b", spark=spark).tables[core]
        if (xa.rows, xa.sha256) != (xb.rows, xb.sha256):
            failures.append(f"access {batches} {subjects}: {xa.rows} rows vs {xb.rows}")
        ea = ip.erase(catalog, subjects, tables=[core]).tables[core]
        eb = ip.erase(catalog, subjects, tables=[dist], spark=spark).tables[dist]
        if all_rows(a) != all_rows(b) or (ea.rows_removed, ea.files_rewritten) != (eb.rows_removed,
                                                                                  eb.files_rewritten):
            failures.append(f"erase {batches} {subjects}: {ea} != {eb}")

    check()
    return failures


def main(workdir: str, master: str) -> int:
    conf = session_conf()
    from iceberg_privacy.spark import privacy_session

    spark = privacy_session(master, app_name="iceberg-privacy-cluster-rights", conf=conf)
    spark.sparkContext.setLogLevel("ERROR")
    try:
        failures = rights_failures(spark, workdir)
    finally:
        spark.stop()
    for f in failures:
        print(f"cluster rights check FAILED: {f}", file=sys.stderr)
    if not failures:
        print(f"cluster rights check passed on {master}")
    return 1 if failures else 0


if __name__ == "__main__":
    work = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="ip-cluster-rights-")
    sys.exit(main(work, sys.argv[2] if len(sys.argv) > 2 else "local-cluster[1,2,1024]"))
