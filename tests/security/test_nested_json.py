"""Deeply nested JSON (100,000 levels) on every endpoint that reads JSON: a 400, never a crash."""

import pytest

from tests.security.conftest import assert_refused, stored_state, through_the_wsgi_stack

pytestmark = pytest.mark.django_db

DEPTH = 100_000

JSON_ENDPOINTS = [
    "/serve-model",
    "/delete-model",
    "/delete_model/",
    "/model/mlp",
    "/models/mlp",
    "/datasets",
    "/search",
    "/encrypted-models",
    "/search-encrypted-models",
    "/v2/models/mlp/infer",
]

BODIES = {
    "unclosed-arrays": "[" * DEPTH,
    "closed-arrays": "[" * DEPTH + "]" * DEPTH,
    "objects": '{"a":' * DEPTH + "1" + "}" * DEPTH,
    "in-a-field": '{"model_id": "x", "data": ' + "[" * DEPTH + "1" + "]" * DEPTH + "}",
}


@pytest.mark.parametrize("path", JSON_ENDPOINTS)
@pytest.mark.parametrize("body", BODIES.values(), ids=BODIES.keys())
def test_it_refuses_deep_nesting(api, hosted, data_dir, path, body):
    before = stored_state(data_dir)

    response = api.generic("POST", path, body.encode(), content_type="application/json")

    assert_refused(response, 400)
    assert stored_state(data_dir) == before


# Nested just within what the JSON parser takes (orjson stops at 1024 levels), where each endpoint
# expects a list or a value: the views and tensor builders get it whole.
SHALLOW = "[" * 1000 + "1" + "]" * 1000
V2_INPUT = '{"name": "input__0", "shape": [1], "datatype": "FP32", "data": %s}'
WITHIN_THE_PARSER = {
    "/serve-model": '{"model_id": "x", "encoding": "base64", "model": %s}',
    "/model/mlp": '{"data": %s}',
    "/datasets": '{"tags": ["t"], "data": %s}',
    "/search": '{"query": %s}',
    "/encrypted-models": '{"model_id": "m", "workers": %s, "crypto_provider": ["http://c"]}',
    "/search-encrypted-models": '{"model_id": %s}',
    "/v2/models/mlp/infer": '{"inputs": [' + V2_INPUT + "]}",
}


@pytest.mark.parametrize(("path", "template"), WITHIN_THE_PARSER.items(), ids=WITHIN_THE_PARSER.keys())
def test_it_refuses_values_nested_within_the_parsers_limit(api, hosted, data_dir, path, template):
    before = stored_state(data_dir)

    response = api.generic("POST", path, template.replace("%s", SHALLOW).encode(), content_type="application/json")

    assert 400 <= response.status_code < 500
    assert_refused(response, response.status_code)
    assert stored_state(data_dir) == before


FORM_FIELDS = {
    "/model/mlp": {"data": "[" * DEPTH + "1" + "]" * DEPTH},
    "/datasets": {"data": "[" * DEPTH + "1" + "]" * DEPTH, "tags": "t"},
    "/encrypted-models": {"model_id": "m", "workers": "[" * DEPTH, "crypto_provider": "http://c"},
}


@pytest.mark.parametrize(("path", "fields"), FORM_FIELDS.items(), ids=FORM_FIELDS.keys())
@pytest.mark.parametrize("form", ["urlencoded", "multipart"])
def test_it_refuses_deep_nesting_in_form_fields(api, hosted, data_dir, path, fields, form):
    """Forms carry JSON arrays as text, parsed by the view: nested too deep, they are a 400 too."""
    before = stored_state(data_dir)

    response = api.post(path, fields, format="multipart") if form == "multipart" else api.post(path, fields)

    assert_refused(response, 400)
    assert stored_state(data_dir) == before


@pytest.mark.parametrize("path", ["/model/mlp", "/models/mlp/", "/serve-model", "/v2/models/mlp/infer"])
@pytest.mark.parametrize("body", BODIES.values(), ids=BODIES.keys())
def test_it_refuses_deep_nesting_through_the_fast_path(hosted, data_dir, path, body):
    """The WSGI fast path parses inference bodies before Django: a body it cannot parse goes on to Django."""
    before = stored_state(data_dir)

    status, content_type, answer = through_the_wsgi_stack("POST", path, body.encode(), "application/json")

    assert status == 400
    assert content_type.startswith("application/json")
    assert isinstance(answer["error"], str)
    assert stored_state(data_dir) == before


def test_it_answers_normally_after_a_deep_body(api, hosted):
    api.generic("POST", "/model/mlp", ("[" * DEPTH).encode(), content_type="application/json")

    response = api.post("/model/mlp", {"data": [[1.0, 2.0, 3.0, 4.0]]}, format="json")

    assert response.status_code == 200
