"""Graphical-model estimation on junction trees: the estimation step AIM (:mod:`.aim`) runs every round.

Why it is written here: private-pgm (``mbi``), which provides this for the reference AIM, is on PyPI
only as 2.0, which needs JAX and NumPy >= 2, while Tumult pins NumPy < 2 (see :mod:`.mst`). MST's model
is a tree and :mod:`.mst` handles it directly; AIM adds marginals adaptively, so its model is an
arbitrary set of cliques and needs the general machinery, which this module implements the way
private-pgm does (numpy only, dense factors, log space):

* **Junction tree** (:class:`JunctionTree`): the graph with an edge between every two columns that share a
  measured clique; a greedy elimination order (each step eliminates the column whose elimination clique
  has the fewest cells, ties by fill-in: private-pgm's cost-greedy order, a weighted min-degree);
  the elimination cliques, kept where maximal, are the cliques of a chordal completion; a maximum
  spanning tree on separator sizes (Kruskal, zero-weight edges included so one tree spans independent
  parts) joins them with the running-intersection property. Model size = cells of its cliques.
* **Calibration** (:meth:`GraphicalModel.calibrate`): sum-product message passing in log space over the
  tree (leaves to root, then root to leaves); every clique's belief is then its exact marginal.
* **Marginals of any clique** (:meth:`GraphicalModel.project`): by summing a calibrated belief when a
  junction-tree clique contains it, else by variable elimination over the log-potentials (private-pgm's
  ``project``), eliminating greedily by the size of the factor each elimination creates.
* **Estimation** (:func:`estimate`): the log-potentials that minimise the weighted least-squares loss
  ``sum 0.5 ||w * mu_c - y||^2 / sigma^2`` of the measurements, by mirror descent with backtracking line
  search (private-pgm's ``FactoredInference.mirror_descent``); warm-started from a previous model by
  adding each old potential into a new clique that contains it (private-pgm's ``CliqueVector.combine``).
* **Sampling** (:meth:`GraphicalModel.sample`): columns in reverse elimination order; each column given
  the already-sampled columns of its elimination clique (its Markov blanket among them, by the chordal
  graph's perfect elimination order), counts allocated by randomized rounding (private-pgm's
  ``synthetic_data``).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from iceberg_privacy.dp.mst import Measurement, _round_sample, estimate_total

Clique = tuple[int, ...]


def _cells(sizes: Sequence[int], clique: Sequence[int]) -> int:
    return int(math.prod(sizes[v] for v in clique))


def _logsumexp(a: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    if not axes:
        return a
    peak = a.max(axis=axes, keepdims=True)
    if not np.isfinite(peak).all():
        peak = np.where(np.isfinite(peak), peak, 0.0)
    return peak.reshape([n for i, n in enumerate(a.shape) if i not in axes]) + np.log(np.exp(a - peak).sum(axis=axes))


@functools.lru_cache(maxsize=65536)
def _expand_plan(vars_: Clique, shape: tuple[int, ...], target: Clique) -> tuple[tuple[int, ...] | None, tuple[int, ...]]:
    perm = tuple(sorted(range(len(vars_)), key=lambda i: target.index(vars_[i])))
    present = {v: shape[i] for i, v in enumerate(vars_)}
    return (None if perm == tuple(range(len(vars_))) else perm), tuple(present.get(v, 1) for v in target)


def _expand(vars_: Clique, table: np.ndarray, target: Clique) -> np.ndarray:
    """``table`` over ``vars_`` (a subset of ``target``, any order) as an array broadcastable over ``target``."""
    perm, shape = _expand_plan(vars_, table.shape, target)
    return (table if perm is None else np.transpose(table, perm)).reshape(shape)


@functools.lru_cache(maxsize=65536)
def _reduce_plan(vars_: Clique, keep: Clique) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
    axes = tuple(i for i, v in enumerate(vars_) if v not in keep)
    rest = [v for v in vars_ if v in keep]
    perm = tuple(rest.index(v) for v in keep)
    return axes, (None if perm == tuple(range(len(perm))) else perm)


def _reduce(vars_: Clique, table: np.ndarray, keep: Clique, *, log: bool) -> np.ndarray:
    """Sum (or log-sum-exp) ``table`` over ``vars_`` down to ``keep`` (a subset), axes in ``keep``'s order."""
    axes, perm = _reduce_plan(vars_, keep)
    out = _logsumexp(table, axes) if log else (table.sum(axis=axes) if axes else table)
    return out if perm is None else np.transpose(out, perm)


