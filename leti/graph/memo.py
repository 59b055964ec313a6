"""Memo caches bounded by the size of what they hold, not by a count.

``functools.lru_cache(maxsize=4096)`` over graphs bounds nothing useful: one entry may be a 200-node NB201 network
or a million-layer one, so a long-running server fed distinct large archs grew without limit. Here each entry is
weighed (nodes + edges for a graph, cells for a matrix) and the least recently used ones are dropped once the total
passes the budget; an entry heavier than a share of the budget is never kept.
"""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

MAX_SHARE = 8  # an entry may take at most 1/MAX_SHARE of the budget


def graph_weight(g) -> int:
    """Nodes + edges of a LayerGraph: what its memory grows with (~150-450 bytes each)."""
    return int(g.n_nodes) + int(g.n_edges)


class SizedLRU:
    """A thread-safe least-recently-used map whose values' total ``weigh(value)`` stays within ``budget``."""

    def __init__(self, budget: int, weigh: Callable[[Any], int] | None = None):
        self.budget = int(budget)
        self.weigh = weigh or (lambda _v: 1)
        self._items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._weight = 0
        self._lock = threading.Lock()

    def get(self, key: Hashable, default=None):
        with self._lock:
            hit = self._items.get(key)
            if hit is None:
                return default
            self._items.move_to_end(key)
            return hit[0]

    def put(self, key: Hashable, value) -> None:
        w = max(1, int(self.weigh(value)))
        if w * MAX_SHARE > self.budget:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._weight -= old[1]
            self._items[key] = (value, w)
            self._weight += w
            while self._weight > self.budget:
                _, (_, dropped) = self._items.popitem(last=False)
                self._weight -= dropped

    def get_or_make(self, key: Hashable, make: Callable[[], Any]):
        """The cached value for ``key``, else ``make()`` (cached when light enough)."""
        hit = self.get(key)
        if hit is not None:
            return hit
        value = make()  # outside the lock: building may take a while and must not serialise other threads
        self.put(key, value)
        return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._weight = 0

    @property
    def weight(self) -> int:
        return self._weight

    def __len__(self) -> int:
        return len(self._items)


def memo(budget: int, weigh: Callable[[Any], int] | None = None):
    """Like ``functools.lru_cache`` for functions of hashable arguments, bounded by weight; ``fn.cache_clear()``."""

    def wrap(fn):
        cache = SizedLRU(budget, weigh)

        @functools.wraps(fn)
        def cached(*args):
            return cache.get_or_make(args, lambda: fn(*args))

        cached.cache_clear = cache.clear
        cached.cache = cache
        return cached

    return wrap
