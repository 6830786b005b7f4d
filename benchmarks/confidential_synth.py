"""DP synthetic data benchmark (the synth half of ``benchmarks.confidential``): utility and time of MST and AIM.

    python -m benchmarks.confidential_synth --out results/confidential_synth.json [--quick]

Builds a 10-column census-like table with realistic correlations (age drives education, marital
status, children and hours; education and occupation drive income; sex shifts occupation and hours;
region shifts income) in a local SqlCatalog, sets a namespace budget, and calls ``dp_synthesize``
end to end (ledger reservation, the mechanism, Iceberg write with provenance) at epsilon 1 and 10, each
as ``ApproxDP(epsilon, 1e-6)`` (the mechanism runs at the zCDP rho that implies it), once with
``method="mst"`` (keys ``synth.*``) and once with ``method="aim"`` (keys ``synth.aim.*``: AIM with its
library defaults, a workload of all 2-way marginals, at most 16 d = 160 rounds, a 1 MB model cap). Utility: for every 1- and
2-way marginal (10 + 45) the total variation distance between the synthetic and the source table,
both cut into the same public cells the synthesis used (categories; 10 equal-width bins per bounded
numeric column); ``synth.tvd_median_eps*`` is the median over those 55 marginals (mean over
``repeats`` runs). ``synth.seconds`` (``synth.aim.seconds``) is the median wall time of one
``dp_synthesize`` call at epsilon 10.
Only measured numbers are written.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from benchmarks.harness import at_least, exit_on_sigterm, output_file

if TYPE_CHECKING:
    from iceberg_privacy.dp.synth import Method

DELTA = 1e-6
EPSILONS = (1.0, 10.0)
BINS = 10
SEX = ["female", "male"]
EDUCATION = ["none", "primary", "secondary", "vocational", "bachelor", "master", "doctorate"]
MARITAL = ["single", "married", "divorced", "widowed"]
OCCUPATION = ["service", "manual", "clerical", "sales", "technical", "professional", "manager", "unemployed"]
REGION = ["north", "south", "east", "west", "capital"]
DOMAINS = {"sex": SEX, "education": EDUCATION, "marital": MARITAL, "occupation": OCCUPATION, "region": REGION}
BOUNDS = {"age": (17, 90), "hours": (0, 80), "income": (0.0, 250_000.0)}
COLUMNS = ["age", "sex", "education", "marital", "children", "occupation", "hours", "income", "region", "owns_home"]


def census(n: int, seed: int = 0) -> pa.Table:
    """n rows of correlated census-like data (see the module doc)."""
    rng = np.random.default_rng(seed)
    age = np.clip(rng.gamma(6.0, 7.0, n) + 17, 17, 90).astype(np.int32)
    sex = rng.integers(0, 2, n)
    young = age < 26
    edu = np.clip(np.round(rng.normal(3.0 + 0.6 * (age > 30) - 0.8 * young, 1.3, n)), 0, 6).astype(int)
    p_married = np.clip((age - 20) / 40, 0.02, 0.7)
    u = rng.random(n)
    marital = np.where(u < p_married, 1, np.where(u < p_married + 0.1 * (age > 40), 2,
                                                  np.where(age > 70, 3, 0)))
    children = rng.random(n) < np.clip(0.1 + 0.5 * (marital == 1) + 0.1 * (age > 30) - 0.3 * young, 0.02, 0.95)
    occ_score = edu + rng.normal(0, 1.2, n) + 0.4 * sex
    occupation = np.clip(np.floor(occ_score), 0, 6).astype(int)
    occupation[rng.random(n) < 0.06 + 0.06 * young] = 7  # unemployed
    hours = np.clip(np.round(rng.normal(38 + 4 * sex - 6 * young - 3 * children * (1 - sex), 8, n)), 0, 80)
    hours[occupation == 7] = 0
    region = rng.choice(5, n, p=[0.2, 0.25, 0.15, 0.2, 0.2])
    income = np.clip(np.exp(9.4 + 0.18 * occupation + 0.1 * edu + 0.01 * (hours - 38) + 0.25 * (region == 4)
                            + rng.normal(0, 0.35, n)), 0, None)
    income[occupation == 7] = rng.uniform(0, 12_000, int((occupation == 7).sum()))
    owns_home = rng.random(n) < np.clip(0.1 + 0.008 * (age - 17) + 0.15 * (marital == 1)
                                        + 0.000002 * income - 0.1 * (region == 4), 0.02, 0.97)
    return pa.table({
        "age": pa.array(age, pa.int32()),
        "sex": pa.array([SEX[i] for i in sex]),
        "education": pa.array([EDUCATION[i] for i in edu]),
        "marital": pa.array([MARITAL[i] for i in marital]),
        "children": pa.array(children),
        "occupation": pa.array([OCCUPATION[i] for i in occupation]),
        "hours": pa.array(hours.astype(np.int32), pa.int32()),
        "income": pa.array(income, pa.float64()),
        "region": pa.array([REGION[i] for i in region]),
        "owns_home": pa.array(owns_home),
    })


def cells(table: pa.Table, columns: list[str] = COLUMNS) -> list[np.ndarray]:
    """Each column's public cell codes: the same preprocessing dp_synthesize applies."""
    from iceberg_privacy.dp.synth import _Column

    out = []
    for c in columns:
        atype = table.schema.field(c).type
        if c in DOMAINS:
            col = _Column(c, "domain", atype, values=pa.array(DOMAINS[c]))
        elif c in BOUNDS:
            low, high = BOUNDS[c]
            col = _Column(c, "bins", atype, low=float(low), high=float(high), bins=BINS, integer=pa.types.is_integer(atype))
        else:
            col = _Column(c, "domain", atype, values=pa.array([False, True]))
        out.append(col.encode(table.column(c)))
    return out