# -- junction tree ----------------------------------------------------------------------------------
def elimination(sizes: Sequence[int], cliques: Sequence[Sequence[int]],
                variables: Sequence[int] | None = None) -> tuple[list[int], dict[int, Clique]]:
    """A greedy elimination order of ``variables`` (default: all) of the graph ``cliques`` induce, and each
    variable's elimination clique (itself plus its neighbours still present when it is eliminated)."""
    d = len(sizes)
    adj: dict[int, set[int]] = {v: set() for v in range(d)}
    for cl in cliques:
        for a, b in itertools.combinations(set(cl), 2):
            adj[a].add(b)
            adj[b].add(a)
    remaining = set(range(d) if variables is None else variables)
    order: list[int] = []
    elim: dict[int, Clique] = {}
    while remaining:
        def cost(v: int) -> tuple[int, int, int]:
            nbrs = adj[v]
            fill = sum(1 for a, b in itertools.combinations(nbrs, 2) if b not in adj[a])
            return _cells(sizes, [v, *nbrs]), fill, v

        v = min(remaining, key=cost)
        nbrs = adj[v]
        for a, b in itertools.combinations(nbrs, 2):
            adj[a].add(b)
            adj[b].add(a)
        for a in nbrs:
            adj[a].discard(v)
        elim[v] = tuple(sorted({v, *nbrs}))
        del adj[v]
        remaining.discard(v)
        order.append(v)
    return order, elim


class JunctionTree:
    """Maximal cliques of a chordal completion of the cliques' graph, joined into a tree (see the module doc)."""

    def __init__(self, sizes: Sequence[int], cliques: Sequence[Sequence[int]]) -> None:
        self.sizes = list(sizes)
        self.order, self.elim = elimination(self.sizes, cliques)
        candidates = sorted(set(self.elim.values()), key=lambda c: (-len(c), c))
        maximal: list[Clique] = []
        for c in candidates:
            if not any(set(c) <= set(m) for m in maximal):
                maximal.append(c)
        self.cliques: list[Clique] = sorted(maximal)
        self.edges = self._spanning_tree()
        self._separators: dict[tuple[int, int], Clique] = {}
        self._containers: dict[Clique, int | None] = {}
        self.neighbors: dict[int, list[int]] = {i: [] for i in range(len(self.cliques))}
        for a, b in self.edges:
            self.neighbors[a].append(b)
            self.neighbors[b].append(a)
        self.bfs, self.parent = [0], {0: -1}
        for node in self.bfs:  # grows while iterating: breadth-first from clique 0
            for nb in self.neighbors[node]:
                if nb not in self.parent:
                    self.parent[nb] = node
                    self.bfs.append(nb)

    def _spanning_tree(self) -> list[tuple[int, int]]:
        pairs = sorted(itertools.combinations(range(len(self.cliques)), 2),
                       key=lambda p: -len(set(self.cliques[p[0]]) & set(self.cliques[p[1]])))
        root = list(range(len(self.cliques)))

        def find(x: int) -> int:
            while root[x] != x:
                root[x] = root[root[x]]
                x = root[x]
            return x

        edges = []
        for a, b in pairs:  # Kruskal on separator sizes, heaviest first (stable: ties by clique order)
            ra, rb = find(a), find(b)
            if ra != rb:
                root[ra] = rb
                edges.append((a, b))
        return edges

    def separator(self, a: int, b: int) -> Clique:
        key = (a, b) if a < b else (b, a)
        sep = self._separators.get(key)
        if sep is None:
            sep = self._separators[key] = tuple(v for v in self.cliques[a] if v in self.cliques[b])
        return sep

    def cells(self) -> int:
        """Cells of all its cliques: the model's size (8 bytes each as float64)."""
        return sum(_cells(self.sizes, c) for c in self.cliques)

    def container(self, clique: Sequence[int]) -> int | None:
        """Index of the smallest junction-tree clique containing ``clique``, or None."""
        key = tuple(clique)
        if key in self._containers:
            return self._containers[key]
        best = None
        for i, c in enumerate(self.cliques):
            if set(clique) <= set(c) and (best is None or _cells(self.sizes, c) < _cells(self.sizes, self.cliques[best])):
                best = i
        self._containers[key] = best
        return best


