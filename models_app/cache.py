"""A per-process, bounded cache of loaded models.

Entries are keyed by (model_id, archive name). Every stored upload gets a fresh uuid file name, so a
model that was deleted or replaced, by this process or any other, has a new key: the request path
reads the current name from the database and can never hit the old entry.
"""

import threading
from collections import OrderedDict

from django.conf import settings

from models_app.archives import LoadedModel

CacheKey = tuple[str, str]


class ModelCache:
    """Least-recently-used loaded models, at most `capacity` of them."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._entries: OrderedDict[CacheKey, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = self.evictions = 0

    def get(self, key: CacheKey) -> LoadedModel | None:
        with self._lock:
            loaded = self._entries.get(key)
            if loaded is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return loaded

    def put(self, key: CacheKey, loaded: LoadedModel) -> None:
        with self._lock:
            self._entries[key] = loaded
            self._entries.move_to_end(key)
            # Older archives of the same model can never be asked for again.
            for stale in [k for k in self._entries if k[0] == key[0] and k != key]:
                del self._entries[stale]
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
                self.evictions += 1

    def discard(self, model_id: str) -> None:
        with self._lock:
            for key in [k for k in self._entries if k[0] == model_id]:
                del self._entries[key]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: CacheKey) -> bool:
        return key in self._entries


model_cache = ModelCache(settings.GRIDNODE_MODEL_CACHE_SIZE)
