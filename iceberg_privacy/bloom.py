"""Split-block Bloom filters (Parquet's SBBF), built and probed with numpy.

A filter is ``M`` blocks of 256 bits (eight little-endian uint32 words). A 64-bit key ``x`` picks
block ``((x >> 32) * M) >> 32`` and sets one bit in each word: bit ``((lo32(x) * SALT[i]) mod 2**32)
>> 27`` of word ``i``. This is exactly Parquet's SBBF, so the false-positive maths is Parquet's, and
all eight probed words of a key live in one 32-byte block: a probe reads 32 bytes per filter.
"""

from __future__ import annotations

import math

import numpy as np

BLOCK_BYTES = 32
WORDS_PER_BLOCK = 8
MAX_BLOCKS = 1 << 22  # 128 MiB per filter, Parquet's cap

SALT = np.array(
    [0x47B6137B, 0x44974D91, 0x8824AD5B, 0xA2B7289D, 0x705495C7, 0x2DF1424B, 0x9EFC4947, 0x5C6BFB31],
    dtype=np.uint32,
)

# Block counts are rounded up to this geometric ladder (4 steps per doubling, <= 19% extra bits) so
# that filters of similar files share a block count and can be stored block-major together.
_LADDER_STEPS_PER_DOUBLING = 4


def optimal_num_blocks(ndv: int, fpp: float) -> int:
    """Blocks needed for ``ndv`` distinct keys at false-positive probability ``fpp``.

    Starts from Parquet's sizing rule ``bits = -8 * ndv / ln(1 - fpp ** (1/8))`` (which undershoots
    by up to ~30% for small filters), then takes the smallest ladder step whose modelled FPP
    (:func:`expected_fpp`) is at most ``fpp``.
    """
    if ndv <= 0:
        return 1
    bits = -8.0 * ndv / math.log(1.0 - fpp ** (1.0 / 8.0))
    blocks = ladder_ceil(max(1, math.ceil(bits / (BLOCK_BYTES * 8))))
    while blocks < MAX_BLOCKS and expected_fpp(ndv, blocks) > fpp:
        blocks = ladder_ceil(blocks + 1)
    return min(MAX_BLOCKS, blocks)


def ladder_ceil(blocks: int) -> int:
    """Smallest ladder value >= blocks: ceil(2 ** (k / 4)) for integer k."""
    if blocks <= 4:
        return blocks
    k = math.ceil(_LADDER_STEPS_PER_DOUBLING * math.log2(blocks) - 1e-9)
    while math.ceil(2 ** ((k - 1) / _LADDER_STEPS_PER_DOUBLING)) >= blocks:
        k -= 1
    return math.ceil(2 ** (k / _LADDER_STEPS_PER_DOUBLING))


def block_index(keys: np.ndarray, num_blocks: int) -> np.ndarray:
    """Block of each 64-bit key (multiply-shift, works for any block count)."""
    return (((keys >> np.uint64(32)) * np.uint64(num_blocks)) >> np.uint64(32)).astype(np.int64)


def block_masks(keys: np.ndarray) -> np.ndarray:
    """The eight single-bit word masks of each key, shape (n, 8) uint32."""
    lo = (keys & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    with np.errstate(over="ignore"):
        prod = lo[:, None] * SALT[None, :]
    return np.left_shift(np.uint32(1), prod >> np.uint32(27)).astype(np.uint32)


def build(keys: np.ndarray, num_blocks: int) -> np.ndarray:
    """A filter holding ``keys`` (uint64), as an array of shape (num_blocks, 8) uint32."""
    bits = np.zeros(num_blocks * BLOCK_BYTES * 8, dtype=bool)
    if len(keys):
        blocks = block_index(keys, num_blocks)
        lo = (keys & np.uint64(0xFFFFFFFF)).astype(np.uint32)
        with np.errstate(over="ignore"):
            bitpos = (lo[:, None] * SALT[None, :]) >> np.uint32(27)
        word = blocks[:, None] * WORDS_PER_BLOCK + np.arange(WORDS_PER_BLOCK)[None, :]
        bits[(word * 32 + bitpos).ravel()] = True
    return np.packbits(bits, bitorder="little").view("<u4").reshape(num_blocks, WORDS_PER_BLOCK)


def contains(rows: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Probe blocks: ``rows`` (n, F, 8) are each key's block in F filters -> (n, F) bool."""
    return np.all((rows & masks[:, None, :]) == masks[:, None, :], axis=-1)


def expected_fpp(ndv: int, num_blocks: int) -> float:
    """Theoretical SBBF false-positive rate (Poisson approximation over block loads)."""
    if ndv <= 0:
        return 0.0
    lam = ndv / num_blocks
    # P(false positive) = sum_k Pois(k; lam) * (1 - (1 - 1/32) ** k) ** 8, truncated.
    total, k_max = 0.0, int(lam + 10 * math.sqrt(lam) + 20)
    log_p = -lam
    for k in range(k_max + 1):
        if k:
            log_p += math.log(lam) - math.log(k)
        total += math.exp(log_p) * (1 - (31 / 32) ** k) ** 8
    return total
