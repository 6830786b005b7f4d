"""AIM (McKenna, Mullins, Sheldon & Miklau, VLDB 2022), the adaptive method of :func:`~.synth.dp_synthesize`.

Why AIM beside MST: MST fixes its model to a tree of 2-way marginals chosen once; AIM keeps choosing
the workload marginal its current model gets most wrong, measures it, refits, and spends more of the
budget per round once its measurements stop helping, so its model follows the data's real
dependencies (cycles included) within a size cap. It needs estimation on general junction trees,
which :mod:`._pgm` provides (``mbi`` cannot be installed beside Tumult, see :mod:`.mst`). This follows
the paper's Algorithm and private-pgm's ``mechanisms/aim.py``:

* **Workload**: all 2-way marginals of the columns with at most 10,000 cells (private-pgm's defaults
  ``degree=2``, ``max_cells=10000``; columns in no such pair keep their 1-way marginal; the paper also
  evaluates 3-way workloads, which cost many more candidate evaluations per round for ~10 columns and
  are not what the synthetic-data benchmark scores). Candidates: the workload's downward closure
  (every 1- and 2-way marginal), each weighted by ``w_r = sum over workload marginals s of |r & s|``.
* **Initialise**: measure every 1-way marginal with the round noise ``sigma``, where
  ``sigma = k sqrt(T / (2 * 0.9 rho))`` and ``epsilon = sqrt(8 * 0.1 rho / T)`` for ``T = 16 d`` rounds.
* **Rounds**: select a candidate by the exponential mechanism with quality
  ``w_r (||M_r(D) - M_r(p_hat)||_1 - sqrt(2/pi) sigma n_r)`` (``n_r`` cells) and sensitivity
  ``k max w_r``, among candidates whose addition keeps the junction tree under
  ``max_model_size * rho_used / rho`` megabytes (or that the model already covers); measure it with
  discrete Gaussian noise; refit warm-started. When the refit moved that marginal by at most
  ``sqrt(2/pi) sigma n_r`` in L1, halve sigma and double epsilon (annealing). When less than two
  rounds' budget remains, the last round spends exactly what is left (0.9 of it on the measurement,
  0.1 on the selection).
* **Generate**: a final fit with the full iteration count and randomized-rounding sampling.

Accounting (zCDP; ``k`` = the contribution bound): a measurement at noise ``sigma`` costs
``k^2 / (2 sigma^2)``, a selection at ``epsilon`` costs ``epsilon^2 / 8`` (bounded range); the log
records each, and they sum to the rho charged. Defaults sized for this library (numpy, dense factors,
2 cores): ``max_model_size`` = :data:`MAX_MODEL_SIZE_MB` (the paper's 80 MB takes hours), at most
``round_iterations`` mirror-descent steps per round (private-pgm: 1000), ``iterations`` for the last fit.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from iceberg_privacy.dp._pgm import GraphicalModel, estimate, model_size_mb
from iceberg_privacy.dp.mst import Measurement, _discrete_gaussian, marginal, secure_rng, synthetic_rows
from iceberg_privacy.errors import InvalidArgumentError

MAX_MODEL_SIZE_MB = 1.0
"""Largest junction-tree model AIM may grow (float64 megabytes; the paper's default is 80)."""
ROUND_ITERATIONS = 100
"""Mirror-descent steps of the warm-started refit after each round (the final fit runs ``iterations``)."""
MAX_WORKLOAD_CELLS = 10_000
"""Workload marginals with more cells are left out (private-pgm's ``max_cells`` default)."""
MEASURE_SHARE = 0.9
"""Share of each round's rho spent on the measurement (the rest on the selection), as in the paper."""


@dataclass
class AimResult:
    """Synthetic rows (codes per column) and what the mechanism did, for the provenance."""

    codes: list[np.ndarray]
    selected: list[tuple[int, ...]]
    """The marginal chosen in each round, in order (after the 1-way initialisation)."""
    cliques: list[tuple[int, ...]] = field(default_factory=list)
    """The junction-tree cliques of the final model."""
    log: list[dict[str, Any]] = field(default_factory=list)
    estimated_total: float = 0.0
    rho_used: float = 0.0


def workload(sizes: Sequence[int], degree: int = 2, max_cells: int = MAX_WORKLOAD_CELLS) -> list[tuple[int, ...]]:
    """All ``degree``-way marginals of the columns (all columns when fewer) with at most ``max_cells`` cells
    (private-pgm's ``max_cells``), plus every 1-way marginal (always measured)."""
    d = len(sizes)
    chosen = [c for c in itertools.combinations(range(d), min(degree, d)) if math.prod(sizes[i] for i in c) <= max_cells]
    covered = {i for c in chosen for i in c}
    return chosen + [(i,) for i in range(d) if i not in covered]


def candidates(marginals: Sequence[tuple[int, ...]]) -> dict[tuple[int, ...], float]:
    """The downward closure of ``marginals``, each weighted by its overlap with them (private-pgm's
    ``compile_workload``)."""
    closure = sorted({sub for m in marginals for r in range(1, len(m) + 1) for sub in itertools.combinations(m, r)},
                     key=lambda c: (len(c), c))
    return {c: float(sum(len(set(c) & set(m)) for m in marginals)) for c in closure}


def _measure(codes: list[np.ndarray], sizes: list[int], clique: tuple[int, ...], sigma: float, sensitivity: float,
             phase: str, log: list[dict[str, Any]], **extra: Any) -> Measurement:
    exact = marginal(codes, sizes, clique)
    noisy = exact + _discrete_gaussian(exact.shape, sigma**2)
    log.append({"phase": phase, "marginal": list(clique), "noise_mechanism": "DISCRETE_GAUSSIAN",
                "noise_parameter": sigma**2, "stddev": sigma, "expected_abs_error": sigma * math.sqrt(2 / math.pi),
                "cells": int(exact.size), "rho": sensitivity**2 / (2 * sigma**2), **extra})
    return Measurement(clique, noisy, sigma)


def _select(scores: dict[tuple[int, ...], float], epsilon: float, sensitivity: float,
            rng: np.random.Generator) -> tuple[int, ...]:
    """The exponential mechanism: ``P(r) ~ exp(epsilon q_r / (2 sensitivity))``."""
    keys = list(scores)
    q = np.array([scores[c] for c in keys]) * (epsilon / (2 * sensitivity))
    p = np.exp(q - q.max())
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]


