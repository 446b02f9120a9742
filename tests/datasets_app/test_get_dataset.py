"""GET /datasets/<id>: a dataset's metadata, never its tensor; JSON 404 and 400 otherwise."""

import pytest

pytestmark = pytest.mark.django_db


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


def test_ids_with_every_allowed_character_work_in_the_path(api, upload):
    upload("user@node:set_1.v-2")
    assert api.get("/datasets/user@node:set_1.v-2").json()["id"] == "user@node:set_1.v-2"


def test_an_id_named_data_is_still_a_dataset(api, upload):
    upload("data")
    assert api.get("/datasets/data").json()["id"] == "data"


def test_an_unknown_id_is_a_json_404(api):
    response = api.get("/datasets/missing")
    assert response.status_code == 404
    assert response.json() == {"error": "Dataset not found."}


def test_an_id_breaking_the_rules_is_a_400(api):
    response = api.get("/datasets/-bad")
    assert response.status_code == 400
    assert "'id' must be" in response.json()["error"]


def test_a_deeper_path_is_a_json_404(api, upload):
    upload("x")
    response = api.get("/datasets/x/data/more")
    assert response.status_code == 404
    assert "error" in response.json()
