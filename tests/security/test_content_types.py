"""Bodies under a Content-Type the endpoint does not read, or that lie about their form: a JSON 4xx."""

import json

import pytest

from tests.security.conftest import assert_refused, stored_state

pytestmark = pytest.mark.django_db

WRITE_ENDPOINTS = {
    "/serve-model": {"model_id": "m", "encoding": "base64", "model": "AAAA"},
    "/delete-model": {"model_id": "mlp"},
    "/model/mlp": {"data": [[1.0, 2.0, 3.0, 4.0]]},
    "/datasets": {"id": "d", "tags": ["t"], "data": [1.0]},
    "/encrypted-models": {"model_id": "m", "workers": ["http://a", "http://b"], "crypto_provider": ["http://c"]},
}

UNREAD = ["text/plain", "application/xml", "text/html", "application/octet-stream", "image/png", "application/yaml"]


@pytest.mark.parametrize(("path", "body"), WRITE_ENDPOINTS.items(), ids=WRITE_ENDPOINTS.keys())
@pytest.mark.parametrize("content_type", UNREAD)
def test_it_answers_415_to_a_content_type_it_does_not_read(api, hosted, data_dir, path, body, content_type):
    before = stored_state(data_dir)

    response = api.generic("POST", path, json.dumps(body).encode(), content_type=content_type)

    assert_refused(response, 415)
    assert stored_state(data_dir) == before


LIES = {
    "json-labelled-multipart": ("multipart/form-data; boundary=x", lambda body: json.dumps(body).encode()),
    "multipart-without-boundary": ("multipart/form-data", lambda body: json.dumps(body).encode()),
    "json-labelled-form": ("application/x-www-form-urlencoded", lambda body: json.dumps(body).encode()),
    "form-labelled-json": ("application/json", lambda body: b"model_id=m&data=1"),
    "empty-json": ("application/json", lambda body: b""),
    "json-that-is-a-list": ("application/json", lambda body: json.dumps([body]).encode()),
    "json-that-is-a-string": ("application/json", lambda body: json.dumps(json.dumps(body)).encode()),
    "json-with-trailing-garbage": ("application/json", lambda body: json.dumps(body).encode() + b"}{"),
}


@pytest.mark.parametrize(("path", "body"), WRITE_ENDPOINTS.items(), ids=WRITE_ENDPOINTS.keys())
@pytest.mark.parametrize(("content_type", "encode"), LIES.values(), ids=LIES.keys())
def test_it_refuses_a_body_that_is_not_what_its_content_type_says(
    api, hosted, data_dir, path, body, content_type, encode
):
    before = stored_state(data_dir)

    response = api.generic("POST", path, encode(body), content_type=content_type)

    assert 400 <= response.status_code < 500
    assert_refused(response, response.status_code)
    assert stored_state(data_dir) == before


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", "", "multipart/form-data; boundary=x"])
@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("/search", b"<query>#tag</query>", "Invalid payload format"),
        ("/search-encrypted-models", b"<model_id>m</model_id>", "Invalid payload format"),
    ],
)
def test_the_seed_searches_answer_their_one_400(api, data_dir, content_type, path, body, message):
    """The seed's searches read any body (gateways send none) and have one answer for every bad one."""
    response = api.generic("POST", path, body, content_type=content_type)

    assert assert_refused(response, 400) == message
    assert stored_state(data_dir)["encrypted_models"] == 0


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", "application/octet-stream"])
def test_v2_inference_reads_json_whatever_the_content_type_and_refuses_what_is_not(api, hosted, content_type):
    response = api.generic("POST", "/v2/models/mlp/infer", b"<inputs/>", content_type=content_type)

    assert_refused(response, 400)


def test_an_unknown_method_is_a_json_405(api, hosted):
    response = api.generic("PATCH", "/serve-model", b"{}", content_type="application/json")

    assert_refused(response, 405)
