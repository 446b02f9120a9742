"""GET /metrics: Prometheus' text format, labelled by route name, moving as requests are served."""

import os
import subprocess
import sys

import pytest
from django.conf import settings as django_settings
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import X

pytestmark = pytest.mark.django_db


def scrape(api) -> dict:
    """Every sample of one scrape, keyed by (name, sorted labels)."""
    response = api.get("/metrics")
    assert response.status_code == 200
    families = text_string_to_metric_families(response.content.decode())
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for family in families for s in family.samples}


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def run(api, model_id: str) -> int:
    return api.post(f"/model/{model_id}", {"data": X}, format="json").status_code


def test_it_answers_prometheus_text_that_parses(api):
    response = api.get("/metrics")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    names = {family.name for family in text_string_to_metric_families(response.content.decode())}
    assert {
        "gridnode_http_requests",
        "gridnode_http_request_duration_seconds",
        "gridnode_inference_duration_seconds",
        "gridnode_model_cache_hits",
        "gridnode_model_cache_misses",
        "gridnode_model_cache_evictions",
        "gridnode_model_cache_models",
        "gridnode_stored_models",
        "gridnode_stored_datasets",
    } <= names


def test_request_counts_and_latency_move_by_route_and_status(api):
    before = scrape(api)
    for path in ("/healthz", "/healthz/", "/healthz", "/no/such/path"):
        api.get(path)
    after = scrape(api)

    ok = {"method": "GET", "endpoint": "healthz", "status": "200"}
    assert value(after, "gridnode_http_requests_total", **ok) - value(before, "gridnode_http_requests_total", **ok) == 3
    latency = "gridnode_http_request_duration_seconds_count"
    assert value(after, latency, **ok) - value(before, latency, **ok) == 3
    missing = {"method": "GET", "endpoint": "unmatched", "status": "404"}
    assert (
        value(after, "gridnode_http_requests_total", **missing)
        - value(before, "gridnode_http_requests_total", **missing)
        == 1
    )


def test_labels_are_route_names_never_paths_or_ids(api, mlp_models):
    assert run(api, "mlp-jit") == 200
    api.get("/v2/models/mlp-plan")
    api.get("/v2/models/unknown-id-1234")
    samples = scrape(api)

    endpoints = {dict(labels).get("endpoint") for name, labels in samples if name == "gridnode_http_requests_total"}
    assert {"model-inference", "v2-model-metadata", "serve-model"} <= endpoints
    for _, labels in samples:
        for label, text in labels:
            if label != "model_id":
                assert "mlp-" not in text
                assert "unknown-id" not in text
                assert "/" not in text


def test_inference_latency_is_per_model_and_only_for_answered_inferences(api, mlp_models, serve, mlp_jit):
    serve("private", mlp_jit)
    before = scrape(api)
    assert run(api, "mlp-jit") == 200
    assert run(api, "mlp-plan") == 200
    v2 = api.generic(
        "POST",
        "/v2/models/mlp-jit/infer",
        b'{"inputs": [{"name": "input__0", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}',
    )
    assert v2.status_code == 200
    assert run(api, "private") == 403
    assert run(api, "ghost") == 404
    after = scrape(api)

    count = "gridnode_inference_duration_seconds_count"
    assert value(after, count, model_id="mlp-jit") - value(before, count, model_id="mlp-jit") == 2
    assert value(after, count, model_id="mlp-plan") - value(before, count, model_id="mlp-plan") == 1
    assert value(after, count, model_id="private") == 0
    assert value(after, count, model_id="ghost") == 0
    assert value(after, "gridnode_inference_duration_seconds_sum", model_id="mlp-plan") > 0


def test_model_cache_hits_misses_evictions_and_size(api, mlp_models, settings):
    before = scrape(api)
    settings.GRIDNODE_MODEL_CACHE_SIZE = 1  # the test pool's one inference process keeps one model
    assert run(api, "mlp-jit") == 200  # loaded (whatever earlier tests left is pushed out)
    assert run(api, "mlp-jit") == 200  # from the cache
    assert run(api, "mlp-plan") == 200  # loaded, pushing mlp-jit out
    after = scrape(api)

    def moved(name):
        return value(after, name) - value(before, name)

    assert moved("gridnode_model_cache_misses_total") == 2
    assert moved("gridnode_model_cache_hits_total") == 1
    assert moved("gridnode_model_cache_evictions_total") >= 1
    assert value(after, "gridnode_model_cache_models") == 1


def test_stored_model_and_dataset_counts(api, mlp_models):
    created = api.post("/datasets", {"id": "numbers", "tags": ["#n"], "data": [[1.0, 2.0]]}, format="json")
    assert created.status_code == 201
    samples = scrape(api)

    assert value(samples, "gridnode_stored_models") == 2
    assert value(samples, "gridnode_stored_datasets") == 1


def test_it_is_405_for_post(api):
    response = api.post("/metrics", {}, format="json")

    assert response.status_code == 405
    assert "error" in response.json()


WORKER = """
import django
django.setup()
from django.test import Client
from models_app.executor import pool_cache

client = Client()
for _ in range(3):
    assert client.get("/healthz").status_code == 200
pool_cache.misses += 2  # as if two inferences had loaded models; the next request copies the count
assert client.get("/healthz").status_code == 200
"""

SCRAPE = """
import sys
import django
django.setup()
from django.test import Client

sys.stdout.write(Client().get("/metrics").content.decode())
"""


@pytest.mark.django_db(False)
def test_with_prometheus_multiproc_dir_every_worker_counts_into_one_scrape(tmp_path):
    shared = tmp_path / "prometheus"
    shared.mkdir()
    env = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(shared),
        "DJANGO_SETTINGS_MODULE": "gridnode.settings",
        "GRIDNODE_DATA_DIR": str(tmp_path / "data"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'data' / 'db.sqlite3'}",
        "GRIDNODE_LOG_LEVEL": "WARNING",
    }

    def python(code: str) -> str:
        done = subprocess.run(
            [sys.executable, "-c", code], env=env, cwd=django_settings.BASE_DIR, capture_output=True, text=True,
            timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout

    python(WORKER)
    python(WORKER)  # a second worker process
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(shared))
    healthz = {"method": "GET", "endpoint": "healthz", "status": "200"}
    assert registry.get_sample_value("gridnode_http_requests_total", healthz) == 8
    assert registry.get_sample_value("gridnode_model_cache_misses_total") == 4

    served = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(python(SCRAPE))
        for s in family.samples
    }
    assert value(served, "gridnode_http_requests_total", **healthz) == 8  # whichever worker serves /metrics
    assert value(served, "gridnode_model_cache_misses_total") == 4


def test_code_answering_before_django_records_through_observe_request(api):
    # The WSGI fast path answers some inferences without Django's middleware; this is its way in.
    from gridnode.observability import observe_request

    before = scrape(api)
    observe_request(
        method="POST", path="/model/fast", endpoint="model-inference", status=200, seconds=0.002, model_id="fast"
    )
    after = scrape(api)

    labels = {"method": "POST", "endpoint": "model-inference", "status": "200"}
    assert (
        value(after, "gridnode_http_requests_total", **labels) - value(before, "gridnode_http_requests_total", **labels)
        == 1
    )
    count = "gridnode_inference_duration_seconds_count"
    assert value(after, count, model_id="fast") - value(before, count, model_id="fast") == 1
