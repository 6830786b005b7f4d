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

# Block counts are powers of two, so that the filters of one sidecar can share one block count: a
# filter of M blocks is *widened* to c*M blocks (c a power of two) by repeating each block c times,
# and answers every probe exactly as before (see :func:`widen`). One block count per column per
# sidecar means a single-key probe reads ONE row of the sidecar: one ranged GET on an object store.
MAX_WIDENING = 8
"""A filter is widened by at most this factor (so at most 8x its bytes); a smaller one gets its own group."""


def optimal_num_blocks(ndv: int, fpp: float) -> int:
    """Blocks needed for ``ndv`` distinct keys at false-positive probability ``fpp``: a power of two.

    Starts from Parquet's sizing rule ``bits = -8 * ndv / ln(1 - fpp ** (1/8))`` (which undershoots
    by up to ~30% for small filters), then takes the smallest power of two whose modelled FPP
    (:func:`expected_fpp`) is at most ``fpp``.
    """
    if ndv <= 0:
        return 1
    # log1p: for an FPP below ~1e-128, 1 - fpp**(1/8) rounds to 1.0 and log() to 0 (a ZeroDivisionError that
    # failed every write of the table); the rule's answer there is the cap. An NDV (hint) beyond what float
    # holds gives the cap as well, long before 2**60.
    bits = -8.0 * min(ndv, 2**60) / math.log1p(-(fpp ** (1.0 / 8.0)))
    blocks = ladder_ceil(min(MAX_BLOCKS, max(1, math.ceil(bits / (BLOCK_BYTES * 8)))))
    while blocks < MAX_BLOCKS and expected_fpp(ndv, blocks) > fpp:
        blocks = ladder_ceil(blocks + 1)
    return min(MAX_BLOCKS, blocks)


def ladder_ceil(blocks: int) -> int:
    """Smallest power of two >= blocks."""
    return 1 << max(0, int(blocks) - 1).bit_length()


def widen(blocks: np.ndarray, num_blocks: int) -> np.ndarray:
    """The filter ``blocks`` (M, 8) as a filter of ``num_blocks`` = c*M blocks with the same answers.

    Block j of the wide filter is block floor(j / c) of the narrow one. A key's block in the wide
    filter is floor(h * c*M / 2**32) for h = key >> 32, and floor(floor(c*x) / c) = floor(x): the
    probe lands on a copy of the block it would have read in the narrow filter, with the same masks.
    """
    m = blocks.shape[0]
    if num_blocks == m:
        return blocks
    if num_blocks % m:
        raise ValueError(f"cannot widen a filter of {m} blocks to {num_blocks}")
    return np.repeat(blocks, num_blocks // m, axis=0)


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
