"""DELETE /encrypted-models/<model_id>: the registration goes, and the worker rows nobody else uses."""

import pytest

from smpc_app.models import EncryptedModel, WorkerNode
from tests.api_cases import DeleteCases, PathIdRuleCases, UnknownIdCases
from tests.smpc_app.helpers import ALICE, BOB, CAROL, CRYPTO, EncryptedModelCases, stored_nodes

pytestmark = pytest.mark.django_db


class TestIdCases(EncryptedModelCases, DeleteCases, UnknownIdCases, PathIdRuleCases):
    """Deleting the only registration also takes its node assignments and the worker rows they used."""

    method = "delete"
    path = "/encrypted-models/{id}"
    spellings = ("/encrypted-models/{id}", "/encrypted-models/{id}/")
    effect = "deletes"
    ok_status = 204
    lookup_path = "/encrypted-models/{id}"


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


def test_delete_on_the_collection_is_a_405(api, register):
    register("kept")
    response = api.delete("/encrypted-models")
    assert response.status_code == 405
    assert "error" in response.json()
    assert EncryptedModel.objects.count() == 1
