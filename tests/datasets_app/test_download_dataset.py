"""GET /datasets/<id>/data: the tensor as encoded torch.save bytes or nested lists, only when allowed."""

import base64
import io

import pytest
import torch
from django.core.files.storage import default_storage

from datasets_app.models import Dataset
from tests.api_cases import PathIdRuleCases, UnknownIdCases
from tests.datasets_app.helpers import DatasetCases, saved

pytestmark = pytest.mark.django_db


class TestIdCases(DatasetCases, UnknownIdCases, PathIdRuleCases):
    path = "/datasets/{id}/data"


def upload_tensor(api, dataset_id: str, tensor: torch.Tensor, *, allow_download: bool = True) -> bytes:
    raw = saved(tensor)
    body = {"id": dataset_id, "encoding": "base64", "data": base64.b64encode(raw).decode()}
    response = api.post("/datasets", {**body, "allow_download": allow_download}, format="json")
    assert response.status_code == 201
    return raw


@pytest.mark.parametrize("path", ["/datasets/t/data", "/datasets/t/data/"])
def test_it_answers_the_stored_bytes_as_latin1_text(api, path):
    tensor = torch.arange(6, dtype=torch.int16).reshape(2, 3)
    raw = upload_tensor(api, "t", tensor)

    response = api.get(path)

    assert response.status_code == 200
    answer = response.json()
    assert answer["encoding"] == "ISO-8859-1"
    assert answer["data"].encode("latin-1") == raw
    assert torch.equal(torch.load(io.BytesIO(answer["data"].encode("latin-1")), weights_only=True), tensor)


def test_it_answers_base64_on_request(api):
    raw = upload_tensor(api, "t", torch.rand(3))

    answer = api.get("/datasets/t/data", {"encoding": "base64"}).json()

    assert answer["encoding"] == "base64"
    assert base64.b64decode(answer["data"]) == raw


def test_format_json_answers_nested_lists(api):
    tensor = torch.tensor([[1.5, -2.0], [0.25, 4.0]], dtype=torch.float64)
    upload_tensor(api, "t", tensor)

    response = api.get("/datasets/t/data", {"format": "json"})

    assert response.status_code == 200
    assert response.json() == {"shape": [2, 2], "dtype": "float64", "data": [[1.5, -2.0], [0.25, 4.0]]}


def test_format_json_keeps_integers_and_scalars(api):
    upload_tensor(api, "ints", torch.tensor([1, 2, 3]))
    upload_tensor(api, "scalar", torch.tensor(7.5))

    assert api.get("/datasets/ints/data?format=json").json() == {"shape": [3], "dtype": "int64", "data": [1, 2, 3]}
    assert api.get("/datasets/scalar/data?format=json").json() == {"shape": [], "dtype": "float32", "data": 7.5}


def test_format_json_turns_non_finite_numbers_into_null(api):
    upload_tensor(api, "nan", torch.tensor([1.0, float("nan"), float("inf")]))
    assert api.get("/datasets/nan/data?format=json").json()["data"] == [1.0, None, None]


def test_a_complex_tensor_has_no_json_form(api):
    upload_tensor(api, "c", torch.tensor([1 + 2j]))

    response = api.get("/datasets/c/data?format=json")
    assert response.status_code == 400
    assert "complex" in response.json()["error"]
    assert api.get("/datasets/c/data").status_code == 200


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"format": "csv"}, "'format' must be json"),
        ({"encoding": "rot13"}, "Unknown encoding"),
        ({"encoding": "json"}, "Unknown encoding"),
    ],
)
def test_unknown_formats_and_encodings_are_400(api, query, message):
    upload_tensor(api, "t", torch.ones(1))
    response = api.get("/datasets/t/data", query)
    assert response.status_code == 400
    assert message in response.json()["error"]


def test_it_answers_403_unless_downloads_are_allowed(api):
    upload_tensor(api, "private", torch.ones(2), allow_download=False)

    for query in [{}, {"format": "json"}, {"encoding": "base64"}]:
        response = api.get("/datasets/private/data", query)
        assert response.status_code == 403
        assert response.json() == {"error": "You're not allowed to download this dataset."}
    assert api.get("/datasets/private").status_code == 200


def test_a_dataset_uploaded_without_the_flag_is_private(api, upload):
    upload("default")
    assert api.get("/datasets/default/data").status_code == 403


def test_a_file_gone_from_storage_is_404_not_500(api):
    upload_tensor(api, "gone", torch.ones(2))
    default_storage.delete(Dataset.objects.get(dataset_id="gone").data.name)

    assert api.get("/datasets/gone/data").status_code == 404
    assert api.get("/datasets/gone/data?format=json").status_code == 404


def test_only_get_is_allowed(api):
    upload_tensor(api, "t", torch.ones(1))
    response = api.post("/datasets/t/data", {}, format="json")
    assert response.status_code == 405
    assert "error" in response.json()
