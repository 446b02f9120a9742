"""GET /models (and /models/): every hosted id, oldest first."""

import pytest

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("path", ["/models", "/models/"])
def test_it_lists_model_ids(api, serve, mlp_jit, mlp_plan, path):
    serve("first", mlp_jit)
    serve("second", mlp_plan)

    response = api.get(path)

    assert response.status_code == 200
    assert response.json() == {"success": True, "models": ["first", "second"]}


def test_it_lists_nothing_on_an_empty_node(api):
    response = api.get("/models")
    assert response.json() == {"success": True, "models": []}


def test_it_answers_405_for_delete(api):
    response = api.delete("/models")
    assert response.status_code == 405
    assert "error" in response.json()
