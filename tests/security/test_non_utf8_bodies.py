"""Bodies that are not UTF-8: refused with a 400, whatever form they claim to be."""

import pytest

from tests.security.conftest import assert_refused, stored_state, through_the_wsgi_stack

pytestmark = pytest.mark.django_db

JSON_ENDPOINTS = [
    "/serve-model",
    "/delete-model",
    "/model/mlp",
    "/datasets",
    "/search",
    "/encrypted-models",
    "/search-encrypted-models",
    "/v2/models/mlp/infer",
]

NOT_UTF8 = {
    "latin-1-in-a-string": '{"model_id": "caf\xe9", "query": ["caf\xe9"], "data": [1]}'.encode("latin-1"),
    "invalid-bytes": b'{"model_id": "\xff\xfe\xfd", "data": [1]}',
    "utf-16": '{"model_id": "x", "data": [1]}'.encode("utf-16"),
    "truncated-sequence": b'{"model_id": "\xe2\x82", "data": [1]}',
    "overlong-encoding": b'{"model_id": "\xc0\xaf", "data": [1]}',
    "encoded-surrogate": b'{"model_id": "\xed\xa0\x80", "data": [1]}',
}


@pytest.mark.parametrize("path", JSON_ENDPOINTS)
@pytest.mark.parametrize("body", NOT_UTF8.values(), ids=NOT_UTF8.keys())
def test_it_refuses_json_that_is_not_utf8(api, hosted, data_dir, path, body):
    before = stored_state(data_dir)

    response = api.generic("POST", path, body, content_type="application/json")

    assert_refused(response, 400)
    assert stored_state(data_dir) == before


WRITES = {
    "/serve-model": {"model_id": "caf\xe9", "encoding": "base64", "model": "AAAA"},
    "/delete-model": {"model_id": "caf\xe9"},
    "/datasets": {"id": "caf\xe9", "tags": "t", "data": "[1]"},
    "/encrypted-models": {"model_id": "caf\xe9", "workers": ["http://a", "http://b"], "crypto_provider": "http://c"},
}


def latin1_form(fields: dict) -> bytes:
    """A form body whose values are latin-1 bytes where UTF-8 was due."""
    pairs = []
    for name, value in fields.items():
        for item in value if isinstance(value, list) else [value]:
            pairs.append(f"{name}=".encode() + item.encode("latin-1"))
    return b"&".join(pairs)


def latin1_multipart(fields: dict) -> tuple[bytes, str]:
    boundary = "hostileboundary"
    parts = []
    for name, value in fields.items():
        for item in value if isinstance(value, list) else [value]:
            parts.append(
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
                + item.encode("latin-1")
                + b"\r\n"
            )
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


@pytest.mark.parametrize(("path", "fields"), WRITES.items(), ids=WRITES.keys())
def test_it_refuses_a_form_that_is_not_utf8(api, hosted, data_dir, path, fields):
    before = stored_state(data_dir)

    response = api.generic("POST", path, latin1_form(fields), content_type="application/x-www-form-urlencoded")

    assert_refused(response, 400)
    assert stored_state(data_dir) == before


@pytest.mark.parametrize(("path", "fields"), WRITES.items(), ids=WRITES.keys())
def test_it_refuses_multipart_fields_that_are_not_utf8(api, hosted, data_dir, path, fields):
    before = stored_state(data_dir)
    body, content_type = latin1_multipart(fields)

    response = api.generic("POST", path, body, content_type=content_type)

    assert_refused(response, 400)
    assert stored_state(data_dir) == before


@pytest.mark.parametrize("path", ["/model/mlp", "/v2/models/mlp/infer", "/datasets"])
@pytest.mark.parametrize("body", NOT_UTF8.values(), ids=NOT_UTF8.keys())
def test_it_refuses_json_that_is_not_utf8_through_the_fast_path(hosted, data_dir, path, body):
    before = stored_state(data_dir)

    status, content_type, answer = through_the_wsgi_stack("POST", path, body, "application/json")

    assert status == 400
    assert content_type.startswith("application/json")
    assert isinstance(answer["error"], str)
    assert stored_state(data_dir) == before


def test_it_refuses_a_non_utf8_path(api, hosted):
    response = api.get("/get_model/caf%E9")

    assert_refused(response, 400)
