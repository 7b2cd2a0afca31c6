"""Chained hashes of 16-token KV blocks, shared by the simulated KV cache and the
routers' prefix indexes: a full block is identified by a hash over every token before
it, so two prompts share a block hash only when their whole prefixes match."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

BLOCK_TOKENS = 16  # vLLM's KV block size on GPUs

# Chained block hashes as a polynomial over per-block content hashes, mod 2^64:
#   h_i = h_{i-1} * P + c_i  =>  h_i = P^i * sum_{j<=i} c_j * P^-j
# which numpy computes for a whole prompt at once (uint64 arithmetic wraps mod 2^64).
# c_i carries a constant term: without it a block of token id 0 hashes to 0 and leaves
# its predecessor's hash unchanged down the chain (16 zeros and 32 zeros would share
# one cache entry).
_RNG = np.random.default_rng(0x1F1EC7)
_WEIGHTS = _RNG.integers(1, 2**63, size=BLOCK_TOKENS, dtype=np.uint64) | np.uint64(1)
_SALT = np.uint64(0xC2B2AE3D27D4EB4F)
_P = np.uint64(0x9E3779B97F4A7C15)  # odd, so invertible mod 2^64
_P_INV = np.uint64(pow(int(_P), -1, 2**64))
_MAX_BLOCKS = 1 << 14  # 262k tokens of context


def _powers(base: np.uint64) -> npt.NDArray[np.uint64]:
    """base^0 .. base^(_MAX_BLOCKS-1) mod 2^64."""
    with np.errstate(over="ignore"):
        tail = np.cumprod(np.full(_MAX_BLOCKS - 1, base, dtype=np.uint64), dtype=np.uint64)
    return np.concatenate([np.ones(1, dtype=np.uint64), tail])


_P_POW = _powers(_P)
_P_INV_POW = _powers(_P_INV)


def block_hashes(token_ids: Sequence[int] | npt.NDArray[np.int64]) -> list[int]:
    """Chained hashes of the full 16-token blocks of `token_ids` (a partial tail block
    has none)."""
    n = len(token_ids) // BLOCK_TOKENS
    if n == 0:
        return []
    if n > _MAX_BLOCKS:
        raise ValueError(f"{len(token_ids)} tokens exceed the hashable context")
    ids = np.asarray(token_ids[: n * BLOCK_TOKENS], dtype=np.uint64).reshape(n, BLOCK_TOKENS)
    with np.errstate(over="ignore"):
        content = ids @ _WEIGHTS + _SALT
        chained = _P_POW[:n] * np.cumsum(content * _P_INV_POW[:n], dtype=np.uint64)
    hashes: list[int] = chained.tolist()
    return hashes


_WEIGHTS_INT = [int(w) for w in _WEIGHTS]
_P_INT = int(_P)
_SALT_INT = int(_SALT)
_MASK = (1 << 64) - 1


def extend_hash(previous: int, block: Sequence[int]) -> int:
    """The chained hash of one more full block after a block hashed `previous` (0 before
    the first block); equal to what `block_hashes` computes for the whole sequence."""
    content = (sum(t * w for t, w in zip(block, _WEIGHTS_INT, strict=True)) + _SALT_INT) & _MASK
    return (previous * _P_INT + content) & _MASK
