"""GET /is_model_copy_allowed/<id>: the owner's download permission, as the seed answers it."""

import pytest

from tests.api_cases import PathIdRuleCases, UnknownIdCases
from tests.models_app.helpers import HostedModelCases

pytestmark = pytest.mark.django_db


class TestIdCases(HostedModelCases, UnknownIdCases, PathIdRuleCases):
    path = "/is_model_copy_allowed/{id}"


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