def aim(codes: list[np.ndarray], sizes: list[int], rho: float, *, rows: int | None, sensitivity: float = 1.0,
        iterations: int = 1000, round_iterations: int = ROUND_ITERATIONS, max_model_size: float = MAX_MODEL_SIZE_MB,
        rounds: int | None = None, degree: int = 2, rng: np.random.Generator | None = None,
        max_rows: int | None = None) -> AimResult:
    """Run AIM at ``rho``-zCDP on columns of integer codes (``codes[i]`` in ``range(sizes[i])``).

    ``sensitivity`` is the most rows one privacy unit may add or remove; ``rows`` the number of synthetic
    rows (default: the model's noisy row count); ``rounds`` the paper's T (default 16 d), which sets the
    starting noise; ``degree`` the workload's marginal size.
    """
    d = len(sizes)
    rng = rng or secure_rng()
    k = float(sensitivity)
    log: list[dict[str, Any]] = []
    cands = candidates(workload(sizes, degree))
    answers: dict[tuple[int, ...], np.ndarray] = {}  # exact marginals, computed when first scored

    def answer(c: tuple[int, ...]) -> np.ndarray:
        if c not in answers:
            answers[c] = marginal(codes, sizes, c)
        return answers[c]

    T = int(rounds or 16 * d)
    if T < d + 1:
        raise InvalidArgumentError(f"rounds={T} must exceed the number of columns ({d}): the 1-way marginals take d "
                                   "of them; pass more rounds.")
    sigma = k * math.sqrt(T / (2 * MEASURE_SHARE * rho))
    epsilon = math.sqrt(8 * (1 - MEASURE_SHARE) * rho / T)
    measurements = [_measure(codes, sizes, (i,), sigma, k, "one-way", log) for i in range(d)]
    used = math.fsum(e["rho"] for e in log)
    model = estimate(sizes, measurements, iterations=round_iterations)
    selected: list[tuple[int, ...]] = []
    terminate = False
    while not terminate:
        round_cost = k**2 / (2 * sigma**2) + epsilon**2 / 8
        if rho - used < 2 * round_cost:  # the last round spends exactly what is left
            remaining = rho - used
            sigma = k * math.sqrt(1 / (2 * MEASURE_SHARE * remaining))
            epsilon = math.sqrt(8 * (1 - MEASURE_SHARE) * remaining)
            terminate = True
        select_rho, measure_rho = epsilon**2 / 8, k**2 / (2 * sigma**2)
        used += select_rho + measure_rho
        limit = max_model_size * min(used, rho) / rho
        covered = {sub for c in model.cliques for r in range(1, len(c) + 1) for sub in itertools.combinations(c, r)}
        current = [m.clique for m in measurements]
        allowed = {c: w for c, w in cands.items() if c in covered or model_size_mb(sizes, [*current, c]) <= limit}
        scores = {}
        for c, w in allowed.items():
            exact = answer(c)
            bias = math.sqrt(2 / math.pi) * sigma * exact.size
            scores[c] = w * (float(np.abs(exact - model.project(c)).sum()) - bias)
        choice = _select(scores, epsilon, k * max(abs(w) for w in allowed.values()), rng)
        t = len(selected) + 1
        log.append({"phase": "select", "round": t, "noise_mechanism": "EXPONENTIAL", "noise_parameter": epsilon,
                    "sensitivity": k * max(abs(w) for w in allowed.values()), "candidates": len(allowed),
                    "rho": select_rho, "selected": [list(choice)]})
        selected.append(choice)
        m = _measure(codes, sizes, choice, sigma, k, "measure", log, round=t)
        measurements.append(m)
        before = model.project(choice)
        model = estimate(sizes, measurements, iterations=round_iterations, warm=model)
        after = model.project(choice)
        if not terminate and float(np.abs(after - before).sum()) <= math.sqrt(2 / math.pi) * sigma * before.size:
            sigma /= 2  # annealing: the model already knew this marginal to within the noise
            epsilon *= 2
    model = estimate(sizes, measurements, iterations=iterations, warm=model)
    n = synthetic_rows(rows, model.total, max_rows)
    return AimResult(model.sample(n, rng), selected, list(model.cliques), log, model.total,
                     math.fsum(e["rho"] for e in log))


__all__ = ["MAX_MODEL_SIZE_MB", "AimResult", "GraphicalModel", "aim", "candidates", "workload"]
