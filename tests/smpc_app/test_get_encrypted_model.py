"""GET /encrypted-models/<model_id> (with or without a trailing slash): one registration."""

import pytest

from smpc_app.models import EncryptedModel
from tests.smpc_app.helpers import ALICE, BOB, CAROL, CRYPTO

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("path", ["/encrypted-models/mnist:v2@lab", "/encrypted-models/mnist:v2@lab/"])
def test_it_shows_a_registration(api, register, path):
    created = register("mnist:v2@lab", workers=[CAROL, ALICE], crypto_provider=[CRYPTO], description="d")

    response = api.get(path)

    assert response.status_code == 200
    assert response.json() == created
    assert response.json()["workers"] == [CAROL, ALICE]
    assert EncryptedModel.objects.get().model_id == "mnist:v2@lab"


def test_it_answers_404_for_an_unknown_model(api, register):
    register("known")
    response = api.get("/encrypted-models/unknown")
    assert response.status_code == 404
    assert response.json() == {"error": "Encrypted model not found."}


def test_it_answers_400_for_an_id_outside_the_rules(api):
    response = api.get("/encrypted-models/bad!id")
    assert response.status_code == 400
    assert "'model_id'" in response.json()["error"]


def test_it_answers_405_for_post_on_a_registration(api, register):
    register("known", workers=[ALICE, BOB])
    response = api.post("/encrypted-models/known", {}, format="json")
    assert response.status_code == 405
    assert "error" in response.json()
    assert EncryptedModel.objects.count() == 1