def model_size_mb(sizes: Sequence[int], cliques: Sequence[Sequence[int]]) -> float:
    """Megabytes of the float64 junction-tree model of ``cliques`` (private-pgm's ``hypothetical_model_size``)."""
    return JunctionTree(sizes, cliques).cells() * 8 / 2**20


# -- the model ----------------------------------------------------------------------------------------
class GraphicalModel:
    """log p(x) = sum over junction-tree cliques C of theta_C(x_C) - log Z, scaled to ``total`` rows."""

    def __init__(self, sizes: Sequence[int], cliques: Sequence[Sequence[int]], total: float = 1.0) -> None:
        self.sizes = list(sizes)
        self.tree = JunctionTree(self.sizes, cliques)
        self.total = float(total)
        self.theta: list[np.ndarray] = [np.zeros([self.sizes[v] for v in c]) for c in self.tree.cliques]
        self._beliefs: list[np.ndarray] | None = None

    @property
    def cliques(self) -> list[Clique]:
        return self.tree.cliques

    def set_potentials(self, theta: list[np.ndarray]) -> None:
        self.theta = theta
        self._beliefs = None

    def warm_start(self, old: GraphicalModel) -> None:
        """Add each of ``old``'s potentials into a clique of this model that contains it (dropped if none does)."""
        theta = [t.copy() for t in self.theta]
        for clique, pot in zip(old.cliques, old.theta, strict=True):
            i = self.tree.container(clique)
            if i is not None:
                theta[i] = theta[i] + _expand(clique, pot, self.cliques[i])
        self.set_potentials(theta)

    def calibrate(self) -> list[np.ndarray]:
        """Every junction-tree clique's exact marginal (probabilities), by sum-product in log space."""
        if self._beliefs is not None:
            return self._beliefs
        tree, cl = self.tree, self.tree.cliques
        msg: dict[tuple[int, int], np.ndarray] = {}

        def send(src: int, dst: int, table: np.ndarray) -> None:
            sep = tree.separator(src, dst)
            msg[(src, dst)] = _reduce(cl[src], table, sep, log=True)

        def incoming(node: int, skip: int | None) -> np.ndarray:
            table = self.theta[node]
            for nb in tree.neighbors[node]:
                if nb != skip:
                    table = table + _expand(tree.separator(nb, node), msg[(nb, node)], cl[node])
            return table

        for node in reversed(tree.bfs):  # leaves up
            par = tree.parent[node]
            if par >= 0:
                send(node, par, incoming(node, par))
        beliefs: list[np.ndarray] = [np.empty(0)] * len(cl)
        for node in tree.bfs:  # root down
            full = incoming(node, None)
            beliefs[node] = full
            for nb in tree.neighbors[node]:
                if tree.parent.get(nb) == node:
                    send(node, nb, full - _expand(tree.separator(nb, node), msg[(nb, node)], cl[node]))
        out = []
        for b in beliefs:
            p = np.exp(b - b.max())
            out.append(p / p.sum())
        self._beliefs = out
        return out

    def clique_marginals(self) -> list[np.ndarray]:
        """The junction-tree cliques' marginals in counts (probabilities times ``total``)."""
        return [b * self.total for b in self.calibrate()]

    def project(self, clique: Sequence[int]) -> np.ndarray:
        """The model's marginal of ``clique`` in counts, axes in ``clique``'s order."""
        clique = tuple(clique)
        i = self.tree.container(clique)
        if i is not None:
            return _reduce(self.cliques[i], self.calibrate()[i], clique, log=False) * self.total
        return self._eliminate(clique)

    def _eliminate(self, keep: Clique) -> np.ndarray:
        """Variable elimination over the log-potentials down to ``keep`` (private-pgm's ``project`` fallback)."""
        factors: list[tuple[Clique, np.ndarray]] = list(zip(self.cliques, self.theta, strict=True))
        drop = [v for v in range(len(self.sizes)) if v not in keep]
        order, _ = elimination(self.sizes, self.cliques, drop)
        for v in order:
            touching = [f for f in factors if v in f[0]]
            factors = [f for f in factors if v not in f[0]]
            if not touching:
                continue
            scope = tuple(sorted({u for c, _ in touching for u in c}))
            table = sum((_expand(c, t, scope) for c, t in touching), np.zeros([self.sizes[u] for u in scope]))
            rest = tuple(u for u in scope if u != v)
            factors.append((rest, _reduce(scope, table, rest, log=True)))
        scope = tuple(sorted(keep))
        table = sum((_expand(c, t, scope) for c, t in factors), np.zeros([self.sizes[u] for u in scope]))
        p = np.exp(table - table.max())
        return _reduce(scope, p / p.sum(), keep, log=False) * self.total

    def sample(self, rows: int, rng: np.random.Generator) -> list[np.ndarray]:
        """``rows`` codes per column, drawn column by column in reverse elimination order, each column by
        randomized rounding of its conditional given the sampled columns of its elimination clique."""
        codes: list[np.ndarray | None] = [None] * len(self.sizes)
        for v in reversed(self.tree.order):
            given = tuple(u for u in self.tree.elim[v] if u != v)  # all eliminated after v: sampled already
            joint = self.project((*given, v))
            if not given:
                codes[v] = _round_sample(joint, rows, rng)
                continue
            parents = [codes[u] for u in given]
            assert all(p is not None for p in parents)
            flat = np.asarray(np.ravel_multi_index(tuple(parents), joint.shape[:-1]), dtype=np.int64)  # type: ignore[arg-type]
            table = joint.reshape(-1, joint.shape[-1])
            out = np.empty(rows, dtype=np.int64)
            order = np.argsort(flat, kind="stable")
            values, starts = np.unique(flat[order], return_index=True)
            bounds = [*starts[1:], rows]
            for value, start, stop in zip(values, starts, bounds, strict=True):
                idx = order[start:stop]
                out[idx] = _round_sample(table[value], idx.size, rng)
            codes[v] = out
        return [c if c is not None else np.zeros(rows, dtype=np.int64) for c in codes]


