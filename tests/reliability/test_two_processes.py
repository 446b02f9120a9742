"""Two server processes, one database: a model deleted or replaced through one is never served by the
other afterwards, even when the other had it loaded in its cache."""

import base64
import io

import pytest
import torch
from prometheus_client.parser import text_string_to_metric_families

from models_app.models import HostedModel
from tests.reliability.conftest import NEEDS_POSTGRESQL
from tests.reliability.helpers import post_json, post_multipart, request, saved, scaled_mlp

pytestmark = [pytest.mark.django_db(transaction=True), NEEDS_POSTGRESQL]

ROWS = [[1.0, 2.0], [-0.5, 4.0]]  # row sums 3 and 3.5


def serve(url: str, archive: bytes) -> None:
    body = {"model_id": "shared", "encoding": "base64", "model": base64.b64encode(archive).decode()}
    status, answer = post_json(url, "/serve-model", {**body, "allow_remote_inference": True, "allow_download": True})
    assert status == 200, answer


def predictions(url: str) -> dict[str, tuple]:
    """What each inference route of a node answers for ROWS: (200, one number per row) or (status, error)."""
    v2_input = {"name": "input__0", "shape": [2, 2], "datatype": "FP32", "data": [1.0, 2.0, -0.5, 4.0]}
    answers = {
        "fast path": post_json(url, "/model/shared", {"data": ROWS}),
        "django view": post_multipart(url, "/model/shared", {}, {"data": saved(torch.tensor(ROWS))}),
        "v2": post_json(url, "/v2/models/shared/infer", {"inputs": [v2_input]}),
    }
    for route, (status, body) in answers.items():
        if status != 200:
            continue
        if route == "fast path":
            numbers = [row[0] for row in body["prediction"]]
        elif route == "django view":
            numbers = (
                torch.load(io.BytesIO(body["prediction"].encode("latin-1")), weights_only=True).reshape(-1).tolist()
            )
        else:
            numbers = body["outputs"][0]["data"]
        answers[route] = (200, numbers)
    return answers


def scaled(scale: float) -> dict:
    return {route: (200, [3.0 * scale, 3.5 * scale]) for route in ("fast path", "django view", "v2")}


def cache_hits(url: str) -> float:
    """The node's model cache hits so far (one worker, so /metrics answers that worker's counters)."""
    status, text = request(url, "GET", "/metrics")
    assert status == 200
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            if sample.name == "gridnode_model_cache_hits_total":
                return sample.value
    return 0.0


def warm(url: str, scale: float) -> None:
    """Run the model on `url` until it is served from that process's cache."""
    assert predictions(url) == scaled(scale)
    hits = cache_hits(url)
    assert predictions(url) == scaled(scale)
    assert cache_hits(url) >= hits + 3  # every route found the loaded model


def test_a_model_deleted_through_one_process_is_not_served_by_the_other(node_processes):
    first, second = node_processes(), node_processes()
    serve(first.url, scaled_mlp(2.0))
    warm(second.url, 2.0)

    assert post_json(first.url, "/delete-model", {"model_id": "shared"})[0] == 200

    gone = predictions(second.url)
    assert gone["fast path"] == (404, {"success": False, "status": False, "error": "Model not found."})
    assert gone["django view"] == gone["fast path"]
    assert gone["v2"] == (404, {"error": "Model not found."})
    assert request(second.url, "GET", "/get_model/shared")[0] == 404
    assert request(second.url, "GET", "/v2/models/shared")[0] == 404
    assert request(second.url, "GET", "/models")[1] == {"success": True, "models": []}


def test_a_model_replaced_through_one_process_is_served_new_by_the_other(node_processes):
    first, second = node_processes(), node_processes()
    serve(first.url, scaled_mlp(2.0))
    warm(second.url, 2.0)

    assert post_json(first.url, "/delete-model", {"model_id": "shared"})[0] == 200
    new = scaled_mlp(5.0)  # same id, same architecture, other weights
    serve(first.url, new)

    assert predictions(second.url) == scaled(5.0)
    assert predictions(first.url) == scaled(5.0)
    download = request(second.url, "GET", "/get_model/shared", headers={"Accept": "application/octet-stream"})
    assert download == (200, new)


def test_a_permission_withdrawn_elsewhere_applies_at_once(node_processes):
    first, second = node_processes(), node_processes()
    serve(first.url, scaled_mlp(2.0))
    warm(second.url, 2.0)

    # As the admin's list toggle does, from a third process (this one).
    HostedModel.objects.filter(model_id="shared").update(allow_remote_inference=False)

    refused = predictions(second.url)
    assert refused["fast path"][0] == refused["django view"][0] == refused["v2"][0] == 403