def tvds(real: pa.Table, synthetic: pa.Table, columns: list[str] = COLUMNS) -> list[float]:
    """Total variation distance of every 1- and 2-way marginal of ``columns``."""
    from iceberg_privacy.dp.mst import marginal

    a, b = cells(real, columns), cells(synthetic, columns)
    sizes = [int(max(x.max(), y.max())) + 1 for x, y in zip(a, b, strict=True)]
    out = []
    for way in (1, 2):
        for clique in itertools.combinations(range(len(columns)), way):
            p, q = marginal(a, sizes, clique), marginal(b, sizes, clique)
            out.append(0.5 * float(np.abs(p / p.sum() - q / q.sum()).sum()))
    return out


def measure(quick: bool, rows: int | None = None, columns: int | None = None) -> dict[str, Any]:
    """Run the benchmark; the keys of issue 16 plus what they were measured on (``rows`` overrides the size,
    ``columns`` synthesizes only the first that many of :data:`COLUMNS`)."""
    from pyiceberg.catalog.sql import SqlCatalog

    from iceberg_privacy.dp import ApproxDP, set_namespace_budget

    rows = rows or (20_000 if quick else 100_000)
    if columns is not None and not 2 <= columns <= len(COLUMNS):
        raise SystemExit(f"--columns must be between 2 and {len(COLUMNS)}, got {columns}")
    names = COLUMNS[:columns] if columns else COLUMNS
    repeats = 1 if quick else 3
    with tempfile.TemporaryDirectory(prefix="ip-synth-bench-") as work:
        catalog = SqlCatalog("bench", uri=f"sqlite:///{work}/catalog.db", warehouse=f"file://{work}/warehouse")
        catalog.create_namespace("bench")
        data = census(rows)
        source = catalog.create_table("bench.census", schema=data.schema)
        source.append(data)
        real = source.scan().to_arrow()
        set_namespace_budget(catalog, "bench", ApproxDP(1000, 0.5))
        mst = _run(catalog, real, "mst", rows, repeats, names)
        aim = _run(catalog, real, "aim", rows, repeats, names)
    return {
        "synth.tvd_median_eps1": statistics.fmean(mst["medians"][1.0]),
        "synth.tvd_median_eps10": statistics.fmean(mst["medians"][10.0]),
        "synth.seconds": statistics.median(mst["seconds"]),
        "synth.tvd_max_eps1": statistics.fmean(mst["maxima"][1.0]),
        "synth.tvd_max_eps10": statistics.fmean(mst["maxima"][10.0]),
        "synth.aim.tvd_median_eps1": statistics.fmean(aim["medians"][1.0]),
        "synth.aim.tvd_median_eps10": statistics.fmean(aim["medians"][10.0]),
        "synth.aim.seconds": statistics.median(aim["seconds"]),
        "synth.aim.tvd_max_eps1": statistics.fmean(aim["maxima"][1.0]),
        "synth.aim.tvd_max_eps10": statistics.fmean(aim["maxima"][10.0]),
        "synth.aim.seconds_eps1": statistics.median(aim["seconds_eps1"]),
        "synth.aim.rounds_eps1": statistics.fmean(aim["rounds"][1.0]),
        "synth.aim.rounds_eps10": statistics.fmean(aim["rounds"][10.0]),
        "synth.rho_eps1": mst["rho"][1.0],
        "synth.rho_eps10": mst["rho"][10.0],
        "synth.delta": DELTA,
        "synth.rows": rows,
        "synth.columns": len(names),
        "synth.marginals": len(names) + len(names) * (len(names) - 1) // 2,
        "synth.repeats": repeats,
        "synth.method": "mst",
    }


