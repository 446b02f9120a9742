"""The per-process cache of loaded models: reused, bounded, and never stale."""

import hashlib
import time

import pytest
import torch
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from gridnode.cache import ArchiveCache
from models_app.executor import pool_cache
from models_app.models import HostedModel
from tests.conftest import jit_bytes

pytestmark = pytest.mark.django_db


class Constant(torch.nn.Module):
    def __init__(self, value: float):
        super().__init__()
        self.value = value

    def forward(self, x):
        return x * 0 + self.value


def predict(api, model_id):
    response = api.post(f"/model/{model_id}", {"data": [1.0]}, format="json")
    return response.status_code, response.json().get("prediction")


def test_an_inference_process_loads_a_model_once(api, serve):
    serve("warm", jit_bytes(Constant(1.0)), allow_remote_inference=True)
    misses, hits = pool_cache.misses, pool_cache.hits

    for _ in range(3):
        assert predict(api, "warm")[0] == 200

    assert pool_cache.misses == misses + 1  # the test pool has one process (tests/conftest.py)
    assert pool_cache.hits == hits + 2


def test_a_model_replaced_by_another_process_is_never_served_stale(api, serve):
    serve("swap", jit_bytes(Constant(1.0)), allow_remote_inference=True)
    assert predict(api, "swap") == (200, [1.0])

    # Another process deletes the model and stores a new one under the same id: this process's
    # cache is not told, and still holds the old model.
    HostedModel.objects.filter(model_id="swap").delete()
    replacement = jit_bytes(Constant(2.0))
    name = default_storage.save("models/replacement.pt", ContentFile(replacement))
    HostedModel.objects.create(
        model_id="swap",
        kind="jit",
        archive=name,
        size=len(replacement),
        sha256=hashlib.sha256(replacement).hexdigest(),
        allow_remote_inference=True,
    )

    assert predict(api, "swap") == (200, [2.0])


def test_a_model_deleted_by_another_process_is_not_served(api, serve):
    serve("bye", jit_bytes(Constant(1.0)), allow_remote_inference=True)
    assert predict(api, "bye") == (200, [1.0])

    HostedModel.objects.filter(model_id="bye").delete()  # not through this process's service

    assert predict(api, "bye")[0] == 404


def test_a_permission_revoked_elsewhere_applies_at_once(api, serve):
    serve("flip", jit_bytes(Constant(1.0)), allow_remote_inference=True)
    assert predict(api, "flip")[0] == 200

    HostedModel.objects.filter(model_id="flip").update(allow_remote_inference=False)

    assert predict(api, "flip")[0] == 403


def test_the_cache_is_bounded_and_evicts_the_least_recently_used(api, serve, settings):
    settings.GRIDNODE_MODEL_CACHE_SIZE = 2
    for model_id in ["a", "b", "c"]:
        serve(model_id, jit_bytes(Constant(0.0)), allow_remote_inference=True)
    evictions, misses = pool_cache.evictions, pool_cache.misses

    for model_id in ["a", "b", "c", "a"]:
        assert predict(api, model_id)[0] == 200

    assert pool_cache.evictions >= evictions + 2  # c pushed a out, then a pushed b out (and older tests' models)
    assert pool_cache.misses == misses + 4  # a was loaded again from storage


def test_cache_keeps_one_archive_per_model():
    cache = ArchiveCache(capacity=4)
    cache.put(("m", "old.pt"), object())
    cache.put(("m", "new.pt"), object())

    assert ("m", "old.pt") not in cache
    assert ("m", "new.pt") in cache


def test_one_caller_at_a_time_is_served_by_the_process_that_has_the_model_loaded(api, serve, own_pool):
    """An idle process that answered last takes the next request (models_app/executor_pool.py `_IdleWait`):
    handed round-robin, each of the four processes loaded the model, and ran it with cold caches."""
    own_pool(processes=4)
    serve("warm4", jit_bytes(Constant(1.0)), allow_remote_inference=True)
    misses = pool_cache.misses

    for _ in range(12):
        assert predict(api, "warm4") == (200, [1.0])
        time.sleep(0.01)  # each answer's process is back waiting before the next request

    assert pool_cache.misses - misses <= 2  # round-robin: 4, one load per process
