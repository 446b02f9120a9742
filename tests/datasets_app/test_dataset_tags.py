"""GET /dataset-tags: a bare, sorted JSON array of the tags that datasets carry."""

import pytest

from datasets_app.models import Tag

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("path", ["/dataset-tags", "/dataset-tags/"])
def test_it_answers_every_tag_once_sorted(api, upload, path):
    upload("one", tags=["#mnist", "#train", "#digits"])
    upload("two", tags=["#mnist", "#test"])

    response = api.get(path)

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json() == ["#digits", "#mnist", "#test", "#train"]


def test_an_empty_node_answers_an_empty_array(api):
    assert api.get("/dataset-tags").json() == []


def test_the_order_is_code_point_order_whatever_the_collation(api, upload):
    tags = ["b", "B", "a", "Z", "é", "É", "_", "#z", "日本", "\U0001f600", "a b"]
    upload("mixed", tags=tags)
    assert api.get("/dataset-tags").json() == sorted(tags)


def test_tags_of_deleted_datasets_disappear(api, upload):
    upload("one", tags=["#kept", "#gone"])
    upload("two", tags=["#kept"])
    Tag.objects.create(name="#never-used")

    assert api.delete("/datasets/one").status_code == 204

    assert api.get("/dataset-tags").json() == ["#kept"]


def test_only_get_is_allowed(api):
    response = api.post("/dataset-tags", {}, format="json")
    assert response.status_code == 405
    assert response.json()["error"]
