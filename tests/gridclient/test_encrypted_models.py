"""GridNodeClient.register_encrypted_model and search_encrypted_models."""

import pytest

from gridclient import Conflict, InvalidRequest, ModelExists, ModelNotFound
from smpc_app.models import EncryptedModel

pytestmark = pytest.mark.django_db(transaction=True)

WORKERS = ["http://alice.example:5000", "http://bob.example:5000"]
CRYPTO = "http://crypto.example:5000"


def test_it_registers_and_finds_an_encrypted_model(client):
    registration = client.register_encrypted_model("enc", WORKERS, CRYPTO, description="shared mlp")

    assert registration["model_id"] == "enc"
    assert EncryptedModel.objects.get(model_id="enc").description == "shared mlp"
    workers, providers = client.search_encrypted_models("enc")
    assert (workers, providers) == (WORKERS, [CRYPTO])


def test_it_raises_model_exists_for_a_taken_id(client):
    client.register_encrypted_model("enc", WORKERS, [CRYPTO])

    with pytest.raises(ModelExists) as caught:
        client.register_encrypted_model("enc", WORKERS, [CRYPTO])

    assert isinstance(caught.value, Conflict)
    assert caught.value.status == 409


def test_it_raises_invalid_request_for_too_few_workers(client):
    with pytest.raises(InvalidRequest, match="'workers' needs at least 2"):
        client.register_encrypted_model("enc", WORKERS[:1], CRYPTO)

    assert not EncryptedModel.objects.exists()


def test_it_raises_model_not_found_for_an_unregistered_model(client):
    with pytest.raises(ModelNotFound) as caught:
        client.search_encrypted_models("ghost")

    assert (caught.value.status, caught.value.message) == (404, "Model ID not found!")
