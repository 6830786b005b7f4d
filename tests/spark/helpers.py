"""Shared by the Spark tests and the local-cluster check script (which runs without pytest)."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

FORMAT = "iceberg-privacy"


def rows_of_spark(df: Any) -> Counter[tuple[Any, ...]]:
    """Multiset of rows (column order of the DataFrame)."""
    return Counter(tuple(r) for r in df.collect())


def rows_of_arrow(table: Any, columns: list[str]) -> Counter[tuple[Any, ...]]:
    cols = [table.column(c).to_pylist() for c in columns]
    return Counter(zip(*cols, strict=True))


def read(spark: Any, home: str | os.PathLike[str], table: str, **options: Any) -> Any:
    return spark.read.format(FORMAT).option("catalog.home", str(home)).options(
        **{k.replace("_", "-"): str(v) for k, v in options.items()}).load(table)


def plan_report(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def clustered_rows(n_users: int, rows_per_user: int) -> list[tuple[str, int, str]]:
    """Rows for user_id, n, note; users sort so a range partitioning puts each in one file."""
    return [(f"user-{u:04d}", u * 1000 + i, f"note {u}/{i}") for u in range(n_users) for i in range(rows_per_user)]
