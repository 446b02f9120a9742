"""GET /encrypted-models/<model_id> (with or without a trailing slash): one registration."""

import pytest

from smpc_app.models import EncryptedModel
from tests.api_cases import PathIdRuleCases, UnknownIdCases
from tests.smpc_app.helpers import ALICE, BOB, CAROL, CRYPTO, EncryptedModelCases

pytestmark = pytest.mark.django_db


class TestIdCases(EncryptedModelCases, UnknownIdCases, PathIdRuleCases):
    path = "/encrypted-models/{id}"
    id_in_answer = "model_id"


@pytest.mark.parametrize("path", ["/encrypted-models/mnist:v2@lab", "/encrypted-models/mnist:v2@lab/"])
def test_it_shows_a_registration(api, register, path):
    created = register("mnist:v2@lab", workers=[CAROL, ALICE], crypto_provider=[CRYPTO], description="d")

    response = api.get(path)

    assert response.status_code == 200
    assert response.json() == created
    assert response.json()["workers"] == [CAROL, ALICE]
    assert EncryptedModel.objects.get().model_id == "mnist:v2@lab"


def test_it_answers_405_for_post_on_a_registration(api, register):
    register("known", workers=[ALICE, BOB])
    response = api.post("/encrypted-models/known", {}, format="json")
    assert response.status_code == 405
    assert "error" in response.json()
    assert EncryptedModel.objects.count() == 1
