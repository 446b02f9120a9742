"""A failing inference runs once, on every path: the WSGI fast path hands Django its outcome, not the request.

Every run of a model is one lookup in an inference process's cache, which the process reports with its
answer (`pool_cache` counts them in this process), so the lookups a request caused are the runs it caused.
"""

import json

import pytest
import torch

from models_app.executor import pool_cache
from tests.conftest import jit_bytes
from tests.reliability.helpers import request

pytestmark = pytest.mark.django_db(transaction=True)


class Fails(torch.nn.Module):
    """Works a little, then raises whatever the caller sent (a model whose side effects would double)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        for _ in range(100):
            y = torch.tanh(y @ torch.ones(4, 4))
        if bool(y.sum() > 0):
            raise RuntimeError("the model refuses positive data")
        return y


def _runs() -> int:
    return pool_cache.hits + pool_cache.misses


@pytest.fixture
def failing(api):
    archive = jit_bytes(Fails())
    body = {"model_id": "fails", "encoding": "ISO-8859-1", "model": archive.decode("latin-1")}
    assert api.post("/serve-model", {**body, "allow_remote_inference": True}, format="json").status_code == 200


@pytest.mark.parametrize("path", ["/model/fails", "/models/fails"])
def test_a_failing_inference_through_the_fast_path_runs_once_and_answers_djangos_error(live_node, failing, path):
    before = _runs()

    status, body = request(
        live_node,
        "POST",
        path,
        json.dumps({"data": [[1.0, 2.0, 3.0, 4.0]]}).encode(),
        {"Content-Type": "application/json"},
    )

    assert status == 400
    assert body == {
        "success": False,
        "status": False,
        "error": "The data does not fit the model: builtins.RuntimeError: the model refuses positive data",
    }
    assert _runs() == before + 1


def test_a_succeeding_inference_runs_once(live_node, failing):
    before = _runs()

    status, body = request(
        live_node,
        "POST",
        "/model/fails",
        json.dumps({"data": [[-1.0, -2.0, -3.0, -4.0]]}).encode(),
        {"Content-Type": "application/json"},
    )

    assert status == 200
    assert body["success"] is True
    assert _runs() == before + 1


@pytest.mark.parametrize(
    ("path", "body", "headers"),
    [
        ("/model/fails", {"data": [[1.0, 2.0, 3.0, 4.0]]}, {"Authorization": "Bearer not-a-token"}),  # Django's path
        ("/model/fails", {"data": [[1.0, 2.0, 3.0, 4.0]]}, {"Accept": "application/json;q=0.9"}),  # Django's path
        (
            "/v2/models/fails/infer",
            {"inputs": [{"name": "input__0", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]},
            {},
        ),
    ],
)
def test_a_failing_inference_through_django_runs_once(live_node, failing, path, body, headers):
    before = _runs()

    status, answer = request(
        live_node, "POST", path, json.dumps(body).encode(), {"Content-Type": "application/json", **headers}
    )

    assert status == 400
    assert "the model refuses positive data" in answer["error"]
    assert _runs() == before + 1
