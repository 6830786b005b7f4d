"""MST (McKenna, Miklau & Sheldon 2021), the mechanism behind :func:`~iceberg_privacy.dp.synth.dp_synthesize`.

Why it is written here rather than imported: the reference implementation's estimation library
(``mbi``, private-pgm) is on PyPI only as 2.0, which needs JAX >= 0.9 and so NumPy >= 2, while
Tumult (tmlt.core) pins NumPy < 2: the two cannot share an environment. smartnoise-synth wraps the
same ``mbi`` (from git, not from a registry) and hard-requires torch and opacus. MST itself is
small and fully specified by the paper; only its estimation step is general-purpose machinery,
and MST's model is a tree, for which that step is exact and short (belief propagation on a tree).
AIM (:mod:`.aim`) grows models with cycles and uses the general junction-tree estimation of
:mod:`._pgm`; MST keeps this tree path (equivalent on a tree, and simpler).

The mechanism, on data already mapped to small integer domains (one cell per public category or
bin, see :mod:`.synth`):

1. **Measure every 1-way marginal** with discrete Gaussian noise (rho/3 of the zCDP budget).
2. **Compress** each domain: cells whose noisy count is below 3 sigma are merged into one cell (the
   paper's ``compress_domain``; a post-processing of step 1).
3. **Select** a maximum spanning tree of 2-way marginals with d-1 rounds of the exponential
   mechanism (rho/3): the quality of a pair is the L1 distance between its true 2-way marginal and
   the one the 1-way measurements alone predict (independence), sensitivity = the contribution bound.
4. **Measure** the selected 2-way marginals (rho/3).
5. **Estimate** the tree-structured graphical model that best explains all noisy measurements
   (weighted least squares, mirror descent over the model's log-potentials, exact marginals by belief
   propagation on the tree: the estimation private-pgm runs for MST), and **sample** rows root to
   leaves, allocating counts by randomized rounding as private-pgm does. Steps 2 and 5 only read
   noisy measurements, so they cost nothing.

Accounting, for a contribution bound ``k`` (a unit adds or removes at most ``k`` rows, so any one
marginal moves by at most ``k`` in L2 and in L1): measuring ``m`` marginals with discrete Gaussian
variance ``sigma^2`` each costs ``m k^2 / (2 sigma^2)``-zCDP (Canonne, Kamath & Steinke 2020); an
exponential-mechanism round at ``epsilon`` is epsilon-bounded-range, hence ``epsilon^2/8``-zCDP
(Cesar & Rogers 2021). Every noise draw uses tmlt.core's exact sampler on its cryptographic RNG.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

ONE_WAY_SHARE = 1 / 3
"""Share of rho for the 1-way marginals, the tree selection and the 2-way marginals (d >= 3)."""


@dataclass
class Measurement:
    """``weights * marginal(clique) + noise = values``, noise discrete Gaussian with variance ``sigma**2``."""

    clique: tuple[int, ...]
    values: np.ndarray
    sigma: float
    weights: np.ndarray | None = None


@dataclass
class MstResult:
    """Synthetic rows (codes per column) and what the mechanism did, for the provenance."""

    codes: list[np.ndarray]
    edges: list[tuple[int, int]]
    log: list[dict[str, Any]] = field(default_factory=list)
    estimated_total: float = 0.0


def cdp_delta(rho: float, epsilon: float) -> float:
    """The smallest delta such that rho-zCDP implies (epsilon, delta)-DP (Canonne, Kamath & Steinke 2020,
    Proposition 12/Corollary 13: delta = min over alpha > 1 of exp((alpha-1)(alpha rho - epsilon)) / (alpha-1)
    * (1 - 1/alpha)^alpha). The bisection finds the minimising alpha; any alpha gives a valid bound."""
    if rho <= 0:
        return 0.0
    amin, amax = 1.01, (epsilon + 1) / (2 * rho) + 2
    alpha = amin
    for _ in range(200):  # halvings: far below double precision
        alpha = (amin + amax) / 2
        derivative = (2 * alpha - 1) * rho - epsilon + math.log1p(-1.0 / alpha)
        if derivative < 0:
            amin = alpha
        else:
            amax = alpha
    delta = math.exp((alpha - 1) * (alpha * rho - epsilon) + alpha * math.log1p(-1 / alpha)) / (alpha - 1.0)
    return min(delta, 1.0)


def cdp_rho(epsilon: float, delta: float) -> float:
    """The largest rho (to bisection precision, rounded down) whose zCDP guarantee implies (epsilon, delta)-DP."""
    if delta <= 0:
        return 0.0
    if delta >= 1:
        return math.inf
    lo, hi = 0.0, epsilon + 1
    for _ in range(200):  # halvings: far below double precision
        mid = (lo + hi) / 2
        if cdp_delta(mid, epsilon) <= delta:
            lo = mid
        else:
            hi = mid
    return lo


def secure_rng() -> np.random.Generator:
    """tmlt.core's generator, seeded from the OS's cryptographic source."""
    from tmlt.core.random.rng import prng

    return prng()


def _discrete_gaussian(shape: tuple[int, ...], sigma_squared: float) -> np.ndarray:
    from tmlt.core.random.discrete_gaussian import sample_dgauss

    size = int(np.prod(shape))
    return np.array([sample_dgauss(sigma_squared) for _ in range(size)], dtype=np.float64).reshape(shape)


def marginal(codes: list[np.ndarray], sizes: list[int], clique: tuple[int, ...]) -> np.ndarray:
    """The exact contingency table of ``clique`` (counts, one axis per column)."""
    shape = tuple(sizes[i] for i in clique)
    if not codes or codes[0].size == 0:
        return np.zeros(shape)
    flat = np.ravel_multi_index(tuple(codes[i] for i in clique), shape)
    return np.bincount(flat, minlength=int(np.prod(shape))).reshape(shape).astype(np.float64)


def _measure(codes: list[np.ndarray], sizes: list[int], cliques: Sequence[tuple[int, ...]], rho: float,
             sensitivity: float, phase: str, log: list[dict[str, Any]]) -> list[Measurement]:
    """Measure ``cliques`` with discrete Gaussian noise, spending ``rho`` in total (equal variances)."""
    if not cliques:
        return []
    sigma2 = len(cliques) * sensitivity**2 / (2 * rho)
    out = []
    for clique in cliques:
        exact = marginal(codes, sizes, clique)
        noisy = exact + _discrete_gaussian(exact.shape, sigma2)
        out.append(Measurement(clique, noisy, math.sqrt(sigma2)))
        log.append({"phase": phase, "marginal": list(clique), "noise_mechanism": "DISCRETE_GAUSSIAN",
                    "noise_parameter": sigma2, "stddev": math.sqrt(sigma2),
                    "expected_abs_error": math.sqrt(sigma2) * math.sqrt(2 / math.pi), "cells": int(exact.size),
                    "rho": sensitivity**2 / (2 * sigma2)})
    return out


@dataclass
class Compression:
    """Per column: which original cells survive; the rest share the last new cell."""

    supports: list[np.ndarray]

    def sizes(self) -> list[int]:
        return [int(s.sum()) + (1 if not s.all() else 0) for s in self.supports]

    def forward(self, codes: list[np.ndarray]) -> list[np.ndarray]:
        out = []
        for col, sup in zip(codes, self.supports, strict=True):
            mapping = np.cumsum(sup) - 1
            mapping[~sup] = int(sup.sum())
            out.append(mapping[col])
        return out

    def backward(self, codes: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
        out = []
        for col, sup in zip(codes, self.supports, strict=True):
            kept = np.flatnonzero(sup)
            rare = np.flatnonzero(~sup)
            res = np.empty(col.size, dtype=np.int64)
            in_kept = col < kept.size
            res[in_kept] = kept[col[in_kept]]
            if rare.size:  # the merged cell: any of its original cells, uniformly (as private-pgm's reverse_data)
                res[~in_kept] = rare[rng.integers(0, rare.size, int((~in_kept).sum()))]
            out.append(res)
        return out


def compress(one_way: list[Measurement]) -> tuple[Compression, list[Measurement]]:
    """MST's ``compress_domain``: cells measured below 3 sigma merge into one, whose measurement is the
    sum of theirs, rescaled by 1/sqrt(m) so that its noise keeps standard deviation sigma."""
    supports, out = [], []
    for m in one_way:
        sup = m.values >= 3 * m.sigma
        supports.append(sup)
        if sup.all():
            out.append(m)
            continue
        merged = int((~sup).sum())
        scale = 1.0 / math.sqrt(merged)
        values = np.append(m.values[sup], m.values[~sup].sum() * scale)
        weights = np.ones(values.size)
        weights[-1] = scale
        out.append(Measurement(m.clique, values, m.sigma, weights))
    return Compression(supports), out


def estimate_total(measurements: list[Measurement]) -> float:
    """Inverse-variance weighted mean of the totals the measurements imply (at least 1)."""
    estimates, variances = [], []
    for m in measurements:
        w = np.ones_like(m.values) if m.weights is None else m.weights
        estimates.append(float((m.values / w).sum()))
        variances.append(float(m.sigma**2 * (1.0 / w**2).sum()))
    est, var = np.array(estimates), np.array(variances)
    return max(1.0, float((est / var).sum() / (1.0 / var).sum()))


class TreeModel:
    """A distribution on the columns that factors over a forest: log p = sum of node and edge potentials.

    Marginals are exact (sum-product belief propagation in log space); sampling is root to leaves.
    """

    def __init__(self, sizes: list[int], edges: list[tuple[int, int]], total: float) -> None:
        self.sizes, self.edges, self.total = sizes, list(edges), total
        self.node_theta = [np.zeros(s) for s in sizes]
        self.edge_theta = {e: np.zeros((sizes[e[0]], sizes[e[1]])) for e in self.edges}
        self.neighbors: dict[int, list[int]] = {i: [] for i in range(len(sizes))}
        for a, b in self.edges:
            self.neighbors[a].append(b)
            self.neighbors[b].append(a)
        self.order, self.parent = self._bfs()

    def _bfs(self) -> tuple[list[int], dict[int, int | None]]:
        order: list[int] = []
        parent: dict[int, int | None] = {}
        for root in range(len(self.sizes)):
            if root in parent:
                continue
            parent[root] = None
            queue = [root]
            while queue:
                node = queue.pop(0)
                order.append(node)
                for nb in self.neighbors[node]:
                    if nb not in parent:
                        parent[nb] = node
                        queue.append(nb)
        return order, parent

    def _edge(self, a: int, b: int) -> np.ndarray:
        """Edge potential indexed [x_a, x_b]."""
        return self.edge_theta[(a, b)] if (a, b) in self.edge_theta else self.edge_theta[(b, a)].T

    def marginals(self) -> tuple[list[np.ndarray], dict[tuple[int, int], np.ndarray]]:
        """Exact node and edge marginals (probabilities) by belief propagation."""
        msg: dict[tuple[int, int], np.ndarray] = {}

        def incoming(node: int, exclude: int | None) -> np.ndarray:
            total = self.node_theta[node].copy()
            for nb in self.neighbors[node]:
                if nb != exclude:
                    total = total + msg[(nb, node)]
            return total

        def send(src: int, dst: int) -> None:
            table = incoming(src, dst)[:, None] + self._edge(src, dst)
            msg[(src, dst)] = _logsumexp(table, axis=0)

        for node in reversed(self.order):  # leaves up
            par = self.parent[node]
            if par is not None:
                send(node, par)
        for node in self.order:  # root down
            for nb in self.neighbors[node]:
                if self.parent.get(nb) == node:
                    send(node, nb)
        nodes = []
        for i in range(len(self.sizes)):
            nodes.append(_normalize(incoming(i, None)))
        edges = {}
        for a, b in self.edges:
            table = incoming(a, b)[:, None] + incoming(b, a)[None, :] + self.edge_theta[(a, b)]
            edges[(a, b)] = _normalize(table)
        return nodes, edges

    def sample(self, rows: int, rng: np.random.Generator) -> list[np.ndarray]:
        """``rows`` codes per column: each root by randomized rounding of its marginal, each child by
        randomized rounding of its conditional within every parent value (private-pgm's ``synthetic_data``)."""
        nodes, edges = self.marginals()
        codes: list[np.ndarray | None] = [None] * len(self.sizes)
        for node in self.order:
            par = self.parent[node]
            if par is None:
                codes[node] = _round_sample(nodes[node], rows, rng)
                continue
            joint = edges[(par, node)] if (par, node) in edges else edges[(node, par)].T
            parent_codes = codes[par]
            assert parent_codes is not None
            out = np.empty(rows, dtype=np.int64)
            for value in np.unique(parent_codes):
                idx = np.flatnonzero(parent_codes == value)
                out[idx] = _round_sample(joint[value], idx.size, rng)
            codes[node] = out
        return [c if c is not None else np.zeros(rows, dtype=np.int64) for c in codes]


def _logsumexp(a: np.ndarray, axis: int) -> np.ndarray:
    peak = np.max(a, axis=axis, keepdims=True)
    return np.squeeze(peak, axis=axis) + np.log(np.sum(np.exp(a - peak), axis=axis))


def _normalize(log_table: np.ndarray) -> np.ndarray:
    p = np.exp(log_table - log_table.max())
    return p / p.sum()


def _round_sample(weights: np.ndarray, total: int, rng: np.random.Generator) -> np.ndarray:
    """``total`` codes whose counts are ``weights`` scaled to ``total``, rounded at random (floor, then the
    remainder drawn without replacement in proportion to the fractional parts), shuffled."""
    if total <= 0:
        return np.zeros(0, dtype=np.int64)
    w = np.nan_to_num(np.clip(np.asarray(weights, dtype=np.float64), 0, None))
    w = np.full(w.size, 1.0) if w.max() <= 0 else w / w.max()  # scaled first: subnormal weights stay finite
    counts = w / w.sum() * total
    frac, integ = np.modf(counts)
    ints = integ.astype(np.int64)
    extra = int(total - ints.sum())
    drawn = min(extra, int(np.count_nonzero(frac)))
    if drawn > 0:
        ints[rng.choice(counts.size, drawn, replace=False, p=frac / frac.sum())] += 1
    if extra > drawn:  # float round-off left whole rows over: to the largest cells
        ints[np.argsort(-counts, kind="stable")[: extra - drawn]] += 1
    vals = np.repeat(np.arange(counts.size), ints)
    rng.shuffle(vals)
    return vals


def _loss_and_gradient(model: TreeModel, measurements: list[Measurement]) -> tuple[float, list[np.ndarray],
                                                                                  dict[tuple[int, int], np.ndarray],
                                                                                  list[np.ndarray],
                                                                                  dict[tuple[int, int], np.ndarray]]:
    """Weighted least-squares loss of the model's marginals (counts) against the measurements, and its gradient
    with respect to those marginals."""
    nodes, edges = model.marginals()
    mu_nodes = [p * model.total for p in nodes]
    mu_edges = {e: p * model.total for e, p in edges.items()}
    g_nodes = [np.zeros_like(m) for m in mu_nodes]
    g_edges = {e: np.zeros_like(m) for e, m in mu_edges.items()}
    loss = 0.0
    for m in measurements:
        mu = mu_nodes[m.clique[0]] if len(m.clique) == 1 else mu_edges[m.clique]  # type: ignore[index]
        w = np.ones_like(m.values) if m.weights is None else m.weights
        diff = w * mu - m.values
        loss += 0.5 * float((diff**2).sum()) / m.sigma**2
        grad = w * diff / m.sigma**2
        if len(m.clique) == 1:
            g_nodes[m.clique[0]] += grad
        else:
            g_edges[m.clique] += grad  # type: ignore[index]
    return loss, g_nodes, g_edges, mu_nodes, mu_edges


def estimate(sizes: list[int], edges: list[tuple[int, int]], measurements: list[Measurement], *,
             iterations: int = 1000) -> TreeModel:
    """Fit the tree model to the noisy measurements: mirror descent on the potentials with backtracking
    line search (private-pgm's ``FactoredInference.mirror_descent``); the loss is convex in the marginals
    and the model's marginal polytope on a tree is the locally consistent one, so this converges to the
    least-squares consistent, non-negative estimate."""
    model = TreeModel(sizes, edges, estimate_total(measurements))
    loss, gn, ge, mn, me = _loss_and_gradient(model, measurements)
    alpha = 1.0 / model.total
    for _ in range(iterations):
        old_nodes = [t.copy() for t in model.node_theta]
        old_edges = {e: t.copy() for e, t in model.edge_theta.items()}
        alpha *= 2.0
        for _ in range(25):
            model.node_theta = [t - alpha * g for t, g in zip(old_nodes, gn, strict=True)]
            model.edge_theta = {e: old_edges[e] - alpha * ge[e] for e in old_edges}
            new = _loss_and_gradient(model, measurements)
            decrease = sum(float((g * (m - m2)).sum()) for g, m, m2 in zip(gn, mn, new[3], strict=True))
            decrease += sum(float((ge[e] * (me[e] - new[4][e])).sum()) for e in ge)
            if loss - new[0] >= 0.5 * alpha * decrease:
                break
            alpha *= 0.5
        previous = loss
        loss, gn, ge, mn, me = new
        if abs(previous - loss) <= 1e-9 * max(1.0, abs(previous)):
            break
    return model


def _select(codes: list[np.ndarray], sizes: list[int], one_way: list[Measurement], rho: float,
            sensitivity: float, rng: np.random.Generator, log: list[dict[str, Any]]) -> list[tuple[int, int]]:
    """A maximum spanning tree by the exponential mechanism (MST's ``select``): d-1 rounds, each choosing
    among the pairs that join two components, quality = L1 error of the independence estimate."""
    d = len(sizes)
    independent = estimate(sizes, [], one_way, iterations=200)
    nodes, _ = independent.marginals()
    quality: dict[tuple[int, int], float] = {}
    for a, b in itertools.combinations(range(d), 2):
        predicted = independent.total * np.outer(nodes[a], nodes[b])
        quality[(a, b)] = float(np.abs(marginal(codes, sizes, (a, b)) - predicted).sum())
    rounds = d - 1
    epsilon = math.sqrt(8 * rho / rounds)
    component = list(range(d))

    def find(x: int) -> int:
        while component[x] != x:
            component[x] = component[component[x]]
            x = component[x]
        return x

    chosen: list[tuple[int, int]] = []
    for _ in range(rounds):
        candidates = [e for e in quality if find(e[0]) != find(e[1])]
        scores = np.array([quality[e] for e in candidates]) * (epsilon / (2 * sensitivity))
        p = np.exp(scores - scores.max())
        pick = candidates[int(rng.choice(len(candidates), p=p / p.sum()))]
        chosen.append(pick)
        component[find(pick[0])] = find(pick[1])
    log.append({"phase": "select", "noise_mechanism": "EXPONENTIAL", "noise_parameter": epsilon,
                "rounds": rounds, "sensitivity": sensitivity, "rho": rounds * epsilon**2 / 8,
                "selected": [list(e) for e in chosen]})
    return sorted(chosen)


def synthetic_rows(rows: int | None, estimate: float, max_rows: int | None) -> int:
    """How many rows to sample: ``rows`` when given, else the noisy row-count estimate, at least 1 and at most
    ``max_rows``. Capping is post-processing of a noisy value (free); without it a tiny rho (noise in the
    billions) made the sampler allocate billions of rows after the spend (found by advsvc2)."""
    if rows is not None:
        return int(rows)
    n = max(1.0, float(estimate)) if not math.isnan(estimate) else 1.0
    if max_rows is not None:
        n = min(n, float(max_rows))
    return int(round(n)) if math.isfinite(n) else 1


def mst(codes: list[np.ndarray], sizes: list[int], rho: float, *, rows: int | None, sensitivity: float = 1.0,
        iterations: int = 1000, max_rows: int | None = None) -> MstResult:
    """Run MST at ``rho``-zCDP on columns of integer codes (``codes[i]`` in ``range(sizes[i])``).

    ``sensitivity`` is the most rows one privacy unit may add or remove (after contribution bounding).
    ``rows`` is the number of synthetic rows (default: the noisy estimate of the source's row count, at most
    ``max_rows``: see :func:`synthetic_rows`).
    """
    d = len(sizes)
    rng = secure_rng()
    log: list[dict[str, Any]] = []
    if d == 1:
        shares = (1.0, 0.0, 0.0)
    elif d == 2:  # one pair: selecting it reveals nothing, so selection costs nothing
        shares = (0.5, 0.0, 0.5)
    else:
        shares = (ONE_WAY_SHARE, ONE_WAY_SHARE, 1 - 2 * ONE_WAY_SHARE)
    one_way = _measure(codes, sizes, [(i,) for i in range(d)], rho * shares[0], sensitivity, "one-way", log)
    compression, one_way_c = compress(one_way)
    csizes = compression.sizes()
    ccodes = compression.forward(codes)
    if d == 2:
        edges = [(0, 1)]
    elif d > 2:
        edges = _select(ccodes, csizes, one_way_c, rho * shares[1], sensitivity, rng, log)
    else:
        edges = []
    two_way = _measure(ccodes, csizes, edges, rho * shares[2], sensitivity, "two-way", log) if edges else []
    model = estimate(csizes, edges, one_way_c + two_way, iterations=iterations)
    n = synthetic_rows(rows, model.total, max_rows)
    sampled = model.sample(n, rng)
    return MstResult(compression.backward(sampled, rng), edges, log, model.total)


__all__ = ["MstResult", "TreeModel", "cdp_delta", "cdp_rho", "estimate", "marginal", "mst", "secure_rng",
           "synthetic_rows"]
