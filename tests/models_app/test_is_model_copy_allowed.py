"""GET /is_model_copy_allowed/<id>: the owner's download permission, as the seed answers it."""

import pytest

pytestmark = pytest.mark.django_db


def test_it_says_yes_when_downloads_are_allowed(api, serve, mlp_jit):
    serve("open", mlp_jit, allow_download=True)
    for path in ["/is_model_copy_allowed/open", "/is_model_copy_allowed/open/"]:
        response = api.get(path)
        assert response.status_code == 200
        assert response.json() == {"success": True}


def test_it_answers_403_when_downloads_are_not_allowed(api, serve, mlp_jit):
    serve("closed", mlp_jit)
    response = api.get("/is_model_copy_allowed/closed")

    assert response.status_code == 403
    assert response.json() == {"success": False, "error": "You're not allowed to download this model."}


def test_it_answers_404_for_an_unknown_model(api):
    response = api.get("/is_model_copy_allowed/nope")

    assert response.status_code == 404
    assert response.json() == {"success": False, "error": "Model not found."}


def test_it_answers_400_for_an_id_outside_the_rules(api):
    response = api.get("/is_model_copy_allowed/%2E%2E")

    assert response.status_code == 400
    assert response.json()["success"] is False
    assert "'model_id' must be" in response.json()["error"]
