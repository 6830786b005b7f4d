"""Data and catalog helpers shared by the DP tests (importable from tests and subprocess workers)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
from pyiceberg.catalog.sql import SqlCatalog


def make_catalog(path: Path, name: str = "test") -> SqlCatalog:
    path.mkdir(parents=True, exist_ok=True)
    return SqlCatalog(name, uri=f"sqlite:///{path}/catalog.db", warehouse=f"file://{path}/warehouse")


def pageviews(
    n: int, *, seed: int = 0, rows_per_user: int = 3, countries: int = 4, projects: int = 3
) -> pa.Table:
    """Synthetic pageviews where every user has at most ``rows_per_user`` rows (truncation is a no-op)."""
    rng = np.random.default_rng(seed)
    c = np.array([f"c{i}" for i in range(countries)])
    p = np.array([f"p{i}" for i in range(projects)])
    return pa.table(
        {
            "country": c[rng.integers(0, countries, n)].tolist(),
            "project": p[rng.integers(0, projects, n)].tolist(),
            "page": [f"page{i}" for i in rng.integers(0, 20, n)],
            "user_id": (np.arange(n) // rows_per_user).astype(np.int64),
            "bytes": rng.uniform(0, 100, n),
        }
    )
