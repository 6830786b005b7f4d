"""Split-block Bloom filter: no false negatives, and the measured FPP meets the configured one."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from iceberg_privacy.index import bloom
from iceberg_privacy.index.hashing import mix64


def _probe(flt: np.ndarray, keys: np.ndarray) -> np.ndarray:
    rows = flt[bloom.block_index(keys, flt.shape[0])][:, None, :]
    return bloom.contains(rows, bloom.block_masks(keys))[:, 0]


@given(st.lists(st.integers(0, 2**31 - 2), max_size=500), st.floats(0.0001, 0.5))
def test_no_false_negatives(hashes: list[int], fpp: float) -> None:
    keys = mix64(np.array(hashes, dtype=np.uint32))
    flt = bloom.build(keys, bloom.optimal_num_blocks(len(set(hashes)), fpp))
    assert _probe(flt, keys).all()


@pytest.mark.parametrize("ndv", [100, 1_000, 20_000, 200_000])
@pytest.mark.parametrize("fpp", [0.01, 0.001])
def test_measured_fpp_within_1_5x(ndv: int, fpp: float) -> None:
    rng = np.random.default_rng(ndv)
    universe = np.unique(rng.integers(0, 2**31 - 1, 2 * (ndv + 10_000), dtype=np.int64)).astype(np.uint32)
    universe = rng.permutation(universe)[: ndv + 10_000]
    present, absent = universe[:ndv], universe[ndv:]
    assert len(absent) == 10_000
    flt = bloom.build(mix64(present), bloom.optimal_num_blocks(ndv, fpp))
    measured = _probe(flt, mix64(absent)).mean()
    assert measured <= 1.5 * fpp, (measured, fpp)


def test_empty_filter_rejects_everything() -> None:
    flt = bloom.build(np.empty(0, dtype=np.uint64), bloom.optimal_num_blocks(0, 0.01))
    assert flt.shape == (1, 8)
    assert not _probe(flt, mix64(np.arange(1000, dtype=np.uint32))).any()


def test_sizing_is_monotone_and_on_the_ladder() -> None:
    sizes = [bloom.optimal_num_blocks(n, 0.01) for n in range(1, 5000, 37)]
    assert sizes == sorted(sizes)
    assert all(bloom.ladder_ceil(s) == s for s in sizes)
    assert bloom.optimal_num_blocks(10_000, 0.001) > bloom.optimal_num_blocks(10_000, 0.01)
    with np.errstate(all="raise"):
        assert bloom.expected_fpp(10_000, bloom.optimal_num_blocks(10_000, 0.01)) <= 0.01


@given(st.lists(st.integers(0, 2**31 - 2), max_size=300), st.lists(st.integers(0, 2**31 - 2), max_size=300),
       st.integers(0, 6), st.sampled_from([1, 2, 4, 8]))
def test_widened_filter_answers_exactly_like_the_narrow_one(present: list[int], probes: list[int], log_m: int,
                                                            factor: int) -> None:
    keys = mix64(np.array(present, dtype=np.uint32))
    narrow = bloom.build(keys, 1 << log_m)
    wide = bloom.widen(narrow, (1 << log_m) * factor)
    assert wide.shape == ((1 << log_m) * factor, bloom.WORDS_PER_BLOCK)
    probe_keys = mix64(np.array(present + probes, dtype=np.uint32))
    assert (_probe(wide, probe_keys) == _probe(narrow, probe_keys)).all()


def test_sizes_are_powers_of_two_and_widening_needs_a_multiple() -> None:
    assert [bloom.ladder_ceil(n) for n in (1, 2, 3, 5, 8, 9, 1000)] == [1, 2, 4, 8, 8, 16, 1024]
    with pytest.raises(ValueError, match="cannot widen"):
        bloom.widen(np.zeros((3, 8), np.uint32), 8)


@given(st.integers(0, 10**400), st.floats(min_value=5e-324, max_value=0.5, allow_subnormal=True))
def test_sizing_never_fails_whatever_the_fpp_or_ndv_hint(ndv: int, fpp: float) -> None:
    """configure_bloom accepts any FPP in (0, 0.5] and any NDV hint, but the sizing rule divided by
    log(1 - fpp**(1/8)) == 0 for an FPP below ~1e-128 (ZeroDivisionError) and converted a huge hint to float
    (OverflowError): every write of such a table failed with a raw traceback. The rule's answer there is the cap."""
    blocks = bloom.optimal_num_blocks(ndv, fpp)
    assert 1 <= blocks <= bloom.MAX_BLOCKS and blocks & (blocks - 1) == 0
    if ndv > 0 and (fpp < 1e-100 or ndv > 10**12):
        assert blocks == bloom.MAX_BLOCKS


@pytest.mark.parametrize(("ndv", "blocks"), [(100, 8), (1_000, 64), (10_000, 512), (1_000_000, 65536)])
def test_sizing_examples_of_the_spec(ndv: int, blocks: int) -> None:
    assert bloom.optimal_num_blocks(ndv, 0.01) == blocks  # docs/sidecar-format.md 3.4
