"""GET /datasets: every dataset, filtered by tags with AND semantics, a page at a time."""

import pytest

from datasets_app.models import Dataset

pytestmark = pytest.mark.django_db


def ids(response) -> list[str]:
    return [dataset["id"] for dataset in response.json()["results"]]


@pytest.mark.parametrize("path", ["/datasets", "/datasets/"])
def test_it_lists_every_dataset_oldest_first_with_metadata(api, upload, path):
    upload("first", tags=["#b", "#a"], description="one")
    upload("second")

    response = api.get(path)

    assert response.status_code == 200
    answer = response.json()
    assert (answer["count"], answer["next"], answer["previous"]) == (2, None, None)
    assert ids(response) == ["first", "second"]
    first = answer["results"][0]
    assert (first["tags"], first["description"], first["shape"], first["dtype"]) == (
        ["#a", "#b"],
        "one",
        [2, 2],
        "float32",
    )
    assert "data" not in first


def test_an_empty_node_lists_nothing(api):
    assert api.get("/datasets").json() == {"count": 0, "next": None, "previous": None, "results": []}


def test_tag_filters_keep_datasets_carrying_every_tag(api, upload):
    upload("a-b", tags=["#a", "#b"])
    upload("a-b-c", tags=["#a", "#b", "#c"])
    upload("a", tags=["#a"])
    upload("c", tags=["#c"])

    assert ids(api.get("/datasets", {"tag": "#a"})) == ["a-b", "a-b-c", "a"]
    assert ids(api.get("/datasets", {"tag": ["#a", "#b"]})) == ["a-b", "a-b-c"]
    assert ids(api.get("/datasets", {"tag": ["#a", "#b", "#c"]})) == ["a-b-c"]
    assert ids(api.get("/datasets", {"tag": ["#a", "#a", "#c"]})) == ["a-b-c"]
    assert ids(api.get("/datasets", {"tag": ["#a", "#unknown"]})) == []
    assert api.get("/datasets", {"tag": ["#b", "#c"]}).json()["count"] == 1


def test_tag_filters_match_exactly_and_take_unicode(api, upload):
    upload("jp", tags=["#日本語", "#MNIST"])

    assert ids(api.get("/datasets", {"tag": "#日本語"})) == ["jp"]
    assert ids(api.get("/datasets", {"tag": "#mnist"})) == []
    assert ids(api.get("/datasets", {"tag": "#日本"})) == []


def test_it_pages_through_the_datasets(api, upload):
    for number in range(5):
        upload(f"ds-{number}", tags=["#paged"])

    first = api.get("/datasets", {"page_size": 2}).json()
    assert first["count"] == 5
    assert [d["id"] for d in first["results"]] == ["ds-0", "ds-1"]
    assert first["previous"] is None
    second = api.get(first["next"]).json()
    assert [d["id"] for d in second["results"]] == ["ds-2", "ds-3"]
    last = api.get("/datasets", {"page_size": 2, "page": 3, "tag": "#paged"}).json()
    assert [d["id"] for d in last["results"]] == ["ds-4"]
    assert last["next"] is None
    assert "tag=%23paged" in last["previous"]


def test_the_default_page_holds_100(api):
    # Rows made directly: listing reads metadata only, never the tensor files.
    Dataset.objects.bulk_create(
        Dataset(dataset_id=f"ds-{n:03d}", shape=[1], dtype="float32", data="x.pt", size=1, sha256="0" * 64)
        for n in range(101)
    )

    first = api.get("/datasets").json()
    assert (first["count"], len(first["results"])) == (101, 100)
    assert [d["id"] for d in api.get(first["next"]).json()["results"]] == ["ds-100"]
    assert len(api.get("/datasets", {"page_size": 5000}).json()["results"]) == 101


def test_a_page_past_the_end_is_a_json_404(api, upload):
    upload("only")

    response = api.get("/datasets", {"page": 9})
    assert response.status_code == 404
    assert response.json() == {"error": "Invalid page."}
    assert api.get("/datasets", {"page": "x"}).status_code == 404


def test_listing_takes_a_fixed_number_of_queries(api, upload, django_assert_max_num_queries):
    for number in range(30):
        upload(f"ds-{number}", tags=[f"#t{number}", "#all"])

    with django_assert_max_num_queries(3):
        response = api.get("/datasets", {"tag": "#all"})
    assert response.json()["count"] == 30
