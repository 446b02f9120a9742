"""GridNodeClient.upload_dataset, dataset_tags and search."""

import pytest
import torch

from datasets_app.models import Dataset
from gridclient import DatasetExists, InvalidRequest

pytestmark = pytest.mark.django_db(transaction=True)


def test_it_uploads_a_tensor_with_its_tags_and_flags(client):
    data = torch.arange(12, dtype=torch.int16).reshape(3, 4)

    metadata = client.upload_dataset(
        data, tags=["#mnist", "#train"], description="digits", allow_download=True, dataset_id="digits"
    )

    assert metadata["id"] == "digits"
    assert (metadata["shape"], metadata["dtype"]) == ([3, 4], "int16")
    stored = Dataset.objects.get(dataset_id="digits")
    assert (stored.description, stored.allow_download) == ("digits", True)
    assert sorted(stored.tag_names()) == ["#mnist", "#train"]


def test_it_uploads_a_torch_save_file_and_lets_the_node_name_it(client, tmp_path):
    path = tmp_path / "data.pt"
    torch.save(torch.rand(5, 2), path)

    metadata = client.upload_dataset(path, tags="#single")

    assert metadata["tags"] == ["#single"]
    assert metadata["allow_download"] is False
    assert Dataset.objects.get(dataset_id=metadata["id"]).size == path.stat().st_size


def test_it_raises_dataset_exists_for_a_taken_id(client):
    client.upload_dataset(torch.rand(2), dataset_id="d1")

    with pytest.raises(DatasetExists) as caught:
        client.upload_dataset(torch.rand(2), dataset_id="d1")

    assert (caught.value.status, caught.value.message) == (409, "Dataset with id: d1 already exists.")


def test_it_raises_invalid_request_for_a_file_that_is_not_a_tensor(client, tmp_path):
    path = tmp_path / "junk.pt"
    path.write_bytes(b"junk")

    with pytest.raises(InvalidRequest, match="'data' is not a tensor"):
        client.upload_dataset(path)

    assert not Dataset.objects.exists()


def test_it_refuses_other_objects(client):
    with pytest.raises(TypeError, match="not list"):
        client.upload_dataset([1, 2, 3])


def test_it_lists_tags_sorted_once_each(client):
    assert client.dataset_tags() == []
    client.upload_dataset(torch.rand(2), tags=["b", "a"])
    client.upload_dataset(torch.rand(2), tags=["a", "c"])

    assert client.dataset_tags() == ["a", "b", "c"]


def test_it_searches_for_a_dataset_matching_every_term(client):
    client.upload_dataset(torch.rand(2), tags=["#x", "#y"], description="hand-written digits")

    assert client.search("#x") is True
    assert client.search("#x", "#y", "digits") is True
    assert client.search("#x", "#z") is False


def test_it_raises_invalid_request_for_an_empty_search(client):
    with pytest.raises(InvalidRequest, match="Invalid payload format"):
        client.search()
