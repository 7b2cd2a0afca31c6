"""A paged KV cache with automatic prefix caching, after vLLM V1's KVCacheManager.

Blocks hold 16 tokens. A full block is identified by a hash chained over every token
before it, so two requests share a block only when their whole prefixes match. Blocks no
request references stay cached in an LRU free queue until a new allocation evicts them;
a finished request frees its blocks tail first, so its prefix blocks outlive its suffix
(vLLM's order). Pure bookkeeping: no clocks, no asyncio.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from orchestrator.blocks import BLOCK_TOKENS, block_hashes, extend_hash

__all__ = ["BLOCK_TOKENS", "KvCache", "block_hashes", "extend_hash"]


class KvCache:
    """Block accounting for one replica: reference counts, the prefix-cache index and the
    LRU queue of unreferenced blocks."""

    def __init__(self, num_blocks: int, *, prefix_caching: bool = True) -> None:
        if num_blocks <= 0:
            raise ValueError("a KV cache needs at least one block")
        self.num_blocks = num_blocks
        self.prefix_caching = prefix_caching
        self._refs = [0] * num_blocks
        self._hash_of: list[int | None] = [None] * num_blocks
        self._cached: dict[int, int] = {}  # block hash -> block id
        # Unreferenced blocks, least recently freed first (evicted first).
        self._free: OrderedDict[int, None] = OrderedDict((b, None) for b in range(num_blocks))
        self.evictions = 0  # cached blocks reused for other content
        self.hits = 0  # prompt tokens served from the prefix cache (the scheduler counts)
        self.queries = 0  # prompt tokens looked up in the prefix cache

    @property
    def free_blocks(self) -> int:
        """Blocks an allocation can take (unreferenced, cached or not)."""
        return len(self._free)

    @property
    def used_blocks(self) -> int:
        return self.num_blocks - len(self._free)

    @property
    def usage(self) -> float:
        """Fraction of blocks referenced by running requests (vLLM's kv_cache_usage)."""
        return self.used_blocks / self.num_blocks

    def cached_prefix(self, hashes: Sequence[int]) -> int:
        """How many leading blocks of `hashes` are in the cache (not touched)."""
        if not self.prefix_caching:
            return 0
        count = 0
        for h in hashes:
            if h not in self._cached:
                break
            count += 1
        return count

    def is_free_cached(self, block_hash: int) -> bool:
        """The cached block of `block_hash` has no reference (it sits in the free queue)."""
        block = self._cached.get(block_hash)
        return block is not None and self._refs[block] == 0

    def touch_prefix(self, hashes: Sequence[int]) -> list[int]:
        """Reference the cached blocks of `hashes` (which must all be cached) and return
        their ids."""
        blocks = []
        for h in hashes:
            block = self._cached[h]
            if self._refs[block] == 0:
                del self._free[block]
            self._refs[block] += 1
            blocks.append(block)
        return blocks

    def allocate(self, count: int) -> list[int] | None:
        """`count` fresh blocks, evicting the least recently freed cached ones; None (and
        nothing taken) when there are not enough."""
        if count > len(self._free):
            return None
        blocks = []
        for _ in range(count):
            block, _ = self._free.popitem(last=False)
            old = self._hash_of[block]
            if old is not None:
                if self._cached.get(old) == block:
                    del self._cached[old]
                self._hash_of[block] = None
                self.evictions += 1
            self._refs[block] = 1
            blocks.append(block)
        return blocks

    def commit(self, block: int, block_hash: int) -> None:
        """A block became full: index it under its prefix hash (first writer wins)."""
        if not self.prefix_caching or self._hash_of[block] is not None:
            return
        if block_hash not in self._cached:
            self._cached[block_hash] = block
            self._hash_of[block] = block_hash

    def free(self, blocks: Sequence[int]) -> None:
        """Drop one reference to each block, tail first; unreferenced blocks join the LRU
        queue (cached ones stay findable until evicted)."""
        for block in reversed(blocks):
            self._refs[block] -= 1
            if self._refs[block] == 0:
                if self._hash_of[block] is None:
                    # Nothing to find it by: reuse it before any cached block.
                    self._free[block] = None
                    self._free.move_to_end(block, last=False)
                else:
                    self._free[block] = None
