"""DELETE /encrypted-models/<model_id>: the registration goes, and the worker rows nobody else uses."""

import pytest

from smpc_app.models import EncryptedModel, NodeAssignment, WorkerNode
from tests.smpc_app.helpers import ALICE, BOB, CAROL, CRYPTO, stored_nodes

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("path", ["/encrypted-models/gone", "/encrypted-models/gone/"])
def test_it_deletes_the_registration_and_its_unused_nodes(api, register, path):
    register("gone", workers=[ALICE, BOB], crypto_provider=[CRYPTO])

    response = api.delete(path)

    assert response.status_code == 204
    assert response.content == b""
    assert not EncryptedModel.objects.exists()
    assert not NodeAssignment.objects.exists()
    assert not WorkerNode.objects.exists()


def test_it_keeps_the_nodes_other_registrations_use(api, register):
    register("gone", workers=[ALICE, BOB], crypto_provider=[CRYPTO])
    register("kept", workers=[CAROL, ALICE], crypto_provider=[BOB])
    WorkerNode.objects.filter(url=ALICE).update(node_id="alice")

    response = api.delete("/encrypted-models/gone")

    assert response.status_code == 204
    assert list(EncryptedModel.objects.values_list("model_id", flat=True)) == ["kept"]
    assert stored_nodes("kept") == {"workers": [CAROL, ALICE], "crypto_provider": [BOB]}
    # Alice and Bob serve "kept" (Bob now as its crypto provider); only the crypto node was unused.
    assert sorted(WorkerNode.objects.values_list("url", flat=True)) == sorted([ALICE, BOB, CAROL])
    assert WorkerNode.objects.get(url=ALICE).node_id == "alice"
    assert api.post("/search-encrypted-models", {"model_id": "kept"}, format="json").status_code == 200


def test_a_model_registered_again_gets_its_nodes_again(api, register):
    register("again", workers=[ALICE, BOB], crypto_provider=[CRYPTO])
    assert api.delete("/encrypted-models/again").status_code == 204

    created = register("again", workers=[BOB, CAROL], crypto_provider=[ALICE])

    assert (created["workers"], created["crypto_provider"]) == ([BOB, CAROL], [ALICE])
    assert stored_nodes("again") == {"workers": [BOB, CAROL], "crypto_provider": [ALICE]}
    assert WorkerNode.objects.count() == 3


def test_it_answers_404_for_an_unknown_model(api, register):
    register("kept")

    response = api.delete("/encrypted-models/missing")

    assert response.status_code == 404
    assert response.json() == {"error": "Encrypted model not found."}
    assert EncryptedModel.objects.count() == 1
    assert WorkerNode.objects.count() == 3


def test_a_second_delete_answers_404(api, register):
    register("once")
    assert api.delete("/encrypted-models/once").status_code == 204
    response = api.delete("/encrypted-models/once")
    assert response.status_code == 404
    assert response.json() == {"error": "Encrypted model not found."}


def test_it_answers_400_for_an_id_outside_the_rules(api, register):
    register("kept")
    response = api.delete("/encrypted-models/..")
    assert response.status_code == 400
    assert "'model_id'" in response.json()["error"]
    assert EncryptedModel.objects.count() == 1


def test_delete_on_the_collection_is_a_405(api, register):
    register("kept")
    response = api.delete("/encrypted-models")
    assert response.status_code == 405
    assert "error" in response.json()
    assert EncryptedModel.objects.count() == 1
