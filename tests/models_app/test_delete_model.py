"""POST /delete-model (and /delete_model/): the row and the archive go; unknown ids are 404."""

import pytest

from models_app.models import HostedModel
from tests.api_cases import BodyIdRuleCases, DeleteCases, RequiredIdCases, UnknownIdCases, with_id
from tests.models_app.helpers import HostedModelCases

pytestmark = pytest.mark.django_db


class TestIdCases(HostedModelCases, DeleteCases, UnknownIdCases, BodyIdRuleCases, RequiredIdCases):
    method = "post"
    path = "/delete-model"
    spellings = ("/delete-model", "/delete-model/", "/delete_model/", "/delete_model")
    not_found = "Model not found!"
    effect = "deletes"
    deleted_answer = {"success": True, "message": "Model deleted with success!"}
    lookup_path = "/get_model/{id}"

    def body(self, object_id):
        return with_id({}, "model_id", object_id)


def test_it_accepts_a_form_body(api, serve, mlp_jit):
    serve("gone", mlp_jit)
    response = api.post("/delete-model", "model_id=gone", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 200
    assert HostedModel.objects.count() == 0
