"""GridNodeClient.models, delete_model and is_model_copy_allowed."""

import pytest

from gridclient import ModelNotFound, NotFound
from models_app.models import HostedModel
from tests.conftest import small_mlp

pytestmark = pytest.mark.django_db(transaction=True)


def test_it_lists_models_oldest_first(client):
    assert client.models() == []
    client.serve_model(small_mlp(), "first")
    client.serve_model(small_mlp(), "second")

    assert client.models() == ["first", "second"]


def test_it_deletes_a_model(client, mlp):
    client.delete_model("mlp")

    assert client.models() == []
    assert not HostedModel.objects.exists()


def test_it_raises_model_not_found_when_deleting_an_unknown_model(client):
    with pytest.raises(ModelNotFound) as caught:
        client.delete_model("ghost")

    assert isinstance(caught.value, NotFound)
    assert (caught.value.status, caught.value.message) == (404, "Model not found!")


def test_it_answers_whether_a_copy_is_allowed(client):
    client.serve_model(small_mlp(), "open", allow_download=True)
    client.serve_model(small_mlp(), "closed")

    assert client.is_model_copy_allowed("open") is True
    assert client.is_model_copy_allowed("closed") is False


def test_it_raises_model_not_found_for_the_copy_check_of_an_unknown_model(client):
    with pytest.raises(ModelNotFound, match="Model not found."):
        client.is_model_copy_allowed("ghost")


def test_it_escapes_ids_in_paths(client):
    client.serve_model(small_mlp(), "owner@lab:v1.2", allow_download=True)

    assert client.is_model_copy_allowed("owner@lab:v1.2") is True
    # A slash stays inside the one path segment: no other route (here /models) answers for it.
    with pytest.raises(ModelNotFound):
        client.is_model_copy_allowed("../models")