def _run(catalog: Any, real: pa.Table, method: Method, rows: int, repeats: int, columns: list[str]) -> dict[str, Any]:
    """``repeats`` syntheses per epsilon with ``method``: TVDs, seconds, rho, rounds."""
    from iceberg_privacy.dp import ROWS, ApproxDP, dp_synthesize

    out: dict[str, Any] = {"medians": {e: [] for e in EPSILONS}, "maxima": {e: [] for e in EPSILONS},
                           "rounds": {e: [] for e in EPSILONS}, "seconds": [], "seconds_eps1": [], "rho": {}}
    for run in range(repeats):
        for eps in EPSILONS:
            start = time.perf_counter()
            report = dp_synthesize(catalog, "bench.census", columns, ApproxDP(eps, DELTA), method=method,
                                   output=f"bench.synth_{method}_{run}_{int(eps)}",
                                   domains={c: v for c, v in DOMAINS.items() if c in columns},
                                   bounds={c: v for c, v in BOUNDS.items() if c in columns},
                                   bins=BINS, rows=rows, memoize=False, privacy_unit=ROWS)
            took = time.perf_counter() - start
            out["seconds" if eps == 10.0 else "seconds_eps1"].append(took)
            out["rho"][eps] = report.rho
            out["rounds"][eps].append(len(report.cliques))
            synthetic = catalog.load_table(report.output).scan().to_arrow()
            distances = tvds(real, synthetic, columns)
            out["medians"][eps].append(statistics.median(distances))
            out["maxima"][eps].append(max(distances))
            print(f"{method} run {run} epsilon {eps:g}: median TVD {out['medians'][eps][-1]:.4f}, max "
                  f"{out['maxima'][eps][-1]:.4f}, {took:.2f} s, {len(report.cliques)} marginals after the 1-way: "
                  f"{report.cliques}", file=sys.stderr)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.confidential_synth", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=output_file, default="results/confidential_synth.json")
    ap.add_argument("--quick", action="store_true", help="20,000 rows, one run per epsilon (CI size)")
    ap.add_argument("--rows", type=at_least(1), default=None,
                    help="rows of the source table (default: quick 20,000, else 100,000); smaller runs it end to end "
                         "faster (the test suite's check), not a measurement")
    ap.add_argument("--columns", type=at_least(2), default=None,
                    help=f"synthesize only the first N of the {len(COLUMNS)} columns (default: all); fewer runs it "
                         "end to end faster (the test suite's check), not a measurement")
    args = ap.parse_args(argv)
    if args.columns is not None and args.columns > len(COLUMNS):
        ap.error(f"argument --columns: the table has {len(COLUMNS)} columns, not {args.columns}")
    result = measure(args.quick, rows=args.rows, columns=args.columns)
    text = json.dumps(result, indent=2)
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    exit_on_sigterm()
    raise SystemExit(main())