# -- estimation ---------------------------------------------------------------------------------------
@dataclass
class _Placed:
    """A measurement with the junction-tree clique it is read from."""

    m: Measurement
    node: int
    w: np.ndarray


def _loss(model: GraphicalModel, placed: list[_Placed]) -> tuple[float, list[np.ndarray], list[np.ndarray]]:
    """The weighted least-squares loss, its gradient per junction-tree clique (counts), and the clique marginals."""
    mus = model.clique_marginals()
    grads = [np.zeros_like(mu) for mu in mus]
    loss = 0.0
    for p in placed:
        node = model.cliques[p.node]
        mu = _reduce(node, mus[p.node], p.m.clique, log=False)
        diff = p.w * mu - p.m.values
        loss += 0.5 * float((diff**2).sum()) / p.m.sigma**2
        grads[p.node] = grads[p.node] + _expand(p.m.clique, p.w * diff / p.m.sigma**2, node)
    return loss, grads, mus


def estimate(sizes: Sequence[int], measurements: list[Measurement], *, iterations: int = 1000,
             warm: GraphicalModel | None = None, cliques: Sequence[Sequence[int]] = ()) -> GraphicalModel:
    """The graphical model over the measured cliques (plus ``cliques``) that best explains ``measurements``.

    Mirror descent on the log-potentials with backtracking line search (private-pgm's default
    estimator); the loss is convex in the marginals and the junction tree makes them exact, so this
    converges to the least-squares consistent estimate. ``warm``: start from that model's potentials.
    """
    model = GraphicalModel(sizes, [m.clique for m in measurements] + [tuple(c) for c in cliques],
                           estimate_total(measurements) if measurements else 1.0)
    if warm is not None:
        model.warm_start(warm)
    placed = []
    for m in measurements:
        node = model.tree.container(m.clique)
        assert node is not None  # every measured clique is in the graph, so in some junction-tree clique
        placed.append(_Placed(m, node, np.ones_like(m.values) if m.weights is None else m.weights))
    if not placed:
        return model
    loss, grads, mus = _loss(model, placed)
    alpha = 1.0 / model.total
    for _ in range(iterations):
        old = model.theta
        alpha *= 2.0
        for _ in range(25):
            model.set_potentials([t - alpha * g for t, g in zip(old, grads, strict=True)])
            new_loss, new_grads, new_mus = _loss(model, placed)
            decrease = sum(float((g * (a - b)).sum()) for g, a, b in zip(grads, mus, new_mus, strict=True))
            if loss - new_loss >= 0.5 * alpha * decrease:
                break
            alpha *= 0.5
        previous = loss
        loss, grads, mus = new_loss, new_grads, new_mus
        if abs(previous - loss) <= 1e-9 * max(1.0, abs(previous)):
            break
    return model


__all__ = ["GraphicalModel", "JunctionTree", "elimination", "estimate", "model_size_mb"]
