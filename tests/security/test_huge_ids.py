"""Ids of 10 KB and 10 MB, in the path and in the body: refused by the id rules, never echoed."""

import logging

import pytest

from gridnode.jsonlog import JsonLineFormatter
from tests.security.conftest import assert_refused, stored_state, through_the_wsgi_stack

pytestmark = pytest.mark.django_db

SIZES = {"10KB": 10 * 1024, "10MB": 10 * 1024 * 1024}

PATH_ENDPOINTS = [
    ("GET", "/is_model_copy_allowed/{}"),
    ("GET", "/get_model/{}"),
    ("POST", "/model/{}"),
    ("POST", "/models/{}"),
    ("GET", "/datasets/{}"),
    ("DELETE", "/datasets/{}"),
    ("GET", "/datasets/{}/data"),
    ("GET", "/encrypted-models/{}"),
    ("DELETE", "/encrypted-models/{}"),
    ("GET", "/v2/models/{}"),
    ("GET", "/v2/models/{}/ready"),
    ("POST", "/v2/models/{}/infer"),
]


def short_enough(response) -> None:
    """The answer does not echo the id back (a message, not a megabyte)."""
    assert len(response.content) < 1000


@pytest.mark.parametrize("size", SIZES.values(), ids=SIZES.keys())
@pytest.mark.parametrize(("method", "template"), PATH_ENDPOINTS)
def test_it_refuses_a_huge_id_in_the_path(api, hosted, data_dir, size, method, template):
    before = stored_state(data_dir)

    response = api.generic(method, template.format("a" * size), b"{}", content_type="application/json")

    assert "must be 1-128 characters" in assert_refused(response, 400)
    short_enough(response)
    assert stored_state(data_dir) == before


BODY_ENDPOINTS = {
    "/serve-model": lambda huge: {"model_id": huge, "encoding": "base64", "model": "AAAA"},
    "/delete-model": lambda huge: {"model_id": huge},
    "/datasets": lambda huge: {"id": huge, "tags": ["t"], "data": [1.0]},
    "/encrypted-models": lambda huge: {
        "model_id": huge,
        "workers": ["http://a", "http://b"],
        "crypto_provider": ["http://c"],
    },
}


@pytest.mark.parametrize("size", SIZES.values(), ids=SIZES.keys())
@pytest.mark.parametrize(("path", "body"), BODY_ENDPOINTS.items(), ids=BODY_ENDPOINTS.keys())
@pytest.mark.parametrize("form", ["json", "multipart"])
def test_it_refuses_a_huge_id_in_the_body(api, hosted, data_dir, size, path, body, form):
    before = stored_state(data_dir)

    response = api.post(path, body("b" * size), format=form)

    assert "must be 1-128 characters" in assert_refused(response, 400)
    short_enough(response)
    assert stored_state(data_dir) == before


@pytest.mark.parametrize("size", SIZES.values(), ids=SIZES.keys())
def test_the_seed_searches_answer_a_huge_id_without_echoing_it(api, hosted, data_dir, size):
    before = stored_state(data_dir)

    search = api.post("/search", {"query": ["c" * size]}, format="json")
    encrypted = api.post("/search-encrypted-models", {"model_id": "c" * size}, format="json")

    assert search.status_code == 200
    assert search.json() == {"content": False}
    assert_refused(encrypted, 404)
    short_enough(encrypted)
    assert stored_state(data_dir) == before


@pytest.mark.parametrize("size", SIZES.values(), ids=SIZES.keys())
@pytest.mark.parametrize("template", ["/model/{}", "/models/{}/"])
def test_it_refuses_a_huge_id_through_the_fast_path(hosted, data_dir, size, template):
    before = stored_state(data_dir)
    body = b'{"data": [[1.0, 2.0, 3.0, 4.0]]}'

    status, _, answer = through_the_wsgi_stack("POST", template.format("a" * size), body, "application/json")

    assert status == 400
    assert "must be 1-128 characters" in answer["error"]
    assert stored_state(data_dir) == before


def test_the_request_log_does_not_carry_a_huge_id(api, hosted, caplog):
    with caplog.at_level(logging.INFO, logger="gridnode.requests"):
        api.post(f"/model/{'a' * SIZES['10MB']}", {"data": [[1.0]]}, format="json")

    records = [record for record in caplog.records if record.name == "gridnode.requests"]
    assert len(records) == 1
    assert len(JsonLineFormatter().format(records[0])) < 2000
