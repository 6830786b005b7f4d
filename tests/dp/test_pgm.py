"""Junction-tree inference and estimation (dp/_pgm.py) against brute force on small models."""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from iceberg_privacy.dp._pgm import GraphicalModel, JunctionTree, elimination, estimate
from iceberg_privacy.dp.mst import Measurement, marginal


@st.composite
def models(draw: st.DrawFn) -> tuple[list[int], list[tuple[int, ...]]]:
    d = draw(st.integers(1, 5))
    sizes = draw(st.lists(st.integers(1, 3), min_size=d, max_size=d))
    cliques = draw(st.lists(st.lists(st.integers(0, d - 1), min_size=1, max_size=3, unique=True)
                            .map(lambda c: tuple(sorted(c))), min_size=0, max_size=5))
    return sizes, cliques


def _joint(model: GraphicalModel) -> np.ndarray:
    """The normalised joint distribution, by enumerating every cell."""
    sizes = model.sizes
    log = np.zeros(sizes)
    for x in itertools.product(*[range(s) for s in sizes]):
        log[x] = sum(t[tuple(x[v] for v in c)] for c, t in zip(model.cliques, model.theta, strict=True))
    p = np.exp(log - log.max())
    return p / p.sum()


def _brute(joint: np.ndarray, clique: tuple[int, ...]) -> np.ndarray:
    d = joint.ndim
    kept = sorted(clique)
    m = joint.sum(axis=tuple(v for v in range(d) if v not in clique))
    return np.transpose(m, [kept.index(v) for v in clique])


@settings(max_examples=60, deadline=None)
@given(models(), st.integers(0, 10**6), st.data())
def test_marginals_of_every_clique_match_the_brute_force_joint(model_spec: tuple[list[int], list[tuple[int, ...]]],
                                                               seed: int, data: st.DataObject) -> None:
    sizes, cliques = model_spec
    model = GraphicalModel(sizes, cliques, total=1.0)
    rng = np.random.default_rng(seed)
    model.set_potentials([rng.normal(size=t.shape) * 2 for t in model.theta])
    joint = _joint(model)
    for clique in model.cliques:  # the calibrated beliefs
        assert np.allclose(model.project(clique), _brute(joint, clique))
    for clique in cliques:  # every measured clique lies in a junction-tree clique
        assert model.tree.container(clique) is not None
    d = len(sizes)
    for _ in range(3):  # any clique, in any axis order: inside a junction-tree clique or by variable elimination
        clique = tuple(data.draw(st.permutations(range(d)))[: data.draw(st.integers(1, d))])
        assert np.allclose(model.project(clique), _brute(joint, clique))


@settings(max_examples=60, deadline=None)
@given(models())
def test_junction_tree_has_the_running_intersection_property(model_spec: tuple[list[int], list[tuple[int, ...]]]) -> None:
    sizes, cliques = model_spec
    tree = JunctionTree(sizes, cliques)
    assert len(tree.edges) == len(tree.cliques) - 1 and len(tree.bfs) == len(tree.cliques)  # one spanning tree
    assert set(itertools.chain.from_iterable(tree.cliques)) == set(range(len(sizes)))
    for v in range(len(sizes)):  # the cliques holding v form a connected subtree
        holding = {i for i, c in enumerate(tree.cliques) if v in c}
        inside = [(a, b) for a, b in tree.edges if a in holding and b in holding]
        assert len(inside) == len(holding) - 1
    for a, b in itertools.combinations(tree.cliques, 2):
        assert not set(a) <= set(b)  # maximal
    order, elim = elimination(sizes, cliques)
    position = {v: i for i, v in enumerate(order)}
    for v, clique in elim.items():  # perfect elimination order: the rest of v's clique is eliminated after v
        assert all(position[u] > position[v] for u in clique if u != v)
        assert tree.container(clique) is not None


def _data(seed: int, n: int, sizes: list[int]) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, sizes[0], n)
    b = (a + rng.integers(0, 2, n)) % sizes[1]
    c = (b * 2 + rng.integers(0, 2, n)) % sizes[2]
    e = (a + c + rng.integers(0, 2, n)) % sizes[3]
    return [a, b, c, e]


def test_estimation_recovers_exact_marginals_from_noiseless_measurements() -> None:
    sizes = [3, 4, 3, 2]
    codes = _data(1, 5000, sizes)
    cliques = [(0, 1), (1, 2), (0, 2), (2, 3), (0, 3)]  # a cycle: the junction tree is not the clique graph
    measurements = [Measurement(c, marginal(codes, sizes, c), 1.0) for c in cliques]
    model = estimate(sizes, measurements, iterations=3000)
    assert abs(model.total - 5000) < 1e-6
    for c in cliques:
        assert np.abs(model.project(c) - marginal(codes, sizes, c)).sum() < 0.01 * 5000, c


def test_warm_start_reaches_the_same_fit_from_the_previous_model() -> None:
    sizes = [3, 4, 3, 2]
    codes = _data(2, 3000, sizes)
    first = [Measurement((v,), marginal(codes, sizes, (v,)), 1.0) for v in range(4)]
    base = estimate(sizes, first, iterations=500)
    more = [*first, Measurement((0, 1), marginal(codes, sizes, (0, 1)), 1.0)]
    cold = estimate(sizes, more, iterations=2000)
    warm = estimate(sizes, more, iterations=2000, warm=base)
    assert np.allclose(cold.project((0, 1)), warm.project((0, 1)), atol=1.0)
    assert np.allclose(warm.project((0, 1)), marginal(codes, sizes, (0, 1)), atol=1.0)


def test_sampling_reproduces_the_model_marginals() -> None:
    sizes = [3, 4, 3, 2]
    rng = np.random.default_rng(3)
    model = GraphicalModel(sizes, [(0, 1), (1, 2), (0, 2), (2, 3)], total=1.0)
    model.set_potentials([rng.normal(size=t.shape) for t in model.theta])
    rows = 40_000
    sampled = model.sample(rows, rng)
    assert all(s.size == rows for s in sampled)
    for clique in itertools.combinations(range(4), 2):
        empirical = marginal(sampled, sizes, clique) / rows
        assert 0.5 * np.abs(empirical - model.project(clique)).sum() < 0.02, clique
    for v in range(4):  # randomized rounding of the first column: every count within one of the expectation
        if v == model.tree.order[-1]:
            assert np.all(np.abs(np.bincount(sampled[v], minlength=sizes[v]) - model.project((v,)) * rows) <= 1)


@settings(max_examples=15, deadline=None)
@given(models(), st.integers(0, 10**6))
def test_noiseless_measurements_of_any_cliques_are_recovered(model_spec: tuple[list[int], list[tuple[int, ...]]],
                                                             seed: int) -> None:
    sizes, cliques = model_spec
    rng = np.random.default_rng(seed)
    n = 400
    codes = [rng.integers(0, s, n) for s in sizes]
    for i in range(1, len(sizes)):  # some dependence between neighbours
        codes[i] = np.where(rng.random(n) < 0.5, codes[i - 1] % sizes[i], codes[i])
    measured = sorted(set(cliques) | {(v,) for v in range(len(sizes))})
    model = estimate(sizes, [Measurement(c, marginal(codes, sizes, c), 1.0) for c in measured], iterations=3000)
    for c in measured:
        assert np.abs(model.project(c) - marginal(codes, sizes, c)).sum() < 0.02 * n, c
