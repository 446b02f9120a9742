"""The per-process cache of loaded models: reused, bounded, and never stale."""

import hashlib

import pytest
import torch
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from gridnode.cache import ArchiveCache
from models_app import services
from models_app.cache import model_cache
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


def test_the_first_inference_after_upload_does_not_load_again(api, serve, mlp_jit):
    serve("warm", mlp_jit, allow_remote_inference=True)
    misses = model_cache.misses

    predict(api, "warm")
    predict(api, "warm")

    assert model_cache.misses == misses
    assert model_cache.hits >= 2


def test_a_cold_process_loads_once_from_storage(api, serve, mlp_plan):
    serve("cold", mlp_plan, allow_remote_inference=True)
    model_cache.clear()  # as a fresh worker process would start
    misses = model_cache.misses

    for _ in range(2):
        response = api.post("/model/cold", {"data": [[0.0] * 4] * 2}, format="json")
        assert response.status_code == 200
    assert model_cache.misses == misses + 1


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


def test_the_cache_is_bounded_and_evicts_the_least_recently_used(monkeypatch, serve):
    monkeypatch.setattr(model_cache, "capacity", 2)
    evictions = model_cache.evictions
    for model_id in ["a", "b", "c"]:
        serve(model_id, jit_bytes(Constant(0.0)), allow_remote_inference=True)

    assert len(model_cache) == 2
    assert model_cache.evictions == evictions + 1
    assert services.model_for_inference(model_id="a") is not None  # loads again from storage


def test_cache_keeps_one_archive_per_model():
    cache = ArchiveCache(capacity=4)
    cache.put(("m", "old.pt"), object())
    cache.put(("m", "new.pt"), object())

    assert ("m", "old.pt") not in cache
    assert ("m", "new.pt") in cache
