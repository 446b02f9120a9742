"""POST /search: AND over terms, each matching a tag, the id or part of the description; one 400 for
every malformed body."""

import pytest
from django.db import connection

pytestmark = pytest.mark.django_db

INVALID = {"error": "Invalid payload format"}


def search(api, *terms) -> bool:
    response = api.post("/search", {"query": list(terms)}, format="json")
    assert response.status_code == 200, response.content
    return response.json()["content"]


@pytest.fixture
def node(upload):
    upload("mnist-train", tags=["#mnist", "#train", "#digits"], description="Handwritten digits, 60k images")
    upload("mnist-test", tags=["#mnist", "#test"], description="Handwritten digits for testing")
    upload("cifar", tags=["#cifar", "#train"], description="Tiny colour images: 100% real")


@pytest.mark.parametrize("path", ["/search", "/search/"])
def test_it_answers_content_true_for_a_tag_on_the_node(api, node, path):
    response = api.post(path, {"query": ["#mnist"]}, format="json")

    assert response.status_code == 200
    assert response.json() == {"content": True}


def test_every_term_must_match_the_same_dataset(api, node):
    assert search(api, "#mnist", "#train") is True
    assert search(api, "#mnist", "#test") is True
    assert search(api, "#cifar", "#train") is True
    # Each tag is on the node, but no one dataset carries both.
    assert search(api, "#cifar", "#mnist") is False
    assert search(api, "#test", "#digits") is False
    assert search(api, "#mnist", "#train", "#digits") is True
    assert search(api, "#mnist", "#train", "#digits", "#test") is False


def test_an_unknown_tag_is_false(api, node):
    assert search(api, "#imagenet") is False
    assert search(api, "#mnist", "#imagenet") is False


def test_a_term_matches_the_dataset_id(api, node):
    assert search(api, "cifar") is True
    assert search(api, "mnist-test", "#test") is True
    assert search(api, "mnist-test", "#train") is False


def test_a_term_matches_part_of_the_description(api, node):
    assert search(api, "Handwritten") is True
    assert search(api, "60k") is True
    assert search(api, "colour images", "#cifar") is True
    assert search(api, "testing", "#train") is False
    assert search(api, "images", "#train") is True


def test_description_matches_are_case_sensitive_on_every_database(api, node):
    assert search(api, "handwritten") is False
    assert search(api, "HANDWRITTEN") is False


def test_like_wildcards_in_terms_are_literal(api, node):
    assert search(api, "100%") is True
    assert search(api, "%") is True
    assert search(api, "Tiny_colour") is False
    assert search(api, "digits%images") is False
    assert search(api, "_") is False


def test_tags_match_whole_not_in_part(api, upload):
    upload("x", tags=["#mnist-extended"])
    assert search(api, "#mnist") is False
    assert search(api, "#mnist-extended") is True


def test_unicode_terms_match_unicode_tags_and_descriptions(api, upload):
    upload("jp", tags=["#日本語", "#😀"], description="Données en français")
    assert search(api, "#日本語") is True
    assert search(api, "#😀", "#日本語") is True
    assert search(api, "#日本") is False
    assert search(api, "en français") is True


def test_an_empty_node_has_nothing(api):
    assert search(api, "#anything") is False


def test_repeated_terms_count_once(api, node):
    assert search(api, "#cifar", "#cifar", "#cifar") is True


def test_an_empty_term_is_part_of_every_description(api, node):
    assert search(api, "") is True
    assert search(api, "", "#cifar") is True


def test_terms_that_no_stored_text_can_hold_are_false(api, node):
    assert search(api, "#mnist\x00") is False
    # A lone surrogate arrives as a JSON escape; Python reads it, no database could store it.
    response = api.post("/search", '{"query": ["#mnist", "\\ud800"]}', content_type="application/json")
    assert response.json() == {"content": False}


def test_a_body_with_no_content_type_is_read_as_json(api, node):
    # What grid gateways sent: requests.post(url, data=json.dumps({"query": [...]})).
    response = api.generic("POST", "/search", '{"query": ["#mnist"]}')
    assert response.status_code == 200
    assert response.json() == {"content": True}
    response = api.post("/search", '{"query": ["#cifar"]}', content_type="text/plain")
    assert response.json() == {"content": True}


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        "{",
        '{"query": ["#a"]',
        "",
        '"query"',
        "42",
        "3.5",
        "true",
        "null",
        '["#mnist"]',
        "[]",
        "{}",
        '{"terms": ["#mnist"]}',
        '{"query": null}',
        '{"query": "#mnist"}',
        '{"query": []}',
        '{"query": [1]}',
        '{"query": ["#mnist", 2]}',
        '{"query": [["#mnist"]]}',
        '{"query": [null]}',
        '{"query": {"#mnist": true}}',
        "[" * 100_000,
    ],
)
def test_every_malformed_body_is_the_one_400(api, node, body):
    response = api.post("/search", body, content_type="application/json")

    assert response.status_code == 400
    assert response.json() == INVALID


def test_a_body_in_another_encoding_than_utf8_is_refused(api, node):
    response = api.post("/search", b'{"query": ["\xff"]}', content_type="application/json")
    assert response.status_code == 400
    assert response.json() == INVALID


def test_form_bodies_are_not_json(api, node):
    response = api.post("/search", "query=%23mnist", content_type="application/x-www-form-urlencoded")
    assert response.json() == INVALID
    response = api.post("/search", {"query": "#mnist"}, format="multipart")
    assert response.json() == INVALID


def test_too_many_terms_is_a_400(api, node):
    response = api.post("/search", {"query": [f"#t{n}" for n in range(101)]}, format="json")
    assert response.status_code == 400
    assert response.json() == {"error": "A search takes at most 100 distinct terms."}
    assert search(api, *(["#mnist"] * 500)) is True


def test_it_is_one_query(api, node, django_assert_num_queries):
    with django_assert_num_queries(1):
        assert search(api, "#mnist", "#train", "digits", "mnist-train") is True


def test_only_post_is_allowed(api):
    response = api.get("/search")
    assert response.status_code == 405
    assert "error" in response.json()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the trigram index exists on PostgreSQL only")
def test_descriptions_have_a_trigram_index_on_postgresql():
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexdef FROM pg_indexes WHERE indexname = %s", ["datasets_app_dataset_description_trgm"]
        )
        (definition,) = cursor.fetchone()
    assert "gin_trgm_ops" in definition
