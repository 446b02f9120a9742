"""A per-process, bounded cache of things loaded from stored files: models (models_app) and shares (smpc_app).

Entries are keyed by (id, archive name). Every stored upload gets a fresh uuid file name, so something
that was deleted or replaced, by this process or any other, has a new key: the request path reads the
current name from the database and can never hit the old entry.
"""

import threading
from collections import OrderedDict
from typing import Generic, TypeVar

CacheKey = tuple[str, str]
Entry = TypeVar("Entry")


class ArchiveCache(Generic[Entry]):
    """Least-recently-used loaded entries, at most `capacity` of them, with hit, miss and eviction counts."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._entries: OrderedDict[CacheKey, Entry] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = self.evictions = 0

    def get(self, key: CacheKey) -> Entry | None:
        """The entry under `key`, now the most recently used; None when absent."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry

    def put(self, key: CacheKey, entry: Entry) -> None:
        """Keep an entry, dropping older archives of the same id and then the least recently used."""
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            # Older archives of the same id can never be asked for again.
            for stale in [other for other in self._entries if other[0] == key[0] and other != key]:
                del self._entries[stale]
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
                self.evictions += 1

    def discard(self, entry_id: str) -> None:
        """Drop every entry of one id."""
        with self._lock:
            for key in [key for key in self._entries if key[0] == entry_id]:
                del self._entries[key]

    def discard_archive(self, name: str) -> None:
        """Drop the entry loaded from the stored file `name`."""
        with self._lock:
            for key in [key for key in self._entries if key[1] == name]:
                del self._entries[key]

    def clear(self) -> None:
        """Drop every entry."""
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: CacheKey) -> bool:
        return key in self._entries
