"""Every source file the README and docs/ name in backticks exists: a reader who goes from the doc to the code finds
it. docs/benchmarks.md is a log of past runs (files it names may have been split since) and is not checked."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ELSEWHERE = {"mechanisms/aim.py"}  # private-pgm's file, which docs/dp.md credits


def test_every_source_path_the_docs_name_exists() -> None:
    """Regression: docs/lineage.md's module table named ``lineage/catalog_graph.py`` (the graph is
    ``lineage/graph.py``), ``derive.py`` and ``erasure.py`` (``lineage/derive.py``, ``rights/erasure.py``)."""
    missing = []
    docs = [ROOT / "README.md", *sorted(p for p in (ROOT / "docs").glob("*.md") if p.name != "benchmarks.md")]
    for doc in docs:
        for path in sorted(set(re.findall(r"`((?:[A-Za-z0-9_]+/)*[A-Za-z0-9_]+\.py)`", doc.read_text()))):
            if path in ELSEWHERE:
                continue
            bare = "/" not in path
            found = ((ROOT / path).is_file() or (ROOT / "iceberg_privacy" / path).is_file()
                     or (bare and any((ROOT / "iceberg_privacy").rglob(path))))
            if not found:
                missing.append(f"{doc.name}: {path}")
    assert not missing, missing
