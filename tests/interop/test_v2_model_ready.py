"""GET /v2/models/<id>/ready: 200 once the model loads, under the inference permission."""

import pytest

from models_app.executor import pool_cache

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("path", ["/v2/models/{}/ready", "/v2/models/{}/ready/", "/v2/models/{}/versions/1/ready"])
def test_it_is_200_and_loads_the_model(api, mlp_models, path):
    response = api.get(path.format("mlp-plan"))
    misses = pool_cache.misses

    assert response.status_code == 200
    assert response.json() == {"name": "mlp-plan", "ready": True}
    inference = {"inputs": [{"name": "input__0", "shape": [2, 4], "datatype": "FP32", "data": [0.0] * 8}]}
    assert api.post("/v2/models/mlp-plan/infer", inference, format="json").status_code == 200
    assert pool_cache.misses == misses  # the inference process that loaded it answered the inference


def test_it_is_404_for_an_unknown_model(api):
    response = api.get("/v2/models/nobody/ready")

    assert response.status_code == 404
    assert response.json() == {"error": "Model not found."}


def test_it_is_403_for_a_private_model(api, serve, mlp_jit):
    serve("private", mlp_jit)
    response = api.get("/v2/models/private/ready")

    assert response.status_code == 403
    assert "error" in response.json()
