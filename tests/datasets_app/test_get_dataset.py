"""GET /datasets/<id>: a dataset's metadata, never its tensor; JSON 404 and 400 otherwise."""

import pytest

from tests.api_cases import PathIdRuleCases, UnknownIdCases
from tests.datasets_app.helpers import DatasetCases

pytestmark = pytest.mark.django_db


class TestIdCases(DatasetCases, UnknownIdCases, PathIdRuleCases):
    path = "/datasets/{id}"
    id_in_answer = "id"


@pytest.mark.parametrize("path", ["/datasets/meta", "/datasets/meta/"])
def test_it_answers_the_metadata(api, upload, path):
    created = upload("meta", tags=["#z", "#a"], description="described", allow_download=True)

    response = api.get(path)

    assert response.status_code == 200
    answer = response.json()
    assert answer == created
    assert {key: answer[key] for key in ["id", "tags", "description", "shape", "dtype", "allow_download"]} == {
        "id": "meta",
        "tags": ["#a", "#z"],
        "description": "described",
        "shape": [2, 2],
        "dtype": "float32",
        "allow_download": True,
    }
    assert "data" not in answer


def test_an_id_named_data_is_still_a_dataset(api, upload):
    upload("data")
    assert api.get("/datasets/data").json()["id"] == "data"


def test_a_deeper_path_is_a_json_404(api, upload):
    upload("x")
    response = api.get("/datasets/x/data/more")
    assert response.status_code == 404
    assert "error" in response.json()
