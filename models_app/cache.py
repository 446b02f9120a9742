"""This process's loaded models, keyed by (model_id, archive name): see `gridnode.cache`."""

from django.conf import settings

from gridnode.cache import ArchiveCache
from models_app.archives import LoadedModel

model_cache: ArchiveCache[LoadedModel] = ArchiveCache(settings.GRIDNODE_MODEL_CACHE_SIZE)
