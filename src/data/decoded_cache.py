"""A bounded in-memory cache of fully decoded videos, for datasets small enough to keep decoded.

Decoding dominates the data cost of small videos (opening two containers per sample); when the whole
set fits in memory (the CPU demo) each video is decoded once and later samples only index arrays.
Least recently used videos are evicted past `max_bytes`. Each DataLoader worker holds its own cache.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np


class DecodedVideoCache:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = int(max_bytes)
        self.bytes = 0
        self._items: OrderedDict[str, tuple[np.ndarray, ...]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def get(self, key: str) -> tuple[np.ndarray, ...] | None:
        item = self._items.get(key)
        if item is None:
            self.misses += 1
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return item

    def put(self, key: str, arrays: tuple[np.ndarray, ...]) -> None:
        size = sum(a.nbytes for a in arrays)
        if size > self.max_bytes:
            return
        if key in self._items:
            self.bytes -= sum(a.nbytes for a in self._items.pop(key))
        while self._items and self.bytes + size > self.max_bytes:
            _, evicted = self._items.popitem(last=False)
            self.bytes -= sum(a.nbytes for a in evicted)
        self._items[key] = arrays
        self.bytes += size

    def __len__(self) -> int:
        return len(self._items)
