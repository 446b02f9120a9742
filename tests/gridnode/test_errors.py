"""Every error is JSON with an "error" key: unknown paths, wrong methods, crashes."""

import pytest
from django.test import RequestFactory

from gridnode.errors import server_error

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("path", ["/nothing-here", "/get_model/a/b/c", "/model/"])
def test_unknown_paths_are_json_404s(api, path):
    response = api.get(path)
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"error": "Not found."}


def test_a_crash_is_a_json_500(api, monkeypatch):
    from models_app import services

    def explode():
        raise RuntimeError("secret internals")

    monkeypatch.setattr(services, "model_ids", explode)
    api.raise_request_exception = False
    response = api.get("/models")

    assert response.status_code == 500
    assert response.json() == {"error": "Internal server error."}


def test_the_500_handler_answers_json():
    response = server_error(RequestFactory().get("/"))
    assert response.status_code == 500
    assert response["Content-Type"] == "application/json"


def test_wrong_methods_are_json_405s_with_allow(api):
    response = api.get("/delete-model")
    assert response.status_code == 405
    assert response.json() == {"success": False, "error": 'Method "GET" not allowed.'}
    assert "POST" in response["Allow"]


def test_a_csrf_failure_is_json():
    from django.test import Client

    response = Client(enforce_csrf_checks=True).post("/admin/login/", {"username": "x", "password": "y"})
    assert response.status_code == 403
    assert "CSRF" in response.json()["error"]


def test_unknown_admin_pages_are_json_404s(admin_client):
    response = admin_client.get("/admin/no-such-app/")
    assert response.status_code == 404
    assert response.json() == {"error": "Not found."}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/models", {"success": False, "error": "Model ids are too long."}),
        ("/datasets", {"error": "Model ids are too long."}),
    ],
)
def test_a_row_refused_by_its_own_validators_is_a_400_in_the_views_shape(api, monkeypatch, path, expected):
    """full_clean's ValidationError, wherever a view meets it, is answered by the one exception handler,
    with the keys the view's contract adds (success: false on the model endpoints), never a 500."""
    from django.core.exceptions import ValidationError

    from datasets_app import services as datasets
    from models_app import services as models

    def refuse(**kwargs):
        raise ValidationError("Model ids are too long.")

    monkeypatch.setattr(models, "model_ids", refuse)
    monkeypatch.setattr(datasets, "dataset_list", refuse)

    response = api.get(path)

    assert response.status_code == 400
    assert response.json() == expected
