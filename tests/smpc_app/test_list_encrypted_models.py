"""GET /encrypted-models (and /encrypted-models/): every registration, oldest first, nodes in order."""

import pytest

from tests.smpc_app.helpers import ALICE, BOB, CAROL, CRYPTO

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("path", ["/encrypted-models", "/encrypted-models/"])
def test_it_lists_every_registration_oldest_first(api, register, path):
    first = register("first", workers=[BOB, ALICE], crypto_provider=[CRYPTO], description="one")
    second = register("second", workers=[ALICE, CAROL], crypto_provider=[BOB])

    response = api.get(path)

    assert response.status_code == 200
    assert response.json() == {"encrypted_models": [first, second]}
    assert response.json()["encrypted_models"][0]["workers"] == [BOB, ALICE]


def test_it_lists_nothing_on_an_empty_node(api):
    response = api.get("/encrypted-models")
    assert response.status_code == 200
    assert response.json() == {"encrypted_models": []}


def test_it_reads_in_a_fixed_number_of_queries(api, register, django_assert_max_num_queries):
    for index in range(5):
        register(f"m{index}")
    with django_assert_max_num_queries(2):
        response = api.get("/encrypted-models")
    assert len(response.json()["encrypted_models"]) == 5


def test_it_answers_405_for_patch(api):
    response = api.patch("/encrypted-models", {}, format="json")
    assert response.status_code == 405
    assert "error" in response.json()
